//! The API's view of the performance store (`improv serve --store URL`): `POST /performances`
//! queues there for the workers ([`enqueue`]); performances any worker on any machine performs
//! are listed, shown and streamed from the store (their events, the approvals they wait for and
//! how those were answered), and their director notes, approval answers and stops are written
//! to it, where the worker performing them reads them. Performances this server runs itself (a
//! `resume` of its own log) stay in its [`Hub`](crate::live::Hub) and log, as without a store.

use crate::error::ApiError;
use crate::live::{End, Frame, PendingApproval};
use crate::stream::Told;
use axum::http::StatusCode;
use futures::Stream;
use improv_kernel::{Event, Outcome};
use improv_stage::Stage;
use improv_store::{
    Answer, ApprovalRecord, ListFilter, NewPerformance, PerformanceRecord, Progress, StageKey,
    State, Stopping, Store, StoreError, UnixMillis,
};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Events read from the store at once by a stream.
const PAGE: usize = 256;
/// The longest a stream waits for the store's wake-up before it looks again (a fallback: the
/// store wakes it on every append, from any machine).
const WAIT: Duration = Duration::from_secs(5);
/// The first pause before a read the store could not answer for now (it is restarting) is
/// tried again; each next pause doubles, up to [`WAIT`].
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// How long a stream keeps trying a store that stays unavailable before it reports the error:
/// the performance goes on on its worker meanwhile, and a database restart takes seconds.
const RETRY_FOR: Duration = Duration::from_secs(120);

/// Pauses before the next try of a store that was unavailable, with a capped backoff; `false`
/// (no pause) once it has been unavailable for [`RETRY_FOR`] or the error is not transient.
struct Patience {
    since: Option<tokio::time::Instant>,
    pause: Duration,
}

impl Patience {
    fn new() -> Patience {
        Patience {
            since: None,
            pause: RETRY_FIRST,
        }
    }

    /// Waits and returns true when `e` is worth another try; false when it should be reported.
    async fn retry(&mut self, e: &StoreError, id: &str) -> bool {
        let since = *self.since.get_or_insert_with(tokio::time::Instant::now);
        if !e.is_transient() || since.elapsed() >= RETRY_FOR {
            return false;
        }
        tracing::warn!(id, "the store did not answer, trying again: {e}");
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(WAIT);
        true
    }

    /// The store answered: the next failure starts a new backoff.
    fn reset(&mut self) {
        self.since = None;
        self.pause = RETRY_FIRST;
    }
}

/// How the store names the served stage: the `[stage] name` its file gives, and for
/// performances queued without one the stage file's canonical path, as `improv run --detach`
/// and the queued doors write [`NewPerformance::stage`](improv_store::NewPerformance) (the path
/// as given when it cannot be resolved, which no enqueue writes: nothing matches). Only
/// performances of this stage are listed, shown, streamed or answered, also after a deploy
/// moved its folder: a token for one stage reaches no other stage's performances in the same
/// store. A stage whose file gives no name is known by its path alone (two folders named
/// `current` are two stages); stages sharing a store and a given name are one stage.
pub(crate) fn stage_key(stage: &Stage) -> StageKey {
    // The doors' retention sweeps by the same key: one rule for both.
    improv_door::expiry::stage_key(stage)
}

/// The served stage's performances in the store, newest first, as the API lists them.
pub(crate) async fn list(
    store: &dyn Store,
    stage: &StageKey,
    limit: usize,
) -> Result<Vec<Value>, StoreError> {
    let records = store
        .list(&ListFilter {
            limit,
            stage: Some(stage.clone()),
            ..ListFilter::default()
        })
        .await?;
    let mut rows = Vec::with_capacity(records.len());
    for record in records {
        let waiting = waiting(store, &record).await?;
        rows.push(row(&record, waiting));
    }
    Ok(rows)
}

/// The record of `id` when the store has it and it is a performance of `stage`; `None`
/// otherwise (another stage's is as unknown here as one the store lacks).
pub(crate) async fn record(
    store: &dyn Store,
    stage: &StageKey,
    id: &str,
) -> Result<Option<PerformanceRecord>, StoreError> {
    match store.performance(id).await {
        Ok(record) if stage.holds(&record) => Ok(Some(record)),
        Ok(_) | Err(StoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// One performance of `stage` in the store, or `None` when the store has none with that id.
pub(crate) async fn get(
    store: &dyn Store,
    stage: &StageKey,
    id: &str,
) -> Result<Option<Value>, StoreError> {
    let Some(record) = record(store, stage, id).await? else {
        return Ok(None);
    };
    let waiting = waiting(store, &record).await?;
    Ok(Some(row(&record, waiting)))
}

/// The approvals `record` waits for (none once it finished: nobody waits any more).
async fn waiting(
    store: &dyn Store,
    record: &PerformanceRecord,
) -> Result<Vec<PendingApproval>, StoreError> {
    if record.state == State::Finished {
        return Ok(Vec::new());
    }
    Ok(store
        .approvals(&record.id)
        .await?
        .into_iter()
        .filter(|a| a.answer.is_none())
        .map(pending)
        .collect())
}

fn pending(a: ApprovalRecord) -> PendingApproval {
    PendingApproval {
        approval: a.n,
        actor: a.ask.actor,
        prop: a.ask.prop,
        subject: a.ask.subject,
        rule: a.ask.rule,
    }
}

/// A store record in the shape of the log's rows (`status`, `started_at`), with what only the
/// store knows (`state`, `worker`, `origin`) and the approvals it waits for.
fn row(r: &PerformanceRecord, waiting: Vec<PendingApproval>) -> Value {
    json!({
        "id": r.id,
        "stage": r.stage,
        "intent": r.intent,
        "model": r.model,
        "origin": r.origin,
        "status": status(r),
        "state": r.state,
        "outcome": r.outcome,
        "reason": r.reason,
        "worker": r.worker,
        "started_at": rfc3339(r.created_at),
        "updated_at": rfc3339(r.updated_at),
        "last_seq": r.last_seq,
        "stored": true,
        "live": r.state == State::Leased,
        "approvals": waiting,
    })
}

/// The page's word for where a performance is: `running` while a worker holds it (the page
/// follows those), its outcome once finished.
fn status(r: &PerformanceRecord) -> &'static str {
    match (r.state, r.outcome) {
        (State::Queued, _) => "queued",
        (State::Leased, _) => "running",
        (State::Finished, Some(outcome)) => outcome.as_str(),
        (State::Finished, None) => "failed",
    }
}

/// A store time, RFC 3339 in UTC to the millisecond, as the log writes its times.
pub(crate) fn rfc3339(at: UnixMillis) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(at).unwrap_or(0));
    humantime::format_rfc3339_millis(at).to_string()
}

/// Which of this server's entrances a queued performance came in by: recorded as its origin,
/// so a listing tells a chat's performance from an MCP client's or an API call's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entrance {
    /// `POST /performances`.
    Api,
    /// `POST /v1/chat/completions`.
    Chat,
    /// `/mcp`'s `perform`.
    Mcp,
}

impl Entrance {
    /// The performance's recorded origin.
    pub(crate) fn origin(self) -> &'static str {
        match self {
            Entrance::Api => "api",
            Entrance::Chat => "chat",
            Entrance::Mcp => "mcp",
        }
    }
}

/// The stored performances this server follows for a client that waits for the end (a chat,
/// an MCP `perform`): each holds one of `--max-performances` places from before it is queued
/// until its client has the end or leaves, as a performance run here holds one, since the
/// server holds its connection and a follower for it. A `POST /performances` that queues holds
/// none: it is answered at once, and its performance waits in the store for a worker.
#[derive(Clone)]
pub(crate) struct Following {
    places: Arc<Semaphore>,
    max: usize,
}

impl Following {
    pub(crate) fn new(max: usize) -> Following {
        Following {
            places: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A place, held until dropped; the 429 of a full server when none is free.
    pub(crate) fn hold(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.places
            .clone()
            .try_acquire_owned()
            .map_err(|_| crate::perform::too_many(self.max))
    }
}

/// Queues a performance of `stage` for the workers, as `improv run --detach` does; returns its
/// id. The worker casts it as `improv run` would (the stage's MCP servers attached there).
pub(crate) async fn enqueue(
    store: &dyn Store,
    stage: &Stage,
    intent: String,
    model: Option<String>,
    entrance: Entrance,
) -> Result<String, StoreError> {
    store
        .enqueue(&NewPerformance {
            id: None,
            stage: stage_key(stage).path,
            stage_name: stage.stage.identity().map(Into::into),
            intent,
            model,
            origin: entrance.origin().into(),
            budget: None,
        })
        .await
}

/// Refuses (422, as a launch here would) a model no worker can perform: no provider, or one
/// improv does not know. Nothing else is looked at here: what depends on the worker's machine
/// (its keys, the embedded model's file, a script beside the stage) may differ from this
/// server's, and a script's path named by a client is not read on the server.
pub(crate) fn check_model(model: &str) -> Result<(), ApiError> {
    improv_models::provider_of(model).map(|_| ()).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "cannot_perform",
            e.to_string(),
        )
    })
}

/// Asks the store to stop `id`: a queued one ends there and then, a leased one's worker ends it.
pub(crate) async fn stop(store: &dyn Store, id: &str) -> Result<Stopping, StoreError> {
    store.stop(id).await
}

/// [`stop`] for a caller that cannot wait for the answer (a chat client that left): a store
/// unavailable for a while (restarting) is tried again, as a stream does, so that the stop is
/// not dropped and the worker does not go on performing for nobody.
pub(crate) async fn stop_patiently(store: &dyn Store, id: &str) -> Result<Stopping, StoreError> {
    let mut patience = Patience::new();
    loop {
        match store.stop(id).await {
            Ok(stopping) => return Ok(stopping),
            Err(e) if patience.retry(&e, id).await => {}
            Err(e) => return Err(e),
        }
    }
}

/// Leaves a director note in the store for the worker performing `id`.
pub(crate) async fn note(store: &dyn Store, id: &str, text: &str) -> Result<u64, StoreError> {
    Ok(store.send_note(id, text).await?.n)
}

/// Answers approval `n` of `id` in the store: false when it was answered already.
pub(crate) async fn answer(
    store: &dyn Store,
    id: &str,
    n: u64,
    answer: Answer,
    note: Option<&str>,
) -> Result<bool, StoreError> {
    store.answer_approval(id, n, answer, note).await
}

/// How stored performance `id` ended, once it has: waits on the store's wake-ups (any worker,
/// any machine) until it finished. A store unavailable for a while (restarting) is tried
/// again; an error is returned only when it lasts (the performance may still be running).
pub(crate) async fn ended(store: &dyn Store, id: &str) -> Result<End, StoreError> {
    let mut patience = Patience::new();
    loop {
        match ended_or_wait(store, id).await {
            Ok(Some(end)) => return Ok(end),
            Ok(None) => patience.reset(),
            Err(e) if patience.retry(&e, id).await => {}
            Err(e) => return Err(e),
        }
    }
}

/// How `id` ended when it has; otherwise waits for the store's next wake-up and returns `None`.
async fn ended_or_wait(store: &dyn Store, id: &str) -> Result<Option<End>, StoreError> {
    let progress = store.progress(id).await?;
    if progress.finished {
        let record = store.performance(id).await?;
        let events = store.events(id, 0, 0).await?;
        return Ok(Some(end_of(&record, &events)));
    }
    store.wait_progress(id, &progress, WAIT).await?;
    Ok(None)
}

/// The frames of stored performance `id` after event `after`: its events as workers append
/// them, woken by the store, then the `end` frame once it finished.
pub(crate) fn follow(
    store: Arc<dyn Store>,
    id: String,
    after: Option<u64>,
) -> impl Stream<Item = Frame> + Send + 'static {
    let state = Tail {
        store,
        id,
        after: after.unwrap_or(0),
        seen: Progress::default(),
        told: Vec::new(),
        queue: VecDeque::new(),
        done: false,
        patience: Patience::new(),
    };
    futures::stream::unfold(state, |mut s| async move {
        let frame = s.next().await?;
        Some((frame, s))
    })
}

struct Tail {
    store: Arc<dyn Store>,
    id: String,
    /// The seq of the last event sent (0: none).
    after: u64,
    /// The store's progress when the approvals were last read.
    seen: Progress,
    /// The approvals told as waiting and not yet as answered.
    told: Vec<u64>,
    queue: VecDeque<Frame>,
    done: bool,
    /// Retries reads while the store is unavailable (restarting) rather than ending the stream.
    patience: Patience,
}

impl Tail {
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.queue.pop_front() {
                return Some(frame);
            }
            if self.done {
                return None;
            }
            match self.read().await {
                Ok(()) => self.patience.reset(),
                // Every read is whole or changes nothing, so trying it again repeats nothing.
                Err(e) if self.patience.retry(&e, &self.id).await => {}
                Err(e) => {
                    self.done = true;
                    return Some(Frame::error(&e.to_string()));
                }
            }
        }
    }

    /// Queues what is new (events, then the approvals asked or answered since), the end once
    /// it finished, or waits for the store to say more.
    async fn read(&mut self) -> Result<(), StoreError> {
        let events = self.store.events(&self.id, self.after, PAGE).await?;
        if let Some(last) = events.last() {
            self.after = last.seq;
            self.queue
                .extend(events.iter().filter_map(|e| Frame::event(e).ok()));
            return Ok(());
        }
        let progress = self.store.progress(&self.id).await?;
        // An event appended since `events` read: read it first (waiting now would wait for a
        // change after it, and a finished performance would end before its last events).
        if progress.last_seq > self.after {
            return Ok(());
        }
        if (progress.asked, progress.answered) != (self.seen.asked, self.seen.answered) {
            self.approvals(progress.finished).await?;
        }
        self.seen = progress;
        if progress.finished {
            let record = self.store.performance(&self.id).await?;
            let all = self.store.events(&self.id, 0, 0).await?;
            self.queue.push_back(Frame::end(&end_of(&record, &all)));
            self.done = true;
            return Ok(());
        }
        if self.queue.is_empty() {
            self.store.wait_progress(&self.id, &progress, WAIT).await?;
        }
        Ok(())
    }

    /// Queues an `approval` frame for each approval newly waiting (none once it finished:
    /// nobody waits any more) and an `approval_answered` frame for each told one since answered,
    /// as a performance in this server streams them.
    async fn approvals(&mut self, finished: bool) -> Result<(), StoreError> {
        let all = self.store.approvals(&self.id).await?;
        for a in &all {
            match &a.answer {
                None if !finished && a.n > self.seen.asked && !self.told.contains(&a.n) => {
                    self.told.push(a.n);
                    let info = json!(pending(a.clone()));
                    self.queue.push_back(Frame::named("approval", &info));
                }
                Some(answer) if self.told.contains(&a.n) => {
                    self.told.retain(|n| *n != a.n);
                    let told = json!({"approval": a.n, "answer": answer});
                    self.queue
                        .push_back(Frame::named("approval_answered", &told));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// How a stored performance ended, from its record and its events.
fn end_of(record: &PerformanceRecord, events: &[Event]) -> End {
    let told = Told::from(events);
    End {
        id: record.id.clone(),
        outcome: record.outcome.unwrap_or(Outcome::Failed),
        reason: record.reason.clone(),
        attempts: told.attempts,
        spent: told.spent.unwrap_or_default(),
        answer: told.answer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use improv_kernel::EventKind;
    use improv_store::{Lease, SqliteStore, StoreLayer};
    use std::sync::Mutex;

    /// A store where the worker appends its last events and finishes right after the stream's
    /// `events` found nothing new: between that read and the stream's `progress`.
    struct Racing {
        inner: Arc<dyn Store>,
        lease: Mutex<Option<Lease>>,
    }

    #[async_trait::async_trait]
    impl StoreLayer for Racing {
        fn inner(&self) -> &dyn Store {
            self.inner.as_ref()
        }
        async fn events(
            &self,
            id: &str,
            after: u64,
            limit: usize,
        ) -> Result<Vec<Event>, StoreError> {
            let read = self.inner.events(id, after, limit).await?;
            let lease = self.lease.lock().unwrap().take();
            if let Some(lease) = lease.filter(|_| read.is_empty()) {
                let note = |seq| Event {
                    seq,
                    at: "2026-11-29T13:00:00.000Z".into(),
                    actor: None,
                    kind: EventKind::DirectorNote {
                        text: format!("note {seq}"),
                    },
                };
                self.inner.append(&lease, &[note(1), note(2)]).await?;
                self.inner.finish(&lease, Outcome::Done, "done").await?;
            }
            Ok(read)
        }
    }

    /// A store whose reads fail `failures` times (as PostgreSQL restarting does, `transient`, or
    /// for good) before they are answered.
    struct Failing {
        inner: Arc<dyn Store>,
        failures: std::sync::atomic::AtomicUsize,
        transient: bool,
    }

    impl Failing {
        fn fail(&self) -> Result<(), StoreError> {
            use std::sync::atomic::Ordering::SeqCst;
            let left = self.failures.load(SeqCst);
            if left == 0 {
                return Ok(());
            }
            self.failures.store(left - 1, SeqCst);
            let (store, message) = ("test".to_string(), "the database restarts".to_string());
            Err(match self.transient {
                true => StoreError::Unavailable { store, message },
                false => StoreError::Backend { store, message },
            })
        }
    }

    #[async_trait::async_trait]
    impl StoreLayer for Failing {
        fn inner(&self) -> &dyn Store {
            self.inner.as_ref()
        }
        async fn events(
            &self,
            id: &str,
            after: u64,
            limit: usize,
        ) -> Result<Vec<Event>, StoreError> {
            self.fail()?;
            self.inner.events(id, after, limit).await
        }
        async fn progress(&self, id: &str) -> Result<Progress, StoreError> {
            self.fail()?;
            self.inner.progress(id).await
        }
        async fn stop(&self, id: &str) -> Result<Stopping, StoreError> {
            self.fail()?;
            self.inner.stop(id).await
        }
    }

    /// A performance a worker performed (two events) and finished, behind a store that fails
    /// its next `failures` reads.
    async fn performed(
        dir: &std::path::Path,
        failures: usize,
        transient: bool,
    ) -> (Arc<dyn Store>, String) {
        let inner: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.join("s.db")).unwrap());
        inner.migrate().await.unwrap();
        let new = NewPerformance {
            id: None,
            stage: "stage.toml".into(),
            stage_name: None,
            intent: "x".into(),
            model: None,
            origin: "cli".into(),
            budget: None,
        };
        let id = inner.enqueue(&new).await.unwrap();
        let (lease, _) = inner
            .claim("w", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        let note = |seq| Event {
            seq,
            at: "2026-11-29T13:00:00.000Z".into(),
            actor: None,
            kind: EventKind::DirectorNote {
                text: format!("note {seq}"),
            },
        };
        inner.append(&lease, &[note(1), note(2)]).await.unwrap();
        inner.finish(&lease, Outcome::Done, "done").await.unwrap();
        let store = Arc::new(Failing {
            inner,
            failures: failures.into(),
            transient,
        });
        (store, id)
    }

    #[tokio::test]
    async fn a_stream_outlasts_a_store_that_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = performed(dir.path(), 3, true).await;
        let frames: Vec<Frame> = follow(store, id, None).collect().await;
        let names: Vec<_> = frames.iter().map(|f| f.name).collect();
        assert_eq!(names, [None, None, Some("end")], "{frames:?}");
    }

    #[tokio::test]
    async fn the_end_is_awaited_through_a_store_that_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = performed(dir.path(), 3, true).await;
        let end = ended(store.as_ref(), &id).await.unwrap();
        assert_eq!(end.outcome, Outcome::Done);
    }

    #[tokio::test]
    async fn a_stop_outlasts_a_store_that_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        inner.migrate().await.unwrap();
        let new = NewPerformance {
            id: None,
            stage: "stage.toml".into(),
            stage_name: None,
            intent: "x".into(),
            model: None,
            origin: "cli".into(),
            budget: None,
        };
        let id = inner.enqueue(&new).await.unwrap();
        let store = Failing {
            inner: inner.clone(),
            failures: 3.into(),
            transient: true,
        };
        let stopping = stop_patiently(&store, &id).await.unwrap();
        assert_eq!(stopping, Stopping::Stopped);
        let record = inner.performance(&id).await.unwrap();
        assert_eq!(
            (record.state, record.outcome),
            (State::Finished, Some(Outcome::Stopped)),
            "the stop landed once the store was back"
        );
    }

    #[tokio::test]
    async fn a_lasting_store_error_ends_the_stream_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let (store, id) = performed(dir.path(), 1, false).await;
        let frames: Vec<Frame> = follow(store, id, None).collect().await;
        let names: Vec<_> = frames.iter().map(|f| f.name).collect();
        assert_eq!(names, [Some("error")], "{frames:?}");
    }

    #[tokio::test]
    async fn events_appended_just_before_the_end_are_streamed() {
        let dir = tempfile::tempdir().unwrap();
        let inner: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        inner.migrate().await.unwrap();
        let new = NewPerformance {
            id: None,
            stage: "stage.toml".into(),
            stage_name: None,
            intent: "x".into(),
            model: None,
            origin: "cli".into(),
            budget: None,
        };
        let id = inner.enqueue(&new).await.unwrap();
        let (lease, _) = inner
            .claim("w", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        let store: Arc<dyn Store> = Arc::new(Racing {
            inner,
            lease: Mutex::new(Some(lease)),
        });
        let frames: Vec<Frame> = follow(store, id, None).collect().await;
        let seqs: Vec<_> = frames.iter().filter_map(|f| f.seq).collect();
        assert_eq!(seqs, [1, 2], "every event before the end: {frames:?}");
        assert_eq!(frames.last().and_then(|f| f.name), Some("end"));
    }
}
