//! The store the channel tests use: the real embedded `SqliteStore` in a temp folder, wrapped
//! only to remember which outbox keys were put, so a test can read every entry back.
//! [`TestStore::reopen`] opens the same file on a new connection: another process, or the
//! daemon after a restart.

use async_trait::async_trait;
use improv_store::{OutboxEntry, OutboxMessage, SqliteStore, Store, StoreError, StoreLayer};
use std::sync::{Arc, Mutex};

pub struct TestStore {
    inner: SqliteStore,
    dir: Arc<tempfile::TempDir>,
    put: Arc<Mutex<Vec<OutboxMessage>>>,
}

impl Default for TestStore {
    fn default() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let inner = SqliteStore::open(&dir.path().join("store.db")).unwrap();
        TestStore {
            inner,
            dir: Arc::new(dir),
            put: Arc::default(),
        }
    }
}

impl TestStore {
    pub fn reopen(&self) -> TestStore {
        TestStore {
            inner: SqliteStore::open(&self.dir.path().join("store.db")).unwrap(),
            dir: self.dir.clone(),
            put: self.put.clone(),
        }
    }

    /// Every outbox entry put so far, as the store has it now, in the order first put.
    pub async fn entries(&self) -> Vec<OutboxEntry> {
        let mut seen = std::collections::HashSet::new();
        let messages: Vec<_> = self.put.lock().unwrap().clone();
        let mut entries = Vec::new();
        for m in messages {
            if seen.insert(m.key.clone()) {
                // Putting a key that is there returns the stored entry.
                entries.push(self.inner.outbox_put(&m).await.unwrap());
            }
        }
        entries
    }
}

/// Only `outbox_put` changes: it remembers the message; every other call goes to SQLite as is.
#[async_trait]
impl StoreLayer for TestStore {
    fn inner(&self) -> &dyn Store {
        &self.inner
    }
    async fn outbox_put(&self, message: &OutboxMessage) -> Result<OutboxEntry, StoreError> {
        self.put.lock().unwrap().push(message.clone());
        self.inner.outbox_put(message).await
    }
}
