//! openraft's storage traits over a [`Backend`](super::backend::Backend): the log store and the
//! state-machine store.
//!
//! - [`LogStore`]: the log, written through to the backend with its recent tail cached in
//!   memory; [`Flusher`] coalesces the fsyncs of every group on the node (group commit), and an
//!   append is acknowledged to openraft only after its sync (DESIGN §5).
//! - [`StateMachineStore`]: the sessions in memory, rebuilt on open from the latest durable
//!   snapshot; snapshots are taken in O(1) and encoded off the apply path.

mod flusher;
mod log;
mod machine;

use std::sync::Arc;

use openraft::StorageIOError;

use super::backend::Backend;
use super::typ::StorageError;

pub use flusher::Flusher;
pub use log::LogStore;
pub use machine::{apply_batch, decode_snapshot, MachineState, SnapshotFile, StateMachineStore};

/// Shared handle to a group's backend.
pub type SharedBackend = Arc<dyn Backend>;

fn write_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::write(&e).into()
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError {
    StorageIOError::read(&e).into()
}
