//! steadfast's deterministic simulation: real nodes, a simulated network and disk, faults chosen
//! from a seed, and a checker that proves each history linearizable.
//!
//! # Layout
//! - [`net`]: the product's `Connector`/`Listener` over turmoil sockets, and the simulated clock.
//! - [`disk`]: a node's simulated disk (crash semantics, a sync delay the injector controls).
//! - [`faults`]: the fault classes and the workload corners a sweep must reach.
//! - [`swarm`]: each seed's own cluster, operation mix, timeouts, limits and fault mix.
//! - [`harness`]: one run of one seed: cluster, faults, healing, liveness, checks.
//! - [`workload`]: the clients and what they record.
//! - [`injector`]: steps the simulation, injects and heals faults, springs timed traps.
//! - [`operator`]: operator faults: a large snapshot install, a node replaced under a new id,
//!   a backup restored into fresh nodes.
//! - [`checker`]: the linearizability checker (and its brute-force oracle).
//! - [`lifecycle`]: rotations, principals and limits, access times and deadlines.
//! - [`trace`]: the event log and its hash.

#[cfg(not(tokio_unstable))]
compile_error!(
    "steadfast-sim must be built with --cfg tokio_unstable (set in .cargo/config.toml); a RUSTFLAGS \
     environment variable replaces that setting: unset it"
);

pub mod checker;
pub mod disk;
pub mod faults;
pub mod harness;
pub mod injector;
pub mod lifecycle;
pub mod net;
pub mod operator;
pub mod rkeys;
pub mod rworkload;
pub mod swarm;
pub mod trace;
pub mod workload;
