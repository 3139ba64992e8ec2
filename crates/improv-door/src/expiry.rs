//! How long the store keeps the records a door writes per message or delivery (claims, thread
//! records, pairing codes), so that a door that runs for months keeps a bounded store: each
//! scope has an age after which its records go, and a count beyond which the oldest go first.
//! A periodic sweep ([`run`]) deletes them in batches, never the message path.
//!
//! The door tables go the same way ([`run_tables`], started by the daemon): an outbox row
//! confirmed sent (the platform's id recorded) [`OUTBOX_KEEP_FOR`] after it was written; a row
//! not confirmed sent never by age, since exactly-once rests on it. A firing of the daemon's
//! stage [`FIRINGS_KEEP_FOR`] after it was due, except each door's [`FIRINGS_KEPT`] newest: the
//! newest is a timed door's catch-up cursor and the window is what a retake reads. A finished
//! performance a door started, with its events and the blobs no other performance refers to,
//! `keep_for` after it was last written, except each door's `keep_last` newest (the stage's
//! `[doors]`, [`DoorRetention`]; 30 days and 20 by default): a retake asks whether a firing's
//! performance started, and each of the [`FIRINGS_KEPT`] firings it reads names at most one of
//! them, so `keep_last` is never below it. Only the daemon's own stage's firings and
//! performances go ([`StageRetention`]): stages sharing a store each keep theirs as their own
//! `[doors]` says. A
//! performance a person started (`improv run`, the API) is never swept. The outbox and firings
//! ages are constants: nothing a user reads is in them.
//!
//! The firings of a key no daemon sweeps any more (a stage renamed, moved while unnamed, or
//! removed) go with any daemon's sweep once due [`ABANDONED_KEEP_FOR`] ago, each door's
//! [`FIRINGS_KEPT`] newest kept (`Store::sweep_abandoned_firings`): far older than any stage's
//! own sweep keeps, so what it reaches of a live stage is only that stage's doors' newest.

use crate::clock::Clock;
use improv_stage::{DoorRetention, Stage};
use improv_store::{StageKey, Store, StoreError, Sweep, UnixMillis};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the sweep runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// The most records one store call deletes, so a sweep never holds the store for long.
pub const BATCH: usize = 500;

/// How long an outbox row confirmed sent is kept after it was written.
pub const OUTBOX_KEEP_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long a firing is kept after it was due, beyond each door's [`FIRINGS_KEPT`] newest.
pub const FIRINGS_KEEP_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long after it was due a firing of a key no daemon sweeps any more is kept, beyond each
/// door's [`FIRINGS_KEPT`] newest (see the module doc).
pub const ABANDONED_KEEP_FOR: Duration = Duration::from_secs(90 * 24 * 3600);

// Another stage's sweep must never reach what a live stage's own sweep keeps by age.
const _: () = assert!(ABANDONED_KEEP_FOR.as_secs() > FIRINGS_KEEP_FOR.as_secs());

/// How many of each door's newest firings stay whatever their age: the retake window.
pub const FIRINGS_KEPT: usize = crate::timed::RETAKE_WINDOW;

/// How long a finished door-made performance is kept after it was last written, by default.
pub const PERFORMANCES_KEEP_FOR: Duration = improv_stage::door::DEFAULT_KEEP_FOR;

/// How many of each door's newest performances stay whatever their age, by default and at
/// least (see the module doc).
pub const PERFORMANCES_KEPT: usize = improv_stage::door::MIN_KEEP_LAST;

// The stage's floor for `keep_last` is the retake window: a firing a retake reads whose
// performance went would read as never started.
const _: () = assert!(PERFORMANCES_KEPT >= FIRINGS_KEPT);

/// The most performances one store call deletes: each goes with all its events.
pub const PERFORMANCES_BATCH: usize = 50;

/// How long the records of one store scope are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    pub scope: &'static str,
    /// Records last written longer ago than this go.
    pub keep_for: Duration,
    /// Beyond this many records, the oldest go first.
    pub max: usize,
}

impl Expiry {
    /// The store's sweep for this scope at `now`.
    fn sweep(&self, now: UnixMillis) -> Sweep {
        let age = i64::try_from(self.keep_for.as_millis()).unwrap_or(i64::MAX);
        Sweep {
            before: now.saturating_sub(age),
            keep: self.max,
            batch: BATCH,
        }
    }
}

/// Deletes, batch after batch, what `rules` expire at `now`; returns how many records went.
pub async fn sweep(
    store: &dyn Store,
    rules: &[Expiry],
    now: UnixMillis,
) -> Result<u64, StoreError> {
    let mut gone = 0;
    for rule in rules {
        let sweep = rule.sweep(now);
        loop {
            let n = store.sweep(rule.scope, &sweep).await?;
            gone += n;
            if n < BATCH as u64 {
                break;
            }
            // Let the store serve others between batches.
            tokio::task::yield_now().await;
        }
    }
    Ok(gone)
}

/// Whose door-made performances the door tables' sweep deletes, and how long it keeps them:
/// a stage's own, as its `[doors]` says, never another stage's in the same store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageRetention {
    /// Which performances are the stage's ([`StageKey::holds`]).
    pub stage: StageKey,
    pub keep: DoorRetention,
}

impl StageRetention {
    /// The performances of `stage`, known by `key` (worked out when it was loaded), kept as
    /// its `[doors]` says.
    pub fn of(key: StageKey, stage: &Stage) -> StageRetention {
        StageRetention {
            stage: key,
            keep: stage.door_retention,
        }
    }
}

/// How the store knows `stage`'s performances, and its doors' firings and kept values
/// ([`StageKey::id`], [`crate::kept`]): by the name its file gives
/// ([`improv_stage::StageMeta::identity`]), and those queued without one by the stage file's
/// canonical path, as [`crate::QueueLauncher`] writes them (the path as given when it cannot
/// be resolved, which no enqueue writes: none is swept by it).
pub fn stage_key(stage: &Stage) -> StageKey {
    let path = stage
        .path
        .canonicalize()
        .unwrap_or_else(|_| stage.path.clone());
    StageKey {
        name: stage.stage.identity().map(str::to_string),
        path: path.display().to_string(),
    }
}

/// Deletes, batch after batch, the outbox rows, firings and door-made performances expired at
/// `now`, the firings and performances of `keep`'s stage only, the performances as it says (see
/// the module doc); returns how many went.
pub async fn sweep_tables(
    store: &dyn Store,
    now: UnixMillis,
    keep: &StageRetention,
) -> Result<u64, StoreError> {
    let ago = |d: Duration| now.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let (sent_before, due_before) = (ago(OUTBOX_KEEP_FOR), ago(FIRINGS_KEEP_FOR));
    let abandoned_before = ago(ABANDONED_KEEP_FOR);
    let written_before = ago(keep.keep.keep_for);
    // The stage checked it; a retake's window is kept whatever a caller passes.
    let keep_last = keep.keep.keep_last.max(PERFORMANCES_KEPT);
    let mut gone = 0;
    loop {
        let n = store.sweep_outbox(sent_before, BATCH).await?
            + store
                .sweep_firings(&keep.stage, due_before, FIRINGS_KEPT, BATCH)
                .await?
            + store
                .sweep_abandoned_firings(&keep.stage, abandoned_before, FIRINGS_KEPT, BATCH)
                .await?
            + store
                .sweep_door_performances(&keep.stage, written_before, keep_last, PERFORMANCES_BATCH)
                .await?;
        gone += n;
        if n == 0 {
            return Ok(gone);
        }
        // Let the store serve others between batches.
        tokio::task::yield_now().await;
    }
}

/// Sweeps `rules` every [`SWEEP_EVERY`] of `clock` until `cancel` fires; a failed sweep is
/// logged and tried at the next one.
pub async fn run(
    store: Arc<dyn Store>,
    rules: Vec<Expiry>,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
) {
    let (store, rules) = (store.as_ref(), rules.as_slice());
    every_sweep(clock.as_ref(), &cancel, "door records", |now| {
        sweep(store, rules, now)
    })
    .await;
}

/// Sweeps the door tables ([`sweep_tables`]) every [`SWEEP_EVERY`] of `clock` until `cancel`
/// fires, keeping performances as `keep` holds at each sweep (a reload changes it); one per
/// stage is enough (its daemon's).
pub async fn run_tables(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
    keep: tokio::sync::watch::Receiver<StageRetention>,
) {
    let store = store.as_ref();
    every_sweep(
        clock.as_ref(),
        &cancel,
        "outbox rows, firings and performances",
        |now| {
            let keep = keep.borrow().clone();
            async move { sweep_tables(store, now, &keep).await }
        },
    )
    .await;
}

/// Calls `sweep` every [`SWEEP_EVERY`] of `clock` until `cancel`; logs what it did or why not.
async fn every_sweep<F, Fut>(clock: &dyn Clock, cancel: &CancellationToken, what: &str, sweep: F)
where
    F: Fn(UnixMillis) -> Fut,
    Fut: Future<Output = Result<u64, StoreError>>,
{
    let every = i64::try_from(SWEEP_EVERY.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = clock.sleep_until(clock.now().saturating_add(every)) => {}
        }
        match sweep(clock.now()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!("expired {n} {what} from the store"),
            Err(e) => tracing::warn!("{what} could not be expired (tried again later): {e}"),
        }
    }
}
