//! One simulation run: everything derives from the seed, so the seed replays it bit for bit.
//!
//! Phases: (1) a cluster of real `Node`s boots on turmoil hosts with in-memory crash-semantics
//! storage; (2) clients run a conflicting workload on a few session ids while faults come and go;
//! (3) every fault is healed; (4) liveness: every group must commit a write within a bound;
//! (5) final linearizable reads of every key, replica digests, and the history check.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::rc::Rc;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use steadfast::backup::Backup;
use steadfast::client::{ClientConfig, CreateOptions};
use steadfast::command::Attributes;
use steadfast::config::{NodeConfig, Peer, RaftTuning, SessionDefaults};
use steadfast::node::{Node, NodeOptions};
use steadfast::raft::typ::Raft;
use steadfast::{Client, ClientId, Error, GroupId, SessionId};

use crate::checker::{self, CheckOptions, Op, OpKind, Outcome, ReadValue, Rotation};
use crate::disk::SimDisk;
use crate::faults::{Corner, FaultClass};
use crate::injector::{current_voters, drive, Injector};
use crate::lifecycle::{self, LifeKind, LifeOp, LifeOptions, RotatedAway, SessionNo};
use crate::net::{SimClock, SimConnector, SimListener};
use crate::operator::{self, Operator, Order};
use crate::rkeys::{self, RCmd, ROp, RResult};
use crate::swarm::{params, Params};
use crate::trace::Trace;
use crate::workload::{workload, PRINCIPALS};

/// The port every node listens on.
pub const PORT: u16 = 7000;
pub const EPOCH_MS: u64 = 1_700_000_000_000;
/// Every group must elect a leader and commit within this long after healing.
const LIVENESS_BOUND: Duration = Duration::from_secs(30);

/// What to run.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Simulated seconds of workload under faults.
    pub fault_secs: u64,
    /// Whether to inject faults at all.
    pub faults: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            fault_secs: 60,
            faults: true,
        }
    }
}

/// What one run found.
#[derive(Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Hash of the event log.
    pub trace_hash: u64,
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Client operations recorded.
    pub ops: usize,
    /// Faults injected, by class.
    pub faults: BTreeMap<FaultClass, u32>,
    /// Workload corners reached, by kind.
    pub corners: BTreeMap<Corner, u32>,
    /// `None` if every check passed.
    pub violation: Option<String>,
    /// The event log.
    pub trace: Vec<String>,
}

/// Aligns tokio's process-wide task-id counter so a crash drops tasks in the same order as in
/// a fresh process (DESIGN §4: runtimes cancel tasks shard by shard, sharded by task id).
pub fn align_task_ids() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("throwaway runtime");
    rt.block_on(async {
        loop {
            let id = tokio::spawn(async { tokio::task::id() })
                .await
                .expect("task");
            let n: u64 = id.to_string().parse().expect("task ids print as integers");
            if (n + 1).is_multiple_of(64) {
                break;
            }
        }
    });
}

/// The host name of node `i` (0-based).
pub fn node_name(i: usize) -> String {
    format!("n{}", i + 1)
}

/// Node `i`'s configuration (peers: the seed's first nodes).
pub fn node_config(p: &Params, i: usize) -> NodeConfig {
    NodeConfig {
        id: i as u64 + 1,
        listen: format!("0.0.0.0:{PORT}"),
        data_dir: Default::default(),
        peers: (0..p.nodes)
            .map(|j| Peer {
                id: j as u64 + 1,
                addr: format!("{}:{PORT}", node_name(j)),
            })
            .collect(),
        groups: p.groups,
        replicas: 3,
        raft: RaftTuning {
            heartbeat_ms: 50,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            snapshot_every_logs: p.snapshot_every,
            logs_kept_after_snapshot: 3,
            pipeline_depth: p.pipeline_depth,
        },
        sessions: SessionDefaults {
            idle_timeout_ms: p.idle_timeout_ms,
            expire_tick_ms: 500,
        },
        namespaces: BTreeMap::from([(
            "default".to_string(),
            steadfast::config::Namespace {
                max_sessions_per_principal: Some(p.principal_limit),
                ..Default::default()
            },
        )]),
        tls: None,
        redis: Default::default(),
    }
}

/// The final linearizable read of each key.
type FinalReads = Vec<(u64, Option<ReadValue>)>;

/// Shared state between the hosts, the clients and the driver (all on one thread).
#[derive(Clone)]
pub struct World {
    pub trace: Trace,
    pub history: Rc<RefCell<Vec<Op>>>,
    clock: Rc<Cell<u64>>,
    pub rafts: Rc<RefCell<BTreeMap<(usize, u32), Raft>>>,
    final_reads: Rc<RefCell<FinalReads>>,
    /// The first violation a client or checker task found.
    pub verdict: Rc<RefCell<Option<String>>>,
    /// Membership changes ordered by the injector, run by the admin client.
    pub orders: Rc<RefCell<VecDeque<Order>>>,
    /// The admin client has a membership change in flight (its outcome not known yet).
    pub changing: Rc<Cell<bool>>,
    /// Membership changes that committed.
    reconfigured: Rc<Cell<u32>>,
    /// Successful rotations of workload keys and what their new ids held.
    pub rotations: Rc<RefCell<Vec<Rotation>>>,
    /// Successful rotations of workload keys, whether or not the new id could be read.
    pub rotated_away: Rc<RefCell<Vec<RotatedAway>>>,
    /// Logins, invalidations and their probes.
    pub lifecycle: Rc<RefCell<Vec<LifeOp>>>,
    /// Every id the workload logged in as, numbered.
    pub login_ids: Rc<RefCell<BTreeMap<SessionId, SessionNo>>>,
    /// Workload and operator tasks that have stopped issuing operations: the final reads wait
    /// for all of them, so no recorded operation overlaps the final state.
    pub finished: Rc<Cell<u32>>,
    /// Keys to read as soon as possible (after a whole-cluster restart).
    pub urgent: Rc<RefCell<VecDeque<u64>>>,
    /// Writes acknowledged so far, per group.
    pub acks: Rc<RefCell<BTreeMap<u32, u64>>>,
    /// The key of the last acknowledged write, per group.
    pub last_acked: Rc<RefCell<BTreeMap<u32, u64>>>,
    corners: Rc<RefCell<BTreeMap<Corner, u32>>>,
    /// The operator faults' shared state (bulk writes, replacement, backup and restore).
    pub ops: Operator,
    /// RESP-level commands of every scenario (`crate::rworkload`).
    pub resp: Rc<RefCell<Vec<ROp>>>,
    /// Scenarios' key names to read again after healing.
    pub resp_keys: Rc<RefCell<Vec<ScenarioKeys>>>,
    scenarios: Rc<Cell<u32>>,
}

impl World {
    /// The next tick of the history's real-time clock.
    pub fn tick(&self) -> u64 {
        let t = self.clock.get() + 1;
        self.clock.set(t);
        t
    }

    /// A fresh RESP scenario number.
    pub fn next_scenario(&self) -> u32 {
        let n = self.scenarios.get() + 1;
        self.scenarios.set(n);
        n
    }

    /// A workload corner was reached.
    pub fn count(&self, corner: Corner) {
        *self.corners.borrow_mut().entry(corner).or_default() += 1;
    }

    /// A write of `key` in `group` was acknowledged.
    pub fn acked(&self, group: u32, key: u64) {
        *self.acks.borrow_mut().entry(group).or_default() += 1;
        self.last_acked.borrow_mut().insert(group, key);
    }
}

/// A RESP scenario's number and its two key names.
pub type ScenarioKeys = (u32, [Vec<u8>; 2]);

/// Simulated milliseconds since the start.
pub fn now_ms() -> u128 {
    turmoil::sim_elapsed().unwrap_or_default().as_millis()
}

/// Runs one seed.
pub fn run(seed: u64, options: &RunOptions) -> Report {
    align_task_ids();
    steadfast::raft::seed_thread_rng(seed ^ 0x005e_ed0f_7af7);
    let mut rng = SmallRng::seed_from_u64(seed);
    let p = Rc::new(params(seed, &mut rng));
    let fault_end = Duration::from_secs(options.fault_secs);
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS))
        .simulation_duration(fault_end + Duration::from_secs(180))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_micros(500))
        .max_message_latency(Duration::from_millis(20))
        .tcp_capacity(65_536)
        .build();
    let world = World {
        trace: Trace::default(),
        history: Rc::default(),
        clock: Rc::default(),
        rafts: Rc::default(),
        final_reads: Rc::default(),
        finished: Rc::default(),
        verdict: Rc::default(),
        orders: Rc::default(),
        changing: Rc::default(),
        reconfigured: Rc::default(),
        rotations: Rc::default(),
        rotated_away: Rc::default(),
        lifecycle: Rc::default(),
        login_ids: Rc::default(),
        urgent: Rc::default(),
        acks: Rc::default(),
        last_acked: Rc::default(),
        corners: Rc::default(),
        resp: Rc::default(),
        resp_keys: Rc::default(),
        scenarios: Rc::default(),
        ops: Operator::default(),
    };
    *world.ops.members.borrow_mut() = (1..=p.nodes as u64).collect();
    world.trace.event(
        0,
        format!(
            "seed={seed} nodes={} groups={} clients={} keys={} idle={} ms limit={} mix={:?} \
             faults={:?}",
            p.nodes,
            p.groups,
            p.clients,
            p.keys.len(),
            p.idle_timeout_ms,
            p.principal_limit,
            p.mix,
            p.fault_weights
        ),
    );
    let disks: Vec<SimDisk> = (0..p.nodes).map(|_| SimDisk::new(p.sync_latency)).collect();
    let offsets: Vec<Arc<AtomicI64>> = (0..p.nodes).map(|_| Arc::default()).collect();
    for i in 0..p.nodes {
        let spec = HostSpec {
            name: node_name(i),
            index: Some(i),
            config: node_config(&p, i),
            disk: disks[i].clone(),
            offset: offsets[i].clone(),
            bootstrap: true,
            restore: None,
            cluster: "sim",
        };
        add_host(&mut sim, &world, spec);
    }
    for c in 0..p.clients {
        let client_seed = rng.gen();
        sim.client(
            format!("c{c}"),
            workload(world.clone(), p.clone(), c, client_seed, fault_end),
        );
    }
    // The operator's tasks share one host: every host costs the simulation a poll per tick.
    let operator = {
        let (admin, bulk, backup) = (
            admin(world.clone(), fault_end),
            operator::bulk_writer(world.clone(), p.clone(), rng.gen(), fault_end),
            operator::backup_taker(world.clone(), p.clone(), fault_end),
        );
        let world = world.clone();
        async move {
            let (a, b, c) = tokio::join!(admin, bulk, backup);
            world.finished.set(world.finished.get() + 1);
            a.and(b).and(c)
        }
    };
    sim.client("admin", operator);
    sim.client("verifier", verify(world.clone(), p.clone(), fault_end));
    let mut injector = Injector::new(seed, disks, offsets);
    let failure = drive(
        &mut sim,
        &world,
        &p,
        &mut injector,
        options.faults.then_some(fault_end),
    );
    let violation = failure
        .or_else(|| world.verdict.borrow().clone())
        .or_else(|| check_history(&world, &p));
    for (class, n) in [
        (FaultClass::MembershipChange, world.reconfigured.get()),
        (FaultClass::ReplaceNode, world.ops.replaced.get()),
        (FaultClass::BackupRestore, world.ops.restored.get()),
    ] {
        if n > 0 {
            injector.counts().insert(class, n);
        }
    }
    count_corners(&world);
    let trace = world.trace.lines();
    let ops = world.history.borrow().len();
    let corners = world.corners.borrow().clone();
    Report {
        seed,
        trace_hash: world.trace.hash(),
        nodes: p.nodes,
        ops,
        faults: std::mem::take(injector.counts()),
        corners,
        violation,
        trace,
    }
}

/// A node host to add: a live node (`index`: its slot in the driver's tables) or one of a
/// restored cluster (`restore`: the backup its empty store gets first, as `steadfast restore`).
pub struct HostSpec {
    pub name: String,
    pub index: Option<usize>,
    pub config: NodeConfig,
    pub disk: SimDisk,
    pub offset: Arc<AtomicI64>,
    /// Bootstrap on the first start.
    pub bootstrap: bool,
    pub restore: Option<Rc<Backup>>,
    pub cluster: &'static str,
}

/// Adds a node host (at the start or mid-run); its node starts on every boot.
pub fn add_host(sim: &mut turmoil::Sim<'_>, world: &World, spec: HostSpec) {
    let booted = Rc::new(Cell::new(false));
    let world = world.clone();
    let name = spec.name.clone();
    sim.host(name, move || {
        let first = !booted.replace(true);
        let bootstrap = first && spec.bootstrap;
        let restore = spec.restore.clone().filter(|_| first);
        let config = spec.config.clone();
        let (disk, offset, world) = (spec.disk.clone(), spec.offset.clone(), world.clone());
        let (name, index, cluster) = (spec.name.clone(), spec.index, spec.cluster);
        async move {
            if let Some(backup) = restore {
                let (id, placement) = (config.id, |g| config.placement(g));
                steadfast::backup::restore_into(
                    &backup,
                    Arc::new(disk.clone()),
                    id,
                    placement,
                    &config.addresses(),
                )
                .await
                .map_err(|e| format!("{name}: restore failed: {e}"))?;
            }
            let groups = config.groups;
            let listener = turmoil::net::TcpListener::bind(format!("0.0.0.0:{PORT}")).await?;
            let node = Node::start(NodeOptions {
                config,
                backend: Arc::new(disk),
                clock: Arc::new(SimClock {
                    epoch_ms: EPOCH_MS,
                    offset_ms: offset,
                }),
                connector: Arc::new(SimConnector),
                listener: Box::new(SimListener(listener)),
                bootstrap,
                cluster_id: steadfast::identity::ClusterId::new(cluster).expect("a valid id"),
            })
            .await
            .map_err(|e| format!("{name} failed to start: {e}"))?;
            world
                .trace
                .event(now_ms(), format!("{name} started (bootstrap={bootstrap})"));
            for g in (0..groups).filter(|_| index.is_some()) {
                if let (Some(raft), Some(i)) = (node.raft(GroupId(g)), index) {
                    world.rafts.borrow_mut().insert((i, g), raft);
                }
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    });
}

/// Runs the membership changes the injector orders, through the public client API, until the
/// faults end. A change may fail or time out under faults; only committed ones are counted, and
/// only a node replacement is asked again until it commits.
async fn admin(world: World, until: Duration) -> turmoil::Result {
    let mut config = ClientConfig::new(vec!["n1:7000".into(), "n2:7000".into(), "n3:7000".into()]);
    config.client_id = Some(ClientId(20_000));
    config.request_timeout = Duration::from_secs(15);
    config.attempt_timeout = Duration::from_secs(5);
    let client = Client::connect_with(config, Arc::new(SimConnector)).await?;
    while turmoil::sim_elapsed().unwrap_or_default() < until {
        let order = world.orders.borrow_mut().pop_front();
        let Some(order) = order else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (group, voters) = match &order {
            Order::Voters(group, voters) => (*group, voters.clone()),
            Order::Replace { group, old, new } => {
                let mut voters = current_voters(&world, *group);
                voters.retain(|v| v != old);
                if !voters.contains(new) {
                    voters.push(*new);
                }
                (*group, voters)
            }
        };
        // Every address given: a replacement's new node is not in the others' configuration.
        let wanted: Vec<(u64, String)> = voters
            .iter()
            .map(|v| (*v, format!("{}:{PORT}", node_name(*v as usize - 1))))
            .collect();
        world.changing.set(true);
        let outcome = client.change_membership(GroupId(group), &wanted).await;
        world.changing.set(false);
        let line = match (&outcome, &order) {
            (Ok(m), Order::Voters(..)) => {
                world.reconfigured.set(world.reconfigured.get() + 1);
                format!("g{group} voters now {:?} at {:?}", m.voters, m.log_index)
            }
            (Ok(m), Order::Replace { .. }) => {
                let left = world.ops.replacing.get().saturating_sub(1);
                world.ops.replacing.set(left);
                if left == 0 {
                    world.ops.replaced.set(world.ops.replaced.get() + 1);
                }
                format!(
                    "g{group} voters now {:?} at {:?} (replacement)",
                    m.voters, m.log_index
                )
            }
            (Err(e), Order::Replace { .. }) => {
                world.orders.borrow_mut().push_back(order.clone());
                tokio::time::sleep(Duration::from_millis(300)).await;
                format!("g{group} voters {voters:?} not changed: {e} (asking again)")
            }
            (Err(e), Order::Voters(..)) => format!("g{group} voters {voters:?} not changed: {e}"),
        };
        world.trace.event(now_ms(), format!("membership {line}"));
    }
    Ok(())
}

/// After healing: liveness probes, final reads, replica digests.
async fn verify(world: World, p: Rc<Params>, heal_at: Duration) -> turmoil::Result {
    tokio::time::sleep(heal_at + Duration::from_secs(1)).await;
    // Operations still in flight at the heal would otherwise overlap the final reads.
    let writers = p.clients + 1;
    while world.finished.get() < writers
        && turmoil::sim_elapsed().unwrap_or_default() < heal_at + LIVENESS_BOUND
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let live: Vec<String> = world
        .ops
        .members
        .borrow()
        .iter()
        .map(|id| format!("{}:{PORT}", node_name(*id as usize - 1)))
        .collect();
    let client = operator::connect_to(10_000, live.clone()).await?;
    let started = turmoil::sim_elapsed().unwrap_or_default();
    let mut rng = SmallRng::seed_from_u64(0x11fe);
    for g in 0..p.groups {
        let probe = loop {
            let id = SessionId::from_bytes(rng.gen());
            if id.group(p.groups).0 == g {
                break id;
            }
        };
        loop {
            let elapsed = turmoil::sim_elapsed().unwrap_or_default() - started;
            if elapsed > LIVENESS_BOUND {
                dump_rafts(&world);
                *world.verdict.borrow_mut() = Some(format!("liveness: group {g} did not commit a write within {LIVENESS_BOUND:?} after healing"));
                return Ok(());
            }
            let outcome = client
                .create_with_id(probe, Attributes::new(), CreateOptions::default())
                .await;
            if let Err(e) = &outcome {
                world
                    .trace
                    .event(now_ms(), format!("liveness probe in g{g} failed: {e}"));
            }
            if outcome.is_ok() {
                world
                    .trace
                    .event(now_ms(), format!("liveness probe committed in g{g}"));
                break;
            }
        }
    }
    for (key, id) in p.keys.iter().enumerate() {
        let read = loop {
            if let Ok(r) = client.read(*id).await {
                break r;
            }
            if turmoil::sim_elapsed().unwrap_or_default() - started > LIVENESS_BOUND * 2 {
                *world.verdict.borrow_mut() = Some(format!(
                    "liveness: no final read of key {key} within {:?} after healing",
                    LIVENESS_BOUND * 2
                ));
                return Ok(());
            }
        };
        let found = read.session.map(|s| ReadValue {
            version: s.version,
            value: s
                .attributes
                .get("v")
                .and_then(|v| v.as_slice().try_into().ok())
                .map_or(0, u64::from_be_bytes),
            expires_at_ms: s.expires_at_ms,
        });
        world
            .trace
            .event(now_ms(), format!("final key={key} {found:?}"));
        world.final_reads.borrow_mut().push((key as u64, found));
    }
    if !final_resp_reads(&world, &client, p.groups, started).await {
        return Ok(());
    }
    for principal in PRINCIPALS {
        let live = match client.sessions_of(principal).await {
            Ok(live) => live,
            Err(e) => {
                *world.verdict.borrow_mut() = Some(format!(
                    "liveness: sessions_of({principal}) failed after healing: {e}"
                ));
                return Ok(());
            }
        };
        {
            world.trace.event(
                now_ms(),
                format!("principal {principal} has {} sessions", live.len()),
            );
            if live.len() > p.principal_limit as usize {
                *world.verdict.borrow_mut() = Some(format!(
                    "principal limit: {principal} has {} sessions, limit {}",
                    live.len(),
                    p.principal_limit
                ));
            }
        }
    }
    if let Some(v) = check_events(&world, &p, &client).await {
        *world.verdict.borrow_mut() = Some(v);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut by_index: BTreeMap<(u32, Option<u64>), BTreeSet<u64>> = BTreeMap::new();
    for (addr, status) in client.status().await {
        let status = match status {
            Ok(status) => status,
            // A node replaced under a new id is gone for good.
            Err(_) if !live.contains(&addr) => continue,
            Err(e) => return Err(format!("{addr}: {e}").into()),
        };
        for s in status {
            world.trace.event(
                now_ms(),
                format!(
                    "status g{} n{} {} applied={:?} digest={:x}",
                    s.group.0, s.node, s.role, s.applied_index, s.digest
                ),
            );
            by_index
                .entry((s.group.0, s.applied_index))
                .or_default()
                .insert(s.digest);
        }
    }
    if let Some(((g, index), digests)) = by_index.iter().find(|(_, d)| d.len() > 1) {
        *world.verdict.borrow_mut() = Some(format!(
            "replica divergence: group {g} at applied index {index:?} has digests {digests:x?}"
        ));
    }
    Ok(())
}

/// Every replica's Raft view, into the trace (for diagnosing a liveness failure).
fn dump_rafts(world: &World) {
    for ((node, group), raft) in world.rafts.borrow().iter() {
        let m = raft.metrics().borrow().clone();
        world.trace.event(
            now_ms(),
            format!(
                "raft g{group} {}: {:?} term={} vote={} last_log={:?} applied={:?} leader={:?} \
                 membership={:?}",
                node_name(*node),
                m.state,
                m.current_term,
                m.vote,
                m.last_log_index,
                m.last_applied.map(|l| l.index),
                m.current_leader,
                m.membership_config.membership().get_joint_config(),
            ),
        );
    }
}

/// Every group's event stream is in log order, and every acknowledged create is in it (unless
/// compacted away: a create stamped later than the oldest retained event comes after it, since
/// the replicated clock never decreases along the log; versions are not compared with event
/// indexes, which need not be equal).
async fn check_events(world: &World, p: &Params, client: &Client) -> Option<String> {
    for g in 0..p.groups {
        let mut next = 0;
        let mut last = 0;
        let mut created = BTreeSet::new();
        let mut first_seen = None;
        loop {
            let (events, resume) = match client.watch_once(GroupId(g), next).await {
                Ok(batch) => batch,
                Err(Error::Compacted { first_available }) => {
                    next = first_available;
                    continue;
                }
                Err(e) => {
                    return Some(format!("liveness: watching g{g} failed after healing: {e}"))
                }
            };
            if events.is_empty() {
                break;
            }
            for e in &events {
                if e.index < last {
                    return Some(format!(
                        "events out of order in g{g}: {} after {last}",
                        e.index
                    ));
                }
                last = e.index;
                first_seen.get_or_insert(e.at_ms);
                if let steadfast::state::EventKind::Created(id) = e.kind {
                    created.insert(id);
                }
            }
            next = resume;
        }
        let first = first_seen.unwrap_or(u64::MAX);
        for op in world.history.borrow().iter() {
            if let (
                OpKind::Create { .. },
                Outcome::Ok {
                    version,
                    server_time_ms,
                },
            ) = (&op.kind, &op.outcome)
            {
                let id = p.keys[op.key as usize];
                if op.group == g && *server_time_ms > first && !created.contains(&id) {
                    return Some(format!(
                        "event stream of g{g} lacks the acknowledged create of key {} at {version}",
                        op.key
                    ));
                }
            }
        }
        world.trace.event(
            now_ms(),
            format!("events g{g}: {} creates, last index {last}", created.len()),
        );
    }
    None
}

/// Reads every RESP rename and SET-after-DEL scenario's keys once more, after healing and after
/// every workload task stopped (a late apply of an unknown step shows here); false (with a
/// verdict) if a read cannot be made.
async fn final_resp_reads(world: &World, client: &Client, groups: u32, started: Duration) -> bool {
    let keys = world.resp_keys.borrow().clone();
    for (scenario, names) in keys {
        for (slot, name) in names.iter().enumerate() {
            let invoke = world.tick();
            let result = loop {
                let r = crate::rworkload::get(client, name, groups).await;
                if r != RResult::Unknown {
                    break r;
                }
                if turmoil::sim_elapsed().unwrap_or_default() - started > LIVENESS_BOUND * 2 {
                    *world.verdict.borrow_mut() = Some(format!(
                        "liveness: no final read of RESP scenario {scenario} within {:?}",
                        LIVENESS_BOUND * 2
                    ));
                    return false;
                }
            };
            let cmd = RCmd::Get { key: slot as u8 };
            world
                .trace
                .event(now_ms(), format!("final s{scenario} {cmd:?} -> {result:?}"));
            world.resp.borrow_mut().push(ROp {
                scenario,
                invoke,
                complete: Some(world.tick()),
                cmd,
                result,
            });
        }
    }
    true
}

fn check_history(world: &World, p: &Params) -> Option<String> {
    let history = world.history.borrow();
    let finals = world.final_reads.borrow();
    let options = CheckOptions {
        sessions_may_expire: p.may_expire,
    };
    let rotations = world.rotations.borrow();
    let linearizable = checker::check_final_reads_with(&history, &finals, options)
        .and_then(|()| {
            rotations
                .iter()
                .try_for_each(|r| checker::check_rotation(&history, r, options))
        })
        .map_err(|v| format!("checker: {v}"));
    let life = LifeOptions {
        limit: p.principal_limit,
        refuse: true,
        idle_timeout_ms: p.idle_timeout_ms,
        no_expiry: !p.may_expire,
    };
    let restored =
        operator::check_restored_versions(&history, &world.ops.restored_versions.borrow());
    let promises = lifecycle::check_rotated_ids(&history, &world.rotated_away.borrow())
        .and_then(|()| lifecycle::check_access(&history, p.idle_timeout_ms))
        .and_then(|()| lifecycle::check_principals(&world.lifecycle.borrow(), life))
        .map_err(|v| format!("lifecycle: {v}"));
    let redis =
        rkeys::check(&world.resp.borrow(), p.delete_grace_ms).map_err(|v| format!("redis: {v}"));
    linearizable.and(promises).and(restored).and(redis).err()
}

/// Corners the history shows were reached (the workload counts the others as they happen).
fn count_corners(world: &World) {
    let history = world.history.borrow();
    for r in world.rotated_away.borrow().iter() {
        if history
            .iter()
            .any(|o| o.key == r.key && o.invoke > r.complete)
        {
            world.count(Corner::OpOnRotatedId);
        }
    }
    let lifecycle = world.lifecycle.borrow();
    let logins: Vec<(u32, u64, u64)> = lifecycle
        .iter()
        .filter_map(|o| match o.kind {
            LifeKind::Login { principal, .. } => {
                Some((principal, o.invoke, o.complete.unwrap_or(u64::MAX)))
            }
            _ => None,
        })
        .collect();
    for (i, a) in logins.iter().enumerate() {
        if logins[i + 1..]
            .iter()
            .any(|b| a.0 == b.0 && a.1 < b.2 && b.1 < a.2)
        {
            world.count(Corner::LoginsRacing);
        }
    }
}
