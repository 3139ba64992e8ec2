//! A bound on every call to PostgreSQL, kept by the client. `statement_timeout` is the server's
//! own: a server that stopped answering (SIGSTOP, a hung host, a partition that keeps the TCP
//! connection open) never sends its cancellation, and TCP keeps such a connection alive, so a
//! call would wait forever. [`Bounded`] gives each call the statement timeout and a grace
//! period for the network, then fails it `Unavailable` (transient: the caller waits and
//! retries). The waits (`wait_events`, `wait_for_work`, `wait_notes`, `wait_answer`, `wait_progress`) get their
//! own timeout on top. A method added to [`Store`] later is forwarded unbounded until it is listed here.

use crate::{
    Answer, ApprovalAsk, ApprovalRecord, Counts, Firing, Lease, ListFilter, NewPerformance, Note,
    OutboxEntry, OutboxKey, OutboxMessage, PerformanceRecord, Progress, Serving, StageKey,
    Stopping, Store, StoreError, StoreLayer, Sweep, UnixMillis, Versioned,
};
use async_trait::async_trait;
use improv_kernel::{Event, Outcome};
use std::future::Future;
use std::time::Duration;

/// What a call may take beyond the statement timeout: the network's round trips, a fresh
/// connection's handshake.
const GRACE: Duration = Duration::from_secs(5);

/// A store whose every call ends within its bound.
pub(crate) struct Bounded {
    inner: Box<dyn Store>,
    /// The statement timeout plus [`GRACE`]; `None` when the URL turned the timeout off.
    within: Option<Duration>,
}

impl Bounded {
    pub(crate) fn new(inner: Box<dyn Store>, statement_timeout: Duration) -> Bounded {
        let within = (!statement_timeout.is_zero()).then(|| statement_timeout + GRACE);
        Bounded { inner, within }
    }

    async fn bound<T>(
        &self,
        extra: Duration,
        call: impl Future<Output = Result<T, StoreError>> + Send,
    ) -> Result<T, StoreError> {
        let Some(within) = self.within else {
            return call.await;
        };
        let limit = within + extra;
        tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable {
                store: self.inner.describe(),
                message: format!("no answer within {limit:?}"),
            })
        })
    }
}

const NONE: Duration = Duration::ZERO;

#[async_trait]
impl StoreLayer for Bounded {
    fn inner(&self) -> &dyn Store {
        self.inner.as_ref()
    }
    async fn migrate(&self) -> Result<u32, StoreError> {
        self.bound(NONE, self.inner.migrate()).await
    }
    async fn enqueue(&self, new: &NewPerformance) -> Result<String, StoreError> {
        self.bound(NONE, self.inner.enqueue(new)).await
    }
    async fn claim_among(
        &self,
        worker: &str,
        ttl: Duration,
        serving: &Serving,
    ) -> Result<Option<(Lease, PerformanceRecord)>, StoreError> {
        self.bound(NONE, self.inner.claim_among(worker, ttl, serving))
            .await
    }
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        self.bound(NONE, self.inner.renew(lease, ttl)).await
    }
    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.bound(NONE, self.inner.release(lease)).await
    }
    async fn finish(
        &self,
        lease: &Lease,
        outcome: Outcome,
        reason: &str,
    ) -> Result<(), StoreError> {
        self.bound(NONE, self.inner.finish(lease, outcome, reason))
            .await
    }
    async fn performance(&self, id: &str) -> Result<PerformanceRecord, StoreError> {
        self.bound(NONE, self.inner.performance(id)).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<PerformanceRecord>, StoreError> {
        self.bound(NONE, self.inner.list(filter)).await
    }
    async fn append(&self, lease: &Lease, events: &[Event]) -> Result<(), StoreError> {
        self.bound(NONE, self.inner.append(lease, events)).await
    }
    async fn events(&self, id: &str, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.bound(NONE, self.inner.events(id, after, limit)).await
    }
    async fn wait_events(
        &self,
        id: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        self.bound(timeout, self.inner.wait_events(id, after, timeout))
            .await
    }
    async fn claim_firing(&self, stage: &StageKey, firing: &Firing) -> Result<bool, StoreError> {
        self.bound(NONE, self.inner.claim_firing(stage, firing))
            .await
    }
    async fn update_firing(&self, stage: &StageKey, firing: &Firing) -> Result<(), StoreError> {
        self.bound(NONE, self.inner.update_firing(stage, firing))
            .await
    }
    async fn firings(
        &self,
        stage: &StageKey,
        door: &str,
        limit: usize,
    ) -> Result<Vec<Firing>, StoreError> {
        self.bound(NONE, self.inner.firings(stage, door, limit))
            .await
    }
    async fn outbox_put(&self, message: &OutboxMessage) -> Result<OutboxEntry, StoreError> {
        self.bound(NONE, self.inner.outbox_put(message)).await
    }
    async fn outbox_pending(
        &self,
        stage: &StageKey,
        door: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.bound(NONE, self.inner.outbox_pending(stage, door, limit))
            .await
    }
    async fn outbox_sent(&self, key: &OutboxKey, sent_id: &str) -> Result<(), StoreError> {
        self.bound(NONE, self.inner.outbox_sent(key, sent_id)).await
    }
    async fn counts(&self) -> Result<Counts, StoreError> {
        self.bound(NONE, self.inner.counts()).await
    }
    async fn wait_for_work(&self, timeout: Duration) -> Result<(), StoreError> {
        self.bound(timeout, self.inner.wait_for_work(timeout)).await
    }
    async fn get(&self, scope: &str, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.bound(NONE, self.inner.get(scope, key)).await
    }
    async fn put(
        &self,
        scope: &str,
        key: &str,
        value: &serde_json::Value,
        only_if_absent: bool,
    ) -> Result<bool, StoreError> {
        self.bound(NONE, self.inner.put(scope, key, value, only_if_absent))
            .await
    }
    async fn get_versioned(&self, scope: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        self.bound(NONE, self.inner.get_versioned(scope, key)).await
    }
    async fn put_if(
        &self,
        scope: &str,
        key: &str,
        expected: Option<i64>,
        value: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        self.bound(NONE, self.inner.put_if(scope, key, expected, value))
            .await
    }
    async fn sweep(&self, scope: &str, sweep: &Sweep) -> Result<u64, StoreError> {
        self.bound(NONE, self.inner.sweep(scope, sweep)).await
    }
    async fn sweep_outbox(&self, before: UnixMillis, batch: usize) -> Result<u64, StoreError> {
        self.bound(NONE, self.inner.sweep_outbox(before, batch))
            .await
    }
    async fn sweep_firings(
        &self,
        stage: &StageKey,
        before: UnixMillis,
        keep: usize,
        batch: usize,
    ) -> Result<u64, StoreError> {
        self.bound(NONE, self.inner.sweep_firings(stage, before, keep, batch))
            .await
    }
    async fn sweep_abandoned_firings(
        &self,
        stage: &StageKey,
        before: UnixMillis,
        keep: usize,
        batch: usize,
    ) -> Result<u64, StoreError> {
        let sweep = self
            .inner
            .sweep_abandoned_firings(stage, before, keep, batch);
        self.bound(NONE, sweep).await
    }
    async fn sweep_door_performances(
        &self,
        stage: &StageKey,
        before: UnixMillis,
        keep: usize,
        batch: usize,
    ) -> Result<u64, StoreError> {
        let sweep = self
            .inner
            .sweep_door_performances(stage, before, keep, batch);
        self.bound(NONE, sweep).await
    }
    async fn ask_approval(&self, lease: &Lease, ask: &ApprovalAsk) -> Result<u64, StoreError> {
        self.bound(NONE, self.inner.ask_approval(lease, ask)).await
    }
    async fn answer_approval(
        &self,
        performance: &str,
        n: u64,
        answer: Answer,
        note: Option<&str>,
    ) -> Result<bool, StoreError> {
        let call = self.inner.answer_approval(performance, n, answer, note);
        self.bound(NONE, call).await
    }
    async fn approvals(&self, performance: &str) -> Result<Vec<ApprovalRecord>, StoreError> {
        self.bound(NONE, self.inner.approvals(performance)).await
    }
    async fn wait_answer(
        &self,
        performance: &str,
        n: u64,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        self.bound(timeout, self.inner.wait_answer(performance, n, timeout))
            .await
    }
    async fn send_note(&self, performance: &str, text: &str) -> Result<Note, StoreError> {
        self.bound(NONE, self.inner.send_note(performance, text))
            .await
    }
    async fn notes(&self, performance: &str, after: u64) -> Result<Vec<Note>, StoreError> {
        self.bound(NONE, self.inner.notes(performance, after)).await
    }
    async fn wait_notes(
        &self,
        performance: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        self.bound(timeout, self.inner.wait_notes(performance, after, timeout))
            .await
    }
    async fn stop(&self, performance: &str) -> Result<Stopping, StoreError> {
        self.bound(NONE, self.inner.stop(performance)).await
    }
    async fn progress(&self, performance: &str) -> Result<Progress, StoreError> {
        self.bound(NONE, self.inner.progress(performance)).await
    }
    async fn wait_progress(
        &self,
        performance: &str,
        seen: &Progress,
        timeout: Duration,
    ) -> Result<Progress, StoreError> {
        let call = self.inner.wait_progress(performance, seen, timeout);
        self.bound(timeout, call).await
    }
    async fn stops_requested(&self, worker: &str) -> Result<Vec<String>, StoreError> {
        self.bound(NONE, self.inner.stops_requested(worker)).await
    }
    async fn wait_stop(&self, seen: u64, timeout: Duration) -> Result<u64, StoreError> {
        self.bound(timeout, self.inner.wait_stop(seen, timeout))
            .await
    }
}
