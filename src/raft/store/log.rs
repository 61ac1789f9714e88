//! A group's Raft log: written through to the backend, with only its recent tail in memory.
//!
//! Replication reads the newest entries almost always, so the last
//! [`limits::LOG_CACHE_BYTES`] of entries stay decoded in memory; anything older (a lagging
//! follower, a restart's replay) is read back from the backend. The log's length is bounded by
//! compaction, not by memory.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{EntryPayload, OptionalSend, RaftLogReader, StorageIOError};

use super::{read_err, write_err, Flusher, SharedBackend};
use crate::codec;
use crate::id::GroupId;
use crate::limits;
use crate::raft::backend::{GroupImage, MetaKey, WriteOp};
use crate::raft::typ::{Entry, LogId, StorageError, Vote};
use crate::raft::TypeConfig;
use crate::teeth::{self, Bug};

/// A vote read back from disk is restored as *not committed*, so a restarted leader never
/// resumes its old term on a vote it only remembers: it must win a real election (in a new term,
/// where the longest log wins). openraft 0.9 would otherwise restart a leader in its old term at
/// once, which is only safe while its own log is never shorter than a follower's for that term;
/// a power loss that takes the leader's unsynced tail (its followers synced theirs first) breaks
/// that, and the leader would hand out the same log ids again with other contents (openraft
/// issue #1511). See ARCHITECTURE.md, "A restarted leader campaigns again".
fn forget_commitment(mut vote: Vote) -> Vote {
    if !teeth::planted(Bug::ResumeLeadership) {
        vote.committed = false;
    }
    vote
}

/// The committed id is written to storage once per this many entries (see `save_committed`).
pub const COMMITTED_SAVE_STRIDE: u64 = 64;

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
    /// The index of the last committed id written to storage (0 = none).
    committed_saved: u64,
    last_purged: Option<LogId>,
    /// The id of the last entry written, whether or not it is cached.
    last: Option<LogId>,
    /// The newest entries, decoded, and their approximate size.
    cache: BTreeMap<u64, Entry>,
    cache_bytes: usize,
    /// The most bytes the cache may hold (at least the last entry is always kept).
    cache_limit: usize,
}

fn entry_bytes(e: &Entry) -> usize {
    match &e.payload {
        EntryPayload::Normal(batch) => batch.approx_bytes(),
        EntryPayload::Blank => 64,
        EntryPayload::Membership(_) => 1024,
    }
}

fn decode_entry(index: u64, bytes: &[u8]) -> Result<Entry, StorageError> {
    let entry: Entry = codec::decode(bytes, limits::FRAME_BYTES_MAX).map_err(read_err)?;
    if entry.log_id.index != index {
        return Err(read_err(io::Error::new(
            io::ErrorKind::InvalidData,
            "log entry stored under the wrong index",
        )));
    }
    Ok(entry)
}

impl LogInner {
    fn cache(&mut self, entry: Entry) {
        self.cache_bytes += entry_bytes(&entry);
        if let Some(old) = self.cache.insert(entry.log_id.index, entry) {
            self.cache_bytes -= entry_bytes(&old);
        }
        // Keep at least the last entry, whatever its size.
        while self.cache_bytes > self.cache_limit && self.cache.len() > 1 {
            if let Some((_, e)) = self.cache.pop_first() {
                self.cache_bytes -= entry_bytes(&e);
            }
        }
    }

    fn drop_cached(&mut self, keep: impl Fn(u64) -> bool) {
        let gone: Vec<u64> = self.cache.keys().copied().filter(|i| !keep(*i)).collect();
        for i in gone {
            if let Some(e) = self.cache.remove(&i) {
                self.cache_bytes -= entry_bytes(&e);
            }
        }
    }
}

impl LogStore {
    /// Opens a group's log from the backend's durable image.
    pub fn open(
        group: GroupId,
        backend: SharedBackend,
        flusher: Flusher,
    ) -> Result<Self, StorageError> {
        Self::open_with_cache(group, backend, flusher, limits::LOG_CACHE_BYTES)
    }

    /// [`LogStore::open`] with at most `cache_bytes` of entries kept in memory (tests use a tiny
    /// cache to exercise reading entries back from the backend).
    pub fn open_with_cache(
        group: GroupId,
        backend: SharedBackend,
        flusher: Flusher,
        cache_bytes: usize,
    ) -> Result<Self, StorageError> {
        let image = backend.load(group).map_err(read_err)?;
        fn decode_meta<T: serde::de::DeserializeOwned>(
            image: &GroupImage,
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
            cache_limit: cache_bytes,
            ..LogInner::default()
        };
        inner.committed_saved = inner.committed.map_or(0, |c| c.index);
        // Decode the newest entries into the cache; older ones are read when asked for.
        for (index, bytes) in image.entries.iter().rev() {
            let entry = decode_entry(*index, bytes)?;
            inner.last.get_or_insert(entry.log_id);
            let full = inner.cache_bytes + entry_bytes(&entry) > cache_bytes;
            if full && !inner.cache.is_empty() {
                break;
            }
            inner.cache_bytes += entry_bytes(&entry);
            inner.cache.insert(*index, entry);
        }
        inner.last = inner.last.or(inner.last_purged);
        Ok(LogStore {
            group,
            backend,
            flusher,
            inner: Arc::new(Mutex::new(inner)),
        })
    }

    /// The last committed log id openraft saved here (the store's clones share it).
    pub fn committed(&self) -> Option<LogId> {
        self.lock().committed
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().expect("log store lock")
    }

    fn write(&self, op: WriteOp) -> Result<(), StorageError> {
        self.backend.write(self.group, op).map_err(write_err)
    }

    /// Entries `start..end` read back from the backend.
    fn read_back(&self, start: u64, end: u64) -> Result<Vec<Entry>, StorageError> {
        self.backend
            .read_entries(self.group, start, end)
            .map_err(read_err)?
            .iter()
            .map(|(index, bytes)| decode_entry(*index, bytes))
            .collect()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => e.saturating_add(1),
            Bound::Excluded(e) => *e,
            Bound::Unbounded => u64::MAX,
        };
        // A reversed range would panic inside BTreeMap; refuse it with a typed error instead.
        if start > end {
            let e = io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("log range {range:?} is reversed"),
            );
            return Err(read_err(e));
        }
        let (first_cached, cached) = {
            let inner = self.lock();
            let first = inner.cache.first_key_value().map(|(i, _)| *i);
            let cached: Vec<Entry> = inner
                .cache
                .range(start..end)
                .map(|(_, e)| e.clone())
                .collect();
            (first, cached)
        };
        match first_cached {
            Some(first) if first <= start => Ok(cached),
            Some(first) => {
                let mut out = self.read_back(start, end.min(first))?;
                out.extend(cached);
                Ok(out)
            }
            None => self.read_back(start, end),
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let inner = self.lock();
        Ok(LogState {
            last_purged_log_id: inner.last_purged,
            last_log_id: inner.last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write(WriteOp::Meta(MetaKey::Vote, codec::encode(vote)))?;
        self.lock().vote = Some(*vote);
        if teeth::planted(Bug::VolatileVote) {
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
        // Neither synced nor written every time: a stale committed id only means a restarted
        // node applies less of its log before a leader tells it the commit index again. Writing
        // it once per [`COMMITTED_SAVE_STRIDE`] entries saves a storage write per entry.
        let index = committed.map_or(0, |c| c.index);
        let due = {
            let mut inner = self.lock();
            inner.committed = committed;
            let due = index >= inner.committed_saved.saturating_add(COMMITTED_SAVE_STRIDE);
            if due {
                inner.committed_saved = index;
            }
            due
        };
        if due {
            self.write(WriteOp::Meta(MetaKey::Committed, codec::encode(&committed)))?;
        }
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
                inner.last = Some(e.log_id);
                inner.cache(e);
            }
        }
        if teeth::planted(Bug::EarlyAck) {
            // Deliberately wrong (simulation teeth only): acknowledged before it is durable.
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        self.flusher.flush_then(callback).map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Not synced: the next append's sync covers it, and nothing is acknowledged before that.
        self.write(WriteOp::TruncateFrom(log_id.index))?;
        let previous = log_id.index.checked_sub(1);
        let cached_previous = {
            let mut inner = self.lock();
            inner.drop_cached(|i| i < log_id.index);
            previous.and_then(|p| inner.cache.get(&p).map(|e| e.log_id))
        };
        let last = match (cached_previous, previous) {
            (Some(id), _) => Some(id),
            (None, Some(p)) => self.read_back(p, p + 1)?.pop().map(|e| e.log_id),
            (None, None) => None,
        };
        let mut inner = self.lock();
        inner.last = last.or(inner.last_purged);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.write(WriteOp::Meta(MetaKey::Purged, codec::encode(&Some(log_id))))?;
        self.write(WriteOp::PurgeUpTo(log_id.index))?;
        let mut inner = self.lock();
        inner.last_purged = Some(log_id);
        inner.drop_cached(|i| i > log_id.index);
        if inner.last.is_none_or(|l| l.index < log_id.index) {
            inner.last = Some(log_id);
        }
        Ok(())
    }
}
