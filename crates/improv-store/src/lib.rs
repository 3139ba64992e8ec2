//! The store: where performances, their events, door firings and outbound messages live, behind
//! one interface ([`Store`]) with two backends — an embedded one on SQLite (one file, one
//! machine, any number of processes) and PostgreSQL (any number of machines).
//!
//! The store is also the coordination point: workers [`Store::claim`] queued performances under a
//! [`Lease`] whose `epoch` fences every write ([`Store::append`] refuses a stale epoch), doors claim
//! each due firing once ([`Store::claim_firing`]), and every outbound message passes through an
//! outbox keyed by (performance, seq) so a retry never sends it twice. The kernel knows nothing of
//! this: a worker turns events into [`Store::append`] calls and rebuilds a performance from
//! [`Store::events`] with the kernel's resume.
//!
//! A store that wraps another (counting calls, delaying or recording some of them) implements
//! [`StoreLayer`]: it names its inner store and overrides only what it changes; every other
//! method forwards, and a blanket impl makes it a [`Store`].

mod bounded;
mod codec;
mod error;
mod layer;
mod postgres;
mod rows;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;
mod url;

pub use error::StoreError;
pub use layer::StoreLayer;
pub use postgres::{PgPool, PgStore};
pub use sqlite::SqliteStore;
pub use url::{DEFAULT_STATEMENT_TIMEOUT, SslMode, StoreUrl};

use async_trait::async_trait;
use improv_kernel::{Budget, Event, Outcome};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// Opens the store `url` names: PostgreSQL (connecting on first use) or the embedded SQLite file
/// (created when absent). The schema is brought up to date on first use; call
/// [`Store::migrate`] to do it now and learn the version.
pub fn open(url: &StoreUrl) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match url {
        StoreUrl::Postgres(url) => {
            let store = PgStore::connect(url)?;
            // connect() read the same parameters: they parse.
            let timeout = url::split_pg_params(url)
                .map_or(DEFAULT_STATEMENT_TIMEOUT, |(_, p)| p.statement_timeout);
            Arc::new(bounded::Bounded::new(Box::new(store), timeout))
        }
        StoreUrl::Sqlite(path) => Arc::new(SqliteStore::open(path)?),
    })
}

/// Milliseconds since the Unix epoch, UTC: the store's one notion of time, so that a simulated
/// clock (tests, the door scheduler) and both backends agree.
pub type UnixMillis = i64;

/// How [`NewPerformance::origin`] begins for a performance a door started (`door:NAME`): what
/// [`Store::sweep_door_performances`] may delete.
pub const DOOR_ORIGIN: &str = "door:";

/// A performance to be performed by whichever worker claims it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NewPerformance {
    /// Its id; a fresh one (`improv_kernel::performance::new_id`) when absent.
    pub id: Option<String>,
    /// The stage file, as the worker will open it (a path every worker can read): where the
    /// stage was when it was queued, opened only when it still holds the stage `stage_name`
    /// names or no name was recorded.
    pub stage: String,
    /// The stage's identity, the `[stage] name` its file gives, which does not change when a
    /// deploy moves its folder: a worker told where its stages are (`improv worker --stages`)
    /// claims only its stages' performances and opens each from its own folder of that name.
    /// `None` when the file gives no name (a folder's name is no identity: `/srv/a/current` and
    /// `/srv/b/current` are both `current`) or it was queued before names were recorded: the
    /// stage is then known by `stage`, its path. Stages sharing a store and a name are one
    /// stage: whoever serves one reaches the other's performances.
    #[serde(default)]
    pub stage_name: Option<String>,
    pub intent: String,
    /// Every actor's model for this run, as `provider/name`; the stage's own when absent.
    pub model: Option<String>,
    /// What started it: `cli`, `api`, `door:NAME`…; shown, never interpreted.
    pub origin: String,
    /// The limits to perform it under in place of the stage's `[edges]` ones (a door's
    /// `[door.edges]` over the stage's); the stage's own when absent.
    #[serde(default)]
    pub budget: Option<Budget>,
}

/// Where a performance is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for a worker (new, given back on drain, or its lease expired).
    Queued,
    /// A worker holds a live lease on it.
    Leased,
    /// It ended; see [`PerformanceRecord::outcome`].
    Finished,
}

/// One performance as the store knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PerformanceRecord {
    pub id: String,
    pub stage: String,
    /// The stage's identity; see [`NewPerformance::stage_name`].
    #[serde(default)]
    pub stage_name: Option<String>,
    pub intent: String,
    pub model: Option<String>,
    pub origin: String,
    /// The limits it is performed under in place of the stage's; see [`NewPerformance::budget`].
    #[serde(default)]
    pub budget: Option<Budget>,
    pub state: State,
    /// How it ended, once [`State::Finished`].
    pub outcome: Option<Outcome>,
    pub reason: String,
    /// The worker holding (or last holding) its lease.
    pub worker: Option<String>,
    /// The current lease epoch; 0 before the first claim. Each claim increments it.
    pub epoch: u64,
    /// The seq of the last event stored; 0 when none.
    pub last_seq: u64,
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

/// Which performances a worker claims ([`Store::claim_among`]), so that workers serving
/// different stages share one store: each claims only what it can open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Serving {
    /// Every performance, each opened from the stage file it was queued with.
    #[default]
    Any,
    /// Only the performances of these stages ([`StageKey::holds`]): by
    /// [`NewPerformance::stage_name`], and those queued without a name from one of their stage
    /// files (a stage without `[stage] name`, or work queued before names were recorded).
    Stages(Vec<StageKey>),
}

/// A worker's right to write one performance's events until `expires_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub performance: String,
    pub worker: String,
    /// Fences writes: bumped by every claim, so a worker that lost its lease (paused,
    /// partitioned) holds a stale epoch and every write it attempts is refused.
    pub epoch: u64,
    pub expires_at: UnixMillis,
}

/// What [`Store::list`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub state: Option<State>,
    /// Most recent first; at most this many (0: the backend's default of 100).
    pub limit: usize,
    /// Only ids that begin with this (compared byte for byte: no pattern characters), so a
    /// person can name a performance by a unique prefix.
    pub id_prefix: Option<String>,
    /// Only performances of this stage ([`StageKey::holds`]), so a server of one stage lists
    /// none of another's, and lists its own after a deploy moved its folder.
    pub stage: Option<StageKey>,
}

/// Which performances are a stage's: those queued with its name ([`NewPerformance::stage_name`]),
/// wherever its folder was then, and those queued without a name from its stage file (`path`,
/// canonical, as [`NewPerformance::stage`] was written). A stage whose file gives no name has
/// `name: None` and is known by its path alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageKey {
    pub name: Option<String>,
    pub path: String,
}

impl StageKey {
    /// The one string that keys this stage's own records (its doors' firings, and what they
    /// keep between firings): `name:NAME` when its file gives a name, otherwise `path:PATH`;
    /// the prefixes keep a name that reads like a path apart from that path. A stage whose file
    /// gains a name starts a new key (its path's records stay under the path).
    pub fn id(&self) -> String {
        match &self.name {
            Some(name) => format!("name:{name}"),
            None => format!("path:{}", self.path),
        }
    }

    /// Whether `record` is a performance of this stage (what [`ListFilter::stage`] selects).
    pub fn holds(&self, record: &PerformanceRecord) -> bool {
        match &record.stage_name {
            Some(name) => self.name.as_ref() == Some(name),
            None => record.stage == self.path,
        }
    }
}

/// A value kept under (scope, key) and its version, which every write of it raises: what
/// [`Store::put_if`] compares, so a read-modify-write loses no one else's change.
#[derive(Clone, Debug, PartialEq)]
pub struct Versioned {
    pub value: serde_json::Value,
    pub version: i64,
}

/// Which values of a scope [`Store::sweep`] deletes: those last written before `before`, and
/// those beyond the `keep` most recently written (oldest first), at most `batch` of them in one
/// call, so a sweep never holds the store for long. `keep` 0 caps nothing; `batch` 0 is all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sweep {
    pub before: UnixMillis,
    pub keep: usize,
    pub batch: usize,
}

/// One due firing of a door: at most one performance is ever started for it. A firing is its
/// stage's ([`StageKey::id`]): the store keys it by (stage, door, due), so stages sharing a
/// store each fire their own doors of one name. A firing recorded before the stage was in the
/// key (SQLite schema 11, PostgreSQL 12) has no stage and stays what it was, its door's under
/// every stage: it blocks its (door, due) for each, each lists it, updates it and sweeps it
/// (each door's newest of them kept like any stage's), so no due time an upgraded deployment
/// handled is handled again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Firing {
    pub door: String,
    /// The time the firing was due (not when it ran): the idempotency key with the stage and
    /// `door`.
    pub due: UnixMillis,
    /// What the firing started, when it started one (a probe that saw no change starts none).
    pub performance: Option<String>,
    /// `fired`, `skipped: no change`, `missed (catch_up = skip)`…: shown by `improv door status`.
    pub note: String,
}

/// The idempotency key of an outbound message: the event that asked for it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OutboxKey {
    pub performance: String,
    pub seq: u64,
}

/// A message on its way out through a door's channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxMessage {
    pub key: OutboxKey,
    /// The stage whose door sends it ([`StageKey::id`]), so stages sharing a store each send
    /// only their own through their door of one name. Empty for a message put before the outbox
    /// had a stage (SQLite schema 12, PostgreSQL 13) or by an improv from before: that one is
    /// sent only by its performance's stage ([`Store::outbox_pending`]).
    pub stage: String,
    /// The door whose channel sends it.
    pub door: String,
    /// The channel's conversation (a chat id, a thread, an address).
    pub conversation: String,
    /// The message, in the channel's terms (text, reply-to…).
    pub body: serde_json::Value,
}

/// An outbox row: the message and, once sent, the platform's id for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub message: OutboxMessage,
    /// The platform's message id, recorded once sent; `None` while pending.
    pub sent_id: Option<String>,
    pub attempts: u32,
    pub created_at: UnixMillis,
}

/// A director note left for a performance's lead: delivered at its next turn boundary by
/// whichever worker performs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub performance: String,
    /// Its number among the performance's notes, from 1, in the order they were sent.
    pub n: u64,
    pub text: String,
    pub created_at: UnixMillis,
}

/// An `ask` decision of a leased performance, put in the store for the director to answer from
/// anywhere (`improv approve`); the worker waits for the answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalAsk {
    pub actor: String,
    pub prop: String,
    /// What the call would do (a command line, a path).
    pub subject: String,
    /// The rule that asked.
    pub rule: String,
}

/// The director's answer to an approval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// Approves this call.
    Once,
    /// Approves whatever the same rule matches for the rest of the performance.
    Performance,
    Deny,
}

/// One approval of a performance, answered or waiting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    pub performance: String,
    /// Its number among the performance's approvals, from 1.
    pub n: u64,
    pub ask: ApprovalAsk,
    /// `None` while waiting.
    pub answer: Option<Answer>,
    /// The director's words to the actor with a denial.
    pub note: Option<String>,
    pub created_at: UnixMillis,
}

/// How many performances are in each state, across every worker and machine: what `/metrics`
/// shows, and what tells an idle worker whether there is work.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub queued: u64,
    /// Leased, counting those whose lease ran out (see `expired`).
    pub leased: u64,
    pub finished: u64,
    /// Leased performances whose lease ran out: claimable, their worker gone or late.
    pub expired: u64,
    /// When the earliest lease still running runs out, if any.
    pub next_expiry: Option<UnixMillis>,
}

impl Counts {
    /// Whether a claim now would find something.
    pub fn claimable(&self) -> bool {
        self.queued + self.expired > 0
    }

    /// Leases held by a live worker (leased and not expired).
    pub fn active_leases(&self) -> u64 {
        self.leased.saturating_sub(self.expired)
    }
}

/// What a watcher of one performance has seen of it: its journal, its approvals, a stop asked
/// for, its end. [`Store::wait_progress`] returns when any of it changes, so one wait serves a
/// stream (events and approvals) and a worker (a stop) alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The seq of the last event stored; 0 when none.
    pub last_seq: u64,
    /// How many approvals were asked (the number of the latest).
    pub asked: u64,
    /// How many of them were answered.
    pub answered: u64,
    /// The director asked it to stop ([`Store::stop`]).
    pub stop: bool,
    pub finished: bool,
}

/// What [`Store::stop`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stopping {
    /// It was queued: it ended `stopped` there and then, and no worker will start it.
    Stopped,
    /// A worker holds it (or held it, its lease running out): the stop is recorded, and the
    /// worker that holds it, or claims it next, ends it `stopped`.
    Asked,
}

/// How often the default [`Store::wait_for_work`] looks at the counts: the embedded store is
/// one local file that no other machine writes, so looking is cheap and nothing notifies.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// How often the default [`Store::wait_stop`] returns: a worker's stop watcher then runs one
/// [`Store::stops_requested`] query for all the performances it holds.
pub const STOP_POLL: Duration = Duration::from_millis(500);

/// The store of record. Every method is one transaction; every write that belongs to a leased
/// performance names its [`Lease`] and fails with [`StoreError::LeaseLost`] when the lease is no
/// longer the current one. Implementations: `SqliteStore` (embedded) and `PgStore` (PostgreSQL);
/// `tests/all/conformance.rs` runs one suite against both.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Where this store is, with any password hidden (for errors, logs and `doctor`).
    fn describe(&self) -> String;

    /// Brings the schema up to date; returns the version now applied. Refuses
    /// ([`StoreError::NewerSchema`]) a database migrated by a newer improv.
    async fn migrate(&self) -> Result<u32, StoreError>;

    /// Queues a performance; returns its id. Queueing the same id twice is an error.
    async fn enqueue(&self, new: &NewPerformance) -> Result<String, StoreError>;

    /// Claims as [`Store::claim_among`] does, whatever the stage.
    async fn claim(
        &self,
        worker: &str,
        ttl: Duration,
    ) -> Result<Option<(Lease, PerformanceRecord)>, StoreError> {
        self.claim_among(worker, ttl, &Serving::Any).await
    }

    /// Atomically claims the oldest queued performance, or one whose lease expired, of the
    /// stages `serving` names, for `worker` for `ttl`; `None` when there is none. Other
    /// claimers skip rows being claimed (PostgreSQL: `FOR UPDATE SKIP LOCKED`). Bumps the
    /// epoch. A performance of a stage not served is left for another worker, untouched.
    async fn claim_among(
        &self,
        worker: &str,
        ttl: Duration,
        serving: &Serving,
    ) -> Result<Option<(Lease, PerformanceRecord)>, StoreError>;

    /// Extends a lease by `ttl` from now; returns it renewed, or [`StoreError::LeaseLost`].
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError>;

    /// Gives a performance back to the queue (a draining worker), keeping its events.
    async fn release(&self, lease: &Lease) -> Result<(), StoreError>;

    /// Marks a performance finished with its outcome; its lease ends.
    async fn finish(&self, lease: &Lease, outcome: Outcome, reason: &str)
    -> Result<(), StoreError>;

    /// One performance; [`StoreError::NotFound`] when there is none with that id.
    async fn performance(&self, id: &str) -> Result<PerformanceRecord, StoreError>;

    /// Performances, most recent first.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<PerformanceRecord>, StoreError>;

    /// Appends events to a leased performance's journal in one transaction. Their `seq` must
    /// continue the journal without gap or repeat ([`StoreError::SeqConflict`] otherwise) and
    /// the lease must be current. Large string values are stored once by content hash, so the
    /// journal grows with what is new. Wakes [`Store::wait_events`] everywhere (NOTIFY).
    async fn append(&self, lease: &Lease, events: &[Event]) -> Result<(), StoreError>;

    /// Events of `id` with `seq > after`, in order, at most `limit` (0: all).
    async fn events(&self, id: &str, after: u64, limit: usize) -> Result<Vec<Event>, StoreError>;

    /// Waits until `id` has an event after `after` or it finished, or `timeout` passed; returns
    /// whether there is something new to read. Woken by appends from any process or machine.
    async fn wait_events(
        &self,
        id: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<bool, StoreError>;

    /// Records `stage`'s door's firing for `(door, due)` if none was recorded (by the stage, or
    /// before firings had a stage: see [`Firing`]): true for the one caller that recorded it,
    /// false for every other (a restart, a second daemon, another machine). Another stage's
    /// firing of a door of the same name is not in the way.
    async fn claim_firing(&self, stage: &StageKey, firing: &Firing) -> Result<bool, StoreError>;

    /// Updates the note and performance of `stage`'s claimed firing (what it turned out to
    /// start).
    async fn update_firing(&self, stage: &StageKey, firing: &Firing) -> Result<(), StoreError>;

    /// `stage`'s door's latest firings (with those recorded before firings had a stage), most
    /// recent first; never another stage's.
    async fn firings(
        &self,
        stage: &StageKey,
        door: &str,
        limit: usize,
    ) -> Result<Vec<Firing>, StoreError>;

    /// Puts a message in the outbox unless one with its key is there; returns the entry as
    /// stored (the first one, when the key was already there).
    async fn outbox_put(&self, message: &OutboxMessage) -> Result<OutboxEntry, StoreError>;

    /// `stage`'s door's messages not yet recorded as sent, oldest first; counts an attempt for
    /// each returned. Never another stage's: a message without a stage (put before the outbox
    /// had one) is listed for the door of its performance's stage ([`StageKey::holds`]) alone,
    /// and for no stage once that performance is gone.
    async fn outbox_pending(
        &self,
        stage: &StageKey,
        door: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError>;

    /// Records the platform's id of a sent message; a second call for the same key keeps the
    /// first id.
    async fn outbox_sent(&self, key: &OutboxKey, sent_id: &str) -> Result<(), StoreError>;

    /// How many performances are in each state (one query, every worker's and machine's).
    async fn counts(&self) -> Result<Counts, StoreError>;

    /// Waits until there may be work to claim: a performance was queued or given back anywhere,
    /// a lease ran out, or `timeout` passed (the caller's fallback poll). Returns at once when
    /// something is claimable. PostgreSQL is woken by NOTIFY and by the earliest lease's expiry;
    /// this default looks at [`Store::counts`] every 250 ms.
    async fn wait_for_work(&self, timeout: Duration) -> Result<(), StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.counts().await?.claimable() {
                return Ok(());
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(());
            }
            tokio::time::sleep((deadline - now).min(LOOK_EVERY)).await;
        }
    }

    /// A small JSON value under (scope, key): door probe results, chat threads, pairing codes.
    async fn get(&self, scope: &str, key: &str) -> Result<Option<serde_json::Value>, StoreError>;

    /// Sets (scope, key); with `only_if_absent`, sets nothing and returns false when a value
    /// is there.
    async fn put(
        &self,
        scope: &str,
        key: &str,
        value: &serde_json::Value,
        only_if_absent: bool,
    ) -> Result<bool, StoreError>;

    /// (scope, key)'s value and its version, for [`Store::put_if`].
    async fn get_versioned(&self, scope: &str, key: &str) -> Result<Option<Versioned>, StoreError>;

    /// Compare-and-set: sets (scope, key) only when its version is still `expected` (`None`:
    /// only when absent, and then at version 1); false, writing nothing, when another writer
    /// changed it since.
    async fn put_if(
        &self,
        scope: &str,
        key: &str,
        expected: Option<i64>,
        value: &serde_json::Value,
    ) -> Result<bool, StoreError>;

    /// Deletes the values of `scope` that [`Sweep`] names (expired by age, or over the count);
    /// returns how many went. Periodic, never per message: call it again while it returns
    /// `batch`.
    async fn sweep(&self, scope: &str, sweep: &Sweep) -> Result<u64, StoreError>;

    /// Deletes outbox rows recorded as sent and created before `before`, at most `batch` (0:
    /// all); a row not recorded as sent stays whatever its age, since exactly-once rests on it.
    /// Returns how many went; periodic: call it again while it returns `batch`.
    async fn sweep_outbox(&self, before: UnixMillis, batch: usize) -> Result<u64, StoreError>;

    /// Deletes `stage`'s firings (and those recorded before firings had a stage) due before
    /// `before` except each door's `keep` newest (never fewer than one: a timed door resumes
    /// after its newest), at most `batch` (0: all); another stage's are never deleted. Returns
    /// how many went; periodic: call it again while it returns `batch`.
    async fn sweep_firings(
        &self,
        stage: &StageKey,
        before: UnixMillis,
        keep: usize,
        batch: usize,
    ) -> Result<u64, StoreError>;

    /// Deletes the firings of every stage but `stage` (and but those recorded before firings
    /// had a stage) due before `before`, except each such stage's door's `keep` newest (never
    /// fewer than one), at most `batch` (0: all): the rows of a key no daemon sweeps any more (a
    /// stage renamed, moved while unnamed, or removed). `before` is far older than any stage's
    /// own sweep keeps, so a live stage's rows it reaches are only its doors' newest, which stay.
    /// Returns how many went; periodic: call it again while it returns `batch`.
    async fn sweep_abandoned_firings(
        &self,
        stage: &StageKey,
        before: UnixMillis,
        keep: usize,
        batch: usize,
    ) -> Result<u64, StoreError>;

    /// Deletes finished performances of `stage` ([`StageKey::holds`]) that a door started
    /// ([`DOOR_ORIGIN`]) and last written before `before`, with their events, notes and
    /// approvals and the blobs no performance left refers to, except each of the stage's doors'
    /// `keep` newest performances (whatever their state); at most `batch` performances (0: all).
    /// Another stage's performances in the same store are never deleted: each stage keeps its
    /// own as its `[doors]` says. A queued or leased performance, and one a person started
    /// (`cli`, `api`), is never deleted. Returns how many performances went; periodic: call it
    /// again while it returns `batch`.
    async fn sweep_door_performances(
        &self,
        stage: &StageKey,
        before: UnixMillis,
        keep: usize,
        batch: usize,
    ) -> Result<u64, StoreError>;

    /// Leaves a director note for a performance that has not finished (queued or leased);
    /// returns it numbered. [`StoreError::Finished`] when it ended: no actor would read it.
    /// Wakes [`Store::wait_notes`] everywhere (NOTIFY).
    async fn send_note(&self, performance: &str, text: &str) -> Result<Note, StoreError>;

    /// The notes of `performance` numbered after `after`, oldest first.
    async fn notes(&self, performance: &str, after: u64) -> Result<Vec<Note>, StoreError>;

    /// Waits until `performance` has a note after `after` or it finished, or `timeout` passed;
    /// returns whether there is something new. Woken by notes sent from any process or machine.
    async fn wait_notes(
        &self,
        performance: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<bool, StoreError>;

    /// Puts an `ask` of the leased performance in the store, waiting; returns its number.
    /// Fenced as [`Store::append`] is: [`StoreError::LeaseLost`] when `lease` is no longer the
    /// current one (another worker claimed the performance, or it ended), so only the holder
    /// asks. A claim denies the asks its predecessors left unanswered, so an answer can reach
    /// only the holder that asked.
    async fn ask_approval(&self, lease: &Lease, ask: &ApprovalAsk) -> Result<u64, StoreError>;

    /// Answers approval `n` of `performance`: true for the one answer that counts, false when
    /// it was answered already; `NotFound` when there is no such approval. Wakes
    /// [`Store::wait_answer`] everywhere.
    async fn answer_approval(
        &self,
        performance: &str,
        n: u64,
        answer: Answer,
        note: Option<&str>,
    ) -> Result<bool, StoreError>;

    /// The approvals of `performance`, oldest first.
    async fn approvals(&self, performance: &str) -> Result<Vec<ApprovalRecord>, StoreError>;

    /// Waits until approval `n` of `performance` is answered or it finished, or `timeout`
    /// passed; returns whether it is answered or finished.
    async fn wait_answer(
        &self,
        performance: &str,
        n: u64,
        timeout: Duration,
    ) -> Result<bool, StoreError>;

    /// Asks performance `performance` to stop, from any machine: a queued one ends `stopped`
    /// at once; a leased one is marked, and its worker is woken (NOTIFY) to end it. Its end is
    /// the worker's to record. [`StoreError::Finished`] when it ended already.
    async fn stop(&self, performance: &str) -> Result<Stopping, StoreError>;

    /// Where `performance` is now: [`Progress`].
    async fn progress(&self, performance: &str) -> Result<Progress, StoreError>;

    /// Waits until `performance`'s [`Progress`] differs from `seen`, or `timeout` passed;
    /// returns it as it is then. PostgreSQL is woken by the NOTIFY of appends, approvals,
    /// answers, stops and ends from any machine; this default looks every 250 ms.
    async fn wait_progress(
        &self,
        performance: &str,
        seen: &Progress,
        timeout: Duration,
    ) -> Result<Progress, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let now = self.progress(performance).await?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if now != *seen || left.is_zero() {
                return Ok(now);
            }
            tokio::time::sleep(left.min(LOOK_EVERY)).await;
        }
    }

    /// The performances `worker` holds (leased to it) whose stop was asked ([`Store::stop`]):
    /// what one stop watcher per worker process looks for, instead of one wait per performance.
    async fn stops_requested(&self, worker: &str) -> Result<Vec<String>, StoreError>;

    /// Waits until a stop may have been asked of some performance since the wait that returned
    /// `seen` (0 at first), or `timeout` passed; returns what to pass next. Look
    /// ([`Store::stops_requested`]) after it returns: a stop asked meanwhile makes the next
    /// wait return at once. PostgreSQL is woken by the NOTIFY of a stop only (its own
    /// channel: appends do not wake it); this default waits [`STOP_POLL`] (or `timeout` when
    /// shorter), as SQLite, which another process writes to, has nothing to wake it.
    async fn wait_stop(&self, seen: u64, timeout: Duration) -> Result<u64, StoreError> {
        tokio::time::sleep(timeout.min(STOP_POLL)).await;
        Ok(seen.wrapping_add(1))
    }
}
