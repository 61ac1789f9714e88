//! A node's simulated disk: the product's [`MemBackend`] (crash semantics) plus a sync delay the
//! fault injector can raise on one node, so its followers' syncs finish before its own.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use steadfast::raft::backend::{
    Backend, BoxFuture, GroupImage, MemBackend, Offload, SnapshotWrite, WriteOp,
};
use steadfast::GroupId;

/// One node's disk, shared by its (re)started node and the injector.
#[derive(Clone)]
pub struct SimDisk {
    /// What survives a crash and what does not.
    pub mem: MemBackend,
    /// Extra time every sync takes, in microseconds (0: the disk's own latency only).
    slow_us: Arc<AtomicU64>,
}

impl SimDisk {
    /// A fresh disk whose syncs take `latency`.
    pub fn new(latency: Duration) -> Self {
        SimDisk {
            mem: MemBackend::with_sync_latency(latency),
            slow_us: Arc::default(),
        }
    }

    /// Every sync that starts from now on takes `extra` longer (`Duration::ZERO` restores it).
    pub fn slow_syncs(&self, extra: Duration) {
        self.slow_us
            .store(extra.as_micros() as u64, Ordering::Relaxed);
    }
}

impl Backend for SimDisk {
    fn load(&self, group: GroupId) -> io::Result<GroupImage> {
        self.mem.load(group)
    }

    fn write(&self, group: GroupId, op: WriteOp) -> io::Result<()> {
        self.mem.write(group, op)
    }

    fn sync(&self) -> BoxFuture<'_, io::Result<()>> {
        // `MemBackend::sync` fixes the writes it covers when called, so the delay only postpones
        // the barrier: writes issued meanwhile are not covered by it.
        let barrier = self.mem.sync();
        let extra = Duration::from_micros(self.slow_us.load(Ordering::Relaxed));
        Box::pin(async move {
            if !extra.is_zero() {
                tokio::time::sleep(extra).await;
            }
            barrier.await
        })
    }

    fn write_snapshot(
        &self,
        group: GroupId,
        write: SnapshotWrite,
    ) -> BoxFuture<'_, io::Result<()>> {
        self.mem.write_snapshot(group, write)
    }

    fn read_snapshot(&self, group: GroupId) -> io::Result<Option<Vec<u8>>> {
        self.mem.read_snapshot(group)
    }

    fn read_entries(
        &self,
        group: GroupId,
        start: u64,
        end: u64,
    ) -> io::Result<Vec<(u64, Vec<u8>)>> {
        self.mem.read_entries(group, start, end)
    }

    fn offload(&self, work: Offload) -> BoxFuture<'_, io::Result<Vec<u8>>> {
        // Inline (the memory backend's way): a blocking-pool thread would end at a moment no
        // seed decides.
        self.mem.offload(work)
    }
}
