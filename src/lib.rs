//! steadfast: a web-session store that never loses a session and never serves a stale one.
//!
//! # Layout
//! - [`id`], [`limits`], [`clock`]: identifiers, named limits, injected time.
//! - [`command`], [`session`] and [`state`]: the replicated commands, the stored session, and the
//!   pure, deterministic state machine.
//! - [`codec`]: checked on-disk records.
//! - [`raft`]: openraft glue: type config, seeded runtime, storage backends (sled, in-memory
//!   with crash semantics) and the network factory.
//! - [`wire`] and [`transport`]: framed, multiplexed connections, generic over the byte stream.
//! - [`node`]: a node hosting many Raft groups ([`failstop`]: it stops when its storage
//!   fails); [`client`]: routing, leader cache, retries.
//! - [`config`]: node and cluster configuration.
//! - [`backup`]: point-in-time backups; [`restore`]: installing one into a new data directory;
//!   [`recover`]: a one-node cluster from a survivor when a majority is lost for good.
//! - [`identity`]: which cluster and node a data directory belongs to; [`handshake`]: the
//!   cluster check when a connection opens.
//! - [`resp`]: the Redis protocol listener (Redis keys are sessions; see [`command::redis`]).

#![allow(
    clippy::result_large_err,
    reason = "openraft's error types are large by design and appear in our storage and read paths"
)]

pub mod adapters;
pub mod backup;
pub mod bench;
pub mod client;
pub mod clock;
pub mod cluster;
pub mod codec;
pub mod command;
pub mod config;
pub mod error;
pub mod failstop;
pub mod future;
pub mod fuzzing;
pub mod handshake;
pub mod id;
pub mod identity;
pub mod limits;
pub mod node;
pub mod proposer;
pub mod raft;
pub mod recover;
pub mod resp;
pub mod restore;
pub mod runtime;
pub mod session;
pub mod state;
pub mod tls;
pub mod transport;
pub mod wire;

pub use client::Client;
pub use error::Error;
pub use id::{ClientId, GroupId, NodeId, SessionId};
pub use node::Node;
