//! The PostgreSQL store: any number of workers on any number of machines share one database.
//! Postgres does the coordinating: claims take the oldest claimable row with
//! `FOR UPDATE SKIP LOCKED`, every fenced write locks its performance's row and checks the
//! lease's epoch in the same transaction as the write, and appends `NOTIFY` a channel that a
//! dedicated listening connection (reconnected when it drops) turns into wake-ups for
//! [`Store::wait_events`].
//!
//! Connections come from a deadpool pool, which drops connections that closed (a database
//! restart) so the next call after the server is back gets a fresh one. The schema is brought up
//! to date on first use (versioned in `schema_migrations`, under an advisory lock so two
//! processes starting together do not race); a newer schema is refused.
//!
//! Every error names the store by its redacted URL, and the password is scrubbed from the
//! driver's messages, so it never reaches an error, a log or an event.

mod listener;
mod schema;
#[cfg(all(test, feature = "testing"))]
mod tests;
mod tls;

use crate::codec::{self, Encoded};
use crate::rows::{
    ASKER_LOST_LEASE, Awaited, Holder, STOPPED_QUEUED, STOPPED_UNHELD, UNSTAGED, answer_name,
    budget_text, check_seqs, corrupt, expiry, fence, now_millis, parse_answer, parse_budget,
    parse_outcome, parse_state, signed, sql_limit, state_name, unsigned,
};
use crate::url::split_pg_params;
use crate::{
    Answer, ApprovalAsk, ApprovalRecord, Counts, Firing, Lease, ListFilter, NewPerformance, Note,
    OutboxEntry, OutboxKey, OutboxMessage, PerformanceRecord, Progress, Serving, StageKey, State,
    Stopping, Store, StoreError, StoreUrl, Sweep, UnixMillis, Versioned,
};
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use improv_kernel::{Event, Outcome};
use listener::Listener;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres_rustls::MakeRustlsConnect;

/// How long opening one connection may take before the database counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections per store instance (one process): claims, appends and readers share them.
const POOL_SIZE: usize = 16;

/// The channel appends and finishes notify, with the performance id as payload.
pub(crate) const CHANNEL: &str = "improv_events";

/// What a claim does first: a claimable performance whose stop was asked ends, stopped,
/// instead of being opened again, and its waiters hear of it in the same statement. It reads
/// the index `performances_stopping` (only those whose stop was asked), not every unfinished
/// one. Parameters: now, the reason, [`CHANNEL`].
const END_STOPPED: &str = "WITH s AS (UPDATE performances p SET state = 'finished', \
     outcome = 'stopped', reason = $2, lease_expires = 0, updated_at = $1 \
     FROM (SELECT id FROM performances WHERE stop_requested AND state <> 'finished' \
           AND (state = 'queued' OR (state = 'leased' AND lease_expires <= $1)) \
           FOR UPDATE SKIP LOCKED) c \
     WHERE p.id = c.id RETURNING p.id) \
     SELECT pg_notify($3, s.id) FROM s";

/// The channel enqueues and releases notify: a performance may be claimed (no payload).
pub(crate) const QUEUE: &str = "improv_queue";

/// The channel stops notify (no payload): only the workers' stop watchers listen for it.
pub(crate) const STOPS: &str = "improv_stops";

/// The columns of a [`PerformanceRecord`], in the order [`record`] reads them.
const RECORD: &str = "p.id, p.stage, p.intent, p.model, p.origin, p.state, p.outcome, p.reason, \
                      p.worker, p.epoch, p.last_seq, p.created_at, p.updated_at, \
                      p.budget, p.stage_name";

/// The columns of an [`OutboxEntry`], in the order [`outbox_entry`] reads them.
const OUTBOX: &str = "o.performance, o.seq, o.door, o.conversation, o.body, o.sent_id, \
                      o.attempts, o.created_at, o.stage";

/// What turns the driver's errors into [`StoreError`]s: the store's name and the password to
/// scrub from messages.
#[derive(Clone)]
pub(crate) struct Namer {
    name: String,
    password: Option<String>,
}

impl Namer {
    fn message(&self, error: &dyn std::error::Error) -> String {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        match &self.password {
            Some(password) if !password.is_empty() => message.replace(password.as_str(), "***"),
            _ => message,
        }
    }

    /// Maps a driver error: the server unreachable, shutting down or out of connections is
    /// transient, and so is a transaction it rolled back for a deadlock or a serialization
    /// failure; a refused login or an unknown database is configuration; the rest as is.
    pub(crate) fn error(&self, error: &tokio_postgres::Error) -> StoreError {
        let store = self.name.clone();
        let message = self.message(error);
        if let Some(db) = error.as_db_error() {
            // The server rolled the transaction back whole (not 40003: whether it committed
            // is unknown).
            if [
                SqlState::T_R_SERIALIZATION_FAILURE,
                SqlState::T_R_DEADLOCK_DETECTED,
            ]
            .contains(db.code())
            {
                return StoreError::Conflict { store, message };
            }
            let class = db.code().code().get(..2).unwrap_or("");
            return match class {
                // connection exception, insufficient resources, operator intervention
                "08" | "53" | "57" => StoreError::Unavailable { store, message },
                // invalid authorization, invalid catalog (no such database)
                "28" | "3D" => StoreError::Config { store, message },
                _ => StoreError::Backend { store, message },
            };
        }
        // A certificate that does not verify, or a server without TLS under `require`: the
        // settings must change, retrying will not help.
        if message.contains("invalid peer certificate") || message.contains("does not support TLS")
        {
            return StoreError::Config {
                store,
                message: format!("{message}; check sslmode and sslrootcert in the URL"),
            };
        }
        let io = std::error::Error::source(error).is_some_and(|s| s.is::<std::io::Error>());
        if error.is_closed() || io || message.starts_with("timeout") {
            StoreError::Unavailable { store, message }
        } else if message.starts_with("authentication error")
            || message.starts_with("invalid configuration")
        {
            StoreError::Config { store, message }
        } else {
            StoreError::Backend { store, message }
        }
    }

    fn pool_error(&self, error: &PoolError) -> StoreError {
        match error {
            PoolError::Backend(e) => self.error(e),
            PoolError::Timeout(_) => StoreError::Unavailable {
                store: self.name.clone(),
                message: "timed out waiting for a connection".into(),
            },
            other => StoreError::Backend {
                store: self.name.clone(),
                message: self.message(other),
            },
        }
    }
}

/// The server settings of every session: the caller's `options`, then, unless they set them:
/// - `idle_in_transaction_session_timeout`: a worker paused (SIGSTOP, a long GC, a partition)
///   inside a transaction would hold its row lock, and claims skip locked rows; the server ends
///   such a session after a few seconds, well inside a lease, so its performance can be taken
///   over;
/// - `statement_timeout`: a statement the server cannot finish (a lock held elsewhere, an
///   overloaded server) is cancelled, so the call fails `Unavailable` and is retried instead
///   of blocking its caller.
fn session_options(given: &str, statement_timeout: Duration) -> String {
    let statement = statement_timeout.as_millis().to_string();
    let mut options = given.to_string();
    for (key, value) in [
        ("idle_in_transaction_session_timeout", "5000"),
        ("statement_timeout", statement.as_str()),
    ] {
        if !options.contains(key) {
            options.push_str(&format!(" -c {key}={value}"));
        }
    }
    options.trim_start().to_string()
}

/// Reads `url` (improv's own parameters, TLS, the session's timeouts) and builds the pool of
/// connections to it: the one place a PostgreSQL connection is set up, for the store and for
/// [`PgPool`]'s users alike.
fn setup(
    url: &str,
) -> Result<(Namer, tokio_postgres::Config, MakeRustlsConnect, Pool), StoreError> {
    let name = StoreUrl::Postgres(url.to_string()).redacted();
    let config_error = |message: String| StoreError::Config {
        store: name.clone(),
        message,
    };
    let (url, params) = split_pg_params(url).map_err(config_error)?;
    let mut config: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
        config_error(format!("{e}; use postgres://USER@HOST/DB"))
    })?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let (tls, ssl_mode) = tls::connector(&params).map_err(config_error)?;
    tls::warn_if_unprotected(&params, config.get_hosts(), &name);
    config.ssl_mode(ssl_mode);
    config.options(session_options(
        config.get_options().unwrap_or(""),
        params.statement_timeout,
    ));
    let password = config
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let namer = Namer { name, password };
    let manager = Manager::from_config(
        config.clone(),
        tls.clone(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(POOL_SIZE)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(CONNECT_TIMEOUT * 2))
        .wait_timeout(Some(Duration::from_secs(30)))
        .build()
        .map_err(|e| StoreError::Config {
            store: namer.name.clone(),
            message: e.to_string(),
        })?;
    Ok((namer, config, tls, pool))
}

/// A pool of connections to the PostgreSQL database a `--store` URL names, set up exactly as the
/// store's own (URL parameters, TLS, statement timeouts), for the other data improv keeps in
/// that database (memory, the ledger's settled tables). Errors name the URL with its password
/// hidden. Cheap to clone; [`PgPool::shared`] gives one pool per URL per process.
#[derive(Clone)]
pub struct PgPool {
    namer: Namer,
    pool: Pool,
}

impl PgPool {
    /// Prepares a pool on `url` (as [`PgStore::connect`] reads it); connects on first use.
    pub fn connect(url: &str) -> Result<PgPool, StoreError> {
        let (namer, _, _, pool) = setup(url)?;
        Ok(PgPool { namer, pool })
    }

    /// The pool of `url` in this process, made on first use: every performance of a worker
    /// shares its connections rather than opening a pool each.
    pub fn shared(url: &str) -> Result<PgPool, StoreError> {
        static POOLS: OnceLock<std::sync::Mutex<HashMap<String, PgPool>>> = OnceLock::new();
        let pools = POOLS.get_or_init(Default::default);
        // A panic while the map was held leaves it whole (one insert), so it is still sound.
        let mut pools = pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = pools.get(url) {
            return Ok(pool.clone());
        }
        let pool = PgPool::connect(url)?;
        pools.insert(url.to_string(), pool.clone());
        Ok(pool)
    }

    /// A pooled connection.
    pub async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(|e| self.namer.pool_error(&e))
    }

    /// A driver error as a [`StoreError`] naming the store (password hidden): unreachable is
    /// `Unavailable`, a refused login `Config`, the rest `Backend`.
    pub fn error(&self, error: &tokio_postgres::Error) -> StoreError {
        self.namer.error(error)
    }

    /// The URL with its password hidden.
    pub fn name(&self) -> &str {
        &self.namer.name
    }
}

/// The PostgreSQL store.
pub struct PgStore {
    namer: Namer,
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    pool: Pool,
    migrated: OnceCell<u32>,
    listener: OnceLock<Listener>,
}

/// Deletes firings of the stages `which` picks ($4: a stage, $5: the unstaged ''): per door of
/// each, the newest that may go is the one after its `keep` newest ($1, on the primary key:
/// stage, door then due); everything due at or before it and before `before` ($2) goes, at
/// most `batch` ($3). `which` is `IN` (the stage and the unstaged rows) or `NOT IN` (every
/// other stage: `Store::sweep_abandoned_firings`).
macro_rules! sweep_firings_sql {
    ($which:literal) => {
        concat!(
            "DELETE FROM firings f USING (SELECT g.stage, g.door, g.due FROM (SELECT stage, \
             door, (SELECT due FROM firings h WHERE h.stage = d.stage AND h.door = d.door \
             ORDER BY due DESC OFFSET $1 LIMIT 1) AS cut FROM (SELECT DISTINCT stage, door \
             FROM firings WHERE stage ",
            $which,
            " ($4, $5)) d) c JOIN firings g ON g.stage = c.stage AND g.door = c.door AND \
             g.due <= c.cut AND g.due < $2 LIMIT $3) doomed WHERE f.stage = doomed.stage AND \
             f.door = doomed.door AND f.due = doomed.due"
        )
    };
}

/// `Store::sweep_firings`: the stage's own and the unstaged rows.
const SWEEP_FIRINGS_OF: &str = sweep_firings_sql!("IN");

/// `Store::sweep_abandoned_firings`: every other stage's rows.
const SWEEP_FIRINGS_BUT: &str = sweep_firings_sql!("NOT IN");

impl PgStore {
    /// Prepares a store on `url` (`postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?host=SOCKETDIR]`,
    /// with `sslmode=`, `sslrootcert=` and `statement_timeout=` read by improv: see
    /// [`crate::SslMode`]). Connects on first use; a URL that cannot be parsed, or a CA file
    /// that cannot be read, is a [`StoreError::Config`].
    pub fn connect(url: &str) -> Result<PgStore, StoreError> {
        let (namer, config, tls, pool) = setup(url)?;
        Ok(PgStore {
            namer,
            config,
            tls,
            pool,
            migrated: OnceCell::new(),
            listener: OnceLock::new(),
        })
    }

    /// A pooled connection, the schema brought up to date first (once per instance).
    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.migrated
            .get_or_try_init(|| async {
                let mut client = self.raw_client().await?;
                schema::migrate(&self.namer, &mut client).await
            })
            .await?;
        self.raw_client().await
    }

    async fn raw_client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        self.pool.get().await.map_err(|e| self.namer.pool_error(&e))
    }

    fn err(&self) -> impl Fn(tokio_postgres::Error) -> StoreError + '_ {
        |e| self.namer.error(&e)
    }

    /// Runs one statement, returning the rows.
    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(self.err())?;
        client.query(&statement, params).await.map_err(self.err())
    }

    /// Runs one statement, returning how many rows it changed.
    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(self.err())?;
        client.execute(&statement, params).await.map_err(self.err())
    }

    /// Runs one of the firings sweeps ([`SWEEP_FIRINGS_OF`], [`SWEEP_FIRINGS_BUT`]) for
    /// `stage`; how many went.
    async fn sweep_firings_of(
        &self,
        sql: &str,
        stage: &StageKey,
        before: UnixMillis,
        keep: usize,
        batch: usize,
    ) -> Result<u64, StoreError> {
        let (keep, batch) = (sql_limit(keep.max(1)), sql_limit(batch));
        let params: [&(dyn ToSql + Sync); 5] = [&keep, &before, &batch, &stage.id(), &UNSTAGED];
        self.execute(sql, &params).await
    }

    /// Opens a transaction on `client`, locks the performance's row and checks that `lease` is
    /// its current lease: what the caller then writes commits with the fence or not at all.
    async fn fence<'c>(
        &self,
        client: &'c mut deadpool_postgres::Client,
        lease: &Lease,
    ) -> Result<(deadpool_postgres::Transaction<'c>, Holder), StoreError> {
        let tx = client.transaction().await.map_err(self.err())?;
        let rows = tx
            .query(
                "SELECT state, worker, epoch, last_seq FROM performances WHERE id = $1 FOR UPDATE",
                &[&lease.performance],
            )
            .await
            .map_err(self.err())?;
        let row = rows
            .first()
            .ok_or_else(|| self.not_found(&lease.performance))?;
        let holder = Holder {
            state: parse_state(&self.namer.name, row.get(0))?,
            worker: row.get(1),
            epoch: unsigned(row.get(2)),
            last_seq: unsigned(row.get(3)),
        };
        fence(lease, &holder)?;
        Ok((tx, holder))
    }

    fn not_found(&self, id: &str) -> StoreError {
        StoreError::NotFound {
            store: self.namer.name.clone(),
            id: id.to_string(),
        }
    }

    fn json_error(&self, e: impl std::fmt::Display) -> StoreError {
        corrupt(&self.namer.name, &format!("JSON: {e}"))
    }

    fn record(&self, row: &tokio_postgres::Row) -> Result<PerformanceRecord, StoreError> {
        let name = &self.namer.name;
        Ok(PerformanceRecord {
            id: row.get(0),
            stage: row.get(1),
            intent: row.get(2),
            model: row.get(3),
            origin: row.get(4),
            state: parse_state(name, row.get(5))?,
            outcome: parse_outcome(name, row.get(6))?,
            reason: row.get(7),
            worker: row.get(8),
            epoch: unsigned(row.get(9)),
            last_seq: unsigned(row.get(10)),
            created_at: row.get(11),
            updated_at: row.get(12),
            budget: parse_budget(name, row.get(13))?,
            stage_name: row.get(14),
        })
    }

    fn outbox_entry(&self, r: &tokio_postgres::Row) -> Result<OutboxEntry, StoreError> {
        let body: String = r.get(4);
        Ok(OutboxEntry {
            message: OutboxMessage {
                key: OutboxKey {
                    performance: r.get(0),
                    seq: unsigned(r.get(1)),
                },
                stage: r.get(8),
                door: r.get(2),
                conversation: r.get(3),
                body: serde_json::from_str(&body).map_err(|e| self.json_error(e))?,
            },
            sent_id: r.get(5),
            attempts: u32::try_from(r.get::<_, i32>(6)).unwrap_or(0),
            created_at: r.get(7),
        })
    }

    /// Whether `what` is there for performance `id`, or it finished.
    async fn ready(&self, id: &str, what: Awaited) -> Result<bool, StoreError> {
        if let Awaited::Changed(seen) = what {
            return Ok(self.progress(id).await? != seen);
        }
        let rows = self
            .query(
                "SELECT p.last_seq, p.state, \
                 (SELECT COALESCE(MAX(n), 0) FROM notes WHERE performance = p.id) \
                 FROM performances p WHERE p.id = $1",
                &[&id],
            )
            .await?;
        let row = rows.first().ok_or_else(|| self.not_found(id))?;
        if parse_state(&self.namer.name, row.get(1))? == State::Finished {
            return Ok(true);
        }
        Ok(match what {
            Awaited::Events { after } => unsigned(row.get(0)) > after,
            Awaited::Notes { after } => unsigned(row.get(2)) > after,
            Awaited::Answer { n } => !self
                .query(
                    "SELECT 1 FROM approvals WHERE performance = $1 AND n = $2 \
                     AND answer IS NOT NULL",
                    &[&id, &signed(n)],
                )
                .await?
                .is_empty(),
            Awaited::Changed(_) => true,
        })
    }

    /// Waits until `what` is there for performance `id`, it finished, or `timeout` passed;
    /// woken by the listener's notifications for `id` (appends, finishes, notes).
    async fn wait(&self, id: &str, what: Awaited, timeout: Duration) -> Result<bool, StoreError> {
        let listener = self.listener.get_or_init(|| {
            Listener::start(self.config.clone(), self.tls.clone(), self.namer.clone())
        });
        // Subscribe before looking, so a write between the look and the wait still wakes us.
        // Only `id`'s notifications (and the listener's reconnections) wake this waiter.
        let mut wakes = listener.subscribe(id);
        if self.ready(id, what).await? {
            return Ok(true);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if tokio::time::timeout_at(deadline, wakes.changed())
                .await
                .is_err()
            {
                return self.ready(id, what).await;
            }
            if self.ready(id, what).await? {
                return Ok(true);
            }
        }
    }

    async fn notify(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        id: &str,
    ) -> Result<(), StoreError> {
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &id])
            .await
            .map_err(self.err())?;
        Ok(())
    }

    /// Stores the blobs and rows of `encoded` (inside the append's transaction).
    async fn insert_events(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        id: &str,
        encoded: &[Encoded],
    ) -> Result<(), StoreError> {
        // In hash order: appends of different performances that store the same new blobs
        // (one stage's system prompt, its tools) then take the blobs' row locks in one order.
        // In a HashMap's order, two of them could each hold a blob the other waits for: the
        // server aborts one as a deadlock, and that worker loses the performance it claimed.
        let blobs: std::collections::BTreeMap<&str, &[u8]> = encoded
            .iter()
            .flat_map(|e| e.blobs.iter())
            .map(|(hash, text)| (hash.as_str(), text.as_bytes()))
            .collect();
        if !blobs.is_empty() {
            let (hashes, bodies): (Vec<&str>, Vec<&[u8]>) = blobs.into_iter().unzip();
            let statement = tx
                .prepare_cached(
                    "INSERT INTO blobs (hash, body) SELECT * FROM UNNEST($1::text[], $2::bytea[]) \
                     ON CONFLICT (hash) DO NOTHING",
                )
                .await
                .map_err(self.err())?;
            tx.execute(&statement, &[&hashes, &bodies])
                .await
                .map_err(self.err())?;
            let statement = tx
                .prepare_cached(
                    "INSERT INTO blob_refs (performance, hash) SELECT $1, UNNEST($2::text[]) \
                     ON CONFLICT DO NOTHING",
                )
                .await
                .map_err(self.err())?;
            tx.execute(&statement, &[&id, &hashes])
                .await
                .map_err(self.err())?;
        }
        let seqs: Vec<i64> = encoded.iter().map(|e| signed(e.seq)).collect();
        let bodies: Vec<&str> = encoded.iter().map(|e| e.body.as_str()).collect();
        let refs: Vec<Option<&str>> = encoded.iter().map(|e| e.refs.as_deref()).collect();
        let statement = tx
            .prepare_cached(
                "INSERT INTO events (performance, seq, body, blobs) \
                 SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[])",
            )
            .await
            .map_err(self.err())?;
        tx.execute(&statement, &[&id, &seqs, &bodies, &refs])
            .await
            .map_err(self.err())?;
        Ok(())
    }

    /// The blobs with these hashes.
    async fn blobs(&self, hashes: Vec<String>) -> Result<HashMap<String, String>, StoreError> {
        if hashes.is_empty() {
            return Ok(HashMap::new());
        }
        let rows = self
            .query(
                "SELECT hash, body FROM blobs WHERE hash = ANY($1)",
                &[&hashes],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let body: Vec<u8> = row.get(1);
                let text = String::from_utf8(body).map_err(|e| self.json_error(e))?;
                Ok((row.get(0), text))
            })
            .collect()
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.get() {
            listener.stop();
        }
    }
}

#[async_trait]
impl Store for PgStore {
    fn describe(&self) -> String {
        self.namer.name.clone()
    }

    async fn migrate(&self) -> Result<u32, StoreError> {
        let mut client = self.raw_client().await?;
        let version = schema::migrate(&self.namer, &mut client).await?;
        let _ = self.migrated.set(version);
        Ok(version)
    }

    async fn enqueue(&self, new: &NewPerformance) -> Result<String, StoreError> {
        let id = new
            .id
            .clone()
            .unwrap_or_else(improv_kernel::performance::new_id);
        let now = now_millis();
        let budget = budget_text(&self.namer.name, new.budget.as_ref())?;
        let inserted = self
            .execute(
                "INSERT INTO performances (id, stage, intent, model, origin, state, created_at, \
                 updated_at, budget, stage_name) VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9) \
                 ON CONFLICT (id) DO NOTHING",
                &[
                    &id,
                    &new.stage,
                    &new.intent,
                    &new.model,
                    &new.origin,
                    &state_name(State::Queued),
                    &now,
                    &budget,
                    &new.stage_name,
                ],
            )
            .await?;
        if inserted == 0 {
            return Err(StoreError::Exists { id });
        }
        // Wakes idle workers everywhere (Store::wait_for_work); committed with the insert above.
        self.execute("SELECT pg_notify($1, '')", &[&QUEUE]).await?;
        Ok(id)
    }

    async fn claim_among(
        &self,
        worker: &str,
        ttl: Duration,
        serving: &Serving,
    ) -> Result<Option<(Lease, PerformanceRecord)>, StoreError> {
        let now = now_millis();
        let expires = expiry(now, ttl);
        self.query(END_STOPPED, &[&now, &STOPPED_UNHELD, &CHANNEL])
            .await?;
        // Any stage: nothing more bound. Named ones: their names `$5` and stage files `$6` (for
        // those queued without a name), read on the partial index `performances_by_stage` (the
        // unfinished performances only).
        let (among, names, paths) = match serving {
            Serving::Any => ("", None, None),
            Serving::Stages(keys) => (
                "AND state <> 'finished' AND (stage_name = ANY($5) \
                 OR (stage_name IS NULL AND stage = ANY($6)))",
                Some(
                    keys.iter()
                        .filter_map(|k| k.name.clone())
                        .collect::<Vec<_>>(),
                ),
                Some(keys.iter().map(|k| k.path.clone()).collect::<Vec<_>>()),
            ),
        };
        let args: [&(dyn ToSql + Sync); 6] =
            [&worker, &expires, &now, &ASKER_LOST_LEASE, &names, &paths];
        // One statement: the claim and the denial of the asks its predecessors left open
        // commit together, so no answer reaches a holder that lost its lease.
        let rows = self
            .query(
                &format!(
                    "WITH claimed AS (UPDATE performances p SET state = 'leased', worker = $1, \
                     epoch = p.epoch + 1, lease_expires = $2, updated_at = $3 \
                     FROM (SELECT id FROM performances \
                           WHERE (state = 'queued' OR (state = 'leased' AND lease_expires <= $3)) \
                           AND NOT stop_requested {among} \
                           ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) c \
                     WHERE p.id = c.id RETURNING {RECORD}), \
                     denied AS (UPDATE approvals a SET answer = 'deny', note = $4, \
                     answered_at = $3 FROM claimed WHERE a.performance = claimed.id \
                     AND a.answer IS NULL RETURNING a.n) \
                     SELECT {RECORD}, (SELECT count(*) FROM denied) FROM claimed p"
                ),
                &args[..4 + 2 * usize::from(names.is_some())],
            )
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        let record = self.record(row)?;
        // The count of denials follows the record's columns.
        if row.get::<_, i64>(row.len() - 1) > 0 {
            // A stream on any machine shows the denials. The claim has committed: a notification
            // that fails is not the claim's failure (an error would leave the performance leased
            // to no worker until its lease ran out); watchers still see it at their next look.
            if let Err(e) = self
                .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &record.id])
                .await
            {
                tracing::warn!(performance = %record.id, "cannot notify the denied asks: {e}");
            }
        }
        let lease = Lease {
            performance: record.id.clone(),
            worker: worker.to_string(),
            epoch: record.epoch,
            expires_at: expires,
        };
        Ok(Some((lease, record)))
    }

    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        let mut client = self.client().await?;
        let (tx, _) = self.fence(&mut client, lease).await?;
        let now = now_millis();
        let expires = expiry(now, ttl);
        tx.execute(
            "UPDATE performances SET lease_expires = $2, updated_at = $3 WHERE id = $1",
            &[&lease.performance, &expires, &now],
        )
        .await
        .map_err(self.err())?;
        tx.commit().await.map_err(self.err())?;
        Ok(Lease {
            expires_at: expires,
            ..lease.clone()
        })
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let (tx, _) = self.fence(&mut client, lease).await?;
        tx.execute(
            "UPDATE performances SET state = 'queued', lease_expires = 0, updated_at = $2 \
             WHERE id = $1",
            &[&lease.performance, &now_millis()],
        )
        .await
        .map_err(self.err())?;
        tx.execute("SELECT pg_notify($1, '')", &[&QUEUE])
            .await
            .map_err(self.err())?;
        tx.commit().await.map_err(self.err())
    }

    async fn finish(
        &self,
        lease: &Lease,
        outcome: Outcome,
        reason: &str,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let (tx, _) = self.fence(&mut client, lease).await?;
        tx.execute(
            "UPDATE performances SET state = 'finished', outcome = $2, reason = $3, \
             lease_expires = 0, updated_at = $4 WHERE id = $1",
            &[
                &lease.performance,
                &outcome.as_str(),
                &reason,
                &now_millis(),
            ],
        )
        .await
        .map_err(self.err())?;
        self.notify(&tx, &lease.performance).await?;
        tx.commit().await.map_err(self.err())
    }

    async fn performance(&self, id: &str) -> Result<PerformanceRecord, StoreError> {
        let rows = self
            .query(
                &format!("SELECT {RECORD} FROM performances p WHERE p.id = $1"),
                &[&id],
            )
            .await?;
        let row = rows.first().ok_or_else(|| self.not_found(id))?;
        self.record(row)
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<PerformanceRecord>, StoreError> {
        let state = filter.state.map(state_name);
        let limit = if filter.limit == 0 { 100 } else { filter.limit };
        let name = filter.stage.as_ref().and_then(|k| k.name.as_ref());
        let path = filter.stage.as_ref().map(|k| &k.path);
        let rows = self
            .query(
                &format!(
                    "SELECT {RECORD} FROM performances p WHERE ($1::text IS NULL OR p.state = $1) \
                     AND ($3::text IS NULL OR left(p.id, length($3)) = $3) \
                     AND ($5::text IS NULL OR p.stage_name = $4::text \
                          OR (p.stage_name IS NULL AND p.stage = $5)) \
                     ORDER BY p.created_at DESC, p.id DESC LIMIT $2"
                ),
                &[&state, &sql_limit(limit), &filter.id_prefix, &name, &path],
            )
            .await?;
        rows.iter().map(|row| self.record(row)).collect()
    }

    async fn append(&self, lease: &Lease, events: &[Event]) -> Result<(), StoreError> {
        let encoded: Vec<Encoded> = events
            .iter()
            .map(codec::encode)
            .collect::<Result<_, _>>()
            .map_err(|e| self.json_error(e))?;
        let mut client = self.client().await?;
        let (tx, holder) = self.fence(&mut client, lease).await?;
        check_seqs(&lease.performance, holder.last_seq, events)?;
        let Some(last) = events.last() else {
            return Ok(());
        };
        self.insert_events(&tx, &lease.performance, &encoded)
            .await?;
        tx.execute(
            "UPDATE performances SET last_seq = $2, updated_at = $3 WHERE id = $1",
            &[&lease.performance, &signed(last.seq), &now_millis()],
        )
        .await
        .map_err(self.err())?;
        self.notify(&tx, &lease.performance).await?;
        tx.commit().await.map_err(self.err())
    }

    async fn events(&self, id: &str, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        let rows = self
            .query(
                "SELECT body, blobs FROM events WHERE performance = $1 AND seq > $2 \
                 ORDER BY seq LIMIT $3",
                &[&id, &signed(after), &sql_limit(limit)],
            )
            .await?;
        if rows.is_empty() {
            self.performance(id).await?; // NotFound for an unknown performance
            return Ok(Vec::new());
        }
        let mut hashes = Vec::new();
        for row in &rows {
            hashes.extend(codec::ref_hashes(row.get(1)).map_err(|e| self.json_error(e))?);
        }
        hashes.sort();
        hashes.dedup();
        let blobs = self.blobs(hashes).await?;
        rows.iter()
            .map(|row| {
                codec::decode(row.get(0), row.get(1), &blobs)
                    .map_err(|e| corrupt(&self.namer.name, &format!("performance {id}: {e}")))
            })
            .collect()
    }

    async fn wait_events(
        &self,
        id: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        self.wait(id, Awaited::Events { after }, timeout).await
    }

    async fn claim_firing(&self, stage: &StageKey, firing: &Firing) -> Result<bool, StoreError> {
        // No unstaged row is written any more (they only go), so the snapshot's look for one
        // cannot miss a row committed meanwhile; claims of one stage meet on the primary key.
        let inserted = self
            .execute(
                "INSERT INTO firings (stage, door, due, performance, note) \
                 SELECT $1, $2, $3, $4, $5 WHERE NOT EXISTS (SELECT 1 FROM firings \
                 WHERE stage = $6 AND door = $2 AND due = $3) \
                 ON CONFLICT (stage, door, due) DO NOTHING",
                &[
                    &stage.id(),
                    &firing.door,
                    &firing.due,
                    &firing.performance,
                    &firing.note,
                    &UNSTAGED,
                ],
            )
            .await?;
        Ok(inserted == 1)
    }

    async fn update_firing(&self, stage: &StageKey, firing: &Firing) -> Result<(), StoreError> {
        let stage = stage.id();
        // A claim never records a (door, due) that an unstaged row holds: one of the two.
        let updated = self
            .execute(
                "UPDATE firings SET performance = $4, note = $5 \
                 WHERE stage IN ($1, $6) AND door = $2 AND due = $3",
                &[
                    &stage,
                    &firing.door,
                    &firing.due,
                    &firing.performance,
                    &firing.note,
                    &UNSTAGED,
                ],
            )
            .await?;
        if updated == 0 {
            return Err(self.not_found(&format!(
                "(firing of door {} due {} of stage {stage})",
                firing.door, firing.due
            )));
        }
        Ok(())
    }

    async fn firings(
        &self,
        stage: &StageKey,
        door: &str,
        limit: usize,
    ) -> Result<Vec<Firing>, StoreError> {
        // The stage's newest and the unstaged newest, each read backwards on the primary key,
        // then merged: no sort of a door's every firing.
        let rows = self
            .query(
                "SELECT door, due, performance, note FROM (\
                 (SELECT door, due, performance, note FROM firings \
                 WHERE stage = $1 AND door = $2 ORDER BY due DESC LIMIT $3) \
                 UNION ALL (SELECT door, due, performance, note FROM firings \
                 WHERE stage = $4 AND door = $2 ORDER BY due DESC LIMIT $3)) f \
                 ORDER BY due DESC LIMIT $3",
                &[&stage.id(), &door, &sql_limit(limit), &UNSTAGED],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Firing {
                door: r.get(0),
                due: r.get(1),
                performance: r.get(2),
                note: r.get(3),
            })
            .collect())
    }

    async fn outbox_put(&self, message: &OutboxMessage) -> Result<OutboxEntry, StoreError> {
        let body = serde_json::to_string(&message.body).map_err(|e| self.json_error(e))?;
        let seq = signed(message.key.seq);
        self.execute(
            "INSERT INTO outbox (performance, seq, door, conversation, body, created_at, stage) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (performance, seq) DO NOTHING",
            &[
                &message.key.performance,
                &seq,
                &message.door,
                &message.conversation,
                &body,
                &now_millis(),
                &message.stage,
            ],
        )
        .await?;
        let rows = self
            .query(
                &format!("SELECT {OUTBOX} FROM outbox o WHERE o.performance = $1 AND o.seq = $2"),
                &[&message.key.performance, &seq],
            )
            .await?;
        let row = rows.first().ok_or_else(|| {
            corrupt(
                &self.namer.name,
                "an outbox message vanished after it was put",
            )
        })?;
        self.outbox_entry(row)
    }

    async fn outbox_pending(
        &self,
        stage: &StageKey,
        door: &str,
        limit: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        // The stage's own, and those put before the outbox had a stage whose performance the
        // stage holds (`StageKey::holds`): by its name, or its path when queued without one.
        let rows = self
            .query(
                &format!(
                    "UPDATE outbox o SET attempts = o.attempts + 1 \
                     FROM (SELECT performance, seq FROM outbox m \
                           WHERE m.door = $1 AND m.sent_id IS NULL AND (m.stage = $3 \
                             OR (m.stage = '' AND EXISTS (SELECT 1 FROM performances p \
                               WHERE p.id = m.performance AND (p.stage_name = $4::text \
                                 OR (p.stage_name IS NULL AND p.stage = $5))))) \
                           ORDER BY m.created_at, m.performance, m.seq LIMIT $2 \
                           FOR UPDATE OF m SKIP LOCKED) c \
                     WHERE o.performance = c.performance AND o.seq = c.seq RETURNING {OUTBOX}"
                ),
                &[
                    &door,
                    &sql_limit(limit),
                    &stage.id(),
                    &stage.name,
                    &stage.path,
                ],
            )
            .await?;
        let mut entries: Vec<OutboxEntry> = rows
            .iter()
            .map(|row| self.outbox_entry(row))
            .collect::<Result<_, _>>()?;
        entries.sort_by(|a, b| {
            (a.created_at, &a.message.key.performance, a.message.key.seq).cmp(&(
                b.created_at,
                &b.message.key.performance,
                b.message.key.seq,
            ))
        });
        Ok(entries)
    }

    async fn outbox_sent(&self, key: &OutboxKey, sent_id: &str) -> Result<(), StoreError> {
        let rows = self
            .query(
                "UPDATE outbox SET sent_id = COALESCE(sent_id, $3) \
                 WHERE performance = $1 AND seq = $2 RETURNING 1",
                &[&key.performance, &signed(key.seq), &sent_id],
            )
            .await?;
        if rows.is_empty() {
            return Err(
                self.not_found(&format!("(outbox message {}#{})", key.performance, key.seq))
            );
        }
        Ok(())
    }

    async fn counts(&self) -> Result<Counts, StoreError> {
        let rows = self
            .query(
                "SELECT state, count(*), count(*) FILTER (WHERE lease_expires <= $1), \
                 min(lease_expires) FILTER (WHERE lease_expires > $1) \
                 FROM performances GROUP BY state",
                &[&now_millis()],
            )
            .await?;
        let mut counts = Counts::default();
        for row in &rows {
            let n = unsigned(row.get(1));
            match parse_state(&self.namer.name, row.get(0))? {
                State::Queued => counts.queued = n,
                State::Finished => counts.finished = n,
                State::Leased => {
                    counts.leased = n;
                    counts.expired = unsigned(row.get(2));
                    counts.next_expiry = row.get(3);
                }
            }
        }
        Ok(counts)
    }

    async fn wait_for_work(&self, timeout: Duration) -> Result<(), StoreError> {
        let listener = self.listener.get_or_init(|| {
            Listener::start(self.config.clone(), self.tls.clone(), self.namer.clone())
        });
        // Subscribe before looking, so a performance queued between the look and the wait
        // still wakes us.
        let mut queued = listener.subscribe_queue();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let counts = self.counts().await?;
            let now = tokio::time::Instant::now();
            if counts.claimable() || now >= deadline {
                return Ok(());
            }
            // No NOTIFY says a lease ran out: look again when the earliest one does.
            let until_expiry = counts
                .next_expiry
                .map(|at| Duration::from_millis(u64::try_from(at - now_millis()).unwrap_or(0)));
            let wait = until_expiry.map_or(deadline - now, |until| until.min(deadline - now));
            // A notification (or a reconnection, which may have missed some), an expiry or
            // the deadline: look again. The listener gone (the store dropped): stop.
            if let Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) =
                tokio::time::timeout(wait, queued.recv()).await
            {
                return Ok(());
            }
        }
    }

    async fn get(&self, scope: &str, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let rows = self
            .query(
                "SELECT value FROM kv WHERE scope = $1 AND key = $2",
                &[&scope, &key],
            )
            .await?;
        rows.first()
            .map(|row| serde_json::from_str(row.get(0)).map_err(|e| self.json_error(e)))
            .transpose()
    }

    async fn put(
        &self,
        scope: &str,
        key: &str,
        value: &serde_json::Value,
        only_if_absent: bool,
    ) -> Result<bool, StoreError> {
        let value = serde_json::to_string(value).map_err(|e| self.json_error(e))?;
        let sql = if only_if_absent {
            "INSERT INTO kv (scope, key, value, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT DO NOTHING"
        } else {
            "INSERT INTO kv (scope, key, value, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value, \
             version = kv.version + 1, updated_at = excluded.updated_at"
        };
        let now = now_millis();
        Ok(self.execute(sql, &[&scope, &key, &value, &now]).await? == 1)
    }

    async fn get_versioned(&self, scope: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        let rows = self
            .query(
                "SELECT value, version FROM kv WHERE scope = $1 AND key = $2",
                &[&scope, &key],
            )
            .await?;
        rows.first()
            .map(|row| {
                let value = serde_json::from_str(row.get(0)).map_err(|e| self.json_error(e))?;
                Ok(Versioned {
                    value,
                    version: row.get(1),
                })
            })
            .transpose()
    }

    async fn put_if(
        &self,
        scope: &str,
        key: &str,
        expected: Option<i64>,
        value: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        let Some(expected) = expected else {
            return self.put(scope, key, value, true).await;
        };
        let value = serde_json::to_string(value).map_err(|e| self.json_error(e))?;
        let now = now_millis();
        let changed = self
            .execute(
                "UPDATE kv SET value = $3, version = version + 1, updated_at = $4 \
                 WHERE scope = $1 AND key = $2 AND version = $5",
                &[&scope, &key, &value, &now, &expected],
            )
            .await?;
        Ok(changed == 1)
    }

    async fn sweep(&self, scope: &str, sweep: &Sweep) -> Result<u64, StoreError> {
        // A writer older than migration 6 left updated_at 0: such a value counts as written
        // now, not as the oldest of all.
        self.execute(
            "UPDATE kv SET updated_at = $2 WHERE scope = $1 AND updated_at = 0",
            &[&scope, &now_millis()],
        )
        .await?;
        let batch = sql_limit(sweep.batch);
        if sweep.keep == 0 {
            return self
                .execute(
                    "DELETE FROM kv WHERE scope = $1 AND key IN (SELECT key FROM kv \
                     WHERE scope = $1 AND updated_at < $2 ORDER BY updated_at, key LIMIT $3)",
                    &[&scope, &sweep.before, &batch],
                )
                .await;
        }
        // Ranked once by a window, not `NOT IN (… LIMIT keep)`: that subquery, beyond work_mem,
        // is scanned again for every row (300,000 values outlast a 30 s statement timeout).
        self.execute(
            "DELETE FROM kv WHERE scope = $1 AND key IN (SELECT key FROM (SELECT key, updated_at, \
             row_number() OVER (ORDER BY updated_at DESC, key DESC) AS n FROM kv \
             WHERE scope = $1) r WHERE updated_at < $2 OR n > $3 ORDER BY updated_at, key LIMIT $4)",
            &[&scope, &sweep.before, &sql_limit(sweep.keep), &batch],
        )
        .await
    }

    async fn sweep_outbox(&self, before: UnixMillis, batch: usize) -> Result<u64, StoreError> {
        // Unordered: the scan stops at `batch` rows.
        self.execute(
            "DELETE FROM outbox WHERE (performance, seq) IN (SELECT performance, seq FROM outbox \
             WHERE sent_id IS NOT NULL AND created_at < $1 LIMIT $2)",
            &[&before, &sql_limit(batch)],
        )
        .await
    }

    async fn sweep_firings(
        &self,
        stage: &StageKey,
        before: UnixMillis,
        keep: usize,
        batch: usize,
    ) -> Result<u64, StoreError> {
        self.sweep_firings_of(SWEEP_FIRINGS_OF, stage, before, keep, batch)
            .await
    }

    async fn sweep_abandoned_firings(
        &self,
        stage: &StageKey,
        before: UnixMillis,
        keep: usize,
        batch: usize,
    ) -> Result<u64, StoreError> {
        self.sweep_firings_of(SWEEP_FIRINGS_BUT, stage, before, keep, batch)
            .await
    }

    async fn sweep_door_performances(
        &self,
        stage: &StageKey,
        before: UnixMillis,
        keep: usize,
        batch: usize,
    ) -> Result<u64, StoreError> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(self.err())?;
        // Per door (on performances_by_origin), the newest of `stage`'s that may go is the one
        // after the stage's `keep` newest from that door; only the stage's rows created before
        // `before` are read up to it. An origin none of the stage's performances has finds no
        // such row (c), so another stage's are never read as candidates.
        const _: () = assert!(matches!(crate::DOOR_ORIGIN.as_bytes(), b"door:"));
        let rows = tx
            .query(
                "SELECT p.id FROM (SELECT DISTINCT origin FROM performances \
                 WHERE origin LIKE 'door:%') d \
                 CROSS JOIN LATERAL (SELECT g.created_at, g.id FROM performances g \
                 WHERE g.origin = d.origin \
                 AND (g.stage_name = $4 OR (g.stage_name IS NULL AND g.stage = $5)) \
                 ORDER BY g.created_at DESC, g.id DESC OFFSET $1 LIMIT 1) c \
                 JOIN performances p ON p.origin = d.origin AND p.created_at < $2 \
                 AND (p.created_at, p.id) <= (c.created_at, c.id) \
                 WHERE p.state = 'finished' AND p.updated_at < $2 \
                 AND (p.stage_name = $4 OR (p.stage_name IS NULL AND p.stage = $5)) LIMIT $3",
                &[&keep, &before, &sql_limit(batch), &stage.name, &stage.path],
            )
            .await
            .map_err(self.err())?;
        let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        if ids.is_empty() {
            return Ok(0);
        }
        for sql in [
            "DELETE FROM events WHERE performance = ANY($1)",
            "DELETE FROM notes WHERE performance = ANY($1)",
            "DELETE FROM approvals WHERE performance = ANY($1)",
            "DELETE FROM performances WHERE id = ANY($1)",
        ] {
            tx.execute(sql, &[&ids]).await.map_err(self.err())?;
        }
        let referred = tx
            .query(
                "DELETE FROM blob_refs WHERE performance = ANY($1) RETURNING hash",
                &[&ids],
            )
            .await
            .map_err(self.err())?;
        let hashes: Vec<String> = referred.iter().map(|r| r.get(0)).collect();
        if hashes.is_empty() {
            // No blob to look at: appends are not held up by the lock below.
            tx.commit().await.map_err(self.err())?;
            return Ok(ids.len() as u64);
        }
        // An append that refers to a blob inserts into blobs (ON CONFLICT DO NOTHING) first, so
        // holds blobs' ROW EXCLUSIVE lock until it commits its blob_refs: this lock waits for
        // those under way and holds off new ones, so the look below sees every reference.
        tx.batch_execute("LOCK TABLE blobs IN SHARE ROW EXCLUSIVE MODE")
            .await
            .map_err(self.err())?;
        tx.execute(
            "DELETE FROM blobs b WHERE hash = ANY($1) \
             AND NOT EXISTS (SELECT 1 FROM blob_refs r WHERE r.hash = b.hash)",
            &[&hashes],
        )
        .await
        .map_err(self.err())?;
        tx.commit().await.map_err(self.err())?;
        Ok(ids.len() as u64)
    }

    async fn send_note(&self, performance: &str, text: &str) -> Result<Note, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(self.err())?;
        // The row lock numbers the performance's notes one sender at a time.
        let rows = tx
            .query(
                "SELECT state FROM performances WHERE id = $1 FOR UPDATE",
                &[&performance],
            )
            .await
            .map_err(self.err())?;
        let row = rows.first().ok_or_else(|| self.not_found(performance))?;
        if parse_state(&self.namer.name, row.get(0))? == State::Finished {
            return Err(StoreError::Finished {
                id: performance.to_string(),
            });
        }
        let created_at = now_millis();
        let row = tx
            .query_one(
                "INSERT INTO notes (performance, n, text, created_at) \
                 SELECT $1, COALESCE(MAX(n), 0) + 1, $2, $3 FROM notes WHERE performance = $1 \
                 RETURNING n",
                &[&performance, &text, &created_at],
            )
            .await
            .map_err(self.err())?;
        self.notify(&tx, performance).await?;
        tx.commit().await.map_err(self.err())?;
        Ok(Note {
            performance: performance.to_string(),
            n: unsigned(row.get(0)),
            text: text.to_string(),
            created_at,
        })
    }

    async fn notes(&self, performance: &str, after: u64) -> Result<Vec<Note>, StoreError> {
        let rows = self
            .query(
                "SELECT n, text, created_at FROM notes WHERE performance = $1 AND n > $2 \
                 ORDER BY n",
                &[&performance, &signed(after)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Note {
                performance: performance.to_string(),
                n: unsigned(r.get(0)),
                text: r.get(1),
                created_at: r.get(2),
            })
            .collect())
    }

    async fn wait_notes(
        &self,
        performance: &str,
        after: u64,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        self.wait(performance, Awaited::Notes { after }, timeout)
            .await
    }

    async fn ask_approval(&self, lease: &Lease, ask: &ApprovalAsk) -> Result<u64, StoreError> {
        let mut client = self.client().await?;
        // The fence's row lock also numbers the performance's approvals one at a time.
        let (tx, _) = self.fence(&mut client, lease).await?;
        let performance = &lease.performance;
        let row = tx
            .query_one(
                "INSERT INTO approvals (performance, n, actor, prop, subject, rule, created_at) \
                 SELECT $1, COALESCE(MAX(n), 0) + 1, $2, $3, $4, $5, $6 FROM approvals \
                 WHERE performance = $1 RETURNING n",
                &[
                    performance,
                    &ask.actor,
                    &ask.prop,
                    &ask.subject,
                    &ask.rule,
                    &now_millis(),
                ],
            )
            .await
            .map_err(self.err())?;
        // A stream on any machine shows the approval as soon as it is asked.
        self.notify(&tx, performance).await?;
        tx.commit().await.map_err(self.err())?;
        Ok(unsigned(row.get(0)))
    }

    async fn answer_approval(
        &self,
        performance: &str,
        n: u64,
        answer: Answer,
        note: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(self.err())?;
        let answered = tx
            .execute(
                "UPDATE approvals SET answer = $3, note = $4, answered_at = $5 \
                 WHERE performance = $1 AND n = $2 AND answer IS NULL",
                &[
                    &performance,
                    &signed(n),
                    &answer_name(answer),
                    &note,
                    &now_millis(),
                ],
            )
            .await
            .map_err(self.err())?;
        if answered == 1 {
            self.notify(&tx, performance).await?;
            tx.commit().await.map_err(self.err())?;
            return Ok(true);
        }
        let exists = tx
            .query(
                "SELECT 1 FROM approvals WHERE performance = $1 AND n = $2",
                &[&performance, &signed(n)],
            )
            .await
            .map_err(self.err())?;
        if exists.is_empty() {
            return Err(self.not_found(&format!("(approval {n} of {performance})")));
        }
        Ok(false)
    }

    async fn approvals(&self, performance: &str) -> Result<Vec<ApprovalRecord>, StoreError> {
        let rows = self
            .query(
                "SELECT n, actor, prop, subject, rule, answer, note, created_at \
                 FROM approvals WHERE performance = $1 ORDER BY n",
                &[&performance],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(ApprovalRecord {
                    performance: performance.to_string(),
                    n: unsigned(r.get(0)),
                    ask: ApprovalAsk {
                        actor: r.get(1),
                        prop: r.get(2),
                        subject: r.get(3),
                        rule: r.get(4),
                    },
                    answer: parse_answer(&self.namer.name, r.get(5))?,
                    note: r.get(6),
                    created_at: r.get(7),
                })
            })
            .collect()
    }

    async fn wait_answer(
        &self,
        performance: &str,
        n: u64,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        self.wait(performance, Awaited::Answer { n }, timeout).await
    }

    async fn stop(&self, performance: &str) -> Result<Stopping, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(self.err())?;
        // The row lock orders the stop with a claim: a claim that locked it first has made it
        // leased (the stop is then asked of its worker); one after it finds it finished.
        let rows = tx
            .query(
                "SELECT state FROM performances WHERE id = $1 FOR UPDATE",
                &[&performance],
            )
            .await
            .map_err(self.err())?;
        let row = rows.first().ok_or_else(|| self.not_found(performance))?;
        let stopping = match parse_state(&self.namer.name, row.get(0))? {
            State::Finished => {
                return Err(StoreError::Finished {
                    id: performance.to_string(),
                });
            }
            State::Queued => {
                tx.execute(
                    "UPDATE performances SET state = 'finished', outcome = 'stopped', \
                     reason = $2, stop_requested = true, updated_at = $3 WHERE id = $1",
                    &[&performance, &STOPPED_QUEUED, &now_millis()],
                )
                .await
                .map_err(self.err())?;
                Stopping::Stopped
            }
            State::Leased => {
                tx.execute(
                    "UPDATE performances SET stop_requested = true, updated_at = $2 \
                     WHERE id = $1",
                    &[&performance, &now_millis()],
                )
                .await
                .map_err(self.err())?;
                Stopping::Asked
            }
        };
        self.notify(&tx, performance).await?;
        tx.execute("SELECT pg_notify($1, '')", &[&STOPS])
            .await
            .map_err(self.err())?;
        tx.commit().await.map_err(self.err())?;
        Ok(stopping)
    }

    async fn progress(&self, performance: &str) -> Result<Progress, StoreError> {
        let rows = self
            .query(
                "SELECT p.last_seq, p.state, p.stop_requested, \
                 (SELECT COALESCE(MAX(n), 0) FROM approvals WHERE performance = p.id), \
                 (SELECT COUNT(*) FROM approvals WHERE performance = p.id \
                  AND answer IS NOT NULL) \
                 FROM performances p WHERE p.id = $1",
                &[&performance],
            )
            .await?;
        let row = rows.first().ok_or_else(|| self.not_found(performance))?;
        Ok(Progress {
            last_seq: unsigned(row.get(0)),
            finished: parse_state(&self.namer.name, row.get(1))? == State::Finished,
            stop: row.get(2),
            asked: unsigned(row.get(3)),
            answered: unsigned(row.get(4)),
        })
    }

    async fn wait_progress(
        &self,
        performance: &str,
        seen: &Progress,
        timeout: Duration,
    ) -> Result<Progress, StoreError> {
        self.wait(performance, Awaited::Changed(*seen), timeout)
            .await?;
        self.progress(performance).await
    }

    async fn stops_requested(&self, worker: &str) -> Result<Vec<String>, StoreError> {
        let rows = self
            .query(
                "SELECT id FROM performances \
                 WHERE state = 'leased' AND worker = $1 AND stop_requested",
                &[&worker],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn wait_stop(&self, seen: u64, timeout: Duration) -> Result<u64, StoreError> {
        let listener = self.listener.get_or_init(|| {
            Listener::start(self.config.clone(), self.tls.clone(), self.namer.clone())
        });
        // Counts the stops notified (and the listener's reconnections, which may have missed
        // some): a stop since `seen` returns at once.
        let mut stops = listener.subscribe_stops();
        let changed = tokio::time::timeout(timeout, stops.wait_for(|n| *n != seen))
            .await
            .map(|got| got.map(|now| *now));
        Ok(match changed {
            Ok(Ok(now)) => now,
            // Timed out: the caller looks again anyway, and waits from the count as it is now,
            // so a stop notified during that look still wakes the next wait.
            Err(_) => *stops.borrow(),
            // The listener is gone: look again anyway.
            Ok(Err(_)) => seen.wrapping_add(1),
        })
    }
}
