//! openraft's storage traits over a [`Backend`]: the log store and the state-machine store.
//!
//! - The log is mirrored in memory (bounded by snapshotting and purging) and written through to
//!   the backend; [`Flusher`] coalesces the fsyncs of every group on the node (group commit), and
//!   an append is acknowledged to openraft only after its sync (DESIGN §5).
//! - The state machine lives in memory. It is rebuilt on open from the latest durable snapshot,
//!   after which openraft re-applies the committed log (openraft 0.9's startup contract). A
//!   snapshot is durable before [`build_snapshot`](RaftSnapshotBuilder::build_snapshot) returns,
//!   so openraft never purges log entries that only a volatile state covered.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{self, Cursor};
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftLogReader, RaftSnapshotBuilder, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::backend::{Backend, MetaKey, WriteOp};
use super::typ::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, Vote};
use super::TypeConfig;
use crate::codec;
use crate::command::{self, Batch, BatchResponse, Outcome, Response};
use crate::id::GroupId;
use crate::limits;
use crate::state::{SessionState, StateImage};

/// Shared handle to a group's backend.
pub type SharedBackend = Arc<dyn Backend>;

enum FlushWaiter {
    Log(LogFlushed<TypeConfig>),
    Notify(oneshot::Sender<io::Result<()>>),
}

/// Coalesces durability barriers: every waiter queued while a sync runs shares the next one.
#[derive(Clone)]
pub struct Flusher {
    tx: mpsc::UnboundedSender<FlushWaiter>,
}

impl Flusher {
    /// Starts the node's flush task on the current runtime.
    pub fn spawn(backend: SharedBackend) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<FlushWaiter>();
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while let Ok(more) = rx.try_recv() {
                    batch.push(more);
                }
                let result = backend.sync().await;
                for waiter in batch {
                    let r = match &result {
                        Ok(()) => Ok(()),
                        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                    };
                    match waiter {
                        FlushWaiter::Log(cb) => cb.log_io_completed(r),
                        FlushWaiter::Notify(tx) => {
                            let _ = tx.send(r);
                        }
                    }
                }
            }
        });
        Flusher { tx }
    }

    /// Waits until everything written so far is durable.
    pub async fn flush(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(FlushWaiter::Notify(tx))
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    fn flush_then(&self, callback: LogFlushed<TypeConfig>) -> io::Result<()> {
        self.tx
            .send(FlushWaiter::Log(callback))
            .map_err(|_| stopped())
    }
}

fn stopped() -> io::Error {
    io::Error::other("flusher stopped")
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write(&e).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read(&e).into()
}

/// A vote read back from disk is restored as *not committed*, so a restarted leader never
/// resumes its old term on a vote it only remembers: it must win a real election (in a new term,
/// where the longest log wins). openraft 0.9 would otherwise restart a leader in its old term at
/// once, which is only safe while its own log is never shorter than a follower's for that term;
/// a power loss that takes the leader's unsynced tail (its followers synced theirs first) breaks
/// that, and the leader would hand out the same log ids again with other contents (openraft
/// issue #1511). See ARCHITECTURE.md, "A restarted leader campaigns again".
fn forget_commitment(mut vote: Vote) -> Vote {
    if !cfg!(feature = "broken-resume-leadership") {
        vote.committed = false;
    }
    vote
}

/// A group's Raft log.
#[derive(Clone)]
pub struct LogStore {
    group: GroupId,
    backend: SharedBackend,
    flusher: Flusher,
    inner: Arc<Mutex<LogInner>>,
}

#[derive(Default)]
struct LogInner {
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    entries: BTreeMap<u64, Entry>,
}

impl LogStore {
    /// Opens a group's log from the backend's durable image.
    pub fn open(
        group: GroupId,
        backend: SharedBackend,
        flusher: Flusher,
    ) -> Result<Self, StorageError> {
        let image = backend.load(group).map_err(read_err)?;
        fn decode_meta<T: serde::de::DeserializeOwned>(
            image: &super::backend::GroupImage,
            key: MetaKey,
        ) -> Result<Option<T>, StorageError> {
            match image.meta.get(&key) {
                None => Ok(None),
                Some(b) => codec::decode(b, 4096).map(Some).map_err(read_err),
            }
        }
        let mut inner = LogInner {
            vote: decode_meta::<Vote>(&image, MetaKey::Vote)?.map(forget_commitment),
            committed: decode_meta::<Option<LogId>>(&image, MetaKey::Committed)?.flatten(),
            last_purged: decode_meta::<Option<LogId>>(&image, MetaKey::Purged)?.flatten(),
            entries: BTreeMap::new(),
        };
        for (index, bytes) in &image.entries {
            let entry: Entry = codec::decode(bytes, limits::FRAME_BYTES_MAX).map_err(read_err)?;
            if entry.log_id.index != *index {
                return Err(read_err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "log entry stored under the wrong index",
                )));
            }
            inner.entries.insert(*index, entry);
        }
        Ok(LogStore {
            group,
            backend,
            flusher,
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().expect("log store lock")
    }

    fn write(&self, op: WriteOp) -> Result<(), StorageError> {
        self.backend.write(self.group, op).map_err(write_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(s) => Some(*s),
            Bound::Excluded(s) => s.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let end = match range.end_bound() {
            Bound::Included(e) => e.checked_add(1),
            Bound::Excluded(e) => Some(*e),
            Bound::Unbounded => None,
        };
        // A reversed range would panic inside BTreeMap; refuse it with a typed error instead.
        if let (Some(s), Some(e)) = (start, end) {
            if s > e {
                let e = io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("log range {range:?} is reversed"),
                );
                return Err(read_err(e));
            }
        }
        Ok(self
            .lock()
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.lock();
        let last = inner
            .entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(inner.last_purged);
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write(WriteOp::Meta(MetaKey::Vote, codec::encode(vote)))?;
        self.lock().vote = Some(*vote);
        if cfg!(feature = "broken-volatile-vote") {
            // Deliberately wrong (simulation teeth only): the vote is not made durable.
            return Ok(());
        }
        self.flusher
            .flush()
            .await
            .map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // No sync: a stale committed id only means replaying less on restart.
        self.write(WriteOp::Meta(MetaKey::Committed, codec::encode(&committed)))?;
        self.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.lock().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let encoded = entries
            .iter()
            .map(|e| (e.log_id.index, codec::encode(e)))
            .collect();
        self.write(WriteOp::Append(encoded))?;
        {
            let mut inner = self.lock();
            for e in entries {
                inner.entries.insert(e.log_id.index, e);
            }
        }
        if cfg!(feature = "broken-early-ack") {
            // Deliberately wrong (simulation teeth only): acknowledged before it is durable.
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        self.flusher.flush_then(callback).map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Not synced: the next append's sync covers it, and nothing is acknowledged before that.
        self.write(WriteOp::TruncateFrom(log_id.index))?;
        self.lock().entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.write(WriteOp::Meta(MetaKey::Purged, codec::encode(&Some(log_id))))?;
        self.write(WriteOp::PurgeUpTo(log_id.index))?;
        let mut inner = self.lock();
        inner.last_purged = Some(log_id);
        inner.entries = inner.entries.split_off(&(log_id.index + 1));
        Ok(())
    }
}

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
    /// The latest snapshot, encoded, and its metadata.
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    /// Snapshots built so far by this process, to make ids unique.
    built: u64,
}

/// A group's state machine.
#[derive(Clone)]
pub struct StateMachineStore {
    group: GroupId,
    backend: SharedBackend,
    inner: Arc<RwLock<MachineState>>,
}

impl StateMachineStore {
    /// Opens a group's state machine from its latest durable snapshot.
    pub fn open(group: GroupId, backend: SharedBackend) -> Result<Self, StorageError> {
        let image = backend.load(group).map_err(read_err)?;
        let mut machine = MachineState::default();
        if let Some(bytes) = image.snapshot {
            let file = decode_snapshot(&bytes).map_err(read_err)?;
            machine.state = SessionState::from_image(file.state).map_err(read_err)?;
            machine.last_applied = file.meta.last_log_id;
            machine.membership = file.meta.last_membership.clone();
            machine.snapshot = Some((file.meta, bytes));
        }
        Ok(StateMachineStore {
            group,
            backend,
            inner: Arc::new(RwLock::new(machine)),
        })
    }

    /// The shared state, for reads.
    pub fn shared(&self) -> Arc<RwLock<MachineState>> {
        self.inner.clone()
    }

    async fn persist(&self, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.backend
            .save_snapshot(self.group, bytes)
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, &e).into())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (meta, bytes) = {
            let mut m = self.inner.write().expect("state lock");
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
            let bytes = codec::encode(&SnapshotFile {
                meta: meta.clone(),
                state: m.state.to_image(),
            });
            (meta, bytes)
        };
        self.persist(bytes.clone()).await?;
        self.inner.write().expect("state lock").snapshot = Some((meta.clone(), bytes.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
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
        let mut m = self.inner.write().expect("state lock");
        let mut out = Vec::new();
        for entry in entries {
            m.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Normal(batch) => {
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
        let file = decode_snapshot(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        if file.meta.last_log_id != meta.last_log_id {
            let e = io::Error::new(
                io::ErrorKind::InvalidData,
                "snapshot body does not match its metadata",
            );
            return Err(StorageIOError::read_snapshot(Some(meta.signature()), &e).into());
        }
        let state = SessionState::from_image(file.state)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        self.persist(bytes.clone()).await?;
        let mut m = self.inner.write().expect("state lock");
        m.state = state;
        m.last_applied = meta.last_log_id;
        m.membership = meta.last_membership.clone();
        m.snapshot = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let m = self.inner.read().expect("state lock");
        Ok(m.snapshot.as_ref().map(|(meta, bytes)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(bytes.clone())),
        }))
    }
}
