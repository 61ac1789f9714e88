//! openraft's storage conformance suite, run against both backends.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use steadfast::raft::backend::{MemBackend, SledBackend};
use steadfast::raft::store::{Flusher, LogStore, SharedBackend, StateMachineStore};
use steadfast::raft::typ::StorageError;
use steadfast::raft::TypeConfig;
use steadfast::GroupId;

/// `cache`: bytes of log entries kept in memory; 1 keeps only the last entry, so nearly every
/// read goes back to the backend.
fn open(
    backend: SharedBackend,
    cache: usize,
) -> Result<(LogStore, StateMachineStore), StorageError> {
    let flusher = Flusher::spawn(backend.clone());
    Ok((
        LogStore::open_with_cache(GroupId(0), backend.clone(), flusher, cache)?,
        StateMachineStore::open(GroupId(0), backend)?,
    ))
}

struct MemBuilder(usize);

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, ()> for MemBuilder {
    async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError> {
        let (log, sm) = open(Arc::new(MemBackend::new()), self.0)?;
        Ok(((), log, sm))
    }
}

struct SledBuilder(usize);

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for SledBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = SledBackend::open(dir.path()).expect("open sled");
        let (log, sm) = open(Arc::new(backend), self.0)?;
        Ok((dir, log, sm))
    }
}

const CACHED: usize = steadfast::limits::LOG_CACHE_BYTES;

#[test]
fn openraft_suite_passes_on_mem_backend() {
    Suite::test_all(MemBuilder(CACHED)).expect("openraft storage suite (mem)");
}

#[test]
fn openraft_suite_passes_on_sled_backend() {
    Suite::test_all(SledBuilder(CACHED)).expect("openraft storage suite (sled)");
}

#[test]
fn openraft_suite_passes_reading_the_log_back_from_mem() {
    Suite::test_all(MemBuilder(1)).expect("openraft storage suite (mem, tiny cache)");
}

#[test]
fn openraft_suite_passes_reading_the_log_back_from_sled() {
    Suite::test_all(SledBuilder(1)).expect("openraft storage suite (sled, tiny cache)");
}
