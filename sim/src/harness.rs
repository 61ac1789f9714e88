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
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use steadfast::client::{ClientConfig, CreateOptions, Update};
use steadfast::command::Attributes;
use steadfast::config::{NodeConfig, Peer, RaftTuning, SessionDefaults};
use steadfast::node::{Node, NodeOptions};
use steadfast::raft::backend::{MemBackend, MetaKey};
use steadfast::raft::typ::Raft;
use steadfast::{Client, ClientId, Error, GroupId, SessionId};

use crate::checker::{self, CheckOptions, Op, OpKind, Outcome, ReadValue, Rotation};
use crate::faults::FaultClass;
use crate::net::{SimClock, SimConnector, SimListener};
use crate::trace::Trace;

const PORT: u16 = 7000;
const EPOCH_MS: u64 = 1_700_000_000_000;
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
    /// `None` if every check passed.
    pub violation: Option<String>,
    /// The event log.
    pub trace: Vec<String>,
}

/// Fixed per-seed parameters.
struct Params {
    nodes: usize,
    groups: u32,
    clients: u32,
    keys: Vec<SessionId>,
    idle_timeout_ms: u64,
    may_expire: bool,
}

fn params(seed: u64, rng: &mut SmallRng) -> Params {
    let nodes = if rng.gen_bool(0.3) { 5 } else { 3 };
    let may_expire = rng.gen_bool(0.3);
    let key_count = rng.gen_range(6..=12);
    let keys = (0..key_count)
        .map(|k| {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&seed.to_be_bytes());
            bytes[8..].copy_from_slice(&(k as u64).to_be_bytes());
            SessionId::from_bytes(bytes)
        })
        .collect();
    Params {
        nodes,
        groups: rng.gen_range(2..=4),
        clients: rng.gen_range(3..=5),
        keys,
        idle_timeout_ms: if may_expire {
            rng.gen_range(2_000..6_000)
        } else {
            3_600_000
        },
        may_expire,
    }
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

fn node_name(i: usize) -> String {
    format!("n{}", i + 1)
}

fn node_config(p: &Params, i: usize, snapshot_every: u64) -> NodeConfig {
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
            snapshot_every_logs: snapshot_every,
            logs_kept_after_snapshot: 3,
        },
        sessions: SessionDefaults {
            idle_timeout_ms: p.idle_timeout_ms,
            expire_tick_ms: 500,
        },
        namespaces: BTreeMap::from([(
            "default".to_string(),
            steadfast::config::Namespace {
                max_sessions_per_principal: Some(PRINCIPAL_LIMIT),
                ..Default::default()
            },
        )]),
        tls: None,
        redis: Default::default(),
    }
}

/// The final linearizable read of each key.
type FinalReads = Vec<(u64, Option<ReadValue>)>;

/// A fault in force: its class, when it heals, and the links it cut.
type ActiveFault = (FaultClass, Duration, Vec<(String, String)>);

/// A membership change to run: the group and its new voters.
type MembershipOrder = (u32, Vec<u64>);

/// Shared state between the hosts, the clients and the driver (all on one thread).
#[derive(Clone)]
struct World {
    trace: Trace,
    history: Rc<RefCell<Vec<Op>>>,
    clock: Rc<Cell<u64>>,
    rafts: Rc<RefCell<BTreeMap<(usize, u32), Raft>>>,
    final_reads: Rc<RefCell<FinalReads>>,
    verdict: Rc<RefCell<Option<String>>>,
    /// Membership changes ordered by the injector: (group, new voters), run by the admin client.
    orders: Rc<RefCell<VecDeque<MembershipOrder>>>,
    /// Membership changes that committed.
    reconfigured: Rc<Cell<u32>>,
    /// Successful rotations of workload keys and what their new ids held.
    rotations: Rc<RefCell<Vec<Rotation>>>,
}

impl World {
    fn tick(&self) -> u64 {
        let t = self.clock.get() + 1;
        self.clock.set(t);
        t
    }
}

fn now_ms() -> u128 {
    turmoil::sim_elapsed().unwrap_or_default().as_millis()
}

/// Runs one seed.
pub fn run(seed: u64, options: &RunOptions) -> Report {
    align_task_ids();
    steadfast::raft::seed_thread_rng(seed ^ 0x005e_ed0f_7af7);
    let mut rng = SmallRng::seed_from_u64(seed);
    let p = Rc::new(params(seed, &mut rng));
    let snapshot_every = rng.gen_range(10..60);
    let sync_latency = Duration::from_micros(rng.gen_range(200..3000));
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
        verdict: Rc::default(),
        orders: Rc::default(),
        reconfigured: Rc::default(),
        rotations: Rc::default(),
    };
    world.trace.event(
        0,
        format!(
            "seed={seed} nodes={} groups={} clients={} keys={} expire={}",
            p.nodes,
            p.groups,
            p.clients,
            p.keys.len(),
            p.may_expire
        ),
    );
    let disks: Vec<MemBackend> = (0..p.nodes)
        .map(|_| MemBackend::with_sync_latency(sync_latency))
        .collect();
    let offsets: Vec<Arc<AtomicI64>> = (0..p.nodes).map(|_| Arc::default()).collect();
    for i in 0..p.nodes {
        add_host(
            &mut sim,
            &world,
            &p,
            i,
            snapshot_every,
            disks[i].clone(),
            offsets[i].clone(),
        );
    }
    for c in 0..p.clients {
        let client_seed = rng.gen();
        sim.client(
            format!("c{c}"),
            workload(world.clone(), p.clone(), c, client_seed, fault_end),
        );
    }
    sim.client("admin", admin(world.clone(), fault_end));
    sim.client("verifier", verify(world.clone(), p.clone(), fault_end));
    let mut injector = Injector {
        rng: SmallRng::seed_from_u64(seed ^ 0xfa17),
        disks,
        offsets,
        counts: BTreeMap::new(),
        down: BTreeSet::new(),
        active: None,
        next_at: Duration::from_secs(2),
        vote_trap: false,
        reboot: None,
        trap_partner: None,
        leaders: BTreeMap::new(),
    };
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
    let reconfigured = world.reconfigured.get();
    if reconfigured > 0 {
        injector
            .counts
            .insert(FaultClass::MembershipChange, reconfigured);
    }
    let trace = world.trace.lines();
    let ops = world.history.borrow().len();
    Report {
        seed,
        trace_hash: world.trace.hash(),
        nodes: p.nodes,
        ops,
        faults: injector.counts,
        violation,
        trace,
    }
}

fn add_host(
    sim: &mut turmoil::Sim<'_>,
    world: &World,
    p: &Rc<Params>,
    i: usize,
    snapshot_every: u64,
    disk: MemBackend,
    offset: Arc<AtomicI64>,
) {
    let booted = Rc::new(Cell::new(false));
    let (world, p) = (world.clone(), p.clone());
    sim.host(node_name(i), move || {
        let bootstrap = !booted.replace(true);
        let config = node_config(&p, i, snapshot_every);
        let (disk, offset, world) = (disk.clone(), offset.clone(), world.clone());
        let groups = p.groups;
        async move {
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
            })
            .await
            .map_err(|e| format!("node {} failed to start: {e}", i + 1))?;
            world.trace.event(
                now_ms(),
                format!("node {} started (bootstrap={bootstrap})", i + 1),
            );
            for g in 0..groups {
                if let Some(raft) = node.raft(GroupId(g)) {
                    world.rafts.borrow_mut().insert((i, g), raft);
                }
            }
            std::future::pending::<()>().await;
            Ok(())
        }
    });
}

fn value_of(attributes: &Attributes) -> u64 {
    attributes
        .get("v")
        .and_then(|v| v.as_slice().try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

async fn connect(client: u32) -> Result<Client, Box<dyn std::error::Error>> {
    let mut config = ClientConfig::new(vec!["n1:7000".into(), "n2:7000".into(), "n3:7000".into()]);
    config.client_id = Some(ClientId(u64::from(client) + 1));
    config.request_timeout = Duration::from_secs(3);
    config.attempt_timeout = Duration::from_millis(700);
    Ok(Client::connect_with(config, Arc::new(SimConnector)).await?)
}

async fn workload(
    world: World,
    p: Rc<Params>,
    me: u32,
    seed: u64,
    until: Duration,
) -> turmoil::Result {
    let mut rng = SmallRng::seed_from_u64(seed);
    let client = connect(me).await?;
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();
    while turmoil::sim_elapsed().unwrap_or_default() < until {
        if rng.gen_range(0..100) < 4 {
            lifecycle_op(&world, &p, &client, &mut rng, me).await;
            continue;
        }
        let key = rng.gen_range(0..p.keys.len()) as u64;
        let id = p.keys[key as usize];
        let expected = seen.get(&key).copied().filter(|_| rng.gen_bool(0.5));
        let value = world.tick();
        let kind = match rng.gen_range(0..100) {
            0..=14 => OpKind::Create { value },
            15..=49 => OpKind::Get,
            50..=79 => OpKind::Put { value, expected },
            80..=94 => OpKind::Touch,
            95..=97 => OpKind::Delete { expected },
            // A rotation: for the checker the old key dies at the rotate's log index, so any
            // later read of a rotated-away id is a resurrection.
            _ => OpKind::Delete {
                expected: Some(u64::MAX),
            },
        };
        let invoke = world.tick();
        let outcome = if kind
            == (OpKind::Delete {
                expected: Some(u64::MAX),
            }) {
            let new = id_in(&mut rng, id.group(p.groups), p.groups);
            let outcome = match client.rotate_into(id, new, None).await {
                Ok((_, w)) => Outcome::Ok {
                    version: w.version,
                    server_time_ms: w.server_time_ms,
                },
                Err(Error::NotFound) => Outcome::NotFound,
                Err(_) => Outcome::Unknown,
            };
            if let Outcome::Ok { version, .. } = outcome {
                // Nobody else knows the new id: reading it shows exactly what the rotation moved.
                if let Ok(r) = client.read(new).await {
                    world.rotations.borrow_mut().push(Rotation {
                        op: invoke,
                        key,
                        version,
                        carried: r.session.map(|s| ReadValue {
                            version: s.version,
                            value: value_of(&s.attributes),
                            expires_at_ms: s.expires_at_ms,
                        }),
                    });
                }
            }
            world.trace.event(
                now_ms(),
                format!("c{me} key={key} rotate -> {new} {outcome:?}"),
            );
            outcome
        } else {
            execute(&client, id, &kind, &p).await
        };
        let kind = match kind {
            OpKind::Delete {
                expected: Some(u64::MAX),
            } => OpKind::Delete { expected: None },
            k => k,
        };
        if let Outcome::Ok { version, .. } = &outcome {
            seen.insert(key, *version);
        }
        if let Outcome::Read { found: Some(r), .. } = &outcome {
            seen.insert(key, r.version);
        }
        let complete = (outcome != Outcome::Unknown).then(|| world.tick());
        world
            .trace
            .event(now_ms(), format!("c{me} key={key} {kind:?} -> {outcome:?}"));
        let op = Op {
            id: invoke,
            client: me,
            group: id.group(p.groups).0,
            key,
            kind,
            invoke,
            complete,
            outcome,
        };
        world.history.borrow_mut().push(op);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..80))).await;
    }
    Ok(())
}

/// A seeded id in `group` (the simulation never draws from the OS).
fn id_in(rng: &mut SmallRng, group: GroupId, groups: u32) -> SessionId {
    loop {
        let id = SessionId::from_bytes(rng.gen());
        if id.group(groups) == group {
            return id;
        }
    }
}

/// Principals the workload logs in as; the namespace allows each `PRINCIPAL_LIMIT` sessions.
const PRINCIPALS: [&str; 2] = ["ann", "bob"];
const PRINCIPAL_LIMIT: u32 = 2;

/// Logins (rotate + principal, under the per-principal limit) and "log out everywhere".
async fn lifecycle_op(world: &World, p: &Params, client: &Client, rng: &mut SmallRng, me: u32) {
    let principal = PRINCIPALS[rng.gen_range(0..PRINCIPALS.len())];
    if rng.gen_bool(0.2) {
        let r = client.invalidate_principal(principal).await;
        world
            .trace
            .event(now_ms(), format!("c{me} invalidate {principal} -> {r:?}"));
        return;
    }
    let anon = SessionId::from_bytes(rng.gen());
    let options = CreateOptions {
        idle_timeout: Some(Duration::from_millis(p.idle_timeout_ms)),
        ..CreateOptions::default()
    };
    if client
        .create_with_id(anon, Attributes::new(), options)
        .await
        .is_err()
    {
        return;
    }
    let home = steadfast::id::principal_group(principal, p.groups);
    let new = id_in(rng, home, p.groups);
    let r = client
        .rotate_into(anon, new, Some(principal.to_string()))
        .await;
    world.trace.event(
        now_ms(),
        format!(
            "c{me} login {principal} {anon} -> {new}: {:?}",
            r.as_ref().map(|(_, w)| w.version)
        ),
    );
}

async fn execute(client: &Client, id: SessionId, kind: &OpKind, p: &Params) -> Outcome {
    let ok = |w: steadfast::client::Written| Outcome::Ok {
        version: w.version,
        server_time_ms: w.server_time_ms,
    };
    let fail = |e: Error| match e {
        Error::Exists => Outcome::Exists,
        Error::NotFound => Outcome::NotFound,
        Error::Conflict { current_version } => Outcome::Conflict {
            current: current_version,
        },
        _ => Outcome::Unknown,
    };
    match kind {
        OpKind::Create { value } => {
            let attributes = Attributes::from([("v".to_string(), value.to_be_bytes().to_vec())]);
            let options = CreateOptions {
                idle_timeout: Some(Duration::from_millis(p.idle_timeout_ms)),
                ..CreateOptions::default()
            };
            client
                .create_with_id(id, attributes, options)
                .await
                .map_or_else(fail, ok)
        }
        OpKind::Get => match client.read(id).await {
            Ok(r) => Outcome::Read {
                found: r.session.map(|s| ReadValue {
                    version: s.version,
                    value: value_of(&s.attributes),
                    expires_at_ms: s.expires_at_ms,
                }),
                server_time_ms: r.server_time_ms,
            },
            Err(_) => Outcome::Unknown,
        },
        OpKind::Put { value, expected } => {
            let update = Update {
                set: Attributes::from([("v".to_string(), value.to_be_bytes().to_vec())]),
                expected_version: *expected,
                ..Default::default()
            };
            client.update(id, update).await.map_or_else(fail, ok)
        }
        OpKind::Touch => client.touch(id).await.map_or_else(fail, ok),
        OpKind::Delete { expected } => client.delete(id, *expected).await.map_or_else(fail, ok),
    }
}

/// After healing: liveness probes, final reads, replica digests.
/// Runs the membership changes the injector orders, through the public client API, until the
/// faults end. A change may fail or time out under faults; only committed ones are counted.
async fn admin(world: World, until: Duration) -> turmoil::Result {
    let mut config = ClientConfig::new(vec!["n1:7000".into(), "n2:7000".into(), "n3:7000".into()]);
    config.client_id = Some(ClientId(20_000));
    config.request_timeout = Duration::from_secs(15);
    config.attempt_timeout = Duration::from_secs(5);
    let client = Client::connect_with(config, Arc::new(SimConnector)).await?;
    while turmoil::sim_elapsed().unwrap_or_default() < until {
        let order = world.orders.borrow_mut().pop_front();
        let Some((group, voters)) = order else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let wanted: Vec<(u64, String)> = voters.iter().map(|v| (*v, String::new())).collect();
        let outcome = client.change_membership(GroupId(group), &wanted).await;
        let line = match &outcome {
            Ok(m) => {
                world.reconfigured.set(world.reconfigured.get() + 1);
                format!("g{group} voters now {:?} at {:?}", m.voters, m.log_index)
            }
            Err(e) => format!("g{group} voters {voters:?} not changed: {e}"),
        };
        world.trace.event(now_ms(), format!("membership {line}"));
    }
    Ok(())
}

async fn verify(world: World, p: Rc<Params>, heal_at: Duration) -> turmoil::Result {
    tokio::time::sleep(heal_at + Duration::from_secs(1)).await;
    let client = connect(10_000).await?;
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
            if client
                .create_with_id(probe, Attributes::new(), CreateOptions::default())
                .await
                .is_ok()
            {
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
            value: value_of(&s.attributes),
            expires_at_ms: s.expires_at_ms,
        });
        world
            .trace
            .event(now_ms(), format!("final key={key} {found:?}"));
        world.final_reads.borrow_mut().push((key as u64, found));
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
            if live.len() > PRINCIPAL_LIMIT as usize {
                *world.verdict.borrow_mut() = Some(format!(
                    "principal limit: {principal} has {} sessions, limit {PRINCIPAL_LIMIT}",
                    live.len()
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
        for s in status.map_err(|e| format!("{addr}: {e}"))? {
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
/// compacted away).
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
                first_seen.get_or_insert(e.index);
                if let steadfast::state::EventKind::Created(id) = e.kind {
                    created.insert(id);
                }
            }
            next = resume;
        }
        let first = first_seen.unwrap_or(u64::MAX);
        for op in world.history.borrow().iter() {
            if let (OpKind::Create { .. }, Outcome::Ok { version, .. }) = (&op.kind, &op.outcome) {
                let id = p.keys[op.key as usize];
                if op.group == g && *version >= first && !created.contains(&id) {
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

fn check_history(world: &World, p: &Params) -> Option<String> {
    let history = world.history.borrow();
    let finals = world.final_reads.borrow();
    let options = CheckOptions {
        sessions_may_expire: p.may_expire,
    };
    let rotations = world.rotations.borrow();
    checker::check_final_reads_with(&history, &finals, options)
        .and_then(|()| {
            rotations
                .iter()
                .try_for_each(|r| checker::check_rotation(&history, r, options))
        })
        .err()
        .map(|v| format!("checker: {v}"))
}

struct Injector {
    rng: SmallRng,
    disks: Vec<MemBackend>,
    offsets: Vec<Arc<AtomicI64>>,
    counts: BTreeMap<FaultClass, u32>,
    down: BTreeSet<usize>,
    active: Option<ActiveFault>,
    next_at: Duration,
    /// Kill the next node seen with an unsynced vote.
    vote_trap: bool,
    /// A trapped node to restart, and when.
    reboot: Option<(usize, Duration)>,
    /// The isolated old leader of a `CrashAfterVote` fault: the only node the trapped voter
    /// may talk to after its restart, so it campaigns again in the term whose vote it lost.
    trap_partner: Option<usize>,
    /// Election safety: the leader seen for each (group, term).
    leaders: BTreeMap<(u32, u64), usize>,
}

/// Steps the simulation, injecting and healing faults; `Some(reason)` if the run broke.
fn drive(
    sim: &mut turmoil::Sim<'_>,
    world: &World,
    p: &Params,
    inj: &mut Injector,
    fault_end: Option<Duration>,
) -> Option<String> {
    let mut healed = fault_end.is_none();
    loop {
        match sim.step() {
            Ok(true) => return None,
            Ok(false) => {}
            Err(e) => return Some(format!("simulation error: {e}")),
        }
        let now = sim.elapsed();
        if let Some(v) = election_safety(world, inj, now) {
            return Some(v);
        }
        spring_vote_trap(sim, world, inj, now);
        let Some(end) = fault_end else { continue };
        if !healed && now >= end {
            heal(sim, world, inj, p);
            world.trace.event(now.as_millis(), "healed everything");
            healed = true;
        }
        if healed {
            continue;
        }
        if let Some((class, until, _)) = &inj.active {
            if now >= *until {
                let class = *class;
                heal(sim, world, inj, p);
                world
                    .trace
                    .event(now.as_millis(), format!("healed {class}"));
                inj.next_at = now + Duration::from_millis(inj.rng.gen_range(300..2500));
            }
        } else if now >= inj.next_at {
            inject(sim, world, inj, p, now);
        }
    }
}

/// Raft's election safety: at most one leader per term in each group.
fn election_safety(world: &World, inj: &mut Injector, now: Duration) -> Option<String> {
    for ((node, group), raft) in world.rafts.borrow().iter() {
        let m = raft.metrics();
        let m = m.borrow();
        if !m.state.is_leader() {
            continue;
        }
        let seen = *inj
            .leaders
            .entry((*group, m.current_term))
            .or_insert_with(|| {
                world.trace.event(
                    now.as_millis(),
                    format!(
                        "leader g{group} term {} = {}",
                        m.current_term,
                        node_name(*node)
                    ),
                );
                *node
            });
        if seen != *node {
            let votes: Vec<String> = world
                .rafts
                .borrow()
                .iter()
                .filter(|((_, g), _)| g == group)
                .map(|((n, _), r)| {
                    let m = r.metrics();
                    let m = m.borrow();
                    format!(
                        "{}: {:?} vote={} last_log={:?}",
                        node_name(*n),
                        m.state,
                        m.vote,
                        m.last_log_index
                    )
                })
                .collect();
            return Some(format!(
                "election safety: group {group} has two leaders in term {}: {} and {} ({})",
                m.current_term,
                node_name(seen),
                node_name(*node),
                votes.join("; ")
            ));
        }
    }
    None
}

fn spring_vote_trap(sim: &mut turmoil::Sim<'_>, world: &World, inj: &mut Injector, now: Duration) {
    if let Some((n, at)) = inj.reboot {
        if now >= at {
            inj.reboot = None;
            inj.down.remove(&n);
            world.rafts.borrow_mut().retain(|(node, _), _| *node != n);
            sim.bounce(node_name(n));
            // It comes back knowing only its last durable vote; let it reach nobody but the old
            // leader, so a forgotten vote shows up as a second leader in the same term.
            if let Some(partner) = inj.trap_partner {
                for m in (0..inj.disks.len()).filter(|m| *m != n && *m != partner) {
                    sim.partition(node_name(n), node_name(m));
                }
                sim.repair(node_name(n), node_name(partner));
            }
            world
                .trace
                .event(now.as_millis(), format!("trap: {} restarted", node_name(n)));
        }
    }
    if !inj.vote_trap {
        return;
    }
    let partner = inj.trap_partner;
    // A vote granted to another node (losing one's own candidacy vote is harmless).
    let granted = |n: usize| {
        inj.disks[n]
            .pending_meta_values(MetaKey::Vote)
            .iter()
            .any(|bytes| {
                steadfast::codec::decode::<steadfast::raft::typ::Vote>(bytes, 4096)
                    .is_ok_and(|v| v.leader_id().voted_for.is_some_and(|c| c != n as u64 + 1))
            })
    };
    let caught =
        (0..inj.disks.len()).find(|n| !inj.down.contains(n) && Some(*n) != partner && granted(*n));
    if let Some(n) = caught {
        inj.vote_trap = false;
        inj.down.insert(n);
        sim.crash(node_name(n));
        inj.disks[n].crash(0);
        let back = now + Duration::from_millis(inj.rng.gen_range(20..400));
        inj.reboot = Some((n, back));
        world.trace.event(
            now.as_millis(),
            format!("trap: {} killed with an unsynced vote", node_name(n)),
        );
    }
}

fn leader_counts(world: &World, p: &Params, down: &BTreeSet<usize>) -> Vec<(usize, usize)> {
    let rafts = world.rafts.borrow();
    let mut counts: Vec<(usize, usize)> = (0..p.nodes)
        .filter(|i| !down.contains(i))
        .map(|i| (i, 0))
        .collect();
    for ((node, _), raft) in rafts.iter() {
        if raft.metrics().borrow().state.is_leader() {
            if let Some(c) = counts.iter_mut().find(|(n, _)| n == node) {
                c.1 += 1;
            }
        }
    }
    counts
}

fn pairs_across(a: &[usize], b: &[usize]) -> Vec<(String, String)> {
    a.iter()
        .flat_map(|x| b.iter().map(move |y| (node_name(*x), node_name(*y))))
        .collect()
}

fn inject(
    sim: &mut turmoil::Sim<'_>,
    world: &World,
    inj: &mut Injector,
    p: &Params,
    now: Duration,
) {
    let classes: Vec<FaultClass> = FaultClass::ALL
        .iter()
        .copied()
        .filter(|c| c.applies_to(p.nodes))
        .collect();
    let class = *classes.choose(&mut inj.rng).expect("classes");
    let mut order: Vec<usize> = (0..p.nodes).collect();
    order.shuffle(&mut inj.rng);
    let mut leaders = leader_counts(world, p, &inj.down);
    leaders.sort_by_key(|(n, c)| (std::cmp::Reverse(*c), *n));
    let top = leaders.first().map_or(order[0], |(n, _)| *n);
    let bottom = leaders.last().map_or(order[0], |(n, _)| *n);
    let mut cut: Vec<(String, String)> = Vec::new();
    let mut detail = String::new();
    match class {
        FaultClass::PartitionMajority => {
            let minority = (p.nodes - 1) / 2;
            cut = pairs_across(&order[..minority], &order[minority..]);
        }
        FaultClass::IsolateLeader | FaultClass::Pause => {
            let others: Vec<usize> = (0..p.nodes).filter(|n| *n != top).collect();
            cut = pairs_across(&[top], &others);
            detail = node_name(top);
        }
        FaultClass::MajoritiesRing => {
            for i in 0..p.nodes {
                let skip = order[(i + 2) % p.nodes];
                cut.push((node_name(order[i]), node_name(skip)));
            }
        }
        FaultClass::Bridge => cut = pairs_across(&order[..2], &order[3..]),
        FaultClass::OneWay => {
            let others: Vec<usize> = (0..p.nodes).filter(|n| *n != top).collect();
            for o in others {
                sim.partition_oneway(node_name(o), node_name(top));
            }
            detail = format!("{} hears nobody", node_name(top));
        }
        FaultClass::HoldRelease => cut = pairs_across(&order[..1], &order[1..]),
        FaultClass::MessageLoss => {
            for (a, b) in pairs_across(&order, &order)
                .into_iter()
                .filter(|(a, b)| a < b)
            {
                sim.set_link_fail_rate(a.clone(), b.clone(), 0.05);
                cut.push((a, b));
            }
        }
        FaultClass::KillLeader => kill(sim, inj, &[top]),
        FaultClass::KillFollower => kill(sim, inj, &[bottom]),
        FaultClass::KillMajority => kill(sim, inj, &order[..p.nodes / 2 + 1]),
        FaultClass::KillAll => kill(sim, inj, &order.clone()),
        FaultClass::ClockJump => {
            // Backward jumps on a leader are the dangerous ones: its stamps fall behind.
            let jump = inj.rng.gen_range(-30_000i64..10_000);
            inj.offsets[top].fetch_add(jump, std::sync::atomic::Ordering::Relaxed);
            detail = format!("{} jumps {jump} ms", node_name(top));
        }
        FaultClass::CrashAfterVote => {
            let others: Vec<usize> = (0..p.nodes).filter(|n| *n != top).collect();
            cut = pairs_across(&[top], &others);
            inj.vote_trap = true;
            inj.trap_partner = Some(top);
            detail = format!("{} isolated; trap armed", node_name(top));
        }
        FaultClass::MembershipChange => {
            let group = inj.rng.gen_range(0..p.groups);
            let voters = next_voters(world, p, group, &mut inj.rng);
            detail = format!("g{group} -> {voters:?}");
            world.orders.borrow_mut().push_back((group, voters));
            // Most changes run under another fault: a node down or a minority cut off.
            match inj.rng.gen_range(0..3) {
                0 => {}
                1 => {
                    kill(sim, inj, &order[..1]);
                    detail += &format!(" while {} is down", node_name(order[0]));
                }
                _ => {
                    let minority = (p.nodes - 1) / 2;
                    cut = pairs_across(&order[..minority], &order[minority..]);
                }
            }
        }
    }
    match class {
        FaultClass::HoldRelease | FaultClass::Pause => {
            for (a, b) in &cut {
                sim.hold(a.clone(), b.clone());
            }
        }
        FaultClass::MessageLoss | FaultClass::OneWay => {}
        _ => {
            for (a, b) in &cut {
                sim.partition(a.clone(), b.clone());
            }
        }
    }
    if matches!(
        class,
        FaultClass::KillLeader
            | FaultClass::KillFollower
            | FaultClass::KillMajority
            | FaultClass::KillAll
    ) {
        detail = format!(
            "down {:?}",
            inj.down.iter().map(|n| node_name(*n)).collect::<Vec<_>>()
        );
    }
    if class != FaultClass::MembershipChange {
        // Membership changes are counted when they commit.
        *inj.counts.entry(class).or_default() += 1;
    }
    let hold_ms = match class {
        FaultClass::Pause => inj.rng.gen_range(700..3000),
        FaultClass::CrashAfterVote => inj.rng.gen_range(3000..6000),
        _ => inj.rng.gen_range(500..6000),
    };
    world.trace.event(
        now.as_millis(),
        format!("fault {class} {detail} cut={cut:?} for {hold_ms} ms"),
    );
    inj.active = Some((class, now + Duration::from_millis(hold_ms), cut));
}

/// The voters to ask for: the group's voters as its most advanced replica knows them, with one
/// swapped for a non-voter (5 nodes), or one removed / the full set restored (3 nodes).
fn next_voters(world: &World, p: &Params, group: u32, rng: &mut SmallRng) -> Vec<u64> {
    let all: Vec<u64> = (1..=p.nodes as u64).collect();
    let current: Vec<u64> = world
        .rafts
        .borrow()
        .iter()
        .filter(|((_, g), _)| *g == group)
        .map(|(_, raft)| raft.metrics().borrow().clone())
        .max_by_key(|m| (m.current_term, m.last_log_index))
        .map(|m| m.membership_config.membership().voter_ids().collect())
        .unwrap_or_default();
    let outside: Vec<u64> = all
        .iter()
        .copied()
        .filter(|n| !current.contains(n))
        .collect();
    let mut next = current.clone();
    if current.len() == 3 && p.nodes == 3 {
        next.remove(rng.gen_range(0..next.len()));
    } else if current.len() == 3 {
        let out = rng.gen_range(0..next.len());
        next[out] = *outside.choose(rng).expect("5 nodes, 3 voters");
    } else {
        next = all;
        next.shuffle(rng);
        next.truncate(3);
    }
    next.sort_unstable();
    next
}

fn kill(sim: &mut turmoil::Sim<'_>, inj: &mut Injector, nodes: &[usize]) {
    for n in nodes {
        if inj.down.insert(*n) {
            sim.crash(node_name(*n));
            let pending = inj.disks[*n].pending_writes();
            let keep = inj.rng.gen_range(0..=pending);
            inj.disks[*n].crash(keep);
        }
    }
}

fn heal(sim: &mut turmoil::Sim<'_>, world: &World, inj: &mut Injector, p: &Params) {
    let names: Vec<String> = (0..p.nodes).map(node_name).collect();
    for a in &names {
        for b in &names {
            if a != b {
                sim.repair(a.clone(), b.clone());
                sim.release(a.clone(), b.clone());
                sim.set_link_fail_rate(a.clone(), b.clone(), 0.0);
            }
        }
    }
    inj.vote_trap = false;
    inj.reboot = None;
    inj.trap_partner = None;
    for n in std::mem::take(&mut inj.down) {
        world.rafts.borrow_mut().retain(|(node, _), _| *node != n);
        sim.bounce(node_name(n));
    }
    inj.active = None;
}
