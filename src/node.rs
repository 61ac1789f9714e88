//! A node: hosts the Raft groups placed on it, answers peers and clients on one listener, and
//! keeps the replicated clock moving.
//!
//! - Writes are stamped with this node's clock and proposed through openraft; followers answer
//!   `NotLeader` with a hint.
//! - Reads are linearizable: all reads waiting on a group share one ReadIndex round
//!   (`ReadBatcher`), then read the local state machine once it has applied that index.
//! - A leader proposes an `Expire` entry when the replicated clock lags its own by a tick or a
//!   session is due, so expiry needs no writes from clients.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, RaftError};
use openraft::{BasicNode, SnapshotPolicy};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::clock::SharedClock;
use crate::command::{Batch, Command, Request};
use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::future::BoxFuture;
use crate::id::{GroupId, NodeId};
use crate::identity::ClusterId;
use crate::limits;
use crate::proposer::{ProposeError, Proposer};
use crate::raft::network::NetworkFactory;
use crate::raft::store::{Flusher, LogStore, MachineState, SharedBackend, StateMachineStore};
use crate::raft::typ::Raft;
use crate::teeth::{self, Bug};
use crate::transport::{self, Connector, Handler, Listener, Pool};
use crate::wire::{
    ClientRequest, GroupStatus, RaftRequest, ReadReply, RequestBody, ResponseBody, Topology,
    WireError,
};

/// What a node is started with.
pub struct NodeOptions {
    /// Its configuration.
    pub config: NodeConfig,
    /// Where it stores data.
    pub backend: SharedBackend,
    /// Its clock (the system clock in production, simulated time in simulations).
    pub clock: SharedClock,
    /// How it reaches peers.
    pub connector: Arc<dyn Connector>,
    /// Where it accepts connections.
    pub listener: Box<dyn Listener>,
    /// Whether this node may initialize the groups it bootstraps. Only on a cluster's very
    /// first start: a node that lost its disk must never re-initialize (it could vote twice).
    pub bootstrap: bool,
    /// The cluster this node belongs to (from its data directory's identity): peers of another
    /// cluster are refused.
    pub cluster_id: ClusterId,
}

/// A running node.
pub struct Node {
    inner: Arc<NodeInner>,
    tasks: Vec<JoinHandle<()>>,
}

struct NodeInner {
    id: NodeId,
    /// The cluster this node belongs to.
    cluster_id: ClusterId,
    /// When (this node's clock) a refused hello was last logged, so a foreign peer retrying
    /// every heartbeat does not flood the log.
    refusals_logged_ms: AtomicU64,
    config: Arc<NodeConfig>,
    clock: SharedClock,
    groups: BTreeMap<GroupId, Arc<GroupHandle>>,
    /// Configured peer addresses (leaders added later are found through their membership).
    addresses: Arc<Addresses>,
    /// The node's connections to its peers (the groups' Raft traffic shares them), so the
    /// admin side asks other nodes over the same links, with the same TLS and cluster check.
    pool: Pool,
}

/// Node id to address.
type Addresses = BTreeMap<NodeId, String>;

struct GroupHandle {
    raft: Raft,
    /// The group's log (shared with openraft): where the committed index is read.
    log: LogStore,
    /// The node's storage (it also runs the backup image's encoding off the async workers).
    backend: SharedBackend,
    /// Packs concurrent writes into shared log entries.
    proposer: Proposer,
    /// The term in which this process last committed a barrier entry as leader. A leader may
    /// serve ReadIndex reads only after committing an entry of its own term: openraft 0.9
    /// restores a restarted leader in its old term with only the (lazily persisted) commit
    /// index, which can miss acknowledged writes (found by the kill-all-nodes test).
    barrier_term: Arc<AtomicU64>,
    machine: Arc<RwLock<MachineState>>,
    reads: ReadBatcher,
    /// An `Expire` proposal is in flight; don't stack another.
    expiring: AtomicBool,
    /// Sessions read since the last touch batch, with the replicated time of the read.
    touches: Mutex<BTreeMap<crate::id::SessionId, u64>>,
    /// The latest backup images taken here, by token (served in chunks), oldest first; at most
    /// [`limits::BACKUP_IMAGES_HELD_MAX`], so concurrent backups do not evict each other.
    backup: Mutex<std::collections::VecDeque<(u64, Arc<Vec<u8>>)>>,
}

impl Node {
    /// Opens every group placed on this node and starts serving.
    pub async fn start(options: NodeOptions) -> Result<Node> {
        let NodeOptions {
            config,
            backend,
            clock,
            connector,
            listener,
            bootstrap,
            cluster_id,
        } = options;
        config.validate()?;
        let id = config.id;
        let pool = Pool::with_hello(connector, Some(cluster_id.clone()), Some(id));
        let flusher = Flusher::spawn(backend.clone());
        let raft_config = Arc::new(raft_config(&config)?);
        let addresses = config.addresses();
        let mut groups = BTreeMap::new();
        // Every node hosts every group: a group whose membership does not include this node
        // just sits idle (no membership, no elections) until a membership change adds it.
        for g in 0..config.groups {
            let group = GroupId(g);
            let members = config.placement(group);
            let log = LogStore::open(group, backend.clone(), flusher.clone())
                .map_err(|e| Error::Raft(e.to_string()))?;
            let sm = StateMachineStore::open(group, backend.clone())
                .map_err(|e| Error::Raft(e.to_string()))?;
            let machine = sm.shared();
            let network = NetworkFactory {
                pool: pool.clone(),
                group,
            };
            let raft = Raft::new(id, raft_config.clone(), network, log.clone(), sm)
                .await
                .map_err(|e| Error::Raft(e.to_string()))?;
            if bootstrap
                && members[0] == id
                && !raft
                    .is_initialized()
                    .await
                    .map_err(|e| Error::Raft(e.to_string()))?
            {
                let nodes: BTreeMap<NodeId, BasicNode> = members
                    .iter()
                    .map(|m| {
                        (
                            *m,
                            BasicNode {
                                addr: addresses[m].clone(),
                            },
                        )
                    })
                    .collect();
                if let Err(e) = raft.initialize(nodes).await {
                    warn!(%group, error = %e, "initialize failed");
                }
            }
            let handle = GroupHandle {
                proposer: Proposer::spawn(raft.clone(), group, config.raft.pipeline_depth),
                raft,
                log,
                backend: backend.clone(),
                barrier_term: Arc::default(),
                machine,
                reads: ReadBatcher::default(),
                expiring: AtomicBool::new(false),
                touches: Mutex::default(),
                backup: Mutex::default(),
            };
            groups.insert(group, Arc::new(handle));
        }
        let inner = Arc::new(NodeInner {
            id,
            cluster_id,
            refusals_logged_ms: AtomicU64::new(0),
            config: Arc::new(config),
            clock,
            groups,
            addresses: Arc::new(addresses),
            pool,
        });
        let server = tokio::spawn(transport::serve(
            listener,
            inner.clone() as Arc<dyn Handler>,
        ));
        let ticker = tokio::spawn(expire_loop(inner.clone()));
        let breaker = tokio::spawn(split_vote_breaker(inner.clone()));
        let compactor = tokio::spawn(compaction_loop(inner.clone()));
        info!(node = id, groups = inner.groups.len(), "node started");
        Ok(Node {
            inner,
            tasks: vec![server, ticker, breaker, compactor],
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// Status of every group on this node.
    pub fn status(&self) -> Vec<GroupStatus> {
        self.inner.status()
    }

    /// A cheap, cloneable handle for watching this node (admin endpoints).
    pub fn observer(&self) -> NodeObserver {
        NodeObserver(self.inner.clone())
    }

    /// The Raft instance of a group hosted here (for tests and tools).
    pub fn raft(&self, group: GroupId) -> Option<Raft> {
        self.inner.groups.get(&group).map(|g| g.raft.clone())
    }

    /// Resolves when a group's Raft core stopped by itself (a storage failure): the group and
    /// why. The node is then useless to its cluster and should exit ([`crate::failstop`]).
    pub async fn failed(&self) -> (GroupId, String) {
        let groups = self.inner.groups.iter();
        crate::failstop::first_failure(groups.map(|(g, h)| (*g, h.raft.clone())).collect()).await
    }

    /// Stops serving and shuts every group down.
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        for g in self.inner.groups.values() {
            let _ = g.raft.shutdown().await;
        }
    }
}

/// Watches a running node without owning it.
#[derive(Clone)]
pub struct NodeObserver(Arc<NodeInner>);

impl NodeObserver {
    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.0.id
    }

    /// Status of every group hosted on the node.
    pub fn status(&self) -> Vec<GroupStatus> {
        self.0.status()
    }

    /// The highest log index this node knows to be committed in `group` (`None` before it
    /// heard of a commit, or for a group not hosted here). It may trail the leader's by a
    /// heartbeat on a follower.
    pub fn committed_index(&self, group: GroupId) -> Option<u64> {
        self.0.groups.get(&group)?.log.committed().map(|c| c.index)
    }

    /// Every node this one knows an address of (configured peers and members of its groups'
    /// memberships), itself included, by id.
    pub fn nodes(&self) -> Vec<(NodeId, String)> {
        self.0.topology().nodes
    }

    /// Sends a client request to the node at `addr` over this node's peer connections and
    /// waits up to `timeout` for its answer.
    pub async fn ask(
        &self,
        addr: &str,
        request: ClientRequest,
        timeout: Duration,
    ) -> Result<ResponseBody, transport::TransportError> {
        let body = RequestBody::Client(request);
        self.0.pool.call(addr, GroupId(0), &body, timeout).await
    }

    /// For each group this node votes in: `Ok(leader)` when it can serve it, else why not. A
    /// leader counts only while a quorum has acknowledged it within the election timeout
    /// (openraft 0.9 leaders cut off in a minority do not step down by themselves).
    pub fn readiness(&self) -> Vec<(GroupId, Result<NodeId, String>)> {
        let me = self.0.id;
        let lease_ms = self.0.config.raft.election_timeout_max_ms;
        let mut out = Vec::new();
        for (group, h) in &self.0.groups {
            if let Some(why) = crate::failstop::stopped(&h.raft) {
                out.push((*group, Err(format!("stopped: {why}"))));
                continue;
            }
            let m = h.raft.metrics().borrow().clone();
            if !m
                .membership_config
                .membership()
                .voter_ids()
                .any(|v| v == me)
            {
                continue;
            }
            let ready = match (m.current_leader, m.millis_since_quorum_ack) {
                (None, _) => Err("no leader".to_string()),
                (Some(l), Some(ms)) if l == me && ms > lease_ms => {
                    Err(format!("leading without a quorum for {ms} ms"))
                }
                (Some(l), None) if l == me => Err("leading without a quorum".to_string()),
                (Some(l), _) => Ok(l),
            };
            out.push((*group, ready));
        }
        out
    }
}

fn raft_config(config: &NodeConfig) -> Result<openraft::Config> {
    let r = &config.raft;
    let c = openraft::Config {
        cluster_name: "steadfast".into(),
        heartbeat_interval: r.heartbeat_ms,
        election_timeout_min: r.election_timeout_min_ms,
        election_timeout_max: r.election_timeout_max_ms,
        install_snapshot_timeout: r.heartbeat_ms.max(200) * 10,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(r.snapshot_every_logs),
        max_in_snapshot_log_to_keep: r.logs_kept_after_snapshot,
        snapshot_max_chunk_size: limits::SNAPSHOT_CHUNK_BYTES as u64,
        ..Default::default()
    };
    c.validate().map_err(|e| Error::Config(e.to_string()))
}

impl Handler for NodeInner {
    fn handle(&self, group: GroupId, body: RequestBody) -> BoxFuture<'static, ResponseBody> {
        let Some(op) = client_op(&body) else {
            return self.dispatch(group, body);
        };
        let reply = self.dispatch(group, body);
        Box::pin(async move {
            let start = tokio::time::Instant::now();
            let reply = reply.await;
            let result = match &reply {
                ResponseBody::Error(e) => e.kind(),
                _ => "ok",
            };
            metrics::counter!(METRIC_REQUESTS, "op" => op, "result" => result).increment(1);
            metrics::histogram!(METRIC_REQUEST_SECONDS, "op" => op)
                .record(start.elapsed().as_secs_f64());
            reply
        })
    }

    fn hello(&self, hello: &crate::wire::Hello) -> ResponseBody {
        crate::handshake::answer(
            &self.cluster_id,
            self.id,
            hello,
            self.clock.now_ms(),
            &self.refusals_logged_ms,
        )
    }

    fn cluster_id(&self) -> &ClusterId {
        &self.cluster_id
    }
}

/// Client requests served, by `op` and `result` (`ok` or the error kind).
pub const METRIC_REQUESTS: &str = "steadfast_requests_total";
/// Time to serve a client request, by `op`.
pub const METRIC_REQUEST_SECONDS: &str = "steadfast_request_duration_seconds";

/// The metrics label of a client request (`None` for Raft traffic between nodes).
fn client_op(body: &RequestBody) -> Option<&'static str> {
    let RequestBody::Client(request) = body else {
        return None;
    };
    Some(match request {
        ClientRequest::Write { .. } => "write",
        ClientRequest::Read { .. } => "read",
        ClientRequest::Principal { .. } => "principal",
        ClientRequest::Watch { .. } => "watch",
        ClientRequest::Status => "status",
        ClientRequest::Topology => "topology",
        ClientRequest::ChangeMembership { .. } => "change_membership",
        ClientRequest::Backup { .. } => "backup",
        ClientRequest::RedisScan { .. } => "redis_scan",
    })
}

impl NodeInner {
    fn dispatch(&self, group: GroupId, body: RequestBody) -> BoxFuture<'static, ResponseBody> {
        let node_level = matches!(
            body,
            RequestBody::Client(ClientRequest::Status | ClientRequest::Topology)
        );
        if node_level {
            let reply = match body {
                RequestBody::Client(ClientRequest::Status) => ResponseBody::Status(self.status()),
                _ => ResponseBody::Topology(self.topology()),
            };
            return Box::pin(async move { reply });
        }
        let Some(handle) = self.groups.get(&group).cloned() else {
            return Box::pin(async move { ResponseBody::Error(WireError::UnknownGroup(group.0)) });
        };
        let now_ms = self.clock.now_ms();
        let config = self.config.clone();
        let addresses = self.addresses.clone();
        Box::pin(async move {
            match body {
                RequestBody::Raft(r) => handle_raft(&handle, r).await,
                RequestBody::Client(ClientRequest::Write {
                    origin,
                    command,
                    namespace,
                }) => {
                    let command = match normalize(command, &config, &namespace) {
                        Ok(c) => c,
                        Err(e) => return ResponseBody::Error(e),
                    };
                    let request = Request {
                        now_ms,
                        origin: Some(origin),
                        command,
                    };
                    write(&handle, request, &addresses).await
                }
                RequestBody::Client(ClientRequest::Read { id }) => {
                    read(&handle, id, now_ms, &addresses).await
                }
                RequestBody::Client(ClientRequest::Principal { principal }) => {
                    if let Err(e) = linearize(&handle, now_ms, &addresses).await {
                        return ResponseBody::Error(e);
                    }
                    let m = handle.machine.read().expect("state lock");
                    ResponseBody::Sessions(m.state.sessions_of(&principal))
                }
                RequestBody::Client(ClientRequest::Watch {
                    from_index,
                    wait_ms,
                }) => {
                    let wait = Duration::from_millis(wait_ms).min(WATCH_WAIT_MAX);
                    watch(&handle, from_index, wait, now_ms, &addresses).await
                }
                RequestBody::Client(ClientRequest::ChangeMembership { voters }) => {
                    change_membership(&handle, voters, &addresses).await
                }
                RequestBody::Client(ClientRequest::Backup { token, offset }) => {
                    backup_chunk(&handle, group, token, offset, now_ms, &addresses).await
                }
                RequestBody::Client(ClientRequest::RedisScan { from, count }) => {
                    if let Err(e) = linearize(&handle, now_ms, &addresses).await {
                        return ResponseBody::Error(e);
                    }
                    let count = (count as usize).min(limits::REDIS_SCAN_VISIT_MAX);
                    let m = handle.machine.read().expect("state lock");
                    let (keys, next) = m.state.redis_scan(from, count);
                    ResponseBody::RedisKeys { keys, next }
                }
                RequestBody::Client(_) | RequestBody::Hello(_) => {
                    ResponseBody::Error(WireError::Invalid("unexpected request".into()))
                }
            }
        })
    }
}

/// Fills a client's command in with this node's namespace defaults and limits, and refuses
/// commands only leaders may issue.
fn normalize(command: Command, config: &NodeConfig, namespace: &str) -> Result<Command, WireError> {
    let name = if namespace.is_empty() {
        "default"
    } else {
        namespace
    };
    let ns = config.namespaces.get(name).cloned().unwrap_or_default();
    let limits = ns.limits();
    match command {
        Command::Expire | Command::TouchBatch { .. } => {
            Err(WireError::Invalid("issued by leaders only".into()))
        }
        Command::Create {
            id,
            attributes,
            idle_timeout_ms,
            lifetime_ms,
            principal,
            ..
        } => {
            let idle_timeout_ms = match idle_timeout_ms {
                0 => ns
                    .idle_timeout_ms
                    .unwrap_or(config.sessions.idle_timeout_ms),
                t => t,
            };
            let lifetime_ms = lifetime_ms.or(ns.lifetime_ms);
            Ok(Command::Create {
                id,
                attributes,
                idle_timeout_ms,
                lifetime_ms,
                principal,
                limits,
            })
        }
        Command::Rotate {
            old,
            new,
            principal,
            ..
        } => Ok(Command::Rotate {
            old,
            new,
            principal,
            limits,
        }),
        Command::RotateIn {
            new,
            from,
            session,
            principal,
            ..
        } => Ok(Command::RotateIn {
            new,
            from,
            session,
            principal,
            limits,
        }),
        other => Ok(other),
    }
}

async fn handle_raft(handle: &GroupHandle, request: RaftRequest) -> ResponseBody {
    match request {
        RaftRequest::Append(r) => ResponseBody::Append(handle.raft.append_entries(r).await),
        RaftRequest::Vote(r) => ResponseBody::Vote(handle.raft.vote(r).await),
        RaftRequest::InstallSnapshot(r) => {
            ResponseBody::InstallSnapshot(handle.raft.install_snapshot(r).await)
        }
    }
}

fn not_leader(f: ForwardToLeader<NodeId, BasicNode>, addresses: &Addresses) -> WireError {
    let leader = f.leader_id.and_then(|l| {
        let addr = f
            .leader_node
            .map(|n| n.addr)
            .or_else(|| addresses.get(&l).cloned())?;
        Some((l, addr))
    });
    WireError::NotLeader { leader }
}

async fn write(handle: &GroupHandle, request: Request, addresses: &Addresses) -> ResponseBody {
    let bytes = request.approx_bytes();
    if bytes > limits::REQUEST_BYTES_MAX {
        // Refused before it reaches the log; the state machine would refuse it too.
        return ResponseBody::Written(crate::command::Response {
            server_time_ms: handle.machine.read().expect("state lock").state.clock_ms(),
            outcome: crate::command::Outcome::TooLarge {
                bytes: bytes as u64,
                limit: limits::SESSION_BYTES_MAX as u64,
            },
        });
    }
    match handle.proposer.write(request).await {
        Ok(r) => ResponseBody::Written(r),
        Err(ProposeError::Raft(e)) => match *e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                ResponseBody::Error(not_leader(f, addresses))
            }
            other => ResponseBody::Error(WireError::Unavailable(other.to_string())),
        },
        Err(e) => ResponseBody::Error(WireError::Unavailable(e.to_string())),
    }
}

/// Serves a backup image of the group in chunks; token 0 takes a new, linearizable image.
async fn backup_chunk(
    handle: &GroupHandle,
    group: GroupId,
    token: u64,
    offset: u64,
    now_ms: u64,
    addresses: &Addresses,
) -> ResponseBody {
    let (token, image) = if token == 0 {
        if let Err(e) = linearize(handle, now_ms, addresses).await {
            return ResponseBody::Error(e);
        }
        // Take the state in O(1) under the lock; encode it off the async workers, without it.
        let image = {
            let m = handle.machine.read().expect("state lock");
            crate::backup::GroupImageView {
                group,
                index: m.last_applied.map_or(0, |l| l.index),
                state: m.state.view(),
            }
        };
        let encoded = handle
            .backend
            .offload(Box::new(move || crate::codec::encode(&image)))
            .await;
        let Ok(image) = encoded else {
            return ResponseBody::Error(WireError::Unavailable("encoding the image failed".into()));
        };
        let token = loop {
            let t = rand::RngCore::next_u64(&mut crate::raft::ThreadRng);
            if t != 0 {
                break t;
            }
        };
        let image = Arc::new(image);
        let mut held = handle.backup.lock().expect("backup lock");
        held.push_back((token, image.clone()));
        while held.len() > limits::BACKUP_IMAGES_HELD_MAX {
            held.pop_front();
        }
        drop(held);
        (token, image)
    } else {
        let held = handle.backup.lock().expect("backup lock");
        match held.iter().find(|(t, _)| *t == token) {
            Some((_, image)) => (token, image.clone()),
            None => {
                return ResponseBody::Error(WireError::Invalid(
                    "backup image no longer held here; start again with token 0".into(),
                ))
            }
        }
    };
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(image.len());
    let end = start
        .saturating_add(limits::BACKUP_CHUNK_BYTES)
        .min(image.len());
    if end == image.len() {
        // The last chunk: the image is not kept past its backup.
        handle
            .backup
            .lock()
            .expect("backup lock")
            .retain(|(t, _)| *t != token);
    }
    ResponseBody::BackupChunk {
        token,
        total: image.len() as u64,
        bytes: image[start..end].to_vec(),
    }
}

/// The longest one membership change may take, catching new voters up included. A change cut
/// short is resumed by asking again (openraft converges from a joint configuration).
const MEMBERSHIP_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes `voters` the group's voter set: new voters join as learners and are caught up first, then
/// one joint-consensus change replaces the voters (openraft's two-step `change_membership`).
async fn change_membership(
    handle: &GroupHandle,
    voters: Vec<(NodeId, String)>,
    addresses: &Addresses,
) -> ResponseBody {
    if voters.is_empty() || voters.len() > limits::VOTERS_MAX {
        return ResponseBody::Error(WireError::Invalid(format!(
            "a group needs 1 to {} voters, not {}",
            limits::VOTERS_MAX,
            voters.len()
        )));
    }
    let mut wanted = BTreeMap::new();
    for (id, addr) in voters {
        let known = addresses.get(&id).cloned().or_else(|| {
            let m = handle.raft.metrics().borrow().membership_config.clone();
            m.membership().get_node(&id).map(|n| n.addr.clone())
        });
        let addr = match (addr.is_empty(), known) {
            (false, _) => addr,
            (true, Some(known)) => known,
            (true, None) => {
                return ResponseBody::Error(WireError::Invalid(format!(
                    "node {id} is not configured here: give its address"
                )))
            }
        };
        if addr.len() > limits::ADDRESS_BYTES_MAX {
            return ResponseBody::Error(WireError::Invalid(format!(
                "address of node {id} is longer than {} bytes",
                limits::ADDRESS_BYTES_MAX
            )));
        }
        if wanted.insert(id, addr).is_some() {
            return ResponseBody::Error(WireError::Invalid(format!("node {id} named twice")));
        }
    }
    let change = apply_membership(handle, wanted, addresses);
    match tokio::time::timeout(MEMBERSHIP_CHANGE_TIMEOUT, change).await {
        Ok(Ok(reply)) => ResponseBody::Membership(reply),
        Ok(Err(e)) => ResponseBody::Error(e),
        Err(_) => ResponseBody::Error(WireError::Unavailable(
            "membership change timed out (a new voter did not catch up); ask again to resume"
                .into(),
        )),
    }
}

async fn apply_membership(
    handle: &GroupHandle,
    wanted: BTreeMap<NodeId, String>,
    addresses: &Addresses,
) -> Result<crate::wire::MembershipReply, WireError> {
    let fail = |e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>| match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => not_leader(f, addresses),
        other => WireError::Unavailable(other.to_string()),
    };
    let voters_now: std::collections::BTreeSet<NodeId> = handle
        .raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    for (id, addr) in &wanted {
        if !voters_now.contains(id) {
            info!(node = id, %addr, "adding learner");
            let node = BasicNode { addr: addr.clone() };
            handle
                .raft
                .add_learner(*id, node, true)
                .await
                .map_err(fail)?;
        }
    }
    let ids: std::collections::BTreeSet<NodeId> = wanted.keys().copied().collect();
    info!(voters = ?ids, "changing voters");
    // Voters left out stay on as learners at first: a voter removed outright never receives the
    // configuration that removes it and campaigns forever (openraft stops replicating to it).
    // As learners they receive it, then leave the group.
    let mut r = handle
        .raft
        .change_membership(ids.clone(), true)
        .await
        .map_err(fail)?;
    let leaving: std::collections::BTreeSet<NodeId> = r
        .membership
        .as_ref()
        .map(|m| m.learner_ids().filter(|l| !ids.contains(l)).collect())
        .unwrap_or_default();
    if !leaving.is_empty() {
        wait_replicated(handle, &leaving, r.log_id.index).await;
        info!(nodes = ?leaving, "removing former voters");
        r = handle
            .raft
            .change_membership(openraft::ChangeMembers::RemoveNodes(leaving), false)
            .await
            .map_err(fail)?;
    }
    let membership = r.membership.unwrap_or_default();
    Ok(crate::wire::MembershipReply {
        voters: membership.voter_ids().collect(),
        learners: membership.learner_ids().collect(),
        log_index: Some(r.log_id.index),
    })
}

/// How long a leaving voter gets to receive the configuration that makes it a learner; one
/// that is down does not hold the change up longer.
const LEAVING_CATCH_UP: Duration = Duration::from_secs(5);

/// Waits (bounded) until the leader has replicated up to `index` to each of `nodes`.
async fn wait_replicated(
    handle: &GroupHandle,
    nodes: &std::collections::BTreeSet<NodeId>,
    index: u64,
) {
    let deadline = tokio::time::Instant::now() + LEAVING_CATCH_UP;
    while tokio::time::Instant::now() < deadline {
        let done = {
            let m = handle.raft.metrics();
            let m = m.borrow();
            m.replication.as_ref().is_some_and(|r| {
                nodes.iter().all(|n| {
                    r.get(n)
                        .is_some_and(|l| l.is_some_and(|l| l.index >= index))
                })
            })
        };
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs (or joins) a ReadIndex round; afterwards the local state is linearizable.
async fn linearize(
    handle: &GroupHandle,
    now_ms: u64,
    addresses: &Addresses,
) -> Result<u64, WireError> {
    if teeth::planted(Bug::StaleReads) {
        // Deliberately wrong (simulation teeth only): serve whatever this replica has applied.
        return Ok(0);
    }
    let round = ReadRound {
        raft: handle.raft.clone(),
        barrier_term: handle.barrier_term.clone(),
        now_ms,
    };
    handle
        .reads
        .linearize(round)
        .await
        .map_err(|e| read_error(e, addresses))
}

async fn read(
    handle: &GroupHandle,
    id: crate::id::SessionId,
    now_ms: u64,
    addresses: &Addresses,
) -> ResponseBody {
    let read_index = match linearize(handle, now_ms, addresses).await {
        Ok(index) => index,
        Err(e) => return ResponseBody::Error(e),
    };
    let m = handle.machine.read().expect("state lock");
    let applied = m.last_applied.map_or(0, |l| l.index);
    let session = m.state.get(&id);
    let server_time_ms = m.state.clock_ms();
    drop(m);
    if session.is_some() {
        // Reading a session is using it: extend its idle deadline in the next touch batch.
        let mut touches = handle.touches.lock().expect("touch lock");
        let at = touches.entry(id).or_default();
        *at = (*at).max(server_time_ms);
    }
    ResponseBody::Read(ReadReply {
        session,
        server_time_ms,
        read_index: read_index.max(applied),
    })
}

/// The longest a watch may wait for new events before answering with none.
const WATCH_WAIT_MAX: Duration = Duration::from_secs(5);

async fn watch(
    handle: &GroupHandle,
    from_index: u64,
    wait: Duration,
    now_ms: u64,
    addresses: &Addresses,
) -> ResponseBody {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Err(e) = linearize(handle, now_ms, addresses).await {
            return ResponseBody::Error(e);
        }
        let batch = {
            let m = handle.machine.read().expect("state lock");
            m.state
                .events_from(from_index, limits::EVENTS_PER_WATCH_MAX)
        };
        match batch {
            Err(first_available) => {
                return ResponseBody::Error(WireError::Compacted { first_available })
            }
            Ok(events) if !events.is_empty() || tokio::time::Instant::now() >= deadline => {
                let next_index = events.last().map_or(from_index, |e| e.index + 1);
                return ResponseBody::Events { events, next_index };
            }
            Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

fn read_error(
    e: RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>,
    addresses: &Addresses,
) -> WireError {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => not_leader(f, addresses),
        other => WireError::Unavailable(other.to_string()),
    }
}

/// The longest one ReadIndex round (barrier write plus quorum check) may take.
const READ_ROUND_TIMEOUT: Duration = Duration::from_secs(2);

type ReadResult = Result<u64, RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>>;

/// Shares one ReadIndex round among every read that arrived before the round began.
#[derive(Default)]
struct ReadBatcher {
    queue: Arc<Mutex<ReadQueue>>,
}

#[derive(Default)]
struct ReadQueue {
    running: bool,
    waiters: Vec<oneshot::Sender<ReadResult>>,
}

/// What one ReadIndex round needs.
struct ReadRound {
    raft: Raft,
    barrier_term: Arc<AtomicU64>,
    now_ms: u64,
}

impl ReadRound {
    async fn run(&self) -> ReadResult {
        let term = self.raft.metrics().borrow().current_term;
        // Deliberately skipped in a teeth build (simulation only).
        let barrier = !teeth::planted(Bug::ReadBarrier);
        if barrier && self.barrier_term.load(Ordering::Acquire) != term {
            tracing::debug!(term, "read barrier");
            let request = Request {
                now_ms: self.now_ms,
                origin: None,
                command: Command::Expire,
            };
            match self.raft.client_write(Batch::one(request)).await {
                Ok(_) => self.barrier_term.store(term, Ordering::Release),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    return Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)));
                }
                Err(RaftError::APIError(other)) => {
                    let e = openraft::error::QuorumNotEnough {
                        cluster: other.to_string(),
                        got: Default::default(),
                    };
                    return Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)));
                }
                Err(RaftError::Fatal(f)) => return Err(RaftError::Fatal(f)),
            }
        }
        self.raft
            .ensure_linearizable()
            .await
            .map(|l| l.map_or(0, |l| l.index))
    }
}

impl ReadBatcher {
    async fn linearize(&self, round: ReadRound) -> ReadResult {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.queue.lock().expect("read queue lock");
            q.waiters.push(tx);
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            tokio::spawn(read_rounds(self.queue.clone(), round));
        }
        rx.await
            .unwrap_or(Err(RaftError::Fatal(openraft::error::Fatal::Stopped)))
    }
}

async fn read_rounds(queue: Arc<Mutex<ReadQueue>>, round: ReadRound) {
    loop {
        let waiters = {
            let mut q = queue.lock().expect("read queue lock");
            if q.waiters.is_empty() {
                q.running = false;
                return;
            }
            std::mem::take(&mut q.waiters)
        };
        // Every waiter taken here arrived before this round started, so its ReadIndex is valid.
        // A round must not wedge every later read on this group: bound it.
        let result = match tokio::time::timeout(READ_ROUND_TIMEOUT, round.run()).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!("read round timed out");
                let e = openraft::error::QuorumNotEnough {
                    cluster: "read round timed out".into(),
                    got: Default::default(),
                };
                Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)))
            }
        };
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

impl NodeInner {
    /// The cluster as this node sees it: each group's voters from its membership (configured
    /// placement for groups this node has not seen yet), every node it knows an address of.
    fn topology(&self) -> Topology {
        let mut nodes = (*self.addresses).clone();
        let mut placement = Vec::with_capacity(self.groups.len());
        for (group, h) in &self.groups {
            let m = h.raft.metrics().borrow().membership_config.clone();
            let voters: Vec<NodeId> = m.membership().voter_ids().collect();
            for (id, node) in m.membership().nodes() {
                nodes.entry(*id).or_insert_with(|| node.addr.clone());
            }
            placement.push(if voters.is_empty() {
                self.config.placement(*group)
            } else {
                voters
            });
        }
        Topology {
            groups: self.config.groups,
            nodes: nodes.into_iter().collect(),
            placement,
        }
    }

    fn status(&self) -> Vec<GroupStatus> {
        self.groups
            .iter()
            .map(|(group, h)| {
                let m = h.raft.metrics().borrow().clone();
                let machine = h.machine.read().expect("state lock");
                GroupStatus {
                    group: *group,
                    node: self.id,
                    role: format!("{:?}", m.state),
                    leader: m.current_leader,
                    term: m.current_term,
                    last_log_index: m.last_log_index,
                    applied_index: machine.last_applied.map(|l| l.index),
                    members: m.membership_config.membership().voter_ids().collect(),
                    learners: m.membership_config.membership().learner_ids().collect(),
                    sessions: machine.state.len() as u64,
                    digest: machine.state.digest(),
                }
            })
            .collect()
    }
}

/// The most `Expire` entries one tick proposes for a group (each purges at most
/// [`limits::EXPIRE_PER_ENTRY_MAX`] sessions); the next tick goes on.
const EXPIRE_ROUNDS_MAX: usize = 64;

async fn expire_loop(node: Arc<NodeInner>) {
    let tick_ms = node.config.sessions.expire_tick_ms;
    loop {
        tokio::time::sleep(Duration::from_millis(tick_ms)).await;
        for handle in node.groups.values() {
            let leading = {
                let m = handle.raft.metrics();
                let m = m.borrow();
                m.current_leader == Some(node.id) && m.state.is_leader()
            };
            if !leading {
                continue;
            }
            let now_ms = node.clock.now_ms();
            let due = {
                let m = handle.machine.read().expect("state lock");
                let lagging = now_ms >= m.state.clock_ms().saturating_add(tick_ms);
                lagging || m.state.next_expiry_ms().is_some_and(|t| t <= now_ms)
            };
            let touched = !handle.touches.lock().expect("touch lock").is_empty();
            if (due || touched) && !handle.expiring.swap(true, Ordering::AcqRel) {
                let handle = handle.clone();
                tokio::spawn(async move {
                    // Touches first: a session read before its deadline must not be purged.
                    let reads: Vec<_> =
                        std::mem::take(&mut *handle.touches.lock().expect("touch lock"))
                            .into_iter()
                            .collect();
                    if !reads.is_empty() {
                        let request = Request {
                            now_ms,
                            origin: None,
                            command: Command::TouchBatch { reads },
                        };
                        let _ = handle.proposer.write(request).await;
                    }
                    if due {
                        // One `Expire` purges a bounded number of sessions: a mass expiry goes
                        // on over several entries, other writes interleaving between them.
                        for _ in 0..EXPIRE_ROUNDS_MAX {
                            let request = Request {
                                now_ms,
                                origin: None,
                                command: Command::Expire,
                            };
                            if handle.proposer.write(request).await.is_err() {
                                break;
                            }
                            let more = handle
                                .machine
                                .read()
                                .expect("state lock")
                                .state
                                .next_expiry_ms()
                                .is_some_and(|t| t <= now_ms);
                            if !more {
                                break;
                            }
                        }
                    }
                    handle.expiring.store(false, Ordering::Release);
                });
            }
        }
    }
}

/// Compaction by size: every replica snapshots a group once the log applied since its last
/// snapshot outweighs the group's sessions (openraft's own policy still snapshots every
/// `snapshot_every_logs` entries). A snapshot is cheap to start (the state is taken in O(1)) and
/// is encoded off the apply path, so a large group does not stall while it is written.
async fn compaction_loop(node: Arc<NodeInner>) {
    let period = Duration::from_millis(node.config.sessions.expire_tick_ms);
    loop {
        tokio::time::sleep(period).await;
        for handle in node.groups.values() {
            let due = handle
                .machine
                .read()
                .expect("state lock")
                .wants_snapshot(limits::COMPACT_LOG_BYTES_MIN);
            if due {
                let _ = handle.raft.trigger().snapshot().await;
            }
        }
    }
}

/// Breaks split votes that would otherwise repeat forever.
///
/// openraft 0.9 draws each Raft instance's election timeout once, at start, and checks it only on
/// its tick (every 1.5 heartbeats). Two candidates whose timeouts fall into the same tick bucket,
/// with ticks in phase (nodes started together), time out together in every term and split the
/// vote each time: found by the simulation in a two-voter group after a membership change. A
/// group in which this node has stayed a leaderless candidate across two checks and a term
/// change campaigns again after a random delay (from the injected RNG), off the tick grid, so one
/// candidate asks first and the other, still in the older term, grants.
async fn split_vote_breaker(node: Arc<NodeInner>) {
    use rand::Rng;
    let period = Duration::from_millis(node.config.raft.election_timeout_max_ms);
    let jitter_ms = node.config.raft.election_timeout_min_ms.max(2);
    let mut stuck: BTreeMap<GroupId, u64> = BTreeMap::new();
    loop {
        tokio::time::sleep(period).await;
        for (group, handle) in &node.groups {
            let (candidate, term) = {
                let m = handle.raft.metrics();
                let m = m.borrow();
                let candidate =
                    m.state == openraft::ServerState::Candidate && m.current_leader.is_none();
                (candidate, m.current_term)
            };
            if !candidate {
                stuck.remove(group);
                continue;
            }
            match stuck.insert(*group, term) {
                Some(seen) if seen < term => {
                    stuck.remove(group);
                    let delay = crate::raft::ThreadRng.gen_range(0..jitter_ms);
                    let raft = handle.raft.clone();
                    let group = *group;
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                        let still = {
                            let m = raft.metrics();
                            let m = m.borrow();
                            m.state == openraft::ServerState::Candidate
                                && m.current_leader.is_none()
                        };
                        if still {
                            tracing::info!(%group, "repeated split vote: campaigning off-tick");
                            let _ = raft.trigger().elect().await;
                        }
                    });
                }
                _ => {}
            }
        }
    }
}
