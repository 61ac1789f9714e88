//! openraft glue: the type configuration, a runtime whose RNG can be seeded, storage and network.
//!
//! openraft 0.9's only randomness is the election timeout drawn through
//! [`openraft::AsyncRuntime::thread_rng`]. [`SeededRuntime`] routes it to a thread-local RNG that
//! a simulation re-seeds from its seed, so one seed replays one run (DESIGN §4).

pub mod backend;
pub mod network;
pub mod store;

use std::cell::RefCell;
use std::fmt::Debug;
use std::future::Future;
use std::io::Cursor;
use std::time::Duration;

use openraft::async_runtime::TokioOneShotSender;
use openraft::{AsyncRuntime, OptionalSend};
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

use crate::command::{Batch, BatchResponse};

openraft::declare_raft_types!(
    /// steadfast's openraft type configuration.
    pub TypeConfig:
        D = Batch,
        R = BatchResponse,
        AsyncRuntime = SeededRuntime,
);

/// Aliases for openraft's generic types, instantiated for [`TypeConfig`].
pub mod typ {
    use super::TypeConfig;
    use crate::id::NodeId;

    /// A Raft instance.
    pub type Raft = openraft::Raft<TypeConfig>;
    /// A log id.
    pub type LogId = openraft::LogId<NodeId>;
    /// A log entry.
    pub type Entry = openraft::Entry<TypeConfig>;
    /// A vote.
    pub type Vote = openraft::Vote<NodeId>;
    /// A node's address record.
    pub type Node = openraft::BasicNode;
    /// Membership as stored.
    pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
    /// Snapshot metadata.
    pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
    /// A snapshot.
    pub type Snapshot = openraft::Snapshot<TypeConfig>;
    /// A storage error.
    pub type StorageError = openraft::StorageError<NodeId>;
    /// Raft metrics.
    pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;
}

thread_local! {
    static RNG: RefCell<Option<SmallRng>> = const { RefCell::new(None) };
}

/// Re-seeds this thread's Raft RNG. Simulations call it before each run; production never does,
/// and each thread then seeds itself from the OS on first use.
pub fn seed_thread_rng(seed: u64) {
    RNG.with(|r| *r.borrow_mut() = Some(SmallRng::seed_from_u64(seed)));
}

/// A handle to this thread's Raft RNG.
#[derive(Debug, Default, Clone, Copy)]
pub struct ThreadRng;

impl RngCore for ThreadRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }

    fn next_u64(&mut self) -> u64 {
        RNG.with(|r| {
            r.borrow_mut()
                .get_or_insert_with(|| {
                    SmallRng::from_rng(rand::rngs::OsRng).expect("the OS has entropy")
                })
                .next_u64()
        })
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

/// tokio, with an injectable RNG.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeededRuntime;

impl AsyncRuntime for SeededRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = openraft::TokioInstant;
    type TimeoutError = tokio::time::error::Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = tokio::time::Timeout<T>;
    type ThreadLocalRng = ThreadRng;
    type OneshotSender<T: OptionalSend> = TokioOneShotSender<T>;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        tokio::task::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(d: Duration, f: F) -> Self::Timeout<R, F> {
        tokio::time::timeout(d, f)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.is_panic()
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        ThreadRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        (TokioOneShotSender(tx), rx)
    }
}
