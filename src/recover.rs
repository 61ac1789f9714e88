//! Disaster recovery when a majority is lost for good: `steadfast recover --force-new-cluster`
//! on a survivor's stopped data directory.
//!
//! For every group it takes what the survivor holds — its latest snapshot plus **every entry in
//! its log, applied as if committed** (an acknowledged write is on a majority's disk, and the
//! survivor may not have learned that it committed) — reports the last log term and index, and
//! installs the result as a one-node cluster under a new cluster id, the way a restore installs
//! a backup ([`crate::restore`]): each group's snapshot at its index plus
//! [`crate::backup::RESTORE_INDEX_GAP`], membership this node alone. Sessions keep their
//! versions; new versions start above every old one. The old members are fenced by the new
//! cluster id (their hellos are refused). New nodes join with `serve --join` and the usual
//! membership commands. The directory as it was is kept beside the new one, never deleted.
//!
//! Forcing is unsafe if another part of the old cluster still runs: both would accept writes.
//! That is why the operator must say `--force-new-cluster`, and why the cluster id changes.

use std::path::PathBuf;
use std::sync::Arc;

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};

use crate::backup::{Backup, BackupHeader, GroupImage, BACKUP_FORMAT};
use crate::config::{NodeConfig, Peer};
use crate::id::GroupId;
use crate::identity::{self, ClusterId};
use crate::raft::backend::SledBackend;
use crate::raft::store::{Flusher, LogStore, StateMachineStore};
use crate::restore::{self, RestoreError};

/// What the survivor held of one group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupReport {
    /// The group.
    pub group: GroupId,
    /// The last log entry's term and index, if it holds any.
    pub last_log: Option<(u64, u64)>,
    /// The index its state reflects after applying its whole log.
    pub index: u64,
    /// Live sessions it holds.
    pub sessions: usize,
}

/// The result of a recovery.
#[derive(Clone, Debug)]
pub struct Recovered {
    /// Per group, what the survivor held.
    pub groups: Vec<GroupReport>,
    /// The new cluster's id.
    pub cluster_id: ClusterId,
    /// Where the directory as it was now lives.
    pub kept: PathBuf,
    /// The configuration to serve the recovered node with: this node its only peer, one
    /// replica.
    pub config: NodeConfig,
}

fn storage(e: impl std::fmt::Display) -> RestoreError {
    RestoreError::Target(format!("reading the survivor's storage: {e}"))
}

/// Recovers node `config.id` from its stopped data directory as a one-node cluster
/// `cluster_id`. The directory must carry this node's identity (same id and group count).
pub async fn force_new_cluster(
    config: &NodeConfig,
    cluster_id: ClusterId,
) -> Result<Recovered, RestoreError> {
    config.validate()?;
    let dir = config.data_dir.clone();
    match identity::load(&dir)? {
        Some(found) => found.check(&dir, config, None)?,
        None if !dir.join("sled").exists() => {
            return Err(RestoreError::Target(format!(
                "{} holds no node data to recover from",
                dir.display()
            )))
        }
        None => {}
    }
    let (images, groups) = read_survivor(config).await?;
    let alone = NodeConfig {
        peers: vec![Peer {
            id: config.id,
            addr: config
                .addresses()
                .get(&config.id)
                .cloned()
                .unwrap_or_else(|| config.listen.clone()),
        }],
        replicas: 1,
        ..config.clone()
    };
    let backup = Backup {
        header: BackupHeader {
            format: BACKUP_FORMAT,
            groups: config.groups,
            taken_at_ms: 0,
        },
        groups: images,
    };
    let kept = install(&backup, &alone, cluster_id.clone()).await?;
    Ok(Recovered {
        groups,
        cluster_id,
        kept,
        config: alone,
    })
}

/// Every group's state with the survivor's whole log applied, and what it held.
async fn read_survivor(
    config: &NodeConfig,
) -> Result<(Vec<GroupImage>, Vec<GroupReport>), RestoreError> {
    let backend = SledBackend::open(&config.data_dir)
        .map_err(|e| storage(format!("{e} (is the node still running? stop it first)")))?;
    let backend: crate::raft::store::SharedBackend = Arc::new(backend);
    let flusher = Flusher::spawn(backend.clone());
    let mut images = Vec::new();
    let mut reports = Vec::new();
    for g in 0..config.groups {
        let group = GroupId(g);
        let mut log = LogStore::open(group, backend.clone(), flusher.clone()).map_err(storage)?;
        let mut sm = StateMachineStore::open(group, backend.clone()).map_err(storage)?;
        let (applied, _) = sm.applied_state().await.map_err(storage)?;
        let last = log.get_log_state().await.map_err(storage)?.last_log_id;
        let from = applied.map_or(0, |l| l.index + 1);
        if let Some(last) = last.filter(|l| l.index >= from) {
            let entries = log
                .try_get_log_entries(from..=last.index)
                .await
                .map_err(storage)?;
            sm.apply(entries).await.map_err(storage)?;
        }
        let machine = sm.shared();
        let m = machine.read().expect("state lock");
        let index = m.last_applied.map_or(0, |l| l.index);
        reports.push(GroupReport {
            group,
            last_log: last.map(|l| (l.leader_id.term, l.index)),
            index,
            sessions: m.state.len(),
        });
        images.push(GroupImage {
            group,
            index,
            state: m.state.to_image(),
        });
    }
    Ok((images, reports))
}

/// Builds the recovered directory beside the survivor's, moves the survivor's aside (kept) and
/// the new one into place; returns where the old one went.
async fn install(
    backup: &Backup,
    alone: &NodeConfig,
    cluster_id: ClusterId,
) -> Result<PathBuf, RestoreError> {
    let (target, parent, _) = restore::staging_paths(&alone.data_dir)?;
    let mut staged = alone.clone();
    staged.data_dir = sibling(&target, "recovering");
    if staged.data_dir.exists() {
        std::fs::remove_dir_all(&staged.data_dir).map_err(|source| RestoreError::Io {
            what: format!("removing the leftover {}", staged.data_dir.display()),
            source,
        })?;
    }
    restore::restore_node(backup, &staged, cluster_id.clone(), |_| {}).await?;
    let mut kept = sibling(&target, "before-recover");
    let mut n = 1;
    while kept.exists() {
        n += 1;
        kept = sibling(&target, &format!("before-recover-{n}"));
    }
    let io = |what: String| move |source| RestoreError::Io { what, source };
    std::fs::rename(&target, &kept).map_err(io(format!(
        "moving {} aside to {}",
        target.display(),
        kept.display()
    )))?;
    std::fs::rename(&staged.data_dir, &target).map_err(io(format!(
        "moving {} to {}",
        staged.data_dir.display(),
        target.display()
    )))?;
    std::fs::File::open(&parent)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing {}", parent.display())))?;
    Ok(kept)
}

fn sibling(target: &std::path::Path, suffix: &str) -> PathBuf {
    let mut name = target.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    target.with_file_name(name)
}
