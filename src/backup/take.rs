//! Taking a backup from a running cluster and writing it to a file atomically.
//!
//! Each group's image is checked as it arrives and the whole file is decoded again before it is
//! written, so a file this module wrote is one [`super::decode`] accepts.

use std::io::Write;
use std::path::Path;

use super::{BackupHeader, GroupImage, BACKUP_FORMAT};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::id::GroupId;

/// What one group contributed to a backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupTaken {
    /// The group.
    pub group: GroupId,
    /// Live sessions in its image.
    pub sessions: usize,
    /// The log index the image was taken at.
    pub index: u64,
    /// The encoded image's size.
    pub bytes: usize,
}

/// Fetches `group`'s image from its leader (linearizable) and checks it decodes; returns the
/// record for [`assemble`] and what it holds.
pub async fn fetch_group(client: &Client, group: GroupId) -> Result<(Vec<u8>, GroupTaken)> {
    let record = client.backup_group(group).await?;
    let image: GroupImage = crate::codec::decode(&record, record.len())?;
    let taken = GroupTaken {
        group,
        sessions: image.state.sessions.len(),
        index: image.index,
        bytes: record.len(),
    };
    Ok((record, taken))
}

/// The backup file made of every group's record (in group order), taken at `taken_at_ms`;
/// decoded again before it is returned.
pub fn assemble(records: &[Vec<u8>], taken_at_ms: u64) -> Result<Vec<u8>> {
    let header = BackupHeader {
        format: BACKUP_FORMAT,
        groups: records.len() as u32,
        taken_at_ms,
    };
    let bytes = super::encode(&header, records);
    super::decode(&bytes).map_err(|e| Error::Invalid(format!("re-reading the backup: {e}")))?;
    Ok(bytes)
}

/// Writes `bytes` to `path.tmp`, syncs it, renames it to `path` and syncs the directory: a
/// crash leaves the old file or the new one, never half of one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
