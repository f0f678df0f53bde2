//! openraft's storage conformance suite against Berth's log store and state machine on sled.

use std::sync::Arc;

use berth_store::backend::{KvBackend, SledBackend};
use berth_store::log_store::LogStore;
use berth_store::mvcc::Mvcc;
use berth_store::state_machine::{SnapshotFile, StateMachine};
use berth_store::types::{StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};

struct SledStores;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for SledStores {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend: Arc<dyn KvBackend> =
            Arc::new(SledBackend::open(dir.path()).expect("open sled"));
        let mvcc = Arc::new(Mvcc::open(backend.clone()).expect("open mvcc"));
        let sm = StateMachine::new(mvcc, SnapshotFile::new(dir.path().join("snap")));
        Ok((dir, LogStore::new(backend), sm))
    }
}

#[test]
fn openraft_storage_suite_passes() -> Result<(), StorageError> {
    Suite::test_all(SledStores)
}
