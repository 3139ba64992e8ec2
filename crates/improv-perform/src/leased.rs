//! Performing performances leased from a store: a [`Worker`] claims them, performs each with a
//! [`Production`] rebuilt from the store's events, renews its lease while it performs, writes
//! every event through [`Store::append`] fenced by the lease's epoch, and finishes or releases it.
//!
//! What holds, and where:
//! - Nothing runs unrecorded: `turn_started`, `tool_call_started`, `model_replied` and
//!   `performance_finished` wait until the store has them before the loop goes on
//!   ([`StoreJournal`]), so a worker that dies leaves a journal another one continues from
//!   without asking the model again for a recorded reply, and knows which calls may have run;
//!   a worker that lost its lease learns it before its next model call.
//! - A worker that lost its lease (paused past it, partitioned) writes nothing more: the store
//!   refuses the stale epoch, the journal refuses every later event and the performance is
//!   abandoned to the worker that holds it now.
//! - A store that goes away is waited out: appends, renewals, claims and the end are retried
//!   until it is back or the lease is known to be lost.
//! - Director notes come from the store ([`StoreNotes`]), sent from any machine; a note the
//!   journal already holds is not delivered again after a takeover.
//! - An `ask` decision waits in the store for the director's answer ([`StoreApprover`]),
//!   given from anywhere, and is denied when none comes within `ask_timeout` or the performance
//!   ends first: the denial is written there, so a later answer is refused, never taken.
//! - Draining (SIGTERM): no new claims, the current turn ends, the performance goes back to the
//!   queue with every event it wrote.
//! - A stop asked through the store ([`Store::stop`], `POST /performances/ID/stop` on any
//!   server) cancels the performance at once on the worker that holds it, which ends it
//!   `stopped` ([`Stops`]: one watcher per worker process, one query for all it holds).

use crate::cast::PropSource;
use crate::error::PerformError;
use crate::inbox::StoreNotes;
use crate::production::{Journal, Launch, Production};
use crate::stages::Stages;
use async_trait::async_trait;
use improv_edges::{Approval, ApprovalRequest, Approver};
use improv_kernel::resume::Past;
use improv_kernel::{
    Between, Control, Event, EventKind, Hook, ObserveError, Observer, Outcome, Settling,
};
use improv_stage::Stage;
use improv_store::{
    Answer, ApprovalAsk, ApprovalRecord, Lease, PerformanceRecord, Serving, Store, StoreError,
    StoreUrl,
};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// The store numbers a journal from 1 (`last_seq` 0 means empty); the kernel from 0.
const SEQ_OFFSET: u64 = 1;

/// The longest wait between two tries of a store that cannot be reached.
const MAX_RETRY: Duration = Duration::from_secs(2);

/// How a worker performs.
#[derive(Clone, Debug)]
pub struct WorkerSettings {
    /// Its name in the store's leases: unique among the workers (host and process id).
    pub name: String,
    /// How long a lease lasts unless renewed; renewed every third of it.
    pub lease: Duration,
    /// Performances performed at once.
    pub concurrency: usize,
    /// The longest wait between two claims when the queue is empty: a fallback, since an idle
    /// worker is woken when work is queued ([`Store::wait_for_work`]).
    pub idle_poll: Duration,
    /// Props from outside improv attached to each performance (the stage's MCP servers).
    pub outside: Outside,
    /// How long an `ask` waits in the store for the director's answer before it is denied.
    pub ask_timeout: Duration,
    /// The store's URL: when it is PostgreSQL, the stages' memory lives there too, shared by
    /// every worker; otherwise (or `None`) in each stage's folder.
    pub store: Option<StoreUrl>,
    /// The stages it serves, by name ([`Stages::Named`]: it claims only theirs), or any
    /// performance from the stage file it was queued with ([`Stages::Any`]).
    pub stages: Stages,
}

/// What attaches props from outside improv to one performance of a stage.
type AttachFn = dyn Fn(Arc<Stage>) -> Pin<Box<dyn Future<Output = Attached> + Send>> + Send + Sync;

/// The props attached, or why they could not be.
type Attached = Result<Option<Arc<dyn PropSource>>, String>;

/// Props from outside improv for each performance a worker performs: the stage's MCP servers,
/// attached by the same function `improv run` uses, which the binary passes in (this crate
/// cannot name `improv-mcp`, which depends on it). The default attaches nothing.
#[derive(Clone, Default)]
pub struct Outside(Option<Arc<AttachFn>>);

impl Outside {
    /// Attaches with `attach` for each performance.
    pub fn new<F, Fut>(attach: F) -> Outside
    where
        F: Fn(Arc<Stage>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Attached> + Send + 'static,
    {
        Outside(Some(Arc::new(move |stage| Box::pin(attach(stage)))))
    }

    async fn attach(&self, stage: Arc<Stage>) -> Attached {
        match &self.0 {
            Some(attach) => attach(stage).await,
            None => Ok(None),
        }
    }
}

impl std::fmt::Debug for Outside {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = if self.0.is_some() { "attached" } else { "none" };
        write!(f, "Outside({what})")
    }
}

/// How one leased performance ended for this worker.
#[derive(Clone, Debug, PartialEq)]
pub enum Leased {
    /// It ended and the store has its outcome.
    Finished(Outcome),
    /// The worker drained: the performance is queued again for another worker.
    Released,
    /// The lease was lost: another worker has it; this one wrote nothing more.
    Abandoned(String),
}

/// Claims and performs until `drain` is cancelled, then lets the running performances end
/// their turn and gives them back. Returns once none runs.
pub async fn work(
    store: Arc<dyn Store>,
    settings: WorkerSettings,
    drain: CancellationToken,
) -> Result<(), PerformError> {
    let slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    let stops = Stops::start(store.clone(), settings.name.clone());
    let mut running = JoinSet::new();
    let mut idle = Duration::from_millis(20);
    let serving = settings.stages.serving();
    // Whether the last wait for work ended before its fallback poll: work was queued or is
    // claimable somewhere in the store.
    let mut woken = false;
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit,
            _ = drain.cancelled() => break,
        };
        let Ok(permit) = permit else { break };
        let claimed = tokio::select! {
            claimed = store.claim_among(&settings.name, settings.lease, &serving) => claimed,
            _ = drain.cancelled() => break,
        };
        match claimed {
            Ok(Some((lease, record))) => {
                idle = Duration::from_millis(20);
                woken = false;
                tracing::info!(performance = %record.id, epoch = lease.epoch, "claimed");
                let (store, settings, drain) = (store.clone(), settings.clone(), drain.clone());
                let stops = stops.clone();
                running.spawn(async move {
                    let id = record.id.clone();
                    let on = Worker {
                        settings: &settings,
                        drain: &drain,
                        stops: &stops,
                    };
                    let result = perform_on(store, lease, record, on).await;
                    drop(permit);
                    match result {
                        Ok(how) => tracing::info!(performance = %id, ?how, "left"),
                        Err(e) => tracing::error!(performance = %id, "{e}"),
                    }
                });
            }
            Ok(None) => {
                drop(permit);
                // Woken, and still nothing of its stages: the work is other stages', which
                // stays claimable, so the store's wait (which returns at once while anything
                // is claimable, after counting the whole table) would wake it again at once.
                // It looks again a little later each time, up to the idle poll, not at once.
                if woken && let Serving::Stages(_) = serving {
                    idle = pause(&drain, idle, settings.idle_poll).await;
                }
                // Woken when work is queued anywhere (NOTIFY on PostgreSQL) or a lease runs
                // out; `idle_poll` is only the fallback.
                let began = tokio::time::Instant::now();
                tokio::select! {
                    waited = store.wait_for_work(settings.idle_poll) => {
                        woken = began.elapsed() < settings.idle_poll;
                        if let Err(e) = waited {
                            tracing::warn!("cannot wait for work: {e}; retrying");
                            idle = pause(&drain, idle.max(Duration::from_millis(250)), MAX_RETRY)
                                .await;
                        }
                    }
                    _ = drain.cancelled() => {}
                }
            }
            Err(e) if e.is_transient() => {
                drop(permit);
                tracing::warn!("cannot claim: {e}; retrying");
                idle = pause(&drain, idle.max(Duration::from_millis(250)), MAX_RETRY).await;
            }
            Err(e) => {
                drain.cancel();
                while running.join_next().await.is_some() {}
                return Err(e.into());
            }
        }
        while running.try_join_next().is_some() {}
    }
    while running.join_next().await.is_some() {}
    Ok(())
}

/// Sleeps `wait` (or until draining); returns the next, doubled up to `max`.
async fn pause(drain: &CancellationToken, wait: Duration, max: Duration) -> Duration {
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = drain.cancelled() => {}
    }
    (wait * 2).min(max)
}

/// Performs one claimed performance until it ends, the worker drains or the lease is lost.
pub async fn perform(
    store: Arc<dyn Store>,
    lease: Lease,
    record: PerformanceRecord,
    settings: &WorkerSettings,
    drain: &CancellationToken,
) -> Result<Leased, PerformError> {
    let stops = Stops::start(store.clone(), settings.name.clone());
    let on = Worker {
        settings,
        drain,
        stops: &stops,
    };
    perform_on(store, lease, record, on).await
}

/// What a worker performs a performance with.
#[derive(Clone, Copy)]
struct Worker<'a> {
    settings: &'a WorkerSettings,
    drain: &'a CancellationToken,
    stops: &'a Arc<Stops>,
}

async fn perform_on(
    store: Arc<dyn Store>,
    lease: Lease,
    record: PerformanceRecord,
    on: Worker<'_>,
) -> Result<Leased, PerformError> {
    let held = Held::new(store, lease);
    // Aborted when this returns or is dropped (a panic, a cancelled task): never renews a
    // lease nobody performs.
    let _renewer = AbortOnDropHandle::new(tokio::spawn(renew(held.clone(), on.settings.lease)));
    perform_held(&held, &record, on).await
}

async fn perform_held(
    held: &Held,
    record: &PerformanceRecord,
    on: Worker<'_>,
) -> Result<Leased, PerformError> {
    let Worker {
        settings, drain, ..
    } = on;
    let past = match replay(held, &record.id).await {
        Ok(past) => past,
        Err(e) => return abandon_or(held, e),
    };
    let journal = StoreJournal::start(held.clone());
    let production = open(held, record, settings, &journal, past, drain).await;
    let mut production = match production {
        Ok(production) => production,
        Err(e) if held.lost.is_cancelled() => return Ok(Leased::Abandoned(e.to_string())),
        Err(e) => {
            // It cannot be performed here (a stage file that does not load): it ends, failed,
            // rather than going from worker to worker.
            let reason = format!("cannot be performed: {e}");
            journal.flush().await.ok();
            return end(held, Outcome::Failed, &reason).await;
        }
    };
    // The director's stop, asked from any machine, cancels it at once.
    let cancel = held.lost.child_token();
    let stopped = Arc::new(AtomicBool::new(false));
    let epoch = held.lease().epoch;
    let watching = on
        .stops
        .watch(&record.id, epoch, cancel.clone(), stopped.clone());
    let mut ended = production.perform(&cancel).await;
    drop(watching);
    if held.lost.is_cancelled() {
        return Ok(Leased::Abandoned(ended.reason));
    }
    if stopped.load(Ordering::SeqCst) && ended.outcome == Outcome::Interrupted {
        ended.outcome = Outcome::Stopped;
        ended.reason = STOPPED.into();
    }
    if drain.is_cancelled() && ended.outcome == Outcome::Interrupted {
        drop(production);
        if let Err(e) = journal.flush().await {
            return abandon_or(held, e);
        }
        let lease = held.lease();
        return match retry(held, || held.store.release(&lease)).await {
            Ok(()) => Ok(Leased::Released),
            Err(e) => abandon_or(held, e),
        };
    }
    let finished = production.finish(&ended);
    let flushed = journal.flush().await;
    if held.lost.is_cancelled() {
        return Ok(Leased::Abandoned(ended.reason));
    }
    if let Err(e) = flushed {
        return abandon_or(held, e);
    }
    finished?;
    end(held, ended.outcome, &ended.reason).await
}

/// The production of a leased performance, cast as `improv run` casts it (the stage's MCP
/// servers attached), its events going to the store's journal and its notes read from there.
async fn open(
    held: &Held,
    record: &PerformanceRecord,
    settings: &WorkerSettings,
    journal: &Arc<StoreJournal>,
    past: Replayed,
    drain: &CancellationToken,
) -> Result<Production, PerformError> {
    let stage = settings.stages.open(record)?;
    // A door's firing carries its own budget (`[door.edges]` over the stage's).
    let stage = match &record.budget {
        Some(budget) => crate::within_budget(&stage, budget),
        None => stage,
    };
    let stage = Arc::new(stage);
    let mut launch = Launch::new(record.intent.clone());
    launch.outside = settings.outside.attach(stage.clone()).await.map_err(|e| {
        PerformError::Stage(format!(
            "the stage's MCP servers could not be attached: {e}"
        ))
    })?;
    launch.model = record.model.clone();
    launch.store = settings.store.clone();
    launch.id = Some(record.id.clone());
    launch.notes = Some(StoreNotes::new(held.store.clone(), &record.id, past.notes));
    launch.approver = Arc::new(StoreApprover {
        held: held.clone(),
        store: held.store.clone(),
        performance: record.id.clone(),
        timeout: settings.ask_timeout,
    });
    launch.journal = Some(Journal {
        recorder: journal.clone(),
        past: past.past,
    });
    launch.hooks = vec![Arc::new(Drain(drain.clone()))];
    Ok(Production::open(stage, launch)?.0)
}

/// The reason a performance the director stopped through the store ends with.
const STOPPED: &str = "stopped by the director";

/// The longest the stop watcher waits for the store's wake-up before it looks again (a
/// fallback: PostgreSQL wakes it when a stop is asked, from any machine; SQLite returns after
/// [`improv_store::STOP_POLL`]).
const STOP_LOOK: Duration = Duration::from_secs(60);

/// The stop watcher of one worker process: the performances it performs now, each with what
/// cancels it, and one task that looks in the store for the stops asked of any of them
/// ([`Store::stops_requested`], one query) whenever the store says a stop may have been asked
/// ([`Store::wait_stop`]) or a performance starts here (its stop may have been asked before
/// the claim). One watcher rather than one wait per performance: with thousands leased, the
/// waits' queries took over a core of an idle worker.
struct Stops {
    held: HeldStops,
    /// Look at once: a performance was added.
    look: Arc<tokio::sync::Notify>,
    _task: AbortOnDropHandle<()>,
}

/// What a stop does to one performance: cancels it, and says it was a stop.
struct Watched {
    cancel: CancellationToken,
    stopped: Arc<AtomicBool>,
}

/// A performance as this worker holds it: its id and the lease's epoch. A worker that lost a
/// lease and claimed the performance again holds it twice for a while; each watch is its own.
type WatchKey = (String, u64);

type HeldStops = Arc<Mutex<HashMap<WatchKey, Watched>>>;

fn lock_stops(held: &HeldStops) -> MutexGuard<'_, HashMap<WatchKey, Watched>> {
    // A poisoned lock needs a panic while an entry was added or removed; the map is whole.
    held.lock().unwrap_or_else(|e| e.into_inner())
}

impl Stops {
    /// The watcher of worker `worker` (its name in the store's leases).
    fn start(store: Arc<dyn Store>, worker: String) -> Arc<Stops> {
        let held = HeldStops::default();
        let look = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(watch_stops(store, worker, held.clone(), look.clone()));
        Arc::new(Stops {
            held,
            look,
            _task: AbortOnDropHandle::new(task),
        })
    }

    /// Cancels `cancel` and sets `stopped` once a stop is asked of `id` (held under lease
    /// `epoch`), until the returned guard is dropped.
    fn watch(
        self: &Arc<Self>,
        id: &str,
        epoch: u64,
        cancel: CancellationToken,
        stopped: Arc<AtomicBool>,
    ) -> Watching {
        let key = (id.to_string(), epoch);
        lock_stops(&self.held).insert(key.clone(), Watched { cancel, stopped });
        self.look.notify_one();
        Watching {
            stops: self.clone(),
            key,
        }
    }
}

/// A performance watched for a stop; it is no longer once this is dropped.
struct Watching {
    stops: Arc<Stops>,
    key: WatchKey,
}

impl Drop for Watching {
    fn drop(&mut self) {
        lock_stops(&self.stops.held).remove(&self.key);
    }
}

/// Looks for the stops asked of the performances in `held` until aborted.
async fn watch_stops(
    store: Arc<dyn Store>,
    worker: String,
    held: HeldStops,
    look: Arc<tokio::sync::Notify>,
) {
    let mut seen = 0;
    loop {
        if !lock_stops(&held).is_empty() {
            match store.stops_requested(&worker).await {
                Ok(ids) => {
                    let ids: HashSet<String> = ids.into_iter().collect();
                    lock_stops(&held).retain(|(id, _), watched| {
                        if !ids.contains(id) {
                            return true;
                        }
                        watched.stopped.store(true, Ordering::SeqCst);
                        watched.cancel.cancel();
                        false
                    });
                }
                Err(e) => tracing::warn!("cannot look for stops: {e}; retrying"),
            }
        }
        tokio::select! {
            waited = store.wait_stop(seen, STOP_LOOK) => match waited {
                Ok(now) => seen = now,
                Err(e) => {
                    tracing::warn!("cannot wait for stops: {e}; retrying");
                    tokio::time::sleep(MAX_RETRY).await;
                }
            },
            _ = look.notified() => {}
        }
    }
}

/// Answers the `ask` decisions of a leased performance through the store: each is put there
/// waiting, the director answers it from anywhere (`improv approve`), and the call waits for
/// the answer (woken by NOTIFY on PostgreSQL), denied when none came within the timeout.
struct StoreApprover {
    /// The lease every ask is fenced by: a worker that lost it asks nothing.
    held: Held,
    store: Arc<dyn Store>,
    performance: String,
    timeout: Duration,
}

#[async_trait]
impl Approver for StoreApprover {
    async fn ask(&self, request: &ApprovalRequest) -> Approval {
        let ask = ApprovalAsk {
            actor: request.actor.clone(),
            prop: request.prop.clone(),
            subject: request.subject.clone(),
            rule: request.rule.clone(),
        };
        let id = &self.performance;
        let n = match self.store.ask_approval(&self.held.lease(), &ask).await {
            Ok(n) => n,
            Err(e) => {
                if matches!(e, StoreError::LeaseLost { .. }) {
                    self.held.lost.cancel();
                }
                return denied(format!("the approval could not be asked: {e}"));
            }
        };
        tracing::info!(
            performance = %id,
            "waiting for the director: improv approve --store URL {id} {n} once|performance|deny"
        );
        // Dropped unanswered (the performance cancelled or stopped meanwhile): denied in the
        // store, so no later answer is taken as approving a command that never ran.
        let mut unanswered = Unanswered {
            store: Some(self.store.clone()),
            performance: id.clone(),
            n,
        };
        let approval = self.wait(n).await;
        unanswered.store = None;
        // An answer that lets the call run counts only while this worker still holds the lease:
        // one that came after another worker took the performance over (a claim that missed
        // this ask) is that worker's to act on, not this one's.
        if !matches!(approval, Approval::Deny { .. })
            && (self.held.lost.is_cancelled() || self.held.expired())
        {
            self.held.lost.cancel();
            return denied(
                "the director answered after this worker's lease ran out; another worker performs it now"
                    .into(),
            );
        }
        approval
    }
}

impl StoreApprover {
    /// Waits for the director's answer to approval `n`; denies it in the store when none
    /// came within the timeout.
    async fn wait(&self, n: u64) -> Approval {
        let id = &self.performance;
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Err(e) = self.store.wait_answer(id, n, left).await {
                tracing::warn!("cannot wait for approval {n}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(500).min(left)).await;
            }
            match self.store.approvals(id).await {
                Ok(all) => match all.into_iter().find(|a| a.n == n) {
                    Some(ApprovalRecord {
                        answer: Some(answer),
                        note,
                        ..
                    }) => return approval(answer, note),
                    _ if left.is_zero() => {
                        let note = format!(
                            "no answer from the director within {}",
                            humanize(self.timeout)
                        );
                        return self.deny(n, note).await;
                    }
                    _ => {}
                },
                Err(e) if left.is_zero() => {
                    return self
                        .deny(n, format!("the answer could not be read: {e}"))
                        .await;
                }
                Err(e) => tracing::warn!("cannot read approval {n}: {e}; retrying"),
            }
        }
    }

    /// Writes the denial of approval `n` in the store, so a later answer from the director is
    /// refused rather than taken; when a real answer came first, that answer stands.
    async fn deny(&self, n: u64, note: String) -> Approval {
        let id = &self.performance;
        match self
            .store
            .answer_approval(id, n, Answer::Deny, Some(&note))
            .await
        {
            Ok(false) => match self.store.approvals(id).await {
                Ok(all) => match all.into_iter().find(|a| a.n == n) {
                    Some(ApprovalRecord {
                        answer: Some(answer),
                        note,
                        ..
                    }) => approval(answer, note),
                    _ => denied(note),
                },
                Err(_) => denied(note),
            },
            Ok(true) => denied(note),
            Err(e) => {
                tracing::warn!(performance = %id, "cannot record approval {n} as denied: {e}");
                denied(note)
            }
        }
    }
}

/// An approval asked and not yet answered: when dropped so (the `ask` cancelled), it is denied
/// in the store by a task of its own.
struct Unanswered {
    /// `None` once the ask returned: nothing to do.
    store: Option<Arc<dyn Store>>,
    performance: String,
    n: u64,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (id, n) = (std::mem::take(&mut self.performance), self.n);
        runtime.spawn(async move {
            let note = Some("the performance ended before the director answered");
            if let Err(e) = store.answer_approval(&id, n, Answer::Deny, note).await {
                tracing::warn!(performance = %id, "cannot record approval {n} as denied: {e}");
            }
        });
    }
}

/// The edges' approval for the director's answer.
fn approval(answer: Answer, note: Option<String>) -> Approval {
    match answer {
        Answer::Once => Approval::Once,
        Answer::Performance => Approval::ForPerformance,
        Answer::Deny => Approval::Deny { note },
    }
}

fn denied(note: String) -> Approval {
    Approval::Deny { note: Some(note) }
}

/// A timeout as people say it: whole minutes or seconds.
fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 && secs.is_multiple_of(60) {
        format!("{} min", secs / 60)
    } else {
        format!("{secs} s")
    }
}

/// Records the outcome in the store.
async fn end(held: &Held, outcome: Outcome, reason: &str) -> Result<Leased, PerformError> {
    let lease = held.lease();
    match retry(held, || held.store.finish(&lease, outcome, reason)).await {
        Ok(()) => Ok(Leased::Finished(outcome)),
        Err(e) => abandon_or(held, e),
    }
}

/// A lost lease is the other worker's business; any other error is this one's.
fn abandon_or(held: &Held, e: StoreError) -> Result<Leased, PerformError> {
    if matches!(e, StoreError::LeaseLost { .. }) || held.lost.is_cancelled() {
        held.lost.cancel();
        Ok(Leased::Abandoned(e.to_string()))
    } else {
        Err(e.into())
    }
}

/// Runs a store call until it succeeds, fails for good, or the lease is lost while the store
/// cannot be reached.
async fn retry<T, F, Fut>(held: &Held, mut call: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StoreError>>,
{
    let mut wait = Duration::from_millis(100);
    loop {
        match call().await {
            Err(e) if e.is_transient() && !held.lost.is_cancelled() => {
                tracing::warn!("{e}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
            }
            other => return other,
        }
    }
}

/// How many of a journal's events a resume reads from the store at a time.
pub const REPLAY_PAGE: usize = 500;

/// What a leased performance's journal in the store had reached.
struct Replayed {
    /// `None` when the journal is empty: the performance starts afresh.
    past: Option<Past>,
    /// The director notes the journal delivered, oldest first ([`StoreNotes::new`]).
    notes: Vec<String>,
}

/// Reads the journal of `id` a page at a time, each event folded into the replay and dropped,
/// so a resume (a takeover, a drained worker's performance taken up elsewhere) holds the
/// conversation, not the whole journal, which a compaction never shortens.
async fn replay(held: &Held, id: &str) -> Result<Replayed, StoreError> {
    let mut past = Past::default();
    let mut notes = Vec::new();
    let mut after = 0;
    let mut any = false;
    loop {
        let page = retry(held, || held.store.events(id, after, REPLAY_PAGE)).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        let more = page.len() == REPLAY_PAGE;
        for mut event in page {
            event.seq = event.seq.saturating_sub(SEQ_OFFSET);
            if let EventKind::DirectorNote { text } = &event.kind {
                notes.push(text.clone());
            }
            past.take(&event);
            any = true;
        }
        if !more {
            break;
        }
    }
    Ok(Replayed {
        past: any.then(|| past.finish()),
        notes,
    })
}

/// The lease a worker holds, shared by the renewer and the journal, and the token cancelled
/// when it is lost.
#[derive(Clone)]
struct Held {
    store: Arc<dyn Store>,
    current: Arc<Mutex<Lease>>,
    lost: CancellationToken,
}

impl Held {
    /// Whether the lease ran out by this machine's clock (renewals failed or came too late).
    fn expired(&self) -> bool {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        now >= self.lease().expires_at
    }

    fn new(store: Arc<dyn Store>, lease: Lease) -> Held {
        Held {
            store,
            current: Arc::new(Mutex::new(lease)),
            lost: CancellationToken::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Lease> {
        // A poisoned lock needs a panic while a lease was copied in or out; it is still whole.
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lease(&self) -> Lease {
        self.lock().clone()
    }
}

/// Renews the lease every third of its life; a renewal refused means it is lost.
async fn renew(held: Held, ttl: Duration) {
    let every = ttl / 3;
    let mut wait = every;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = held.lost.cancelled() => return,
        }
        let lease = held.lease();
        match held.store.renew(&lease, ttl).await {
            Ok(renewed) => {
                *held.lock() = renewed;
                wait = every;
            }
            Err(e) if e.is_transient() => {
                tracing::warn!("cannot renew the lease: {e}; retrying");
                wait = Duration::from_millis(500).min(every);
            }
            Err(e) => {
                tracing::warn!("{e}; abandoning the performance");
                held.lost.cancel();
                return;
            }
        }
    }
}

/// Stops the performance between turns once the worker drains.
struct Drain(CancellationToken);

#[async_trait]
impl Hook for Drain {
    async fn between_turns(&self, _at: &mut Between<'_>) -> Control {
        if self.0.is_cancelled() {
            return Control::Stop {
                outcome: Outcome::Interrupted,
                reason: "the worker is draining; another worker continues".into(),
                budget: None,
            };
        }
        Control::Continue
    }
}

enum Job {
    Event(
        Event,
        Option<std::sync::mpsc::SyncSender<Result<(), String>>>,
    ),
    Flush(oneshot::Sender<Result<(), String>>),
}

/// The journal of a leased performance: every event goes to the store, in order, in batches;
/// the ones another worker must see to resume safely are waited for.
pub struct StoreJournal {
    jobs: mpsc::UnboundedSender<Job>,
    lost: CancellationToken,
    held: Held,
    /// An event the loop acts on was taken since the last [`Observer::settled`]: the lease
    /// must still be live when it is stored.
    acts: AtomicBool,
}

impl StoreJournal {
    /// The journal, with its writer task (which ends when the journal is dropped).
    fn start(held: Held) -> Arc<StoreJournal> {
        let (jobs, rx) = mpsc::unbounded_channel();
        let journal = Arc::new(StoreJournal {
            jobs,
            lost: held.lost.clone(),
            held: held.clone(),
            acts: AtomicBool::new(false),
        });
        tokio::spawn(write(held, rx));
        journal
    }

    /// Waits until every event observed so far is stored.
    async fn flush(&self) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        let lost = || StoreError::Backend {
            store: String::new(),
            message: "the journal's writer stopped".into(),
        };
        self.jobs.send(Job::Flush(done)).map_err(|_| lost())?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(StoreError::Backend {
                store: String::new(),
                message,
            }),
            Err(_) => Err(lost()),
        }
    }
}

/// How long the loop waits for an event to be stored, which is what a worker resuming the
/// performance relies on (a call that may have run, a reply not to ask for again), and
/// `turn_started`, so a worker that lost its lease (paused past it) learns so before it asks
/// the model for a turn its successor may have recorded already.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Durable {
    /// Not waited for: stored with the next batch.
    No,
    /// Waited for in [`Observer::settled`], which the kernel awaits before it acts on the
    /// event (and the worker's flush before it records the end): no thread is held meanwhile.
    Settled,
    /// Waited for in `observe` itself, holding the thread (`block_in_place`): a step inside
    /// `routine.NAME`, which a prop emits with no await before it acts.
    Blocking,
}

fn durable(kind: &EventKind) -> Durable {
    match kind {
        EventKind::TurnStarted { .. }
        | EventKind::ToolCallStarted { .. }
        | EventKind::ModelReplied { .. }
        | EventKind::PerformanceFinished { .. } => Durable::Settled,
        EventKind::RoutineStep {
            within: Some(_), ..
        } => Durable::Blocking,
        _ => Durable::No,
    }
}

/// What comes after this event acts on the world (a model call, a prop call): the lease must
/// still be live once it is stored.
fn acts(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::TurnStarted { .. }
            | EventKind::ToolCallStarted { .. }
            | EventKind::RoutineStep {
                within: Some(_),
                ..
            }
    )
}

impl Observer for StoreJournal {
    fn observe(&self, event: &Event) -> Result<(), ObserveError> {
        if self.lost.is_cancelled() {
            return Err(ObserveError(
                "the lease was lost: another worker performs this now".into(),
            ));
        }
        let mut event = event.clone();
        event.seq += SEQ_OFFSET;
        let stopped = |_| ObserveError("the journal's writer stopped".into());
        match durable(&event.kind) {
            Durable::No => return self.jobs.send(Job::Event(event, None)).map_err(stopped),
            Durable::Settled => {
                if acts(&event.kind) {
                    self.acts.store(true, Ordering::SeqCst);
                }
                return self.jobs.send(Job::Event(event, None)).map_err(stopped);
            }
            Durable::Blocking => {}
        }
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        self.jobs
            .send(Job::Event(event, Some(done)))
            .map_err(stopped)?;
        // The loop runs on a multi-threaded runtime (the worker's): this thread waits while
        // the writer task stores the event on another.
        let stored = tokio::task::block_in_place(|| wait.recv());
        match stored {
            Ok(Ok(())) => self.still_held(true),
            Ok(Err(message)) => Err(ObserveError(message)),
            Err(_) => Err(ObserveError("the journal's writer stopped".into())),
        }
    }

    fn settled(&self) -> Settling<'_> {
        Box::pin(async move {
            self.flush()
                .await
                .map_err(|e| ObserveError(e.to_string()))?;
            self.still_held(self.acts.swap(false, Ordering::SeqCst))
        })
    }
}

impl StoreJournal {
    /// After an event was stored: an error when what comes next `acts` on the world and the
    /// lease ran out meanwhile (paused, starved), since another worker may be performing this
    /// turn already, and asking the model for it again is not this worker's to do.
    fn still_held(&self, acts: bool) -> Result<(), ObserveError> {
        if acts && self.held.expired() {
            self.lost.cancel();
            return Err(ObserveError(
                "the lease expired: another worker may perform this now".into(),
            ));
        }
        Ok(())
    }
}

/// Stores the journal's events in batches, each fenced by the current lease.
async fn write(held: Held, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut failed: Option<String> = None;
    while let Some(first) = jobs.recv().await {
        let mut batch = vec![first];
        while batch.len() < 512 {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let events: Vec<Event> = batch
            .iter()
            .filter_map(|job| match job {
                Job::Event(event, _) => Some(event.clone()),
                Job::Flush(_) => None,
            })
            .collect();
        if failed.is_none()
            && !events.is_empty()
            && let Err(e) = append(&held, &events).await
        {
            held.lost.cancel();
            failed = Some(e.to_string());
        }
        for job in batch {
            let result = failed.clone().map_or(Ok(()), Err);
            match job {
                Job::Event(_, Some(done)) => {
                    let _ = done.send(result);
                }
                Job::Event(_, None) => {}
                Job::Flush(done) => {
                    let _ = done.send(result);
                }
            }
        }
    }
}

/// Appends one batch, waiting out a store that cannot be reached. A batch that was stored
/// although its acknowledgement was lost (the connection dropped at commit) counts as stored.
async fn append(held: &Held, events: &[Event]) -> Result<(), StoreError> {
    let mut wait = Duration::from_millis(50);
    let mut retried = false;
    loop {
        let lease = held.lease();
        match held.store.append(&lease, events).await {
            Ok(()) => return Ok(()),
            Err(StoreError::SeqConflict { .. })
                if retried && stored(held, &lease, events).await =>
            {
                return Ok(());
            }
            Err(e) if e.is_transient() && !held.lost.is_cancelled() => {
                tracing::warn!("cannot store events: {e}; retrying");
                retried = true;
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_RETRY);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether `events` are already in the store under `lease`'s epoch.
async fn stored(held: &Held, lease: &Lease, events: &[Event]) -> bool {
    let Some(last) = events.last() else {
        return true;
    };
    matches!(
        held.store.performance(&lease.performance).await,
        Ok(record) if record.epoch == lease.epoch && record.last_seq >= last.seq
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use improv_store::{NewPerformance, SqliteStore};

    async fn asked(timeout: Duration) -> (tempfile::TempDir, StoreApprover) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
        store.migrate().await.unwrap();
        let new = NewPerformance {
            id: None,
            stage: "stage.toml".into(),
            stage_name: None,
            intent: "ask".into(),
            model: None,
            origin: "cli".into(),
            budget: None,
        };
        let performance = store.enqueue(&new).await.unwrap();
        let (lease, _) = store.claim("w", TTL).await.unwrap().unwrap();
        let approver = StoreApprover {
            held: Held::new(store.clone(), lease),
            store,
            performance,
            timeout,
        };
        (dir, approver)
    }

    const TTL: Duration = Duration::from_secs(600);

    fn request() -> ApprovalRequest {
        ApprovalRequest {
            actor: "lead".into(),
            prop: "bash".into(),
            subject: "rm -rf build".into(),
            rule: "ask".into(),
        }
    }

    /// Whether approval 1 is answered in the store, looked at until `tries` ran out.
    async fn answered(approver: &StoreApprover, tries: u32) -> Option<Answer> {
        for _ in 0..tries {
            let all = approver
                .store
                .approvals(&approver.performance)
                .await
                .unwrap();
            if let Some(answer) = all.into_iter().find(|a| a.n == 1).and_then(|a| a.answer) {
                return Some(answer);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// A worker holding one performance twice (it lost the lease and claimed it again) keeps
    /// watching the newer hold for a stop when the older one ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_older_hold_ending_leaves_the_newer_one_watched() {
        let (_dir, approver) = asked(Duration::from_secs(1)).await;
        let stops = Stops::start(approver.store.clone(), "w".into());
        let id = &approver.performance;
        let watch = |epoch| {
            let stopped = Arc::new(AtomicBool::new(false));
            stops.watch(id, epoch, CancellationToken::new(), stopped)
        };
        let older = watch(1);
        let newer = watch(2);
        drop(older);
        let watched: Vec<WatchKey> = lock_stops(&stops.held).keys().cloned().collect();
        assert_eq!(
            watched,
            [(id.clone(), 2)],
            "the newer hold is no longer watched"
        );
        drop(newer);
        assert!(lock_stops(&stops.held).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ask_that_timed_out_is_denied_in_the_store() {
        let (_dir, approver) = asked(Duration::from_millis(50)).await;
        let got = approver.ask(&request()).await;
        assert!(matches!(got, Approval::Deny { .. }), "{got:?}");
        assert_eq!(answered(&approver, 1).await, Some(Answer::Deny));
        let late = approver
            .store
            .answer_approval(&approver.performance, 1, Answer::Once, None)
            .await
            .unwrap();
        assert!(!late, "a director's answer after the timeout was taken");
    }

    /// A worker that lost its lease (another claimed the performance) asks the director
    /// nothing: its ask is refused by the store's fence, denied here, and the loss is known.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ask_after_the_lease_was_lost_is_denied_and_not_asked() {
        // Short, so that an ask the store took wrongly ends (denied for no answer) and fails
        // below instead of waiting for a director.
        let (_dir, approver) = asked(Duration::from_millis(200)).await;
        let id = &approver.performance;
        approver
            .store
            .release(&approver.held.lease())
            .await
            .unwrap();
        let (current, _) = approver.store.claim("other", TTL).await.unwrap().unwrap();
        assert_eq!(&current.performance, id);
        let got = approver.ask(&request()).await;
        assert!(
            matches!(&got, Approval::Deny { note: Some(note) } if note.contains("lease")),
            "{got:?}"
        );
        assert!(approver.held.lost.is_cancelled(), "the loss went unnoticed");
        let asked = approver.store.approvals(id).await.unwrap();
        assert!(
            asked.is_empty(),
            "a worker without the lease asked: {asked:?}"
        );
    }

    /// An answer that lets the call run, given after this worker's lease ran out (another
    /// worker's claim can miss an ask made just before it), is not taken.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_answer_that_comes_after_the_lease_ran_out_is_not_taken() {
        let (_dir, approver) = asked(Duration::from_secs(30)).await;
        let approver = Arc::new(approver);
        let asking = {
            let approver = approver.clone();
            tokio::spawn(async move { approver.ask(&request()).await })
        };
        let id = approver.performance.clone();
        while approver.store.approvals(&id).await.unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // By this machine's clock the lease ran out (its renewals failed); then the answer.
        approver.held.lock().expires_at = 0;
        approver
            .store
            .answer_approval(&id, 1, Answer::Once, None)
            .await
            .unwrap();
        let got = asking.await.unwrap();
        assert!(
            matches!(&got, Approval::Deny { note: Some(note) } if note.contains("lease")),
            "{got:?}"
        );
        assert!(approver.held.lost.is_cancelled());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ask_dropped_unanswered_is_denied_in_the_store() {
        let (_dir, approver) = asked(Duration::from_secs(3600)).await;
        let request = request();
        let ask = approver.ask(&request);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), ask)
                .await
                .is_err(),
            "answered without a director"
        );
        assert_eq!(answered(&approver, 250).await, Some(Answer::Deny));
    }
}
