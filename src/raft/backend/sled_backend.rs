//! The production backend: one `sled::Db` per node (trees per group) behind the node's
//! write-ahead [`journal`](super::journal).
//!
//! A write is queued (and encoded as a journal record) at once; a [`Backend::sync`] appends every
//! queued record to the journal with one `write` and one `fdatasync` and nothing else: the
//! journalled writes stay in memory (log entries in a [`PendingLog`]) until the checkpoint after
//! their segment. Reads see sled with the journalled and queued writes laid over it, so they see
//! every write as soon as it was made, as the [`Backend`] contract says. When a journal segment
//! fills, a new one starts and a background thread applies the held writes to sled, inserts the
//! entries still in the log (those purged or truncated meanwhile never reach sled), flushes sled
//! and then deletes the old segment.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::journal::{self, Segment};
use super::pending::PendingLog;
use super::WriteOp;
use super::{apply_op, write_file_durably, Backend, BoxFuture, GroupImage, MetaKey};
use super::{SnapshotReader, SnapshotWrite};
use crate::id::GroupId;

/// sled's page cache per node.
const SLED_CACHE_BYTES: u64 = 32 * 1024 * 1024;

/// The nice value snapshot writers run at.
#[cfg(target_os = "linux")]
const SNAPSHOT_NICE: i32 = 10;

/// How many times (20 ms apart) opening waits for a lock a just-dropped handle still holds.
const OPEN_LOCK_RETRIES: u32 = 100;

/// How many held log entries a checkpoint copies per turn of the queue lock.
const DRAIN_CHUNK: usize = 64;

/// Open tree handles by group and kind, shared with the checkpoint thread.
type Trees = Arc<Mutex<BTreeMap<(GroupId, &'static str), sled::Tree>>>;

/// The group's tree of that kind, opened once.
fn cached_tree(
    db: &sled::Db,
    trees: &Trees,
    group: GroupId,
    kind: &'static str,
) -> io::Result<sled::Tree> {
    let mut trees = trees.lock().expect("tree cache lock");
    if let Some(tree) = trees.get(&(group, kind)) {
        return Ok(tree.clone());
    }
    let opened = tree(db, group, kind)?;
    trees.insert((group, kind), opened.clone());
    Ok(opened)
}

/// sled-backed storage: one `sled::Db` and one journal for all groups, so one sync commits every
/// group's appends.
#[derive(Clone)]
pub struct SledBackend {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    /// The directory holding the Db, the journal and the snapshot files.
    dir: PathBuf,
    /// sled's data file, kept open: `flush()` only does `sync_file_range`, so the real barrier is
    /// an `fdatasync` through this handle after it (DESIGN §5, sled issue #1452).
    data_file: Arc<File>,
    journal_dir: PathBuf,
    /// A journal segment this large is closed at the next sync and a checkpoint started.
    segment_bytes: u64,
    /// Writes made but not yet in sled.
    queue: Arc<Mutex<Queue>>,
    /// Open tree handles by group and kind (`open_tree` looks the name up each call).
    trees: Trees,
    /// The journal segment being appended; held for a whole sync, so syncs run one at a time
    /// and in order.
    segment: Mutex<Segment>,
    /// Whether a checkpoint thread is running.
    checkpointing: Arc<AtomicBool>,
    /// The latest checkpoint thread (joined when the storage closes).
    checkpointer: Mutex<Option<JoinHandle<()>>>,
    /// Tests run checkpoints step by step instead of on a thread: the closed segment's job
    /// waits here.
    #[cfg(test)]
    parked: Mutex<Option<Checkpoint>>,
    #[cfg(test)]
    manual_checkpoints: AtomicBool,
    /// Set when a journal write failed: nothing after it may be called durable.
    failed: AtomicBool,
    /// Held while a snapshot is written: a node writes one group's snapshot at a time, so groups
    /// that come due together (after a bulk load, say) take turns instead of all encoding and
    /// syncing at once beside the write load.
    snapshot_slot: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Queue {
    /// Writes made and not yet journalled (at the next sync).
    ops: Vec<(GroupId, WriteOp)>,
    /// `ops` encoded as journal records.
    records: Vec<u8>,
    /// Journalled writes other than appends (metadata, truncations, purges), in order, for the
    /// next checkpoint to apply to sled.
    sled_ops: Vec<(GroupId, WriteOp)>,
    /// Journalled log entries not in sled, with every later truncation and purge applied.
    pending: PendingLog,
    /// The running checkpoint's share, from the closed segments: `closing_ops` (it applies them
    /// to sled first, then empties this) and `draining` (then it inserts those entries). An
    /// entry still held has no later truncation or purge covering it (those removed it here),
    /// so applying the writes before inserting the entries ends where the journal does.
    closing_ops: Arc<Vec<(GroupId, WriteOp)>>,
    draining: PendingLog,
}

impl Queue {
    /// Moves the first `count` queued writes, now journalled, on: appends to `pending`; the
    /// rest are applied to the entries held here and kept for the next checkpoint.
    fn journalled(&mut self, count: usize) {
        for (group, op) in self.ops.drain(..count) {
            match op {
                WriteOp::Append(entries) => self.pending.append(group, entries),
                other => {
                    self.pending.remove(group, &other);
                    self.draining.remove(group, &other);
                    self.sled_ops.push((group, other));
                }
            }
        }
    }

    /// Hands everything journalled so far to a checkpoint (with whatever a failed one left).
    fn close_segment(&mut self) {
        let mut ops = std::mem::take(&mut self.closing_ops).to_vec();
        ops.append(&mut self.sled_ops);
        self.closing_ops = Arc::new(ops);
        let entries = std::mem::take(&mut self.pending);
        self.draining.merge(entries);
    }
}

impl SledBackend {
    /// Opens (or creates) the node's storage under `dir`, replaying its journal into sled.
    pub fn open(dir: &Path) -> io::Result<Self> {
        Self::open_with(dir, journal::SEGMENT_BYTES)
    }

    /// [`SledBackend::open`] with journal segments closed at `segment_bytes`.
    fn open_with(dir: &Path, segment_bytes: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let db = open_db(&dir.join("sled"))?;
        let data_file = Arc::new(File::open(dir.join("sled").join("db"))?);
        let journal_dir = dir.join("journal");
        std::fs::create_dir_all(&journal_dir)?;
        let replayed = journal::replay(&journal_dir, |group, op| apply(&db, group, op))?;
        if replayed.records > 0 || replayed.last_segment > 0 {
            checkpoint(&db, &data_file)?;
            journal::remove_up_to(&journal_dir, replayed.last_segment)?;
            tracing::debug!(
                records = replayed.records,
                torn_tail = replayed.torn_tail,
                "replayed the journal into sled"
            );
        }
        let segment = Segment::create(&journal_dir, replayed.last_segment + 1)?;
        Ok(SledBackend {
            inner: Arc::new(Inner {
                db,
                dir: dir.to_path_buf(),
                data_file,
                journal_dir,
                segment_bytes,
                queue: Arc::default(),
                trees: Trees::default(),
                segment: Mutex::new(segment),
                checkpointing: Arc::default(),
                checkpointer: Mutex::default(),
                #[cfg(test)]
                parked: Mutex::default(),
                #[cfg(test)]
                manual_checkpoints: AtomicBool::new(false),
                failed: AtomicBool::new(false),
                snapshot_slot: tokio::sync::Mutex::new(()),
            }),
        })
    }

    fn snapshot_path(&self, group: GroupId) -> PathBuf {
        self.inner.dir.join(format!("snapshot-g{}.bin", group.0))
    }
}

fn open_db(path: &Path) -> io::Result<sled::Db> {
    // sled releases its file lock from a background thread after the last handle drops, so
    // an in-process reopen (embedded restarts, tests) can briefly see the lock held.
    let mut attempts = 0;
    loop {
        let opened = sled::Config::new()
            .path(path)
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
            other => return other.map_err(sled_io),
        }
    }
}

/// Makes everything applied to sled so far durable.
fn checkpoint(db: &sled::Db, data_file: &File) -> io::Result<()> {
    db.flush().map_err(sled_io)?;
    data_file.sync_data()
}

impl Inner {
    /// The blocking half of [`Backend::sync`].
    fn sync(&self) -> io::Result<()> {
        let mut segment = self.segment.lock().expect("journal segment lock");
        if self.failed.load(Ordering::Acquire) {
            return Err(io::Error::other("an earlier journal write failed"));
        }
        let (records, count) = {
            let mut q = self.queue.lock().expect("journal queue lock");
            (std::mem::take(&mut q.records), q.ops.len())
        };
        if count == 0 {
            return Ok(());
        }
        if let Err(e) = segment.append(&records) {
            self.failed.store(true, Ordering::Release);
            return Err(e);
        }
        // A sync never touches sled: the journalled writes stay in memory, where readers find
        // them, until the checkpoint after their segment.
        self.queue
            .lock()
            .expect("journal queue lock")
            .journalled(count);
        if segment.is_full(self.segment_bytes) && !self.checkpointing.swap(true, Ordering::AcqRel) {
            self.rotate(&mut segment)?;
        }
        Ok(())
    }

    /// Starts a new segment and, in the background, moves the pending entries into sled,
    /// flushes it and removes the old segments.
    fn rotate(&self, segment: &mut Segment) -> io::Result<()> {
        let closed = segment.number();
        *segment = Segment::create(&self.journal_dir, closed + 1)?;
        // Every write journalled in the closed segments is in sled or held in memory: the held
        // ones are this checkpoint's.
        self.queue
            .lock()
            .expect("journal queue lock")
            .close_segment();
        let job = Checkpoint {
            db: self.db.clone(),
            trees: self.trees.clone(),
            data_file: self.data_file.clone(),
            journal_dir: self.journal_dir.clone(),
            queue: self.queue.clone(),
            ops_applied: AtomicBool::new(false),
            closed,
        };
        #[cfg(test)]
        if self.manual_checkpoints.load(Ordering::Acquire) {
            *self.parked.lock().expect("parked checkpoint") = Some(job);
            return Ok(());
        }
        let running = self.checkpointing.clone();
        let handle = std::thread::Builder::new()
            .name("journal-checkpoint".into())
            .spawn(move || {
                // Nothing waits for a checkpoint: the write path wins the CPU.
                lower_priority();
                if let Err(e) = job.run() {
                    // The old segments stay and are replayed at the next start; what was not
                    // moved stays in memory for the next checkpoint.
                    tracing::error!(error = %e, "journal checkpoint failed");
                }
                running.store(false, Ordering::Release);
            })?;
        // The previous thread has finished (`checkpointing` was clear): dropping its handle
        // only detaches it.
        *self.checkpointer.lock().expect("checkpointer lock") = Some(handle);
        Ok(())
    }

    /// `image` with the writes of `group` not yet in sled laid over it, in order, for the
    /// entries with `start <= index < end`: each set of held entries after the writes that
    /// came before it (the ones after it have been applied to it already).
    fn overlay(&self, group: GroupId, image: &mut GroupImage, q: &Queue, start: u64, end: u64) {
        let ops = |image: &mut GroupImage, ops: &[(GroupId, WriteOp)]| {
            for (g, op) in ops {
                if *g == group {
                    apply_op(image, op.clone());
                }
            }
        };
        ops(image, &q.closing_ops);
        q.draining.lay_over(group, start, end, &mut image.entries);
        ops(image, &q.sled_ops);
        q.pending.lay_over(group, start, end, &mut image.entries);
        ops(image, &q.ops);
    }

    /// Runs up to `chunks` turns of a parked checkpoint, `n` entries each (tests).
    #[cfg(test)]
    fn step_checkpoint(&self, chunks: usize, n: usize) {
        let mut parked = self.parked.lock().expect("parked checkpoint");
        let Some(job) = parked.as_ref() else {
            return;
        };
        for _ in 0..chunks {
            if !job.step(n).expect("a checkpoint step") {
                job.finish().expect("finish the checkpoint");
                *parked = None;
                self.checkpointing.store(false, Ordering::Release);
                return;
            }
        }
    }

    /// Waits for the running checkpoint, if any, to finish.
    fn join_checkpoint(&self) {
        let handle = self.checkpointer.lock().expect("checkpointer lock").take();
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("the journal checkpoint thread panicked");
            }
        }
    }

    /// The group's tree of that kind, opened once.
    fn tree(&self, group: GroupId, kind: &'static str) -> io::Result<sled::Tree> {
        cached_tree(&self.db, &self.trees, group, kind)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Whatever was written and not yet synced reaches the journal (and the next start
        // replays it into sled), as sled's own flush-on-drop would have done.
        self.join_checkpoint();
        if let Err(e) = self
            .sync()
            .and_then(|()| checkpoint(&self.db, &self.data_file))
        {
            tracing::warn!(error = %e, "closing storage: the last writes may not be durable");
        }
    }
}

/// A checkpoint's work: put the closed segments' writes held in memory into sled (the writes
/// other than appends, then the entries still in the log), flush sled, delete the segments.
/// Only this thread changes sled while the node runs, so no lock orders it against the syncs.
struct Checkpoint {
    db: sled::Db,
    trees: Trees,
    data_file: Arc<File>,
    journal_dir: PathBuf,
    queue: Arc<Mutex<Queue>>,
    /// Whether `closing_ops` are in sled.
    ops_applied: AtomicBool,
    /// The newest closed segment.
    closed: u64,
}

impl Checkpoint {
    fn run(&self) -> io::Result<()> {
        while self.step(DRAIN_CHUNK)? {}
        self.finish()
    }

    /// One step: the closing writes first, then up to `n` entries at a time; whether there
    /// was anything to do.
    fn step(&self, n: usize) -> io::Result<bool> {
        let tree = |group, kind| cached_tree(&self.db, &self.trees, group, kind);
        if !self.ops_applied.load(Ordering::Acquire) {
            let ops = self
                .queue
                .lock()
                .expect("journal queue lock")
                .closing_ops
                .clone();
            for (group, op) in ops.iter() {
                apply_to(|kind| tree(*group, kind), op)?;
            }
            // sled has them now: readers must stop laying them over sled, where they would
            // also cover entries this checkpoint inserts next (an old truncation, say).
            self.queue.lock().expect("journal queue lock").closing_ops = Arc::default();
            self.ops_applied.store(true, Ordering::Release);
            return Ok(true);
        }
        // A chunk is copied, inserted and only then dropped from `draining`, so readers find
        // each entry in one or the other throughout. A truncation or purge journalled meanwhile
        // removed what it covers from `draining` (and readers apply it over sled); an entry of
        // this chunk it covers reaches sled and is removed by the next checkpoint, which
        // applies that write.
        let chunk = self
            .queue
            .lock()
            .expect("journal queue lock")
            .draining
            .first(n);
        for (group, index, bytes) in &chunk {
            tree(*group, "log")?
                .insert(index.to_be_bytes(), bytes.as_slice())
                .map_err(sled_io)?;
        }
        let mut q = self.queue.lock().expect("journal queue lock");
        for (group, index, _) in &chunk {
            q.draining.forget(*group, *index);
        }
        Ok(!chunk.is_empty())
    }

    /// Makes sled durable and deletes the closed segments.
    fn finish(&self) -> io::Result<()> {
        checkpoint(&self.db, &self.data_file)?;
        journal::remove_up_to(&self.journal_dir, self.closed)
    }
}

fn tree(db: &sled::Db, group: GroupId, kind: &str) -> io::Result<sled::Tree> {
    db.open_tree(format!("g{}.{kind}", group.0))
        .map_err(sled_io)
}

/// Applies one write to sled's trees, key by key: not atomically (sled's `apply_batch` seals
/// its IO buffer and writes it out at every call, which is the cost the journal removes). The
/// journal makes that safe: a write interrupted here is replayed whole at the next start.
fn apply(db: &sled::Db, group: GroupId, op: WriteOp) -> io::Result<()> {
    apply_to(|kind| tree(db, group, kind), &op)
}

/// [`apply`] with the group's trees from `tree`.
fn apply_to(tree: impl Fn(&'static str) -> io::Result<sled::Tree>, op: &WriteOp) -> io::Result<()> {
    match op {
        WriteOp::Meta(key, value) => {
            tree("meta")?
                .insert(key.name(), value.as_slice())
                .map_err(sled_io)?;
        }
        WriteOp::Append(entries) => {
            let log = tree("log")?;
            for (index, bytes) in entries {
                log.insert(index.to_be_bytes(), bytes.as_slice())
                    .map_err(sled_io)?;
            }
        }
        WriteOp::TruncateFrom(index) => {
            let log = tree("log")?;
            for key in log.range(index.to_be_bytes()..).keys() {
                log.remove(key.map_err(sled_io)?).map_err(sled_io)?;
            }
        }
        WriteOp::PurgeUpTo(index) => {
            let log = tree("log")?;
            for key in log.range(..=index.to_be_bytes()).keys() {
                log.remove(key.map_err(sled_io)?).map_err(sled_io)?;
            }
        }
    }
    Ok(())
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

/// Lowers the calling thread's CPU priority (nice 10). Best effort: where it fails, the
/// thread runs at normal priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // On Linux the nice value is per thread; the id of a thread names just that thread.
        let tid = rustix::thread::gettid();
        if let Err(e) = rustix::process::setpriority_process(Some(tid), SNAPSHOT_NICE) {
            tracing::debug!(error = %e, "could not lower the snapshot writer's priority");
        }
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
        let q = self.inner.queue.lock().expect("journal queue lock");
        let meta = self.inner.tree(group, "meta")?;
        for key in [MetaKey::Vote, MetaKey::Committed, MetaKey::Purged] {
            if let Some(v) = meta.get(key.name()).map_err(sled_io)? {
                image.meta.insert(key, v.to_vec());
            }
        }
        for kv in self.inner.tree(group, "log")?.iter() {
            let (k, v) = kv.map_err(sled_io)?;
            image.entries.insert(log_key(&k)?, v.to_vec());
        }
        self.inner.overlay(group, &mut image, &q, 0, u64::MAX);
        drop(q);
        image.snapshot = self.read_snapshot(group)?;
        Ok(image)
    }

    fn write(&self, group: GroupId, op: WriteOp) -> io::Result<()> {
        let mut q = self.inner.queue.lock().expect("journal queue lock");
        journal::encode(&mut q.records, group, &op);
        q.ops.push((group, op));
        Ok(())
    }

    fn sync(&self) -> BoxFuture<'_, io::Result<()>> {
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || inner.sync())
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
        let dir = self.inner.dir.clone();
        Box::pin(async move {
            let _slot = self.inner.snapshot_slot.lock().await;
            let (tx, rx) = tokio::sync::oneshot::channel();
            // A thread of its own at a low priority: encoding a large state competes for the
            // CPU with the write path, which must win (the 1M-session stall).
            std::thread::Builder::new()
                .name("snapshot-writer".into())
                .spawn(move || {
                    lower_priority();
                    let _ = tx.send(write_file_durably(&dir, &path, write));
                })?;
            rx.await
                .map_err(|_| io::Error::other("the snapshot writer thread died"))?
        })
    }

    fn read_snapshot(&self, group: GroupId) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.snapshot_path(group)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn open_snapshot(&self, group: GroupId) -> io::Result<Option<(SnapshotReader, u64)>> {
        match File::open(self.snapshot_path(group)) {
            Ok(file) => {
                let len = file.metadata()?.len();
                Ok(Some((Box::new(file), len)))
            }
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
        if start >= end {
            return Ok(Vec::new());
        }
        let q = self.inner.queue.lock().expect("journal queue lock");
        let mut view = GroupImage::default();
        for kv in self
            .inner
            .tree(group, "log")?
            .range(start.to_be_bytes()..end.to_be_bytes())
        {
            let (k, v) = kv.map_err(sled_io)?;
            view.entries.insert(log_key(&k)?, v.to_vec());
        }
        self.inner.overlay(group, &mut view, &q, start, end);
        Ok(view.entries_in(start, end))
    }
}

fn log_key(k: &[u8]) -> io::Result<u64> {
    let key: [u8; 8] = k
        .try_into()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "log key is not 8 bytes"))?;
    Ok(u64::from_be_bytes(key))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("rt")
            .block_on(f)
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
            block_on(disk.sync()).expect("sync");
            block_on(disk.save_snapshot(g, b"snap".to_vec())).expect("snap");
        }
        let disk = SledBackend::open(dir.path()).expect("reopen");
        let image = disk.load(g).expect("load");
        assert_eq!(image.entries, BTreeMap::from([(2, b"b".to_vec())]));
        assert_eq!(image.meta.get(&MetaKey::Vote), Some(&b"v1".to_vec()));
        assert_eq!(image.snapshot.as_deref(), Some(&b"snap"[..]));
    }

    #[test]
    fn reads_see_writes_before_their_sync() {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = GroupId(1);
        let disk = SledBackend::open(dir.path()).expect("open");
        disk.write(
            g,
            WriteOp::Append(vec![(1, b"a".to_vec()), (2, b"b".to_vec())]),
        )
        .expect("w");
        block_on(disk.sync()).expect("sync");
        disk.write(g, WriteOp::TruncateFrom(2)).expect("w");
        disk.write(
            g,
            WriteOp::Append(vec![(2, b"B".to_vec()), (3, b"C".to_vec())]),
        )
        .expect("w");
        disk.write(GroupId(2), WriteOp::Append(vec![(2, b"other".to_vec())]))
            .expect("w");
        let want = vec![(2, b"B".to_vec()), (3, b"C".to_vec())];
        assert_eq!(disk.read_entries(g, 2, 10).expect("read"), want);
        assert_eq!(disk.load(g).expect("load").entries.len(), 3);
        block_on(disk.sync()).expect("sync");
        assert_eq!(disk.read_entries(g, 2, 10).expect("read"), want);
    }

    /// A copy of the directory taken right after a sync, while sled has not flushed, is what a
    /// power cut leaves: every synced write must come back from the journal.
    #[test]
    fn a_copy_taken_after_a_sync_holds_every_synced_write() {
        let dir = tempfile::tempdir().expect("tempdir");
        let copy = tempfile::tempdir().expect("tempdir");
        let g = GroupId(0);
        let disk = SledBackend::open(dir.path()).expect("open");
        let mut want = BTreeMap::new();
        for i in 1..=200u64 {
            let value = i.to_le_bytes().repeat(16);
            disk.write(g, WriteOp::Append(vec![(i, value.clone())]))
                .expect("w");
            want.insert(i, value);
            if i % 50 == 0 {
                disk.write(g, WriteOp::TruncateFrom(i - 5)).expect("w");
                want.split_off(&(i - 5));
            }
            block_on(disk.sync()).expect("sync");
        }
        disk.write(g, WriteOp::Meta(MetaKey::Vote, b"v9".to_vec()))
            .expect("w");
        block_on(disk.sync()).expect("sync");
        copy_tree(dir.path(), copy.path());
        let journal_records = std::fs::metadata(
            copy.path()
                .join("journal")
                .join(format!("journal-{:020}.log", 1)),
        )
        .expect("segment")
        .len();
        assert!(journal_records > 200 * 128, "the writes are in the journal");
        let reopened = SledBackend::open(copy.path()).expect("reopen the copy");
        let image = reopened.load(g).expect("load");
        assert_eq!(image.entries, want);
        assert_eq!(image.meta.get(&MetaKey::Vote), Some(&b"v9".to_vec()));
        drop(disk);
    }

    /// The keys of a group's log tree in sled itself (not the pending entries).
    fn sled_log_keys(disk: &SledBackend, g: GroupId) -> Vec<u64> {
        let log = disk.inner.tree(g, "log").expect("tree");
        log.iter()
            .keys()
            .map(|k| log_key(&k.expect("key")).expect("log key"))
            .collect()
    }

    #[test]
    fn entries_purged_before_their_checkpoint_never_reach_sled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = GroupId(2);
        let disk = SledBackend::open_with(dir.path(), 64 * 1024).expect("open");
        let entry = |i: u64| (i, i.to_le_bytes().repeat(64));
        disk.write(g, WriteOp::Append((1..=100).map(entry).collect()))
            .expect("w");
        block_on(disk.sync()).expect("sync");
        disk.write(g, WriteOp::PurgeUpTo(90)).expect("w");
        block_on(disk.sync()).expect("sync");
        assert!(
            sled_log_keys(&disk, g).is_empty(),
            "no insert before the checkpoint"
        );
        assert_eq!(disk.read_entries(g, 85, 95).expect("read").len(), 4);
        // The segment passes 64 KiB: the next sync closes it and a checkpoint runs.
        disk.write(g, WriteOp::Append((101..=140).map(entry).collect()))
            .expect("w");
        block_on(disk.sync()).expect("sync");
        disk.inner.join_checkpoint();
        assert_eq!(sled_log_keys(&disk, g), (91..=140).collect::<Vec<_>>());
        assert_eq!(
            journal::segments(&dir.path().join("journal")).expect("segments"),
            vec![2],
            "the closed segment is gone"
        );
        drop(disk);
        let disk = SledBackend::open(dir.path()).expect("reopen");
        let image = disk.load(g).expect("load");
        assert_eq!(
            image.entries,
            (91..=140).map(entry).collect::<BTreeMap<_, _>>()
        );
    }

    /// Random appends, truncations and purges on three groups, with segments small enough that
    /// checkpoints run all the time, moving entries into sled a few at a time between the writes:
    /// every read, and every reopen (some with a checkpoint cut short), sees exactly what the
    /// writes describe.
    #[test]
    fn reads_and_reopens_match_the_writes_across_checkpoints() {
        let dir = tempfile::tempdir().expect("tempdir");
        let open = |dir: &Path| {
            let disk = SledBackend::open_with(dir, 16 * 1024).expect("open");
            disk.inner.manual_checkpoints.store(true, Ordering::Release);
            disk
        };
        let mut disk = open(dir.path());
        let mut model: BTreeMap<GroupId, GroupImage> = BTreeMap::new();
        let mut next: BTreeMap<GroupId, u64> = BTreeMap::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for step in 0..3000u64 {
            let g = GroupId(rand(3) as u32);
            let last = *next.get(&g).unwrap_or(&1);
            let op = match rand(10) {
                0 if last > 3 => WriteOp::TruncateFrom(last - rand(3)),
                1 | 2 if last > 1 => WriteOp::PurgeUpTo(last - 1 - rand(last.min(20))),
                _ => {
                    let n = 1 + rand(4);
                    let entries = (last..last + n)
                        .map(|i| (i, format!("{step}:{i}").repeat(20).into_bytes()))
                        .collect();
                    WriteOp::Append(entries)
                }
            };
            match &op {
                WriteOp::TruncateFrom(i) => {
                    next.insert(g, *i);
                }
                WriteOp::Append(entries) => {
                    next.insert(g, entries.last().expect("entries").0 + 1);
                }
                _ => {}
            }
            disk.write(g, op.clone()).expect("write");
            apply_op(model.entry(g).or_default(), op);
            if rand(3) == 0 {
                block_on(disk.sync()).expect("sync");
            }
            // The closed segment's entries move into sled a few at a time, between the writes.
            disk.inner.step_checkpoint(1, 1 + rand(3) as usize);
            let want = model[&g].entries_in(0, u64::MAX);
            assert_eq!(
                disk.read_entries(g, 0, u64::MAX).expect("read"),
                want,
                "step {step}"
            );
            if step % 1000 == 999 {
                block_on(disk.sync()).expect("sync");
                drop(disk);
                disk = open(dir.path());
                for (g, image) in &model {
                    assert_eq!(
                        disk.load(*g).expect("load").entries,
                        image.entries,
                        "step {step}"
                    );
                }
            }
        }
        let segment = disk.inner.segment.lock().expect("segment").number();
        assert!(segment > 10, "checkpoints ran: segment {segment}");
    }

    fn copy_tree(from: &Path, to: &Path) {
        for entry in std::fs::read_dir(from).expect("read dir") {
            let entry = entry.expect("entry");
            let target = to.join(entry.file_name());
            if entry.file_type().expect("type").is_dir() {
                std::fs::create_dir_all(&target).expect("mkdir");
                copy_tree(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).expect("copy");
            }
        }
    }
}
