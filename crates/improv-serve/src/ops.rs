//! Operations: `GET /healthz` (the process answers), `GET /readyz` (it can do its job: the
//! stage file loads and, with a store, the store answers a cheap query) and `GET /metrics`
//! (Prometheus text, through `prometheus-client`), for `improv serve` and, on a listener of
//! their own, `improv worker --metrics ADDR`.
//!
//! The probes carry no token: a load balancer's or Kubernetes' health check sends none, and
//! they say only `ok` or which check failed, never a path, a URL or an error text (those go to
//! the log). `/metrics` on `improv serve` needs the bearer token like the API (Prometheus sends
//! it with `authorization.credentials_file`); a worker has no token, so its listener serves
//! counts only: no performance id, intent, stage or store appears in a label.
//!
//! With a store, each scrape also asks it how many performances are queued, leased and finished
//! and how many leases are live or expired, across every worker and machine
//! (`improv_store_performances`, `improv_store_leases`): one query, bounded like `/readyz`'s.
//! `/readyz` loads the stage file again only when it changed (its modification time or size),
//! not at every probe.
//!
//! The counts come from the events the process already sees: the server's performances through
//! an [`Observer`] per performance ([`Metrics::observer`]), a worker's through [`MeteredStore`],
//! which wraps its store and counts what it claims, appends, renews, releases and finishes.

use crate::listen::{self, Limits};
use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use improv_kernel::{Event, EventKind, ObserveError, Observer, Outcome};
use improv_store::{
    Counts, Lease, ListFilter, PerformanceRecord, Serving, Store, StoreError, StoreLayer,
};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use std::time::SystemTime;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How long `/readyz` waits for the store before it calls it unready.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The Prometheus text format's content type.
const EXPOSITION: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum PerformanceState {
    Running,
}

impl PerformanceState {
    fn as_str(self) -> &'static str {
        match self {
            PerformanceState::Running => "running",
        }
    }
}

/// A performance's state in the store (every worker's), as a label.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum StoreState {
    Queued,
    Leased,
    Finished,
}

impl StoreState {
    fn as_str(self) -> &'static str {
        match self {
            StoreState::Queued => "queued",
            StoreState::Leased => "leased",
            StoreState::Finished => "finished",
        }
    }
}

/// A lease in the store: held by a live worker, or run out (its performance claimable).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum LeaseState {
    Active,
    Expired,
}

impl LeaseState {
    fn as_str(self) -> &'static str {
        match self {
            LeaseState::Active => "active",
            LeaseState::Expired => "expired",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StoreStateLabel {
    state: StoreState,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LeaseStateLabel {
    state: LeaseState,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: PerformanceState,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum TokenKind {
    Input,
    Output,
    CachedInput,
}

impl TokenKind {
    fn as_str(self) -> &'static str {
        match self {
            TokenKind::Input => "input",
            TokenKind::Output => "output",
            TokenKind::CachedInput => "cached_input",
        }
    }
}

/// Label values in snake_case, as Prometheus names go (the derive writes the variant's name).
macro_rules! snake_label {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    )*};
}
snake_label!(PerformanceState, TokenKind, StoreState, LeaseState);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabel {
    kind: TokenKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClaimLabel {
    /// Whether the claimed performance had events already (another worker began it).
    resumed: bool,
}

/// One process's metrics, in one registry.
pub struct Metrics {
    registry: Registry,
    performances: Family<StateLabel, Gauge>,
    finished: Family<OutcomeLabel, Counter>,
    leases: Gauge,
    leases_lost: Counter,
    claims: Family<ClaimLabel, Counter>,
    turn_seconds: Histogram,
    tokens: Family<TokenLabel, Counter>,
    cost_usd: Counter<f64, AtomicU64>,
    write_lag: Histogram,
    store_performances: Family<StoreStateLabel, Gauge>,
    store_leases: Family<LeaseStateLabel, Gauge>,
    /// The leases a worker holds, by (performance, epoch).
    held: Mutex<HashSet<(String, u64)>>,
    /// When each leased performance's current turn began.
    turns: Mutex<HashMap<String, TurnClock>>,
}

/// Seconds, from a millisecond to ten minutes: a scripted turn to a slow model's long one.
fn turn_buckets() -> impl Iterator<Item = f64> {
    [
        0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    ]
    .into_iter()
}

/// Seconds from an event's time to its being stored.
fn lag_buckets() -> impl Iterator<Item = f64> {
    [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0].into_iter()
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("improv");
        let m = Metrics {
            registry: Registry::default(),
            performances: Family::default(),
            finished: Family::default(),
            leases: Gauge::default(),
            leases_lost: Counter::default(),
            claims: Family::default(),
            turn_seconds: Histogram::new(turn_buckets()),
            tokens: Family::default(),
            cost_usd: Counter::default(),
            write_lag: Histogram::new(lag_buckets()),
            store_performances: Family::default(),
            store_leases: Family::default(),
            held: Mutex::default(),
            turns: Mutex::default(),
        };
        let r = &mut registry;
        r.register(
            "performances",
            "Performances in this process by state",
            m.performances.clone(),
        );
        r.register(
            "performances_finished",
            "Performances that ended here, by outcome",
            m.finished.clone(),
        );
        r.register(
            "leases_active",
            "Leases this worker holds",
            m.leases.clone(),
        );
        r.register(
            "lease_expiries",
            "Leases this worker lost before it finished: expired unrenewed and claimed by another",
            m.leases_lost.clone(),
        );
        r.register(
            "lease_claims",
            "Performances claimed; resumed: another worker had begun it",
            m.claims.clone(),
        );
        r.register(
            "turn_duration_seconds",
            "From a turn's start to the next turn or the end",
            m.turn_seconds.clone(),
        );
        r.register("model_tokens", "Model tokens by kind", m.tokens.clone());
        r.register("model_cost_usd", "Model cost in USD", m.cost_usd.clone());
        r.register(
            "event_write_lag_seconds",
            "From an event's time to its being written",
            m.write_lag.clone(),
        );
        r.register(
            "store_performances",
            "Performances in the store by state, across every worker and machine",
            m.store_performances.clone(),
        );
        r.register(
            "store_leases",
            "Leases in the store: active (a live worker holds it) or expired (claimable)",
            m.store_leases.clone(),
        );
        Metrics { registry, ..m }
    }
}

/// When the current turn began; `None` between performances.
type TurnClock = Option<OffsetDateTime>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each guarded map is changed by one insert or remove: a panic cannot leave it half-done.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn at(event: &Event) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(&event.at, &Rfc3339).ok()
}

fn seconds_since(then: OffsetDateTime, now: OffsetDateTime) -> f64 {
    (now - then).as_seconds_f64().max(0.0)
}

impl Metrics {
    /// The exposition of every metric, in the text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// Sets how many performances run now (the server's, at each scrape).
    pub fn set_running(&self, n: usize) {
        self.performances
            .get_or_create(&StateLabel {
                state: PerformanceState::Running,
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Sets the store's counts (every worker's), at each scrape.
    pub fn set_store_counts(&self, counts: &Counts) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        for (state, n) in [
            (StoreState::Queued, counts.queued),
            (StoreState::Leased, counts.leased),
            (StoreState::Finished, counts.finished),
        ] {
            self.store_performances
                .get_or_create(&StoreStateLabel { state })
                .set(gauge(n));
        }
        for (state, n) in [
            (LeaseState::Active, counts.active_leases()),
            (LeaseState::Expired, counts.expired),
        ] {
            self.store_leases
                .get_or_create(&LeaseStateLabel { state })
                .set(gauge(n));
        }
    }

    /// An observer for one performance: it counts the events the performance's log wrote.
    pub fn observer(self: &Arc<Self>) -> Arc<dyn Observer> {
        Arc::new(Meter {
            metrics: self.clone(),
            turn: Mutex::new(None),
        })
    }

    /// Counts one event of a performance whose current turn began at `turn`.
    fn count(&self, event: &Event, turn: &mut TurnClock) {
        match &event.kind {
            EventKind::TurnStarted { .. } => {
                let now = at(event);
                if let (Some(began), Some(now)) = (*turn, now) {
                    self.turn_seconds.observe(seconds_since(began, now));
                }
                *turn = now;
            }
            EventKind::PerformanceFinished { outcome, .. } => {
                if let (Some(began), Some(now)) = (turn.take(), at(event)) {
                    self.turn_seconds.observe(seconds_since(began, now));
                }
                self.finished_with(*outcome);
            }
            EventKind::Usage {
                input_tokens,
                output_tokens,
                cached_input_tokens,
                cost_usd,
                ..
            } => {
                for (kind, n) in [
                    (TokenKind::Input, input_tokens),
                    (TokenKind::Output, output_tokens),
                    (TokenKind::CachedInput, cached_input_tokens),
                ] {
                    self.tokens.get_or_create(&TokenLabel { kind }).inc_by(*n);
                }
                if cost_usd.is_finite() && *cost_usd > 0.0 {
                    self.cost_usd.inc_by(*cost_usd);
                }
            }
            _ => {}
        }
    }

    fn finished_with(&self, outcome: Outcome) {
        self.finished
            .get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Records that `event` is written now.
    fn written(&self, event: &Event) {
        if let Some(then) = at(event) {
            self.write_lag
                .observe(seconds_since(then, OffsetDateTime::now_utc()));
        }
    }

    fn claimed(&self, lease: &Lease, record: &PerformanceRecord) {
        self.claims
            .get_or_create(&ClaimLabel {
                resumed: record.last_seq > 0,
            })
            .inc();
        let mut held = lock(&self.held);
        held.insert((lease.performance.clone(), lease.epoch));
        self.set_held(held.len());
    }

    /// The lease ended: finished, released, or (`lost`) taken by another worker.
    fn let_go(&self, lease: &Lease, lost: bool) {
        let mut held = lock(&self.held);
        if held.remove(&(lease.performance.clone(), lease.epoch)) && lost {
            self.leases_lost.inc();
        }
        self.set_held(held.len());
        drop(held);
        lock(&self.turns).remove(&lease.performance);
    }

    fn set_held(&self, n: usize) {
        self.leases.set(i64::try_from(n).unwrap_or(i64::MAX));
        self.set_running(n);
    }

    /// Counts events a worker stored for a leased performance.
    fn appended(&self, performance: &str, events: &[Event]) {
        let mut turns = lock(&self.turns);
        let turn = turns.entry(performance.to_string()).or_default();
        for event in events {
            self.written(event);
            self.count(event, turn);
        }
    }
}

/// Counts one performance's events for [`Metrics`].
struct Meter {
    metrics: Arc<Metrics>,
    turn: Mutex<TurnClock>,
}

impl Observer for Meter {
    fn observe(&self, event: &Event) -> Result<(), ObserveError> {
        // Observers see each event after the log wrote it.
        self.metrics.written(event);
        self.metrics.count(event, &mut lock(&self.turn));
        Ok(())
    }
}

/// Which check `/readyz` found failing; what it says is all a probe learns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotReady {
    /// The stage file does not load now.
    Stage,
    /// The store does not answer.
    Store,
}

impl NotReady {
    fn code(self) -> &'static str {
        match self {
            NotReady::Stage => "stage_unloadable",
            NotReady::Store => "store_unavailable",
        }
    }

    fn message(self) -> &'static str {
        match self {
            NotReady::Stage => "the stage file does not load; the server's log says why",
            NotReady::Store => "the store does not answer; the server's log says why",
        }
    }
}

/// What `/readyz` checks.
#[derive(Clone, Default)]
pub struct Readiness {
    /// The stage file, loaded again when it changed since the last check.
    pub stage: Option<PathBuf>,
    /// The store, asked for one performance at each check.
    pub store: Option<Arc<dyn Store>>,
    /// What the last load of the stage file found, and how many loads there were.
    pub seen: Arc<StageSeen>,
}

/// The stage file as `/readyz` last loaded it: a probe every few seconds must not parse it
/// (and every file it names) each time, so it is loaded again only when its modification
/// time or size changed.
#[derive(Default)]
pub struct StageSeen {
    last: Mutex<Option<(FileStamp, bool)>>,
    loads: AtomicU64,
}

/// What tells that a file changed without reading it.
type FileStamp = (SystemTime, u64);

impl StageSeen {
    /// How many times the stage file was loaded.
    pub fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }

    /// Whether the stage file at `path` loads, from the last load when it did not change.
    async fn loads_now(&self, path: &std::path::Path) -> Result<(), String> {
        let stamp = std::fs::metadata(path)
            .and_then(|m| Ok((m.modified()?, m.len())))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some((seen, ok)) = *lock(&self.last)
            && seen == stamp
        {
            return if ok {
                Ok(())
            } else {
                Err("unchanged since it failed to load".into())
            };
        }
        let path = path.to_path_buf();
        let loaded = tokio::task::spawn_blocking(move || improv_stage::Stage::load(&path))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map(drop).map_err(|e| e.to_string()));
        self.loads.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last) = Some((stamp, loaded.is_ok()));
        loaded
    }
}

impl Readiness {
    /// The first check that fails, or `Ok`. The details go to the log.
    pub async fn check(&self) -> Result<(), NotReady> {
        if let Some(path) = &self.stage
            && let Err(e) = self.seen.loads_now(path).await
        {
            tracing::warn!("not ready: {e}");
            return Err(NotReady::Stage);
        }
        if let Some(store) = &self.store {
            let one = ListFilter {
                limit: 1,
                ..ListFilter::default()
            };
            let asked = store.list(&one);
            match tokio::time::timeout(STORE_PROBE_TIMEOUT, asked).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!("not ready: {e}");
                    return Err(NotReady::Store);
                }
                Err(_) => {
                    tracing::warn!(
                        "not ready: the store {} did not answer within {STORE_PROBE_TIMEOUT:?}",
                        store.describe()
                    );
                    return Err(NotReady::Store);
                }
            }
        }
        Ok(())
    }
}

/// What the operations routes serve.
pub struct Ops {
    pub metrics: Arc<Metrics>,
    pub readiness: Readiness,
    /// How many performances run now, asked at each scrape (the server's); `None` leaves
    /// the count to [`MeteredStore`] (a worker's leases).
    pub running: Option<Box<dyn Fn() -> usize + Send + Sync>>,
}

/// `/healthz` and `/readyz`, which need no token.
pub fn probes(ops: Arc<Ops>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(ops)
}

/// `/metrics`.
pub fn metrics(ops: Arc<Ops>) -> Router {
    Router::new().route("/metrics", get(scrape)).with_state(ops)
}

async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    match ops.readiness.check().await {
        Ok(()) => axum::Json(json!({"status": "ok"})).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                json!({"status": "unavailable", "reason": why.code(), "message": why.message()}),
            ),
        )
            .into_response(),
    }
}

async fn scrape(State(ops): State<Arc<Ops>>) -> Response {
    if let Some(running) = &ops.running {
        ops.metrics.set_running(running());
    }
    if let Some(store) = &ops.readiness.store {
        // An unanswered store leaves the last counts; `/readyz` says it is unavailable.
        match tokio::time::timeout(STORE_PROBE_TIMEOUT, store.counts()).await {
            Ok(Ok(counts)) => ops.metrics.set_store_counts(&counts),
            Ok(Err(e)) => tracing::warn!("metrics: cannot count the store: {e}"),
            Err(_) => tracing::warn!("metrics: the store {} did not answer", store.describe()),
        }
    }
    ([(CONTENT_TYPE, EXPOSITION)], ops.metrics.encode()).into_response()
}

/// A worker's operations listener: `/healthz`, `/readyz` and `/metrics`, no token.
pub struct OpsServer {
    listener: tokio::net::TcpListener,
    router: Router,
}

impl OpsServer {
    /// Binds `addr` (port 0: any free port).
    pub async fn bind(addr: SocketAddr, ops: Arc<Ops>) -> std::io::Result<OpsServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let router = probes(ops.clone()).merge(metrics(ops));
        Ok(OpsServer { listener, router })
    }

    pub fn addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` completes, with the server's limits on connections.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let limits = Limits {
            header_timeout: crate::HEADER_TIMEOUT,
            idle_timeout: crate::IDLE_TIMEOUT,
            max_connections: 16,
        };
        listen::accept_until(self.listener, self.router, limits, shutdown)
            .await
            .close(Duration::from_millis(200))
            .await;
    }
}

/// A store that counts, for [`Metrics`], what a worker does with it; every call is the inner
/// store's. A [`StoreLayer`]: only the lease's life (claim, renew, release, finish, append) is
/// counted, every other method forwards.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> MeteredStore {
        MeteredStore { inner, metrics }
    }

    fn lost<T>(&self, lease: &Lease, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::LeaseLost { .. }) = &result {
            self.metrics.let_go(lease, true);
        }
        result
    }
}

#[async_trait]
impl StoreLayer for MeteredStore {
    fn inner(&self) -> &dyn Store {
        self.inner.as_ref()
    }

    async fn claim_among(
        &self,
        worker: &str,
        ttl: Duration,
        serving: &Serving,
    ) -> Result<Option<(Lease, PerformanceRecord)>, StoreError> {
        let claimed = self.inner.claim_among(worker, ttl, serving).await?;
        if let Some((lease, record)) = &claimed {
            self.metrics.claimed(lease, record);
        }
        Ok(claimed)
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        let renewed = self.inner.renew(lease, ttl).await;
        self.lost(lease, renewed)
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let released = self.inner.release(lease).await;
        if released.is_ok() {
            self.metrics.let_go(lease, false);
        }
        self.lost(lease, released)
    }

    async fn finish(
        &self,
        lease: &Lease,
        outcome: Outcome,
        reason: &str,
    ) -> Result<(), StoreError> {
        let finished = self.inner.finish(lease, outcome, reason).await;
        if finished.is_ok() {
            self.metrics.let_go(lease, false);
        }
        self.lost(lease, finished)
    }

    async fn append(&self, lease: &Lease, events: &[Event]) -> Result<(), StoreError> {
        let appended = self.inner.append(lease, events).await;
        if appended.is_ok() {
            self.metrics.appended(&lease.performance, events);
        }
        self.lost(lease, appended)
    }
}
