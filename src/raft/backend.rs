//! The durability seam: where Raft logs, votes and snapshots go, and when they are safe.
//!
//! Two implementations: [`SledBackend`] (production: one `sled::Db` per node, trees per group,
//! behind a node-wide write-ahead journal whose `fdatasync` is the barrier) and [`MemBackend`] (tests and simulation: keeps what was made durable
//! apart from what was only written, so a simulated crash loses exactly the un-synced writes).
//!
//! **Architecture invariant:** writes are buffered and ordered; [`Backend::sync`] is the only
//! barrier, and everything written before a `sync` call began is durable when it returns.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};

mod journal;
mod pending;
mod sled_backend;

use crate::codec::WriteSeek;

/// A snapshot being read front to back ([`Backend::open_snapshot`]).
pub type SnapshotReader = Box<dyn io::Read + Send>;
pub use crate::future::BoxFuture;
use crate::id::GroupId;
pub use sled_backend::SledBackend;

/// Writes a snapshot into the file (or buffer) it is given, front to back.
pub type SnapshotWrite = Box<dyn FnOnce(&mut dyn WriteSeek) -> io::Result<()> + Send>;

/// Keys of a group's small metadata records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MetaKey {
    /// The current vote.
    Vote,
    /// The last known committed log id.
    Committed,
    /// The last purged log id.
    Purged,
}

impl MetaKey {
    fn name(self) -> &'static [u8] {
        match self {
            MetaKey::Vote => b"vote",
            MetaKey::Committed => b"committed",
            MetaKey::Purged => b"purged",
        }
    }
}

/// One buffered write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOp {
    /// Set a metadata record.
    Meta(MetaKey, Vec<u8>),
    /// Add encoded log entries by index.
    Append(Vec<(u64, Vec<u8>)>),
    /// Remove log entries at and after this index.
    TruncateFrom(u64),
    /// Remove log entries up to and including this index.
    PurgeUpTo(u64),
}

/// What a group had on disk when it was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupImage {
    /// Metadata records.
    pub meta: BTreeMap<MetaKey, Vec<u8>>,
    /// Encoded log entries by index.
    pub entries: BTreeMap<u64, Vec<u8>>,
    /// The latest durable snapshot file, encoded.
    pub snapshot: Option<Vec<u8>>,
}

impl GroupImage {
    /// Copies of the entries with `start <= index < end`.
    fn entries_in(&self, start: u64, end: u64) -> Vec<(u64, Vec<u8>)> {
        self.entries
            .range(start..end.max(start))
            .map(|(k, v)| (*k, v.clone()))
            .collect()
    }
}

/// Durable storage for every group of one node.
pub trait Backend: Send + Sync + 'static {
    /// Reads a group's durable image.
    fn load(&self, group: GroupId) -> io::Result<GroupImage>;
    /// Buffers a write; it is durable after the next [`Backend::sync`] completes.
    fn write(&self, group: GroupId, op: WriteOp) -> io::Result<()>;
    /// Makes every earlier write durable.
    fn sync(&self) -> BoxFuture<'_, io::Result<()>>;
    /// Replaces a group's snapshot with what `write` writes (streamed, never whole in memory);
    /// durable when the future completes, and a crash leaves either the old or the new one.
    fn write_snapshot(&self, group: GroupId, write: SnapshotWrite)
        -> BoxFuture<'_, io::Result<()>>;
    /// Reads a group's latest durable snapshot.
    fn read_snapshot(&self, group: GroupId) -> io::Result<Option<Vec<u8>>>;
    /// Opens a group's latest durable snapshot for streaming: a reader and its length in bytes.
    fn open_snapshot(&self, group: GroupId) -> io::Result<Option<(SnapshotReader, u64)>> {
        Ok(self.read_snapshot(group)?.map(|bytes| {
            let len = bytes.len() as u64;
            (Box::new(io::Cursor::new(bytes)) as SnapshotReader, len)
        }))
    }
    /// Reads the written (not necessarily durable) log entries with `start <= index < end`.
    fn read_entries(&self, group: GroupId, start: u64, end: u64)
        -> io::Result<Vec<(u64, Vec<u8>)>>;

    /// Replaces a group's snapshot with `bytes`; durable when the future completes.
    fn save_snapshot(&self, group: GroupId, bytes: Vec<u8>) -> BoxFuture<'_, io::Result<()>> {
        self.write_snapshot(group, Box::new(move |w| w.write_all(&bytes)))
    }

    /// Runs CPU-heavy encoding (a backup image) off the async workers: on tokio's blocking pool
    /// by default. [`MemBackend`] runs it inline, so a simulation stays deterministic (a thread
    /// of the blocking pool finishes at a moment no seed decides).
    fn offload(&self, work: Offload) -> BoxFuture<'_, io::Result<Vec<u8>>> {
        Box::pin(async move {
            tokio::task::spawn_blocking(work)
                .await
                .map_err(io::Error::other)
        })
    }
}

/// Work for [`Backend::offload`].
pub type Offload = Box<dyn FnOnce() -> Vec<u8> + Send>;

/// In-memory storage with crash semantics.
#[derive(Clone, Default)]
pub struct MemBackend {
    disk: Arc<Mutex<MemDisk>>,
    /// How long a sync takes (simulated time under a simulation): writes issued while a sync
    /// runs are not covered by it, so a crash can land between a write and its barrier.
    sync_latency: std::time::Duration,
}

#[derive(Default)]
struct MemDisk {
    /// What survives a crash.
    durable: BTreeMap<GroupId, GroupImage>,
    /// Written but not yet synced, in order.
    pending: Vec<(GroupId, WriteOp)>,
    /// How many syncs ran, for tests that check coalescing.
    syncs: u64,
}

impl MemBackend {
    /// A fresh, empty disk whose syncs complete at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh, empty disk whose syncs take `latency` (on the runtime's clock).
    pub fn with_sync_latency(latency: std::time::Duration) -> Self {
        MemBackend {
            sync_latency: latency,
            ..Self::default()
        }
    }

    /// Simulates power loss: of the writes not yet synced, only the first `keep` reach the disk.
    pub fn crash(&self, keep: usize) {
        let mut disk = self.disk.lock().expect("mem disk lock");
        let pending = std::mem::take(&mut disk.pending);
        for (group, op) in pending.into_iter().take(keep) {
            apply_op(disk.durable.entry(group).or_default(), op);
        }
    }

    /// Writes waiting for a sync.
    pub fn pending_writes(&self) -> usize {
        self.disk.lock().expect("mem disk lock").pending.len()
    }

    /// Whether an unsynced write of `key` is pending (the simulation crashes nodes right then).
    pub fn pending_meta(&self, key: MetaKey) -> bool {
        let disk = self.disk.lock().expect("mem disk lock");
        disk.pending
            .iter()
            .any(|(_, op)| matches!(op, WriteOp::Meta(k, _) if *k == key))
    }

    /// The unsynced writes of `key`, oldest first (the simulation inspects pending votes).
    pub fn pending_meta_values(&self, key: MetaKey) -> Vec<Vec<u8>> {
        let disk = self.disk.lock().expect("mem disk lock");
        disk.pending
            .iter()
            .filter_map(|(_, op)| match op {
                WriteOp::Meta(k, v) if *k == key => Some(v.clone()),
                _ => None,
            })
            .collect()
    }

    /// How many syncs have run.
    pub fn sync_count(&self) -> u64 {
        self.disk.lock().expect("mem disk lock").syncs
    }
}

fn apply_op(image: &mut GroupImage, op: WriteOp) {
    match op {
        WriteOp::Meta(key, value) => {
            image.meta.insert(key, value);
        }
        WriteOp::Append(entries) => image.entries.extend(entries),
        removal => remove_covered(&mut image.entries, &removal),
    }
}

/// Removes the entries a truncation or purge covers; other writes remove nothing.
fn remove_covered(entries: &mut BTreeMap<u64, Vec<u8>>, op: &WriteOp) {
    match op {
        WriteOp::TruncateFrom(index) => {
            entries.split_off(index);
        }
        WriteOp::PurgeUpTo(index) => {
            *entries = entries.split_off(&index.saturating_add(1));
        }
        WriteOp::Meta(..) | WriteOp::Append(_) => {}
    }
}

impl Backend for MemBackend {
    fn load(&self, group: GroupId) -> io::Result<GroupImage> {
        let disk = self.disk.lock().expect("mem disk lock");
        Ok(disk.durable.get(&group).cloned().unwrap_or_default())
    }

    fn write(&self, group: GroupId, op: WriteOp) -> io::Result<()> {
        self.disk
            .lock()
            .expect("mem disk lock")
            .pending
            .push((group, op));
        Ok(())
    }

    fn sync(&self) -> BoxFuture<'_, io::Result<()>> {
        // The barrier covers the writes issued before it started, and lands after the latency.
        let covered = self.disk.lock().expect("mem disk lock").pending.len();
        let latency = self.sync_latency;
        Box::pin(async move {
            if !latency.is_zero() {
                tokio::time::sleep(latency).await;
            }
            let mut disk = self.disk.lock().expect("mem disk lock");
            let covered = covered.min(disk.pending.len());
            let done: Vec<_> = disk.pending.drain(..covered).collect();
            for (group, op) in done {
                apply_op(disk.durable.entry(group).or_default(), op);
            }
            disk.syncs += 1;
            Ok(())
        })
    }

    fn write_snapshot(
        &self,
        group: GroupId,
        write: SnapshotWrite,
    ) -> BoxFuture<'_, io::Result<()>> {
        let mut buffer = io::Cursor::new(Vec::new());
        let written = write(&mut buffer);
        Box::pin(async move {
            written?;
            let mut disk = self.disk.lock().expect("mem disk lock");
            disk.durable.entry(group).or_default().snapshot = Some(buffer.into_inner());
            Ok(())
        })
    }

    fn read_snapshot(&self, group: GroupId) -> io::Result<Option<Vec<u8>>> {
        let disk = self.disk.lock().expect("mem disk lock");
        Ok(disk.durable.get(&group).and_then(|g| g.snapshot.clone()))
    }

    fn read_entries(
        &self,
        group: GroupId,
        start: u64,
        end: u64,
    ) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let disk = self.disk.lock().expect("mem disk lock");
        let mut view = GroupImage {
            entries: disk
                .durable
                .get(&group)
                .map(|g| {
                    g.entries
                        .range(start..end.max(start))
                        .map(|(k, v)| (*k, v.clone()))
                        .collect()
                })
                .unwrap_or_default(),
            ..GroupImage::default()
        };
        for (g, op) in &disk.pending {
            if *g == group && !matches!(op, WriteOp::Meta(..)) {
                apply_op(&mut view, op.clone());
            }
        }
        Ok(view.entries_in(start, end))
    }

    fn offload(&self, work: Offload) -> BoxFuture<'_, io::Result<Vec<u8>>> {
        Box::pin(std::future::ready(Ok(work())))
    }
}

/// Writes a file so that after a crash either the old or the new content is there, whole.
pub fn write_durably(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let bytes = bytes.to_vec();
    write_file_durably(dir, path, Box::new(move |w| w.write_all(&bytes)))
}

/// While a large file is written it is synced every this many bytes, so its dirty pages never
/// pile up: a snapshot of a million sessions (136 MB a group) written whole and then fsynced made
/// the node's journal syncs queue behind its writeback for seconds.
const SYNC_EVERY_BYTES: u64 = 8 << 20;

/// A file being written that syncs its data every [`SYNC_EVERY_BYTES`].
struct PacedFile {
    file: File,
    unsynced: u64,
}

impl io::Write for PacedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.unsynced += n as u64;
        if self.unsynced >= SYNC_EVERY_BYTES {
            self.file.sync_data()?;
            self.unsynced = 0;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl io::Seek for PacedFile {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

/// [`write_durably`] with the content streamed by `write`.
pub fn write_file_durably(dir: &Path, path: &Path, write: SnapshotWrite) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = PacedFile {
        file: File::create(&tmp)?,
        unsynced: 0,
    };
    write(&mut file)?;
    let file = file.file;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_crash_loses_only_unsynced_writes() {
        let disk = MemBackend::new();
        let g = GroupId(0);
        disk.write(g, WriteOp::Append(vec![(1, b"a".to_vec())]))
            .expect("write");
        futures_util::FutureExt::now_or_never(disk.sync())
            .expect("ready")
            .expect("sync");
        disk.write(g, WriteOp::Append(vec![(2, b"b".to_vec())]))
            .expect("write");
        disk.write(g, WriteOp::Meta(MetaKey::Vote, b"v".to_vec()))
            .expect("write");
        disk.crash(1);
        let image = disk.load(g).expect("load");
        assert_eq!(
            image.entries.keys().copied().collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert!(
            image.meta.is_empty(),
            "the write after the crash point is gone"
        );
    }
}
