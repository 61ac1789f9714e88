//! steadfast: a web-session store that never loses a session and never serves a stale one.
//!
//! # Layout
//! - [`id`], [`limits`], [`clock`]: identifiers, named limits, injected time.
//! - [`command`] and [`state`]: the replicated commands and the pure, deterministic state machine.
//! - [`codec`]: checked on-disk records.
//! - [`raft`]: openraft glue: type config, seeded runtime, storage backends (sled, in-memory
//!   with crash semantics) and the network factory.
//! - [`wire`] and [`transport`]: framed, multiplexed connections, generic over the byte stream.
//! - [`node`]: a node hosting many Raft groups; [`client`]: routing, leader cache, retries.
//! - [`config`]: node and cluster configuration.
//! - [`backup`]: point-in-time backups and restoring them into new data directories.
//! - [`resp`]: the Redis protocol listener (Redis keys are sessions; see [`command::redis`]).

#![allow(
    clippy::result_large_err,
    reason = "openraft's error types are large by design and appear in our storage and read paths"
)]

pub mod adapters;
pub mod backup;
pub mod client;
pub mod clock;
pub mod codec;
pub mod command;
pub mod config;
pub mod error;
pub mod fuzzing;
pub mod id;
pub mod limits;
pub mod node;
pub mod raft;
pub mod resp;
pub mod state;
pub mod tls;
pub mod transport;
pub mod wire;

pub use client::Client;
pub use error::Error;
pub use id::{ClientId, GroupId, NodeId, SessionId};
pub use node::Node;
