//! steadfast's deterministic simulation: real nodes, a simulated network and disk, faults chosen
//! from a seed, and a checker that proves each history linearizable.
//!
//! # Layout
//! - [`net`]: the product's `Connector`/`Listener` over turmoil sockets, and the simulated clock.
//! - [`faults`]: the fault classes and the seed-driven schedule.
//! - [`harness`]: one run of one seed: cluster, workload, faults, healing, liveness, checks.
//! - [`checker`]: the history checker (and its brute-force oracle).
//! - [`trace`]: the event log and its hash.

#[cfg(not(tokio_unstable))]
compile_error!(
    "steadfast-sim must be built with --cfg tokio_unstable (set in .cargo/config.toml); a RUSTFLAGS \
     environment variable replaces that setting: unset it"
);

pub mod checker;
pub mod faults;
pub mod harness;
pub mod net;
pub mod trace;
