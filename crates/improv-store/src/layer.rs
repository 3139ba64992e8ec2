//! [`StoreLayer`]: the one way to wrap a store. A wrapper (a metrics counter, a test's slow or
//! recording store) names its inner store and writes only the methods it changes; every other
//! method of [`Store`] forwards to the inner one by default, and a blanket impl makes every
//! layer a [`Store`]. Keeping the forwarding here means a method added to [`Store`] is
//! forwarded by every wrapper at once instead of each one by hand.

use crate::{
    Answer, ApprovalAsk, ApprovalRecord, Counts, Firing, Lease, ListFilter, NewPerformance, Note,
    OutboxEntry, OutboxKey, OutboxMessage, PerformanceRecord, Progress, Serving, StageKey,
    Stopping, Store, StoreError, Sweep, UnixMillis, Versioned,
};
use async_trait::async_trait;
use improv_kernel::{Event, Outcome};
use std::time::Duration;

/// A store that wraps another: implement [`StoreLayer::inner`] and override only what changes;
/// the type is then a [`Store`]. An override that still wants the inner behaviour calls
/// `self.inner().METHOD(..)`. Each method means what the [`Store`] method of the same name does.
///
/// A type that is a `StoreLayer` cannot also implement [`Store`] by hand (the blanket impl is
/// that implementation). Where both traits are in scope, a call on the concrete wrapper is
/// ambiguous: import only [`Store`] where the wrapper is used.
#[async_trait]
pub trait StoreLayer: Send + Sync + 'static {
    /// The store every method not overridden forwards to.
    fn inner(&self) -> &dyn Store;

    async fn counts(&self) -> Result<Counts, StoreError> {
        self.inner().counts().await
    }
    async fn wait_for_work(&self, timeout: Duration) -> Result<(), StoreError> {
        self.inner().wait_for_work(timeout).await
    }

    fn describe(&self) -> String {
        self.inner().describe()
    }
    async fn migrate(&self) -> Result<u32, StoreError> {
        self.inner().migrate().await
    }
    async fn enqueue(&self, new: &NewPerformance) -> Result<String, StoreError> {
        self.inner().enqueue(new).await
    }
    async fn claim_among(
        &self,
        worker: &str,
        ttl: Duration,
        serving: &Serving,
    ) -> Result<Option<(Lease, PerformanceRecord)>, StoreError> {
        self.inner().claim_among(worker, ttl, serving).await
    }
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        self.inner().renew(lease, ttl).await
    }
    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.inner().release(lease).await
    }
    async fn finish(
        &self,
        lease: &Lease,
        outcome: Outcome,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.inner().finish(lease, outcome, reason).await
    }
    async fn performance(&self, id: &str) -> Result<PerformanceRecord, StoreError> {
        self.inner().performance(id).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<PerformanceRecord>, StoreError> {
        self.inner().list(filter).await
    }
    async fn append(&self, lease: &Lease, events: &[Event]) -> Result<(), StoreError> {
        self.inner().append(lease, events).await
    }
    async fn events(&self, id: &str, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.inner().events(id, after, limit).await
    }
    async fn wait_events(
        &self,
        id: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        self.inner().wait_events(id, after, timeout).await
    }
    async fn claim_firing(&self, stage: &StageKey, firing: &Firing) -> Result<bool, StoreError> {
        self.inner().claim_firing(stage, firing).await
    }
    async fn update_firing(&self, stage: &StageKey, firing: &Firing) -> Result<(), StoreError> {
        self.inner().update_firing(stage, firing).await
    }
    async fn firings(
        &self,
        stage: &StageKey,
        door: &str,
        limit: usize,
    ) -> Result<Vec<Firing>, StoreError> {
        self.inner().firings(stage, door, limit).await
    }
    async fn outbox_put(&self, message: &OutboxMessage) -> Result<OutboxEntry, StoreError> {
        self.inner().outbox_put(message).await
    }
    async fn outbox_pending(
        &self,
        stage: &StageKey,
        door: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner().outbox_pending(stage, door, limit).await
    }
    async fn outbox_sent(&self, key: &OutboxKey, sent_id: &str) -> Result<(), StoreError> {
        self.inner().outbox_sent(key, sent_id).await
    }
    async fn get(&self, scope: &str, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.inner().get(scope, key).await
    }
    async fn put(
        &self,
        scope: &str,
        key: &str,
        value: &serde_json::Value,
        only_if_absent: bool,
    ) -> Result<bool, StoreError> {
        self.inner().put(scope, key, value, only_if_absent).await
    }
    async fn get_versioned(&self, scope: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.inner().get_versioned(scope, key).await
    }
    async fn put_if(
        &self,
        scope: &str,
        key: &str,
        expected: Option<i64>,
        value: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        self.inner().put_if(scope, key, expected, value).await
    }
    async fn sweep(&self, scope: &str, sweep: &Sweep) -> Result<u64, StoreError> {
        self.inner().sweep(scope, sweep).await
    }
    async fn sweep_outbox(&self, before: UnixMillis, batch: usize) -> Result<u64, StoreError> {
        self.inner().sweep_outbox(before, batch).await
    }
    async fn sweep_firings(
        &self,
        stage: &StageKey,
        before: UnixMillis,
        keep: usize,
        batch: usize,
    ) -> Result<u64, StoreError> {
        self.inner().sweep_firings(stage, before, keep, batch).await
    }
    async fn sweep_abandoned_firings(
        &self,
        stage: &StageKey,
        before: UnixMillis,
        keep: usize,
        batch: usize,
    ) -> Result<u64, StoreError> {
        self.inner()
            .sweep_abandoned_firings(stage, before, keep, batch)
            .await
    }
    async fn sweep_door_performances(
        &self,
        stage: &StageKey,
        before: UnixMillis,
        keep: usize,
        batch: usize,
    ) -> Result<u64, StoreError> {
        self.inner()
            .sweep_door_performances(stage, before, keep, batch)
            .await
    }
    async fn send_note(&self, performance: &str, text: &str) -> Result<Note, StoreError> {
        self.inner().send_note(performance, text).await
    }
    async fn notes(&self, performance: &str, after: u64) -> Result<Vec<Note>, StoreError> {
        self.inner().notes(performance, after).await
    }
    async fn wait_notes(
        &self,
        performance: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        self.inner().wait_notes(performance, after, timeout).await
    }
    async fn ask_approval(&self, lease: &Lease, ask: &ApprovalAsk) -> Result<u64, StoreError> {
        self.inner().ask_approval(lease, ask).await
    }
    async fn answer_approval(
        &self,
        performance: &str,
        n: u64,
        answer: Answer,
        note: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.inner()
            .answer_approval(performance, n, answer, note)
            .await
    }
    async fn approvals(&self, performance: &str) -> Result<Vec<ApprovalRecord>, StoreError> {
        self.inner().approvals(performance).await
    }
    async fn wait_answer(
        &self,
        performance: &str,
        n: u64,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        self.inner().wait_answer(performance, n, timeout).await
    }
    async fn stop(&self, performance: &str) -> Result<Stopping, StoreError> {
        self.inner().stop(performance).await
    }
    async fn progress(&self, performance: &str) -> Result<Progress, StoreError> {
        self.inner().progress(performance).await
    }
    async fn wait_progress(
        &self,
        performance: &str,
        seen: &Progress,
        timeout: Duration,
    ) -> Result<Progress, StoreError> {
        self.inner().wait_progress(performance, seen, timeout).await
    }
    async fn stops_requested(&self, worker: &str) -> Result<Vec<String>, StoreError> {
        self.inner().stops_requested(worker).await
    }
    async fn wait_stop(&self, seen: u64, timeout: Duration) -> Result<u64, StoreError> {
        self.inner().wait_stop(seen, timeout).await
    }
}

/// Every layer is a store: each method calls the layer's method of the same name (its override,
/// or the default that forwards to [`StoreLayer::inner`]).
#[async_trait]
impl<T: StoreLayer> Store for T {
    async fn counts(&self) -> Result<Counts, StoreError> {
        StoreLayer::counts(self).await
    }
    async fn wait_for_work(&self, timeout: Duration) -> Result<(), StoreError> {
        StoreLayer::wait_for_work(self, timeout).await
    }
    fn describe(&self) -> String {
        StoreLayer::describe(self)
    }
    async fn migrate(&self) -> Result<u32, StoreError> {
        StoreLayer::migrate(self).await
    }
    async fn enqueue(&self, new: &NewPerformance) -> Result<String, StoreError> {
        StoreLayer::enqueue(self, new).await
    }
    async fn claim_among(
        &self,
        worker: &str,
        ttl: Duration,
        serving: &Serving,
    ) -> Result<Option<(Lease, PerformanceRecord)>, StoreError> {
        StoreLayer::claim_among(self, worker, ttl, serving).await
    }
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        StoreLayer::renew(self, lease, ttl).await
    }
    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        StoreLayer::release(self, lease).await
    }
    async fn finish(
        &self,
        lease: &Lease,
        outcome: Outcome,
        reason: &str,
    ) -> Result<(), StoreError> {
        StoreLayer::finish(self, lease, outcome, reason).await
    }
    async fn performance(&self, id: &str) -> Result<PerformanceRecord, StoreError> {
        StoreLayer::performance(self, id).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<PerformanceRecord>, StoreError> {
        StoreLayer::list(self, filter).await
    }
    async fn append(&self, lease: &Lease, events: &[Event]) -> Result<(), StoreError> {
        StoreLayer::append(self, lease, events).await
    }
    async fn events(&self, id: &str, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        StoreLayer::events(self, id, after, limit).await
    }
    async fn wait_events(
        &self,
        id: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        StoreLayer::wait_events(self, id, after, timeout).await
    }
    async fn claim_firing(&self, stage: &StageKey, firing: &Firing) -> Result<bool, StoreError> {
        StoreLayer::claim_firing(self, stage, firing).await
    }
    async fn update_firing(&self, stage: &StageKey, firing: &Firing) -> Result<(), StoreError> {
        StoreLayer::update_firing(self, stage, firing).await
    }
    async fn firings(
        &self,
        stage: &StageKey,
        door: &str,
        limit: usize,
    ) -> Result<Vec<Firing>, StoreError> {
        StoreLayer::firings(self, stage, door, limit).await
    }
    async fn outbox_put(&self, message: &OutboxMessage) -> Result<OutboxEntry, StoreError> {
        StoreLayer::outbox_put(self, message).await
    }
    async fn outbox_pending(
        &self,
        stage: &StageKey,
        door: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        StoreLayer::outbox_pending(self, stage, door, limit).await
    }
    async fn outbox_sent(&self, key: &OutboxKey, sent_id: &str) -> Result<(), StoreError> {
        StoreLayer::outbox_sent(self, key, sent_id).await
    }
    async fn get(&self, scope: &str, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        StoreLayer::get(self, scope, key).await
    }
    async fn put(
        &self,
        scope: &str,
        key: &str,
        value: &serde_json::Value,
        only_if_absent: bool,
    ) -> Result<bool, StoreError> {
        StoreLayer::put(self, scope, key, value, only_if_absent).await
    }
    async fn get_versioned(&self, scope: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        StoreLayer::get_versioned(self, scope, key).await
    }
    async fn put_if(
        &self,
        scope: &str,
        key: &str,
        expected: Option<i64>,
        value: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        StoreLayer::put_if(self, scope, key, expected, value).await
    }
    async fn sweep(&self, scope: &str, sweep: &Sweep) -> Result<u64, StoreError> {
        StoreLayer::sweep(self, scope, sweep).await
    }
    async fn sweep_outbox(&self, before: UnixMillis, batch: usize) -> Result<u64, StoreError> {
        StoreLayer::sweep_outbox(self, before, batch).await
    }
    async fn sweep_firings(
        &self,
        stage: &StageKey,
        before: UnixMillis,
        keep: usize,
        batch: usize,
    ) -> Result<u64, StoreError> {
        StoreLayer::sweep_firings(self, stage, before, keep, batch).await
    }
    async fn sweep_abandoned_firings(
        &self,
        stage: &StageKey,
        before: UnixMillis,
        keep: usize,
        batch: usize,
    ) -> Result<u64, StoreError> {
        StoreLayer::sweep_abandoned_firings(self, stage, before, keep, batch).await
    }
    async fn sweep_door_performances(
        &self,
        stage: &StageKey,
        before: UnixMillis,
        keep: usize,
        batch: usize,
    ) -> Result<u64, StoreError> {
        StoreLayer::sweep_door_performances(self, stage, before, keep, batch).await
    }
    async fn send_note(&self, performance: &str, text: &str) -> Result<Note, StoreError> {
        StoreLayer::send_note(self, performance, text).await
    }
    async fn notes(&self, performance: &str, after: u64) -> Result<Vec<Note>, StoreError> {
        StoreLayer::notes(self, performance, after).await
    }
    async fn wait_notes(
        &self,
        performance: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        StoreLayer::wait_notes(self, performance, after, timeout).await
    }
    async fn ask_approval(&self, lease: &Lease, ask: &ApprovalAsk) -> Result<u64, StoreError> {
        StoreLayer::ask_approval(self, lease, ask).await
    }
    async fn answer_approval(
        &self,
        performance: &str,
        n: u64,
        answer: Answer,
        note: Option<&str>,
    ) -> Result<bool, StoreError> {
        StoreLayer::answer_approval(self, performance, n, answer, note).await
    }
    async fn approvals(&self, performance: &str) -> Result<Vec<ApprovalRecord>, StoreError> {
        StoreLayer::approvals(self, performance).await
    }
    async fn wait_answer(
        &self,
        performance: &str,
        n: u64,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        StoreLayer::wait_answer(self, performance, n, timeout).await
    }
    async fn stop(&self, performance: &str) -> Result<Stopping, StoreError> {
        StoreLayer::stop(self, performance).await
    }
    async fn progress(&self, performance: &str) -> Result<Progress, StoreError> {
        StoreLayer::progress(self, performance).await
    }
    async fn wait_progress(
        &self,
        performance: &str,
        seen: &Progress,
        timeout: Duration,
    ) -> Result<Progress, StoreError> {
        StoreLayer::wait_progress(self, performance, seen, timeout).await
    }
    async fn stops_requested(&self, worker: &str) -> Result<Vec<String>, StoreError> {
        StoreLayer::stops_requested(self, worker).await
    }
    async fn wait_stop(&self, seen: u64, timeout: Duration) -> Result<u64, StoreError> {
        StoreLayer::wait_stop(self, seen, timeout).await
    }
}
