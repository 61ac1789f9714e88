//! steadfast: a web-session store that never loses a session and never serves a stale one.
//!
//! # Layout
//! - [`client`]: routing, leader cache, retries (the [`Client`] apps use); [`error`]: the one
//!   error type, each variant saying what the caller should do; [`id`], [`limits`], [`clock`]:
//!   identifiers, named limits, injected time.
//! - [`adapters`]: the axum layer and the tower-sessions and actix-session stores, and a switch
//!   between a cluster and a node embedded in the app.
//! - [`command`], [`session`] and [`state`]: the replicated commands, the stored session, and the
//!   pure, deterministic state machine.
//! - [`codec`]: checked on-disk records.
//! - [`node`]: a node hosting many Raft groups ([`failstop`]: it stops when its storage
//!   fails; [`proposer`]: group commit for writes); [`runtime`]: the tokio runtime it runs on;
//!   [`transport`]: framed, multiplexed connections, generic over the byte stream; [`future`]:
//!   the boxed future the trait objects return.
//! - [`config`]: node and cluster configuration; [`tls`]: mutual TLS on the data port.
//! - [`cluster`]: whole-cluster operations on a client (waiting for leaders, moving a node's
//!   replicas).
//! - [`backup`]: point-in-time backups; [`restore`]: installing one into a new data directory;
//!   [`recover`]: a one-node cluster from a survivor when a majority is lost for good.
//! - [`identity`]: which cluster and node a data directory belongs to; [`handshake`]: the
//!   cluster check when a connection opens.
//! - [`resp`]: the Redis protocol listener (Redis keys are sessions; see [`command::redis`]).
//! - [`mod@bench`]: the load generator behind `steadfast bench`.
//! - [`dashboard`]: the admin listener's HTML dashboard and the report it polls.
//!
//! Internal, public only for the binary, the simulation and the fuzzers, and left out of these
//! docs: `raft` (openraft glue: type config, storage backends, network factory), `wire` (the
//! peer and client protocol; the types the client API returns are re-exported from [`client`])
//! and `fuzzing` (fuzz-target bodies).

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
pub mod dashboard;
pub mod error;
pub mod failstop;
pub mod future;
#[doc(hidden)]
pub mod fuzzing;
pub mod handshake;
pub mod id;
pub mod identity;
pub mod limits;
pub mod node;
pub mod proposer;
#[doc(hidden)]
pub mod raft;
pub mod recover;
pub mod resp;
pub mod restore;
pub mod runtime;
pub mod session;
pub mod state;
pub mod teeth;
pub mod tls;
pub mod transport;
#[doc(hidden)]
pub mod wire;

/// The README's Rust snippets, compiled (and, unless marked `no_run`, run) by
/// `cargo test --doc`, so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub use client::Client;
pub use error::Error;
pub use id::{ClientId, GroupId, NodeId, SessionId};
pub use node::Node;
