//! The tokio runtime a node runs on.
//!
//! One thread by default. Measured on the 2-core machine kind with three local nodes
//! (BENCHMARKS.md, "runtime"): a multi-threaded runtime spent most of a write's CPU in the
//! kernel waking and parking worker threads, about 54 context switches per replicated write
//! across the nodes; on one thread the same write path took half the CPU and gave 1.5x the
//! write and 2.9x the read throughput at 64 clients. Blocking disk work (the journal's
//! `fdatasync`, snapshot files) still runs on tokio's blocking pool, off that thread.

use std::io;

/// A runtime with every driver enabled: on the calling thread when `worker_threads` is 0, else
/// multi-threaded with that many workers.
pub fn build(worker_threads: usize) -> io::Result<tokio::runtime::Runtime> {
    if worker_threads == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads)
            .enable_all()
            .build()
    }
}
