//! Backups: a point-in-time image of every group, and restoring one into new data directories.
//!
//! A backup holds, per group, the state machine image at a linearizable point (the leader ran a
//! ReadIndex round, then copied its state at its applied index) and that log index `N`.
//! Restoring installs each image as the group's snapshot at index `N + RESTORE_INDEX_GAP`, so
//! versions (log indexes) keep rising across the restore *past every write acknowledged after
//! the backup* (those had versions above `N`; reissuing them would let a client holding one
//! compare-and-set over data it never saw). Tombstones, the dedup table, the event ring and the
//! replicated clock come back too.
//!
//! File layout (all untrusted on read, every part bounded and checked):
//!
//! ```text
//! magic "STEADFASTBACKUP\0" (16 bytes)
//! header: u32 BE length | checked record (codec) of BackupHeader
//! per group, in group order: u64 BE length | checked record of GroupImage
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{BasicNode, CommittedLeaderId, Membership};
use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::id::{GroupId, NodeId};
use crate::limits;
use crate::raft::store::{Flusher, LogStore, SharedBackend, SnapshotFile, StateMachineStore};
use crate::raft::typ::{LogId, SnapshotMeta, StoredMembership};
use crate::state::{SessionState, StateImage};

mod take;
pub use take::{assemble, fetch_group, write_atomically, GroupTaken};

/// The first bytes of every backup file.
pub const MAGIC: &[u8; 16] = b"STEADFASTBACKUP\0";
/// The backup format this build writes and reads.
pub const BACKUP_FORMAT: u32 = 1;
const HEADER_RECORD_MAX: usize = 4096;
/// How far a restore moves each group's log index past the backed-up one: more than any group
/// can have acknowledged between a backup and a disaster (2^40 writes is 348 years at 100 k/s),
/// while leaving room for 2^23 restores in a u64.
pub const RESTORE_INDEX_GAP: u64 = 1 << 40;

/// What the file says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupHeader {
    /// [`BACKUP_FORMAT`].
    pub format: u32,
    /// The cluster's group count (a restore target must have the same).
    pub groups: u32,
    /// When the backup was taken (the taker's wall clock, informational).
    pub taken_at_ms: u64,
}

/// One group's state at one log index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupImage {
    /// The group.
    pub group: GroupId,
    /// The log index the image reflects (its state includes every entry up to it).
    pub index: u64,
    /// The state machine image.
    pub state: StateImage,
}

/// A [`GroupImage`] taken from a live state in O(1) ([`SessionState::view`]), to be encoded
/// without holding the state lock; it encodes to the same bytes.
#[derive(Clone, Debug, Serialize)]
pub struct GroupImageView {
    /// The group.
    pub group: GroupId,
    /// The log index the image reflects.
    pub index: u64,
    /// The state as of that index.
    pub state: crate::state::StateView,
}

/// A decoded, validated backup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Backup {
    /// The header.
    pub header: BackupHeader,
    /// One image per group, in group order.
    pub groups: Vec<GroupImage>,
}

/// Why a backup cannot be read or restored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// Not a steadfast backup.
    #[error("not a steadfast backup (bad magic)")]
    Magic,
    /// Written by a format this build does not read.
    #[error("backup format {0} is not supported (this build reads {BACKUP_FORMAT})")]
    Format(u32),
    /// The file ends in the middle of a part.
    #[error("backup truncated at byte {0}")]
    Truncated(usize),
    /// A part is damaged or does not parse.
    #[error("backup part {part}: {source}")]
    Record {
        /// "header" or "group N".
        part: String,
        /// What was wrong.
        source: DecodeError,
    },
    /// The parts do not fit together (wrong group order, invalid state image, trailing bytes).
    #[error("backup is inconsistent: {0}")]
    Invalid(String),
    /// The restore target cannot take it.
    #[error("cannot restore: {0}")]
    Target(String),
    /// Storage failed while restoring.
    #[error("storage: {0}")]
    Storage(String),
}

/// Encodes a backup from the group records [`crate::Client::backup_group`] returned.
pub fn encode(header: &BackupHeader, group_records: &[Vec<u8>]) -> Vec<u8> {
    let head = codec::encode(header);
    let mut out = Vec::with_capacity(
        MAGIC.len() + 4 + head.len() + group_records.iter().map(|r| r.len() + 8).sum::<usize>(),
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(head.len() as u32).to_be_bytes());
    out.extend_from_slice(&head);
    for record in group_records {
        out.extend_from_slice(&(record.len() as u64).to_be_bytes());
        out.extend_from_slice(record);
    }
    out
}

/// Decodes and validates a backup file from untrusted bytes.
///
/// # Errors
///
/// Any [`BackupError`] but `Target` and `Storage`.
pub fn decode(bytes: &[u8]) -> Result<Backup, BackupError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(BackupError::Magic);
    }
    let mut at = MAGIC.len();
    let take = |at: &mut usize, n: usize| -> Result<std::ops::Range<usize>, BackupError> {
        let end = at
            .checked_add(n)
            .filter(|end| *end <= bytes.len())
            .ok_or(BackupError::Truncated(*at))?;
        let range = *at..end;
        *at = end;
        Ok(range)
    };
    let len = u32::from_be_bytes(bytes[take(&mut at, 4)?].try_into().expect("4 bytes")) as usize;
    if len > HEADER_RECORD_MAX {
        return Err(BackupError::Invalid(format!("header of {len} bytes")));
    }
    let header: BackupHeader = codec::decode(&bytes[take(&mut at, len)?], HEADER_RECORD_MAX)
        .map_err(|source| BackupError::Record {
            part: "header".into(),
            source,
        })?;
    if header.format != BACKUP_FORMAT {
        return Err(BackupError::Format(header.format));
    }
    if header.groups == 0 || header.groups > limits::GROUPS_MAX {
        return Err(BackupError::Invalid(format!(
            "{} groups (1 to {} allowed)",
            header.groups,
            limits::GROUPS_MAX
        )));
    }
    let mut groups = Vec::new();
    for g in 0..header.groups {
        let len = u64::from_be_bytes(bytes[take(&mut at, 8)?].try_into().expect("8 bytes"));
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l <= limits::SNAPSHOT_BYTES_MAX)
            .ok_or_else(|| BackupError::Invalid(format!("group {g} record of {len} bytes")))?;
        let image: GroupImage =
            codec::decode(&bytes[take(&mut at, len)?], len).map_err(|source| {
                BackupError::Record {
                    part: format!("group {g}"),
                    source,
                }
            })?;
        if image.group != GroupId(g) {
            return Err(BackupError::Invalid(format!(
                "part {g} holds group {}",
                image.group
            )));
        }
        // The same validation a snapshot from disk gets, and nothing newer than the index.
        SessionState::from_image(image.state.clone())
            .map_err(|e| BackupError::Invalid(format!("group {g}: {e}")))?;
        let newest = image
            .state
            .sessions
            .iter()
            .map(|(_, s)| s.version)
            .chain(image.state.events.iter().map(|e| e.index))
            .max()
            .map_or(0, crate::command::index_of);
        if newest > image.index {
            return Err(BackupError::Invalid(format!(
                "group {g} holds index {newest}, past its backup index {}",
                image.index
            )));
        }
        if image.index > crate::command::LOG_INDEX_MAX - RESTORE_INDEX_GAP {
            return Err(BackupError::Invalid(format!(
                "group {g} index {} leaves no room for a restore",
                image.index
            )));
        }
        groups.push(image);
    }
    if at != bytes.len() {
        return Err(BackupError::Invalid(format!(
            "{} bytes after the last group",
            bytes.len() - at
        )));
    }
    Ok(Backup { header, groups })
}

/// Installs `backup` into an empty node store: every group whose `voters` include `node` gets
/// its image as a durable snapshot at the backed-up index, with `voters` (and their addresses)
/// as the membership. The node then starts normally (never bootstrapping) and the voters elect.
///
/// # Errors
///
/// `Target` if the store already holds data for a group or the backup does not fit the
/// placement; `Storage` if writing fails.
pub async fn restore_into(
    backup: &Backup,
    backend: SharedBackend,
    node: NodeId,
    voters: impl Fn(GroupId) -> Vec<NodeId>,
    addresses: &BTreeMap<NodeId, String>,
) -> Result<u32, BackupError> {
    restore_into_reporting(backup, backend, (node, voters), addresses, |_| {}).await
}

/// [`restore_into`], calling `on_group` after each group it installed (a progress display).
pub async fn restore_into_reporting(
    backup: &Backup,
    backend: SharedBackend,
    (node, voters): (NodeId, impl Fn(GroupId) -> Vec<NodeId>),
    addresses: &BTreeMap<NodeId, String>,
    mut on_group: impl FnMut(GroupId),
) -> Result<u32, BackupError> {
    let storage = |e: &dyn std::fmt::Display| BackupError::Storage(e.to_string());
    let flusher = Flusher::spawn(backend.clone());
    let mut restored = 0;
    for image in &backup.groups {
        let group = image.group;
        let members = voters(group);
        if !members.contains(&node) {
            continue;
        }
        let ids: BTreeSet<NodeId> = members.iter().copied().collect();
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|m| {
                let addr = addresses
                    .get(m)
                    .cloned()
                    .ok_or_else(|| BackupError::Target(format!("node {m} has no address")))?;
                Ok((*m, BasicNode { addr }))
            })
            .collect::<Result<_, BackupError>>()?;
        let mut log =
            LogStore::open(group, backend.clone(), flusher.clone()).map_err(|e| storage(&e))?;
        let mut sm = StateMachineStore::open(group, backend.clone()).map_err(|e| storage(&e))?;
        let (applied, _) = sm.applied_state().await.map_err(|e| storage(&e))?;
        let log_state = log.get_log_state().await.map_err(|e| storage(&e))?;
        if applied.is_some() || log_state.last_log_id.is_some() {
            return Err(BackupError::Target(format!(
                "group {group} already has data here; restore into an empty data directory"
            )));
        }
        // Term 0: no leader of any later term can have written this id, and every restored
        // replica holds the same one, so elections start even. The gap keeps new versions above
        // any a client may have seen before the disaster.
        let log_id = LogId::new(
            CommittedLeaderId::new(0, 0),
            image.index + RESTORE_INDEX_GAP,
        );
        let membership = Membership::new(vec![ids], nodes);
        let meta = SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: StoredMembership::new(Some(log_id), membership),
            snapshot_id: format!("restore-{}", image.index),
        };
        let file = SnapshotFile {
            meta: meta.clone(),
            state: image.state.clone(),
        };
        let bytes = codec::encode(&file);
        sm.install_snapshot(&meta, Box::new(Cursor::new(bytes)))
            .await
            .map_err(|e| storage(&e))?;
        log.purge(log_id).await.map_err(|e| storage(&e))?;
        restored += 1;
        on_group(group);
    }
    flusher.flush().await.map_err(|e| storage(&e))?;
    Ok(restored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Request};
    use crate::id::SessionId;

    fn sample() -> (BackupHeader, Vec<Vec<u8>>) {
        let mut state = SessionState::default();
        let create = Request {
            now_ms: 1_000,
            origin: None,
            command: Command::Create {
                id: SessionId::from_bytes([7; 16]),
                attributes: [("cart".to_string(), b"book".to_vec())].into(),
                idle_timeout_ms: 60_000,
                lifetime_ms: None,
                principal: None,
                limits: Default::default(),
            },
        };
        state.apply(crate::command::version_at(5, 0), &create);
        let header = BackupHeader {
            format: BACKUP_FORMAT,
            groups: 2,
            taken_at_ms: 9,
        };
        let records = (0..2)
            .map(|g| {
                codec::encode(&GroupImage {
                    group: GroupId(g),
                    index: 5,
                    state: state.to_image(),
                })
            })
            .collect();
        (header, records)
    }

    #[test]
    fn backups_round_trip_and_every_damage_is_a_typed_error() {
        let (header, records) = sample();
        let bytes = encode(&header, &records);
        let backup = decode(&bytes).expect("decodes");
        assert_eq!(backup.header, header);
        assert_eq!(backup.groups.len(), 2);
        assert_eq!(backup.groups[1].state.sessions.len(), 1);
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "cut at {n}");
        }
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x21;
            assert!(decode(&bad).is_err(), "flip at {i}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(BackupError::Invalid(_))));
        // Groups out of order.
        let swapped = encode(&header, &[records[1].clone(), records[0].clone()]);
        assert!(matches!(decode(&swapped), Err(BackupError::Invalid(_))));
    }
}
