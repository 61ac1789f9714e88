//! Layering a node's configuration: a TOML file, then values given as flags or environment
//! variables on top (flag > environment > file > built-in default; clap merges the first two).
//!
//! Every key of the file has an override here, named as in the file. The result is validated
//! like a file ([`NodeConfig::from_toml`]), so a layered configuration cannot be one a file
//! could not express.

use std::path::PathBuf;

use super::{NodeConfig, Peer};
use crate::error::{Error, Result};
use crate::id::NodeId;
use crate::tls::TlsFiles;

/// Values that replace (or add to) the configuration file's. `None` keeps the file's value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `id`.
    pub id: Option<NodeId>,
    /// `listen`.
    pub listen: Option<String>,
    /// `data_dir`.
    pub data_dir: Option<PathBuf>,
    /// `peers`.
    pub peers: Option<Vec<Peer>>,
    /// `groups`.
    pub groups: Option<u32>,
    /// `replicas`.
    pub replicas: Option<u32>,
    /// `[tls]`.
    pub tls: Option<TlsFiles>,
    /// `[raft] heartbeat_ms`.
    pub heartbeat_ms: Option<u64>,
    /// `[raft] election_timeout_min_ms`.
    pub election_timeout_min_ms: Option<u64>,
    /// `[raft] election_timeout_max_ms`.
    pub election_timeout_max_ms: Option<u64>,
    /// `[raft] snapshot_every_logs`.
    pub snapshot_every_logs: Option<u64>,
    /// `[raft] pipeline_depth`.
    pub pipeline_depth: Option<u64>,
    /// `[sessions] idle_timeout_ms`.
    pub idle_timeout_ms: Option<u64>,
    /// `[sessions] expire_tick_ms`.
    pub expire_tick_ms: Option<u64>,
    /// `[namespaces.default] max_sessions_per_group`.
    pub max_sessions_per_group: Option<u64>,
    /// `[namespaces.default] when_full` (`refuse` or `evict_oldest`).
    pub when_full: Option<String>,
    /// `[namespaces.default] max_sessions_per_principal`.
    pub max_sessions_per_principal: Option<u64>,
    /// `[namespaces.default] when_principal_full`.
    pub when_principal_full: Option<String>,
    /// `[namespaces.default] redis_delete_grace_ms`.
    pub redis_delete_grace_ms: Option<u64>,
    /// `[redis] listen`.
    pub redis_listen: Option<String>,
    /// `[redis] password`.
    pub redis_password: Option<String>,
}

/// Keys a configuration cannot do without, and the flag that gives each.
const REQUIRED: [(&str, &str); 4] = [
    ("id", "--id"),
    ("listen", "--listen"),
    ("data_dir", "--data-dir"),
    ("peers", "--peers"),
];

impl NodeConfig {
    /// The configuration in `file` (TOML text; `None` for no file) with `overrides` on top.
    /// A required key given nowhere is named by its flag (`--id is missing …`).
    pub fn layered(file: Option<&str>, overrides: &Overrides) -> Result<NodeConfig> {
        let mut table: toml::Table = match file {
            Some(text) => text.parse().map_err(|e| Error::Config(format!("{e}")))?,
            None => toml::Table::new(),
        };
        overrides.apply(&mut table)?;
        for (key, flag) in REQUIRED {
            if !table.contains_key(key) {
                return Err(Error::Config(format!(
                    "{flag} is missing (or `{key}` in the --config file)"
                )));
            }
        }
        let text = toml::to_string(&table).map_err(|e| Error::Config(e.to_string()))?;
        NodeConfig::from_toml(&text)
    }
}

fn int(v: u64) -> toml::Value {
    toml::Value::Integer(i64::try_from(v).unwrap_or(i64::MAX))
}

fn serialized<T: serde::Serialize>(what: &str, v: &T) -> Result<toml::Value> {
    toml::Value::try_from(v).map_err(|e| Error::Config(format!("{what}: {e}")))
}

/// The sub-table `name` of `table`, made if absent (replacing a non-table value).
fn section<'t>(table: &'t mut toml::Table, name: &str) -> &'t mut toml::Table {
    let entry = table
        .entry(name.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !entry.is_table() {
        *entry = toml::Value::Table(toml::Table::new());
    }
    match entry {
        toml::Value::Table(t) => t,
        _ => unreachable!("made a table above"),
    }
}

impl Overrides {
    fn apply(&self, table: &mut toml::Table) -> Result<()> {
        let mut top: Vec<(&str, toml::Value)> = Vec::new();
        if let Some(v) = self.id {
            top.push(("id", int(v)));
        }
        if let Some(v) = &self.listen {
            top.push(("listen", toml::Value::String(v.clone())));
        }
        if let Some(v) = &self.data_dir {
            top.push(("data_dir", toml::Value::String(v.display().to_string())));
        }
        if let Some(v) = &self.peers {
            top.push(("peers", serialized("peers", v)?));
        }
        if let Some(v) = self.groups {
            top.push(("groups", int(v.into())));
        }
        if let Some(v) = self.replicas {
            top.push(("replicas", int(v.into())));
        }
        if let Some(v) = &self.tls {
            top.push(("tls", serialized("tls", v)?));
        }
        for (key, value) in top {
            table.insert(key.to_string(), value);
        }
        self.apply_sections(table);
        Ok(())
    }

    fn apply_sections(&self, table: &mut toml::Table) {
        let numbers = [
            ("raft", "heartbeat_ms", self.heartbeat_ms),
            (
                "raft",
                "election_timeout_min_ms",
                self.election_timeout_min_ms,
            ),
            (
                "raft",
                "election_timeout_max_ms",
                self.election_timeout_max_ms,
            ),
            ("raft", "snapshot_every_logs", self.snapshot_every_logs),
            ("raft", "pipeline_depth", self.pipeline_depth),
            ("sessions", "idle_timeout_ms", self.idle_timeout_ms),
            ("sessions", "expire_tick_ms", self.expire_tick_ms),
        ];
        for (name, key, value) in numbers {
            if let Some(v) = value {
                section(table, name).insert(key.into(), int(v));
            }
        }
        for (key, value) in [
            ("listen", &self.redis_listen),
            ("password", &self.redis_password),
        ] {
            if let Some(v) = value {
                section(table, "redis").insert(key.into(), toml::Value::String(v.clone()));
            }
        }
        let mut default_ns = toml::Table::new();
        for (key, value) in [
            ("max_sessions_per_group", self.max_sessions_per_group),
            (
                "max_sessions_per_principal",
                self.max_sessions_per_principal,
            ),
            ("redis_delete_grace_ms", self.redis_delete_grace_ms),
        ] {
            if let Some(v) = value {
                default_ns.insert(key.into(), int(v));
            }
        }
        for (key, value) in [
            ("when_full", &self.when_full),
            ("when_principal_full", &self.when_principal_full),
        ] {
            if let Some(v) = value {
                default_ns.insert(key.into(), toml::Value::String(v.clone()));
            }
        }
        if !default_ns.is_empty() {
            section(section(table, "namespaces"), "default").extend(default_ns);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers() -> Vec<Peer> {
        "1=a:1,2=b:2"
            .split(',')
            .map(|p| p.parse().expect("peer"))
            .collect()
    }

    #[test]
    fn nothing_given_names_the_first_missing_flag() {
        let err = NodeConfig::layered(None, &Overrides::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration: --id is missing (or `id` in the --config file)"
        );
    }

    #[test]
    fn overrides_replace_the_file_and_fill_sections() {
        let file = "id = 1\nlisten = \"a:1\"\ndata_dir = \"/d\"\n[raft]\nheartbeat_ms = 70\n";
        let overrides = Overrides {
            id: Some(2),
            peers: Some(peers()),
            election_timeout_min_ms: Some(400),
            when_full: Some("evict_oldest".into()),
            redis_listen: Some("127.0.0.1:6380".into()),
            ..Overrides::default()
        };
        let c = NodeConfig::layered(Some(file), &overrides).expect("valid");
        assert_eq!(c.id, 2);
        assert_eq!(c.raft.heartbeat_ms, 70, "the file's value stays");
        assert_eq!(c.raft.election_timeout_min_ms, 400);
        assert_eq!(c.redis.listen.as_deref(), Some("127.0.0.1:6380"));
        assert_eq!(
            c.namespaces["default"].when_full,
            crate::command::WhenFull::EvictOldest
        );
    }

    #[test]
    fn a_bad_peer_is_one_clear_error() {
        let err = "1:a".parse::<Peer>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "configuration: peer \"1:a\" is not id=addr"
        );
    }
}
