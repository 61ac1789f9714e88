//! The durability seam: where Raft logs, votes and snapshots go, and when they are safe.
//!
//! Two implementations: [`SledBackend`] (production: one `sled::Db` per node, trees per group,
//! a real fsync barrier) and [`MemBackend`] (tests and simulation: keeps what was made durable
//! apart from what was only written, so a simulated crash loses exactly the un-synced writes).
//!
//! **Architecture invariant:** writes are buffered and ordered; [`Backend::sync`] is the only
//! barrier, and everything written before a `sync` call began is durable when it returns.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::codec::WriteSeek;
pub use crate::future::BoxFuture;
use crate::id::GroupId;

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
    /// Reads the written (not necessarily durable) log entries with `start <= index < end`.
    fn read_entries(&self, group: GroupId, start: u64, end: u64)
        -> io::Result<Vec<(u64, Vec<u8>)>>;

    /// Replaces a group's snapshot with `bytes`; durable when the future completes.
    fn save_snapshot(&self, group: GroupId, bytes: Vec<u8>) -> BoxFuture<'_, io::Result<()>> {
        self.write_snapshot(group, Box::new(move |w| w.write_all(&bytes)))
    }
}

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
        WriteOp::TruncateFrom(index) => {
            image.entries.split_off(&index);
        }
        WriteOp::PurgeUpTo(index) => {
            image.entries = image.entries.split_off(&(index.saturating_add(1)));
        }
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
        Ok(view
            .entries
            .range(start..end.max(start))
            .map(|(k, v)| (*k, v.clone()))
            .collect())
    }
}

/// sled's page cache per node.
const SLED_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// How many times (20 ms apart) opening waits for a lock a just-dropped handle still holds.
const OPEN_LOCK_RETRIES: u32 = 100;

/// sled-backed storage: one `sled::Db` for all groups so one sync commits every group's appends.
#[derive(Clone)]
pub struct SledBackend {
    db: sled::Db,
    /// The directory holding the Db and the snapshot files.
    dir: PathBuf,
    /// sled's data file, kept open: `flush()` only does `sync_file_range`, so the real barrier is
    /// an `fdatasync` through this handle after it (DESIGN §5, sled issue #1452).
    data_file: Arc<File>,
}

impl SledBackend {
    /// Opens (or creates) the node's storage under `dir`.
    pub fn open(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // sled releases its file lock from a background thread after the last handle drops, so
        // an in-process reopen (embedded restarts, tests) can briefly see the lock held.
        let mut attempts = 0;
        let db = loop {
            let opened = sled::Config::new()
                .path(dir.join("sled"))
                .mode(sled::Mode::HighThroughput)
                // The log is read back rarely (its tail is cached decoded in memory, the state
                // machine lives in memory): sled's default 1 GiB page cache only held a second
                // copy of the log.
                .cache_capacity(SLED_CACHE_BYTES)
                .open();
            match opened {
                Err(e) if lock_held(&e) && attempts < OPEN_LOCK_RETRIES => {
                    attempts += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other.map_err(sled_io)?,
            }
        };
        let data_file = Arc::new(File::open(dir.join("sled").join("db"))?);
        Ok(SledBackend {
            db,
            dir: dir.to_path_buf(),
            data_file,
        })
    }

    fn tree(&self, group: GroupId, kind: &str) -> io::Result<sled::Tree> {
        self.db
            .open_tree(format!("g{}.{kind}", group.0))
            .map_err(sled_io)
    }

    fn snapshot_path(&self, group: GroupId) -> PathBuf {
        self.dir.join(format!("snapshot-g{}.bin", group.0))
    }
}

/// Whether opening failed only because another handle holds the Db's file lock. sled 0.34 turns
/// the lock's `WouldBlock` into an `ErrorKind::Other` error saying "could not acquire lock", so the
/// kind alone is not enough.
fn lock_held(e: &sled::Error) -> bool {
    match e {
        sled::Error::Io(e) => {
            e.kind() == io::ErrorKind::WouldBlock
                || e.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

fn sled_io(e: sled::Error) -> io::Error {
    match e {
        sled::Error::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

impl Backend for SledBackend {
    fn load(&self, group: GroupId) -> io::Result<GroupImage> {
        let mut image = GroupImage::default();
        let meta = self.tree(group, "meta")?;
        for key in [MetaKey::Vote, MetaKey::Committed, MetaKey::Purged] {
            if let Some(v) = meta.get(key.name()).map_err(sled_io)? {
                image.meta.insert(key, v.to_vec());
            }
        }
        for kv in self.tree(group, "log")?.iter() {
            let (k, v) = kv.map_err(sled_io)?;
            image.entries.insert(log_key(&k)?, v.to_vec());
        }
        image.snapshot = self.read_snapshot(group)?;
        Ok(image)
    }

    fn write(&self, group: GroupId, op: WriteOp) -> io::Result<()> {
        match op {
            WriteOp::Meta(key, value) => {
                self.tree(group, "meta")?
                    .insert(key.name(), value)
                    .map_err(sled_io)?;
            }
            WriteOp::Append(entries) => {
                let mut batch = sled::Batch::default();
                for (index, bytes) in entries {
                    batch.insert(&index.to_be_bytes(), bytes);
                }
                self.tree(group, "log")?
                    .apply_batch(batch)
                    .map_err(sled_io)?;
            }
            WriteOp::TruncateFrom(index) => {
                let log = self.tree(group, "log")?;
                let mut batch = sled::Batch::default();
                for key in log.range(index.to_be_bytes()..).keys() {
                    batch.remove(key.map_err(sled_io)?);
                }
                log.apply_batch(batch).map_err(sled_io)?;
            }
            WriteOp::PurgeUpTo(index) => {
                let log = self.tree(group, "log")?;
                let mut batch = sled::Batch::default();
                for key in log.range(..=index.to_be_bytes()).keys() {
                    batch.remove(key.map_err(sled_io)?);
                }
                log.apply_batch(batch).map_err(sled_io)?;
            }
        }
        Ok(())
    }

    fn sync(&self) -> BoxFuture<'_, io::Result<()>> {
        let db = self.db.clone();
        let file = self.data_file.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                db.flush().map_err(sled_io)?;
                file.sync_data()
            })
            .await
            .map_err(io::Error::other)?
        })
    }

    fn write_snapshot(
        &self,
        group: GroupId,
        write: SnapshotWrite,
    ) -> BoxFuture<'_, io::Result<()>> {
        let path = self.snapshot_path(group);
        let dir = self.dir.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || write_file_durably(&dir, &path, write))
                .await
                .map_err(io::Error::other)?
        })
    }

    fn read_snapshot(&self, group: GroupId) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.snapshot_path(group)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn read_entries(
        &self,
        group: GroupId,
        start: u64,
        end: u64,
    ) -> io::Result<Vec<(u64, Vec<u8>)>> {
        let mut out = Vec::new();
        if start >= end {
            return Ok(out);
        }
        for kv in self
            .tree(group, "log")?
            .range(start.to_be_bytes()..end.to_be_bytes())
        {
            let (k, v) = kv.map_err(sled_io)?;
            out.push((log_key(&k)?, v.to_vec()));
        }
        Ok(out)
    }
}

fn log_key(k: &[u8]) -> io::Result<u64> {
    let key: [u8; 8] = k
        .try_into()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "log key is not 8 bytes"))?;
    Ok(u64::from_be_bytes(key))
}

/// Writes a file so that after a crash either the old or the new content is there, whole.
pub fn write_durably(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let bytes = bytes.to_vec();
    write_file_durably(dir, path, Box::new(move |w| w.write_all(&bytes)))
}

/// [`write_durably`] with the content streamed by `write`.
pub fn write_file_durably(dir: &Path, path: &Path, write: SnapshotWrite) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    write(&mut file)?;
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

    #[test]
    fn reopening_waits_for_a_handle_that_is_still_closing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = SledBackend::open(dir.path()).expect("open");
        first
            .write(GroupId(0), WriteOp::Meta(MetaKey::Vote, b"v".to_vec()))
            .expect("w");
        // The old handle is dropped 200 ms after the reopen starts, as sled's flusher does.
        let closer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(first);
        });
        let second = SledBackend::open(dir.path()).expect("reopen waits for the lock");
        closer.join().expect("closer");
        let image = second.load(GroupId(0)).expect("load");
        assert_eq!(image.meta.get(&MetaKey::Vote), Some(&b"v".to_vec()));
    }

    #[test]
    fn sled_backend_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = GroupId(3);
        {
            let disk = SledBackend::open(dir.path()).expect("open");
            disk.write(
                g,
                WriteOp::Append(vec![
                    (1, b"a".to_vec()),
                    (2, b"b".to_vec()),
                    (3, b"c".to_vec()),
                ]),
            )
            .expect("w");
            disk.write(g, WriteOp::TruncateFrom(3)).expect("w");
            disk.write(g, WriteOp::PurgeUpTo(1)).expect("w");
            disk.write(g, WriteOp::Meta(MetaKey::Vote, b"v1".to_vec()))
                .expect("w");
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("rt");
            rt.block_on(disk.sync()).expect("sync");
            rt.block_on(disk.save_snapshot(g, b"snap".to_vec()))
                .expect("snap");
        }
        let disk = SledBackend::open(dir.path()).expect("reopen");
        let image = disk.load(g).expect("load");
        assert_eq!(image.entries, BTreeMap::from([(2, b"b".to_vec())]));
        assert_eq!(image.meta.get(&MetaKey::Vote), Some(&b"v1".to_vec()));
        assert_eq!(image.snapshot.as_deref(), Some(&b"snap"[..]));
    }
}
