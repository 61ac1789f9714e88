//! History checker for steadfast's deterministic simulation.
//!
//! # Model
//!
//! Every Raft group is one linearizable object: a map from session id ("key") to a versioned
//! register whose life is `Absent -> Present(v1) -> Present(v2) -> ... -> Dead` (delete wins:
//! a tombstoned key is never created again). Every successful Create/Put/Delete gets a `version`
//! unique in its group that strictly increases along the group's log order, across all keys of
//! the group (the log index, or `(log_index << 16) | position` when one entry carries many
//! writes); the checker only compares versions for equality and order, never as indexes. Touch
//! returns the current version and writes none. Every `Ok`/`Read` response carries the group's
//! replicated clock at the linearization point, which never decreases along that order.
//!
//! # Why versions make checking near-linear
//!
//! Checking linearizability is NP-complete in general because a checker has to guess the order
//! in which concurrent writes took effect. Here the store tells us that order: it is the version
//! order. So instead of searching, [`check`] gives every op a *position* `c(op)`: the largest
//! write version linearized at or before it (a write's position is its own version). Real time
//! and each op's observation bound that position:
//!
//! * `A` must precede `B`  =>  `c(A) <= c(B)`                                       (floor)
//! * write `W` must follow `A`  =>  `c(A) < ver(W)`                                 (ceiling)
//! * a Get/Touch/Conflict that saw version `v` of key `k`  =>
//!   `v <= c(op) < next(k, v)`, the next version of `k` anyone wrote or saw
//!
//! where "`A` must precede `B`" is known two ways: `A` completed before `B` was invoked (real
//! time), or `A` reported a strictly smaller server time than `B` (the clock never decreases, so
//! `B` cannot come first). Floors and ceilings are a few sweeps over ops sorted by completion,
//! invocation and server time; everything else is sorting and map look-ups, so the whole check is
//! `O(n log n)`. An empty window, or an absence/refusal no state in the window explains, is a
//! violation.
//!
//! # What is checked (per group)
//!
//! * versions: unique per group ([`Violation::DuplicateVersion`]); every version anybody saw was
//!   written to that key with that value by an acknowledged write or by an Unknown write invoked
//!   before the observer completed ([`Violation::PhantomValue`], [`Violation::ConflictLies`]);
//! * per-key chains: one create, first ([`Violation::DoubleCreate`]); one delete, last
//!   ([`Violation::Resurrection`]); a CAS's predecessor is its expected version
//!   ([`Violation::LostUpdate`], [`Violation::DoubleCasSuccess`]); presence needs a create
//!   ([`Violation::NeverCreated`]);
//! * windows: [`Violation::StaleRead`], [`Violation::NonMonotonicRead`],
//!   [`Violation::RealTimeOrder`], [`Violation::Resurrection`] (present after observed dead),
//!   [`Violation::FalseFailure`] (an Exists/NotFound/None no state in the window explains);
//! * clocks: [`Violation::TimeWentBackwards`] (real-time order and commit order),
//!   [`Violation::ExpiredRead`];
//! * after healing, [`check_final_reads`]: [`Violation::LostAcknowledgement`] and
//!   [`Violation::BadFinalRead`].
//!
//! # Soundness
//!
//! Each rule is a necessary condition of the sequential spec that [`brute_force_linearizable`]
//! searches exhaustively, so a linearizable history is never flagged. The rules use only facts
//! that hold in *every* linearization: acknowledged versions, versions proven to exist because a
//! definite op observed them, and real-time precedence between *definite* ops. An Unknown op is
//! never assumed to have happened or not, and its effect window never closes (a Raft proposal can
//! commit after its client timed out). Where the checker would have to guess (an Unknown write
//! nobody observed, which of several Unknown writes produced a value), it gives up the constraint
//! instead, so it is incomplete: the randomized test measures how much it misses.
//!
//! # Assumptions the harness must honour
//!
//! * `version` is unique per group and increases in the group's log order (compared, never
//!   counted); a key lives in exactly one group.
//! * A CAS (`expected: Some`) on an absent or dead key answers `NotFound`, not `Conflict`.
//! * Without [`CheckOptions::sessions_may_expire`] no session expires during the run (TTLs longer
//!   than the simulated time), so only a delete can make a created key disappear.
//! * Ops of one group share one real-time clock for `invoke`/`complete`; ties count as concurrent.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Bound::{Excluded, Unbounded};

/// Real-time stand-in for "the effect window never closes".
const NEVER: u64 = u64::MAX;

// ---------------------------------------------------------------------------------------------
// Data model
// ---------------------------------------------------------------------------------------------

/// One client operation as recorded by the simulation harness.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Unique op id.
    pub id: u64,
    pub client: u32,
    /// Raft group the key belongs to.
    pub group: u32,
    pub key: u64,
    pub kind: OpKind,
    /// Logical time (strictly increasing event counter or sim-ns) when invoked.
    pub invoke: u64,
    /// When the response arrived; `None` = never returned (outcome must be `Unknown`).
    pub complete: Option<u64>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    /// Fails if the key exists or existed.
    Create {
        value: u64,
    },
    Get,
    /// `expected = Some(v)`: succeed only if the current version is `v`.
    Put {
        value: u64,
        expected: Option<u64>,
    },
    Touch,
    Delete {
        expected: Option<u64>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Create/Put/Touch/Delete success. Touch: the unchanged current version; Delete: the
    /// version of the delete itself.
    Ok { version: u64, server_time_ms: u64 },
    /// Get result; `None` = not found.
    Read {
        found: Option<ReadValue>,
        server_time_ms: u64,
    },
    /// Create refused: key present or dead (tombstoned).
    Exists,
    /// Put/Touch/Delete on an absent or dead key.
    NotFound,
    /// CAS mismatch: current version returned, nothing written.
    Conflict { current: u64 },
    /// Timeout / connection loss: may or may not have taken effect.
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadValue {
    pub version: u64,
    pub value: u64,
    pub expires_at_ms: u64,
}

/// Knobs for semantics the history alone cannot tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CheckOptions {
    /// Sessions may expire during the run, so a created key may become dead without a delete.
    /// Off by default: the harness is expected to use TTLs longer than the simulated run.
    pub sessions_may_expire: bool,
}

/// What [`check`] looked at, for the harness's logs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckStats {
    pub ops: usize,
    pub definite_ops: usize,
    pub unknown_ops: usize,
    pub groups: usize,
    pub keys: usize,
    /// Distinct versions proven to exist (acknowledged or observed).
    pub versions: usize,
    /// Versions that only an Unknown write can have produced (it took effect).
    pub unknown_writes_observed: usize,
}

impl Op {
    /// Whether the outcome is definite (anything but `Unknown`).
    pub fn is_definite(&self) -> bool {
        !matches!(self.outcome, Outcome::Unknown)
    }

    /// Real-time end of the op's effect window. An Unknown op may still take effect after its
    /// client gave up (a proposal can commit after the timeout), so its window never closes.
    pub fn effective_complete(&self) -> u64 {
        if self.is_definite() {
            self.complete.unwrap_or(NEVER)
        } else {
            NEVER
        }
    }

    /// Replicated clock reported by an `Ok` or `Read` response.
    pub fn server_time_ms(&self) -> Option<u64> {
        match self.outcome {
            Outcome::Ok { server_time_ms, .. } | Outcome::Read { server_time_ms, .. } => {
                Some(server_time_ms)
            }
            _ => None,
        }
    }

    /// Version written by an acknowledged Create/Put/Delete (Touch writes no version).
    pub fn written_version(&self) -> Option<u64> {
        match (&self.kind, &self.outcome) {
            (OpKind::Touch | OpKind::Get, _) => None,
            (_, Outcome::Ok { version, .. }) => Some(*version),
            _ => None,
        }
    }

    /// Value a Create/Put writes if it takes effect.
    fn written_value(&self) -> Option<u64> {
        match self.kind {
            OpKind::Create { value } | OpKind::Put { value, .. } => Some(value),
            _ => None,
        }
    }

    /// Outcomes that prove the key was Present at the op's linearization point.
    fn proves_present(&self) -> bool {
        match (&self.kind, &self.outcome) {
            (OpKind::Create { .. }, _) => false,
            (_, Outcome::Ok { .. } | Outcome::Conflict { .. }) => true,
            (_, Outcome::Read { found, .. }) => found.is_some(),
            _ => false,
        }
    }

    /// Outcomes impossible on a dead key: presence, or a successful create.
    fn needs_live_key(&self) -> bool {
        self.proves_present() || matches!(self.outcome, Outcome::Ok { .. })
    }

    /// Outcomes that say the key was absent or dead.
    fn saw_absence(&self) -> bool {
        matches!(
            self.outcome,
            Outcome::NotFound | Outcome::Read { found: None, .. }
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Violations
// ---------------------------------------------------------------------------------------------

/// One anomaly, with the op ids involved. `Display` gives a sentence for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// The history itself is invalid (harness bug or impossible response shape).
    Malformed { op: u64, detail: String },
    /// Two writes of one group claim the same version (log index).
    DuplicateVersion {
        group: u32,
        version: u64,
        first: u64,
        second: u64,
    },
    /// An op saw a version/value no write produced, or saw it before its write was invoked.
    PhantomValue {
        key: u64,
        op: u64,
        version: u64,
        detail: String,
    },
    /// A read saw a state that was superseded before the read was invoked.
    StaleRead {
        key: u64,
        read: u64,
        witness: u64,
        detail: String,
    },
    /// A read saw an older version than a read of the same key that finished before it began.
    NonMonotonicRead { key: u64, first: u64, second: u64 },
    /// A CAS succeeded although its expected version had been superseded.
    LostUpdate {
        key: u64,
        write: u64,
        expected: u64,
        superseded_by: u64,
        detail: String,
    },
    /// Two CAS writes succeeded against the same expected version.
    DoubleCasSuccess {
        key: u64,
        expected: u64,
        first: u64,
        second: u64,
    },
    /// A create succeeded on a key that already existed.
    DoubleCreate {
        key: u64,
        first: u64,
        second: u64,
        detail: String,
    },
    /// A key was present (or created) after it was deleted or observed dead.
    Resurrection {
        key: u64,
        dead: u64,
        op: u64,
        detail: String,
    },
    /// A key was present although no create can have preceded it.
    NeverCreated { key: u64, op: u64 },
    /// `earlier` completed before `later` was invoked, yet is ordered after it by version.
    RealTimeOrder {
        group: u32,
        earlier: u64,
        later: u64,
        detail: String,
    },
    /// A definite Exists/NotFound/not-found that no state during the op explains.
    FalseFailure { key: u64, op: u64, detail: String },
    /// A Conflict response whose `current` is impossible.
    ConflictLies { key: u64, op: u64, detail: String },
    /// A Get returned a session whose expiry is not after the server time.
    ExpiredRead {
        key: u64,
        read: u64,
        server_time_ms: u64,
        expires_at_ms: u64,
    },
    /// The replicated clock went backwards between two ops ordered by real time or commit order.
    TimeWentBackwards {
        group: u32,
        earlier: u64,
        later: u64,
        earlier_ms: u64,
        later_ms: u64,
    },
    /// The final read after healing lost an acknowledged write (or delete, or create).
    LostAcknowledgement {
        key: u64,
        write: u64,
        final_version: Option<u64>,
    },
    /// The final read after healing is impossible for another reason.
    BadFinalRead {
        key: u64,
        witness: Option<u64>,
        detail: String,
    },
    /// A rotation did not carry the session's latest data (as of the rotation) to the new id.
    RotationLostData {
        key: u64,
        rotate: u64,
        detail: String,
    },
}

impl Violation {
    /// Short class name, stable for tests and dashboards.
    pub fn class(&self) -> &'static str {
        match self {
            Violation::Malformed { .. } => "Malformed",
            Violation::DuplicateVersion { .. } => "DuplicateVersion",
            Violation::PhantomValue { .. } => "PhantomValue",
            Violation::StaleRead { .. } => "StaleRead",
            Violation::NonMonotonicRead { .. } => "NonMonotonicRead",
            Violation::LostUpdate { .. } => "LostUpdate",
            Violation::DoubleCasSuccess { .. } => "DoubleCasSuccess",
            Violation::DoubleCreate { .. } => "DoubleCreate",
            Violation::Resurrection { .. } => "Resurrection",
            Violation::NeverCreated { .. } => "NeverCreated",
            Violation::RealTimeOrder { .. } => "RealTimeOrder",
            Violation::FalseFailure { .. } => "FalseFailure",
            Violation::ConflictLies { .. } => "ConflictLies",
            Violation::ExpiredRead { .. } => "ExpiredRead",
            Violation::TimeWentBackwards { .. } => "TimeWentBackwards",
            Violation::LostAcknowledgement { .. } => "LostAcknowledgement",
            Violation::BadFinalRead { .. } => "BadFinalRead",
            Violation::RotationLostData { .. } => "RotationLostData",
        }
    }

    /// Ids of the ops involved, for pointing at them in a trace.
    pub fn ops(&self) -> Vec<u64> {
        use Violation::*;
        match self {
            Malformed { op, .. }
            | PhantomValue { op, .. }
            | NeverCreated { op, .. }
            | FalseFailure { op, .. }
            | ConflictLies { op, .. } => vec![*op],
            ExpiredRead { read, .. } => vec![*read],
            LostAcknowledgement { write, .. } => vec![*write],
            BadFinalRead { witness, .. } => witness.iter().copied().collect(),
            RotationLostData { rotate, .. } => vec![*rotate],
            StaleRead { read, witness, .. } => vec![*read, *witness],
            LostUpdate {
                write,
                superseded_by,
                ..
            } => vec![*write, *superseded_by],
            Resurrection { dead, op, .. } => vec![*dead, *op],
            DuplicateVersion { first, second, .. }
            | NonMonotonicRead { first, second, .. }
            | DoubleCasSuccess { first, second, .. }
            | DoubleCreate { first, second, .. } => vec![*first, *second],
            RealTimeOrder { earlier, later, .. } | TimeWentBackwards { earlier, later, .. } => {
                vec![*earlier, *later]
            }
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Violation::*;
        match self {
            Malformed { op, detail } => write!(f, "malformed history at op {op}: {detail}"),
            DuplicateVersion {
                group,
                version,
                first,
                second,
            } => write!(
                f,
                "duplicate version: ops {first} and {second} both claim version {version} in \
                 group {group}"
            ),
            PhantomValue {
                key,
                op,
                version,
                detail,
            } => {
                write!(
                    f,
                    "phantom value: op {op} on key {key} saw version {version}: {detail}"
                )
            }
            StaleRead {
                key,
                read,
                witness,
                detail,
            } => {
                write!(
                    f,
                    "stale read: op {read} on key {key} (witness op {witness}): {detail}"
                )
            }
            NonMonotonicRead { key, first, second } => write!(
                f,
                "non-monotonic read on key {key}: op {second} began after op {first} finished \
                 but saw an older version"
            ),
            LostUpdate {
                key,
                write,
                expected,
                superseded_by,
                detail,
            } => write!(
                f,
                "lost update on key {key}: CAS op {write} expected version {expected}, \
                 superseded (op {superseded_by}): {detail}"
            ),
            DoubleCasSuccess {
                key,
                expected,
                first,
                second,
            } => write!(
                f,
                "double CAS success on key {key}: ops {first} and {second} both succeeded \
                 expecting version {expected}"
            ),
            DoubleCreate {
                key,
                first,
                second,
                detail,
            } => {
                write!(
                    f,
                    "double create of key {key} (ops {first}, {second}): {detail}"
                )
            }
            Resurrection {
                key,
                dead,
                op,
                detail,
            } => write!(
                f,
                "resurrection of key {key}: op {op} found it alive after op {dead} showed it \
                 dead: {detail}"
            ),
            NeverCreated { key, op } => {
                write!(
                    f,
                    "op {op} found key {key} present but no create can have preceded it"
                )
            }
            RealTimeOrder {
                group,
                earlier,
                later,
                detail,
            } => write!(
                f,
                "real-time order violated in group {group}: op {earlier} finished before op \
                 {later} began: {detail}"
            ),
            FalseFailure { key, op, detail } => {
                write!(f, "false failure: op {op} on key {key}: {detail}")
            }
            ConflictLies { key, op, detail } => {
                write!(f, "lying conflict: op {op} on key {key}: {detail}")
            }
            ExpiredRead {
                key,
                read,
                server_time_ms,
                expires_at_ms,
            } => write!(
                f,
                "expired read: op {read} on key {key} returned a session expiring at \
                 {expires_at_ms} ms at server time {server_time_ms} ms"
            ),
            TimeWentBackwards {
                group,
                earlier,
                later,
                earlier_ms,
                later_ms,
            } => write!(
                f,
                "server time went backwards in group {group}: op {earlier} at {earlier_ms} ms \
                 precedes op {later} at {later_ms} ms"
            ),
            LostAcknowledgement {
                key,
                write,
                final_version,
            } => write!(
                f,
                "lost acknowledgement on key {key}: acknowledged op {write} is missing from \
                 the final state (final version {final_version:?})"
            ),
            BadFinalRead {
                key,
                witness,
                detail,
            } => {
                write!(
                    f,
                    "impossible final read of key {key} (witness {witness:?}): {detail}"
                )
            }
            RotationLostData {
                key,
                rotate,
                detail,
            } => write!(f, "rotation {rotate} of key {key} lost data: {detail}"),
        }
    }
}

impl std::error::Error for Violation {}

// ---------------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------------

/// Fast, sound (never flags a linearizable history) and near-linear checker.
/// Assumes sessions do not expire during the run; see [`check_with`].
///
/// # Errors
///
/// The first anomaly found; [`Violation::Malformed`] if the history itself is invalid.
pub fn check(history: &[Op]) -> Result<CheckStats, Violation> {
    check_with(history, CheckOptions::default())
}

/// [`check`] with explicit options.
///
/// # Errors
///
/// As [`check`].
pub fn check_with(history: &[Op], opts: CheckOptions) -> Result<CheckStats, Violation> {
    let groups = analyze(history, opts)?;
    let mut stats = CheckStats {
        ops: history.len(),
        definite_ops: history.iter().filter(|op| op.is_definite()).count(),
        groups: groups.len(),
        ..CheckStats::default()
    };
    stats.unknown_ops = stats.ops - stats.definite_ops;
    for g in &groups {
        stats.keys += g.keys.len();
        stats.versions += g.versions.len();
        stats.unknown_writes_observed += g.versions.values().filter(|v| !v.acked).count();
    }
    Ok(stats)
}

/// Checks the history, then one linearizable read per key taken after the cluster healed:
/// no acknowledged write may be missing. Assumes no expiry; see [`check_final_reads_with`].
/// In-flight Unknown ops may still land after the final reads; they are treated as optional.
///
/// # Errors
///
/// Any violation of the history itself, else [`Violation::LostAcknowledgement`] or
/// [`Violation::BadFinalRead`].
pub fn check_final_reads(
    history: &[Op],
    final_reads: &[(u64, Option<ReadValue>)],
) -> Result<(), Violation> {
    check_final_reads_with(history, final_reads, CheckOptions::default())
}

/// [`check_final_reads`] with explicit options.
///
/// # Errors
///
/// As [`check_final_reads`].
pub fn check_final_reads_with(
    history: &[Op],
    final_reads: &[(u64, Option<ReadValue>)],
    opts: CheckOptions,
) -> Result<(), Violation> {
    let groups = analyze(history, opts)?;
    for (key, fin) in final_reads {
        match groups
            .iter()
            .find_map(|g| g.keys.get(key).map(|ki| (g, ki)))
        {
            Some((g, ki)) => g.check_final(*key, ki, fin.as_ref())?,
            None => {
                if let Some(rv) = fin {
                    return Err(Violation::BadFinalRead {
                        key: *key,
                        witness: None,
                        detail: format!("no op touched the key, yet it has version {}", rv.version),
                    });
                }
            }
        }
    }
    Ok(())
}

/// A successful rotation of `key` (op `op`) and what a read of the new id returned right after
/// it. Within one group the history records it as a delete at `version`, the rotation's
/// version; across groups `version` belongs to the new id's group (`RotateIn`) and the history
/// records the old key's death as an Unknown delete (the `RotateOut`'s version is not returned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub op: u64,
    pub key: u64,
    pub version: u64,
    /// The new id's session: `None` if it was gone.
    pub carried: Option<ReadValue>,
    /// When the rotation returned (harness ticks).
    pub complete: u64,
    /// The new id is in another group than `key`.
    pub cross_group: bool,
}

/// A rotation moves the key's data *as of the rotation* to the new id: the new id holds the value
/// of the last data write of `key` before the rotation, at the rotation's version.
///
/// Sound under the same rules as [`check`]: it uses acknowledged and observed versions only, and
/// compares versions for order only. The carried value must come from a write of `key` invoked
/// before the rotation completed; if that write's version is known, no other version of `key`
/// may come between it and the rotation: within one group, one below the rotation's version;
/// across groups (versions of two logs do not compare), one acknowledged before the rotation
/// was invoked.
///
/// # Errors
///
/// [`Violation::RotationLostData`].
pub fn check_rotation(
    history: &[Op],
    rotation: &Rotation,
    opts: CheckOptions,
) -> Result<(), Violation> {
    let fail = |detail: String| Violation::RotationLostData {
        key: rotation.key,
        rotate: rotation.op,
        detail,
    };
    let Some(carried) = &rotation.carried else {
        return if opts.sessions_may_expire {
            Ok(())
        } else {
            Err(fail("the new id has no session".into()))
        };
    };
    if carried.version != rotation.version {
        return Err(fail(format!(
            "the new id is at version {}, the rotation committed at {}",
            carried.version, rotation.version
        )));
    }
    let ops: Vec<&Op> = history.iter().filter(|o| o.key == rotation.key).collect();
    let rotate_complete = rotation.complete;
    let rotate_invoke = ops
        .iter()
        .find(|o| o.id == rotation.op)
        .map_or(0, |o| o.invoke);
    let written = |o: &Op| match o.kind {
        OpKind::Create { value } | OpKind::Put { value, .. } => Some(value),
        _ => None,
    };
    let Some(source) = ops
        .iter()
        .find(|o| written(o) == Some(carried.value) && o.outcome != Outcome::Exists)
    else {
        return Err(fail(format!(
            "the new id holds value {}, which no write of the key produced",
            carried.value
        )));
    };
    if source.invoke >= rotate_complete {
        return Err(fail(format!(
            "the carried value was written by op {}, invoked after the rotation completed",
            source.id
        )));
    }
    // Every (version, value, completion) of the key anybody saw or was acknowledged.
    let mut known: Vec<(u64, Option<u64>, u64)> = Vec::new();
    for o in &ops {
        let done = o.complete.unwrap_or(NEVER);
        match &o.outcome {
            Outcome::Ok { version, .. } if o.id != rotation.op => {
                known.push((*version, written(o), done))
            }
            Outcome::Read {
                found: Some(rv), ..
            } => known.push((rv.version, Some(rv.value), done)),
            _ => {}
        }
    }
    let source_version = known
        .iter()
        .find(|(_, v, _)| *v == Some(carried.value))
        .map(|(version, _, _)| *version);
    let before_rotation = |version: u64, done: u64| {
        if rotation.cross_group {
            done < rotate_invoke
        } else {
            version < rotation.version
        }
    };
    if let Some(sv) = source_version {
        if let Some((newer, _, _)) = known.iter().find(|(v, value, done)| {
            *v > sv && before_rotation(*v, *done) && *value != Some(carried.value)
        }) {
            return Err(fail(format!(
                "carried value {} (version {sv}), but version {newer} came before the rotation at {}",
                carried.value, rotation.version
            )));
        }
    }
    Ok(())
}

fn analyze(history: &[Op], opts: CheckOptions) -> Result<Vec<Group<'_>>, Violation> {
    validate(history)?;
    let mut by_group: BTreeMap<u32, Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_group.entry(op.group).or_default().push(op);
    }
    by_group
        .into_iter()
        .map(|(id, ops)| Group::analyze(id, &ops, opts))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Shape validation (shared with the brute-force checker so both reject the same inputs)
// ---------------------------------------------------------------------------------------------

fn validate(history: &[Op]) -> Result<(), Violation> {
    let mut ids = BTreeSet::new();
    let mut key_group = BTreeMap::new();
    for op in history {
        let bad = |detail: &str| Violation::Malformed {
            op: op.id,
            detail: detail.to_string(),
        };
        if !ids.insert(op.id) {
            return Err(bad("duplicate op id"));
        }
        if *key_group.entry(op.key).or_insert(op.group) != op.group {
            return Err(bad("key appears in two groups"));
        }
        if op.complete.is_some_and(|c| c < op.invoke) {
            return Err(bad("completes before it is invoked"));
        }
        if op.is_definite() && op.complete.is_none() {
            return Err(bad("definite outcome but no completion time"));
        }
        if let Some(why) = shape_error(op) {
            return Err(bad(why));
        }
    }
    Ok(())
}

/// Outcome kinds the protocol cannot produce for the op kind. Versions are log indices, so 0
/// never names a real state.
fn shape_error(op: &Op) -> Option<&'static str> {
    use OpKind::*;
    use Outcome::*;
    let fits = match (&op.kind, &op.outcome) {
        (_, Unknown) => true,
        (Create { .. }, Ok { .. } | Exists) => true,
        (Get, Read { .. }) => true,
        (Put { .. } | Touch | Delete { .. }, Ok { .. } | NotFound) => true,
        (Put { expected, .. } | Delete { expected }, Conflict { .. }) => expected.is_some(),
        _ => false,
    };
    let zero = match &op.outcome {
        Ok { version, .. } | Conflict { current: version } => *version == 0,
        Read {
            found: Some(rv), ..
        } => rv.version == 0,
        _ => false,
    };
    if !fits {
        Some("outcome does not fit the op kind")
    } else if zero {
        Some("version 0 is not a log index")
    } else {
        None
    }
}

// ---------------------------------------------------------------------------------------------
// Per-group analysis
// ---------------------------------------------------------------------------------------------

/// What a definite op observed about a key's version (not a version it wrote).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Get,
    Touch,
    Conflict,
    CasExpected,
}

#[derive(Debug, Clone, Copy)]
struct Obs<'a> {
    op: &'a Op,
    version: u64,
    value: Option<u64>,
    role: Role,
}

fn observation(op: &Op) -> Option<Obs<'_>> {
    let (version, value, role) = match (&op.kind, &op.outcome) {
        (
            OpKind::Get,
            Outcome::Read {
                found: Some(rv), ..
            },
        ) => (rv.version, Some(rv.value), Role::Get),
        (OpKind::Touch, Outcome::Ok { version, .. }) => (*version, None, Role::Touch),
        (_, Outcome::Conflict { current }) => (*current, None, Role::Conflict),
        (
            OpKind::Put {
                expected: Some(e), ..
            }
            | OpKind::Delete { expected: Some(e) },
            Outcome::Ok { .. },
        ) => (*e, None, Role::CasExpected),
        _ => return None,
    };
    Some(Obs {
        op,
        version,
        value,
        role,
    })
}

impl Obs<'_> {
    /// The observation cannot be true; blame it in the terms of its op kind.
    fn misread(&self, detail: String) -> Violation {
        match self.role {
            Role::Conflict => Violation::ConflictLies {
                key: self.op.key,
                op: self.op.id,
                detail,
            },
            _ => Violation::PhantomValue {
                key: self.op.key,
                op: self.op.id,
                version: self.version,
                detail,
            },
        }
    }
}

/// Everything known about one version number of a group.
#[derive(Debug, Clone)]
struct VersionInfo {
    key: u64,
    deleted: bool,
    value: Option<u64>,
    /// Written by an acknowledged op (else only proven by observers of an Unknown write).
    acked: bool,
    /// Lower bound on the writer's invocation (earliest candidate if ambiguous).
    writer_invoke: u64,
    /// An op to blame: the writer if known, else an observer.
    witness: u64,
}

#[derive(Debug, Default)]
struct KeyInfo<'a> {
    /// Versions proven to exist for this key (acknowledged or observed).
    versions: BTreeSet<u64>,
    ops: Vec<&'a Op>,
    creates: Vec<&'a Op>,
    deletes: Vec<&'a Op>,
    unknown_creates: Vec<&'a Op>,
    /// Sorted by invocation once indexing is done.
    unknown_puts: Vec<&'a Op>,
    unknown_puts_by_value: BTreeMap<u64, Vec<&'a Op>>,
    unknown_deletes: Vec<&'a Op>,
    /// Earliest invocation of an Unknown create.
    first_unknown_create: Option<u64>,
    /// Earliest invocation of an Unknown delete that can have taken effect.
    first_possible_delete: Option<u64>,
    /// Definite op proving the key dead when it completed: (completion, op id).
    dead_proof: Option<(u64, u64)>,
    /// Newest version at which the key was Present.
    last_present: Option<u64>,
}

impl KeyInfo<'_> {
    fn next_version(&self, v: u64) -> u64 {
        self.versions
            .range((Excluded(v), Unbounded))
            .next()
            .copied()
            .unwrap_or(NEVER)
    }

    /// Whether Unknown delete `d` can have taken effect: a CAS delete needs the key to have
    /// had its expected version, i.e. a known one or one an Unknown write might have produced.
    fn may_delete(&self, d: &Op) -> bool {
        match d.kind {
            OpKind::Delete { expected: Some(e) } => {
                self.versions.contains(&e)
                    || !self.unknown_creates.is_empty()
                    || !self.unknown_puts.is_empty()
            }
            _ => true,
        }
    }

    /// Some definite op proves the key was created at some point.
    fn surely_created(&self) -> bool {
        !self.versions.is_empty() || self.ops.iter().any(|o| o.outcome == Outcome::Exists)
    }
}

/// A version observed by definite ops but not written by any acknowledged op.
struct Unexplained<'a> {
    key: u64,
    value: Option<u64>,
    first: Obs<'a>,
    /// Earliest completion among its observers: its writer was invoked before that.
    min_done: u64,
}

/// The Unknown writes that may have produced an observed version.
#[derive(Default)]
struct Candidates<'a> {
    count: usize,
    first_invoke: Option<u64>,
    last: Option<&'a Op>,
}

impl<'a> Candidates<'a> {
    fn add(&mut self, w: &'a Op) {
        self.count += 1;
        self.first_invoke = Some(self.first_invoke.map_or(w.invoke, |f| f.min(w.invoke)));
        self.last = Some(w);
    }

    /// Adds a run sorted by invocation without visiting it all.
    fn add_sorted(&mut self, ws: &[&'a Op]) {
        if let (Some(first), Some(last)) = (ws.first(), ws.last()) {
            self.add(first);
            self.count += ws.len() - 1;
            self.last = Some(last);
        }
    }

    /// The single candidate, if there is exactly one.
    fn only(&self) -> Option<&'a Op> {
        self.last.filter(|_| self.count == 1)
    }
}

/// A definite op with its own bounds on its position `c(op)`: `lo <= c(op) < ub`.
struct Item<'a> {
    op: &'a Op,
    lo: u64,
    ub: u64,
    /// Version of the key's state it observed (Get/Touch/Conflict).
    observed: Option<u64>,
}

struct Group<'a> {
    id: u32,
    opts: CheckOptions,
    versions: BTreeMap<u64, VersionInfo>,
    keys: BTreeMap<u64, KeyInfo<'a>>,
}

impl<'a> Group<'a> {
    fn analyze(id: u32, ops: &[&'a Op], opts: CheckOptions) -> Result<Self, Violation> {
        let mut g = Group {
            id,
            opts,
            versions: BTreeMap::new(),
            keys: BTreeMap::new(),
        };
        for &op in ops {
            check_local(op)?;
            g.index(op)?;
        }
        g.explain_observations(ops)?;
        for (&key, ki) in &g.keys {
            g.check_delete_is_last(key, ki)?;
            g.check_create_is_first(key, ki)?;
            g.check_cas_chain(key, ki)?;
            check_created(key, ki)?;
        }
        g.check_windows(ops)?;
        Ok(g)
    }

    fn witness(&self, version: u64) -> u64 {
        self.versions.get(&version).map_or(0, |i| i.witness)
    }

    /// Files the op under its key and registers acknowledged write versions.
    fn index(&mut self, op: &'a Op) -> Result<(), Violation> {
        let ki = self.keys.entry(op.key).or_default();
        ki.ops.push(op);
        match (&op.kind, &op.outcome) {
            (OpKind::Create { .. }, Outcome::Unknown) => {
                ki.unknown_creates.push(op);
                let first = ki
                    .first_unknown_create
                    .map_or(op.invoke, |c| c.min(op.invoke));
                ki.first_unknown_create = Some(first);
            }
            (OpKind::Put { value, .. }, Outcome::Unknown) => {
                ki.unknown_puts.push(op);
                ki.unknown_puts_by_value.entry(*value).or_default().push(op);
            }
            (OpKind::Delete { .. }, Outcome::Unknown) => ki.unknown_deletes.push(op),
            (OpKind::Create { .. }, Outcome::Ok { .. }) => ki.creates.push(op),
            (OpKind::Delete { .. }, Outcome::Ok { .. }) => ki.deletes.push(op),
            _ => {}
        }
        let Some(v) = op.written_version() else {
            return Ok(());
        };
        ki.versions.insert(v);
        let info = VersionInfo {
            key: op.key,
            deleted: matches!(op.kind, OpKind::Delete { .. }),
            value: op.written_value(),
            acked: true,
            writer_invoke: op.invoke,
            witness: op.id,
        };
        match self.versions.insert(v, info) {
            Some(prev) => Err(Violation::DuplicateVersion {
                group: self.id,
                version: v,
                first: prev.witness,
                second: op.id,
            }),
            None => Ok(()),
        }
    }

    /// Every observed version must have been written to that key with that value: by an
    /// acknowledged write, or else by an Unknown write (which therefore took effect).
    fn explain_observations(&mut self, ops: &[&'a Op]) -> Result<(), Violation> {
        let mut pending: BTreeMap<u64, Unexplained<'a>> = BTreeMap::new();
        for obs in ops.iter().filter_map(|op| observation(op)) {
            let done = obs.op.effective_complete();
            if obs.version == 0 {
                return Err(obs.misread("version 0 never exists".into()));
            }
            if let Some(info) = self.versions.get(&obs.version) {
                check_known_observation(&obs, info)?;
            } else if let Some(u) = pending.get_mut(&obs.version) {
                merge_unexplained(self.id, u, &obs)?;
                u.min_done = u.min_done.min(done);
            } else {
                let u = Unexplained {
                    key: obs.op.key,
                    value: obs.value,
                    first: obs,
                    min_done: done,
                };
                pending.insert(obs.version, u);
            }
            self.keys
                .entry(obs.op.key)
                .or_default()
                .versions
                .insert(obs.version);
        }
        for ki in self.keys.values_mut() {
            ki.unknown_puts.sort_by_key(|w| w.invoke);
        }
        let mut attributed: BTreeMap<u64, u64> = BTreeMap::new();
        for (v, u) in pending {
            let info = self.attribute(v, &u, &mut attributed)?;
            self.versions.insert(v, info);
        }
        // Summaries the window checks consult once per op.
        for (&v, info) in self.versions.iter().filter(|(_, i)| !i.deleted) {
            let ki = self.keys.get_mut(&info.key).expect("indexed");
            ki.last_present = ki.last_present.max(Some(v));
        }
        for ki in self.keys.values_mut() {
            let possible = ki.unknown_deletes.iter().filter(|d| ki.may_delete(d));
            ki.first_possible_delete = possible.map(|d| d.invoke).min();
        }
        Ok(())
    }

    /// Finds the Unknown write that must have produced version `v`.
    fn attribute(
        &self,
        v: u64,
        u: &Unexplained<'_>,
        attributed: &mut BTreeMap<u64, u64>,
    ) -> Result<VersionInfo, Violation> {
        let ki = &self.keys[&u.key];
        // Only the key's first state can come from a create.
        let first = ki.creates.is_empty() && ki.versions.first() == Some(&v);
        let creates: &[&Op] = if first { &ki.unknown_creates } else { &[] };
        let early = |w: &&&Op| w.invoke <= u.min_done;
        let mut cands = Candidates::default();
        match u.value {
            // Same value: the by-value index keeps this cheap on hot keys.
            Some(x) => {
                let puts = ki
                    .unknown_puts_by_value
                    .get(&x)
                    .map_or(&[][..], Vec::as_slice);
                puts.iter().filter(early).for_each(|w| cands.add(w));
                let same = |w: &&&Op| w.written_value() == Some(x);
                creates
                    .iter()
                    .filter(early)
                    .filter(same)
                    .for_each(|w| cands.add(w));
            }
            // No value seen: every Unknown put invoked early enough, a prefix of the sorted list.
            None => {
                let n = ki.unknown_puts.partition_point(|w| w.invoke <= u.min_done);
                cands.add_sorted(&ki.unknown_puts[..n]);
                creates.iter().filter(early).for_each(|w| cands.add(w));
            }
        }
        let Some(writer_invoke) = cands.first_invoke else {
            return Err(u.first.misread(format!(
                "no write produced version {v} (value {:?}) before op {} completed",
                u.value, u.first.op.id
            )));
        };
        let mut witness = u.first.op.id;
        if let Some(only) = cands.only() {
            witness = only.id;
            if let Some(other) = attributed.insert(only.id, v) {
                return Err(u.first.misread(format!(
                    "only unknown op {} could write it, but it must also have written version \
                     {other}",
                    only.id
                )));
            }
        }
        Ok(VersionInfo {
            key: u.key,
            deleted: false,
            value: u.value,
            acked: false,
            writer_invoke,
            witness,
        })
    }

    /// Delete wins: no version of the key may follow an acknowledged delete.
    fn check_delete_is_last(&self, key: u64, ki: &KeyInfo<'_>) -> Result<(), Violation> {
        for d in &ki.deletes {
            let dv = d.written_version().unwrap_or(0);
            if let Some(&later) = ki.versions.range((Excluded(dv), Unbounded)).next() {
                return Err(Violation::Resurrection {
                    key,
                    dead: d.id,
                    op: self.witness(later),
                    detail: format!("version {later} exists after the delete at version {dv}"),
                });
            }
        }
        Ok(())
    }

    /// A key is created once, and its create is its first version.
    fn check_create_is_first(&self, key: u64, ki: &KeyInfo<'_>) -> Result<(), Violation> {
        if let [a, b, ..] = ki.creates[..] {
            let detail = "two creates succeeded".to_string();
            return Err(Violation::DoubleCreate {
                key,
                first: a.id,
                second: b.id,
                detail,
            });
        }
        let (Some(c), Some(&min)) = (ki.creates.first(), ki.versions.first()) else {
            return Ok(());
        };
        let cv = c.written_version().unwrap_or(0);
        if min < cv {
            return Err(Violation::DoubleCreate {
                key,
                first: self.witness(min),
                second: c.id,
                detail: format!("version {min} existed before the create at version {cv}"),
            });
        }
        Ok(())
    }

    /// A successful CAS immediately follows its expected version in the key's version chain.
    fn check_cas_chain(&self, key: u64, ki: &KeyInfo<'_>) -> Result<(), Violation> {
        let mut by_expected: BTreeMap<u64, u64> = BTreeMap::new();
        for op in &ki.ops {
            let (e, v) = match (&op.kind, &op.outcome) {
                (
                    OpKind::Put {
                        expected: Some(e), ..
                    }
                    | OpKind::Delete { expected: Some(e) },
                    Outcome::Ok { version, .. },
                ) => (*e, *version),
                _ => continue,
            };
            if let Some(first) = by_expected.insert(e, op.id) {
                return Err(Violation::DoubleCasSuccess {
                    key,
                    expected: e,
                    first,
                    second: op.id,
                });
            }
            let lost = |by: u64, detail: String| Violation::LostUpdate {
                key,
                write: op.id,
                expected: e,
                superseded_by: by,
                detail,
            };
            if e >= v {
                return Err(lost(
                    self.witness(e),
                    format!("wrote version {v}, not newer than {e}"),
                ));
            }
            if let Some(&mid) = ki.versions.range((Excluded(e), Excluded(v))).next() {
                let detail = format!("version {mid} came between {e} and its write {v}");
                return Err(lost(self.witness(mid), detail));
            }
        }
        Ok(())
    }
}

/// Checks that need no other op.
fn check_local(op: &Op) -> Result<(), Violation> {
    if let Outcome::Read {
        found: Some(rv),
        server_time_ms,
    } = &op.outcome
    {
        if *server_time_ms >= rv.expires_at_ms {
            return Err(Violation::ExpiredRead {
                key: op.key,
                read: op.id,
                server_time_ms: *server_time_ms,
                expires_at_ms: rv.expires_at_ms,
            });
        }
    }
    if let (
        OpKind::Put {
            expected: Some(e), ..
        }
        | OpKind::Delete { expected: Some(e) },
        Outcome::Conflict { current },
    ) = (&op.kind, &op.outcome)
    {
        if current == e {
            let detail = format!("current version {current} equals the expected version");
            return Err(Violation::ConflictLies {
                key: op.key,
                op: op.id,
                detail,
            });
        }
    }
    Ok(())
}

/// An observation of a version some acknowledged op wrote must match that write.
fn check_known_observation(obs: &Obs<'_>, info: &VersionInfo) -> Result<(), Violation> {
    let v = obs.version;
    if info.key != obs.op.key {
        let detail = format!(
            "version {v} was written to key {} by op {}",
            info.key, info.witness
        );
        return Err(obs.misread(detail));
    }
    if info.deleted {
        return Err(obs.misread(format!(
            "version {v} is the key's deletion (op {})",
            info.witness
        )));
    }
    if let (Some(seen), Some(written)) = (obs.value, info.value) {
        if seen != written {
            let detail = format!("value {seen}, but op {} wrote {written}", info.witness);
            return Err(obs.misread(detail));
        }
    }
    Ok(())
}

/// Two observers of the same unexplained version must agree on key and value.
fn merge_unexplained(group: u32, u: &mut Unexplained<'_>, obs: &Obs<'_>) -> Result<(), Violation> {
    if u.key != obs.op.key {
        return Err(Violation::DuplicateVersion {
            group,
            version: obs.version,
            first: u.first.op.id,
            second: obs.op.id,
        });
    }
    match (u.value, obs.value) {
        (Some(a), Some(b)) if a != b => Err(obs.misread(format!(
            "op {} saw value {a} at the same version, this op saw {b}",
            u.first.op.id
        ))),
        (None, Some(b)) => {
            u.value = Some(b);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Presence needs a create that can precede it.
fn check_created(key: u64, ki: &KeyInfo<'_>) -> Result<(), Violation> {
    if !ki.creates.is_empty() {
        return Ok(());
    }
    for op in ki
        .ops
        .iter()
        .filter(|op| op.is_definite() && op.proves_present())
    {
        let done = op.effective_complete();
        if ki.first_unknown_create.is_none_or(|c| c > done) {
            return Err(Violation::NeverCreated { key, op: op.id });
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Position windows: real time and server clocks against versions
// ---------------------------------------------------------------------------------------------

/// Why one op must precede another in every linearization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Because {
    /// The first completed before the second was invoked.
    RealTime,
    /// The first reported a strictly smaller server time (the clock never decreases).
    Clock,
}

/// A limit on an op's position and who forces it: an item index for floors (the checks need the
/// preceding item), an op id for ceilings (the following write may be an Unknown op).
#[derive(Debug, Clone, Copy)]
struct Limit<W> {
    version: u64,
    by: W,
    because: Because,
}

/// Keeps the larger (`max`) or smaller limit; real time wins ties because it is the plainer story.
fn pick_bound<W>(a: Option<Limit<W>>, b: Option<Limit<W>>, max: bool) -> Option<Limit<W>> {
    match (a, b) {
        (Some(x), Some(y)) if (y.version > x.version) == max && y.version != x.version => Some(y),
        (Some(x), _) => Some(x),
        (None, y) => y,
    }
}

/// For each item, the maximum of `val` over items that must precede it: completed strictly
/// before it was invoked (real time), or stamped with a strictly smaller server time (clock).
fn max_preceding(
    items: &[Item<'_>],
    val: impl Fn(&Item<'_>) -> Option<u64>,
) -> Vec<Option<Limit<usize>>> {
    let mut out = vec![None; items.len()];
    // Real time: sweep invocations while admitting completions.
    let mut by_invoke: Vec<usize> = (0..items.len()).collect();
    by_invoke.sort_by_key(|&i| items[i].op.invoke);
    let mut by_done: Vec<usize> = (0..items.len()).collect();
    by_done.sort_by_key(|&i| items[i].op.effective_complete());
    let mut best: Option<Limit<usize>> = None;
    let mut next = 0;
    for &i in &by_invoke {
        while next < by_done.len()
            && items[by_done[next]].op.effective_complete() < items[i].op.invoke
        {
            let j = by_done[next];
            let cand = val(&items[j]).map(|version| Limit {
                version,
                by: j,
                because: Because::RealTime,
            });
            best = pick_bound(best, cand, true);
            next += 1;
        }
        out[i] = best;
    }
    // Clock: sweep timed items by time, admitting a time only once it is strictly smaller.
    let mut by_time: Vec<(u64, usize)> = (0..items.len())
        .filter_map(|i| Some((items[i].op.server_time_ms()?, i)))
        .collect();
    by_time.sort();
    let (mut best, mut admitted): (Option<Limit<usize>>, usize) = (None, 0);
    for k in 0..by_time.len() {
        while by_time[admitted].0 < by_time[k].0 {
            let j = by_time[admitted].1;
            let cand = val(&items[j]).map(|version| Limit {
                version,
                by: j,
                because: Because::Clock,
            });
            best = pick_bound(best, cand, true);
            admitted += 1;
        }
        let i = by_time[k].1;
        out[i] = pick_bound(out[i], best, true);
    }
    out
}

/// For each item, the smallest version written by an op that must follow it: invoked strictly
/// after the item completed, or (acknowledged writes) stamped with a strictly larger server time.
/// `writes` holds (earliest possible invocation, version, witness op id, server time if known).
fn min_following(
    items: &[Item<'_>],
    writes: &[(u64, u64, u64, Option<u64>)],
) -> Vec<Option<Limit<u64>>> {
    let mut out = vec![None; items.len()];
    let bound = |w: &(u64, u64, u64, Option<u64>), because| Limit {
        version: w.1,
        by: w.2,
        because,
    };
    let mut by_done: Vec<usize> = (0..items.len()).collect();
    by_done.sort_by_key(|&i| std::cmp::Reverse(items[i].op.effective_complete()));
    let mut by_invoke: Vec<_> = writes.iter().collect();
    by_invoke.sort_by_key(|w| std::cmp::Reverse(w.0));
    let (mut best, mut next): (Option<Limit<u64>>, usize) = (None, 0);
    for &i in &by_done {
        while next < by_invoke.len() && by_invoke[next].0 > items[i].op.effective_complete() {
            best = pick_bound(best, Some(bound(by_invoke[next], Because::RealTime)), false);
            next += 1;
        }
        out[i] = best;
    }
    let mut by_time: Vec<_> = writes.iter().filter(|w| w.3.is_some()).collect();
    by_time.sort_by_key(|w| std::cmp::Reverse(w.3));
    let mut timed: Vec<(u64, usize)> = (0..items.len())
        .filter_map(|i| Some((items[i].op.server_time_ms()?, i)))
        .collect();
    timed.sort_by_key(|&(t, _)| std::cmp::Reverse(t));
    let (mut best, mut next): (Option<Limit<u64>>, usize) = (None, 0);
    for (t, i) in timed {
        while next < by_time.len() && by_time[next].3 > Some(t) {
            best = pick_bound(best, Some(bound(by_time[next], Because::Clock)), false);
            next += 1;
        }
        out[i] = pick_bound(out[i], best, false);
    }
    out
}

impl<'a> Group<'a> {
    /// Definite ops with the bounds their own responses put on their positions.
    fn items(&self, ops: &[&'a Op]) -> Vec<Item<'a>> {
        let item = |op: &'a Op| {
            let ki = &self.keys[&op.key];
            if let Some(v) = op.written_version() {
                return Item {
                    op,
                    lo: v,
                    ub: v.saturating_add(1),
                    observed: None,
                };
            }
            if let Some(obs) = observation(op) {
                let v = obs.version;
                return Item {
                    op,
                    lo: v,
                    ub: ki.next_version(v),
                    observed: Some(v),
                };
            }
            // Refused as existing: the create happened first.
            let created = ki.creates.first().and_then(|c| c.written_version());
            let lo = if op.outcome == Outcome::Exists {
                created.unwrap_or(0)
            } else {
                0
            };
            Item {
                op,
                lo,
                ub: NEVER,
                observed: None,
            }
        };
        ops.iter()
            .filter(|op| op.is_definite())
            .map(|&op| item(op))
            .collect()
    }

    fn check_windows(&mut self, ops: &[&'a Op]) -> Result<(), Violation> {
        let items = self.items(ops);
        let floor = max_preceding(&items, |it| (it.lo > 0).then_some(it.lo));
        let times: BTreeMap<u64, u64> = ops
            .iter()
            .filter_map(|o| Some((o.id, o.server_time_ms()?)))
            .collect();
        let time_of = |id: u64| times.get(&id).copied();
        let writes: Vec<(u64, u64, u64, Option<u64>)> = self
            .versions
            .iter()
            .map(|(&v, i)| {
                (
                    i.writer_invoke,
                    v,
                    i.witness,
                    if i.acked { time_of(i.witness) } else { None },
                )
            })
            .collect();
        let ceil = min_following(&items, &writes);
        let lo: Vec<u64> = items
            .iter()
            .zip(&floor)
            .map(|(it, f)| it.lo.max(f.map_or(0, |f| f.version)))
            .collect();
        self.check_resurrections(&items, &lo)?;
        for (it, c) in items.iter().zip(&ceil) {
            self.check_future(it, *c)?;
        }
        for (it, f) in items.iter().zip(&floor) {
            self.check_past(it, *f, &items)?;
        }
        for ((it, &lo), c) in items.iter().zip(&lo).zip(&ceil) {
            self.check_absence(it, lo, c.map_or(NEVER, |c| c.version))?;
        }
        self.check_times(&items, &lo)
    }

    /// Dead is forever: nothing may find the key alive after an op proved it dead.
    fn check_resurrections(&mut self, items: &[Item<'a>], lo: &[u64]) -> Result<(), Violation> {
        // Per key: earliest completion and smallest clock among ops proving it dead.
        let mut clock_proof: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for (it, &lo) in items.iter().zip(lo) {
            let ki = self.keys.get_mut(&it.op.key).expect("indexed");
            // A not-found positioned after a version of the key existed means dead, not absent.
            let created = ki.versions.first().is_some_and(|&m| lo >= m);
            let is_delete =
                matches!(it.op.kind, OpKind::Delete { .. }) && it.op.written_version().is_some();
            if is_delete || (it.op.saw_absence() && created) {
                let proof = (it.op.effective_complete(), it.op.id);
                ki.dead_proof = Some(ki.dead_proof.map_or(proof, |p| p.min(proof)));
                if let Some(t) = it.op.server_time_ms() {
                    let e = clock_proof.entry(it.op.key).or_insert((t, it.op.id));
                    *e = (*e).min((t, it.op.id));
                }
            }
        }
        let dead_at = |key: u64| self.keys[&key].dead_proof;
        for it in items.iter().filter(|it| it.op.needs_live_key()) {
            let key = it.op.key;
            if let Some((done, dead)) = dead_at(key).filter(|&(d, _)| it.op.invoke > d) {
                let detail = format!(
                    "invoked at {} after the key was dead at {done}",
                    it.op.invoke
                );
                return Err(Violation::Resurrection {
                    key,
                    dead,
                    op: it.op.id,
                    detail,
                });
            }
            let t = it.op.server_time_ms();
            if let Some(&(dt, dead)) = clock_proof.get(&key).filter(|&&(dt, _)| t > Some(dt)) {
                let detail = format!("server time {t:?} ms is after the key was dead at {dt} ms");
                return Err(Violation::Resurrection {
                    key,
                    dead,
                    op: it.op.id,
                    detail,
                });
            }
        }
        for (v, info) in self.versions.iter().filter(|(_, i)| !i.acked) {
            if let Some((done, dead)) = dead_at(info.key).filter(|&(d, _)| info.writer_invoke > d) {
                let detail = format!("version {v} was written by an op invoked after {done}");
                return Err(Violation::Resurrection {
                    key: info.key,
                    dead,
                    op: info.witness,
                    detail,
                });
            }
        }
        Ok(())
    }

    /// An op cannot reflect a write that must follow it.
    fn check_future(&self, it: &Item<'_>, ceil: Option<Limit<u64>>) -> Result<(), Violation> {
        let Some(b) = ceil.filter(|b| it.lo > 0 && it.lo >= b.version) else {
            return Ok(());
        };
        let (op, c, w) = (it.op, b.version, b.by);
        if b.because == Because::Clock {
            // `w` is an acknowledged write stamped later than `op`, yet ordered before it.
            return Err(self.clock_back(w, op.id));
        }
        if it.observed == Some(c) {
            let obs = observation(op).expect("observer");
            let detail = format!(
                "its write (op {w}) was invoked after op {} completed",
                op.id
            );
            return Err(obs.misread(detail));
        }
        if op.outcome == Outcome::Exists {
            let detail = format!("refused, but version {c} (op {w}) and the create came after it");
            return Err(Violation::FalseFailure {
                key: op.key,
                op: op.id,
                detail,
            });
        }
        Err(Violation::RealTimeOrder {
            group: self.id,
            earlier: op.id,
            later: w,
            detail: format!(
                "the first reflects version {} but the second wrote {c}",
                it.lo
            ),
        })
    }

    /// An op's window must not be closed by ops that precede it.
    fn check_past(
        &self,
        it: &Item<'_>,
        floor: Option<Limit<usize>>,
        items: &[Item<'_>],
    ) -> Result<(), Violation> {
        let Some(b) = floor.filter(|b| b.version >= it.ub) else {
            return Ok(());
        };
        let (op, prev, f) = (it.op, items[b.by].op, b.version);
        let key = op.key;
        if op.written_version().is_some() {
            if b.because == Because::Clock {
                // `op` is earlier in commit order but stamped later than `prev`.
                return Err(self.clock_back(op.id, prev.id));
            }
            return Err(Violation::RealTimeOrder {
                group: self.id,
                earlier: prev.id,
                later: op.id,
                detail: format!("the first reflects version {f}, the second wrote {}", it.lo),
            });
        }
        let why = match b.because {
            Because::RealTime => "before it began",
            Because::Clock => "at an earlier server time",
        };
        let detail = format!(
            "saw version {} superseded by version {} {why}; op {} reflects version {f}",
            it.lo, it.ub, prev.id
        );
        match op.kind {
            OpKind::Get if prev.key == key && items[b.by].observed.is_some() => {
                Err(Violation::NonMonotonicRead {
                    key,
                    first: prev.id,
                    second: op.id,
                })
            }
            OpKind::Get | OpKind::Touch => Err(Violation::StaleRead {
                key,
                read: op.id,
                witness: prev.id,
                detail,
            }),
            _ => Err(Violation::ConflictLies {
                key,
                op: op.id,
                detail,
            }),
        }
    }

    /// `earlier` precedes `later` in the order but carries a larger server time.
    fn clock_back(&self, earlier: u64, later: u64) -> Violation {
        let ms = |id: u64| {
            let op = self.keys.values().flat_map(|k| &k.ops).find(|o| o.id == id);
            op.and_then(|o| o.server_time_ms()).unwrap_or(0)
        };
        Violation::TimeWentBackwards {
            group: self.id,
            earlier,
            later,
            earlier_ms: ms(earlier),
            later_ms: ms(later),
        }
    }

    /// A refusal or not-found needs a moment in its window where the key was in a state that
    /// explains it. `lo..hi` bounds the op's position.
    fn check_absence(&self, it: &Item<'_>, lo: u64, hi: u64) -> Result<(), Violation> {
        let op = it.op;
        let ki = &self.keys[&op.key];
        let done = op.effective_complete();
        if op.outcome == Outcome::Exists {
            let created = match ki.creates.first().and_then(|c| c.written_version()) {
                Some(cv) => cv < hi,
                None => ki.first_unknown_create.is_some_and(|c| c <= done),
            };
            if created {
                return Ok(());
            }
            let detail = "create refused, but no other create can precede it".to_string();
            return Err(Violation::FalseFailure {
                key: op.key,
                op: op.id,
                detail,
            });
        }
        if !op.saw_absence() {
            return Ok(());
        }
        // Absent: positioned before the key's first version.
        let absent = ki.versions.first().is_none_or(|&m| lo < m);
        // Dead: after every present version, and some death can precede the op.
        let all_before = ki.last_present.is_none_or(|m| m < hi);
        let death = match ki.deletes.first().and_then(|d| d.written_version()) {
            Some(dv) => dv < hi,
            None => {
                self.opts.sessions_may_expire || ki.first_possible_delete.is_some_and(|d| d <= done)
            }
        };
        if absent || (all_before && death) {
            return Ok(());
        }
        let detail = format!(
            "found nothing, but version {} existed and no delete fits before it (position >= \
             {lo}, < {hi})",
            ki.versions.first().copied().unwrap_or(0)
        );
        let witness = self.witness(ki.versions.first().copied().unwrap_or(0));
        match op.kind {
            OpKind::Get => Err(Violation::StaleRead {
                key: op.key,
                read: op.id,
                witness,
                detail,
            }),
            _ => Err(Violation::FalseFailure {
                key: op.key,
                op: op.id,
                detail,
            }),
        }
    }

    /// The replicated clock never decreases along the linearization.
    fn check_times(&self, items: &[Item<'_>], lo: &[u64]) -> Result<(), Violation> {
        let back = |earlier: &Op, later: &Op, earlier_ms: u64, later_ms: u64| {
            Err(Violation::TimeWentBackwards {
                group: self.id,
                earlier: earlier.id,
                later: later.id,
                earlier_ms,
                later_ms,
            })
        };
        // Real-time order (clock-ordered predecessors have smaller times by definition).
        let floor = max_preceding(items, |it| it.op.server_time_ms());
        for (it, f) in items.iter().zip(&floor) {
            if let (Some(t), Some(b)) = (it.op.server_time_ms(), *f) {
                if t < b.version {
                    return back(items[b.by].op, it.op, b.version, t);
                }
            }
        }
        // Commit (version) order of acknowledged writes.
        let mut writes: Vec<(u64, u64, &Op)> = items
            .iter()
            .filter_map(|it| Some((it.op.written_version()?, it.op.server_time_ms()?, it.op)))
            .collect();
        writes.sort_by_key(|w| w.0);
        for w in writes.windows(2) {
            if w[1].1 < w[0].1 {
                return back(w[0].2, w[1].2, w[0].1, w[1].1);
            }
        }
        // Observers sit between the writes their windows put before and after them.
        for (it, &lo) in items.iter().zip(lo) {
            let Some(t) = it
                .op
                .server_time_ms()
                .filter(|_| it.op.written_version().is_none())
            else {
                continue;
            };
            let before = writes.partition_point(|w| w.0 <= lo);
            if let Some(w) = before.checked_sub(1).map(|i| writes[i]).filter(|w| t < w.1) {
                return back(w.2, it.op, w.1, t);
            }
            let after = writes.partition_point(|w| w.0 < it.ub);
            if let Some(w) = writes.get(after).filter(|w| t > w.1) {
                return back(it.op, w.2, t, w.1);
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Final reads after healing
// ---------------------------------------------------------------------------------------------

impl Group<'_> {
    fn check_final(
        &self,
        key: u64,
        ki: &KeyInfo<'_>,
        fin: Option<&ReadValue>,
    ) -> Result<(), Violation> {
        let max_acked = ki
            .versions
            .iter()
            .rev()
            .find(|v| self.versions[v].acked)
            .copied();
        let lost = |v: u64, fv: Option<u64>| Violation::LostAcknowledgement {
            key,
            write: self.witness(v),
            final_version: fv,
        };
        if let (Some(d), Some(rv)) = (ki.deletes.first(), fin) {
            let dv = d.written_version().unwrap_or(0);
            return Err(lost(dv, Some(rv.version)));
        }
        let Some(rv) = fin else {
            let death = !ki.deletes.is_empty()
                || ki.first_possible_delete.is_some()
                || self.opts.sessions_may_expire;
            if death || !ki.surely_created() {
                return Ok(());
            }
            let Some(v) = max_acked.or(ki.versions.last().copied()) else {
                let detail = "a create was refused as existing, final read found nothing".into();
                return Err(Violation::BadFinalRead {
                    key,
                    witness: None,
                    detail,
                });
            };
            return match max_acked {
                Some(_) => Err(lost(v, None)),
                None => Err(self.bad_final(key, v, "key existed, final read found nothing")),
            };
        };
        let v = rv.version;
        if let Some((_, dead)) = ki.dead_proof {
            let detail = format!("op {dead} proved the key dead, final read found version {v}");
            return Err(Violation::BadFinalRead {
                key,
                witness: Some(dead),
                detail,
            });
        }
        if let Some(acked) = max_acked.filter(|&a| a > v) {
            return Err(lost(acked, Some(v)));
        }
        if let Some(&seen) = ki.versions.last().filter(|&&s| s > v) {
            return Err(self.bad_final(key, seen, "final version older than an observed one"));
        }
        self.check_final_value(key, ki, rv)
    }

    /// The final version/value must have been written to this key.
    fn check_final_value(
        &self,
        key: u64,
        ki: &KeyInfo<'_>,
        rv: &ReadValue,
    ) -> Result<(), Violation> {
        if let Some(info) = self.versions.get(&rv.version) {
            if info.key != key || info.deleted || info.value.is_some_and(|x| x != rv.value) {
                return Err(self.bad_final(
                    key,
                    rv.version,
                    "final value does not match its write",
                ));
            }
            return Ok(());
        }
        // Newer than anything seen: only an Unknown write can have produced it.
        let first = ki.versions.is_empty() && ki.creates.is_empty();
        let creates: &[&Op] = if first { &ki.unknown_creates } else { &[] };
        let writer = ki
            .unknown_puts
            .iter()
            .chain(creates)
            .any(|w| w.written_value() == Some(rv.value));
        let created = !ki.creates.is_empty() || !ki.unknown_creates.is_empty();
        if writer && created {
            return Ok(());
        }
        Err(Violation::BadFinalRead {
            key,
            witness: None,
            detail: format!(
                "no write produced version {} with value {}",
                rv.version, rv.value
            ),
        })
    }

    fn bad_final(&self, key: u64, version: u64, what: &str) -> Violation {
        Violation::BadFinalRead {
            key,
            witness: Some(self.witness(version)),
            detail: format!("{what} (version {version})"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Brute-force reference checker (Wing & Gong search over the sequential spec)
// ---------------------------------------------------------------------------------------------

/// Sequential state of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyState {
    Absent,
    Present { version: u64, value: u64 },
    Dead,
}

impl KeyState {
    fn version(self) -> Option<u64> {
        match self {
            KeyState::Present { version, .. } => Some(version),
            _ => None,
        }
    }

    /// Present, and at the expected version if the op is a CAS.
    fn admits(self, expected: Option<u64>) -> bool {
        self.version()
            .is_some_and(|v| expected.is_none_or(|e| e == v))
    }
}

/// Sequential state of one group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SeqState {
    keys: BTreeMap<u64, KeyState>,
    last_version: u64,
    last_time: u64,
}

impl SeqState {
    fn key(&self, key: u64) -> KeyState {
        self.keys.get(&key).copied().unwrap_or(KeyState::Absent)
    }

    /// A response's clock reading at this point of the order.
    fn at_time(&self, t: u64) -> Option<SeqState> {
        (t >= self.last_time).then(|| SeqState {
            last_time: t,
            ..self.clone()
        })
    }

    /// A write taking version `v`: versions strictly increase across the group.
    fn write(&self, key: u64, v: u64, t: Option<u64>, to: KeyState) -> Option<SeqState> {
        let mut next = match t {
            Some(t) => self.at_time(t)?,
            None => self.clone(),
        };
        if v <= self.last_version {
            return None;
        }
        next.last_version = v;
        next.keys.insert(key, to);
        Some(next)
    }
}

/// Exhaustive linearizability check against the sequential spec (state per key:
/// Absent | Present{version, value} | Dead; write versions strictly increase per group; server
/// time never decreases). Exponential: meant for histories of about ten ops per group.
pub fn brute_force_linearizable(history: &[Op]) -> bool {
    brute_force_linearizable_with(history, CheckOptions::default())
}

/// [`brute_force_linearizable`] with explicit options (expiry = a Present key may become Dead
/// at any moment).
pub fn brute_force_linearizable_with(history: &[Op], opts: CheckOptions) -> bool {
    if validate(history).is_err() {
        return false;
    }
    let mut groups: BTreeMap<u32, Vec<&Op>> = BTreeMap::new();
    // Unknown Gets and Touches change nothing the spec tracks.
    let matters = |op: &&Op| {
        op.is_definite() || op.written_value().is_some() || matches!(op.kind, OpKind::Delete { .. })
    };
    for op in history.iter().filter(matters) {
        groups.entry(op.group).or_default().push(op);
    }
    // Groups are independent objects, and linearizability is local.
    groups.into_values().all(|ops| Search::new(ops, opts).run())
}

struct Search<'a> {
    ops: Vec<&'a Op>,
    /// Every version named anywhere: what an Unknown write may need to have taken.
    mentioned: BTreeSet<u64>,
    may_expire: bool,
    failed: BTreeSet<(u64, SeqState)>,
}

impl<'a> Search<'a> {
    fn new(ops: Vec<&'a Op>, opts: CheckOptions) -> Self {
        assert!(ops.len() <= 64, "brute force is for small histories");
        let mut mentioned = BTreeSet::new();
        for op in &ops {
            match &op.outcome {
                Outcome::Ok { version, .. } | Outcome::Conflict { current: version } => {
                    mentioned.insert(*version);
                }
                Outcome::Read {
                    found: Some(rv), ..
                } => {
                    mentioned.insert(rv.version);
                }
                _ => {}
            }
            if let OpKind::Put {
                expected: Some(e), ..
            }
            | OpKind::Delete { expected: Some(e) } = op.kind
            {
                mentioned.insert(e);
            }
        }
        Search {
            ops,
            mentioned,
            may_expire: opts.sessions_may_expire,
            failed: BTreeSet::new(),
        }
    }

    fn run(&mut self) -> bool {
        self.dfs(0, SeqState::default())
    }

    fn dfs(&mut self, mask: u64, st: SeqState) -> bool {
        let pending = |i: usize| mask & (1 << i) == 0;
        if (0..self.ops.len()).all(|i| !pending(i) || !self.ops[i].is_definite()) {
            return true; // Unknown ops left over simply never took effect.
        }
        if self.failed.contains(&(mask, st.clone())) {
            return false;
        }
        for i in 0..self.ops.len() {
            if !pending(i) || !self.may_go_next(mask, i) {
                continue;
            }
            for next in self.apply(self.ops[i], &st) {
                if self.dfs(mask | (1 << i), next) {
                    return true;
                }
            }
        }
        if self.may_expire {
            for (&key, _) in st.keys.iter().filter(|(_, s)| s.version().is_some()) {
                let mut next = st.clone();
                next.keys.insert(key, KeyState::Dead);
                if self.dfs(mask, next) {
                    return true;
                }
            }
        }
        self.failed.insert((mask, st));
        false
    }

    /// No still-pending definite op completed before this one was invoked.
    fn may_go_next(&self, mask: u64, i: usize) -> bool {
        let invoke = self.ops[i].invoke;
        (0..self.ops.len())
            .all(|j| j == i || mask & (1 << j) != 0 || self.ops[j].effective_complete() >= invoke)
    }

    /// Versions an Unknown write may take: any named one, or the smallest unnamed one.
    fn fresh_versions(&self, last: u64) -> Vec<u64> {
        let mut out: Vec<u64> = self.mentioned.range(last + 1..).copied().collect();
        let mut fresh = last + 1;
        while self.mentioned.contains(&fresh) {
            fresh += 1;
        }
        out.push(fresh);
        out
    }

    fn apply_unknown(&self, op: &Op, st: &SeqState) -> Vec<SeqState> {
        let cur = st.key(op.key);
        let to = |version: u64| match op.kind {
            OpKind::Create { value } if cur == KeyState::Absent => {
                Some(KeyState::Present { version, value })
            }
            OpKind::Put { value, expected } if cur.admits(expected) => {
                Some(KeyState::Present { version, value })
            }
            OpKind::Delete { expected } if cur.admits(expected) => Some(KeyState::Dead),
            _ => None,
        };
        self.fresh_versions(st.last_version)
            .into_iter()
            .filter_map(|v| st.write(op.key, v, None, to(v)?))
            .collect()
    }

    fn apply(&self, op: &Op, st: &SeqState) -> Vec<SeqState> {
        use OpKind::*;
        use Outcome::*;
        if !op.is_definite() {
            return self.apply_unknown(op, st);
        }
        let (key, cur) = (op.key, st.key(op.key));
        let next = match (&op.kind, &op.outcome) {
            (
                Create { value },
                Ok {
                    version: v,
                    server_time_ms: t,
                },
            ) if cur == KeyState::Absent => st.write(
                key,
                *v,
                Some(*t),
                KeyState::Present {
                    version: *v,
                    value: *value,
                },
            ),
            (Create { .. }, Exists) if cur != KeyState::Absent => Some(st.clone()),
            (
                Get,
                Read {
                    found: None,
                    server_time_ms: t,
                },
            ) if cur.version().is_none() => st.at_time(*t),
            (
                Get,
                Read {
                    found: Some(rv),
                    server_time_ms: t,
                },
            ) if cur
                == KeyState::Present {
                    version: rv.version,
                    value: rv.value,
                }
                && *t < rv.expires_at_ms =>
            {
                st.at_time(*t)
            }
            (
                Put { value, expected },
                Ok {
                    version: v,
                    server_time_ms: t,
                },
            ) if cur.admits(*expected) => st.write(
                key,
                *v,
                Some(*t),
                KeyState::Present {
                    version: *v,
                    value: *value,
                },
            ),
            (
                Delete { expected },
                Ok {
                    version: v,
                    server_time_ms: t,
                },
            ) if cur.admits(*expected) => st.write(key, *v, Some(*t), KeyState::Dead),
            (
                Touch,
                Ok {
                    version: v,
                    server_time_ms: t,
                },
            ) if cur.version() == Some(*v) => st.at_time(*t),
            (Put { .. } | Touch | Delete { .. }, NotFound) if cur.version().is_none() => {
                Some(st.clone())
            }
            (
                Put {
                    expected: Some(e), ..
                }
                | Delete { expected: Some(e) },
                Conflict { current },
            ) if cur.version() == Some(*current) && current != e => Some(st.clone()),
            _ => None,
        };
        next.into_iter().collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotations_must_carry_the_latest_data() {
        // key 1: created v=10 at version 3, put v=11 at version 5, rotated at version 7.
        let history = vec![
            create(1, 1, 10, 0, 1, ok(3, 1)),
            put(2, 1, 11, None, 2, 3, ok(5, 2)),
            delete(3, 1, None, 4, 5, ok(7, 3)),
        ];
        let rotation = |carried: Option<(u64, u64)>| Rotation {
            op: 3,
            key: 1,
            version: 7,
            complete: 5,
            cross_group: false,
            carried: carried.map(|(version, value)| ReadValue {
                version,
                value,
                expires_at_ms: 10_000,
            }),
        };
        let opts = CheckOptions::default();
        assert_eq!(
            check_rotation(&history, &rotation(Some((7, 11))), opts),
            Ok(())
        );
        let class = |r: &Rotation| check_rotation(&history, r, opts).map_err(|v| v.class());
        // Stale data (the value before the last put), a made-up value, a wrong version, nothing.
        for bad in [Some((7, 10)), Some((7, 99)), Some((6, 11)), None] {
            assert_eq!(class(&rotation(bad)), Err("RotationLostData"), "{bad:?}");
        }
        // A value written only after the rotation completed cannot have been carried.
        let mut later = history.clone();
        later.push(put(4, 1, 12, None, 6, 7, Outcome::Unknown));
        let r = rotation(Some((7, 12)));
        assert_eq!(
            check_rotation(&later, &r, opts).map_err(|v| v.class()),
            Err("RotationLostData")
        );
        // Across groups the rotation's version belongs to the other log: a newer write counts
        // as before the rotation when it was acknowledged before the rotation began.
        let cross = |carried| Rotation {
            version: 2,
            cross_group: true,
            ..rotation(carried)
        };
        assert_eq!(
            check_rotation(&history, &cross(Some((2, 11))), opts),
            Ok(())
        );
        assert_eq!(class(&cross(Some((2, 10)))), Err("RotationLostData"));
        // With expiry on, a vanished new id is not evidence of loss.
        let expiring = CheckOptions {
            sessions_may_expire: true,
        };
        assert_eq!(check_rotation(&history, &rotation(None), expiring), Ok(()));
    }

    // ---- builders ----------------------------------------------------------------------------

    fn op(id: u64, key: u64, kind: OpKind, span: (u64, Option<u64>), outcome: Outcome) -> Op {
        Op {
            id,
            client: id as u32,
            group: 0,
            key,
            kind,
            invoke: span.0,
            complete: span.1,
            outcome,
        }
    }
    fn ok(version: u64, t: u64) -> Outcome {
        Outcome::Ok {
            version,
            server_time_ms: t,
        }
    }
    fn found(version: u64, value: u64, t: u64) -> Outcome {
        let rv = ReadValue {
            version,
            value,
            expires_at_ms: t + 1_000,
        };
        Outcome::Read {
            found: Some(rv),
            server_time_ms: t,
        }
    }
    fn none(t: u64) -> Outcome {
        Outcome::Read {
            found: None,
            server_time_ms: t,
        }
    }
    fn create(id: u64, key: u64, value: u64, a: u64, b: u64, out: Outcome) -> Op {
        op(id, key, OpKind::Create { value }, (a, Some(b)), out)
    }
    fn put(
        id: u64,
        key: u64,
        value: u64,
        expected: Option<u64>,
        a: u64,
        b: u64,
        out: Outcome,
    ) -> Op {
        op(id, key, OpKind::Put { value, expected }, (a, Some(b)), out)
    }
    fn get(id: u64, key: u64, a: u64, b: u64, out: Outcome) -> Op {
        op(id, key, OpKind::Get, (a, Some(b)), out)
    }
    fn delete(id: u64, key: u64, expected: Option<u64>, a: u64, b: u64, out: Outcome) -> Op {
        op(id, key, OpKind::Delete { expected }, (a, Some(b)), out)
    }
    fn touch(id: u64, key: u64, a: u64, b: u64, out: Outcome) -> Op {
        op(id, key, OpKind::Touch, (a, Some(b)), out)
    }
    fn unknown(id: u64, key: u64, kind: OpKind, a: u64) -> Op {
        op(id, key, kind, (a, None), Outcome::Unknown)
    }

    /// `check` must report `class`, and the brute force must agree it is not linearizable.
    fn assert_flags(h: &[Op], class: &str) {
        match check(h) {
            Err(v) => {
                assert_eq!(v.class(), class, "wrong class: {v}");
                assert!(!v.ops().is_empty(), "no op ids in {v:?}");
            }
            Ok(_) => panic!("check accepted an anomalous history (expected {class}): {h:#?}"),
        }
        assert!(!brute_force_linearizable(h), "brute force accepted: {h:#?}");
    }

    fn assert_valid(h: &[Op]) {
        if let Err(v) = check(h) {
            panic!("false positive: {v}\n{h:#?}");
        }
        assert!(brute_force_linearizable(h), "brute force rejected: {h:#?}");
    }

    /// Final reads as Gets after everything, for the brute force.
    fn with_final_gets(h: &[Op], finals: &[(u64, Option<ReadValue>)]) -> Vec<Op> {
        let end = h
            .iter()
            .map(|o| o.complete.unwrap_or(o.invoke))
            .max()
            .unwrap_or(0)
            + 1;
        let clock = h
            .iter()
            .filter_map(|o| o.server_time_ms())
            .max()
            .unwrap_or(0);
        let mut out = h.to_vec();
        let group_of: BTreeMap<u64, u32> = h.iter().map(|o| (o.key, o.group)).collect();
        for (i, (key, fin)) in finals.iter().enumerate() {
            let found = fin.clone().map(|rv| ReadValue {
                expires_at_ms: NEVER,
                ..rv
            });
            let outcome = Outcome::Read {
                found,
                server_time_ms: clock,
            };
            let mut g = op(
                1_000_000 + i as u64,
                *key,
                OpKind::Get,
                (end, Some(end + 1)),
                outcome,
            );
            g.group = group_of.get(key).copied().unwrap_or(0);
            out.push(g);
        }
        out
    }

    // ---- anomalies ---------------------------------------------------------------------------

    #[test]
    fn stale_read() {
        let h = [
            create(1, 7, 10, 0, 1, ok(1, 1)),
            put(2, 7, 20, None, 2, 3, ok(2, 2)),
            get(3, 7, 4, 5, found(1, 10, 3)),
        ];
        assert_flags(&h, "StaleRead");
    }

    #[test]
    fn stale_read_across_keys_of_a_group() {
        // Key 8's put (version 3) precedes key 9's create (version 4) in the log, which was
        // acknowledged before the read of key 8 began.
        let h = [
            create(1, 8, 10, 0, 1, ok(1, 1)),
            put(2, 8, 11, None, 2, 20, ok(3, 2)),
            create(3, 9, 12, 3, 4, ok(4, 3)),
            get(4, 8, 5, 6, found(1, 10, 4)),
        ];
        assert_flags(&h, "StaleRead");
    }

    #[test]
    fn stale_not_found_after_create() {
        let h = [create(1, 7, 10, 0, 1, ok(1, 1)), get(2, 7, 2, 3, none(2))];
        assert_flags(&h, "StaleRead");
    }

    #[test]
    fn non_monotonic_read() {
        let h = [
            create(1, 7, 10, 0, 1, ok(1, 1)),
            put(2, 7, 20, None, 2, 10, ok(2, 2)),
            get(3, 7, 3, 4, found(2, 20, 3)),
            get(4, 7, 5, 6, found(1, 10, 4)),
        ];
        assert_flags(&h, "NonMonotonicRead");
    }

    #[test]
    fn lost_update() {
        // The CAS expected version 1 but version 2 had already replaced it.
        let h = [
            create(1, 7, 10, 0, 1, ok(1, 1)),
            put(2, 7, 20, None, 2, 3, ok(2, 2)),
            put(3, 7, 30, Some(1), 4, 5, ok(3, 3)),
        ];
        assert_flags(&h, "LostUpdate");
    }

    #[test]
    fn double_cas_success() {
        let h = [
            create(1, 7, 10, 0, 1, ok(1, 1)),
            put(2, 7, 20, Some(1), 2, 5, ok(2, 2)),
            put(3, 7, 30, Some(1), 3, 6, ok(3, 3)),
        ];
        assert_flags(&h, "DoubleCasSuccess");
    }

    #[test]
    fn double_create() {
        let h = [
            create(1, 7, 10, 0, 5, ok(1, 1)),
            create(2, 7, 20, 1, 6, ok(2, 2)),
        ];
        assert_flags(&h, "DoubleCreate");
    }

    #[test]
    fn phantom_value() {
        let h = [
            create(1, 7, 10, 0, 1, ok(1, 1)),
            get(2, 7, 2, 3, found(1, 99, 2)),
        ];
        assert_flags(&h, "PhantomValue");
        let h = [
            create(1, 7, 10, 0, 1, ok(1, 1)),
            get(2, 7, 2, 3, found(5, 50, 2)),
        ];
        assert_flags(&h, "PhantomValue");
    }

    #[test]
    fn phantom_read_before_write_invoked() {
        let h = [
            create(1, 7, 10, 0, 1, ok(1, 1)),
            get(2, 7, 2, 3, found(2, 20, 2)),
            put(3, 7, 20, None, 4, 5, ok(2, 3)),
        ];
        assert_flags(&h, "PhantomValue");
    }

    #[test]
    fn resurrection_after_delete() {
        let h = [
            create(1, 7, 10, 0, 1, ok(1, 1)),
            delete(2, 7, None, 2, 3, ok(2, 2)),
            get(3, 7, 4, 5, found(1, 10, 3)),
        ];
        assert_flags(&h, "Resurrection");
        let h = [
            create(1, 7, 10, 0, 1, ok(1, 1)),
            delete(2, 7, None, 2, 3, ok(2, 2)),
            create(3, 7, 30, 4, 5, ok(3, 3)),
        ];
        assert_flags(&h, "Resurrection");
        // Observed dead (no delete acknowledged), then found alive.
        let h = [
            create(1, 7, 10, 0, 1, ok(1, 1)),
            unknown(2, 7, OpKind::Delete { expected: None }, 2),
            get(3, 7, 3, 4, none(2)),
            get(4, 7, 5, 6, found(1, 10, 3)),
        ];
        assert_flags(&h, "Resurrection");
    }

    #[test]
    fn expired_read() {
        let rv = ReadValue {
            version: 1,
            value: 10,
            expires_at_ms: 50,
        };
        let h = [
            create(1, 7, 10, 0, 1, ok(1, 1)),
            get(
                2,
                7,
                2,
                3,
                Outcome::Read {
                    found: Some(rv),
                    server_time_ms: 50,
                },
            ),
        ];
        assert_flags(&h, "ExpiredRead");
    }

    #[test]
    fn time_going_backwards() {
        let h = [
            create(1, 7, 10, 0, 1, ok(1, 100)),
            get(2, 7, 2, 3, found(1, 10, 50)),
        ];
        assert_flags(&h, "TimeWentBackwards");
        // Commit order: version 2 was stamped earlier than version 1.
        let h = [
            create(1, 7, 10, 0, 10, ok(1, 100)),
            create(2, 8, 20, 0, 10, ok(2, 90)),
        ];
        assert_flags(&h, "TimeWentBackwards");
    }

    #[test]
    fn real_time_order_across_keys() {
        let h = [
            create(1, 7, 10, 0, 1, ok(5, 1)),
            create(2, 8, 20, 2, 3, ok(3, 2)),
        ];
        assert_flags(&h, "RealTimeOrder");
    }

    #[test]
    fn duplicate_version_and_lying_conflicts_and_false_failures() {
        let h = [
            create(1, 7, 10, 0, 5, ok(1, 1)),
            create(2, 8, 20, 0, 5, ok(1, 1)),
        ];
        assert_flags(&h, "DuplicateVersion");
        let conflict = |current| Outcome::Conflict { current };
        let h = [
            create(1, 7, 10, 0, 1, ok(1, 1)),
            put(2, 7, 20, Some(1), 2, 3, conflict(1)),
        ];
        assert_flags(&h, "ConflictLies");
        let h = [
            create(1, 7, 10, 0, 1, ok(1, 1)),
            put(2, 7, 20, Some(4), 2, 3, conflict(3)),
        ];
        assert_flags(&h, "ConflictLies");
        let h = [create(1, 7, 10, 0, 1, Outcome::Exists)];
        assert_flags(&h, "FalseFailure");
        let h = [
            create(1, 7, 10, 0, 1, ok(1, 1)),
            touch(2, 7, 2, 3, Outcome::NotFound),
        ];
        assert_flags(&h, "FalseFailure");
        let h = [put(1, 7, 10, None, 0, 1, ok(1, 1))];
        assert_flags(&h, "NeverCreated");
        let h = [op(1, 7, OpKind::Get, (0, Some(1)), ok(1, 1))];
        assert_flags(&h, "Malformed");
    }

    #[test]
    fn lost_acknowledgement_in_final_reads() {
        let h = [
            create(1, 7, 10, 0, 1, ok(1, 1)),
            put(2, 7, 20, None, 2, 3, ok(2, 2)),
        ];
        let stale = ReadValue {
            version: 1,
            value: 10,
            expires_at_ms: 99,
        };
        let cases: [(Vec<Op>, Option<ReadValue>); 3] = [
            (h.to_vec(), Some(stale)),
            (h.to_vec(), None),
            (
                vec![h[0].clone(), delete(2, 7, None, 2, 3, ok(2, 2))],
                Some(ReadValue {
                    version: 1,
                    value: 10,
                    expires_at_ms: 99,
                }),
            ),
        ];
        for (h, fin) in cases {
            assert!(check(&h).is_ok());
            let finals = [(7, fin)];
            let err = check_final_reads(&h, &finals).expect_err("lost ack not caught");
            assert_eq!(err.class(), "LostAcknowledgement", "{err}");
            assert!(!brute_force_linearizable(&with_final_gets(&h, &finals)));
        }
        // Expiry explains a vanished session only when the harness says sessions may expire.
        let h = [create(1, 7, 10, 0, 1, ok(1, 1))];
        let opts = CheckOptions {
            sessions_may_expire: true,
        };
        assert!(check_final_reads_with(&h, &[(7, None)], opts).is_ok());
        let good = ReadValue {
            version: 1,
            value: 10,
            expires_at_ms: 99,
        };
        assert!(check_final_reads(&h, &[(7, Some(good)), (8, None)]).is_ok());
    }

    // ---- valid tricky histories --------------------------------------------------------------

    #[test]
    fn concurrent_read_sees_either_side_of_a_write() {
        for (v, val) in [(1, 10), (2, 20)] {
            let h = [
                create(1, 7, 10, 0, 1, ok(1, 1)),
                put(2, 7, 20, None, 2, 6, ok(2, 2)),
                get(3, 7, 3, 5, found(v, val, 2)),
            ];
            assert_valid(&h);
        }
        // Create and not-found racing.
        assert_valid(&[create(1, 7, 10, 0, 5, ok(1, 1)), get(2, 7, 1, 2, none(0))]);
    }

    #[test]
    fn unknown_writes_observed_and_not() {
        let base = create(1, 7, 10, 0, 1, ok(1, 1));
        let lost_put = unknown(
            2,
            7,
            OpKind::Put {
                value: 20,
                expected: None,
            },
            2,
        );
        assert_valid(&[
            base.clone(),
            lost_put.clone(),
            get(3, 7, 3, 4, found(1, 10, 2)),
        ]);
        assert_valid(&[
            base.clone(),
            lost_put.clone(),
            get(3, 7, 3, 4, found(2, 20, 2)),
        ]);
        // A timed-out write that commits after the client gave up.
        let mut late = lost_put.clone();
        late.complete = Some(5);
        assert_valid(&[
            base.clone(),
            late,
            get(3, 7, 10, 11, found(1, 10, 2)),
            get(4, 7, 12, 13, found(2, 20, 3)),
        ]);
        // An unknown create that did happen, then an unknown delete that did too.
        assert_valid(&[
            unknown(1, 7, OpKind::Create { value: 5 }, 0),
            get(2, 7, 1, 2, found(3, 5, 1)),
            unknown(3, 7, OpKind::Delete { expected: None }, 3),
            get(4, 7, 4, 5, none(2)),
            create(5, 7, 9, 6, 7, Outcome::Exists),
        ]);
    }

    #[test]
    fn touches_and_failed_cas() {
        let h = [
            create(1, 7, 10, 0, 1, ok(1, 1)),
            touch(2, 7, 2, 3, ok(1, 2)),
            put(3, 7, 20, Some(1), 4, 5, ok(4, 3)),
            touch(4, 7, 6, 7, ok(4, 4)),
            put(5, 7, 30, Some(1), 8, 9, Outcome::Conflict { current: 4 }),
            delete(6, 7, Some(3), 10, 11, Outcome::Conflict { current: 4 }),
            delete(7, 7, Some(4), 12, 13, ok(6, 5)),
            touch(8, 7, 14, 15, Outcome::NotFound),
            create(9, 7, 40, 16, 17, Outcome::Exists),
            get(10, 7, 18, 19, none(6)),
        ];
        assert_valid(&h);
        let stats = check(&h).unwrap();
        assert_eq!((stats.ops, stats.keys, stats.versions), (10, 1, 3));
    }

    #[test]
    fn concurrent_cas_one_wins_and_other_keys_interleave() {
        let h = [
            create(1, 7, 10, 0, 1, ok(1, 1)),
            put(2, 7, 20, Some(1), 2, 8, ok(3, 3)),
            put(3, 7, 30, Some(1), 2, 8, Outcome::Conflict { current: 3 }),
            create(4, 8, 40, 2, 8, ok(2, 2)),
            get(5, 8, 3, 4, none(1)),
            get(6, 7, 9, 10, found(3, 20, 4)),
        ];
        assert_valid(&h);
        // Two groups reuse versions and clocks independently.
        let mut other = create(7, 9, 50, 0, 1, ok(1, 0));
        other.group = 1;
        let mut h2 = h.to_vec();
        h2.push(other);
        assert_valid(&h2);
    }

    #[test]
    fn expiry_option_explains_vanished_sessions() {
        let h = [create(1, 7, 10, 0, 1, ok(1, 1)), get(2, 7, 2, 3, none(5))];
        let opts = CheckOptions {
            sessions_may_expire: true,
        };
        assert!(check_with(&h, opts).is_ok());
        assert!(brute_force_linearizable_with(&h, opts));
        assert!(check(&h).is_err());
    }

    // ---- randomized cross-check --------------------------------------------------------------

    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            // xorshift64*
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
        fn chance(&mut self, pct: u64) -> bool {
            self.below(100) < pct
        }
    }

    type Finals = Vec<(u64, Option<ReadValue>)>;

    /// A correct group store run sequentially; real-time intervals are then drawn around each
    /// op's linearization point, so the history is linearizable by construction.
    struct Gen<'r> {
        rng: &'r mut Rng,
        state: BTreeMap<u64, KeyState>,
        ver: Vec<u64>,
        clock: Vec<u64>,
        ops: Vec<Op>,
        may_expire: bool,
    }

    impl Gen<'_> {
        fn expected(&mut self, cur: KeyState, group: usize) -> Option<u64> {
            match self.rng.below(5) {
                0 => None,
                1 | 2 => cur.version().or(Some(1)),
                _ => Some(1 + self.rng.below(self.ver[group] + 2)),
            }
        }

        /// Picks an op on `key` and runs it against the true state; returns (kind, outcome).
        fn step(&mut self, key: u64, group: usize, value: u64) -> (OpKind, Outcome) {
            let cur = self.state.get(&key).copied().unwrap_or(KeyState::Absent);
            let kind = match self.rng.below(6) {
                _ if cur == KeyState::Absent && self.rng.chance(40) => OpKind::Create { value },
                0 => OpKind::Create { value },
                1 | 2 => OpKind::Get,
                3 => OpKind::Put {
                    value,
                    expected: self.expected(cur, group),
                },
                4 => OpKind::Touch,
                _ => OpKind::Delete {
                    expected: self.expected(cur, group),
                },
            };
            self.clock[group] += self.rng.below(3);
            let t = self.clock[group];
            let write = |to: KeyState, me: &mut Self| {
                me.ver[group] += 1 + me.rng.below(2);
                let v = me.ver[group];
                let to = match to {
                    KeyState::Present { value, .. } => KeyState::Present { version: v, value },
                    other => other,
                };
                me.state.insert(key, to);
                Outcome::Ok {
                    version: v,
                    server_time_ms: t,
                }
            };
            let outcome = match (&kind, cur) {
                (OpKind::Create { .. }, KeyState::Absent) => {
                    write(KeyState::Present { version: 0, value }, self)
                }
                (OpKind::Create { .. }, _) => Outcome::Exists,
                (OpKind::Get, KeyState::Present { version, value }) => {
                    let rv = ReadValue {
                        version,
                        value,
                        expires_at_ms: t + 1 + self.rng.below(50),
                    };
                    Outcome::Read {
                        found: Some(rv),
                        server_time_ms: t,
                    }
                }
                (OpKind::Get, _) => Outcome::Read {
                    found: None,
                    server_time_ms: t,
                },
                (_, KeyState::Absent | KeyState::Dead) => Outcome::NotFound,
                (OpKind::Touch, KeyState::Present { version, .. }) => Outcome::Ok {
                    version,
                    server_time_ms: t,
                },
                (
                    OpKind::Put {
                        expected: Some(e), ..
                    }
                    | OpKind::Delete { expected: Some(e) },
                    KeyState::Present { version, .. },
                ) if *e != version => Outcome::Conflict { current: version },
                (OpKind::Put { .. }, _) => write(KeyState::Present { version: 0, value }, self),
                _ => write(KeyState::Dead, self),
            };
            (kind, outcome)
        }

        fn run(mut self, n_ops: usize, n_keys: u64, n_groups: u64) -> (Vec<Op>, Finals) {
            for i in 0..n_ops as u64 {
                if self.may_expire && self.rng.chance(15) {
                    let k = self.rng.below(n_keys);
                    if self.state.get(&k).is_some_and(|s| s.version().is_some()) {
                        self.state.insert(k, KeyState::Dead);
                    }
                }
                let key = self.rng.below(n_keys);
                let group = (key % n_groups) as usize;
                let (kind, mut outcome) = self.step(key, group, 100 + i);
                let point = 20 + 10 * i;
                let (a, b) = (point - self.rng.below(16), point + self.rng.below(16));
                let mut complete = Some(b);
                if self.rng.chance(15) {
                    outcome = Outcome::Unknown;
                    complete = if self.rng.chance(50) { None } else { complete };
                }
                let o = Op {
                    id: i,
                    client: i as u32,
                    group: group as u32,
                    key,
                    kind,
                    invoke: a,
                    complete,
                    outcome,
                };
                self.ops.push(o);
            }
            if self.rng.chance(40) {
                // A write that was sent but never took effect.
                let key = self.rng.below(n_keys);
                let kind = match self.rng.below(3) {
                    0 => OpKind::Create { value: 900 },
                    1 => OpKind::Put {
                        value: 901,
                        expected: None,
                    },
                    _ => OpKind::Delete { expected: None },
                };
                let invoke = self.rng.below(10 * n_ops as u64 + 20);
                let o = Op {
                    id: 999,
                    client: 999,
                    group: (key % n_groups) as u32,
                    key,
                    kind,
                    invoke,
                    complete: None,
                    outcome: Outcome::Unknown,
                };
                self.ops.push(o);
            }
            let finals = (0..n_keys)
                .map(|k| {
                    let rv = match self.state.get(&k) {
                        Some(KeyState::Present { version, value }) => Some(ReadValue {
                            version: *version,
                            value: *value,
                            expires_at_ms: NEVER,
                        }),
                        _ => None,
                    };
                    (k, rv)
                })
                .collect();
            for i in (1..self.ops.len()).rev() {
                let j = self.rng.below(i as u64 + 1) as usize;
                self.ops.swap(i, j);
            }
            (self.ops, finals)
        }
    }

    fn gen_history(rng: &mut Rng, may_expire: bool) -> (Vec<Op>, Finals) {
        let n_groups = 1 + rng.below(2);
        let n_keys = 1 + rng.below(3);
        let n_ops = 3 + rng.below(6) as usize; // 3..=8, plus maybe one ghost write
        let g = Gen {
            rng,
            state: BTreeMap::new(),
            ver: vec![0; 2],
            clock: vec![0; 2],
            ops: Vec::new(),
            may_expire,
        };
        g.run(n_ops, n_keys, n_groups)
    }

    const MUTATIONS: [&str; 15] = [
        "older-read",
        "dup-cas",
        "dup-version",
        "read-none",
        "wrong-value",
        "clock-back",
        "expire",
        "exists-to-ok",
        "shift-interval",
        "conflict-current",
        "resurrect",
        "swap-versions",
        "to-unknown",
        "drop-op",
        "ack-unknown",
    ];

    fn pick<'h>(rng: &mut Rng, h: &'h mut [Op], f: impl Fn(&Op) -> bool) -> Option<&'h mut Op> {
        let idx: Vec<usize> = (0..h.len()).filter(|&i| f(&h[i])).collect();
        if idx.is_empty() {
            return None;
        }
        let i = idx[rng.below(idx.len() as u64) as usize];
        Some(&mut h[i])
    }

    /// Versions (with values) acknowledged for `key`, oldest first.
    fn written(h: &[Op], key: u64) -> Vec<(u64, u64)> {
        let mut v: Vec<(u64, u64)> = h
            .iter()
            .filter(|o| o.key == key)
            .filter_map(|o| Some((o.written_version()?, o.written_value()?)))
            .collect();
        v.sort();
        v
    }

    /// Applies mutation `m`; `None` if the history has nothing it applies to.
    fn mutate(rng: &mut Rng, h: &[Op], m: &str) -> Option<Vec<Op>> {
        let mut h = h.to_vec();
        let max_ver = h
            .iter()
            .filter_map(|o| o.written_version())
            .max()
            .unwrap_or(0);
        let is_read = |o: &Op| matches!(o.outcome, Outcome::Read { found: Some(_), .. });
        match m {
            "older-read" => {
                let snapshot = h.clone();
                let r = pick(rng, &mut h, is_read)?;
                let Outcome::Read {
                    found: Some(rv), ..
                } = &mut r.outcome
                else {
                    return None;
                };
                let older: Vec<(u64, u64)> = written(&snapshot, r.key)
                    .into_iter()
                    .filter(|w| w.0 < rv.version)
                    .collect();
                let (v, val) = *older.last()?;
                rv.version = v;
                rv.value = val;
            }
            "dup-cas" => {
                let w = pick(rng, &mut h, |o| {
                    matches!(
                        (&o.kind, &o.outcome),
                        (
                            OpKind::Put {
                                expected: Some(_),
                                ..
                            },
                            Outcome::Ok { .. }
                        )
                    )
                })?
                .clone();
                let shift = rng.below(30);
                let t = w.server_time_ms()? + rng.below(3);
                let dup = Op {
                    id: 5_000,
                    invoke: w.invoke + shift,
                    complete: w.complete.map(|c| c + shift),
                    kind: match w.kind {
                        OpKind::Put { expected, .. } => OpKind::Put {
                            value: 777,
                            expected,
                        },
                        k => k,
                    },
                    outcome: ok(max_ver + 1, t),
                    ..w
                };
                h.push(dup);
            }
            "dup-version" => {
                let versions: Vec<u64> = h.iter().filter_map(|o| o.written_version()).collect();
                let target = versions
                    .get(rng.below(versions.len() as u64) as usize)
                    .copied()?;
                let w = pick(rng, &mut h, |o| {
                    o.written_version().is_some_and(|v| v != target)
                })?;
                if let Outcome::Ok { version, .. } = &mut w.outcome {
                    *version = target;
                }
            }
            "read-none" => {
                let r = pick(rng, &mut h, is_read)?;
                r.outcome = none(r.server_time_ms()?);
            }
            "wrong-value" => {
                let r = pick(rng, &mut h, is_read)?;
                if let Outcome::Read {
                    found: Some(rv), ..
                } = &mut r.outcome
                {
                    rv.value += 1_000;
                }
            }
            "clock-back" => {
                let r = pick(rng, &mut h, |o| o.server_time_ms().is_some_and(|t| t > 0))?;
                let delta = 1 + rng.below(4);
                match &mut r.outcome {
                    Outcome::Ok { server_time_ms, .. } | Outcome::Read { server_time_ms, .. } => {
                        *server_time_ms = server_time_ms.saturating_sub(delta);
                    }
                    _ => return None,
                }
            }
            "expire" => {
                let r = pick(rng, &mut h, is_read)?;
                if let Outcome::Read {
                    found: Some(rv),
                    server_time_ms,
                } = &mut r.outcome
                {
                    rv.expires_at_ms = *server_time_ms;
                }
            }
            "exists-to-ok" => {
                let c = pick(rng, &mut h, |o| o.outcome == Outcome::Exists)?;
                c.outcome = ok(max_ver + 1, 1_000);
            }
            "shift-interval" => {
                let o = pick(rng, &mut h, |o| o.is_definite())?;
                let d = 10 + rng.below(40);
                if rng.chance(50) {
                    o.invoke += d;
                    o.complete = o.complete.map(|c| c + d);
                } else {
                    let c = o.complete?.saturating_sub(d);
                    o.invoke = o.invoke.saturating_sub(d).min(c);
                    o.complete = Some(c);
                }
            }
            "conflict-current" => {
                let c = pick(rng, &mut h, |o| {
                    matches!(o.outcome, Outcome::Conflict { .. })
                })?;
                if let Outcome::Conflict { current } = &mut c.outcome {
                    *current = if rng.chance(50) {
                        current.saturating_sub(1).max(1)
                    } else {
                        *current + 1
                    };
                }
            }
            "to-unknown" => {
                // Always still linearizable: an Unknown op may or may not have happened.
                let o = pick(rng, &mut h, |o| o.is_definite())?;
                o.outcome = Outcome::Unknown;
                o.complete = o.complete.filter(|_| rng.chance(50));
            }
            "drop-op" => {
                let i = rng.below(h.len() as u64) as usize;
                h.remove(i);
            }
            "ack-unknown" => {
                let max_t = h
                    .iter()
                    .filter_map(|o| o.server_time_ms())
                    .max()
                    .unwrap_or(0);
                let (v, t, d) = (
                    1 + rng.below(max_ver + 2),
                    rng.below(max_t + 2),
                    rng.below(30),
                );
                let o = pick(rng, &mut h, |o| {
                    !o.is_definite() && o.written_value().is_some()
                })?;
                o.outcome = ok(v, t);
                o.complete = Some(o.invoke + d);
            }
            "resurrect" => {
                let d = pick(rng, &mut h, |o| {
                    matches!(o.kind, OpKind::Delete { .. }) && o.written_version().is_some()
                })?
                .clone();
                let dv = d.written_version()?;
                let (v, val) = *written(&h, d.key).iter().rfind(|w| w.0 < dv)?;
                let end = d.complete? + 1 + rng.below(10);
                let t = d.server_time_ms()? + 1;
                h.push(get(6_000, d.key, end, end + 2, found(v, val, t)));
                h.last_mut()?.group = d.group;
            }
            _ => {
                let a = pick(rng, &mut h, |o| o.written_version().is_some())?.clone();
                let b = pick(rng, &mut h, |o| {
                    o.group == a.group && o.id != a.id && o.written_version().is_some()
                })?;
                let vb = b.written_version()?;
                b.outcome = ok(a.written_version()?, b.server_time_ms()?);
                let a = h.iter_mut().find(|o| o.id == a.id)?;
                a.outcome = ok(vb, a.server_time_ms()?);
            }
        }
        Some(h)
    }

    #[derive(Default)]
    struct Tally {
        tried: usize,
        brute_rejects: usize,
        check_rejects: usize,
    }

    #[test]
    fn randomized_cross_check() {
        let mut valid = 0;
        let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
        let mut finals_tally = Tally::default();
        let rounds: usize = std::env::var("CHECKER_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(6_000);
        let seed = std::env::var("CHECKER_SEED")
            .ok()
            .and_then(|r| r.parse().ok());
        let mut rng = Rng(seed.unwrap_or(0x5EED_F00D_1234_5678));
        for round in 0..rounds {
            // Every mutation sees both settings (mutations cycle with period MUTATIONS.len()).
            let opts = CheckOptions {
                sessions_may_expire: (round / MUTATIONS.len()) % 4 == 3,
            };
            let (h, finals) = gen_history(&mut rng, opts.sessions_may_expire);
            if let Err(v) = check_with(&h, opts) {
                panic!("false positive on a generated history: {v}\n{h:#?}");
            }
            assert!(
                brute_force_linearizable_with(&h, opts),
                "brute force rejected a generated history: {h:#?}"
            );
            if let Err(v) = check_final_reads_with(&h, &finals, opts) {
                panic!("false positive on final reads: {v}\n{h:#?}\n{finals:?}");
            }
            valid += 1;
            let m = MUTATIONS[round % MUTATIONS.len()];
            if let Some(bad) = mutate(&mut rng, &h, m) {
                let brute = brute_force_linearizable_with(&bad, opts);
                let fast = check_with(&bad, opts);
                if brute {
                    if let Err(v) = &fast {
                        panic!(
                            "check flagged a history the brute force accepts ({m}): {v}\n{bad:#?}"
                        );
                    }
                }
                if m == "to-unknown" {
                    assert!(
                        brute && fast.is_ok(),
                        "an Unknown op must never break a history: {bad:#?}"
                    );
                }
                let t = tallies.entry(m).or_default();
                t.tried += 1;
                t.brute_rejects += usize::from(!brute);
                t.check_rejects += usize::from(fast.is_err());
            }
            if let Some(bad) = mutate_finals(&mut rng, &h, &finals) {
                let brute = brute_force_linearizable_with(&with_final_gets(&h, &bad), opts);
                let fast = check_final_reads_with(&h, &bad, opts);
                if brute {
                    if let Err(v) = &fast {
                        panic!("final-read false positive: {v}\n{h:#?}\n{bad:?}");
                    }
                }
                finals_tally.tried += 1;
                finals_tally.brute_rejects += usize::from(!brute);
                finals_tally.check_rejects += usize::from(fast.is_err());
            }
        }
        tallies.insert("final-reads", finals_tally);
        println!("{valid} generated histories accepted by check and brute force");
        println!(
            "{:<18} {:>6} {:>13} {:>13}",
            "mutation", "tried", "brute rejects", "check catches"
        );
        let (mut brute, mut caught) = (0, 0);
        for (m, t) in &tallies {
            println!(
                "{m:<18} {:>6} {:>13} {:>13}",
                t.tried, t.brute_rejects, t.check_rejects
            );
            brute += t.brute_rejects;
            caught += t.check_rejects;
        }
        println!("overall: check caught {caught} of {brute} non-linearizable mutants");
        assert!(
            caught * 10 >= brute * 7,
            "check catches too little: {caught}/{brute}"
        );
    }

    /// Loses a write or a delete from the final state, or invents one.
    fn mutate_finals(rng: &mut Rng, h: &[Op], finals: &Finals) -> Option<Finals> {
        let mut out = finals.clone();
        let i = rng.below(out.len() as u64) as usize;
        let key = out[i].0;
        let older = written(h, key);
        out[i].1 = match (&out[i].1, rng.below(3)) {
            (Some(_), 0) => None,
            (Some(rv), _) => {
                let (v, val) = *older.iter().rfind(|w| w.0 < rv.version)?;
                Some(ReadValue {
                    version: v,
                    value: val,
                    expires_at_ms: NEVER,
                })
            }
            (None, _) => {
                let (v, val) = *older.last().unwrap_or(&(42, 42));
                Some(ReadValue {
                    version: v,
                    value: val,
                    expires_at_ms: NEVER,
                })
            }
        };
        Some(out)
    }
}
