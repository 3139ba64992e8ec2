//! An in-memory store for these tests: the outbox and the small values the channels use, with
//! the trait's semantics (first key wins, `outbox_sent` keeps the first id, `only_if_absent`).
//! The rest of the trait is not needed by a channel and says so.

use async_trait::async_trait;
use improv_kernel::{Event, Outcome};
use improv_store::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

/// Entries by key, each with its insertion order; and the next order.
type Outboxes = (u64, BTreeMap<(String, u64), (u64, OutboxEntry)>);

#[derive(Default)]
pub struct MemStore {
    outbox: Mutex<Outboxes>,
    values: Mutex<HashMap<(String, String), serde_json::Value>>,
}

impl MemStore {
    pub fn entries(&self) -> Vec<OutboxEntry> {
        let outbox = self.outbox.lock().unwrap();
        let mut all: Vec<_> = outbox.1.values().cloned().collect();
        all.sort_by_key(|(order, _)| *order);
        all.into_iter().map(|(_, e)| e).collect()
    }
}

fn unused<T>() -> Result<T, StoreError> {
    Err(StoreError::Backend {
        store: "memory".into(),
        message: "not part of the channel tests' store".into(),
    })
}

#[async_trait]
impl Store for MemStore {
    fn describe(&self) -> String {
        "memory".into()
    }
    async fn migrate(&self) -> Result<u32, StoreError> {
        Ok(1)
    }
    async fn enqueue(&self, _: &NewPerformance) -> Result<String, StoreError> {
        unused()
    }
    async fn claim(
        &self,
        _: &str,
        _: Duration,
    ) -> Result<Option<(Lease, PerformanceRecord)>, StoreError> {
        unused()
    }
    async fn renew(&self, _: &Lease, _: Duration) -> Result<Lease, StoreError> {
        unused()
    }
    async fn release(&self, _: &Lease) -> Result<(), StoreError> {
        unused()
    }
    async fn finish(&self, _: &Lease, _: Outcome, _: &str) -> Result<(), StoreError> {
        unused()
    }
    async fn performance(&self, _: &str) -> Result<PerformanceRecord, StoreError> {
        unused()
    }
    async fn list(&self, _: &ListFilter) -> Result<Vec<PerformanceRecord>, StoreError> {
        unused()
    }
    async fn append(&self, _: &Lease, _: &[Event]) -> Result<(), StoreError> {
        unused()
    }
    async fn events(&self, _: &str, _: u64, _: usize) -> Result<Vec<Event>, StoreError> {
        unused()
    }
    async fn wait_events(&self, _: &str, _: u64, _: Duration) -> Result<bool, StoreError> {
        unused()
    }
    async fn claim_firing(&self, _: &Firing) -> Result<bool, StoreError> {
        unused()
    }
    async fn update_firing(&self, _: &Firing) -> Result<(), StoreError> {
        unused()
    }
    async fn firings(&self, _: &str, _: usize) -> Result<Vec<Firing>, StoreError> {
        unused()
    }
    async fn outbox_put(&self, message: &OutboxMessage) -> Result<OutboxEntry, StoreError> {
        let mut outbox = self.outbox.lock().unwrap();
        let order = outbox.0;
        let key = (message.key.performance.clone(), message.key.seq);
        let (_, entry) = outbox.1.entry(key).or_insert_with(|| {
            (
                order,
                OutboxEntry {
                    message: message.clone(),
                    sent_id: None,
                    attempts: 0,
                    created_at: 0,
                },
            )
        });
        let entry = entry.clone();
        outbox.0 += 1;
        Ok(entry)
    }
    async fn outbox_pending(
        &self,
        door: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut outbox = self.outbox.lock().unwrap();
        let mut pending: Vec<_> = outbox
            .1
            .values_mut()
            .filter(|(_, e)| e.sent_id.is_none() && e.message.door == door)
            .collect();
        pending.sort_by_key(|(order, _)| *order);
        Ok(pending
            .into_iter()
            .take(limit)
            .map(|(_, e)| {
                e.attempts += 1;
                e.clone()
            })
            .collect())
    }
    async fn outbox_sent(&self, key: &OutboxKey, sent_id: &str) -> Result<(), StoreError> {
        let mut outbox = self.outbox.lock().unwrap();
        if let Some((_, e)) = outbox.1.get_mut(&(key.performance.clone(), key.seq)) {
            e.sent_id.get_or_insert_with(|| sent_id.to_string());
        }
        Ok(())
    }
    async fn get(&self, scope: &str, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        Ok(self
            .values
            .lock()
            .unwrap()
            .get(&(scope.into(), key.into()))
            .cloned())
    }
    async fn put(
        &self,
        scope: &str,
        key: &str,
        value: &serde_json::Value,
        only_if_absent: bool,
    ) -> Result<bool, StoreError> {
        let mut values = self.values.lock().unwrap();
        let k = (scope.to_string(), key.to_string());
        if only_if_absent && values.contains_key(&k) {
            return Ok(false);
        }
        values.insert(k, value.clone());
        Ok(true)
    }
}
