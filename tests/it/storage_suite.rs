//! openraft's storage conformance suite, run against both backends.

use std::sync::Arc;

use openraft::testing::{StoreBuilder, Suite};
use steadfast::raft::backend::{MemBackend, SledBackend};
use steadfast::raft::store::{Flusher, LogStore, SharedBackend, StateMachineStore};
use steadfast::raft::typ::StorageError;
use steadfast::raft::TypeConfig;
use steadfast::GroupId;

fn open(backend: SharedBackend) -> Result<(LogStore, StateMachineStore), StorageError> {
    let flusher = Flusher::spawn(backend.clone());
    Ok((
        LogStore::open(GroupId(0), backend.clone(), flusher)?,
        StateMachineStore::open(GroupId(0), backend)?,
    ))
}

struct MemBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, ()> for MemBuilder {
    async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError> {
        let (log, sm) = open(Arc::new(MemBackend::new()))?;
        Ok(((), log, sm))
    }
}

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, tempfile::TempDir> for SledBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = SledBackend::open(dir.path()).expect("open sled");
        let (log, sm) = open(Arc::new(backend))?;
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_suite_passes_on_mem_backend() {
    Suite::test_all(MemBuilder).expect("openraft storage suite (mem)");
}

#[test]
fn openraft_suite_passes_on_sled_backend() {
    Suite::test_all(SledBuilder).expect("openraft storage suite (sled)");
}
