//! Swarm testing: every seed draws its own cluster, operation mix, key count, timeouts, limits
//! and fault mix (as FoundationDB's simulation does), so an interleaving that is rare under one
//! fixed mix is common in some seeds.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use steadfast::SessionId;

use crate::faults::FaultClass;

/// Relative weights of the workload's operations on its own keys.
#[derive(Clone, Debug)]
pub struct Mix {
    pub create: u32,
    pub get: u32,
    pub put: u32,
    pub touch: u32,
    pub delete: u32,
    pub rotate: u32,
    /// Percent of rotations that move the session to another group (`RotateOut` + `RotateIn`).
    pub cross_group_pct: u32,
    /// Percent of a client's steps spent on logins, "log out everywhere" and their probes.
    pub lifecycle_pct: u32,
    /// Percent of a client's steps that chase a session's deadline (read or touch just before
    /// it, read just after it).
    pub deadline_pct: u32,
    /// Longest pause between two steps of one client.
    pub think_ms: u64,
    /// Percent of a client's steps that run a RESP-level scenario (renames, SET after DEL,
    /// absolute deadlines; `src/rworkload.rs`).
    pub redis_pct: u32,
    /// Percent of RESP renames whose keys are in different groups.
    pub redis_cross_pct: u32,
}

impl Mix {
    /// The weights in order: create, get, put, touch, delete, rotate.
    pub fn weights(&self) -> [u32; 6] {
        [
            self.create,
            self.get,
            self.put,
            self.touch,
            self.delete,
            self.rotate,
        ]
    }
}

/// Fixed per-seed parameters.
#[derive(Clone, Debug)]
pub struct Params {
    pub nodes: usize,
    pub groups: u32,
    pub clients: u32,
    pub keys: Vec<SessionId>,
    pub idle_timeout_ms: u64,
    pub may_expire: bool,
    /// Sessions one principal may hold (the namespace refuses a login beyond it).
    pub principal_limit: u32,
    pub mix: Mix,
    /// Relative weight of each fault class in this seed (0: never injected here).
    pub fault_weights: Vec<(FaultClass, u32)>,
    /// Build a snapshot after this many entries.
    pub snapshot_every: u64,
    /// How long a sync takes.
    pub sync_latency: Duration,
    /// The RESP executor's `redis_delete_grace_ms` (0: off, Redis behaviour).
    pub delete_grace_ms: u64,
    /// Log entries a group's leader keeps in flight (the default 1, or a deeper pipeline).
    pub pipeline_depth: usize,
}

/// Draws a seed's parameters.
pub fn params(seed: u64, rng: &mut SmallRng) -> Params {
    let nodes = if rng.gen_bool(0.3) { 5 } else { 3 };
    // Long (nothing expires), medium, or short idle timeouts that expire all the time.
    let (idle_timeout_ms, may_expire) = match rng.gen_range(0..10) {
        0..=3 => (3_600_000, false),
        4..=6 => (rng.gen_range(2_000..6_000), true),
        _ => (rng.gen_range(400..1_600), true),
    };
    let key_count = match rng.gen_range(0..4) {
        0 => rng.gen_range(2..=4),
        1 | 2 => rng.gen_range(6..=12),
        _ => rng.gen_range(12..=20),
    };
    let keys = (0..key_count)
        .map(|k| {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&seed.to_be_bytes());
            bytes[8..].copy_from_slice(&(k as u64).to_be_bytes());
            SessionId::from_bytes(bytes)
        })
        .collect();
    let mut weight = |base: u32| match rng.gen_range(0..10) {
        0 => base / 4,
        1..=6 => base,
        _ => base * 3,
    };
    let mix = Mix {
        create: weight(15),
        get: weight(35),
        put: weight(30),
        touch: weight(15),
        delete: weight(3),
        rotate: weight(3),
        cross_group_pct: rng.gen_range(30..=90),
        lifecycle_pct: [2, 5, 10, 20][rng.gen_range(0..4)],
        deadline_pct: if may_expire {
            [0, 5, 15][rng.gen_range(0..3)]
        } else {
            0
        },
        think_ms: [20, 80, 200][rng.gen_range(0..3)],
        redis_pct: 0,
        redis_cross_pct: 0,
    };
    let fault_weights = FaultClass::ALL
        .iter()
        .filter(|c| c.applies_to(nodes))
        .map(|c| (*c, [0, 1, 2, 2, 4][rng.gen_range(0..5)]))
        .collect();
    let mut params = Params {
        nodes,
        groups: rng.gen_range(2..=4),
        clients: rng.gen_range(3..=5),
        keys,
        idle_timeout_ms,
        may_expire,
        principal_limit: rng.gen_range(1..=3),
        mix,
        fault_weights,
        snapshot_every: rng.gen_range(10..60),
        sync_latency: Duration::from_micros(rng.gen_range(200..3000)),
        delete_grace_ms: 0,
        pipeline_depth: 1,
    };
    // The RESP knobs come from their own stream, so every earlier draw (and the harness's
    // later ones) is what it was before they existed: a seed without RESP scenarios runs
    // exactly as it did.
    let mut resp = SmallRng::seed_from_u64(seed ^ 0x7265_6469_735f_6b65);
    params.mix.redis_pct = [0, 5, 15, 30][resp.gen_range(0..4)];
    params.mix.redis_cross_pct = resp.gen_range(30..=80);
    params.delete_grace_ms = if resp.gen_bool(0.5) {
        0
    } else {
        resp.gen_range(300..1_500)
    };
    params.pipeline_depth = [1, 1, 2, 4][resp.gen_range(0..4)];
    params
}
