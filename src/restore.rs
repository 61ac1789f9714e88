//! Restoring a backup into one node's new data directory, atomically: built in
//! `<data-dir>.restoring`, synced, and renamed into place only when complete, so a restore that
//! fails or crashes halfway leaves nothing a node could start on.
//!
//! The restored directory gets an identity ([`crate::identity`]) of a *new* cluster (by default
//! derived from the backup and the target's peers, so every node restored from one file with one
//! peers list agrees), so a restored cluster never joins the live one it was backed up from.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backup::{Backup, BackupError};
use crate::config::NodeConfig;
use crate::id::{fnv1a64, GroupId};
use crate::identity::{self, ClusterId, Identity, IdentityError};
use crate::raft::backend::SledBackend;

/// Why a restore did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The target cannot take the backup (wrong group count, not empty, unnamed directory).
    #[error("{0}")]
    Target(String),
    /// Writing the restored state failed.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// Writing the identity failed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A file-system step failed.
    #[error("{what}: {source}")]
    Io {
        /// The step.
        what: String,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::Error),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RestoreError {
    let what = what.into();
    move |source| RestoreError::Io { what, source }
}

/// The cluster id a restore of `backup` for `config` gets unless one is given: the same on every
/// node restored from that backup with that peers list, and never the backed-up cluster's.
pub fn restored_cluster_id(backup: &Backup, config: &NodeConfig) -> ClusterId {
    let mut text = format!(
        "restore;{};taken={};groups={}",
        ClusterId::derived(config),
        backup.header.taken_at_ms,
        backup.header.groups
    );
    for g in &backup.groups {
        text.push_str(&format!(";{}@{}", g.group.0, g.index));
    }
    ClusterId::new(&format!("r-{:016x}", fnv1a64(text.as_bytes())))
        .expect("a hex id is a valid cluster id")
}

/// Restores `backup` into `config.data_dir` (which must be new or empty) as cluster
/// `cluster_id`; returns how many group replicas it installed. `on_group` hears of each
/// group installed (a progress display; the final sync and rename follow the last one).
pub async fn restore_node(
    backup: &Backup,
    config: &NodeConfig,
    cluster_id: ClusterId,
    on_group: impl FnMut(GroupId),
) -> Result<u32, RestoreError> {
    config.validate()?;
    if backup.header.groups != config.groups {
        return Err(RestoreError::Target(format!(
            "the backup has {} groups, this node is configured with {}",
            backup.header.groups, config.groups
        )));
    }
    let (target, parent, staging) = staging_paths(&config.data_dir)?;
    let occupied = match std::fs::read_dir(&target) {
        Ok(mut entries) => entries.next().is_some(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(io(format!("reading {}", target.display()))(e)),
    };
    if occupied {
        return Err(RestoreError::Target(format!(
            "{} is not empty; restore into an empty or new data directory",
            target.display()
        )));
    }
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .map_err(io(format!("removing the leftover {}", staging.display())))?;
    }
    std::fs::create_dir_all(&parent).map_err(io(format!("creating {}", parent.display())))?;
    let backend = SledBackend::open(&staging)
        .map_err(io(format!("opening storage under {}", staging.display())))?;
    let restored = crate::backup::restore_into_reporting(
        backup,
        Arc::new(backend),
        (config.id, |g| config.placement(g)),
        &config.addresses(),
        on_group,
    )
    .await?;
    identity::store(&staging, &Identity::new(config, cluster_id))?;
    // Reopening waits until every handle of the restore closed the Db (its lock is free), so
    // nothing writes under the staging path after the rename.
    // On a blocking thread: the restore's tasks (its flusher holds a handle) must be free to
    // finish on this runtime, which may be a single thread, while the open waits for the lock.
    let reopen = staging.clone();
    let reopened = tokio::task::spawn_blocking(move || SledBackend::open(&reopen))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r)
        .map_err(io("reopening the restored storage"))?;
    drop(reopened);
    install(&staging, &target, &parent)?;
    Ok(restored)
}

/// `(target, parent, staging)` for a data directory: `a/b/`, `./a/b` and `a/b` name the same
/// directory; `.` or `/` name none we could rename.
pub fn staging_paths(data_dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf), RestoreError> {
    let target: PathBuf = data_dir.components().collect();
    let Some(name) = target.file_name().map(|n| n.to_os_string()) else {
        return Err(RestoreError::Target(format!(
            "restore needs the data directory by name (not {}): give a new or empty directory \
             such as ./node1",
            data_dir.display()
        )));
    };
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut staging_name = name;
    staging_name.push(".restoring");
    let staging = parent.join(staging_name);
    Ok((target, parent, staging))
}

/// Syncs `staging` and renames it to `target` (replacing an empty directory), then syncs
/// `parent`.
pub fn install(staging: &Path, target: &Path, parent: &Path) -> Result<(), RestoreError> {
    sync_tree(staging).map_err(io(format!("syncing {}", staging.display())))?;
    // rename(2) replaces an empty directory; a mount point cannot be replaced (EBUSY).
    std::fs::rename(staging, target).map_err(io(format!(
        "moving {} to {} (a data directory that is a mount point cannot be replaced: restore \
         into a directory inside it)",
        staging.display(),
        target.display()
    )))?;
    std::fs::File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing {}", parent.display())))
}

/// fsyncs every file and directory under `dir` (a data directory: a handful of files).
pub fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path())?;
        } else {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}
