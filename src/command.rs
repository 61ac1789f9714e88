//! The replicated commands and their results: the only things that travel through the Raft log.
//!
//! **Architecture invariant:** a [`Request`] carries everything its application needs, including
//! the leader's time stamp, so applying it is a pure function of the state and the request.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::id::{ClientId, SessionId};

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

/// Attribute names mapped to opaque values.
pub type Attributes = BTreeMap<String, Vec<u8>>;

/// A change to a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create a session; refused if the id exists or existed recently (delete wins).
    Create {
        /// The new session's id.
        id: SessionId,
        /// Its initial attributes.
        attributes: Attributes,
        /// Idle timeout (max-inactive interval), already defaulted by the proposing node.
        idle_timeout_ms: u64,
        /// Absolute lifetime from creation, if any.
        lifetime_ms: Option<u64>,
    },
    /// Set and remove attributes, optionally only if the version still matches.
    Update {
        /// The session to change.
        id: SessionId,
        /// Attributes to set (insert or replace).
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
}

impl Command {
    /// The session this command addresses, if any.
    pub fn session(&self) -> Option<SessionId> {
        match self {
            Command::Create { id, .. }
            | Command::Update { id, .. }
            | Command::Touch { id }
            | Command::Delete { id, .. } => Some(*id),
            Command::Expire => None,
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
    /// An `Expire` command ran and removed this many sessions.
    Purged {
        /// How many sessions expired.
        sessions: u64,
    },
}
