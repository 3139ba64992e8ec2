//! The ledger itself: collections of JSON entries in one SQLite file, each write folded into the
//! collection's shape, settled collections validated on every write.
//!
//! Tables (all prefixed `ledger_`, in the stage's own `.improv/ledger.db`, WAL mode):
//! `ledger_entries` (every accepted entry, as SQLite JSONB so queries need not re-parse text,
//! with its performance, actor and time),
//! `ledger_rejects` (every refused entry, verbatim, with the reason), `ledger_collections` (the
//! shape and state of each collection, as JSON, with a revision number so that two processes
//! writing the same file notice each other), `ledger_proposals` (fields that appeared after
//! settling) and one `ledger_<collection>` view per settled collection.
//!
//! Validation uses the `jsonschema` crate against the settled JSON Schema itself, so what is
//! enforced is exactly what is published in `.improv/schemas/<collection>.schema.json`.
//!
//! This file holds the types, the tables, opening and the per-collection state cache; each job
//! has its own submodule: `record` (check and store a batch), `query` (filters to SQL),
//! `settle` (settling, proposals, evolution and the actors' context) and `export`.

use crate::clock::{Clock, SystemClock};
use crate::path::PathError;
use crate::schema::EnumRule;
use crate::shape::{RenameSuspect, Shape, rename_suspects};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::hash_map::Entry as Cached;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

mod export;
mod identity;
pub(crate) use identity::whereabouts;
mod query;
mod record;
mod settle;

pub use crate::import::ImportReport;
pub use query::{Filter, Op, Query};
pub(crate) use record::{Checked, Inferred, Origin, Prepared};
pub use settle::{Decision, Evolution, Proposal, SettledColumns, Settlement};
use settle::{Settled, compile, load_proposals};

/// The ledger's file name inside a stage's state directory (`.improv/`).
pub const LEDGER_FILE: &str = "ledger.db";

/// The page size of a new ledger file (SQLite's default is 4 KiB; an existing file keeps its
/// own). Entries are a few hundred bytes of JSONB appended in batches: 64 KiB pages make an
/// import's writes and the checkpoint's reads 16 times fewer calls and cut its CPU time by about
/// a seventh (bench/ledger). A single write puts one 64 KiB page in the log instead of a 4 KiB
/// one, which a few entries a turn do not notice.
const PAGE_SIZE: u32 = 64 << 10;
/// Bytes of write-ahead log between automatic checkpoints: SQLite's default (1,000 pages of
/// 4 KiB), kept whatever the page size, so the log on disk stays as small as before.
const CHECKPOINT_BYTES: u32 = 4 << 20;

/// How many pages of `page_size` bytes make `bytes` (at least one).
pub(crate) fn pages_in(bytes: u32, page_size: u32) -> u32 {
    (bytes / page_size.max(1)).max(1)
}

/// Everything that can go wrong that is not the entry's fault (a refused entry is a
/// [`RecordOutcome::Rejected`], not an error).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot open the ledger at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("ledger database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "invalid collection name `{0}`: use 1 to 64 letters, digits, `_` or `-`, starting with a letter, digit or `_`"
    )]
    InvalidCollection(String),
    #[error("no collection named `{0}` in the ledger; `improv ledger` lists them")]
    UnknownCollection(String),
    #[error(transparent)]
    Path(#[from] PathError),
    #[error("invalid query: {0}")]
    Query(String),
    #[error(
        "collection `{collection}` is already settled (version {version}); use `improv ledger evolve {collection}` to change it"
    )]
    AlreadySettled { collection: String, version: u32 },
    #[error("collection `{0}` is not settled yet; run `improv ledger settle {0}` first")]
    NotSettled(String),
    #[error(
        "collection `{collection}` has no pending proposal for field `{field}`; `improv ledger evolve {collection}` lists them"
    )]
    NoProposal { collection: String, field: String },
    #[error("{file}: line {line}, column {column}: {message}")]
    Import {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "the stored state of collection `{collection}` is unreadable ({message}); the entries are intact"
    )]
    Corrupt { collection: String, message: String },
    #[error("the settled schema of `{collection}` does not compile: {message}")]
    Schema { collection: String, message: String },
    #[error("CSV export failed: {0}")]
    Csv(#[from] csv::Error),
    #[error("cannot serialize: {0}")]
    Json(#[from] serde_json::Error),
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// Settings of a ledger. The defaults suit a stage; tests shorten the times.
#[derive(Clone)]
pub struct LedgerOptions {
    /// A collection is stable after this many writes without a structural change...
    pub stable_writes: u64,
    /// ...and this much time since its last structural change.
    pub stable_after: Duration,
    /// String values are an enum when there are at most this many distinct ones...
    pub enum_max_values: usize,
    /// ...over at least this many records.
    pub enum_min_records: u64,
    /// Deepest nesting of an entry (objects and arrays); deeper entries are rejected.
    pub max_depth: usize,
    /// Largest entry, in bytes of JSON text; larger entries are rejected (and kept in rejects).
    pub max_entry_bytes: usize,
    /// Settle a collection on the write that makes it stable.
    pub auto_settle: bool,
    /// Where time comes from.
    pub clock: Arc<dyn Clock>,
    /// The most bytes of settled schemas [`Ledger::context_for`] puts into an actor's context,
    /// all collections together (about a quarter as many tokens); longer ones are summarised.
    pub context_budget_bytes: usize,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            stable_writes: 20,
            stable_after: Duration::from_secs(600),
            enum_max_values: 8,
            enum_min_records: 20,
            max_depth: 32,
            max_entry_bytes: 1 << 20,
            auto_settle: false,
            clock: Arc::new(SystemClock),
            context_budget_bytes: 6 * 1024,
        }
    }
}

impl std::fmt::Debug for LedgerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LedgerOptions")
            .field("stable_writes", &self.stable_writes)
            .field("stable_after", &self.stable_after)
            .field("enum_max_values", &self.enum_max_values)
            .field("enum_min_records", &self.enum_min_records)
            .field("max_depth", &self.max_depth)
            .field("max_entry_bytes", &self.max_entry_bytes)
            .field("auto_settle", &self.auto_settle)
            .field("context_budget_bytes", &self.context_budget_bytes)
            .finish_non_exhaustive()
    }
}

impl LedgerOptions {
    fn enum_rule(&self) -> EnumRule {
        EnumRule {
            max_values: self.enum_max_values,
            min_records: self.enum_min_records,
        }
    }
}

/// Who wrote an entry: the performance and the actor in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub performance: String,
    pub actor: String,
}

impl Provenance {
    pub fn new(performance: impl Into<String>, actor: impl Into<String>) -> Self {
        Provenance {
            performance: performance.into(),
            actor: actor.into(),
        }
    }
}

/// An entry to record: JSON text as received (kept verbatim when refused) or a parsed value.
#[derive(Clone, Debug)]
pub enum Input {
    Text(String),
    Value(Value),
    /// Something that could not be read as an entry (a line that is not UTF-8, a CSV row with
    /// the wrong number of cells): kept in the rejects with the reason.
    Unreadable {
        text: String,
        reason: String,
    },
}

impl From<Value> for Input {
    fn from(value: Value) -> Self {
        Input::Value(value)
    }
}

impl From<&str> for Input {
    fn from(text: &str) -> Self {
        Input::Text(text.to_owned())
    }
}

impl From<String> for Input {
    fn from(text: String) -> Self {
        Input::Text(text)
    }
}

/// What became of one entry.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RecordOutcome {
    /// Stored. `proposed` lists fields the settled schema does not have yet (now proposals).
    Recorded { id: i64, proposed: Vec<String> },
    /// Kept in the collection's rejects, with the reason.
    Rejected { reject_id: i64, reason: String },
}

impl RecordOutcome {
    pub fn is_recorded(&self) -> bool {
        matches!(self, RecordOutcome::Recorded { .. })
    }
}

/// How settled a collection's shape is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stability {
    /// Its shape still changes often.
    Fluid,
    /// At least half the writes needed for stability went by without a structural change.
    Settling,
    /// No structural change over the last `stable_writes` writes and `stable_after` time.
    Stable,
    /// Its schema was settled: every write is validated. Whatever the writes since, a settled
    /// collection is never shown as fluid.
    Settled,
}

impl std::fmt::Display for Stability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stability::Fluid => "fluid",
            Stability::Settling => "settling",
            Stability::Stable => "stable",
            Stability::Settled => "settled",
        })
    }
}

/// One recorded entry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entry {
    pub id: i64,
    pub collection: String,
    pub value: Value,
    /// The JSON text as stored; differs from `value` only for integers beyond 64 bits, which
    /// `value` holds as the nearest float and `text` keeps digit for digit.
    #[serde(skip)]
    pub text: String,
    pub performance: String,
    pub actor: String,
    /// RFC 3339, UTC.
    pub at: String,
}

/// One refused entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Reject {
    pub id: i64,
    pub collection: String,
    /// The entry verbatim, as it was received.
    pub text: String,
    pub reason: String,
    pub performance: String,
    pub actor: String,
    pub at: String,
}

/// A collection's state, as `improv ledger` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct CollectionInfo {
    pub name: String,
    pub state: Stability,
    /// The settled schema's version, once settled.
    pub settled: Option<u32>,
    pub records: u64,
    pub rejects: u64,
    /// Writes since the last structural change.
    pub writes_since_change: u64,
    pub last_change: String,
    pub shape: Shape,
    pub proposals: Vec<Proposal>,
    /// Fields that look like one field under two names, never both in one entry.
    pub rename_suspects: Vec<RenameSuspect>,
}

impl CollectionInfo {
    /// The state as people read it: `settled v2`, or `fluid`, `settling`, `stable`. The CLI
    /// prints it; the API sends `state` and `settled` apart, from the same [`Self::state`].
    pub fn state_label(&self) -> String {
        match (self.state, self.settled) {
            (Stability::Settled, Some(version)) => format!("settled v{version}"),
            (state, _) => state.to_string(),
        }
    }
}

/// The persisted state of one collection (stored as JSON in `ledger_collections.state`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Stored {
    shape: Shape,
    records: u64,
    rejects: u64,
    writes_since_change: u64,
    /// Unix milliseconds.
    last_change_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    settled: Option<Settled>,
}

struct Collection {
    stored: Stored,
    rev: i64,
    validator: Option<Arc<jsonschema::Validator>>,
    pending: BTreeSet<String>,
}

struct Inner {
    conn: Connection,
    cache: HashMap<String, Collection>,
}

/// A ledger: named collections of JSON entries in one SQLite file. Cheap to share behind an
/// `Arc`; calls are serialized on one connection.
pub struct Ledger {
    path: PathBuf,
    /// This file's identity, made when the file was created (see [`Ledger::source`]).
    source: String,
    options: LedgerOptions,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The index of entries by collection, in [`SCHEMA_SQL`].
const ENTRY_INDEX: &str = "ledger_entries_by_collection";

const SCHEMA_SQL: &str = "
CREATE TABLE IF NOT EXISTS ledger_collections (
    name TEXT PRIMARY KEY,
    rev INTEGER NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger_entries (
    id INTEGER PRIMARY KEY,
    collection TEXT NOT NULL,
    body BLOB NOT NULL,
    raw TEXT,
    performance TEXT NOT NULL,
    actor TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_entries_by_collection ON ledger_entries (collection, id);
CREATE TABLE IF NOT EXISTS ledger_rejects (
    id INTEGER PRIMARY KEY,
    collection TEXT NOT NULL,
    text TEXT NOT NULL,
    reason TEXT NOT NULL,
    performance TEXT NOT NULL,
    actor TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_rejects_by_collection ON ledger_rejects (collection, id);
CREATE TABLE IF NOT EXISTS ledger_proposals (
    collection TEXT NOT NULL,
    field TEXT NOT NULL,
    shape TEXT NOT NULL,
    count INTEGER NOT NULL,
    first_seen TEXT NOT NULL,
    status TEXT NOT NULL,
    decided_at TEXT,
    PRIMARY KEY (collection, field)
);
CREATE TABLE IF NOT EXISTS ledger_identity (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    source TEXT NOT NULL
);
INSERT OR IGNORE INTO ledger_identity (one, source) VALUES (1, lower(hex(randomblob(16))));
";

impl Ledger {
    /// Opens (creating if needed) the ledger file at `path`, with default options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Ledger::open_with(path, LedgerOptions::default())
    }

    /// Opens the ledger of a stage: `<state_dir>/ledger.db` (state_dir is usually `.improv`).
    pub fn open_in(state_dir: impl AsRef<Path>, options: LedgerOptions) -> Result<Self> {
        Ledger::open_with(state_dir.as_ref().join(LEDGER_FILE), options)
    }

    /// Opens (creating if needed) the ledger file at `path`.
    pub fn open_with(path: impl AsRef<Path>, options: LedgerOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| LedgerError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let open_error = |source| LedgerError::Open {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(open_error)?;
        // Only a new, empty file takes it (before WAL); an existing ledger keeps its page size.
        conn.pragma_update(None, "page_size", PAGE_SIZE)
            .map_err(open_error)?;
        improv_sqlite::prepare(&conn, Duration::from_secs(10)).map_err(open_error)?;
        let page_size: u32 = conn
            .query_row("PRAGMA page_size", [], |row| row.get(0))
            .map_err(open_error)?;
        conn.pragma_update(
            None,
            "wal_autocheckpoint",
            pages_in(CHECKPOINT_BYTES, page_size),
        )
        .map_err(open_error)?;
        conn.execute_batch(SCHEMA_SQL).map_err(open_error)?;
        let (source, found) = identity::source(&mut conn, &path)?;
        identity::log(&path, &source, &found);
        Ok(Ledger {
            path,
            source,
            options,
            inner: Mutex::new(Inner {
                conn,
                cache: HashMap::new(),
            }),
        })
    }

    /// This ledger file's identity: 32 random hex digits made when the file was created and
    /// kept in it, so copies of the ledger elsewhere (the PostgreSQL store) tell the entries of
    /// one file from another's with the same ids (every file numbers its entries from 1). A copy
    /// of the file (another inode) gets a new one when opened (see `identity`).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn options(&self) -> &LedgerOptions {
        &self.options
    }

    /// Where settled schemas are written: `schemas/` next to the ledger file.
    pub fn schemas_dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(|p| p.join("schemas"))
            .unwrap_or_else(|| PathBuf::from("schemas"))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back on drop), so a poisoned lock is safe to keep using.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets SQLite's WAL auto-checkpoint interval to about `bytes` of log; returns the interval
    /// it replaces, in pages (what [`Ledger::restore_wal_autocheckpoint`] takes back).
    pub(crate) fn set_wal_autocheckpoint(&self, bytes: u32) -> Result<u32> {
        let guard = self.lock();
        let page_size: u32 = guard
            .conn
            .query_row("PRAGMA page_size", [], |row| row.get(0))?;
        let pages = pages_in(bytes, page_size);
        let before = guard
            .conn
            .query_row("PRAGMA wal_autocheckpoint", [], |row| row.get(0))?;
        guard
            .conn
            .pragma_update(None, "wal_autocheckpoint", pages)?;
        Ok(before)
    }

    /// Puts back the auto-checkpoint interval, in pages, that
    /// [`Ledger::set_wal_autocheckpoint`] replaced.
    pub(crate) fn restore_wal_autocheckpoint(&self, pages: u32) -> Result<()> {
        self.lock()
            .conn
            .pragma_update(None, "wal_autocheckpoint", pages)?;
        Ok(())
    }

    /// Drops the index of entries by collection when the ledger holds no entry at all, for an
    /// import to fill the table without updating it row by row; true when it did. Building it
    /// once afterwards ([`Ledger::ensure_tables`]) costs less. Should the import stop before
    /// that (a crash), the next [`Ledger::open`] builds it, as it creates any missing table or
    /// index; until then queries read the whole table, with the same answers.
    pub(crate) fn defer_entry_index(&self) -> Result<bool> {
        let mut guard = self.lock();
        let tx = guard
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let empty: bool = tx.query_row(
            "SELECT NOT EXISTS (SELECT 1 FROM ledger_entries)",
            [],
            |row| row.get(0),
        )?;
        if empty {
            tx.execute_batch(&format!("DROP INDEX IF EXISTS {ENTRY_INDEX}"))?;
        }
        tx.commit()?;
        Ok(empty)
    }

    /// Creates whatever table or index of the ledger is missing.
    pub(crate) fn ensure_tables(&self) -> Result<()> {
        self.lock().conn.execute_batch(SCHEMA_SQL)?;
        Ok(())
    }

    /// Copies the write-ahead log into the ledger file now, as an auto-checkpoint would
    /// (PASSIVE: it never waits for readers; what they still need is copied next time).
    pub(crate) fn checkpoint(&self) -> Result<()> {
        self.lock()
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))?;
        Ok(())
    }

    fn now(&self) -> OffsetDateTime {
        self.options.clock.now()
    }

    /// A collection's state: [`Stability::Settled`] once settled, else the stability rule.
    fn state(&self, stored: &Stored) -> Stability {
        if stored.settled.is_some() {
            Stability::Settled
        } else {
            self.stability(stored)
        }
    }

    fn stability(&self, stored: &Stored) -> Stability {
        stability(
            stored.writes_since_change,
            stored.last_change_ms,
            unix_ms(self.now()),
            &self.options,
        )
    }

    /// Every collection, by name.
    pub fn collections(&self) -> Result<Vec<CollectionInfo>> {
        let names: Vec<String> = {
            let guard = self.lock();
            let mut statement = guard
                .conn
                .prepare("SELECT name FROM ledger_collections ORDER BY name")?;
            statement
                .query_map([], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()?
        };
        names.iter().map(|name| self.collection(name)).collect()
    }

    /// One collection's state.
    pub fn collection(&self, name: &str) -> Result<CollectionInfo> {
        check_collection_name(name)?;
        let mut guard = self.lock();
        let inner = &mut *guard;
        let state = load_fresh(&inner.conn, &mut inner.cache, name)?;
        if state.rev == 0 {
            return Err(LedgerError::UnknownCollection(name.to_owned()));
        }
        let stored = &state.stored;
        let mut suspects = Vec::new();
        for suspect in rename_suspects(&stored.shape) {
            // Counts allow the two fields to be disjoint; check that no entry has both.
            let both = match (suspect.first.to_sqlite(), suspect.second.to_sqlite()) {
                (Ok(a), Ok(b)) if !suspect.first.crosses_array() => inner.conn.query_row(
                    "SELECT count(*) FROM ledger_entries WHERE collection = ?1
                     AND json_type(body, ?2) IS NOT NULL AND json_type(body, ?3) IS NOT NULL",
                    params![name, a, b],
                    |row| row.get::<_, i64>(0),
                )?,
                _ => 0,
            };
            if both == 0 {
                suspects.push(suspect);
            }
        }
        let proposals = load_proposals(&inner.conn, name)?;
        Ok(CollectionInfo {
            name: name.to_owned(),
            state: self.state(stored),
            settled: stored.settled.as_ref().map(|s| s.version),
            records: stored.records,
            rejects: stored.rejects,
            writes_since_change: stored.writes_since_change,
            last_change: format_time(from_unix_ms(stored.last_change_ms)),
            shape: stored.shape.clone(),
            proposals,
            rename_suspects: suspects,
        })
    }

    /// The refused entries of a collection, newest first.
    pub fn rejects(&self, collection: &str, limit: usize) -> Result<Vec<Reject>> {
        check_collection_name(collection)?;
        let guard = self.lock();
        let mut statement = guard.conn.prepare_cached(
            "SELECT id, text, reason, performance, actor, at FROM ledger_rejects
             WHERE collection = ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = statement.query_map(params![collection, limit as i64], |row| {
            Ok(Reject {
                id: row.get(0)?,
                collection: collection.to_owned(),
                text: row.get(1)?,
                reason: row.get(2)?,
                performance: row.get(3)?,
                actor: row.get(4)?,
                at: row.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

fn check_collection_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(LedgerError::InvalidCollection(
            name.chars().take(80).collect(),
        ))
    }
}

/// Makes sure the cached state of `collection` matches the file (another process may have
/// written) and returns it; its `rev` is 0 for a collection not yet written.
fn load_fresh<'c>(
    conn: &Connection,
    cache: &'c mut HashMap<String, Collection>,
    collection: &str,
) -> Result<&'c mut Collection> {
    let row: Option<(i64, String)> = conn
        .query_row(
            "SELECT rev, state FROM ledger_collections WHERE name = ?1",
            [collection],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let rev = row.as_ref().map_or(0, |(rev, _)| *rev);
    let cached = match cache.entry(collection.to_owned()) {
        Cached::Occupied(cached) if cached.get().rev == rev => return Ok(cached.into_mut()),
        cached => cached,
    };
    let corrupt = |message: String| LedgerError::Corrupt {
        collection: collection.to_owned(),
        message,
    };
    let stored: Stored = match &row {
        Some((_, text)) => serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?,
        None => Stored::default(),
    };
    let validator = match &stored.settled {
        Some(settled) => Some(Arc::new(compile(collection, &settled.schema)?)),
        None => None,
    };
    let pending = load_proposals(conn, collection)?
        .into_iter()
        .filter(|p| p.status == "pending")
        .map(|p| p.field)
        .collect();
    let fresh = Collection {
        stored,
        rev,
        validator,
        pending,
    };
    Ok(match cached {
        Cached::Occupied(mut stale) => {
            *stale.get_mut() = fresh;
            stale.into_mut()
        }
        Cached::Vacant(vacant) => vacant.insert(fresh),
    })
}

/// The stability rule: see [`Stability`].
pub fn stability(
    writes_since_change: u64,
    last_change_ms: i64,
    now_ms: i64,
    options: &LedgerOptions,
) -> Stability {
    let quiet_for = Duration::from_millis(now_ms.saturating_sub(last_change_ms).max(0) as u64);
    if writes_since_change >= options.stable_writes && quiet_for >= options.stable_after {
        Stability::Stable
    } else if writes_since_change >= (options.stable_writes / 2).max(1) {
        Stability::Settling
    } else {
        Stability::Fluid
    }
}

fn format_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let at = at
        .replace_nanosecond(at.millisecond() as u32 * 1_000_000)
        .unwrap_or(at);
    at.format(&Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

fn unix_ms(at: OffsetDateTime) -> i64 {
    (at.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_unix_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}
