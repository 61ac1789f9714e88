//! [`SessionState`] against a reference model of the session lifecycle: principals and their
//! limits (refuse or evict the oldest), group capacity (refuse or evict the least recently
//! used), rotations within a group (`Rotate`) and across groups (`RotateOut`, `RotateIn`),
//! "log out everywhere" (`InvalidatePrincipal`) and leader-batched touches (`TouchBatch`), mixed
//! with creates, touches and purges under a moving, sometimes stale, leader clock.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;
use steadfast::command::{Attributes, Command, Limits, Outcome, Request, Response, WhenFull};
use steadfast::id::SessionId;
use steadfast::state::{Session, SessionState};

use super::{check, config};

const IDS: u8 = 8;
const PRINCIPALS: [&str; 3] = ["ann", "bob", "cy"];

fn sid(n: u8) -> SessionId {
    SessionId::from_bytes([n; 16])
}

#[derive(Clone, Debug)]
enum Op {
    Create {
        id: u8,
        idle: u64,
        principal: Option<u8>,
        limits: Limits,
    },
    Touch(Index),
    Rotate {
        old: Index,
        new: u8,
        principal: Option<u8>,
        limits: Limits,
    },
    RotateOut {
        old: Index,
        new: u8,
    },
    /// Lands the session the last `RotateOut` returned (or a live one's copy) under `new`.
    RotateIn {
        new: u8,
        principal: Option<u8>,
        limits: Limits,
    },
    Invalidate(u8),
    /// Reads of live sessions at `stamp - offset` (negative: a read from the future).
    TouchBatch(Vec<(Index, i64)>),
    Expire,
}

fn when() -> impl Strategy<Value = WhenFull> {
    prop_oneof![Just(WhenFull::Refuse), Just(WhenFull::EvictOldest)]
}

fn limits() -> impl Strategy<Value = Limits> {
    (
        prop::option::weighted(0.2, 1u64..6),
        when(),
        prop::option::weighted(0.6, 1u32..4),
        when(),
    )
        .prop_map(
            |(max_sessions, when_full, max_per_principal, when_principal_full)| Limits {
                max_sessions,
                when_full,
                max_per_principal,
                when_principal_full,
            },
        )
}

fn principal() -> impl Strategy<Value = Option<u8>> {
    prop::option::weighted(0.7, 0..PRINCIPALS.len() as u8)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..IDS, prop_oneof![1u64..300, 1_000u64..100_000], principal(), limits())
            .prop_map(|(id, idle, principal, limits)| Op::Create { id, idle, principal, limits }),
        2 => any::<Index>().prop_map(Op::Touch),
        3 => (any::<Index>(), 0..IDS, principal(), limits())
            .prop_map(|(old, new, principal, limits)| Op::Rotate { old, new, principal, limits }),
        2 => (any::<Index>(), 0..IDS).prop_map(|(old, new)| Op::RotateOut { old, new }),
        2 => (0..IDS, principal(), limits())
            .prop_map(|(new, principal, limits)| Op::RotateIn { new, principal, limits }),
        1 => (0..PRINCIPALS.len() as u8).prop_map(Op::Invalidate),
        3 => prop::collection::vec((any::<Index>(), -50i64..400), 0..4).prop_map(Op::TouchBatch),
        2 => Just(Op::Expire),
    ]
}

/// How the leader's stamp moves before a step: forward, or behind the clock (a stale leader).
fn steps() -> impl Strategy<Value = Vec<(i64, Op)>> {
    prop::collection::vec((prop_oneof![6 => 0i64..200, 1 => -300i64..0], op()), 1..60)
}

/// The model's session.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ModelSession {
    created_ms: u64,
    accessed_ms: u64,
    idle_timeout_ms: u64,
    version: u64,
    principal: Option<String>,
}

impl ModelSession {
    fn expires_at_ms(&self) -> u64 {
        self.accessed_ms.saturating_add(self.idle_timeout_ms)
    }

    fn to_session(&self) -> Session {
        Session {
            attributes: Default::default(),
            created_ms: self.created_ms,
            accessed_ms: self.accessed_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            deadline_ms: None,
            version: self.version,
            principal: self.principal.clone(),
        }
    }

    fn from_session(s: &Session) -> Self {
        ModelSession {
            created_ms: s.created_ms,
            accessed_ms: s.accessed_ms,
            idle_timeout_ms: s.idle_timeout_ms,
            version: s.version,
            principal: s.principal.clone(),
        }
    }
}

/// Sessions, tombstoned ids and the clock; nothing else is needed for these commands.
#[derive(Default)]
struct Model {
    clock: u64,
    sessions: BTreeMap<SessionId, ModelSession>,
    dead: BTreeSet<SessionId>,
}

fn limit_reached() -> Outcome {
    Outcome::LimitReached {
        reason: String::new(),
    }
}

impl Model {
    fn kill(&mut self, id: SessionId) {
        if self.sessions.remove(&id).is_some() {
            self.dead.insert(id);
        }
    }

    fn alive(&self, s: &ModelSession) -> bool {
        s.expires_at_ms() > self.clock
    }

    /// A principal's sessions that have not expired, oldest first (creation time, then id).
    fn live_of(&self, principal: &str) -> Vec<SessionId> {
        let mut live: Vec<(u64, SessionId)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.principal.as_deref() == Some(principal) && self.alive(s))
            .map(|(id, s)| (s.created_ms, *id))
            .collect();
        live.sort();
        live.into_iter().map(|(_, id)| id).collect()
    }

    fn refused(&self, s: &ModelSession, limits: &Limits) -> bool {
        let principal_full = match (&s.principal, limits.max_per_principal) {
            (Some(p), Some(max)) => {
                self.live_of(p).len() as u64 >= u64::from(max)
                    && limits.when_principal_full == WhenFull::Refuse
            }
            _ => false,
        };
        let group_full = limits.max_sessions.is_some_and(|max| {
            self.sessions.len() as u64 >= max && limits.when_full == WhenFull::Refuse
        });
        principal_full || group_full
    }

    fn admit(
        &mut self,
        index: u64,
        id: SessionId,
        mut s: ModelSession,
        limits: &Limits,
    ) -> Outcome {
        if self.sessions.contains_key(&id) || self.dead.contains(&id) {
            return Outcome::Exists;
        }
        if self.refused(&s, limits) {
            return limit_reached();
        }
        if let (Some(p), Some(max)) = (s.principal.clone(), limits.max_per_principal) {
            let live = self.live_of(&p);
            let excess = (live.len() + 1).saturating_sub(max as usize);
            for victim in live.into_iter().take(excess) {
                self.kill(victim);
            }
        }
        if let Some(max) = limits.max_sessions {
            while self.sessions.len() as u64 >= max.max(1) {
                let lru = self
                    .sessions
                    .iter()
                    .map(|(id, s)| (s.accessed_ms, *id))
                    .min();
                let Some((_, victim)) = lru else { break };
                self.kill(victim);
            }
        }
        s.version = index;
        self.sessions.insert(id, s);
        Outcome::Ok { version: index }
    }

    fn apply(&mut self, index: u64, stamp: u64, command: &Command) -> Response {
        self.clock = self.clock.max(stamp);
        if let Some(id) = command.session() {
            if self.sessions.get(&id).is_some_and(|s| !self.alive(s)) {
                self.kill(id);
            }
        }
        let outcome = self.execute(index, command);
        Response {
            server_time_ms: self.clock,
            outcome,
        }
    }

    fn execute(&mut self, index: u64, command: &Command) -> Outcome {
        let now = self.clock;
        let named = |p: &Option<String>, s: &ModelSession| p.clone().or(s.principal.clone());
        match command {
            Command::Create {
                id,
                idle_timeout_ms,
                principal,
                limits,
                ..
            } => {
                let s = ModelSession {
                    created_ms: now,
                    accessed_ms: now,
                    idle_timeout_ms: *idle_timeout_ms,
                    version: index,
                    principal: principal.clone(),
                };
                self.admit(index, *id, s, limits)
            }
            Command::Touch { id } => match self.sessions.get_mut(id) {
                Some(s) => {
                    s.accessed_ms = now;
                    Outcome::Ok { version: s.version }
                }
                None => Outcome::NotFound,
            },
            Command::Rotate {
                old,
                new,
                principal,
                limits,
            } => {
                let Some(s) = self.sessions.get(old).cloned() else {
                    return Outcome::NotFound;
                };
                if self.sessions.contains_key(new) || self.dead.contains(new) {
                    return Outcome::Exists;
                }
                let moved = ModelSession {
                    principal: named(principal, &s),
                    accessed_ms: now,
                    ..s
                };
                if self.refused(&moved, limits) {
                    return limit_reached();
                }
                self.kill(*old);
                self.admit(index, *new, moved, limits)
            }
            Command::RotateOut { old, .. } => match self.sessions.get(old).cloned() {
                Some(s) => {
                    self.kill(*old);
                    Outcome::RotatedOut {
                        session: Box::new(s.to_session()),
                    }
                }
                None => Outcome::NotFound,
            },
            Command::RotateIn {
                new,
                session,
                principal,
                limits,
                ..
            } => {
                let s = ModelSession::from_session(session);
                let moved = ModelSession {
                    principal: named(principal, &s),
                    accessed_ms: now,
                    created_ms: s.created_ms.min(now),
                    ..s
                };
                self.admit(index, *new, moved, limits)
            }
            Command::InvalidatePrincipal { principal } => {
                let ids: Vec<SessionId> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.principal.as_ref() == Some(principal))
                    .map(|(id, _)| *id)
                    .collect();
                for id in &ids {
                    self.kill(*id);
                }
                Outcome::Purged {
                    sessions: ids.len() as u64,
                }
            }
            Command::TouchBatch { reads } => {
                let mut touched = 0;
                for (id, read_at) in reads {
                    let clock = self.clock;
                    if let Some(s) = self.sessions.get_mut(id) {
                        if s.expires_at_ms() > clock {
                            s.accessed_ms = s.accessed_ms.max((*read_at).min(clock));
                            touched += 1;
                        }
                    }
                }
                Outcome::Purged { sessions: touched }
            }
            Command::Expire => {
                let due: Vec<SessionId> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.expires_at_ms() <= now)
                    .map(|(id, _)| *id)
                    .collect();
                for id in &due {
                    self.kill(*id);
                }
                Outcome::Purged {
                    sessions: due.len() as u64,
                }
            }
            other => unreachable!("the generator issues no {other:?}"),
        }
    }
}

/// Responses compare equal except for the wording of a limit's reason.
fn normalized(r: &Response) -> Response {
    match &r.outcome {
        Outcome::LimitReached { .. } => Response {
            server_time_ms: r.server_time_ms,
            outcome: limit_reached(),
        },
        _ => r.clone(),
    }
}

fn pick(i: &Index, model: &Model) -> SessionId {
    let ids: Vec<SessionId> = model.sessions.keys().copied().collect();
    if ids.is_empty() {
        sid(0)
    } else {
        ids[i.index(ids.len())]
    }
}

fn name(p: &Option<u8>) -> Option<String> {
    p.map(|p| PRINCIPALS[p as usize].to_string())
}

/// Turns a generated step into a command, resolved against the model's state.
fn command(op: &Op, model: &Model, stamp: u64, moved: &Option<Session>) -> Command {
    match op {
        Op::Create {
            id,
            idle,
            principal,
            limits,
        } => Command::Create {
            id: sid(*id),
            attributes: Attributes::new(),
            idle_timeout_ms: *idle,
            lifetime_ms: None,
            principal: name(principal),
            limits: *limits,
        },
        Op::Touch(i) => Command::Touch { id: pick(i, model) },
        Op::Rotate {
            old,
            new,
            principal,
            limits,
        } => Command::Rotate {
            old: pick(old, model),
            new: sid(*new),
            principal: name(principal),
            limits: *limits,
        },
        Op::RotateOut { old, new } => Command::RotateOut {
            old: pick(old, model),
            new: sid(*new),
        },
        Op::RotateIn {
            new,
            principal,
            limits,
        } => {
            let session = moved.clone().unwrap_or_else(|| Session {
                attributes: Default::default(),
                created_ms: stamp,
                accessed_ms: stamp,
                idle_timeout_ms: 1_000,
                deadline_ms: None,
                version: 1,
                principal: None,
            });
            Command::RotateIn {
                new: sid(*new),
                from: sid(IDS),
                session: Box::new(session),
                principal: name(principal),
                limits: *limits,
            }
        }
        Op::Invalidate(p) => Command::InvalidatePrincipal {
            principal: PRINCIPALS[*p as usize].to_string(),
        },
        Op::TouchBatch(reads) => Command::TouchBatch {
            reads: reads
                .iter()
                .map(|(i, offset)| (pick(i, model), stamp.saturating_add_signed(-offset)))
                .collect(),
        },
        Op::Expire => Command::Expire,
    }
}

fn run(steps: Vec<(i64, Op)>) -> Result<(), TestCaseError> {
    let mut state = SessionState::default();
    let mut model = Model::default();
    let mut now: u64 = 1_000_000;
    let mut moved: Option<Session> = None;
    for (n, (dt, op)) in steps.iter().enumerate() {
        let stamp = if *dt >= 0 {
            now += *dt as u64;
            now
        } else {
            now.saturating_add_signed(*dt)
        };
        let index = n as u64 + 1;
        let command = command(op, &model, stamp, &moved);
        let request = Request {
            now_ms: stamp,
            origin: None,
            command: command.clone(),
        };
        let got = state.apply(index, &request);
        let want = model.apply(index, stamp, &command);
        prop_assert_eq!(
            normalized(&got),
            normalized(&want),
            "step {}: {:?}",
            n,
            command
        );
        if let Outcome::RotatedOut { session } = &got.outcome {
            moved = Some((**session).clone());
        }
        for p in PRINCIPALS {
            let mut got = state.sessions_of(p);
            got.sort();
            let mut want = model.live_of(p);
            want.sort();
            prop_assert_eq!(got, want, "sessions of {} after step {}", p, n);
        }
        for i in 0..IDS {
            let view = state.get(&sid(i)).map(|v| {
                (
                    v.version,
                    v.accessed_ms,
                    v.created_ms,
                    v.expires_at_ms,
                    v.principal,
                )
            });
            let want = model
                .sessions
                .get(&sid(i))
                .filter(|s| model.alive(s))
                .map(|s| {
                    (
                        s.version,
                        s.accessed_ms,
                        s.created_ms,
                        s.expires_at_ms(),
                        s.principal.clone(),
                    )
                });
            prop_assert_eq!(view, want, "get {} after step {}", i, n);
        }
    }
    let image = state.to_image();
    let sessions: BTreeMap<SessionId, ModelSession> = image
        .sessions
        .iter()
        .map(|(id, s)| (*id, ModelSession::from_session(s)))
        .collect();
    prop_assert_eq!(&sessions, &model.sessions);
    let dead: BTreeSet<SessionId> = image.tombstones.iter().map(|(id, _)| *id).collect();
    prop_assert_eq!(&dead, &model.dead);
    Ok(())
}

#[test]
fn session_lifecycle_matches_model() {
    check(
        "session_lifecycle_matches_model",
        config(1, 1),
        steps(),
        run,
    );
}
