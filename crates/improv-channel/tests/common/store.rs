//! The store the channel tests use: the real embedded `SqliteStore` in a temp folder, wrapped
//! only to remember which outbox keys were put, so a test can read every entry back.
//! [`TestStore::reopen`] opens the same file on a new connection: another process, or the
//! daemon after a restart.

use async_trait::async_trait;
use improv_kernel::{Event, Outcome};
use improv_store::*;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

#[async_trait]
impl Store for TestStore {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn migrate(&self) -> Result<u32, StoreError> {
        self.inner.migrate().await
    }
    async fn enqueue(&self, new: &NewPerformance) -> Result<String, StoreError> {
        self.inner.enqueue(new).await
    }
    async fn claim(
        &self,
        worker: &str,
        ttl: Duration,
    ) -> Result<Option<(Lease, PerformanceRecord)>, StoreError> {
        self.inner.claim(worker, ttl).await
    }
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        self.inner.renew(lease, ttl).await
    }
    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.inner.release(lease).await
    }
    async fn finish(
        &self,
        lease: &Lease,
        outcome: Outcome,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.inner.finish(lease, outcome, reason).await
    }
    async fn performance(&self, id: &str) -> Result<PerformanceRecord, StoreError> {
        self.inner.performance(id).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<PerformanceRecord>, StoreError> {
        self.inner.list(filter).await
    }
    async fn append(&self, lease: &Lease, events: &[Event]) -> Result<(), StoreError> {
        self.inner.append(lease, events).await
    }
    async fn events(&self, id: &str, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.inner.events(id, after, limit).await
    }
    async fn wait_events(
        &self,
        id: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        self.inner.wait_events(id, after, timeout).await
    }
    async fn claim_firing(&self, firing: &Firing) -> Result<bool, StoreError> {
        self.inner.claim_firing(firing).await
    }
    async fn update_firing(&self, firing: &Firing) -> Result<(), StoreError> {
        self.inner.update_firing(firing).await
    }
    async fn firings(&self, door: &str, limit: usize) -> Result<Vec<Firing>, StoreError> {
        self.inner.firings(door, limit).await
    }
    async fn outbox_put(&self, message: &OutboxMessage) -> Result<OutboxEntry, StoreError> {
        self.put.lock().unwrap().push(message.clone());
        self.inner.outbox_put(message).await
    }
    async fn outbox_pending(
        &self,
        door: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.outbox_pending(door, limit).await
    }
    async fn outbox_sent(&self, key: &OutboxKey, sent_id: &str) -> Result<(), StoreError> {
        self.inner.outbox_sent(key, sent_id).await
    }
    async fn get(&self, scope: &str, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.inner.get(scope, key).await
    }
    async fn put(
        &self,
        scope: &str,
        key: &str,
        value: &serde_json::Value,
        only_if_absent: bool,
    ) -> Result<bool, StoreError> {
        self.inner.put(scope, key, value, only_if_absent).await
    }
}
