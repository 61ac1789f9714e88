//! Property tests (issue 6).
//!
//! - `session_state_matches_model`: [`SessionState`] against a plain reference model over random
//!   command sequences (retries, stale stamps, oversized values, expiry).
//! - `lifecycle_model::session_lifecycle_matches_model`: the same for principals and limits,
//!   rotations (`Rotate`, `RotateOut`, `RotateIn`), `InvalidatePrincipal` and `TouchBatch`.
//! - `*_round_trip`, `damaged_records_are_errors`: checked records and frames.
//! - `mem_backend_matches_model`, `sled_backend_matches_model`: storage against a model of
//!   durability.
//!
//! Every property runs `PROPTEST_CASES` cases (default 256; the sled property a sixteenth of
//! that) and prints how many it ran. Failing seeds are persisted under
//! `tests/proptest-regressions/props.txt` and replayed first on every run.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::FutureExt;
use openraft::{BasicNode, CommittedLeaderId, EntryPayload, Membership, StoredMembership};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use steadfast::codec;
use steadfast::command::{Attributes, Command, Origin, Outcome, Request, Response};
use steadfast::id::{ClientId, GroupId, NodeId, SessionId};
use steadfast::limits;
use steadfast::raft::backend::{Backend, GroupImage, MemBackend, MetaKey, SledBackend, WriteOp};
use steadfast::raft::store::{decode_snapshot, SnapshotFile};
use steadfast::raft::typ::{Entry, LogId, SnapshotMeta, Vote};
use steadfast::state::{Session, SessionState, SessionView, StateImage};
use steadfast::wire::{
    self, ClientRequest, Header, Kind, RaftRequest, ReadReply, RequestBody, ResponseBody, WireError,
};

mod lifecycle_model;

// ---------------------------------------------------------------------------------------------
// Runner: case counts, persistence, reporting.

/// `PROPTEST_CASES` (default 256) divided by `divisor`, at least `min`; failures persisted in
/// `tests/proptest-regressions/props.txt` (proptest's default location for this file).
fn config(divisor: u32, min: u32) -> Config {
    let base = Config::default();
    Config {
        cases: (base.cases / divisor).max(min),
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        source_file: Some(file!()),
        ..base
    }
}

#[allow(
    clippy::disallowed_methods,
    reason = "wall time of a test run is reported, never used by the code under test"
)]
fn check<S: Strategy>(
    name: &str,
    config: Config,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let started = std::time::Instant::now();
    let cases = AtomicU64::new(0);
    let mut runner = TestRunner::new(config);
    let result = runner.run(&strategy, |value| {
        cases.fetch_add(1, Ordering::Relaxed);
        test(value)
    });
    eprintln!(
        "props::{name}: {} cases in {:.2?}",
        cases.load(Ordering::Relaxed),
        started.elapsed()
    );
    if let Err(e) = result {
        panic!("props::{name}: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// The session state machine against a reference model.

const IDS: u8 = 8;

fn sid(n: u8) -> SessionId {
    SessionId::from_bytes([n; 16])
}

/// How the leader's stamp moves for one step.
#[derive(Clone, Debug)]
enum TimeStep {
    Same,
    Forward(u64),
    /// Across the dedup or tombstone retention.
    Jump(u64),
    /// A deposed leader's stamp, behind the clock.
    Stale(u64),
}

fn time_step() -> impl Strategy<Value = TimeStep> {
    prop_oneof![
        12 => Just(TimeStep::Same),
        24 => (0u64..60).prop_map(TimeStep::Forward),
        4 => (60u64..5_000).prop_map(TimeStep::Forward),
        1 => prop_oneof![
            Just(limits::DEDUP_RETENTION_MS - 1),
            Just(limits::DEDUP_RETENTION_MS),
            Just(limits::TOMBSTONE_RETENTION_MS),
            limits::DEDUP_RETENTION_MS..limits::TOMBSTONE_RETENTION_MS + 60_000,
        ]
        .prop_map(TimeStep::Jump),
        4 => (1u64..500).prop_map(TimeStep::Stale),
    ]
}

/// An attribute value's size class.
#[derive(Clone, Debug)]
enum Size {
    Small(usize),
    /// `SESSION_BYTES_MAX` minus one attribute's overhead and name, plus this (so 0 fits exactly
    /// when it is the only attribute).
    NearLimit(i32),
}

/// Generated attribute: name index (4 is a name over the limit), size, fill byte.
type AttrSpec = (u8, Size, u8);

fn attr_spec() -> impl Strategy<Value = AttrSpec> {
    (
        prop_oneof![20 => 0u8..4, 1 => Just(4u8)],
        prop_oneof![
            20 => (0usize..24).prop_map(Size::Small),
            1 => (-4i32..=4).prop_map(Size::NearLimit),
        ],
        any::<u8>(),
    )
}

fn attr_name(n: u8) -> String {
    if n < 4 {
        format!("k{n}")
    } else {
        "n".repeat(limits::ATTRIBUTE_NAME_BYTES_MAX + 1)
    }
}

fn build_attributes(specs: &[AttrSpec], too_many: bool) -> Attributes {
    if too_many {
        return (0..=limits::ATTRIBUTES_MAX)
            .map(|i| (format!("a{i}"), vec![1]))
            .collect();
    }
    specs
        .iter()
        .map(|(n, size, fill)| {
            let name = attr_name(*n);
            let len = match size {
                Size::Small(len) => *len,
                Size::NearLimit(d) => {
                    let base =
                        limits::SESSION_BYTES_MAX - limits::ATTRIBUTE_OVERHEAD_BYTES - name.len();
                    (base as i64 + i64::from(*d)) as usize
                }
            };
            (name, vec![*fill; len])
        })
        .collect()
}

/// A compare-and-set guard, resolved against what the test has seen.
#[derive(Clone, Debug)]
enum Guess {
    /// The session's current version (per the model), or 0.
    Current,
    /// Some version seen in an earlier result.
    Seen(Index),
    Raw(u64),
}

fn guess() -> impl Strategy<Value = Guess> {
    prop_oneof![
        4 => Just(Guess::Current),
        2 => any::<Index>().prop_map(Guess::Seen),
        1 => (0u64..8).prop_map(Guess::Raw),
    ]
}

/// The session a command addresses: usually one the model holds, so few commands miss.
#[derive(Clone, Debug)]
enum Target {
    Live(Index),
    Any(u8),
}

#[derive(Clone, Debug)]
enum Op {
    Create {
        id: u8,
        attrs: Vec<AttrSpec>,
        too_many: bool,
        idle: u64,
        lifetime: Option<u64>,
    },
    Update {
        id: Target,
        set: Vec<AttrSpec>,
        too_many: bool,
        remove: BTreeSet<u8>,
        expected: Option<Guess>,
        idle: Option<u64>,
    },
    Touch {
        id: Target,
    },
    Delete {
        id: Target,
        expected: Option<Guess>,
    },
    Expire,
    /// Resend an earlier request that carried an origin, unchanged but for the stamp.
    Retry(Index),
}

fn idle_timeout() -> impl Strategy<Value = u64> {
    prop_oneof![
        1 => Just(0u64),
        4 => 1u64..200,
        6 => 1_000u64..100_000,
        3 => 600_000u64..7_200_000,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let target = prop_oneof![
        3 => any::<Index>().prop_map(Target::Live),
        1 => (0..IDS).prop_map(Target::Any),
    ];
    let too_many = prop::bool::weighted(0.02);
    prop_oneof![
        4 => (
            0..IDS,
            prop::collection::vec(attr_spec(), 0..3),
            too_many,
            idle_timeout(),
            prop::option::weighted(0.3, prop_oneof![0u64..300, 1_000u64..600_000]),
        )
            .prop_map(|(id, attrs, too_many, idle, lifetime)| Op::Create {
                id,
                attrs,
                too_many,
                idle,
                lifetime
            }),
        5 => (
            target.clone(),
            prop::collection::vec(attr_spec(), 0..3),
            too_many,
            prop::collection::btree_set(0u8..5, 0..2),
            prop::option::of(guess()),
            prop::option::weighted(0.2, idle_timeout()),
        )
            .prop_map(|(id, set, too_many, remove, expected, idle)| Op::Update {
                id,
                set,
                too_many,
                remove,
                expected,
                idle
            }),
        3 => target.clone().prop_map(|id| Op::Touch { id }),
        1 => (target, prop::option::of(guess()))
            .prop_map(|(id, expected)| Op::Delete { id, expected }),
        2 => Just(Op::Expire),
        2 => any::<Index>().prop_map(Op::Retry),
    ]
}

/// Who sent a request: nobody (leader-internal), a fresh `(client, seq)`, or one from a tiny
/// space so unrelated requests collide (a misbehaving client reusing a sequence number).
#[derive(Clone, Debug)]
enum Sender {
    Internal,
    Fresh,
    Colliding(u64, u64),
}

#[derive(Clone, Debug)]
struct Step {
    time: TimeStep,
    sender: Sender,
    /// Log indexes skipped before this entry (blank and membership entries).
    gap: u64,
    op: Op,
}

fn step() -> impl Strategy<Value = Step> {
    let sender = prop_oneof![
        3 => Just(Sender::Internal),
        4 => Just(Sender::Fresh),
        1 => (0u64..2, 0u64..3).prop_map(|(c, s)| Sender::Colliding(c, s)),
    ];
    (
        time_step(),
        sender,
        prop_oneof![6 => Just(0u64), 1 => 1u64..3],
        op(),
    )
        .prop_map(|(time, sender, gap, op)| Step {
            time,
            sender,
            gap,
            op,
        })
}

/// The scenario: where the clock starts (0 exercises the edges of the retention windows) and
/// the steps.
fn scenario() -> impl Strategy<Value = (u64, Vec<Step>)> {
    (
        prop_oneof![Just(0u64), 1u64..1_000_000_000_000],
        prop::collection::vec(step(), 1..64),
    )
}

/// The model's session: the same fields as [`Session`], kept independently.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelSession {
    attributes: Attributes,
    created_ms: u64,
    accessed_ms: u64,
    idle_timeout_ms: u64,
    deadline_ms: Option<u64>,
    version: u64,
}

impl ModelSession {
    fn expires_at_ms(&self) -> u64 {
        let idle = self.accessed_ms.saturating_add(self.idle_timeout_ms);
        match self.deadline_ms {
            Some(d) if d < idle => d,
            _ => idle,
        }
    }
}

/// What a resolved command does, in the model's own terms.
#[derive(Clone, Debug)]
enum ModelCommand {
    Create {
        id: SessionId,
        attributes: Attributes,
        idle: u64,
        lifetime: Option<u64>,
    },
    Update {
        id: SessionId,
        set: Attributes,
        remove: BTreeSet<String>,
        expected: Option<u64>,
        idle: Option<u64>,
    },
    Touch(SessionId),
    Delete {
        id: SessionId,
        expected: Option<u64>,
    },
    Expire,
}

impl ModelCommand {
    fn id(&self) -> Option<SessionId> {
        match self {
            ModelCommand::Create { id, .. }
            | ModelCommand::Update { id, .. }
            | ModelCommand::Touch(id)
            | ModelCommand::Delete { id, .. } => Some(*id),
            ModelCommand::Expire => None,
        }
    }

    fn to_command(&self) -> Command {
        match self.clone() {
            ModelCommand::Create {
                id,
                attributes,
                idle,
                lifetime,
            } => Command::Create {
                id,
                attributes,
                idle_timeout_ms: idle,
                lifetime_ms: lifetime,
                principal: None,
                limits: Default::default(),
            },
            ModelCommand::Update {
                id,
                set,
                remove,
                expected,
                idle,
            } => Command::Update {
                id,
                set,
                remove,
                expected_version: expected,
                idle_timeout_ms: idle,
            },
            ModelCommand::Touch(id) => Command::Touch { id },
            ModelCommand::Delete { id, expected } => Command::Delete {
                id,
                expected_version: expected,
            },
            ModelCommand::Expire => Command::Expire,
        }
    }
}

/// The reference model: a map of sessions, a tombstone set, and a dedup map keyed by origin.
#[derive(Default)]
struct Model {
    clock: u64,
    sessions: BTreeMap<SessionId, ModelSession>,
    /// Id -> replicated time it died.
    tombstones: BTreeMap<SessionId, u64>,
    /// Origin -> (replicated time remembered, response).
    dedup: BTreeMap<Origin, (u64, Response)>,
}

fn rejection(attributes: &Attributes, idle: u64) -> Option<Outcome> {
    let invalid = Some(Outcome::Invalid {
        reason: String::new(),
    });
    if attributes.len() > limits::ATTRIBUTES_MAX
        || attributes
            .keys()
            .any(|k| k.len() > limits::ATTRIBUTE_NAME_BYTES_MAX)
        || idle == 0
    {
        return invalid;
    }
    let bytes: usize = attributes
        .iter()
        .map(|(k, v)| k.len() + v.len() + limits::ATTRIBUTE_OVERHEAD_BYTES)
        .sum();
    (bytes > limits::SESSION_BYTES_MAX).then_some(Outcome::TooLarge {
        bytes: bytes as u64,
        limit: limits::SESSION_BYTES_MAX as u64,
    })
}

impl Model {
    fn kill(&mut self, id: SessionId) {
        if self.sessions.remove(&id).is_some() {
            self.tombstones.insert(id, self.clock);
        }
    }

    fn apply(
        &mut self,
        index: u64,
        now_ms: u64,
        origin: Option<Origin>,
        command: &ModelCommand,
    ) -> Response {
        self.clock = self.clock.max(now_ms);
        if let Some((_, previous)) = origin.and_then(|o| self.dedup.get(&o)) {
            return previous.clone();
        }
        if let Some(id) = command.id() {
            if self
                .sessions
                .get(&id)
                .is_some_and(|s| s.expires_at_ms() <= self.clock)
            {
                self.kill(id);
            }
        }
        let outcome = self.execute(index, command);
        let response = Response {
            server_time_ms: self.clock,
            outcome,
        };
        if let Some(origin) = origin {
            self.dedup.insert(origin, (self.clock, response.clone()));
        }
        let clock = self.clock;
        self.dedup
            .retain(|_, (at, _)| at.saturating_add(limits::DEDUP_RETENTION_MS) > clock);
        response
    }

    fn execute(&mut self, index: u64, command: &ModelCommand) -> Outcome {
        let now = self.clock;
        match command {
            ModelCommand::Create {
                id,
                attributes,
                idle,
                lifetime,
            } => {
                if self.sessions.contains_key(id) || self.tombstones.contains_key(id) {
                    return Outcome::Exists;
                }
                if let Some(r) = rejection(attributes, *idle) {
                    return r;
                }
                self.sessions.insert(
                    *id,
                    ModelSession {
                        attributes: attributes.clone(),
                        created_ms: now,
                        accessed_ms: now,
                        idle_timeout_ms: *idle,
                        deadline_ms: lifetime.map(|l| now.saturating_add(l)),
                        version: index,
                    },
                );
                Outcome::Ok { version: index }
            }
            ModelCommand::Update {
                id,
                set,
                remove,
                expected,
                idle,
            } => {
                let Some(s) = self.sessions.get_mut(id) else {
                    return Outcome::NotFound;
                };
                if expected.is_some_and(|e| e != s.version) {
                    return Outcome::Conflict {
                        current_version: s.version,
                    };
                }
                let mut attributes = s.attributes.clone();
                attributes.retain(|k, _| !remove.contains(k));
                attributes.extend(set.clone());
                if let Some(r) = rejection(&attributes, idle.unwrap_or(1)) {
                    return r;
                }
                s.attributes = attributes;
                s.accessed_ms = now;
                s.version = index;
                if let Some(t) = idle {
                    s.idle_timeout_ms = *t;
                }
                Outcome::Ok { version: index }
            }
            ModelCommand::Touch(id) => match self.sessions.get_mut(id) {
                Some(s) => {
                    s.accessed_ms = now;
                    Outcome::Ok { version: s.version }
                }
                None => Outcome::NotFound,
            },
            ModelCommand::Delete { id, expected } => {
                let Some(s) = self.sessions.get(id) else {
                    return Outcome::NotFound;
                };
                if expected.is_some_and(|e| e != s.version) {
                    return Outcome::Conflict {
                        current_version: s.version,
                    };
                }
                self.kill(*id);
                Outcome::Ok { version: index }
            }
            ModelCommand::Expire => {
                let due: Vec<SessionId> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.expires_at_ms() <= now)
                    .map(|(id, _)| *id)
                    .collect();
                for id in &due {
                    self.kill(*id);
                }
                self.tombstones
                    .retain(|_, died| died.saturating_add(limits::TOMBSTONE_RETENTION_MS) > now);
                Outcome::Purged {
                    sessions: due.len() as u64,
                }
            }
        }
    }

    fn get(&self, id: SessionId) -> Option<SessionView> {
        let s = self.sessions.get(&id)?;
        let expires_at_ms = s.expires_at_ms();
        (expires_at_ms > self.clock).then(|| SessionView {
            id,
            attributes: s.attributes.clone(),
            version: s.version,
            created_ms: s.created_ms,
            accessed_ms: s.accessed_ms,
            idle_timeout_ms: s.idle_timeout_ms,
            deadline_ms: s.deadline_ms,
            expires_at_ms,
            server_time_ms: self.clock,
            principal: None,
        })
    }
}

/// Responses compare equal except for the wording of an `Invalid` reason.
fn normalized(r: &Response) -> Response {
    match &r.outcome {
        Outcome::Invalid { .. } => Response {
            server_time_ms: r.server_time_ms,
            outcome: Outcome::Invalid {
                reason: String::new(),
            },
        },
        _ => r.clone(),
    }
}

fn resolve(guess: &Option<Guess>, id: SessionId, model: &Model, seen: &[u64]) -> Option<u64> {
    guess.as_ref().map(|g| match g {
        Guess::Current => model.sessions.get(&id).map_or(0, |s| s.version),
        Guess::Seen(i) if !seen.is_empty() => seen[i.index(seen.len())],
        Guess::Seen(_) => 0,
        Guess::Raw(v) => *v,
    })
}

fn pick(target: &Target, model: &Model) -> SessionId {
    match target {
        Target::Any(n) => sid(*n),
        Target::Live(i) => {
            let live: Vec<SessionId> = model.sessions.keys().copied().collect();
            if live.is_empty() {
                sid(0)
            } else {
                live[i.index(live.len())]
            }
        }
    }
}

fn run_model(start_ms: u64, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut state = SessionState::default();
    let mut model = Model::default();
    let mut index = 0u64;
    let mut now = start_ms;
    let mut seen: Vec<u64> = Vec::new();
    let mut sent: Vec<(Option<Origin>, ModelCommand)> = Vec::new();
    let mut fresh_seq = 0u64;

    for (n, step) in steps.iter().enumerate() {
        let stamp = match step.time {
            TimeStep::Same => now,
            TimeStep::Forward(d) | TimeStep::Jump(d) => {
                now += d;
                now
            }
            TimeStep::Stale(d) => now.saturating_sub(d),
        };
        let (origin, command) = match &step.op {
            Op::Retry(i) if !sent.is_empty() => sent[i.index(sent.len())].clone(),
            op => {
                let origin = match step.sender {
                    Sender::Internal => None,
                    Sender::Fresh => {
                        fresh_seq += 1;
                        Some(Origin {
                            client: ClientId(100),
                            seq: fresh_seq,
                        })
                    }
                    Sender::Colliding(c, s) => Some(Origin {
                        client: ClientId(c),
                        seq: s,
                    }),
                };
                let command = match op {
                    Op::Create {
                        id,
                        attrs,
                        too_many,
                        idle,
                        lifetime,
                    } => ModelCommand::Create {
                        id: sid(*id),
                        attributes: build_attributes(attrs, *too_many),
                        idle: *idle,
                        lifetime: *lifetime,
                    },
                    Op::Update {
                        id,
                        set,
                        too_many,
                        remove,
                        expected,
                        idle,
                    } => {
                        let id = pick(id, &model);
                        ModelCommand::Update {
                            id,
                            set: build_attributes(set, *too_many),
                            remove: remove.iter().map(|r| attr_name(*r)).collect(),
                            expected: resolve(expected, id, &model, &seen),
                            idle: *idle,
                        }
                    }
                    Op::Touch { id } => ModelCommand::Touch(pick(id, &model)),
                    Op::Delete { id, expected } => {
                        let id = pick(id, &model);
                        ModelCommand::Delete {
                            id,
                            expected: resolve(expected, id, &model, &seen),
                        }
                    }
                    Op::Expire | Op::Retry(_) => ModelCommand::Expire,
                };
                if origin.is_some() {
                    sent.push((origin, command.clone()));
                }
                (origin, command)
            }
        };
        index += 1 + step.gap;

        let request = Request {
            now_ms: stamp,
            origin,
            command: command.to_command(),
        };
        let got = state.apply(index, &request);
        let want = model.apply(index, stamp, origin, &command);
        prop_assert_eq!(
            normalized(&got),
            normalized(&want),
            "step {} at index {}: {:?}",
            n,
            index,
            request
        );
        prop_assert_eq!(state.clock_ms(), model.clock);
        match got.outcome {
            Outcome::Ok { version } => seen.push(version),
            Outcome::Conflict { current_version } => seen.push(current_version),
            _ => {}
        }
        for i in 0..IDS {
            let view = state.get(&sid(i));
            if let Some(v) = &view {
                prop_assert!(v.expires_at_ms > v.server_time_ms, "expired read {:?}", v);
                prop_assert!(v.version <= index);
            }
            prop_assert_eq!(view, model.get(sid(i)), "get {} after step {}", i, n);
        }
    }

    // The whole state agrees with the model, and survives an image round trip.
    let image = state.to_image();
    let sessions: BTreeMap<SessionId, ModelSession> = image
        .sessions
        .iter()
        .map(|(id, s)| {
            (
                *id,
                ModelSession {
                    attributes: s.attributes.to_map(),
                    created_ms: s.created_ms,
                    accessed_ms: s.accessed_ms,
                    idle_timeout_ms: s.idle_timeout_ms,
                    deadline_ms: s.deadline_ms,
                    version: s.version,
                },
            )
        })
        .collect();
    prop_assert_eq!(&sessions, &model.sessions);
    for s in sessions.values() {
        prop_assert!(s.version <= index);
    }
    let tombstones: BTreeMap<SessionId, u64> = image.tombstones.iter().copied().collect();
    prop_assert_eq!(&tombstones, &model.tombstones);
    let dedup: BTreeMap<Origin, (u64, Response)> = image
        .dedup
        .iter()
        .map(|(at, o, r)| (*o, (*at, normalized(r))))
        .collect();
    let model_dedup: BTreeMap<Origin, (u64, Response)> = model
        .dedup
        .iter()
        .map(|(o, (at, r))| (*o, (*at, normalized(r))))
        .collect();
    prop_assert_eq!(dedup, model_dedup);
    let back = SessionState::from_image(image).expect("to_image always yields a valid image");
    prop_assert!(back == state, "from_image(to_image(s)) != s");
    prop_assert_eq!(back.digest(), state.digest());
    Ok(())
}

#[test]
fn session_state_matches_model() {
    check(
        "session_state_matches_model",
        config(1, 1),
        scenario(),
        |(start, steps)| run_model(start, steps),
    );
}

// ---------------------------------------------------------------------------------------------
// Codec and frame round trips.

fn arb_id() -> impl Strategy<Value = SessionId> {
    any::<[u8; 16]>().prop_map(SessionId::from_bytes)
}

fn arb_origin() -> impl Strategy<Value = Origin> {
    (any::<u64>(), any::<u64>()).prop_map(|(c, seq)| Origin {
        client: ClientId(c),
        seq,
    })
}

fn arb_attributes() -> impl Strategy<Value = Attributes> {
    prop::collection::btree_map(
        any::<String>(),
        prop::collection::vec(any::<u8>(), 0..24),
        0..4,
    )
}

fn arb_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (
            arb_id(),
            arb_attributes(),
            any::<u64>(),
            any::<Option<u64>>()
        )
            .prop_map(
                |(id, attributes, idle_timeout_ms, lifetime_ms)| Command::Create {
                    id,
                    attributes,
                    idle_timeout_ms,
                    lifetime_ms,
                    principal: None,
                    limits: Default::default(),
                }
            ),
        (
            arb_id(),
            arb_attributes(),
            prop::collection::btree_set(any::<String>(), 0..3),
            any::<Option<u64>>(),
            any::<Option<u64>>(),
        )
            .prop_map(|(id, set, remove, expected_version, idle_timeout_ms)| {
                Command::Update {
                    id,
                    set,
                    remove,
                    expected_version,
                    idle_timeout_ms,
                }
            }),
        arb_id().prop_map(|id| Command::Touch { id }),
        (arb_id(), any::<Option<u64>>()).prop_map(|(id, expected_version)| Command::Delete {
            id,
            expected_version
        }),
        Just(Command::Expire),
    ]
}

fn arb_request() -> impl Strategy<Value = Request> {
    (any::<u64>(), prop::option::of(arb_origin()), arb_command()).prop_map(
        |(now_ms, origin, command)| Request {
            now_ms,
            origin,
            command,
        },
    )
}

fn arb_outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        any::<u64>().prop_map(|version| Outcome::Ok { version }),
        Just(Outcome::Exists),
        Just(Outcome::NotFound),
        any::<u64>().prop_map(|current_version| Outcome::Conflict { current_version }),
        (any::<u64>(), any::<u64>()).prop_map(|(bytes, limit)| Outcome::TooLarge { bytes, limit }),
        any::<String>().prop_map(|reason| Outcome::Invalid { reason }),
        Just(Outcome::Noop),
        any::<u64>().prop_map(|sessions| Outcome::Purged { sessions }),
    ]
}

fn arb_response() -> impl Strategy<Value = Response> {
    (any::<u64>(), arb_outcome()).prop_map(|(server_time_ms, outcome)| Response {
        server_time_ms,
        outcome,
    })
}

fn arb_session() -> impl Strategy<Value = Session> {
    (
        arb_attributes(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<Option<u64>>(),
        any::<u64>(),
    )
        .prop_map(
            |(attributes, created_ms, accessed_ms, idle_timeout_ms, deadline_ms, version)| {
                Session {
                    attributes: attributes.into(),
                    created_ms,
                    accessed_ms,
                    idle_timeout_ms,
                    deadline_ms,
                    version,
                    principal: None,
                }
            },
        )
}

fn arb_image() -> impl Strategy<Value = StateImage> {
    (
        any::<u64>(),
        prop::collection::vec((arb_id(), arb_session()), 0..4),
        prop::collection::vec((arb_id(), any::<u64>()), 0..4),
        prop::collection::vec((any::<u64>(), arb_origin(), arb_response()), 0..4),
    )
        .prop_map(|(clock_ms, sessions, tombstones, dedup)| StateImage {
            clock_ms,
            sessions,
            tombstones,
            dedup,
            events: Vec::new(),
        })
}

fn arb_log_id() -> impl Strategy<Value = LogId> {
    (any::<u64>(), any::<NodeId>(), any::<u64>())
        .prop_map(|(term, node, index)| LogId::new(CommittedLeaderId::new(term, node), index))
}

fn arb_membership() -> impl Strategy<Value = Membership<NodeId, BasicNode>> {
    (
        prop::collection::vec(prop::collection::btree_set(0u64..8, 1..4), 1..3),
        prop::collection::btree_map(0u64..10, "[a-z0-9.:]{0,12}", 0..4),
    )
        .prop_map(|(configs, learners)| {
            let nodes: BTreeMap<NodeId, BasicNode> = configs
                .iter()
                .flatten()
                .map(|id| (*id, BasicNode::new(format!("n{id}:1"))))
                .chain(learners.into_iter().map(|(id, a)| (id, BasicNode::new(a))))
                .collect();
            Membership::new(configs, nodes)
        })
}

fn arb_snapshot_meta() -> impl Strategy<Value = SnapshotMeta> {
    (
        prop::option::of(arb_log_id()),
        prop::option::of(arb_log_id()),
        arb_membership(),
        any::<String>(),
    )
        .prop_map(
            |(last_log_id, membership_log_id, membership, snapshot_id)| SnapshotMeta {
                last_log_id,
                last_membership: StoredMembership::new(membership_log_id, membership),
                snapshot_id,
            },
        )
}

fn arb_snapshot() -> impl Strategy<Value = SnapshotFile> {
    (arb_snapshot_meta(), arb_image()).prop_map(|(meta, state)| SnapshotFile { meta, state })
}

fn arb_vote() -> impl Strategy<Value = Vote> {
    (any::<u64>(), any::<NodeId>(), any::<bool>()).prop_map(|(term, node, committed)| {
        if committed {
            Vote::new_committed(term, node)
        } else {
            Vote::new(term, node)
        }
    })
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    (
        arb_log_id(),
        prop_oneof![
            Just(EntryPayload::Blank),
            proptest::collection::vec(arb_request(), 1..4)
                .prop_map(|requests| EntryPayload::Normal(steadfast::command::Batch { requests })),
            arb_membership().prop_map(EntryPayload::Membership),
        ],
    )
        .prop_map(|(log_id, payload)| Entry { log_id, payload })
}

fn arb_request_body() -> impl Strategy<Value = RequestBody> {
    prop_oneof![
        (arb_origin(), arb_command()).prop_map(|(origin, command)| RequestBody::Client(
            ClientRequest::Write {
                origin,
                command,
                namespace: String::new()
            }
        )),
        arb_id().prop_map(|id| RequestBody::Client(ClientRequest::Read { id })),
        Just(RequestBody::Client(ClientRequest::Status)),
        Just(RequestBody::Client(ClientRequest::Topology)),
        (arb_vote(), prop::option::of(arb_log_id())).prop_map(|(vote, last)| {
            RequestBody::Raft(RaftRequest::Vote(openraft::raft::VoteRequest::new(
                vote, last,
            )))
        }),
        (
            arb_vote(),
            prop::option::of(arb_log_id()),
            prop::collection::vec(arb_entry(), 0..3),
            prop::option::of(arb_log_id()),
        )
            .prop_map(|(vote, prev_log_id, entries, leader_commit)| {
                RequestBody::Raft(RaftRequest::Append(openraft::raft::AppendEntriesRequest {
                    vote,
                    prev_log_id,
                    entries,
                    leader_commit,
                }))
            }),
        (
            arb_vote(),
            arb_snapshot_meta(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..64),
            any::<bool>(),
        )
            .prop_map(|(vote, meta, offset, data, done)| {
                RequestBody::Raft(RaftRequest::InstallSnapshot(
                    openraft::raft::InstallSnapshotRequest {
                        vote,
                        meta,
                        offset,
                        data,
                        done,
                    },
                ))
            }),
    ]
}

fn arb_response_body() -> impl Strategy<Value = ResponseBody> {
    let view = (arb_id(), arb_session(), any::<u64>(), any::<u64>()).prop_map(
        |(id, s, expires_at_ms, server_time_ms)| SessionView {
            id,
            attributes: s.attributes.to_map(),
            version: s.version,
            created_ms: s.created_ms,
            accessed_ms: s.accessed_ms,
            idle_timeout_ms: s.idle_timeout_ms,
            deadline_ms: s.deadline_ms,
            expires_at_ms,
            server_time_ms,
            principal: s.principal,
        },
    );
    prop_oneof![
        arb_response().prop_map(ResponseBody::Written),
        (prop::option::of(view), any::<u64>(), any::<u64>()).prop_map(
            |(session, server_time_ms, read_index)| ResponseBody::Read(ReadReply {
                session,
                server_time_ms,
                read_index,
            })
        ),
        prop_oneof![
            (any::<u8>(), any::<u8>())
                .prop_map(|(got, supported)| WireError::ProtocolVersion { got, supported }),
            any::<String>().prop_map(WireError::Malformed),
            any::<u32>().prop_map(WireError::UnknownGroup),
            prop::option::of((any::<NodeId>(), any::<String>()))
                .prop_map(|leader| WireError::NotLeader { leader }),
            any::<String>().prop_map(WireError::Unavailable),
        ]
        .prop_map(ResponseBody::Error),
    ]
}

fn arb_kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Request), Just(Kind::Response)]
}

fn round_trip<T>(value: &T, limit: usize) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = codec::encode(value);
    let back = codec::decode::<T>(&bytes, limit);
    prop_assert_eq!(back.as_ref(), Ok(value));
    Ok(())
}

#[test]
fn records_round_trip() {
    check(
        "records_round_trip",
        config(1, 1),
        (
            arb_request(),
            arb_image(),
            arb_snapshot(),
            arb_entry(),
            arb_vote(),
        ),
        |(request, image, snapshot, entry, vote)| {
            round_trip(&request, limits::FRAME_BYTES_MAX)?;
            round_trip(&image, limits::SNAPSHOT_BYTES_MAX)?;
            round_trip(&snapshot, limits::SNAPSHOT_BYTES_MAX)?;
            round_trip(&vote, 4096)?;
            round_trip(&Some(entry.log_id), 4096)?;
            let bytes = codec::encode(&snapshot);
            prop_assert_eq!(decode_snapshot(&bytes), Ok(snapshot));
            // Entry has no PartialEq: compare its Debug form.
            let bytes = codec::encode(&entry);
            let back: Entry = codec::decode(&bytes, limits::FRAME_BYTES_MAX)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(format!("{back:?}"), format!("{entry:?}"));
            Ok(())
        },
    );
}

#[test]
fn frames_round_trip() {
    check(
        "frames_round_trip",
        config(1, 1),
        (
            arb_kind(),
            any::<u64>(),
            any::<u32>(),
            arb_request_body(),
            arb_response_body(),
        ),
        |(kind, request_id, group, request, response)| {
            let want = Header {
                version: wire::PROTOCOL_VERSION,
                kind,
                request_id,
                group: GroupId(group),
            };
            let frame = wire::encode(kind, request_id, GroupId(group), &request);
            prop_assert!(frame.len() <= limits::FRAME_BYTES_MAX);
            prop_assert_eq!(wire::decode_header(&frame), Ok(want));
            let back: RequestBody =
                wire::decode_body(&frame).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(format!("{back:?}"), format!("{request:?}"));
            for cut in [0, frame.len() / 2, frame.len() - 1] {
                let short = &frame[..cut];
                prop_assert!(
                    wire::decode_header(short)
                        .and_then(|_| wire::decode_body::<RequestBody>(short))
                        .is_err(),
                    "a frame cut to {} bytes decoded",
                    cut
                );
            }

            let frame = wire::encode(kind, request_id, GroupId(group), &response);
            prop_assert_eq!(wire::decode_header(&frame), Ok(want));
            let back: ResponseBody =
                wire::decode_body(&frame).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(format!("{back:?}"), format!("{response:?}"));
            Ok(())
        },
    );
}

/// One way to damage a record.
#[derive(Clone, Debug)]
enum Damage {
    Truncate(Index),
    FlipBit(Index, u8),
    /// Overwrite a few bytes: may happen to decode, must not panic.
    Scribble(Vec<(Index, u8)>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<Index>().prop_map(Damage::Truncate),
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Damage::FlipBit(i, b)),
        prop::collection::vec((any::<Index>(), any::<u8>()), 1..6).prop_map(Damage::Scribble),
    ]
}

/// Damages `bytes`; returns whether the damage must be detected.
fn apply_damage(bytes: &mut Vec<u8>, damage: &Damage) -> bool {
    match damage {
        Damage::Truncate(i) => {
            bytes.truncate(i.index(bytes.len()));
            true
        }
        Damage::FlipBit(i, bit) => {
            let at = i.index(bytes.len());
            bytes[at] ^= 1 << bit;
            true
        }
        Damage::Scribble(writes) => {
            for (i, b) in writes {
                let at = i.index(bytes.len());
                bytes[at] = *b;
            }
            false
        }
    }
}

#[test]
fn damaged_records_are_errors() {
    check(
        "damaged_records_are_errors",
        config(1, 1),
        (arb_request(), arb_snapshot(), damage()),
        |(request, snapshot, damage)| {
            let mut bytes = codec::encode(&request);
            let detect = apply_damage(&mut bytes, &damage);
            let result = codec::decode::<Request>(&bytes, limits::FRAME_BYTES_MAX);
            if detect {
                prop_assert!(result.is_err(), "{:?} decoded: {:?}", damage, result);
            }
            // Never a panic, whatever the type asked for.
            let _ = codec::decode::<Entry>(&bytes, limits::FRAME_BYTES_MAX);
            let _ = codec::decode::<Option<LogId>>(&bytes, 4096);

            let mut bytes = codec::encode(&snapshot);
            let detect = apply_damage(&mut bytes, &damage);
            let result = decode_snapshot(&bytes);
            if detect {
                prop_assert!(result.is_err(), "{:?} decoded: {:?}", damage, result);
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Storage backends against a model of durability.

#[derive(Clone, Debug)]
enum StorageOp {
    Write(u32, WriteOp),
    Sync,
    /// Power loss that lets only the first `n` unsynced writes reach the disk.
    Crash(usize),
    Snapshot(u32, Vec<u8>),
    /// Sync, close, open again (sled only).
    Reopen,
}

fn write_op() -> impl Strategy<Value = WriteOp> {
    let meta_key = prop_oneof![
        Just(MetaKey::Vote),
        Just(MetaKey::Committed),
        Just(MetaKey::Purged)
    ];
    prop_oneof![
        2 => (meta_key, prop::collection::vec(any::<u8>(), 0..8))
            .prop_map(|(k, v)| WriteOp::Meta(k, v)),
        4 => (1u64..30, 1u64..5, any::<u8>()).prop_map(|(start, n, tag)| {
            WriteOp::Append(
                (start..start + n)
                    .map(|i| (i, vec![tag; (i % 5) as usize]))
                    .collect(),
            )
        }),
        1 => (0u64..36).prop_map(WriteOp::TruncateFrom),
        1 => (0u64..36).prop_map(WriteOp::PurgeUpTo),
    ]
}

fn storage_ops(crash: bool, len: usize) -> impl Strategy<Value = Vec<StorageOp>> {
    let group = 0u32..2;
    let last = if crash {
        (0usize..6).prop_map(StorageOp::Crash).boxed()
    } else {
        Just(StorageOp::Reopen).boxed()
    };
    prop::collection::vec(
        prop_oneof![
            8 => (group.clone(), write_op()).prop_map(|(g, op)| StorageOp::Write(g, op)),
            2 => Just(StorageOp::Sync),
            2 => last,
            1 => (group, prop::collection::vec(any::<u8>(), 0..16))
                .prop_map(|(g, b)| StorageOp::Snapshot(g, b)),
        ],
        1..len,
    )
}

/// The model's idea of applying one write to a group's disk image.
fn model_apply(image: &mut GroupImage, op: &WriteOp) {
    match op {
        WriteOp::Meta(k, v) => {
            image.meta.insert(*k, v.clone());
        }
        WriteOp::Append(entries) => {
            for (i, b) in entries {
                image.entries.insert(*i, b.clone());
            }
        }
        WriteOp::TruncateFrom(i) => image.entries.retain(|k, _| k < i),
        WriteOp::PurgeUpTo(i) => image.entries.retain(|k, _| k > i),
    }
}

/// Durable images per group, plus the writes not yet synced.
#[derive(Default)]
struct DiskModel {
    durable: BTreeMap<u32, GroupImage>,
    pending: Vec<(u32, WriteOp)>,
}

impl DiskModel {
    fn land(&mut self, n: usize) {
        for (g, op) in self.pending.drain(..n.min(self.pending.len())) {
            model_apply(self.durable.entry(g).or_default(), &op);
        }
    }

    fn image(&self, g: u32) -> GroupImage {
        self.durable.get(&g).cloned().unwrap_or_default()
    }
}

fn run_mem(ops: Vec<StorageOp>) -> Result<(), TestCaseError> {
    let disk = MemBackend::new();
    let mut model = DiskModel::default();
    for (n, op) in ops.into_iter().enumerate() {
        match op {
            StorageOp::Write(g, w) => {
                disk.write(GroupId(g), w.clone())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                model.pending.push((g, w));
            }
            StorageOp::Sync => {
                disk.sync()
                    .now_or_never()
                    .expect("a sync without latency is ready at once")
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                model.land(usize::MAX);
            }
            StorageOp::Crash(keep) => {
                disk.crash(keep);
                model.land(keep);
                model.pending.clear();
            }
            StorageOp::Snapshot(g, bytes) => {
                disk.save_snapshot(GroupId(g), bytes.clone())
                    .now_or_never()
                    .expect("ready")
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                model.durable.entry(g).or_default().snapshot = Some(bytes);
            }
            StorageOp::Reopen => unreachable!("not generated for MemBackend"),
        }
        prop_assert_eq!(disk.pending_writes(), model.pending.len(), "after op {}", n);
        for g in 0..2 {
            let got = disk
                .load(GroupId(g))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(got, model.image(g), "group {} after op {}", g, n);
        }
    }
    Ok(())
}

#[test]
fn mem_backend_matches_model() {
    check(
        "mem_backend_matches_model",
        config(1, 1),
        storage_ops(true, 40),
        run_mem,
    );
}

fn run_sled(ops: Vec<StorageOp>) -> Result<(), TestCaseError> {
    let io = |e: std::io::Error| TestCaseError::fail(e.to_string());
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut disk = SledBackend::open(dir.path()).map_err(io)?;
    // sled reads its own unsynced writes, so the model is every write applied.
    let mut model = DiskModel::default();
    for (n, op) in ops.into_iter().enumerate() {
        match op {
            StorageOp::Write(g, w) => {
                disk.write(GroupId(g), w.clone()).map_err(io)?;
                model.pending.push((g, w));
                model.land(usize::MAX);
            }
            StorageOp::Sync => rt.block_on(disk.sync()).map_err(io)?,
            StorageOp::Crash(_) => unreachable!("not generated for SledBackend"),
            StorageOp::Snapshot(g, bytes) => {
                rt.block_on(disk.save_snapshot(GroupId(g), bytes.clone()))
                    .map_err(io)?;
                model.durable.entry(g).or_default().snapshot = Some(bytes);
            }
            StorageOp::Reopen => {
                rt.block_on(disk.sync()).map_err(io)?;
                drop(disk);
                disk = SledBackend::open(dir.path()).map_err(io)?;
            }
        }
        for g in 0..2 {
            let got = disk.load(GroupId(g)).map_err(io)?;
            prop_assert_eq!(got, model.image(g), "group {} after op {}", g, n);
        }
    }
    Ok(())
}

#[test]
fn sled_backend_matches_model() {
    check(
        "sled_backend_matches_model",
        config(16, 4),
        storage_ops(false, 24),
        run_sled,
    );
}
