//! A group's state machine: the sessions in memory, snapshotted off the apply path.
//!
//! Rebuilt on open from the latest durable snapshot, after which openraft re-applies the
//! committed log (openraft 0.9's startup contract). A snapshot takes the state in O(1) under the
//! lock ([`SessionState::view`]: persistent maps), then is encoded straight into its file with
//! no lock held and without a copy in memory, and is durable before
//! [`build_snapshot`](RaftSnapshotBuilder::build_snapshot) returns, so openraft never purges log
//! entries that only a volatile state covered. Writes and reads go on meanwhile.

use std::io::{self, Cursor};
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};

use super::{read_err, SharedBackend};
use crate::codec;
use crate::command::{self, Batch, BatchResponse, Outcome, Response};
use crate::id::GroupId;
use crate::limits;
use crate::raft::typ::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership};
use crate::raft::TypeConfig;
use crate::state::{SessionState, StateImage, StateView};

/// Applies one entry's batch: the request at position `i` gets version `version_at(index, i)`.
/// A batch longer than a leader may propose (only a forged entry is) has its excess refused,
/// the same way on every replica.
pub fn apply_batch(state: &mut SessionState, index: u64, batch: &Batch) -> BatchResponse {
    let responses = batch
        .requests
        .iter()
        .enumerate()
        .map(|(i, request)| {
            if i < command::BATCH_REQUESTS_MAX {
                state.apply(command::version_at(index, i), request)
            } else {
                Response {
                    server_time_ms: state.clock_ms(),
                    outcome: Outcome::Invalid {
                        reason: "log entry holds too many requests".into(),
                    },
                }
            }
        })
        .collect();
    BatchResponse { responses }
}

/// The snapshot file: what a group's state was at a log id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotFile {
    /// openraft's metadata (last log id, membership, snapshot id).
    pub meta: SnapshotMeta,
    /// The session state.
    pub state: StateImage,
}

/// A snapshot file being written from a [`StateView`]: the same bytes as [`SnapshotFile`].
#[derive(Serialize)]
struct SnapshotOut {
    meta: SnapshotMeta,
    state: StateView,
}

/// Decodes a snapshot file from untrusted bytes.
pub fn decode_snapshot(bytes: &[u8]) -> Result<SnapshotFile, codec::DecodeError> {
    codec::decode(bytes, limits::SNAPSHOT_BYTES_MAX)
}

/// What the node reads for linearizable reads and status.
#[derive(Default)]
pub struct MachineState {
    /// The sessions.
    pub state: SessionState,
    /// The last applied log id.
    pub last_applied: Option<LogId>,
    /// The last applied membership.
    pub membership: StoredMembership,
    /// The metadata of the latest durable snapshot (its bytes are on disk only).
    snapshot: Option<SnapshotMeta>,
    /// Snapshots built so far by this process, to make ids unique.
    built: u64,
    /// Approximate bytes of the entries applied since the latest snapshot's index.
    log_bytes: u64,
}

impl MachineState {
    /// Whether the log since the latest snapshot outweighs the state (or `min_bytes`): then a
    /// snapshot pays for itself (compaction by size, not only by entry count).
    pub fn wants_snapshot(&self, min_bytes: u64) -> bool {
        self.log_bytes > self.state.session_bytes().max(min_bytes)
    }

    /// Approximate bytes of log applied since the latest snapshot.
    pub fn log_bytes_since_snapshot(&self) -> u64 {
        self.log_bytes
    }
}

/// A group's state machine.
#[derive(Clone)]
pub struct StateMachineStore {
    group: GroupId,
    backend: SharedBackend,
    inner: Arc<RwLock<MachineState>>,
    /// Serializes snapshot writes (a build and an install may overlap) so an older snapshot
    /// never replaces a newer one on disk.
    persisting: Arc<tokio::sync::Mutex<()>>,
}

fn sm_read_err(meta: &SnapshotMeta, e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read_snapshot(Some(meta.signature()), &e).into()
}

impl StateMachineStore {
    /// Opens a group's state machine from its latest durable snapshot.
    pub fn open(group: GroupId, backend: SharedBackend) -> Result<Self, StorageError> {
        let mut machine = MachineState::default();
        // Streamed: a large group's snapshot is never held in memory beside its decoded state.
        if let Some((reader, len)) = backend.open_snapshot(group).map_err(read_err)? {
            let file: SnapshotFile =
                codec::decode_from(reader, len, limits::SNAPSHOT_BYTES_MAX).map_err(read_err)?;
            machine.state = SessionState::from_image(file.state).map_err(read_err)?;
            machine.last_applied = file.meta.last_log_id;
            machine.membership = file.meta.last_membership.clone();
            machine.snapshot = Some(file.meta);
        }
        Ok(StateMachineStore {
            group,
            backend,
            inner: Arc::new(RwLock::new(machine)),
            persisting: Arc::default(),
        })
    }

    /// The shared state, for reads.
    pub fn shared(&self) -> Arc<RwLock<MachineState>> {
        self.inner.clone()
    }

    fn lock(&self) -> std::sync::RwLockWriteGuard<'_, MachineState> {
        self.inner.write().expect("state lock")
    }

    /// Writes a snapshot unless a newer one is already durable; whether it was written.
    async fn persist(
        &self,
        meta: &SnapshotMeta,
        write: crate::raft::backend::SnapshotWrite,
    ) -> Result<bool, StorageError> {
        let _one_at_a_time = self.persisting.lock().await;
        let newer_held = {
            let m = self.inner.read().expect("state lock");
            m.snapshot
                .as_ref()
                .is_some_and(|held| held.last_log_id > meta.last_log_id)
        };
        if newer_held {
            return Ok(false);
        }
        self.backend
            .write_snapshot(self.group, write)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        Ok(true)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    /// Builds and persists a snapshot. openraft 0.9 keeps only the returned metadata (followers
    /// are sent [`get_current_snapshot`](RaftStateMachine::get_current_snapshot), read from
    /// disk), so the returned data is empty.
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (meta, view, log_bytes) = {
            let mut m = self.lock();
            m.built += 1;
            let last = m.last_applied;
            let snapshot_id = match last {
                Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, m.built),
                None => format!("0-0-{}", m.built),
            };
            let meta = SnapshotMeta {
                last_log_id: last,
                last_membership: m.membership.clone(),
                snapshot_id,
            };
            (meta, m.state.view(), m.log_bytes)
        };
        let out = SnapshotOut {
            meta: meta.clone(),
            state: view,
        };
        let written = self
            .persist(&meta, Box::new(move |w| codec::encode_into(&out, w)))
            .await?;
        if written {
            let mut m = self.lock();
            m.snapshot = Some(meta.clone());
            // What was applied after the view was taken still counts toward the next one.
            m.log_bytes = m.log_bytes.saturating_sub(log_bytes);
        }
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(Vec::new())),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let m = self.inner.read().expect("state lock");
        Ok((m.last_applied, m.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchResponse>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut m = self.lock();
        let mut out = Vec::new();
        for entry in entries {
            m.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Normal(batch) => {
                    m.log_bytes += batch.approx_bytes() as u64;
                    apply_batch(&mut m.state, entry.log_id.index, &batch)
                }
                EntryPayload::Blank => BatchResponse::default(),
                EntryPayload::Membership(membership) => {
                    m.membership = StoredMembership::new(Some(entry.log_id), membership);
                    BatchResponse::default()
                }
            };
            out.push(response);
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let file = decode_snapshot(&bytes).map_err(|e| sm_read_err(meta, e))?;
        if file.meta.last_log_id != meta.last_log_id {
            let e = io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot body does not match its metadata",
            );
            return Err(sm_read_err(meta, e));
        }
        let state = SessionState::from_image(file.state).map_err(|e| sm_read_err(meta, e))?;
        self.persist(meta, Box::new(move |w| w.write_all(&bytes)))
            .await?;
        let mut m = self.lock();
        m.state = state;
        m.last_applied = meta.last_log_id;
        m.membership = meta.last_membership.clone();
        m.snapshot = Some(meta.clone());
        m.log_bytes = 0;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        // No snapshot write in progress: the file on disk is the one `snapshot` describes.
        let _one_at_a_time = self.persisting.lock().await;
        let Some(meta) = self.inner.read().expect("state lock").snapshot.clone() else {
            return Ok(None);
        };
        // Read synchronously: rare (a follower needs a snapshot), and the simulation's
        // determinism forbids handing work to other threads.
        let bytes = self
            .backend
            .read_snapshot(self.group)
            .map_err(|e| sm_read_err(&meta, e))?;
        Ok(bytes.map(|bytes| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
