//! The replicated commands and their results: the only things that travel through the Raft log.
//!
//! **Architecture invariant:** a [`Request`] carries everything its application needs, including
//! the leader's time stamp, so applying it is a pure function of the state and the request.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::id::{ClientId, SessionId};

/// Bits of a version that hold a request's position within its log entry.
pub const POSITION_BITS: u32 = 16;

/// Most requests one log entry carries (positions must fit in [`POSITION_BITS`]).
pub const BATCH_REQUESTS_MAX: usize = 1 << POSITION_BITS;

/// The version of the request at `position` in the log entry at `index`.
///
/// Many client writes share one Raft log entry ([`Batch`]), so a version is the pair
/// `(index, position)` packed as `index << 16 | position`: unique within a group and strictly
/// increasing in log order, so compare-and-set keeps its meaning. Log indexes stay below 2^48
/// (restore's gap of 2^40 included), so the packing never overflows.
pub fn version_at(index: u64, position: usize) -> u64 {
    debug_assert!(position < BATCH_REQUESTS_MAX);
    (index << POSITION_BITS) | (position as u64 & (BATCH_REQUESTS_MAX as u64 - 1))
}

/// The largest log index a version can carry (`index << 16` must fit in 64 bits).
pub const LOG_INDEX_MAX: u64 = (1 << (64 - POSITION_BITS)) - 1;

/// The log index a version was written at.
pub fn index_of(version: u64) -> u64 {
    version >> POSITION_BITS
}

/// The application data of one Raft log entry: requests applied in order, the one at position
/// `i` with version [`version_at`]`(index, i)`. A leader packs every write that queued while
/// earlier entries were in flight into one entry, so they share one append, one replication
/// round and one durability barrier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Batch {
    /// The requests, in the order they are applied.
    pub requests: Vec<Request>,
}

impl Batch {
    /// A batch of one request.
    pub fn one(request: Request) -> Self {
        Batch {
            requests: vec![request],
        }
    }
}

/// The results of applying a [`Batch`], one per request, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    /// One response per request.
    pub responses: Vec<Response>,
}
pub mod redis;

/// Names one logical write of one client, for exactly-once application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Origin {
    /// The client that issued the write.
    pub client: ClientId,
    /// The client's sequence number for this write; a retry reuses it.
    pub seq: u64,
}

/// One entry of application data in the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The leader's clock when it proposed this entry. Replicas advance their replicated clock to
    /// `max(clock, now_ms)`, so time never runs backwards even across leader changes.
    pub now_ms: u64,
    /// Who asked, for deduplication of retries; `None` for leader-internal commands.
    pub origin: Option<Origin>,
    /// What to do.
    pub command: Command,
}

impl Request {
    /// About how many bytes this request adds to a log entry (attribute names and values plus a
    /// fixed overhead): what batches and AppendEntries requests are bounded by.
    pub fn approx_bytes(&self) -> usize {
        const OVERHEAD: usize = 64;
        let attributes =
            |a: &Attributes| -> usize { a.iter().map(|(k, v)| k.len() + v.len() + 8).sum() };
        let text = |p: &Option<String>| p.as_ref().map_or(0, String::len);
        OVERHEAD
            + match &self.command {
                Command::Create {
                    attributes: a,
                    principal,
                    ..
                } => attributes(a) + text(principal),
                Command::Update { set, remove, .. } => {
                    attributes(set) + remove.iter().map(|r| r.len() + 8).sum::<usize>()
                }
                Command::RotateIn {
                    session, principal, ..
                } => session.bytes() + text(&session.principal) + text(principal),
                Command::Rotate { principal, .. } => text(principal),
                Command::InvalidatePrincipal { principal } => principal.len(),
                Command::TouchBatch { reads } => reads.len() * 24,
                Command::Redis(batch) => batch.approx_bytes(),
                Command::Touch { .. }
                | Command::Delete { .. }
                | Command::RotateOut { .. }
                | Command::Expire => 0,
            }
    }
}

impl Batch {
    /// About how many bytes this batch takes in a log entry.
    pub fn approx_bytes(&self) -> usize {
        self.requests.iter().map(Request::approx_bytes).sum()
    }
}

pub use crate::session::Attributes;

/// What to do when a limit would be exceeded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Refuse the new session.
    #[default]
    Refuse,
    /// End the oldest (by creation for a principal, least recently used for capacity).
    EvictOldest,
}

/// Limits a new session is admitted under; filled in by the proposing node from its namespace
/// configuration, so every replica decides with the same numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Most sessions in this group.
    pub max_sessions: Option<u64>,
    /// What to do when the group is full.
    pub when_full: WhenFull,
    /// Most sessions one principal may have.
    pub max_per_principal: Option<u32>,
    /// What to do when the principal has too many.
    pub when_principal_full: WhenFull,
}

/// A change to a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create a session; refused if the id exists or existed recently (delete wins).
    Create {
        /// The new session's id.
        id: SessionId,
        /// Its initial attributes.
        #[serde(with = "crate::session::byte_serde::map")]
        attributes: Attributes,
        /// Idle timeout (max-inactive interval), already defaulted by the proposing node.
        idle_timeout_ms: u64,
        /// Absolute lifetime from creation, if any.
        lifetime_ms: Option<u64>,
        /// The user this session belongs to (must live in the principal's home group).
        principal: Option<String>,
        /// Admission limits.
        limits: Limits,
    },
    /// Atomically move a session to a new id in the same group (session-fixation defence),
    /// optionally tagging it with a principal (login). The old id dies.
    Rotate {
        /// The current id.
        old: SessionId,
        /// The new id.
        new: SessionId,
        /// Set the principal (login), if any.
        principal: Option<String>,
        /// Admission limits for the principal.
        limits: Limits,
    },
    /// First half of a rotation across groups: kill `old` and return its data. From here on the
    /// old id is dead everywhere; the session lives again only when `RotateIn` lands.
    RotateOut {
        /// The current id.
        old: SessionId,
        /// Where it is going (recorded in the event).
        new: SessionId,
    },
    /// Second half of a rotation across groups: create `new` from the moved data.
    RotateIn {
        /// The new id.
        new: SessionId,
        /// The id it came from.
        from: SessionId,
        /// The moved session.
        session: Box<crate::session::Session>,
        /// Set the principal (login), if any.
        principal: Option<String>,
        /// Admission limits.
        limits: Limits,
    },
    /// End every session of a principal.
    InvalidatePrincipal {
        /// The principal.
        principal: String,
    },
    /// Leader-batched touches from reads: each id read at the given replicated time.
    TouchBatch {
        /// `(id, read_at_ms)` pairs.
        reads: Vec<(SessionId, u64)>,
    },
    /// Set and remove attributes, optionally only if the version still matches.
    Update {
        /// The session to change.
        id: SessionId,
        /// Attributes to set (insert or replace).
        #[serde(with = "crate::session::byte_serde::map")]
        set: Attributes,
        /// Attributes to remove.
        remove: BTreeSet<String>,
        /// Compare-and-set: apply only if the session's version equals this.
        expected_version: Option<u64>,
        /// A new idle timeout, if the caller changes it.
        idle_timeout_ms: Option<u64>,
    },
    /// Mark a session as used now, extending its idle deadline. Does not change its version.
    Touch {
        /// The session to touch.
        id: SessionId,
    },
    /// Delete a session, optionally only if the version still matches.
    Delete {
        /// The session to delete.
        id: SessionId,
        /// Compare-and-set guard.
        expected_version: Option<u64>,
    },
    /// Leader-issued housekeeping: advance the replicated clock and purge expired sessions,
    /// old tombstones and old dedup entries.
    Expire,
    /// Redis key operations (the RESP listener), applied atomically in order; see [`redis`].
    Redis(redis::RedisBatch),
}

impl Command {
    /// The session this command addresses, if any.
    pub fn session(&self) -> Option<SessionId> {
        match self {
            Command::Create { id, .. }
            | Command::Update { id, .. }
            | Command::Touch { id }
            | Command::Delete { id, .. } => Some(*id),
            Command::Rotate { old, .. } | Command::RotateOut { old, .. } => Some(*old),
            Command::RotateIn { new, .. } => Some(*new),
            Command::Expire
            | Command::InvalidatePrincipal { .. }
            | Command::TouchBatch { .. }
            | Command::Redis(_) => None,
        }
    }
}

/// The result of applying one [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The replicated clock at the moment the command was applied.
    pub server_time_ms: u64,
    /// What happened.
    pub outcome: Outcome,
}

/// What applying a command did. Every variant but `Ok` and `Purged` means nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Applied; `version` is the session's version after the command (for a delete, the version
    /// of the delete itself).
    Ok {
        /// The version after the change.
        version: u64,
    },
    /// Create refused: the id is live, or was deleted/expired recently and may not come back.
    Exists,
    /// The session does not exist (never did, was deleted, or expired).
    NotFound,
    /// Compare-and-set failed; nothing was written.
    Conflict {
        /// The session's version now.
        current_version: u64,
    },
    /// The session would exceed a size limit; nothing was written.
    TooLarge {
        /// What it would have been.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// The session would have too many attributes, or a name is too long; nothing was written.
    Invalid {
        /// Why.
        reason: String,
    },
    /// A Raft-internal entry (blank or membership) was applied.
    Noop,
    /// A session was moved out for a cross-group rotation; here is its data.
    RotatedOut {
        /// The session as it was.
        session: Box<crate::session::Session>,
    },
    /// A limit refused the session (group full, or the principal has too many sessions).
    LimitReached {
        /// Which limit.
        reason: String,
    },
    /// An `Expire` command ran and removed this many sessions.
    Purged {
        /// How many sessions expired.
        sessions: u64,
    },
    /// A `Command::Redis` batch ran: one reply per operation, or `None` when a watched key had
    /// changed and nothing was done (`EXEC` answers a null array).
    Redis(Option<Vec<redis::Reply>>),
}
