//! The library's error type. Retryable conditions are distinct from definite answers.

use crate::codec::DecodeError;
use crate::wire::WireError;

/// What went wrong, and what the caller should do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The session does not exist (never did, deleted, or expired). Definite.
    #[error("session not found")]
    NotFound,
    /// Create refused: the id is taken (or was recently deleted). Pick another id.
    #[error("session id already exists")]
    Exists,
    /// Compare-and-set failed; re-read and retry with `current_version`. Nothing was written.
    #[error("version conflict: current version is {current_version}")]
    Conflict {
        /// The session's version now.
        current_version: u64,
    },
    /// The session would exceed the size limit. Nothing was written.
    #[error("session too large: {bytes} bytes, limit {limit}")]
    TooLarge {
        /// What it would have been.
        bytes: u64,
        /// The limit.
        limit: u64,
    },
    /// A namespace limit refused the session (the group is full, or the principal has too many
    /// sessions under a `refuse` policy). Nothing was written.
    #[error("limit reached: {0}")]
    LimitReached(String),
    /// Watched events were compacted away: re-read the state, then resume from
    /// `first_available`.
    #[error("events compacted; resume from {first_available}")]
    Compacted {
        /// The oldest retained event index.
        first_available: u64,
    },
    /// The request was refused as invalid. Nothing was written.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// No answer before the deadline. For a write the **outcome is unknown**: it may have been
    /// applied. Retrying with the same request (the client does) applies it at most once.
    #[error("timed out; the outcome is unknown")]
    Timeout,
    /// The cluster answered but cannot serve (no leader, no quorum). Retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The peer sent something this build does not understand.
    #[error("protocol error: {0}")]
    Protocol(#[from] WireError),
    /// Stored or received bytes are damaged.
    #[error("corrupted data: {0}")]
    Corrupted(#[from] DecodeError),
    /// Local I/O failed (disk, sockets).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// TLS material could not be loaded.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// The configuration is unusable; fix it and restart.
    #[error("configuration: {0}")]
    Config(String),
    /// A node belongs to another cluster than this caller: definite, retrying cannot help.
    /// Point the caller at its own cluster's nodes.
    #[error("{0}")]
    WrongCluster(String),
    /// The data directory does not match the configuration (another node id, group count or
    /// cluster), or its identity cannot be read: fix the configuration, as the message says.
    #[error("{0}")]
    Identity(#[from] crate::identity::IdentityError),
    /// openraft refused to start or stopped (usually a storage failure): the node must stop.
    #[error("raft: {0}")]
    Raft(String),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
