//! openraft's storage conformance suite against Berth's log store and state machine, on
//! both storage engines (sled and fjall).

// openraft's suite returns its own (large) `StorageError`.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use berth_store::backend::{Engine, KvBackend};
use berth_store::log_store::LogStore;
use berth_store::mvcc::Mvcc;
use berth_store::state_machine::{SnapshotFile, StateMachine};
use berth_store::types::{StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};

struct Stores(Engine);

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Stores {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend: Arc<dyn KvBackend> = self.0.open(dir.path()).expect("open engine");
        let mvcc = Arc::new(Mvcc::open(backend.clone()).expect("open mvcc"));
        let sm = StateMachine::new(mvcc, SnapshotFile::new(dir.path().join("snap")));
        Ok((dir, LogStore::new(backend), sm))
    }
}

#[test]
fn openraft_storage_suite_passes_on_sled() -> Result<(), StorageError> {
    Suite::test_all(Stores(Engine::Sled))
}

#[test]
fn openraft_storage_suite_passes_on_fjall() -> Result<(), StorageError> {
    Suite::test_all(Stores(Engine::Fjall))
}
