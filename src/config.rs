//! Node configuration: a TOML file, each key overridable by a flag or an environment variable
//! ([`Overrides`] and [`NodeConfig::layered`] put them together); this module validates the
//! result.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::{GroupId, NodeId};
use crate::limits;

mod layers;
pub use layers::Overrides;

/// A cluster member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// The member's id.
    pub id: NodeId,
    /// Its address for peers and clients.
    pub addr: String,
}

impl std::str::FromStr for Peer {
    type Err = Error;

    /// `id=addr`, as `--peers` takes it (spaces around either part are ignored).
    fn from_str(item: &str) -> Result<Peer> {
        let bad = || Error::Config(format!("peer {item:?} is not id=addr"));
        let (id, addr) = item.split_once('=').ok_or_else(bad)?;
        let id = id.trim().parse().map_err(|_| bad())?;
        let addr = addr.trim();
        if addr.is_empty() {
            return Err(bad());
        }
        Ok(Peer {
            id,
            addr: addr.to_string(),
        })
    }
}

/// Everything one node needs to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id; must be one of `peers`.
    pub id: NodeId,
    /// Address to bind (e.g. `127.0.0.1:7001`).
    pub listen: String,
    /// Where the node keeps its data.
    pub data_dir: PathBuf,
    /// Every member of the cluster, this node included. All nodes must agree.
    pub peers: Vec<Peer>,
    /// Number of Raft groups; fixed when the cluster is created.
    #[serde(default = "defaults::groups")]
    pub groups: u32,
    /// Replicas per group (3, or fewer on a smaller cluster).
    #[serde(default = "defaults::replicas")]
    pub replicas: u32,
    /// Raft timings and thresholds.
    #[serde(default)]
    pub raft: RaftTuning,
    /// Session defaults.
    #[serde(default)]
    pub sessions: SessionDefaults,
    /// Per-application defaults and limits, by namespace name. Requests name a namespace (an
    /// empty name means `default`); an unconfigured one gets `sessions` defaults and no limits.
    #[serde(default)]
    pub namespaces: BTreeMap<String, Namespace>,
    /// Mutual TLS on the data port (`[tls]` with `cert`, `key`, `ca`); plain TCP when absent.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsFiles>,
    /// The RESP (Redis protocol) listener (`[redis]`); off unless `listen` is set.
    #[serde(default)]
    pub redis: RedisSettings,
}

/// The RESP listener's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// Address for Redis clients (e.g. `127.0.0.1:6380`); no listener when absent.
    pub listen: Option<String>,
    /// The password `AUTH` requires (user `default`); no authentication when absent.
    pub password: Option<String>,
    /// The namespace whose settings (e.g. `redis_delete_grace_ms`) apply; empty = `default`.
    pub namespace: String,
}

/// One application's session defaults and limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Namespace {
    /// Idle timeout for sessions created without one.
    pub idle_timeout_ms: Option<u64>,
    /// Absolute lifetime for sessions created without one.
    pub lifetime_ms: Option<u64>,
    /// Most sessions per group; then `when_full`.
    pub max_sessions_per_group: Option<u64>,
    /// `refuse` or `evict_oldest` (least recently used).
    pub when_full: crate::command::WhenFull,
    /// Most sessions per principal; then `when_principal_full`.
    pub max_sessions_per_principal: Option<u32>,
    /// `refuse` (the new login) or `evict_oldest` (end the oldest session).
    pub when_principal_full: crate::command::WhenFull,
    /// Redis keys (RESP listener): a key deleted or expired less than this long ago refuses
    /// writes that would create it again, so a slow request's final `SET` cannot resurrect a
    /// logged-out session. Absent or 0: Redis behaviour (`SET` after `DEL` creates the key).
    pub redis_delete_grace_ms: Option<u64>,
}

impl Namespace {
    /// The admission limits this namespace imposes.
    pub fn limits(&self) -> crate::command::Limits {
        crate::command::Limits {
            max_sessions: self.max_sessions_per_group,
            when_full: self.when_full,
            max_per_principal: self.max_sessions_per_principal,
            when_principal_full: self.when_principal_full,
        }
    }
}

/// Raft timings. Heartbeats must exceed a round trip plus a follower's fsync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTuning {
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Election timeout lower bound.
    pub election_timeout_min_ms: u64,
    /// Election timeout upper bound.
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries.
    pub snapshot_every_logs: u64,
    /// Log entries kept after a snapshot (for slow followers).
    pub logs_kept_after_snapshot: u64,
    /// Log entries a group's leader keeps in flight at once; writes that arrive meanwhile are
    /// packed into the next entry (see `proposer`).
    pub pipeline_depth: usize,
}

impl Default for RaftTuning {
    fn default() -> Self {
        RaftTuning {
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            snapshot_every_logs: 5000,
            logs_kept_after_snapshot: 1000,
            pipeline_depth: 1,
        }
    }
}

/// Cluster-wide session defaults.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionDefaults {
    /// Idle timeout for sessions created without one.
    pub idle_timeout_ms: u64,
    /// How often a leader advances the replicated clock and purges expired sessions. This is
    /// the precision of expiry when nothing else is written.
    pub expire_tick_ms: u64,
}

impl Default for SessionDefaults {
    fn default() -> Self {
        SessionDefaults {
            idle_timeout_ms: 30 * 60 * 1000,
            expire_tick_ms: 1000,
        }
    }
}

mod defaults {
    pub fn groups() -> u32 {
        8
    }
    pub fn replicas() -> u32 {
        3
    }
}

impl NodeConfig {
    /// Parses TOML.
    pub fn from_toml(text: &str) -> Result<Self> {
        let config: NodeConfig = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the configuration is usable.
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::Config(m));
        if self.groups == 0 || self.groups > limits::GROUPS_MAX {
            return fail(format!("groups must be 1..={}", limits::GROUPS_MAX));
        }
        if self.replicas == 0 {
            return fail("replicas must be positive".into());
        }
        let ids: std::collections::BTreeSet<_> = self.peers.iter().map(|p| p.id).collect();
        if ids.len() != self.peers.len() {
            return fail("peer ids must be unique".into());
        }
        if !ids.contains(&self.id) {
            return fail(format!("node id {} is not among the peers", self.id));
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0
            || r.election_timeout_min_ms <= r.heartbeat_ms
            || r.election_timeout_max_ms <= r.election_timeout_min_ms
        {
            return fail(
                "need 0 < heartbeat_ms < election_timeout_min_ms < election_timeout_max_ms".into(),
            );
        }
        if r.pipeline_depth == 0 || r.pipeline_depth > 64 {
            return fail("raft.pipeline_depth must be within 1..=64".into());
        }
        if self.sessions.idle_timeout_ms == 0 || self.sessions.expire_tick_ms == 0 {
            return fail("session timeouts must be positive".into());
        }
        Ok(())
    }

    /// Addresses by node id.
    pub fn addresses(&self) -> BTreeMap<NodeId, String> {
        self.peers.iter().map(|p| (p.id, p.addr.clone())).collect()
    }

    /// The replicas of `group`: `replicas` consecutive nodes (in id order) starting at
    /// `group mod nodes`, so groups' leaders and bootstrap duties spread over the nodes.
    pub fn placement(&self, group: GroupId) -> Vec<NodeId> {
        placement(
            &self.peers.iter().map(|p| p.id).collect::<Vec<_>>(),
            self.replicas,
            group,
        )
    }
}

/// Placement for a sorted-or-not list of node ids.
pub fn placement(nodes: &[NodeId], replicas: u32, group: GroupId) -> Vec<NodeId> {
    let mut ids = nodes.to_vec();
    ids.sort_unstable();
    let n = ids.len();
    let count = (replicas as usize).min(n);
    (0..count)
        .map(|i| ids[(group.0 as usize + i) % n])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
id = 2
listen = "127.0.0.1:7002"
data_dir = "/tmp/x"
peers = [{ id = 1, addr = "a:1" }, { id = 2, addr = "b:2" }, { id = 3, addr = "c:3" }]
groups = 4
[raft]
heartbeat_ms = 50
"#;

    #[test]
    fn parses_and_places() {
        let c = NodeConfig::from_toml(SAMPLE).expect("valid");
        assert_eq!(c.raft.heartbeat_ms, 50);
        assert_eq!(c.raft.election_timeout_min_ms, 500);
        assert_eq!(c.placement(GroupId(0)), vec![1, 2, 3]);
        assert_eq!(c.placement(GroupId(1)), vec![2, 3, 1]);
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        assert!(NodeConfig::from_toml("id = ").is_err());
        assert!(NodeConfig::from_toml(&SAMPLE.replace("id = 2\n", "id = 9\n")).is_err());
        assert!(NodeConfig::from_toml(&SAMPLE.replace("groups = 4", "groups = 0")).is_err());
        assert!(NodeConfig::from_toml(&format!("{SAMPLE}\nbogus = 1")).is_err());
        let tls = "\n[tls]\ncert = \"n.pem\"\nkey = \"n-key.pem\"\nca = \"ca.pem\"\n";
        let c = NodeConfig::from_toml(&format!("{SAMPLE}{tls}")).expect("tls section");
        assert_eq!(c.tls.expect("tls").ca, PathBuf::from("ca.pem"));
        let no_ca = tls.replace("ca = \"ca.pem\"\n", "");
        let err = NodeConfig::from_toml(&format!("{SAMPLE}{no_ca}")).unwrap_err();
        assert!(err.to_string().contains("missing field `ca`"), "{err}");
    }
}
