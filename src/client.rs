//! The client library: routes each session to its group's leader, follows not-leader hints,
//! and retries with a deadline under the same request id (so a retried write applies once).
//!
//! **Architecture invariant:** the client never assumes a leader. It starts from a group's
//! bootstrap replica, learns leaders from `NotLeader { hint }`, and forgets them on failure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::RngCore;

use crate::command::{Attributes, Command, Origin, Outcome};
use crate::error::{Error, Result};
use crate::id::{principal_group, ClientId, GroupId, NodeId, SessionId};
use crate::identity::ClusterId;
use crate::limits;
use crate::state::{Event, SessionView};
use crate::tls::Tls;
use crate::transport::{Connector, Pool, TcpConnector, TransportError};
use crate::wire::{ClientRequest, RequestBody, ResponseBody, WireError};
pub use crate::wire::{GroupStatus, MembershipReply, ReadReply, Topology};

/// Client settings.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Any nodes of the cluster; the rest is learned from them.
    pub endpoints: Vec<String>,
    /// Overall deadline of one operation, retries included.
    pub request_timeout: Duration,
    /// Deadline of one attempt.
    pub attempt_timeout: Duration,
    /// This client's id; random when `None`. Must be unique among live clients.
    pub client_id: Option<ClientId>,
    /// The application namespace whose defaults and limits apply ("" = cluster defaults).
    pub namespace: String,
    /// Mutual TLS: this client's certificate and the cluster CA ([`Tls::load`]). `None` speaks
    /// plain TCP, which a cluster serving TLS refuses.
    pub tls: Option<Tls>,
    /// The cluster this client must talk to; `None` takes the first node's and then insists on
    /// it. A node of another cluster is refused with [`Error::WrongCluster`].
    pub cluster_id: Option<ClusterId>,
    /// Give up connecting at once when every endpoint is hopeless (nothing listens, does not
    /// resolve, not a steadfast node, TLS refused) instead of retrying until the deadline (for
    /// command-line tools; an app starting beside its cluster wants to wait).
    pub fail_fast: bool,
}

impl ClientConfig {
    /// Defaults for `endpoints`.
    pub fn new(endpoints: Vec<String>) -> Self {
        ClientConfig {
            endpoints,
            request_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(2),
            client_id: None,
            namespace: String::new(),
            tls: None,
            cluster_id: None,
            fail_fast: false,
        }
    }

    /// Connects with mutual TLS as `tls`.
    pub fn with_tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// Options for a new session.
#[derive(Clone, Debug, Default)]
pub struct CreateOptions {
    /// Idle timeout; the cluster default when `None`.
    pub idle_timeout: Option<Duration>,
    /// Absolute lifetime, if any.
    pub lifetime: Option<Duration>,
    /// The user the session belongs to (the id is then drawn in the principal's home group).
    pub principal: Option<String>,
}

/// An attribute-level change.
#[derive(Clone, Debug, Default)]
pub struct Update {
    /// Attributes to set.
    pub set: Attributes,
    /// Attributes to remove.
    pub remove: BTreeSet<String>,
    /// Apply only at this version (compare-and-set).
    pub expected_version: Option<u64>,
    /// A new idle timeout.
    pub idle_timeout: Option<Duration>,
}

impl Update {
    /// Sets one attribute.
    pub fn set(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.set.insert(name.into(), value.into());
        self
    }

    /// Removes one attribute.
    pub fn remove(mut self, name: impl Into<String>) -> Self {
        self.remove.insert(name.into());
        self
    }

    /// Makes the update conditional on `version`.
    pub fn if_version(mut self, version: u64) -> Self {
        self.expected_version = Some(version);
        self
    }
}

/// A write's result: the session's version after it and the replicated time it happened at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// The version after the write.
    pub version: u64,
    /// Replicated time of the write.
    pub server_time_ms: u64,
}

/// A connection to a cluster.
#[derive(Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    pool: Pool,
    config: ClientConfig,
    topology: Topology,
    client_id: ClientId,
    seq: AtomicU64,
    /// Last known leader address per group.
    leaders: Mutex<BTreeMap<GroupId, String>>,
}

impl Client {
    /// Connects over TCP, with mutual TLS when `config.tls` is set.
    pub async fn connect(config: ClientConfig) -> Result<Client> {
        let connector: Arc<dyn Connector> = match &config.tls {
            Some(tls) => Arc::new(tls.connector()),
            None => Arc::new(TcpConnector),
        };
        Self::connect_with(config, connector).await
    }

    /// Connects through `connector` (the simulation passes its own).
    pub async fn connect_with(
        config: ClientConfig,
        connector: Arc<dyn Connector>,
    ) -> Result<Client> {
        if config.endpoints.is_empty() {
            return Err(Error::Config("bad endpoint: none given".into()));
        }
        if let Some(bad) = config
            .endpoints
            .iter()
            .find(|e| e.trim().is_empty() || !e.contains(':') || e.ends_with(':'))
        {
            return Err(Error::Config(format!(
                "bad endpoint {bad:?}: expected host:port"
            )));
        }
        let pool = Pool::with_hello(connector, config.cluster_id.clone(), None);
        let topology = fetch_topology(&pool, &config).await?;
        let client_id = config
            .client_id
            .unwrap_or_else(|| ClientId(rand::rngs::OsRng.next_u64()));
        let inner = ClientInner {
            pool,
            config,
            topology,
            client_id,
            seq: AtomicU64::new(1),
            leaders: Mutex::default(),
        };
        Ok(Client {
            inner: Arc::new(inner),
        })
    }

    /// The cluster's shape.
    pub fn topology(&self) -> &Topology {
        &self.inner.topology
    }

    /// The cluster this client talks to.
    pub fn cluster_id(&self) -> Option<ClusterId> {
        self.inner.pool.cluster_id()
    }

    /// The namespace whose defaults and limits apply to this client's writes.
    pub fn namespace(&self) -> &str {
        &self.inner.config.namespace
    }

    /// This client's id.
    pub fn client_id(&self) -> ClientId {
        self.inner.client_id
    }

    /// Creates a session under a fresh random id.
    pub async fn create(
        &self,
        attributes: Attributes,
        options: CreateOptions,
    ) -> Result<(SessionId, Written)> {
        for _ in 0..8 {
            let id = match &options.principal {
                Some(p) => SessionId::generate_in(principal_group(p, self.groups()), self.groups()),
                None => SessionId::generate(),
            };
            match self
                .create_with_id(id, attributes.clone(), options.clone())
                .await
            {
                Err(Error::Exists) => continue,
                other => return other.map(|w| (id, w)),
            }
        }
        Err(Error::Unavailable(
            "could not find an unused session id".into(),
        ))
    }

    /// Creates a session under `id`; [`Error::Exists`] if it is taken.
    pub async fn create_with_id(
        &self,
        id: SessionId,
        attributes: Attributes,
        options: CreateOptions,
    ) -> Result<Written> {
        let command = Command::Create {
            id,
            attributes,
            idle_timeout_ms: options
                .idle_timeout
                .map_or(0, |d| (d.as_millis() as u64).max(1)),
            lifetime_ms: options.lifetime.map(|d| d.as_millis() as u64),
            principal: options.principal,
            limits: Default::default(),
        };
        self.write(id, command).await
    }

    /// Reads a session linearizably; `None` if it does not exist or expired.
    pub async fn get(&self, id: SessionId) -> Result<Option<SessionView>> {
        Ok(self.read(id).await?.session)
    }

    /// Reads a session linearizably, with the replicated time and index of the read.
    pub async fn read(&self, id: SessionId) -> Result<ReadReply> {
        let body = RequestBody::Client(ClientRequest::Read { id });
        match self.call(id.group(self.groups()), body).await? {
            ResponseBody::Read(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// Applies an attribute-level update.
    pub async fn update(&self, id: SessionId, update: Update) -> Result<Written> {
        let command = Command::Update {
            id,
            set: update.set,
            remove: update.remove,
            expected_version: update.expected_version,
            idle_timeout_ms: update.idle_timeout.map(|d| (d.as_millis() as u64).max(1)),
        };
        self.write(id, command).await
    }

    /// Extends a session's idle deadline; returns its (unchanged) version.
    pub async fn touch(&self, id: SessionId) -> Result<Written> {
        self.write(id, Command::Touch { id }).await
    }

    /// Deletes a session, optionally only at `expected_version`.
    pub async fn delete(&self, id: SessionId, expected_version: Option<u64>) -> Result<Written> {
        self.write(
            id,
            Command::Delete {
                id,
                expected_version,
            },
        )
        .await
    }

    /// Status of every group on every node that answers.
    pub async fn status(&self) -> Vec<(String, Result<Vec<GroupStatus>>)> {
        let mut out = Vec::new();
        for (_, addr) in &self.inner.topology.nodes {
            let body = RequestBody::Client(ClientRequest::Status);
            let r = match self
                .inner
                .pool
                .call(addr, GroupId(0), &body, self.inner.config.attempt_timeout)
                .await
            {
                Ok(ResponseBody::Status(s)) => Ok(s),
                Ok(other) => Err(unexpected(other)),
                Err(e) => Err(transport(e)),
            };
            out.push((addr.clone(), r));
        }
        out
    }

    /// Makes `voters` the voters of `group` (node id and address; an empty address means the
    /// one the cluster is configured with). New voters are caught up as learners first; voters
    /// left out leave the group. Returns the committed membership. Safe to repeat: asking for
    /// the current voters changes nothing, and a change cut short resumes.
    pub async fn change_membership(
        &self,
        group: GroupId,
        voters: &[(NodeId, String)],
    ) -> Result<MembershipReply> {
        let body = RequestBody::Client(ClientRequest::ChangeMembership {
            voters: voters.to_vec(),
        });
        match self.call(group, body).await? {
            ResponseBody::Membership(m) => Ok(m),
            other => Err(unexpected(other)),
        }
    }

    /// A linearizable point-in-time image of one group (a checked record of
    /// [`crate::backup::GroupImage`]), fetched in chunks from the group's leader. Starts over
    /// (up to 3 times) if the leader changes midway.
    pub async fn backup_group(&self, group: GroupId) -> Result<Vec<u8>> {
        let mut last = Error::Timeout;
        for _ in 0..3 {
            match self.fetch_image(group).await {
                Ok(image) => return Ok(image),
                Err(e @ Error::Protocol(WireError::Invalid(_))) => last = e,
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    async fn fetch_image(&self, group: GroupId) -> Result<Vec<u8>> {
        let mut image = Vec::new();
        let mut token = 0;
        loop {
            let body = RequestBody::Client(ClientRequest::Backup {
                token,
                offset: image.len() as u64,
            });
            match self.call(group, body).await? {
                ResponseBody::BackupChunk {
                    token: t,
                    total,
                    bytes,
                } => {
                    let total = usize::try_from(total)
                        .ok()
                        .filter(|t| *t <= limits::SNAPSHOT_BYTES_MAX)
                        .ok_or_else(|| {
                            Error::Protocol(WireError::Malformed(format!("image of {total} bytes")))
                        })?;
                    if bytes.is_empty() && image.len() < total {
                        return Err(Error::Protocol(WireError::Malformed(
                            "empty backup chunk".into(),
                        )));
                    }
                    token = t;
                    image.extend_from_slice(&bytes);
                    if image.len() >= total {
                        image.truncate(total);
                        return Ok(image);
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
    }

    /// A fresh request id of this client, for callers that build their own writes (the RESP
    /// listener sends `Command::Redis` batches through [`Client::call`]): a write retried under
    /// it applies once.
    pub fn next_origin(&self) -> Origin {
        Origin {
            client: self.inner.client_id,
            seq: self.inner.seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Sends one write with a fresh request id, retrying it (same id) until the deadline.
    pub async fn write(&self, id: SessionId, command: Command) -> Result<Written> {
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        self.write_as(
            id,
            Origin {
                client: self.inner.client_id,
                seq,
            },
            command,
        )
        .await
    }

    /// Sends one write under an explicit request id (for tests of exactly-once delivery).
    pub async fn write_as(
        &self,
        id: SessionId,
        origin: Origin,
        command: Command,
    ) -> Result<Written> {
        let namespace = self.inner.config.namespace.clone();
        let body = RequestBody::Client(ClientRequest::Write {
            origin,
            command,
            namespace,
        });
        let response = match self.call(id.group(self.groups()), body).await? {
            ResponseBody::Written(r) => r,
            other => return Err(unexpected(other)),
        };
        let server_time_ms = response.server_time_ms;
        match response.outcome {
            Outcome::Ok { version } => Ok(Written {
                version,
                server_time_ms,
            }),
            Outcome::Exists => Err(Error::Exists),
            Outcome::NotFound => Err(Error::NotFound),
            Outcome::Conflict { current_version } => Err(Error::Conflict { current_version }),
            Outcome::TooLarge { bytes, limit } => Err(Error::TooLarge { bytes, limit }),
            Outcome::Invalid { reason } => Err(Error::Invalid(reason)),
            Outcome::LimitReached { reason } => Err(Error::LimitReached(reason)),
            Outcome::Purged { sessions } => Ok(Written {
                version: sessions,
                server_time_ms,
            }),
            other => Err(Error::Invalid(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Moves a session to a fresh 128-bit id and kills the old one (do this at login: it
    /// defeats session fixation). Returns the new id and its version.
    pub async fn rotate(&self, old: SessionId) -> Result<(SessionId, Written)> {
        self.rotate_into(old, SessionId::generate(), None).await
    }

    /// Logs `principal` in on session `old`: rotates it to a fresh id in the principal's home
    /// group and tags it, atomically enforcing the namespace's per-principal limit.
    pub async fn login(&self, old: SessionId, principal: &str) -> Result<(SessionId, Written)> {
        let home = principal_group(principal, self.groups());
        let new = SessionId::generate_in(home, self.groups());
        self.rotate_into(old, new, Some(principal.to_string()))
            .await
    }

    /// Rotates `old` to the caller's `new` id (normally use [`Client::rotate`], which draws a
    /// fresh one). Rotation protocol. Same group: one atomic `Rotate`. Across groups: `RotateOut` kills the
    /// old id and returns the data, then `RotateIn` (retried under one request id until the
    /// deadline) recreates it. It fails safe: the old id is dead from the first step on, so at
    /// worst the session is lost (the user logs in again); two live copies never exist.
    pub async fn rotate_into(
        &self,
        old: SessionId,
        new: SessionId,
        principal: Option<String>,
    ) -> Result<(SessionId, Written)> {
        let limits = Default::default();
        if old.group(self.groups()) == new.group(self.groups()) {
            let w = self
                .write(
                    old,
                    Command::Rotate {
                        old,
                        new,
                        principal,
                        limits,
                    },
                )
                .await?;
            return Ok((new, w));
        }
        let seq = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        let origin = Origin {
            client: self.inner.client_id,
            seq,
        };
        let body = RequestBody::Client(ClientRequest::Write {
            origin,
            command: Command::RotateOut { old, new },
            namespace: self.inner.config.namespace.clone(),
        });
        let session = match self.call(old.group(self.groups()), body).await? {
            ResponseBody::Written(r) => match r.outcome {
                Outcome::RotatedOut { session } => session,
                Outcome::NotFound => return Err(Error::NotFound),
                other => return Err(Error::Invalid(format!("unexpected outcome {other:?}"))),
            },
            other => return Err(unexpected(other)),
        };
        let w = self
            .write(
                new,
                Command::RotateIn {
                    new,
                    from: old,
                    session,
                    principal,
                    limits,
                },
            )
            .await?;
        Ok((new, w))
    }

    /// Live sessions of `principal` (a linearizable read of its home group).
    pub async fn sessions_of(&self, principal: &str) -> Result<Vec<SessionId>> {
        let body = RequestBody::Client(ClientRequest::Principal {
            principal: principal.to_string(),
        });
        match self
            .call(principal_group(principal, self.groups()), body)
            .await?
        {
            ResponseBody::Sessions(ids) => Ok(ids),
            other => Err(unexpected(other)),
        }
    }

    /// Ends every session of `principal` ("log out everywhere"); returns how many.
    pub async fn invalidate_principal(&self, principal: &str) -> Result<u64> {
        let home = principal_group(principal, self.groups());
        // Any id in the home group routes the write there.
        let route = SessionId::generate_in(home, self.groups());
        let w = self
            .write(
                route,
                Command::InvalidatePrincipal {
                    principal: principal.to_string(),
                },
            )
            .await?;
        Ok(w.version)
    }

    /// One batch of `group`'s events from `from_index` (long-polls up to half the attempt
    /// deadline when there are none yet); returns the
    /// events and the index to resume from. [`Error::Compacted`] if `from_index` is too old.
    pub async fn watch_once(&self, group: GroupId, from_index: u64) -> Result<(Vec<Event>, u64)> {
        let wait_ms = (self.inner.config.attempt_timeout.as_millis() as u64) / 2;
        let body = RequestBody::Client(ClientRequest::Watch {
            from_index,
            wait_ms,
        });
        match self.call(group, body).await {
            Ok(ResponseBody::Events { events, next_index }) => Ok((events, next_index)),
            Ok(other) => Err(unexpected(other)),
            Err(Error::Protocol(WireError::Compacted { first_available })) => {
                Err(Error::Compacted { first_available })
            }
            Err(e) => Err(e),
        }
    }

    /// `group`'s events from `from_index` on, as a stream. Resuming after a disconnect from the
    /// last seen index + 1 yields every event once, in order.
    pub fn watch(
        &self,
        group: GroupId,
        from_index: u64,
    ) -> impl futures_util::Stream<Item = Result<Event>> + Send + 'static {
        let client = self.clone();
        let state = (
            client,
            from_index,
            std::collections::VecDeque::<Event>::new(),
            false,
        );
        futures_util::stream::unfold(
            state,
            move |(client, mut next, mut buffer, mut failed)| async move {
                loop {
                    if failed {
                        return None;
                    }
                    if let Some(e) = buffer.pop_front() {
                        return Some((Ok(e), (client, next, buffer, failed)));
                    }
                    match client.watch_once(group, next).await {
                        Ok((events, resume)) => {
                            next = resume;
                            buffer.extend(events);
                        }
                        Err(Error::Timeout | Error::Unavailable(_)) => continue,
                        Err(e) => {
                            failed = true;
                            return Some((Err(e), (client, next, buffer, failed)));
                        }
                    }
                }
            },
        )
    }

    fn groups(&self) -> u32 {
        self.inner.topology.groups
    }

    /// Sends `body` to `group`'s leader, following hints and retrying until the deadline.
    pub async fn call(&self, group: GroupId, body: RequestBody) -> Result<ResponseBody> {
        let inner = &self.inner;
        let deadline = tokio::time::Instant::now() + inner.config.request_timeout;
        let replicas = self.replica_addresses(group)?;
        let mut target = self
            .cached_leader(group)
            .unwrap_or_else(|| replicas[0].clone());
        let mut attempt: u32 = 0;
        loop {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(Error::Timeout);
            }
            let budget = remaining.min(inner.config.attempt_timeout);
            let outcome = inner.pool.call(&target, group, &body, budget).await;
            attempt += 1;
            match outcome {
                Err(e) if definite(&e) => return Err(transport(e)),
                Ok(ResponseBody::Error(WireError::NotLeader {
                    leader: Some((_, addr)),
                })) if addr != target => {
                    self.set_leader(group, Some(addr.clone()));
                    target = addr;
                    continue;
                }
                Ok(ResponseBody::Error(
                    WireError::NotLeader { .. } | WireError::Unavailable(_),
                ))
                | Err(_) => {
                    self.set_leader(group, None);
                    target = replicas[attempt as usize % replicas.len()].clone();
                }
                Ok(ResponseBody::Error(e)) => return Err(Error::Protocol(e)),
                Ok(reply) => {
                    self.set_leader(group, Some(target));
                    return Ok(reply);
                }
            }
            let backoff_ms = (5u64 << attempt.min(6)).min(200);
            tokio::time::sleep(Duration::from_millis(backoff_ms).min(remaining)).await;
        }
    }

    /// Where to look for `group`'s leader: its voters as the topology knew them, then every
    /// other node (membership may have changed since; a node that is not a member answers
    /// `NotLeader` with whatever leader it knows of).
    fn replica_addresses(&self, group: GroupId) -> Result<Vec<String>> {
        let t = &self.inner.topology;
        let members = t
            .placement
            .get(group.0 as usize)
            .ok_or(Error::Protocol(WireError::UnknownGroup(group.0)))?;
        let address = |m: &NodeId| t.nodes.iter().find(|(id, _)| id == m).map(|(_, a)| a);
        let mut addrs: Vec<String> = members.iter().filter_map(address).cloned().collect();
        for (id, a) in &t.nodes {
            if !members.contains(id) {
                addrs.push(a.clone());
            }
        }
        if addrs.is_empty() {
            return Err(Error::Config(format!(
                "group {group} has no known replicas"
            )));
        }
        Ok(addrs)
    }

    fn cached_leader(&self, group: GroupId) -> Option<String> {
        self.inner
            .leaders
            .lock()
            .expect("leader cache lock")
            .get(&group)
            .cloned()
    }

    fn set_leader(&self, group: GroupId, addr: Option<String>) {
        let mut leaders = self.inner.leaders.lock().expect("leader cache lock");
        match addr {
            Some(a) => leaders.insert(group, a),
            None => leaders.remove(&group),
        };
    }
}

async fn fetch_topology(pool: &Pool, config: &ClientConfig) -> Result<Topology> {
    let body = RequestBody::Client(ClientRequest::Topology);
    let deadline = tokio::time::Instant::now() + config.request_timeout;
    let mut last: Option<Error> = None;
    loop {
        // Endpoints that cannot be a running node of this cluster (nothing listens, the host
        // does not resolve, another protocol, another cluster): when all of them are, say so at
        // once instead of retrying until the deadline.
        let mut hopeless = Vec::new();
        for endpoint in &config.endpoints {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            let budget = remaining.min(config.attempt_timeout);
            if budget.is_zero() {
                break;
            }
            match pool.call(endpoint, GroupId(0), &body, budget).await {
                Ok(ResponseBody::Topology(t)) => return Ok(t),
                Err(e @ TransportError::Refused { .. }) => return Err(transport(e)),
                Ok(other) => last = Some(unexpected(other)),
                Err(TransportError::Closed) => {
                    let hint = if config.tls.is_some() {
                        ""
                    } else {
                        " (a cluster serving mutual TLS closes plain connections: configure the \
                         client's TLS)"
                    };
                    last = Some(Error::Unavailable(format!(
                        "{endpoint} closed the connection without answering{hint}"
                    )));
                }
                Err(e @ TransportError::NotSteadfast { .. }) if config.tls.is_none() => {
                    // A node serving mutual TLS answers a plain hello with a TLS alert.
                    let m = format!(
                        "{e}; a cluster serving mutual TLS answers plain connections this way: \
                         configure the client's TLS"
                    );
                    hopeless.push(m.clone());
                    last = Some(Error::Unavailable(m));
                }
                // A timeout says less than an earlier, definite failure.
                Err(TransportError::Timeout(_)) => {
                    last.get_or_insert(Error::Timeout);
                }
                Err(e) => {
                    if definite(&e) || unreachable(&e) {
                        hopeless.push(e.to_string());
                    }
                    last = Some(transport(e));
                }
            }
        }
        if config.fail_fast && hopeless.len() == config.endpoints.len() {
            return Err(Error::Unavailable(hopeless.join("; ")));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(last.unwrap_or(Error::Timeout));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a failure is an answer (retrying the same node cannot help).
fn definite(e: &TransportError) -> bool {
    matches!(
        e,
        TransportError::Refused { .. }
            | TransportError::Rejected { .. }
            | TransportError::NotSteadfast { .. }
    )
}

/// Whether connecting failed because nothing listens there or the address does not resolve.
fn unreachable(e: &TransportError) -> bool {
    match e {
        TransportError::Connect { source, .. } => {
            source.kind() == std::io::ErrorKind::ConnectionRefused
                || source.kind() == std::io::ErrorKind::InvalidInput
                // A TLS handshake that failed on the certificates.
                || source.kind() == std::io::ErrorKind::InvalidData
                || source.to_string().contains("failed to lookup address")
                || source.to_string().contains("invalid socket address")
        }
        _ => false,
    }
}

fn transport(e: TransportError) -> Error {
    match e {
        TransportError::Timeout(_) | TransportError::Closed => Error::Timeout,
        TransportError::Connect { source, .. } => Error::Io(source),
        TransportError::BadResponse(w) => Error::Protocol(w),
        e @ TransportError::Refused { .. } => Error::WrongCluster(e.to_string()),
        e @ (TransportError::Rejected { .. } | TransportError::NotSteadfast { .. }) => Error::Io(
            std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()),
        ),
    }
}

fn unexpected(body: ResponseBody) -> Error {
    match body {
        ResponseBody::Error(e) => Error::Protocol(e),
        other => Error::Protocol(WireError::Malformed(format!(
            "unexpected response {other:?}"
        ))),
    }
}
