//! Node identity: which cluster a data directory belongs to, as which node, with how many groups.
//!
//! Every data directory records, when it is created, an [`Identity`] in `identity.toml` beside
//! sled (written with write-temp, fsync, rename, fsync-dir). A node refuses to start when its
//! configuration disagrees with the directory: another `--id` (a node voting under two
//! identities breaks Raft's safety), another `--groups` (groups would sit without a leader), or
//! another `--cluster-id`. Nodes and clients then say their cluster id when they connect
//! ([`crate::wire::Hello`]), and a node refuses Raft traffic from a peer of another cluster.
//!
//! **Where a new directory's cluster id comes from.** `--cluster-id` when given (`up` draws a
//! random one; a restore derives one from the backup, so a restored cluster never joins the live
//! one it was backed up from). Otherwise the first nodes of a cluster derive it from what they
//! share by requirement: the peers list, group count and replica count ([`ClusterId::derived`]).
//! A node started with `--join` asks its peers instead ([`discover`]), since its peers list
//! names nodes the cluster was not created with.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::NodeConfig;
use crate::id::{fnv1a64, GroupId, NodeId};
use crate::transport::{Connector, Pool};
use crate::wire::{ClientRequest, RequestBody, ResponseBody};

/// The file beside sled that holds a data directory's identity.
pub const IDENTITY_FILE: &str = "identity.toml";
/// The identity format this build writes and reads.
pub const IDENTITY_FORMAT: u32 = 1;
/// The longest cluster id.
pub const CLUSTER_ID_BYTES_MAX: usize = 64;
/// The largest identity file read (it is a few lines).
const IDENTITY_FILE_BYTES_MAX: u64 = 4096;
/// How long a `--join` node keeps asking its peers for the cluster id.
const DISCOVER_PATIENCE: Duration = Duration::from_secs(60);

/// A cluster's name: 1 to 64 characters out of `A-Z a-z 0-9 . _ -`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClusterId(String);

impl ClusterId {
    /// Checks `name` and makes it a cluster id.
    pub fn new(name: &str) -> Result<ClusterId, IdentityError> {
        let ok = !name.is_empty()
            && name.len() <= CLUSTER_ID_BYTES_MAX
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(ClusterId(name.to_string()))
        } else {
            Err(IdentityError::BadClusterId(name.chars().take(80).collect()))
        }
    }

    /// The id the first nodes of a cluster agree on without talking: a hash of the peers (ids and
    /// addresses, in id order), the group count and the replica count, which they share.
    pub fn derived(config: &NodeConfig) -> ClusterId {
        let mut peers: Vec<_> = config.peers.iter().map(|p| (p.id, &p.addr)).collect();
        peers.sort();
        let mut text = format!("groups={};replicas={}", config.groups, config.replicas);
        for (id, addr) in peers {
            text.push_str(&format!(";{id}={addr}"));
        }
        ClusterId(format!("c-{:016x}", fnv1a64(text.as_bytes())))
    }

    /// A fresh random id with `prefix` (for `up` and `recover`).
    pub fn random(prefix: &str) -> ClusterId {
        use rand::RngCore;
        let n = rand::rngs::OsRng.next_u64();
        let prefix: String = prefix.chars().take(CLUSTER_ID_BYTES_MAX - 17).collect();
        ClusterId::new(&format!("{prefix}-{n:016x}"))
            .unwrap_or_else(|_| ClusterId(format!("c-{n:016x}")))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ClusterId {
    type Err = IdentityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ClusterId::new(s)
    }
}

impl TryFrom<String> for ClusterId {
    type Error = IdentityError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        ClusterId::new(&s)
    }
}

impl From<ClusterId> for String {
    fn from(c: ClusterId) -> String {
        c.0
    }
}

/// What a data directory was created as.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// [`IDENTITY_FORMAT`].
    pub format: u32,
    /// The cluster the directory belongs to.
    pub cluster_id: ClusterId,
    /// The node it belongs to.
    pub node_id: NodeId,
    /// The cluster's group count (fixed when it is created).
    pub groups: u32,
}

/// Why a node may not start on a data directory, or the identity cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The directory belongs to another node: start it under its own id.
    #[error(
        "data directory {dir} belongs to node {recorded} of cluster {cluster}, but this node is \
         started as --id {configured}: start it with --id {recorded}, or give node {configured} \
         a new, empty data directory"
    )]
    NodeId {
        /// The data directory.
        dir: PathBuf,
        /// Its node id.
        recorded: NodeId,
        /// The configured id.
        configured: NodeId,
        /// Its cluster.
        cluster: ClusterId,
    },
    /// The group count differs: it is fixed when a cluster is created.
    #[error(
        "data directory {dir} was created with {recorded} groups, but this node is started with \
         --groups {configured}: the group count is fixed when a cluster is created; start it \
         with --groups {recorded}"
    )]
    Groups {
        /// The data directory.
        dir: PathBuf,
        /// Its group count.
        recorded: u32,
        /// The configured count.
        configured: u32,
    },
    /// The directory belongs to another cluster.
    #[error(
        "data directory {dir} belongs to cluster {recorded}, but this node is started with \
         --cluster-id {configured}: point --data-dir at a directory of cluster {configured}, or \
         drop --cluster-id"
    )]
    Cluster {
        /// The data directory.
        dir: PathBuf,
        /// Its cluster.
        recorded: ClusterId,
        /// The configured cluster.
        configured: ClusterId,
    },
    /// A new cluster asks for more replicas than it has nodes.
    #[error(
        "replicas = {replicas} but the peers list names {peers} node(s): list every member in \
         --peers, or lower --replicas to {peers}"
    )]
    Replicas {
        /// Asked-for replicas per group.
        replicas: u32,
        /// Configured peers.
        peers: usize,
    },
    /// Not a valid cluster id.
    #[error(
        "cluster id {0:?} is not valid: use 1 to {CLUSTER_ID_BYTES_MAX} characters out of \
         A-Z a-z 0-9 . _ -"
    )]
    BadClusterId(String),
    /// The identity file is damaged or of an unknown format.
    #[error("{path} is not a valid identity file ({detail}); it was not written by this build")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A `--join` node could not learn the cluster id.
    #[error(
        "could not learn the cluster id from any peer ({0}); start the node once its peers run, \
         or pass --cluster-id"
    )]
    Discover(String),
    /// Reading or writing the identity failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl Identity {
    /// The identity of a new directory for `config` in `cluster_id`.
    pub fn new(config: &NodeConfig, cluster_id: ClusterId) -> Identity {
        Identity {
            format: IDENTITY_FORMAT,
            cluster_id,
            node_id: config.id,
            groups: config.groups,
        }
    }

    /// Checks that `config` (and, when given, `cluster_id`) may run on the directory `dir`
    /// this identity was read from.
    pub fn check(
        &self,
        dir: &Path,
        config: &NodeConfig,
        cluster_id: Option<&ClusterId>,
    ) -> Result<(), IdentityError> {
        if let Some(c) = cluster_id.filter(|c| **c != self.cluster_id) {
            return Err(IdentityError::Cluster {
                dir: dir.to_path_buf(),
                recorded: self.cluster_id.clone(),
                configured: c.clone(),
            });
        }
        if self.node_id != config.id {
            return Err(IdentityError::NodeId {
                dir: dir.to_path_buf(),
                recorded: self.node_id,
                configured: config.id,
                cluster: self.cluster_id.clone(),
            });
        }
        if self.groups != config.groups {
            return Err(IdentityError::Groups {
                dir: dir.to_path_buf(),
                recorded: self.groups,
                configured: config.groups,
            });
        }
        Ok(())
    }
}

/// Reads `dir`'s identity; `None` if it has none yet.
pub fn load(dir: &Path) -> Result<Option<Identity>, IdentityError> {
    let path = dir.join(IDENTITY_FILE);
    let io = |source| IdentityError::Io {
        path: path.clone(),
        source,
    };
    let len = match std::fs::metadata(&path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let damaged = |detail: String| IdentityError::Damaged {
        path: path.clone(),
        detail,
    };
    if len > IDENTITY_FILE_BYTES_MAX {
        return Err(damaged(format!("{len} bytes")));
    }
    let text = std::fs::read_to_string(&path).map_err(io)?;
    let identity: Identity = toml::from_str(&text).map_err(|e| damaged(e.message().to_string()))?;
    if identity.format != IDENTITY_FORMAT {
        return Err(damaged(format!("format {}", identity.format)));
    }
    if identity.groups == 0 || identity.groups > crate::limits::GROUPS_MAX {
        return Err(damaged(format!("{} groups", identity.groups)));
    }
    Ok(Some(identity))
}

/// Writes `identity` into `dir` durably (a crash leaves the old file or the new one, whole).
pub fn store(dir: &Path, identity: &Identity) -> Result<(), IdentityError> {
    let path = dir.join(IDENTITY_FILE);
    let text = format!(
        "# Written when this data directory was created; a node refuses to start on it under \
         another id, group count or cluster.\n{}",
        toml::to_string(identity).expect("an identity always serializes")
    );
    std::fs::create_dir_all(dir)
        .and_then(|_| crate::raft::backend::write_durably(dir, &path, text.as_bytes()))
        .map_err(|source| IdentityError::Io { path, source })
}

/// How a node starting on a data directory decides its identity.
pub struct StartIdentity<'a> {
    /// The node's configuration (its `data_dir` is the directory).
    pub config: &'a NodeConfig,
    /// `--cluster-id`, if given.
    pub cluster_id: Option<ClusterId>,
    /// `--join`: a new directory learns the cluster id from the peers.
    pub join: bool,
    /// How to reach peers (for `join`).
    pub connector: Arc<dyn Connector>,
}

/// Checks the data directory's identity against the configuration, or records one in a new
/// directory (also in one that predates identity files). Call before opening the storage.
pub async fn establish(start: StartIdentity<'_>) -> Result<Identity, IdentityError> {
    let StartIdentity {
        config,
        cluster_id,
        join,
        connector,
    } = start;
    let dir = &config.data_dir;
    if let Some(identity) = load(dir)? {
        identity.check(dir, config, cluster_id.as_ref())?;
        return Ok(identity);
    }
    let cluster_id = match cluster_id {
        Some(c) => c,
        None if join => discover(config, connector).await?,
        None => {
            let peers = config.peers.len();
            if config.replicas as usize > peers {
                return Err(IdentityError::Replicas {
                    replicas: config.replicas,
                    peers,
                });
            }
            ClusterId::derived(config)
        }
    };
    let identity = Identity::new(config, cluster_id);
    store(dir, &identity)?;
    tracing::info!(
        cluster = %identity.cluster_id,
        node = identity.node_id,
        groups = identity.groups,
        dir = %dir.display(),
        "recorded the data directory's identity"
    );
    Ok(identity)
}

/// Asks the configured peers (other than this node) for the cluster id, until one answers.
pub async fn discover(
    config: &NodeConfig,
    connector: Arc<dyn Connector>,
) -> Result<ClusterId, IdentityError> {
    let pool = Pool::new(connector);
    let own = config.addresses().get(&config.id).cloned();
    let peers: Vec<String> = config
        .peers
        .iter()
        .filter(|p| p.id != config.id && Some(&p.addr) != own.as_ref())
        .map(|p| p.addr.clone())
        .collect();
    if peers.is_empty() {
        return Err(IdentityError::Discover("no other peers configured".into()));
    }
    let deadline = tokio::time::Instant::now() + DISCOVER_PATIENCE;
    let body = RequestBody::Client(ClientRequest::Topology);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        for addr in &peers {
            match pool
                .call(addr, GroupId(0), &body, Duration::from_secs(2))
                .await
            {
                Ok(ResponseBody::Topology(_)) => {
                    if let Some(c) = pool.cluster_id() {
                        return Ok(c);
                    }
                }
                Ok(other) => last = format!("{addr}: unexpected answer {other:?}"),
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(IdentityError::Discover(last))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Peer;

    fn config(dir: &Path, id: NodeId, groups: u32) -> NodeConfig {
        let peers = (1..=3)
            .map(|i| Peer {
                id: i,
                addr: format!("127.0.0.1:{}", 7000 + i),
            })
            .collect();
        NodeConfig {
            id,
            listen: "127.0.0.1:7001".into(),
            data_dir: dir.to_path_buf(),
            peers,
            groups,
            replicas: 3,
            raft: Default::default(),
            sessions: Default::default(),
            namespaces: Default::default(),
            tls: None,
            redis: Default::default(),
        }
    }

    #[test]
    fn an_identity_round_trips_and_mismatches_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let c = config(dir.path(), 1, 2);
        let id = Identity::new(&c, ClusterId::derived(&c));
        store(dir.path(), &id).expect("store");
        let back = load(dir.path()).expect("load").expect("present");
        assert_eq!(back, id);
        back.check(dir.path(), &c, None).expect("same config");
        let e = back.check(dir.path(), &config(dir.path(), 2, 2), None);
        assert!(matches!(e, Err(IdentityError::NodeId { recorded: 1, .. })));
        let e = back.check(dir.path(), &config(dir.path(), 1, 8), None);
        assert!(matches!(e, Err(IdentityError::Groups { recorded: 2, .. })));
        let other = ClusterId::new("other").expect("valid");
        let e = back.check(dir.path(), &c, Some(&other));
        assert!(matches!(e, Err(IdentityError::Cluster { .. })));
        for msg in [
            back.check(dir.path(), &config(dir.path(), 2, 2), None),
            back.check(dir.path(), &c, Some(&other)),
        ] {
            assert!(!msg.unwrap_err().to_string().contains('\n'));
        }
    }

    #[test]
    fn damaged_identities_and_bad_cluster_ids_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        for text in [
            "",
            "format = 1",
            "format = 2\ncluster_id = \"a\"\nnode_id = 1\ngroups = 2",
        ] {
            std::fs::write(dir.path().join(IDENTITY_FILE), text).expect("write");
            assert!(matches!(
                load(dir.path()),
                Err(IdentityError::Damaged { .. })
            ));
        }
        std::fs::write(
            dir.path().join(IDENTITY_FILE),
            "format = 1\ncluster_id = \"a b\"\nnode_id = 1\ngroups = 2",
        )
        .expect("write");
        assert!(load(dir.path()).is_err());
        assert!(ClusterId::new("").is_err());
        assert!(ClusterId::new(&"x".repeat(65)).is_err());
        assert!(ClusterId::new("shop-prod_2.a").is_ok());
        let c = config(dir.path(), 1, 2);
        let mut d = config(dir.path(), 2, 2);
        assert_eq!(ClusterId::derived(&c), ClusterId::derived(&d));
        d.groups = 3;
        assert_ne!(ClusterId::derived(&c), ClusterId::derived(&d));
        assert_ne!(ClusterId::random("up"), ClusterId::random("up"));
    }
}
