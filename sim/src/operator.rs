//! Operator faults: a large snapshot installed while clients write (`LargeSnapshot`), a node
//! replaced under a new id (`ReplaceNode`), and a backup taken mid-run and restored into fresh
//! nodes (`BackupRestore`). The injector's side runs in the driver (it registers hosts, ends the
//! large-snapshot cut); the clients' side (the bulk writer, the backup taker, the restored
//! cluster's checker) runs as turmoil clients and reports through [`Operator`].

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use steadfast::backup::{self, Backup};
use steadfast::client::{ClientConfig, CreateOptions, Update};
use steadfast::command::Attributes;
use steadfast::config::Peer;
use steadfast::state::{SessionState, SessionView};
use steadfast::{Client, ClientId, Error, GroupId, SessionId};

use crate::checker::{Op, OpKind, Outcome, ReadValue};
use crate::disk::SimDisk;
use crate::faults::FaultClass;
use crate::harness::{add_host, node_config, node_name, now_ms, HostSpec, World, EPOCH_MS, PORT};
use crate::injector::{current_voters, Injector};
use crate::net::SimConnector;
use crate::swarm::Params;
use crate::workload::{id_in, value_of};

/// The pseudo-client the backup's images are recorded under, as reads.
const BACKUP_CLIENT: u32 = 900;
/// The restored cluster's nodes.
const RESTORED_NODES: usize = 3;
/// The restored cluster must serve within this long of its start.
const RESTORE_BOUND: Duration = Duration::from_secs(30);

/// Where the restored cluster is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Restore {
    /// No backup taken yet.
    #[default]
    NotYet,
    /// Its nodes and checker run.
    Running,
    /// Checked; its nodes are to be stopped.
    Done,
    /// Its nodes are stopped.
    Retired,
}

/// What the operator faults share between the driver and the clients (one thread).
#[derive(Clone, Default)]
pub struct Operator {
    /// Bulk sessions the bulk writer is to write now (`LargeSnapshot`).
    pub bulk_wanted: Rc<Cell<u32>>,
    /// The large-snapshot follower is cut off (the bulk writer waits for its return).
    pub bulk_cut: Rc<Cell<bool>>,
    /// Live node ids: a replaced node's id leaves, its successor's joins.
    pub members: Rc<RefCell<Vec<u64>>>,
    /// Replacement membership changes not committed yet.
    pub replacing: Rc<Cell<u32>>,
    /// Node replacements every group committed.
    pub replaced: Rc<Cell<u32>>,
    /// The injector asks for a backup.
    pub backup_wanted: Rc<Cell<bool>>,
    /// The backup taken, once decoded.
    pub backup: Rc<RefCell<Option<Rc<Backup>>>>,
    /// The restored cluster's phase.
    pub restore: Rc<Cell<Restore>>,
    /// Restores whose cluster passed every check.
    pub restored: Rc<Cell<u32>>,
    /// Versions the restored cluster issued, per group (all must exceed the live cluster's).
    pub restored_versions: Rc<RefCell<Vec<(u32, u64)>>>,
}

/// A membership change for the admin client to run.
#[derive(Clone, Debug)]
pub enum Order {
    /// Make these the group's voters (a `MembershipChange` fault); not retried.
    Voters(u32, Vec<u64>),
    /// Replace voter `old` by `new` in the group (a `ReplaceNode` fault); retried until it
    /// commits or the faults end.
    Replace { group: u32, old: u64, new: u64 },
}

// ------------------------------------------------------------------------------------------
// The driver's side.

/// `ReplaceNode`: kills a node for good (its disk is never used again), starts a fresh node under
/// a new id on a new host, and orders every group the old one was a voter of to swap them.
/// Only one replacement per run, and only of a node whose groups keep a quorum without it.
pub fn replace_node(
    sim: &mut turmoil::Sim<'_>,
    world: &World,
    inj: &mut Injector,
    p: &Params,
) -> Option<String> {
    if !inj.gone.is_empty() {
        return None;
    }
    // A membership change in flight may leave a joint configuration whose new half has two
    // voters; losing one of them for good would stop the group forever (Raft cannot commit
    // without a majority of both halves), which is an operator's mistake, not a finding.
    if world.changing.get() || !world.orders.borrow().is_empty() {
        return None;
    }
    let voter_groups = |n: usize| -> Vec<u32> {
        (0..p.groups)
            .filter(|g| current_voters(world, *g).contains(&(n as u64 + 1)))
            .collect()
    };
    let candidates: Vec<usize> = (0..p.nodes)
        .filter(|n| !inj.down.contains(n))
        .filter(|n| (0..p.groups).all(|g| quorum_without(world, g, *n as u64 + 1)))
        .collect();
    let old = *candidates.choose(&mut inj.rng)?;
    let groups = voter_groups(old);
    sim.crash(node_name(old));
    inj.gone.insert(old);
    world.rafts.borrow_mut().retain(|(node, _), _| *node != old);
    let spare = p.nodes;
    let (old_id, new_id) = (old as u64 + 1, spare as u64 + 1);
    let mut config = node_config(p, spare);
    config.peers.push(Peer {
        id: new_id,
        addr: format!("{}:{PORT}", node_name(spare)),
    });
    add_host(
        sim,
        world,
        HostSpec {
            name: node_name(spare),
            index: Some(spare),
            config,
            disk: SimDisk::new(p.sync_latency),
            offset: Arc::default(),
            bootstrap: false,
            restore: None,
            cluster: "sim",
        },
    );
    world
        .ops
        .members
        .borrow_mut()
        .iter_mut()
        .filter(|m| **m == old_id)
        .for_each(|m| *m = new_id);
    world.ops.replacing.set(groups.len() as u32);
    if groups.is_empty() {
        world.ops.replaced.set(world.ops.replaced.get() + 1);
    }
    for group in &groups {
        world.orders.borrow_mut().push_back(Order::Replace {
            group: *group,
            old: old_id,
            new: new_id,
        });
    }
    Some(format!(
        "{} lost for good; node {new_id} ({}) replaces it in groups {:?}",
        node_name(old),
        node_name(spare),
        groups
    ))
}

/// Whether every configuration any replica of `group` holds (both halves of a joint one) keeps
/// a quorum without voter `id`: it is not in it, or the configuration has three voters or more.
fn quorum_without(world: &World, group: u32, id: u64) -> bool {
    world
        .rafts
        .borrow()
        .iter()
        .filter(|((_, g), _)| *g == group)
        .all(|(_, raft)| {
            let metrics = raft.metrics().borrow().clone();
            let membership = metrics.membership_config.membership();
            membership
                .get_joint_config()
                .iter()
                .all(|config| !config.contains(&id) || config.len() >= 3)
        })
}

/// The driver's per-step work for the operator faults: ends a large-snapshot cut once the bulk
/// writes are in (counting it if some leader purged past the follower), starts the restored
/// cluster once a backup is in, and stops it once checked.
pub fn step_operator(sim: &mut turmoil::Sim<'_>, world: &World, inj: &mut Injector, p: &Params) {
    if let Some((follower, since)) = inj.large {
        let now = sim.elapsed();
        if world.ops.bulk_wanted.get() == 0 && now >= since + Duration::from_millis(1500) {
            inj.large = None;
            let behind = purged_past(world, follower);
            if !behind.is_empty() {
                *inj.counts.entry(FaultClass::LargeSnapshot).or_default() += 1;
            }
            world.trace.event(
                now.as_millis(),
                format!(
                    "large snapshot: {} returns; leaders purged past its log in groups {behind:?}",
                    node_name(follower)
                ),
            );
            if let Some(active) = &mut inj.active {
                active.1 = now;
            }
        }
    }
    match world.ops.restore.get() {
        Restore::NotYet => {
            let backup = world.ops.backup.borrow().clone();
            if let Some(backup) = backup {
                start_restored_cluster(sim, world, p, backup);
            }
        }
        Restore::Done => {
            for i in 0..RESTORED_NODES {
                sim.crash(restored_name(i));
            }
            world.ops.restore.set(Restore::Retired);
        }
        Restore::Running | Restore::Retired => {}
    }
}

/// The groups whose leader's log starts past `follower`'s last entry: it can only catch up by
/// installing a snapshot.
fn purged_past(world: &World, follower: usize) -> Vec<u32> {
    let rafts = world.rafts.borrow();
    let mut behind = Vec::new();
    for ((node, group), raft) in rafts.iter() {
        let m = raft.metrics().borrow().clone();
        if !m.state.is_leader() || *node == follower {
            continue;
        }
        let theirs = rafts
            .get(&(follower, *group))
            .and_then(|r| r.metrics().borrow().last_log_index);
        let purged = m.purged.map(|l| l.index);
        let voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|v| v == follower as u64 + 1);
        if voter && purged > theirs {
            behind.push(*group);
        }
    }
    behind
}

fn restored_name(i: usize) -> String {
    format!("r{}", i + 1)
}

/// Three fresh nodes of a new cluster, each restored from `backup` as `steadfast restore` does
/// (`restore_into` on an empty store), then started; and a client that checks them.
fn start_restored_cluster(
    sim: &mut turmoil::Sim<'_>,
    world: &World,
    p: &Params,
    backup: Rc<Backup>,
) {
    world.ops.restore.set(Restore::Running);
    for i in 0..RESTORED_NODES {
        let mut config = node_config(p, i);
        config.peers = (0..RESTORED_NODES)
            .map(|j| Peer {
                id: j as u64 + 1,
                addr: format!("{}:{PORT}", restored_name(j)),
            })
            .collect();
        add_host(
            sim,
            world,
            HostSpec {
                name: restored_name(i),
                index: None,
                config,
                disk: SimDisk::new(p.sync_latency),
                offset: Arc::default(),
                bootstrap: false,
                restore: Some(backup.clone()),
                cluster: "sim-restored",
            },
        );
    }
    world
        .trace
        .event(now_ms(), "backup: restored into r1..r3 (a new cluster)");
    sim.client(
        "restorer",
        check_restored(world.clone(), Rc::new(p.clone()), backup),
    );
}

// ------------------------------------------------------------------------------------------
// The clients' side.

/// A client of the given nodes, with the simulation's deadlines.
pub async fn connect_to(client: u64, addrs: Vec<String>) -> Result<Client, Error> {
    let mut config = ClientConfig::new(addrs);
    config.client_id = Some(ClientId(client));
    config.request_timeout = Duration::from_secs(3);
    config.attempt_timeout = Duration::from_millis(700);
    Client::connect_with(config, Arc::new(SimConnector)).await
}

fn live_addrs(world: &World) -> Vec<String> {
    world
        .ops
        .members
        .borrow()
        .iter()
        .map(|id| format!("{}:{PORT}", node_name(*id as usize - 1)))
        .collect()
}

/// The bulk writer of `LargeSnapshot`: while a follower is cut off it writes the sessions asked
/// for (large values, every group), then, once the follower is back and catching up by snapshot
/// while the workload writes, reads each acknowledged one back (same version) and deletes it.
pub async fn bulk_writer(
    world: World,
    p: Rc<Params>,
    seed: u64,
    until: Duration,
) -> turmoil::Result {
    let mut rng = SmallRng::seed_from_u64(seed);
    let client = connect_to(30_001, live_addrs(&world)).await?;
    while turmoil::sim_elapsed().unwrap_or_default() < until {
        if world.ops.bulk_wanted.get() == 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let mut written = Vec::new();
        while world.ops.bulk_wanted.get() > 0 {
            world.ops.bulk_wanted.set(world.ops.bulk_wanted.get() - 1);
            let group = GroupId(rng.gen_range(0..p.groups));
            let id = id_in(&mut rng, group, p.groups);
            let size = rng.gen_range(1024..16 * 1024);
            let blob: Vec<u8> = (0..size)
                .map(|i| (i as u8) ^ (id.group(251).0 as u8))
                .collect();
            let options = CreateOptions {
                idle_timeout: Some(Duration::from_secs(3600)),
                ..CreateOptions::default()
            };
            let attributes = Attributes::from([("blob".to_string(), blob)]);
            if let Ok(w) = client.create_with_id(id, attributes, options).await {
                written.push((id, w.version, size));
            }
        }
        world.trace.event(
            now_ms(),
            format!("bulk: {} sessions acknowledged", written.len()),
        );
        while world.ops.bulk_cut.get() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(200..2000))).await;
        if let Some(v) = read_back(&client, &written).await {
            *world.verdict.borrow_mut() = Some(v);
        }
    }
    Ok(())
}

/// Reads every acknowledged bulk session back (a definite answer must show it unchanged), then
/// deletes it; answers that never come are no proof either way.
async fn read_back(client: &Client, written: &[(SessionId, u64, usize)]) -> Option<String> {
    for (id, version, size) in written {
        for _ in 0..3 {
            let Ok(r) = client.read(*id).await else {
                continue;
            };
            let seen = r
                .session
                .as_ref()
                .map(|s| (s.version, s.attributes.get("blob").map_or(0, Vec::len)));
            if seen != Some((*version, *size)) {
                return Some(format!(
                    "large snapshot: acknowledged bulk session {id} (version {version}, \
                     {size} bytes) reads back as {seen:?}"
                ));
            }
            break;
        }
        let _ = client.delete(*id, Some(*version)).await;
    }
    None
}

/// The backup taker: when asked, fetches every group's image from its leader through the public
/// backup API, assembles and decodes the file as `steadfast backup` does, and records each
/// image's view of every workload key as a read linearized within that group's fetch.
pub async fn backup_taker(world: World, p: Rc<Params>, until: Duration) -> turmoil::Result {
    let client = connect_to(30_002, live_addrs(&world)).await?;
    while turmoil::sim_elapsed().unwrap_or_default() < until {
        if !world.ops.backup_wanted.replace(false) || world.ops.backup.borrow().is_some() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let mut records = Vec::new();
        let mut windows = Vec::new();
        for g in 0..p.groups {
            loop {
                if turmoil::sim_elapsed().unwrap_or_default() >= until {
                    return Ok(());
                }
                let invoke = world.tick();
                match backup::fetch_group(&client, GroupId(g)).await {
                    Ok((record, taken)) => {
                        windows.push((invoke, world.tick()));
                        world.trace.event(
                            now_ms(),
                            format!(
                                "backup: g{g} at index {} ({} sessions)",
                                taken.index, taken.sessions
                            ),
                        );
                        records.push(record);
                        break;
                    }
                    Err(e) => {
                        world
                            .trace
                            .event(now_ms(), format!("backup: g{g} failed: {e}"));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        }
        let taken_at = EPOCH_MS + now_ms() as u64;
        let decoded = backup::assemble(&records, taken_at)
            .map_err(|e| e.to_string())
            .and_then(|bytes| backup::decode(&bytes).map_err(|e| e.to_string()));
        let backup = match decoded {
            Ok(b) => b,
            Err(e) => {
                *world.verdict.borrow_mut() =
                    Some(format!("backup: the file does not read back: {e}"));
                return Ok(());
            }
        };
        record_image_reads(&world, &p, &backup, &windows);
        *world.ops.backup.borrow_mut() = Some(Rc::new(backup));
    }
    Ok(())
}

/// Each workload key as the backup's image of its group shows it (`get` as of the image's
/// replicated clock), into the history as a read within that group's fetch window.
fn record_image_reads(world: &World, p: &Params, backup: &Backup, windows: &[(u64, u64)]) {
    let states = image_states(backup);
    for (key, id) in p.keys.iter().enumerate() {
        let g = id.group(p.groups).0;
        let (invoke, complete) = windows[g as usize];
        let state = &states[g as usize];
        let found = state.get(id).as_ref().map(read_value);
        world.history.borrow_mut().push(Op {
            id: world.tick(),
            client: BACKUP_CLIENT,
            group: g,
            key: key as u64,
            kind: OpKind::Get,
            invoke,
            complete: Some(complete),
            outcome: Outcome::Read {
                found,
                server_time_ms: state.clock_ms(),
            },
        });
    }
}

fn image_states(backup: &Backup) -> Vec<SessionState> {
    backup
        .groups
        .iter()
        .map(|g| SessionState::from_image(g.state.clone()).expect("decode validated the image"))
        .collect()
}

fn read_value(s: &SessionView) -> ReadValue {
    ReadValue {
        version: s.version,
        value: value_of(&s.attributes),
        expires_at_ms: s.expires_at_ms,
    }
}

/// The restored cluster's checker: every workload key reads as the backup shows it (same version
/// and value, or gone only once past its deadline), a tombstoned id cannot be created again, and
/// writes there get versions the harness later compares with every version the live cluster
/// acknowledged (never reused).
async fn check_restored(world: World, p: Rc<Params>, backup: Rc<Backup>) -> turmoil::Result {
    let addrs = (0..RESTORED_NODES)
        .map(|i| format!("{}:{PORT}", restored_name(i)))
        .collect::<Vec<_>>();
    let started = turmoil::sim_elapsed().unwrap_or_default();
    let late = || turmoil::sim_elapsed().unwrap_or_default() - started > RESTORE_BOUND;
    let client = loop {
        match connect_to(30_003, addrs.clone()).await {
            Ok(c) => break c,
            Err(_) if !late() => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => {
                let v = format!("backup restore: the restored cluster never answered: {e}");
                *world.verdict.borrow_mut() = Some(v);
                return Ok(());
            }
        }
    };
    let states = image_states(&backup);
    let tombstones: BTreeSet<SessionId> = backup
        .groups
        .iter()
        .flat_map(|g| g.state.tombstones.iter().map(|(id, _)| *id))
        .collect();
    let mut checked = 0;
    for (key, id) in p.keys.iter().enumerate() {
        let g = id.group(p.groups).0;
        let key_check = KeyCheck {
            image: &states[g as usize],
            id: *id,
            group: g,
            tombstoned: tombstones.contains(id),
        };
        match key_check.run(&client, &world, &late).await {
            Ok(()) => checked += 1,
            Err(v) => {
                *world.verdict.borrow_mut() = Some(format!("backup restore: key {key}: {v}"));
                return Ok(());
            }
        }
    }
    let mut rng = SmallRng::seed_from_u64(0x5e5708e);
    for g in 0..p.groups {
        let probe = id_in(&mut rng, GroupId(g), p.groups);
        if let Ok(w) = client
            .create_with_id(probe, Attributes::new(), CreateOptions::default())
            .await
        {
            world
                .ops
                .restored_versions
                .borrow_mut()
                .push((g, w.version));
        }
    }
    world.trace.event(
        now_ms(),
        format!(
            "backup restore: {checked} keys as backed up; new versions {:?}",
            world.ops.restored_versions.borrow()
        ),
    );
    world.ops.restored.set(world.ops.restored.get() + 1);
    world.ops.restore.set(Restore::Done);
    Ok(())
}

/// One key on the restored cluster (see [`check_restored`]).
struct KeyCheck<'a> {
    /// Its group's state in the backup.
    image: &'a SessionState,
    id: SessionId,
    group: u32,
    /// The backup holds its tombstone.
    tombstoned: bool,
}

impl KeyCheck<'_> {
    async fn run(
        &self,
        client: &Client,
        world: &World,
        late: &dyn Fn() -> bool,
    ) -> Result<(), String> {
        let id = self.id;
        let backed_up = self.image.get(&id);
        let read = loop {
            match client.read(id).await {
                Ok(r) => break r,
                Err(e) if late() => return Err(format!("no read within {RESTORE_BOUND:?}: {e}")),
                Err(_) => {}
            }
        };
        let found = read
            .session
            .as_ref()
            .map(|s| (s.version, value_of(&s.attributes)));
        match (&backed_up, found) {
            (Some(b), Some(f)) if (b.version, value_of(&b.attributes)) != f => {
                return Err(format!("backed up at version {} reads as {f:?}", b.version))
            }
            (Some(b), None) if b.expires_at_ms > read.server_time_ms => {
                return Err(format!(
                    "backed up at version {} (expiring at {}) is gone at {}",
                    b.version, b.expires_at_ms, read.server_time_ms
                ))
            }
            (None, Some(f)) => return Err(format!("absent from the backup, reads as {f:?}")),
            _ => {}
        }
        if self.tombstoned {
            match client
                .create_with_id(id, Attributes::new(), CreateOptions::default())
                .await
            {
                Ok(w) => {
                    return Err(format!(
                        "tombstoned in the backup, created again at {}",
                        w.version
                    ))
                }
                Err(Error::Exists) => {}
                Err(_) => {}
            }
        }
        if found.is_some() {
            let update = Update {
                set: Attributes::from([("v".to_string(), 7u64.to_be_bytes().to_vec())]),
                ..Default::default()
            };
            if let Ok(w) = client.update(id, update).await {
                world
                    .ops
                    .restored_versions
                    .borrow_mut()
                    .push((self.group, w.version));
            }
        }
        Ok(())
    }
}

/// Versions are never reused across a restore: every version the restored cluster issued in a
/// group is above every version the live cluster acknowledged or showed there.
pub fn check_restored_versions(history: &[Op], restored: &[(u32, u64)]) -> Result<(), String> {
    let mut newest: BTreeMap<u32, u64> = BTreeMap::new();
    for op in history {
        let v = match &op.outcome {
            Outcome::Ok { version, .. } => *version,
            Outcome::Read { found: Some(r), .. } => r.version,
            Outcome::Conflict { current } => *current,
            _ => continue,
        };
        let e = newest.entry(op.group).or_default();
        *e = (*e).max(v);
    }
    let groups: BTreeSet<u32> = restored.iter().map(|(g, _)| *g).collect();
    for g in groups {
        let live = newest.get(&g).copied().unwrap_or(0);
        if let Some((_, v)) = restored.iter().find(|(rg, v)| *rg == g && *v <= live) {
            return Err(format!(
                "backup restore: the restored cluster issued version {v} in g{g}, not above the \
                 live cluster's {live}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(id: u64, group: u32, outcome: Outcome) -> Op {
        Op {
            id,
            client: 0,
            group,
            key: 0,
            kind: OpKind::Get,
            invoke: id,
            complete: Some(id + 1),
            outcome,
        }
    }

    fn read(version: u64) -> Outcome {
        Outcome::Read {
            found: Some(ReadValue {
                version,
                value: 1,
                expires_at_ms: 10,
            }),
            server_time_ms: 1,
        }
    }

    #[test]
    fn a_restored_cluster_reissuing_a_live_version_is_flagged() {
        let history = [
            op(
                1,
                0,
                Outcome::Ok {
                    version: 40,
                    server_time_ms: 1,
                },
            ),
            op(3, 1, read(90)),
            op(5, 1, Outcome::Conflict { current: 95 }),
        ];
        assert!(check_restored_versions(&history, &[(0, 41), (1, 96)]).is_ok());
        // Group 1 showed version 95 (in a conflict); a restored write at 95 reuses it.
        let err = check_restored_versions(&history, &[(0, 41), (1, 95)]).unwrap_err();
        assert!(err.contains("g1"), "{err}");
        assert!(check_restored_versions(&history, &[(0, 12)]).is_err());
    }
}
