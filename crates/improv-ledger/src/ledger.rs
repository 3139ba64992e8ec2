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

use crate::clock::{Clock, SystemClock};
use crate::path::{FieldPath, PathError, Segment};
use crate::schema::{self, EnumRule};
use crate::shape::{Kind, RenameSuspect, Shape, rename_suspects};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The ledger's file name inside a stage's state directory (`.improv/`).
pub const LEDGER_FILE: &str = "ledger.db";

/// Deepest nesting serde_json parses; deeper text fails with its recursion-limit error.
const PARSE_DEPTH_LIMIT: usize = 128;

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

/// A field seen after settling, waiting for the director.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Proposal {
    pub field: String,
    /// How many entries carried it.
    pub count: u64,
    pub shape: Shape,
    pub first_seen: String,
    /// `pending`, `accepted` or `rejected`.
    pub status: String,
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

/// What settling produced.
#[derive(Clone, Debug, Serialize)]
pub struct Settlement {
    pub collection: String,
    pub version: u32,
    pub schema: Value,
    /// The view created in the ledger's SQLite file.
    pub sqlite_ddl: String,
    pub postgres_ddl: String,
    pub schema_file: PathBuf,
}

/// What a decision on a proposal produced.
#[derive(Clone, Debug, Serialize)]
pub struct Evolution {
    pub collection: String,
    pub field: String,
    pub accepted: bool,
    pub version: u32,
    pub sqlite_migration: String,
    pub postgres_migration: String,
    pub schema_file: PathBuf,
}

/// Whether to take a proposed field into the settled schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Accept,
    Reject,
}

/// A comparison in a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// A substring of a string field, or an element of an array field.
    Contains,
    /// The field is present (value `true`) or absent (value `false`).
    Exists,
}

impl Op {
    /// `=`, `!=`, `<`, `<=`, `>`, `>=`, `contains`, `exists` (and `==`, `eq`, `ne`, `lt`, ...).
    pub fn parse(text: &str) -> Option<Op> {
        Some(match text {
            "=" | "==" | "eq" => Op::Eq,
            "!=" | "<>" | "ne" => Op::Ne,
            "<" | "lt" => Op::Lt,
            "<=" | "le" | "lte" => Op::Le,
            ">" | "gt" => Op::Gt,
            ">=" | "ge" | "gte" => Op::Ge,
            "contains" => Op::Contains,
            "exists" => Op::Exists,
            _ => return None,
        })
    }
}

/// One condition of a query.
#[derive(Clone, Debug, PartialEq)]
pub struct Filter {
    pub field: FieldPath,
    pub op: Op,
    pub value: Value,
}

/// Filters (all must hold), ordering and a limit.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    pub filters: Vec<Filter>,
    /// Fields to order by, each with `true` for descending; entries in recording order after.
    pub order_by: Vec<(FieldPath, bool)>,
    pub limit: Option<usize>,
}

impl Query {
    pub fn new() -> Self {
        Query::default()
    }

    /// Adds a condition; the field is a path such as `address.city` or `tags[0]`.
    pub fn filter(mut self, field: &str, op: Op, value: Value) -> Result<Self> {
        self.filters.push(Filter {
            field: FieldPath::parse(field)?,
            op,
            value,
        });
        Ok(self)
    }

    /// Orders by a field; `-field` orders descending.
    pub fn order_by(mut self, field: &str) -> Result<Self> {
        let (field, descending) = match field.strip_prefix('-') {
            Some(rest) => (rest, true),
            None => (field, false),
        };
        self.order_by.push((FieldPath::parse(field)?, descending));
        Ok(self)
    }

    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = Some(limit);
        self
    }

    /// A query from JSON, as the `query` prop receives it: `where` maps a field to a value
    /// (equality) or to `{op: value}`, e.g. `{"status": "open", "score": {">": 3}}`.
    pub fn from_json(
        filter: Option<&Value>,
        order_by: Option<&str>,
        limit: Option<usize>,
    ) -> Result<Self> {
        let mut query = Query::new();
        match filter {
            None | Some(Value::Null) => {}
            Some(Value::Object(map)) => {
                for (field, condition) in map {
                    match condition {
                        // An object is always `{op: value}`: a typo in an operator must not
                        // turn into an equality that silently matches nothing.
                        Value::Object(ops) => {
                            if ops.is_empty() {
                                return Err(unknown_operator(field, None));
                            }
                            for (op, value) in ops {
                                let op = Op::parse(op)
                                    .ok_or_else(|| unknown_operator(field, Some(op)))?;
                                query = query.filter(field, op, value.clone())?;
                            }
                        }
                        other => query = query.filter(field, Op::Eq, other.clone())?,
                    }
                }
            }
            Some(other) => {
                return Err(LedgerError::Query(format!(
                    "`where` must be an object like {{\"status\": \"open\", \"score\": {{\">\": 3}}}}, got {}",
                    Kind::of(other).name()
                )));
            }
        }
        if let Some(order_by) = order_by {
            for field in order_by.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                query = query.order_by(field)?;
            }
        }
        query.limit = limit;
        Ok(query)
    }

    /// A limit as clients send it in JSON: absent or null is no limit; anything but a whole
    /// number ≥ 1 is refused (a `-1` must not read as "everything").
    pub fn limit_from_json(limit: Option<&Value>) -> Result<Option<usize>> {
        match limit {
            None | Some(Value::Null) => Ok(None),
            Some(value) => value
                .as_u64()
                .filter(|n| *n >= 1)
                .map(|n| Some(usize::try_from(n).unwrap_or(usize::MAX)))
                .ok_or_else(|| {
                    LedgerError::Query(format!(
                        "`limit` is a whole number ≥ 1 (or absent for no limit), not {value}"
                    ))
                }),
        }
    }
}

/// The error for `{field: {op: value}}` whose `op` is not one (`None`: no operator at all).
fn unknown_operator(field: &str, op: Option<&str>) -> LedgerError {
    let what = match op {
        Some(op) => format!("unknown operator `{op}`"),
        None => "no operator".to_string(),
    };
    LedgerError::Query(format!(
        "`where` on `{field}`: {what}; use one of = != < > <= >= contains exists, as in {{\"{field}\": {{\">\": 3}}}} (an object value is matched with {{\"=\": {{...}}}})"
    ))
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

#[derive(Clone, Debug, Serialize, Deserialize)]
struct Settled {
    version: u32,
    at: String,
    /// The shape the schema was made from.
    shape: Shape,
    schema: Value,
    sqlite_ddl: String,
    postgres_ddl: String,
    /// Fields the director refused (written as `false` in the schema).
    #[serde(default)]
    rejected: Vec<String>,
    /// The fields with a column: they keep it in every later version, rare or not, so a query
    /// on the view never loses a column. Empty in states written before it was kept.
    #[serde(default)]
    column_paths: Vec<String>,
}

impl Settled {
    /// The fields that keep their column in the next version (see `column_paths`).
    fn kept_columns(&self) -> Result<Vec<FieldPath>> {
        if self.column_paths.is_empty() {
            return Ok(schema::columns(&self.shape)
                .into_iter()
                .map(|c| c.path)
                .collect());
        }
        Ok(self
            .column_paths
            .iter()
            .map(|p| FieldPath::parse(p))
            .collect::<Result<Vec<_>, _>>()?)
    }
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
        let conn = Connection::open(&path).map_err(open_error)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(open_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_error)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_error)?;
        conn.execute_batch(SCHEMA_SQL).map_err(open_error)?;
        Ok(Ledger {
            path,
            options,
            inner: Mutex::new(Inner {
                conn,
                cache: HashMap::new(),
            }),
        })
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

    /// Sets SQLite's WAL auto-checkpoint interval in pages; returns the one it replaces.
    pub(crate) fn set_wal_autocheckpoint(&self, pages: u32) -> Result<u32> {
        let guard = self.lock();
        let before = guard
            .conn
            .query_row("PRAGMA wal_autocheckpoint", [], |row| row.get(0))?;
        guard
            .conn
            .pragma_update(None, "wal_autocheckpoint", pages)?;
        Ok(before)
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

    /// Records one entry (JSON text or a value) into `collection`, creating the collection on its
    /// first entry. A refused entry is not an error: it is kept in the rejects and the outcome
    /// says why.
    pub fn record(
        &self,
        collection: &str,
        entry: impl Into<Input>,
        provenance: &Provenance,
    ) -> Result<RecordOutcome> {
        let mut outcomes =
            self.record_batch(collection, std::iter::once(entry.into()), provenance)?;
        Ok(outcomes.remove(0))
    }

    /// Records many entries in one transaction (much faster than one by one).
    pub fn record_batch(
        &self,
        collection: &str,
        entries: impl IntoIterator<Item = Input>,
        provenance: &Provenance,
    ) -> Result<Vec<RecordOutcome>> {
        let entries = entries.into_iter().map(|input| (input, None));
        self.write(collection, entries, provenance)
    }

    /// Records a batch in one transaction (how `record`, `record_batch` and imports write).
    pub(crate) fn write(
        &self,
        collection: &str,
        entries: impl IntoIterator<Item = (Input, Option<String>)>,
        provenance: &Provenance,
    ) -> Result<Vec<RecordOutcome>> {
        check_collection_name(collection)?;
        let mut guard = self.lock();
        let inner = &mut *guard;
        let tx = inner
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rev = load_fresh(&tx, &mut inner.cache, collection)?;
        let Some(state) = inner.cache.get_mut(collection) else {
            unreachable!("load_fresh inserts the collection")
        };
        let mut outcomes = Vec::new();
        let result = (|| -> Result<()> {
            let mut insert_entry = tx.prepare_cached(
                "INSERT INTO ledger_entries (collection, body, raw, performance, actor, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut insert_reject = tx.prepare_cached(
                "INSERT INTO ledger_rejects (collection, text, reason, performance, actor, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for (input, origin) in entries {
                let now = self.now();
                let at = format_time(now);
                let checked = self.check(state, input);
                let outcome = match checked {
                    Checked::Refused { text, reason } => {
                        let reason = match &origin {
                            Some(origin) => format!("{origin}: {reason}"),
                            None => reason,
                        };
                        insert_reject.execute(params![
                            collection,
                            text,
                            reason,
                            provenance.performance,
                            provenance.actor,
                            at
                        ])?;
                        state.stored.rejects += 1;
                        RecordOutcome::Rejected {
                            reject_id: tx.last_insert_rowid(),
                            reason,
                        }
                    }
                    Checked::Accepted { value, body, raw } => {
                        insert_entry.execute(params![
                            collection,
                            body,
                            raw,
                            provenance.performance,
                            provenance.actor,
                            at
                        ])?;
                        let id = tx.last_insert_rowid();
                        let mut proposed = Vec::new();
                        if let Some(settled) = &state.stored.settled {
                            let mut found = Vec::new();
                            new_fields(&value, &settled.shape, &FieldPath::root(), &mut found);
                            for (path, field_value) in found {
                                let field = path.to_string();
                                upsert_proposal(&tx, collection, &field, field_value, &at)?;
                                state.pending.insert(field.clone());
                                proposed.push(field);
                            }
                        }
                        if state.stored.shape.absorb(&value) {
                            state.stored.writes_since_change = 0;
                            state.stored.last_change_ms = unix_ms(now);
                        } else {
                            state.stored.writes_since_change += 1;
                        }
                        state.stored.records += 1;
                        RecordOutcome::Recorded { id, proposed }
                    }
                };
                outcomes.push(outcome);
            }
            Ok(())
        })();
        let result = result.and_then(|()| {
            let text = serde_json::to_string(&state.stored)?;
            tx.execute(
                "INSERT INTO ledger_collections (name, rev, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET rev = excluded.rev, state = excluded.state",
                params![collection, rev + 1, text],
            )?;
            Ok(())
        });
        match result.and_then(|()| tx.commit().map_err(LedgerError::from)) {
            Ok(()) => {
                state.rev = rev + 1;
            }
            Err(error) => {
                // The cached state saw writes that were rolled back: read it again next time.
                inner.cache.remove(collection);
                return Err(error);
            }
        }
        if self.options.auto_settle
            && state.stored.settled.is_none()
            && self.stability(&state.stored) == Stability::Stable
        {
            drop(guard);
            self.settle(collection)?;
        }
        Ok(outcomes)
    }

    /// Parses and checks one entry against the limits and the settled schema.
    fn check(&self, state: &Collection, input: Input) -> Checked {
        let (value, body, raw, size) = match input {
            Input::Unreadable { text, reason } => return Checked::Refused { text, reason },
            Input::Text(text) => {
                if text.len() > self.options.max_entry_bytes {
                    let reason = format!(
                        "the entry is {} bytes, over the limit of {}; split it or store large content in a file and record its path",
                        text.len(),
                        self.options.max_entry_bytes
                    );
                    return Checked::Refused { text, reason };
                }
                let value: Value = match serde_json::from_str(&text) {
                    Ok(value) => value,
                    Err(error) => {
                        let reason = if error.to_string().contains("recursion limit") {
                            format!(
                                "the entry nests deeper than {PARSE_DEPTH_LIMIT} levels (limit {}); flatten it",
                                self.options.max_depth
                            )
                        } else {
                            format!("malformed JSON: {error}")
                        };
                        return Checked::Refused { text, reason };
                    }
                };
                // Not written back as text: stored as JSONB straight from the value.
                let raw = has_wide_number(&value).then(|| text.trim().to_owned());
                (value, None, raw, text.len())
            }
            Input::Value(value) => {
                let body = match serde_json::to_string(&value) {
                    Ok(body) => body,
                    Err(error) => {
                        return Checked::Refused {
                            text: format!("{value:?}"),
                            reason: format!("cannot store the entry: {error}"),
                        };
                    }
                };
                if body.len() > self.options.max_entry_bytes {
                    let reason = format!(
                        "the entry is {} bytes, over the limit of {}; split it or store large content in a file and record its path",
                        body.len(),
                        self.options.max_entry_bytes
                    );
                    return Checked::Refused { text: body, reason };
                }
                let size = body.len();
                (value, Some(body), None, size)
            }
        };
        let refuse = |reason: String| Checked::Refused {
            text: raw.clone().or_else(|| body.clone()).unwrap_or_else(|| {
                serde_json::to_string(&value).unwrap_or_else(|e| format!("(unprintable: {e})"))
            }),
            reason,
        };
        if !value.is_object() {
            return refuse(format!(
                "an entry must be a JSON object, got {}; wrap it, e.g. {{\"value\": ...}}",
                Kind::of(&value).name()
            ));
        }
        let depth = depth(&value);
        if depth > self.options.max_depth {
            return refuse(format!(
                "the entry nests {depth} levels deep, over the limit of {}; flatten it",
                self.options.max_depth
            ));
        }
        if let Some(problems) = self.violations(state, &value) {
            return refuse(problems);
        }
        // JSONB is about as long as the compact text: one allocation, no regrowth.
        let mut body = Vec::with_capacity(size + size / 4 + 16);
        crate::jsonb::encode(&value, &mut body);
        Checked::Accepted { value, body, raw }
    }

    /// The reasons `value` breaks the collection's settled schema, if it does.
    fn violations(&self, state: &Collection, value: &Value) -> Option<String> {
        let settled = state.stored.settled.as_ref()?;
        let validator = state.validator.as_ref()?;
        let mut problems: Vec<String> = Vec::new();
        for error in validator.iter_errors(value) {
            let at = FieldPath::from_pointer(error.instance_path().as_str());
            let here = value.pointer(error.instance_path().as_str());
            let problem = match error.kind() {
                jsonschema::error::ValidationErrorKind::Type { .. } => {
                    let expected = settled
                        .shape
                        .at(&at)
                        .map(|s| schema_label(s, self.options.enum_rule()))
                        .unwrap_or_else(|| "another type".into());
                    format!(
                        "field `{at}`: expected {expected}, got {}",
                        here.map(preview).unwrap_or_default()
                    )
                }
                jsonschema::error::ValidationErrorKind::Required { property } => {
                    let name = property.as_str().unwrap_or_default();
                    let field = at.key(name);
                    let expected = settled
                        .shape
                        .at(&field)
                        .map(|s| schema_label(s, self.options.enum_rule()))
                        .unwrap_or_else(|| "a value".into());
                    format!("field `{field}` is missing; it is required ({expected})")
                }
                jsonschema::error::ValidationErrorKind::Enum { options } => {
                    let options: Vec<String> = options
                        .as_array()
                        .map(|o| o.iter().map(|v| v.to_string()).collect())
                        .unwrap_or_default();
                    format!(
                        "field `{at}`: expected one of {}, got {}",
                        options.join(", "),
                        here.map(preview).unwrap_or_default()
                    )
                }
                jsonschema::error::ValidationErrorKind::FalseSchema => format!(
                    "field `{at}` was rejected by the director for this collection; leave it out"
                ),
                _ => format!("field `{at}`: {}", truncate(&error.to_string(), 160)),
            };
            if !problems.contains(&problem) {
                problems.push(problem);
            }
            if problems.len() == 5 {
                problems.push("(more problems not shown)".into());
                break;
            }
        }
        (!problems.is_empty()).then(|| problems.join("; "))
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

    /// Entries of a collection that pass every filter, ordered, limited. An unknown collection
    /// has no entries.
    pub fn query(&self, collection: &str, query: &Query) -> Result<Vec<Entry>> {
        check_collection_name(collection)?;
        let (sql, params) = build_query(collection, query)?;
        let guard = self.lock();
        let mut statement = guard.conn.prepare_cached(&sql)?;
        let rows =
            statement.query_map(rusqlite::params_from_iter(params), row_to_entry(collection))?;
        let mut entries = Vec::new();
        for row in rows {
            entries.push(row??);
        }
        Ok(entries)
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
        load_fresh(&inner.conn, &mut inner.cache, name)?;
        let Some(state) = inner.cache.get(name) else {
            unreachable!("load_fresh inserts the collection")
        };
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

    /// The proposals of a collection (pending, accepted and rejected).
    pub fn proposals(&self, collection: &str) -> Result<Vec<Proposal>> {
        check_collection_name(collection)?;
        let guard = self.lock();
        load_proposals(&guard.conn, collection)
    }

    /// Precipitates a collection's shape into a JSON Schema and DDL, creates its SQLite view,
    /// writes `schemas/<collection>.schema.json`, and from now on validates every write.
    pub fn settle(&self, collection: &str) -> Result<Settlement> {
        check_collection_name(collection)?;
        let mut guard = self.lock();
        let inner = &mut *guard;
        let tx = inner
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rev = load_fresh(&tx, &mut inner.cache, collection)?;
        let Some(state) = inner.cache.get_mut(collection) else {
            unreachable!("load_fresh inserts the collection")
        };
        if rev == 0 || state.stored.records == 0 {
            return Err(LedgerError::UnknownCollection(collection.to_owned()));
        }
        if let Some(settled) = &state.stored.settled {
            return Err(LedgerError::AlreadySettled {
                collection: collection.to_owned(),
                version: settled.version,
            });
        }
        let shape = state.stored.shape.clone();
        let settled = self.make_settled(collection, shape, Vec::new(), 1, &[])?;
        tx.execute_batch(&format!(
            "DROP VIEW IF EXISTS {};\n{}",
            schema::quote_ident(&schema::sqlite_view_name(collection)),
            settled.sqlite_ddl
        ))?;
        let validator = compile(collection, &settled.schema)?;
        let mut stored = state.stored.clone();
        stored.settled = Some(settled.clone());
        tx.execute(
            "UPDATE ledger_collections SET rev = ?2, state = ?3 WHERE name = ?1",
            params![collection, rev + 1, serde_json::to_string(&stored)?],
        )?;
        let schema_file = self.write_schema_file(collection, &settled.schema)?;
        tx.commit()?;
        state.stored = stored;
        state.rev = rev + 1;
        state.validator = Some(Arc::new(validator));
        Ok(Settlement {
            collection: collection.to_owned(),
            version: settled.version,
            schema: settled.schema,
            sqlite_ddl: settled.sqlite_ddl,
            postgres_ddl: settled.postgres_ddl,
            schema_file,
        })
    }

    fn make_settled(
        &self,
        collection: &str,
        shape: Shape,
        rejected: Vec<String>,
        version: u32,
        keep_columns: &[FieldPath],
    ) -> Result<Settled> {
        let rejected_paths = rejected
            .iter()
            .map(|f| FieldPath::parse(f))
            .collect::<Result<Vec<_>, _>>()?;
        // Stored in its settled form, so checks of later writes see its maps as maps.
        let shape = shape.settled_form();
        let schema = schema::json_schema(
            collection,
            &shape,
            &rejected_paths,
            self.options.enum_rule(),
        );
        let columns = schema::columns_with(&shape, keep_columns);
        Ok(Settled {
            column_paths: columns.iter().map(|c| c.path.to_string()).collect(),
            version,
            at: format_time(self.now()),
            sqlite_ddl: schema::sqlite_view(collection, &columns),
            postgres_ddl: schema::postgres_table(collection, &columns),
            shape,
            schema,
            rejected,
        })
    }

    fn write_schema_file(&self, collection: &str, schema: &Value) -> Result<PathBuf> {
        let dir = self.schemas_dir();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LedgerError::Io { path, source }
        };
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let file = dir.join(format!("{collection}.schema.json"));
        let mut text = serde_json::to_string_pretty(schema)?;
        text.push('\n');
        std::fs::write(&file, text).map_err(io(&file))?;
        Ok(file)
    }

    /// Accepts a proposed field into the settled schema (a new schema version, with the
    /// migration DDL), or rejects it (entries carrying it are refused from now on).
    pub fn evolve(&self, collection: &str, field: &str, decision: Decision) -> Result<Evolution> {
        check_collection_name(collection)?;
        let field_path = FieldPath::parse(field)?;
        let field = field_path.to_string();
        let mut guard = self.lock();
        let inner = &mut *guard;
        let tx = inner
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rev = load_fresh(&tx, &mut inner.cache, collection)?;
        let Some(state) = inner.cache.get_mut(collection) else {
            unreachable!("load_fresh inserts the collection")
        };
        let Some(old) = state.stored.settled.clone() else {
            return Err(if rev == 0 {
                LedgerError::UnknownCollection(collection.to_owned())
            } else {
                LedgerError::NotSettled(collection.to_owned())
            });
        };
        if !state.pending.contains(&field) {
            return Err(LedgerError::NoProposal {
                collection: collection.to_owned(),
                field,
            });
        }
        let mut rejected = old.rejected.clone();
        let mut excluded: Vec<FieldPath> = Vec::new();
        for pending in &state.pending {
            if *pending != field || decision == Decision::Reject {
                excluded.push(FieldPath::parse(pending)?);
            }
        }
        for r in &rejected {
            excluded.push(FieldPath::parse(r)?);
        }
        if decision == Decision::Reject {
            rejected.push(field.clone());
        }
        let shape = state.stored.shape.without(&excluded);
        let old_columns = old.kept_columns()?;
        let mut keep = old_columns.clone();
        if decision == Decision::Accept {
            // The director asked for this field: it gets its column however rare it still is.
            keep.push(field_path.clone());
        }
        let settled = self.make_settled(collection, shape, rejected, old.version + 1, &keep)?;
        let (sqlite_migration, postgres_migration) = schema::migration(
            collection,
            &schema::columns_with(&old.shape, &old_columns),
            &schema::columns_with(&settled.shape, &keep),
        );
        let validator = compile(collection, &settled.schema)?;
        if decision == Decision::Accept {
            tx.execute_batch(&sqlite_migration)?;
        }
        tx.execute(
            "UPDATE ledger_proposals SET status = ?3, decided_at = ?4 WHERE collection = ?1 AND field = ?2",
            params![
                collection,
                field,
                if decision == Decision::Accept { "accepted" } else { "rejected" },
                format_time(self.now())
            ],
        )?;
        let mut stored = state.stored.clone();
        stored.settled = Some(settled.clone());
        tx.execute(
            "UPDATE ledger_collections SET rev = ?2, state = ?3 WHERE name = ?1",
            params![collection, rev + 1, serde_json::to_string(&stored)?],
        )?;
        let schema_file = self.write_schema_file(collection, &settled.schema)?;
        tx.commit()?;
        state.pending.remove(&field);
        state.stored = stored;
        state.rev = rev + 1;
        state.validator = Some(Arc::new(validator));
        let accepted = decision == Decision::Accept;
        Ok(Evolution {
            collection: collection.to_owned(),
            field,
            accepted,
            version: settled.version,
            sqlite_migration: if accepted {
                sqlite_migration
            } else {
                "-- rejected: no schema change".into()
            },
            postgres_migration: if accepted {
                postgres_migration
            } else {
                "-- rejected: no schema change".into()
            },
            schema_file,
        })
    }

    /// The settled JSON Schema of a collection, if it is settled.
    pub fn schema(&self, collection: &str) -> Result<Option<Value>> {
        check_collection_name(collection)?;
        let mut guard = self.lock();
        let inner = &mut *guard;
        load_fresh(&inner.conn, &mut inner.cache, collection)?;
        Ok(inner
            .cache
            .get(collection)
            .and_then(|c| c.stored.settled.as_ref())
            .map(|s| s.schema.clone()))
    }

    /// The settled schemas of `collections` (all settled collections when empty), compact, for
    /// an actor's system prompt. Empty when none is settled.
    pub fn context_for(&self, collections: &[&str]) -> Result<String> {
        let names: Vec<String> = if collections.is_empty() {
            self.collections()?
                .into_iter()
                .filter(|c| c.settled.is_some())
                .map(|c| c.name)
                .collect()
        } else {
            collections.iter().map(|c| c.to_string()).collect()
        };
        let mut lines = Vec::new();
        let mut summarised = false;
        let mut guard = self.lock();
        let inner = &mut *guard;
        // Each collection gets an equal share of the budget.
        let share = self.options.context_budget_bytes / names.len().max(1);
        for name in &names {
            check_collection_name(name)?;
            load_fresh(&inner.conn, &mut inner.cache, name)?;
            if let Some(settled) = inner
                .cache
                .get(name.as_str())
                .and_then(|c| c.stored.settled.as_ref())
            {
                let budget = share.saturating_sub(name.len() + 2);
                let (text, cut) =
                    schema::compact_within(&settled.shape, self.options.enum_rule(), budget);
                summarised |= cut;
                lines.push(format!("{name}: {text}"));
            }
        }
        if lines.is_empty() {
            return Ok(String::new());
        }
        let mut legend = String::from("`?` = optional");
        if lines.iter().any(|l| l.contains("{[k]: ")) {
            legend.push_str("; `{[k]: T}` = any keys, values T");
        }
        if summarised {
            legend.push_str(
                "; summarised: `object` and `…+N more` hide fields, `query` with `\"schema\": true` shows all",
            );
        }
        Ok(format!(
            "Ledger collections (record entries in these shapes; {legend}):\n{}\n",
            lines.join("\n")
        ))
    }

    /// Writes every entry of a collection as JSON lines; returns how many.
    pub fn export_jsonl(&self, collection: &str, out: &mut dyn Write) -> Result<u64> {
        let mut n = 0;
        self.for_each_entry(collection, |entry| {
            // Valid JSON text has no raw newlines inside strings, so joining lines is safe.
            let line = entry.text.replace(['\n', '\r'], " ");
            out.write_all(line.as_bytes())?;
            out.write_all(b"\n")?;
            n += 1;
            Ok(())
        })?;
        Ok(n)
    }

    /// Writes every entry of a collection as CSV: provenance columns, then one column per
    /// top-level field (most present first); nested values as JSON text. Returns how many.
    pub fn export_csv(&self, collection: &str, out: &mut dyn Write) -> Result<u64> {
        let info = self.collection(collection)?;
        let mut fields: Vec<(String, u64)> = info
            .shape
            .object
            .as_ref()
            .map(|o| o.fields.iter().map(|(k, s)| (k.clone(), s.count)).collect())
            .unwrap_or_default();
        fields.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut writer = csv::Writer::from_writer(out);
        let mut header = vec!["id", "performance", "actor", "at"];
        header.extend(fields.iter().map(|(k, _)| k.as_str()));
        writer.write_record(&header)?;
        let mut n = 0;
        self.for_each_entry(collection, |entry| {
            let mut record = vec![
                entry.id.to_string(),
                entry.performance.clone(),
                entry.actor.clone(),
                entry.at.clone(),
            ];
            for (key, _) in &fields {
                record.push(match entry.value.get(key) {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                });
            }
            writer
                .write_record(&record)
                .map_err(std::io::Error::other)?;
            n += 1;
            Ok(())
        })?;
        writer.flush().map_err(|source| LedgerError::Io {
            path: PathBuf::from("(export)"),
            source,
        })?;
        Ok(n)
    }

    fn for_each_entry(
        &self,
        collection: &str,
        mut each: impl FnMut(&Entry) -> std::io::Result<()>,
    ) -> Result<()> {
        check_collection_name(collection)?;
        let guard = self.lock();
        let mut statement = guard.conn.prepare(
            "SELECT id, json(body), raw, performance, actor, at FROM ledger_entries WHERE collection = ?1 ORDER BY id",
        )?;
        let rows = statement.query_map([collection], row_to_entry(collection))?;
        for row in rows {
            each(&row??).map_err(|source| LedgerError::Io {
                path: PathBuf::from("(export)"),
                source,
            })?;
        }
        Ok(())
    }
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub recorded: u64,
    pub rejected: u64,
    /// Fields proposed for a settled collection.
    pub proposed: Vec<String>,
}

enum Checked {
    Accepted {
        value: Value,
        /// The value in SQLite's JSONB encoding.
        body: Vec<u8>,
        raw: Option<String>,
    },
    Refused {
        text: String,
        reason: String,
    },
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
/// written); returns its revision (0 for a collection not yet written).
fn load_fresh(
    conn: &Connection,
    cache: &mut HashMap<String, Collection>,
    collection: &str,
) -> Result<i64> {
    let row: Option<(i64, String)> = conn
        .query_row(
            "SELECT rev, state FROM ledger_collections WHERE name = ?1",
            [collection],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    let rev = row.as_ref().map_or(0, |(rev, _)| *rev);
    if cache.get(collection).is_some_and(|c| c.rev == rev) {
        return Ok(rev);
    }
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
    cache.insert(
        collection.to_owned(),
        Collection {
            stored,
            rev,
            validator,
            pending,
        },
    );
    Ok(rev)
}

fn compile(collection: &str, schema: &Value) -> Result<jsonschema::Validator> {
    jsonschema::draft202012::new(schema).map_err(|e| LedgerError::Schema {
        collection: collection.to_owned(),
        message: e.to_string(),
    })
}

fn load_proposals(conn: &Connection, collection: &str) -> Result<Vec<Proposal>> {
    let mut statement = conn.prepare_cached(
        "SELECT field, count, shape, first_seen, status FROM ledger_proposals WHERE collection = ?1 ORDER BY first_seen, field",
    )?;
    let rows = statement.query_map([collection], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
        ))
    })?;
    let mut proposals = Vec::new();
    for row in rows {
        let (field, count, shape, first_seen, status) = row?;
        proposals.push(Proposal {
            field,
            count: count as u64,
            shape: serde_json::from_str(&shape).map_err(|e| LedgerError::Corrupt {
                collection: collection.to_owned(),
                message: e.to_string(),
            })?,
            first_seen,
            status,
        });
    }
    Ok(proposals)
}

fn upsert_proposal(
    conn: &Connection,
    collection: &str,
    field: &str,
    value: &Value,
    at: &str,
) -> Result<()> {
    let existing: Option<(String, String)> = conn
        .query_row(
            "SELECT shape, status FROM ledger_proposals WHERE collection = ?1 AND field = ?2",
            params![collection, field],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    match existing {
        Some((shape_text, status)) => {
            let mut shape: Shape = serde_json::from_str(&shape_text).unwrap_or_default();
            shape.absorb(value);
            // A field rejected before and seen again is pending again only if it got through,
            // which the schema prevents; an accepted one is not new. Either way, count it.
            let status = if status == "pending" {
                "pending"
            } else {
                status.as_str()
            };
            conn.execute(
                "UPDATE ledger_proposals SET shape = ?3, count = count + 1, status = ?4 WHERE collection = ?1 AND field = ?2",
                params![collection, field, serde_json::to_string(&shape)?, status],
            )?;
        }
        None => {
            conn.execute(
                "INSERT INTO ledger_proposals (collection, field, shape, count, first_seen, status) VALUES (?1, ?2, ?3, 1, ?4, 'pending')",
                params![collection, field, serde_json::to_string(&Shape::of(value))?, at],
            )?;
        }
    }
    Ok(())
}

/// Object keys in `value` that the settled shape has never seen, with their values.
fn new_fields<'v>(
    value: &'v Value,
    shape: &Shape,
    at: &FieldPath,
    out: &mut Vec<(FieldPath, &'v Value)>,
) {
    match value {
        Value::Object(map) => {
            let Some(object) = &shape.object else { return };
            if let Some(held) = &object.map {
                // A map's keys are data: a new key is a new entry, not a new field.
                for (key, item) in map {
                    new_fields(item, &held.values, &at.key(key), out);
                }
                return;
            }
            for (key, item) in map {
                match object.fields.get(key) {
                    Some(field) => new_fields(item, field, &at.key(key), out),
                    None => {
                        let path = at.key(key);
                        if !out.iter().any(|(p, _)| *p == path) {
                            out.push((path, item));
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            let Some(array) = &shape.array else { return };
            let path = at.child(Segment::Items);
            for item in items {
                new_fields(item, &array.items, &path, out);
            }
        }
        _ => {}
    }
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

fn build_query(collection: &str, query: &Query) -> Result<(String, Vec<SqlValue>)> {
    let mut sql = String::from(
        "SELECT id, json(body), raw, performance, actor, at FROM ledger_entries WHERE collection = ?",
    );
    let mut params: Vec<SqlValue> = vec![SqlValue::Text(collection.to_owned())];
    for filter in &query.filters {
        let path = SqlValue::Text(filter.field.to_sqlite()?);
        let field = filter.field.to_string();
        let value = &filter.value;
        match filter.op {
            Op::Exists => {
                let wanted = match value {
                    Value::Bool(b) => *b,
                    Value::Null => true,
                    _ => {
                        return Err(LedgerError::Query(format!(
                            "`exists` on `{field}` takes true or false"
                        )));
                    }
                };
                sql.push_str(if wanted {
                    " AND json_type(body, ?) IS NOT NULL"
                } else {
                    " AND json_type(body, ?) IS NULL"
                });
                params.push(path);
            }
            Op::Eq | Op::Ne if value.is_null() => {
                sql.push_str(if filter.op == Op::Eq {
                    " AND json_type(body, ?) = 'null'"
                } else {
                    " AND coalesce(json_type(body, ?), '') != 'null'"
                });
                params.push(path);
            }
            Op::Eq => {
                sql.push_str(" AND json_type(body, ?) = ? AND json_extract(body, ?) = ?");
                params.push(path.clone());
                params.push(SqlValue::Text(json_type_of(value).to_owned()));
                params.push(path);
                params.push(sql_value(value));
            }
            Op::Ne => {
                sql.push_str(
                    " AND NOT (coalesce(json_type(body, ?), '') = ? AND json_extract(body, ?) = ?)",
                );
                params.push(path.clone());
                params.push(SqlValue::Text(json_type_of(value).to_owned()));
                params.push(path);
                params.push(sql_value(value));
            }
            Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                let comparator = match filter.op {
                    Op::Lt => "<",
                    Op::Le => "<=",
                    Op::Gt => ">",
                    _ => ">=",
                };
                let types = match value {
                    Value::Number(_) => "('integer', 'real')",
                    Value::String(_) => "('text')",
                    _ => {
                        return Err(LedgerError::Query(format!(
                            "`{comparator}` on `{field}` compares numbers or strings, got {}",
                            Kind::of(value).name()
                        )));
                    }
                };
                sql.push_str(&format!(
                    " AND json_type(body, ?) IN {types} AND json_extract(body, ?) {comparator} ?"
                ));
                params.push(path.clone());
                params.push(path);
                params.push(sql_value(value));
            }
            Op::Contains => {
                if value.is_object() || value.is_array() {
                    return Err(LedgerError::Query(format!(
                        "`contains` on `{field}` takes a string, number or boolean"
                    )));
                }
                sql.push_str(
                    " AND ((json_type(body, ?) = 'array' AND EXISTS (SELECT 1 FROM json_each(body, ?) AS item WHERE item.value = ?))
                      OR (json_type(body, ?) = 'text' AND ? != '' AND instr(json_extract(body, ?), ?) > 0))",
                );
                let needle = sql_value(value);
                let text_needle = match value {
                    Value::String(s) => SqlValue::Text(s.clone()),
                    _ => SqlValue::Text(String::new()),
                };
                params.extend([
                    path.clone(),
                    path.clone(),
                    needle,
                    path.clone(),
                    text_needle.clone(),
                    path,
                    text_needle,
                ]);
            }
        }
    }
    sql.push_str(" ORDER BY ");
    for (field, descending) in &query.order_by {
        sql.push_str("json_extract(body, ?)");
        sql.push_str(if *descending { " DESC, " } else { " ASC, " });
        params.push(SqlValue::Text(field.to_sqlite()?));
    }
    sql.push_str("id");
    if let Some(limit) = query.limit {
        sql.push_str(" LIMIT ?");
        params.push(SqlValue::Integer(limit.min(i64::MAX as usize) as i64));
    }
    Ok((sql, params))
}

/// The `json_type` SQLite reports for a JSON value.
fn json_type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(true) => "true",
        Value::Bool(false) => "false",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "real",
        Value::String(_) => "text",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A JSON value as `json_extract` returns it.
fn sql_value(value: &Value) -> SqlValue {
    match value {
        Value::Null => SqlValue::Null,
        Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
        Value::Number(n) => match n.as_i64() {
            Some(i) => SqlValue::Integer(i),
            None => SqlValue::Real(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => SqlValue::Text(s.clone()),
        other => SqlValue::Text(other.to_string()),
    }
}

fn row_to_entry(
    collection: &str,
) -> impl Fn(&rusqlite::Row<'_>) -> rusqlite::Result<Result<Entry>> + '_ {
    move |row| {
        let body: String = row.get(1)?;
        let raw: Option<String> = row.get(2)?;
        let value = match serde_json::from_str(&body) {
            Ok(value) => value,
            Err(error) => {
                return Ok(Err(LedgerError::Corrupt {
                    collection: collection.to_owned(),
                    message: format!("entry {} is not JSON: {error}", row.get::<_, i64>(0)?),
                }));
            }
        };
        Ok(Ok(Entry {
            id: row.get(0)?,
            collection: collection.to_owned(),
            value,
            text: raw.unwrap_or(body),
            performance: row.get(3)?,
            actor: row.get(4)?,
            at: row.get(5)?,
        }))
    }
}

/// Whether a value holds a number serde_json could only keep as a float although it was
/// written as an integer beyond 64 bits (so the text must be kept verbatim).
fn has_wide_number(value: &Value) -> bool {
    match value {
        Value::Number(n) => n
            .as_f64()
            .is_some_and(|f| !n.is_i64() && !n.is_u64() && f.fract() == 0.0 && f.abs() >= 9.2e18),
        Value::Array(items) => items.iter().any(has_wide_number),
        Value::Object(map) => map.values().any(has_wide_number),
        _ => false,
    }
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The type label of a settled field, for messages: `integer`, `string(email)`, `"a"|"b"`.
fn schema_label(shape: &Shape, rule: EnumRule) -> String {
    let label = schema::compact(shape, rule, 3);
    if label.starts_with('{') {
        "object".into()
    } else {
        label
    }
}

fn preview(value: &Value) -> String {
    let kind = Kind::of(value).name();
    match value {
        Value::Null => "null".into(),
        Value::Object(_) => "an object".into(),
        Value::Array(_) => "an array".into(),
        other => format!("{kind} {}", truncate(&other.to_string(), 40)),
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max_chars).collect();
        format!("{cut}…")
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
