//! A stage's settled collections as real tables in the PostgreSQL store: a schema per stage
//! (`ledger_<stage>`), in it each settled collection's table made by the DDL the ledger writes
//! ([`schema::postgres_table`]), its entries loaded (each column read from `doc` by
//! [`schema::postgres_value`]), and each later version's migration ([`schema::migration`]) run
//! when the collection evolves. [`PgLedger::query`] answers a ledger [`Query`] from that table.
//!
//! The stage's ledger file stays where shapes are inferred and settled; PostgreSQL holds the
//! settled copy every worker and any SQL client reads. [`PgLedger::sync`] brings one collection
//! up to date and is cheap when nothing changed: `improv_ledger_sync` in the stage's schema keeps,
//! per collection, the version whose columns the table has (the "before" of the next migration)
//! and the last entry loaded. Connections come from the store's own pool
//! ([`improv_store::PgPool`]).

use crate::ledger::{Entry, Ledger, LedgerError, Op, Query, SettledColumns};
use crate::path::{FieldPath, Segment};
use crate::schema::{self, quote_ident};
use improv_store::{PgPool, StoreError};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tokio_postgres::types::ToSql;

/// An entry's fingerprint: its id and every stored part (entries never change once written),
/// so two files agree on it only when they hold the same entry.
fn fingerprint(entry: &Entry) -> String {
    let mut hash = Sha256::new();
    for part in [
        entry.id.to_string().as_str(),
        &entry.text,
        &entry.performance,
        &entry.actor,
        &entry.at,
    ] {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part.as_bytes());
    }
    hex::encode(hash.finalize())
}

/// Entries loaded per statement.
const BATCH: usize = 500;

/// What can go wrong with the store's copy of the ledger.
#[derive(Debug, thiserror::Error)]
pub enum PgLedgerError {
    /// The database: its message names the store, password hidden.
    #[error("the ledger in the store: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The table was made from other settled columns than this ledger file's.
    #[error(
        "collection `{collection}`: this ledger file's settled columns differ from those of its table in the store ({schema}): {differences}. Settle or evolve this ledger as the table's was, or use another stage name"
    )]
    Differs {
        schema: String,
        collection: String,
        differences: String,
    },
    /// Rows of this ledger file were already in the table: they would have been dropped.
    #[error(
        "{inserted} of {expected} entries were loaded into {schema}: the others' (source, id) are already in the table (rows written there by hand?); remove those rows or load into another stage"
    )]
    Dropped {
        schema: String,
        expected: usize,
        inserted: u64,
    },
    /// Two ledger files with one source (see [`Conflict`]).
    #[error(transparent)]
    Conflict(Box<Conflict>),
    /// A collection named as one of the store's own bookkeeping tables.
    #[error(
        "a collection named `{0}` cannot have a table in the store: the name is the ledger's own; record into another collection"
    )]
    Reserved(String),
    /// A collection named as a type of PostgreSQL's own (`date`, `text`, a catalog table): its
    /// table's row type would stand in for the built-in one in the store's SQL.
    #[error(
        "a collection named `{0}` cannot have a table in the store: PostgreSQL has a built-in type of that name, which the table's row type would hide from the ledger's SQL; record into another collection"
    )]
    BuiltIn(String),
}

/// Two ledger files with one source: the store loaded entries from `that` and this file
/// (`this`) holds something else at the last one. Nothing is loaded over the other's.
#[derive(Debug, thiserror::Error)]
#[error(
    "collection `{collection}`: two ledger files share the source {shared}: {that} loaded entries up to #{id} into {schema}, and this file, {this}, has {this_has} at #{id}; one is a copy of the other, and loading it would lose entries. Give the copy its own source: stop what uses it, run `sqlite3 LEDGER_FILE 'DELETE FROM ledger_identity'` on the copy (a new source is made when it next opens), and sync again"
)]
pub struct Conflict {
    pub schema: String,
    pub collection: String,
    pub shared: String,
    pub id: i64,
    pub this: String,
    pub that: String,
    pub this_has: &'static str,
}

/// The tables [`PgLedger::sync`] keeps in the stage's schema: no collection may be named so.
const RESERVED: [&str; 3] = [
    "improv_ledger_sync",
    "improv_ledger_loaded",
    "improv_ledger_rejected",
];

/// How the table's columns (`stored`, at version `then`) differ from the file's (`now`).
fn differences(then: u32, stored: &[schema::Column], now: u32, local: &[schema::Column]) -> String {
    let mut out = Vec::new();
    if then != now {
        out.push(format!(
            "the table is at version {then}, this file at {now}"
        ));
    }
    let kind = |c: &schema::Column| schema::postgres_type("", c);
    for column in local {
        match stored.iter().find(|s| s.name == column.name) {
            None => out.push(format!("`{}` is not a column of the table", column.name)),
            Some(s) if s != column => out.push(format!(
                "`{}` is {} here, {} in the table",
                column.name,
                kind(column),
                kind(s)
            )),
            Some(_) => {}
        }
    }
    for column in stored {
        if !local.iter().any(|c| c.name == column.name) {
            out.push(format!(
                "the table's `{}` is not a column here",
                column.name
            ));
        }
    }
    if out.is_empty() {
        out.push("the settled shapes differ".to_owned());
    }
    out.join("; ")
}

type Result<T> = std::result::Result<T, PgLedgerError>;

/// What [`PgLedger::sync`] did to a collection's table.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Synced {
    pub collection: String,
    /// The settled version the table now has.
    pub version: u32,
    /// `created`, `migrated` or `current`.
    pub table: TableChange,
    /// Entries loaded by this call.
    pub loaded: u64,
    /// Entries PostgreSQL refused (a value it cannot cast), by id, with its reason: skipped,
    /// kept in `improv_ledger_rejected`, never loaded by a later sync.
    pub rejected: Vec<(i64, String)>,
}

/// What happened to the table itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TableChange {
    Created,
    Migrated,
    Current,
}

/// One stage's settled collections in the PostgreSQL store.
pub struct PgLedger {
    pool: PgPool,
    schema: String,
}

impl std::fmt::Debug for PgLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgLedger")
            .field("store", &self.pool.name())
            .field("schema", &self.schema)
            .finish()
    }
}

/// `ledger_`, the stage's name in lower case (each run of other characters one `_`, cut to
/// keep the whole within PostgreSQL's 63 bytes), `_` and 8 hex digits of the SHA-256 of the exact
/// name: stages whose names fold alike ("Shop Floor", "shop-floor", two all-CJK names) still get
/// schemas of their own.
pub fn schema_name(stage: &str) -> String {
    /// `ledger_` + slug + `_` + 8 hex digits within 63 bytes.
    const SLUG_MAX: usize = 63 - 7 - 1 - 8;
    let mut slug = String::new();
    for c in stage.chars() {
        if slug.len() == SLUG_MAX {
            break;
        }
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('_') && !slug.is_empty() {
            slug.push('_');
        }
    }
    let slug = slug.trim_end_matches('_');
    let hash = hex::encode(Sha256::digest(stage.as_bytes()));
    format!("ledger_{slug}_{}", &hash[..8])
}

impl PgLedger {
    /// The settled collections of the stage named `stage` in the database of `pool`.
    pub fn new(pool: PgPool, stage: &str) -> PgLedger {
        PgLedger {
            pool,
            schema: schema_name(stage),
        }
    }

    /// The stage's schema in the store.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    fn err(&self) -> impl Fn(tokio_postgres::Error) -> PgLedgerError + '_ {
        |e| PgLedgerError::Store(self.pool.error(&e))
    }

    /// Brings `collection`'s table up to the ledger: created at its first settled version,
    /// migrated to a later one, and this ledger file's entries not yet loaded loaded. `None` when
    /// the collection is not settled (it has no table yet). One process at a time per stage (an
    /// advisory lock): two workers syncing together do not both create or migrate. Several ledger
    /// files (workers, a recreated `.improv/`) load into one table, each under its own
    /// [`Ledger::source`]; a file whose settled columns differ from the table's is refused
    /// ([`PgLedgerError::Differs`]). An entry PostgreSQL cannot take is skipped and named in
    /// [`Synced::rejected`] (kept in `improv_ledger_rejected`) rather than blocking the rest.
    pub async fn sync(&self, ledger: &Ledger, collection: &str) -> Result<Option<Synced>> {
        let Some(now) = ledger.settled_columns(collection)? else {
            return Ok(None);
        };
        if RESERVED.contains(&collection) {
            return Err(PgLedgerError::Reserved(collection.to_owned()));
        }
        let mut client = self.pool.client().await?;
        let mut tx = client.transaction().await.map_err(self.err())?;
        let schema = quote_ident(&self.schema);
        tx.batch_execute(&format!(
            "SELECT pg_advisory_xact_lock(hashtext({lock}));
             SET LOCAL standard_conforming_strings = on;
             CREATE SCHEMA IF NOT EXISTS {schema};
             SET LOCAL search_path TO {schema}, pg_catalog;
             CREATE TABLE IF NOT EXISTS improv_ledger_sync (
                 collection TEXT PRIMARY KEY, settled JSONB NOT NULL);
             CREATE TABLE IF NOT EXISTS improv_ledger_loaded (
                 source TEXT NOT NULL, collection TEXT NOT NULL, loaded BIGINT NOT NULL,
                 PRIMARY KEY (source, collection));
             ALTER TABLE improv_ledger_loaded ADD COLUMN IF NOT EXISTS last TEXT,
                 ADD COLUMN IF NOT EXISTS file TEXT;
             CREATE TABLE IF NOT EXISTS improv_ledger_rejected (
                 source TEXT NOT NULL, collection TEXT NOT NULL, id BIGINT NOT NULL,
                 reason TEXT NOT NULL, PRIMARY KEY (source, collection, id));",
            lock = literal(&self.schema),
        ))
        .await
        .map_err(self.err())?;
        // Every table brings a row type of its name, and the schema comes first in the search
        // path: a collection named `date` or `text` would make `::date` or `$1::text` in the
        // SQL below mean that table's rows (review finding). Such names get no table.
        let built_in = tx
            .query_opt(
                "SELECT 1 FROM pg_catalog.pg_type
                 WHERE typname = $1 AND typnamespace = 'pg_catalog'::regnamespace",
                &[&schema::pg_name(collection)],
            )
            .await
            .map_err(self.err())?;
        if built_in.is_some() {
            return Err(PgLedgerError::BuiltIn(collection.to_owned()));
        }
        let columns = now.columns()?;
        let table = self.bring_table(&tx, collection, &now, &columns).await?;
        let source = ledger.source();
        let mut loaded = self.check_same_file(&tx, ledger, collection).await?;
        let insert = insert_sql(collection, &columns);
        let (mut count, mut rejected) = (0u64, Vec::new());
        loop {
            let batch = ledger.entries_after(collection, loaded, BATCH)?;
            let Some(last) = batch.last() else {
                break;
            };
            loaded = last.id;
            let (inserted, refused) = self.load(&mut tx, &insert, source, &batch).await?;
            count += inserted;
            rejected.extend(refused);
        }
        for (id, reason) in &rejected {
            tx.execute(
                "INSERT INTO improv_ledger_rejected (source, collection, id, reason)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&source, &collection, id, reason],
            )
            .await
            .map_err(self.err())?;
        }
        let last = match ledger.entries_after(collection, loaded - 1, 1)?.first() {
            Some(entry) if entry.id == loaded => Some(fingerprint(entry)),
            _ => None,
        };
        let file = crate::ledger::whereabouts(ledger.path());
        tx.execute(
            "INSERT INTO improv_ledger_loaded (source, collection, loaded, last, file)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (source, collection) DO UPDATE
             SET loaded = EXCLUDED.loaded, last = EXCLUDED.last, file = EXCLUDED.file",
            &[&source, &collection, &loaded, &last, &file],
        )
        .await
        .map_err(self.err())?;
        tx.commit().await.map_err(self.err())?;
        Ok(Some(Synced {
            collection: collection.to_owned(),
            version: now.version,
            table,
            loaded: count,
            rejected,
        }))
    }

    /// The last entry of `collection` loaded under this file's source, after checking that
    /// this file holds that same entry: when it does not, another file with the same source
    /// (a copy its identity check could not see, a cloned volume) loaded it, and loading this
    /// one would suppress or mix entries; that is [`PgLedgerError::Conflict`], naming both.
    async fn check_same_file(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        ledger: &Ledger,
        collection: &str,
    ) -> Result<i64> {
        let source = ledger.source();
        let row = tx
            .query_opt(
                "SELECT loaded, last, file FROM improv_ledger_loaded
                 WHERE source = $1 AND collection = $2",
                &[&source, &collection],
            )
            .await
            .map_err(self.err())?;
        let Some(row) = row else {
            return Ok(0);
        };
        let (loaded, last, file): (i64, Option<String>, Option<String>) =
            (row.get(0), row.get(1), row.get(2));
        // Rows written before fingerprints were kept have none: nothing to compare.
        let Some(last) = last else {
            return Ok(loaded);
        };
        let here = ledger.entries_after(collection, loaded - 1, 1)?;
        match here.first() {
            Some(entry) if entry.id == loaded && fingerprint(entry) == last => Ok(loaded),
            found => Err(PgLedgerError::Conflict(Box::new(Conflict {
                schema: self.schema.clone(),
                collection: collection.to_owned(),
                shared: source.to_owned(),
                id: loaded,
                this: crate::ledger::whereabouts(ledger.path()),
                that: file.unwrap_or_else(|| "another ledger file".to_owned()),
                this_has: match found {
                    Some(entry) if entry.id == loaded => "another entry",
                    _ => "no entry",
                },
            }))),
        }
    }

    /// Creates or migrates the table to `now`, or checks it already has `now`'s columns.
    async fn bring_table(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        collection: &str,
        now: &SettledColumns,
        columns: &[schema::Column],
    ) -> Result<TableChange> {
        let row = tx
            .query_opt(
                "SELECT settled::text FROM improv_ledger_sync WHERE collection = $1",
                &[&collection],
            )
            .await
            .map_err(self.err())?;
        let before: Option<SettledColumns> = match row {
            Some(row) => {
                let text: String = row.get(0);
                Some(
                    serde_json::from_str(&text).map_err(|e| LedgerError::Corrupt {
                        collection: collection.to_owned(),
                        message: format!("its record in {}.improv_ledger_sync: {e}", self.schema),
                    })?,
                )
            }
            None => None,
        };
        let change = match &before {
            None => {
                let ddl = schema::postgres_store_table(collection, columns);
                tx.batch_execute(&ddl).await.map_err(self.err())?;
                TableChange::Created
            }
            Some(old) if old.version < now.version => {
                let (_, ddl) = schema::migration(collection, &old.columns()?, columns);
                tx.batch_execute(&ddl).await.map_err(self.err())?;
                TableChange::Migrated
            }
            Some(old) => {
                let stored = old.columns()?;
                if old.version != now.version || stored != columns {
                    return Err(PgLedgerError::Differs {
                        schema: self.schema.clone(),
                        collection: collection.to_owned(),
                        differences: differences(old.version, &stored, now.version, columns),
                    });
                }
                return Ok(TableChange::Current);
            }
        };
        let settled = serde_json::to_string(now).map_err(LedgerError::from)?;
        tx.execute(
            "INSERT INTO improv_ledger_sync (collection, settled) VALUES ($1, $2::text::jsonb)
             ON CONFLICT (collection) DO UPDATE SET settled = EXCLUDED.settled",
            &[&collection, &settled],
        )
        .await
        .map_err(self.err())?;
        Ok(change)
    }

    /// Loads one batch: all at once, or, when that fails, each entry under its own savepoint,
    /// the ones PostgreSQL refuses returned with its reason. Every entry is inserted or
    /// returned: a row the table already has under this source is an error, never dropped.
    async fn load(
        &self,
        tx: &mut tokio_postgres::Transaction<'_>,
        insert: &str,
        source: &str,
        batch: &[Entry],
    ) -> Result<(u64, Vec<(i64, String)>)> {
        let whole = tx.transaction().await.map_err(self.err())?;
        match whole.execute(insert, &[&source, &batch_json(batch)]).await {
            Ok(n) => {
                self.check_count(n, batch.len())?;
                whole.commit().await.map_err(self.err())?;
                return Ok((n, Vec::new()));
            }
            Err(_) => whole.rollback().await.map_err(self.err())?,
        }
        let (mut inserted, mut rejected) = (0, Vec::new());
        for entry in batch {
            let one = tx.transaction().await.map_err(self.err())?;
            let json = batch_json(std::slice::from_ref(entry));
            match one.execute(insert, &[&source, &json]).await {
                Ok(n) => {
                    self.check_count(n, 1)?;
                    one.commit().await.map_err(self.err())?;
                    inserted += n;
                }
                // Only the entry's data (class 22, data exception; 23, a constraint) rejects
                // it: a timeout or a lost connection is the store's, and fails the sync.
                Err(e) => match e.as_db_error() {
                    Some(d) if matches!(&d.code().code()[..2], "22" | "23") => {
                        let reason = d.message().to_owned();
                        one.rollback().await.map_err(self.err())?;
                        rejected.push((entry.id, reason));
                    }
                    _ => return Err(self.err()(e)),
                },
            }
        }
        Ok((inserted, rejected))
    }

    fn check_count(&self, inserted: u64, expected: usize) -> Result<()> {
        if inserted == expected as u64 {
            return Ok(());
        }
        Err(PgLedgerError::Dropped {
            schema: self.schema.clone(),
            expected,
            inserted,
        })
    }

    /// Whether `collection` has a table in the store.
    pub async fn has_table(&self, collection: &str) -> Result<bool> {
        let client = self.pool.client().await?;
        let row = client
            .query_one(
                "SELECT to_regclass(quote_ident($1) || '.' || quote_ident($2)) IS NOT NULL",
                &[&self.schema, &schema::pg_name(collection)],
            )
            .await
            .map_err(self.err())?;
        Ok(row.get(0))
    }

    /// The entries of `collection`'s table that pass every filter, ordered, limited: the
    /// same [`Query`] the ledger file answers, read from `doc` in the store.
    pub async fn query(&self, collection: &str, query: &Query) -> Result<Vec<Entry>> {
        let (sql, params) = select_sql(&self.schema, collection, query)?;
        let params: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| -> &(dyn ToSql + Sync) { &**p })
            .collect();
        let client = self.pool.client().await?;
        let rows = client.query(&sql, &params).await.map_err(self.err())?;
        rows.iter()
            .map(|row| {
                let text: String = row.get(1);
                let value = serde_json::from_str(&text).map_err(LedgerError::from)?;
                Ok(Entry {
                    id: row.get(0),
                    collection: collection.to_owned(),
                    value,
                    text,
                    performance: row.get(2),
                    actor: row.get(3),
                    at: row.get(4),
                })
            })
            .collect()
    }
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The INSERT of a batch of entries given as one JSON array of `{id, performance, actor, at,
/// doc}`: each column read from `doc` as the DDL's loader reads it; an entry already there is
/// left as it is.
fn insert_sql(collection: &str, columns: &[schema::Column]) -> String {
    let names: String = columns
        .iter()
        .map(|c| format!(", {}", quote_ident(&c.name)))
        .collect();
    let values: String = columns
        .iter()
        .map(|c| format!(", {}", schema::postgres_value(collection, c, "x.doc")))
        .collect();
    format!(
        "INSERT INTO {} (source, id, performance, actor, at{names}, doc)
         SELECT $1::text, x.id, x.performance, x.actor, x.at::timestamptz{values}, x.doc
         FROM jsonb_to_recordset($2::text::jsonb)
              AS x(id BIGINT, performance TEXT, actor TEXT, at TEXT, doc JSONB)
         ON CONFLICT (source, id) DO NOTHING",
        schema::pg_table(collection)
    )
}

/// A batch as JSON text, each entry's own text as `doc` (digit for digit: no float rounding of
/// big integers on the way).
fn batch_json(batch: &[Entry]) -> String {
    let items: Vec<String> = batch
        .iter()
        .map(|e| {
            format!(
                "{{\"id\":{},\"performance\":{},\"actor\":{},\"at\":{},\"doc\":{}}}",
                e.id,
                Value::from(e.performance.as_str()),
                Value::from(e.actor.as_str()),
                Value::from(e.at.as_str()),
                e.text
            )
        })
        .collect();
    format!("[{}]", items.join(","))
}

/// A field path as PostgreSQL's `text[]` path (`doc #> $n`). A path through every item of an
/// array (`tags[]`) has none: such a query is refused, as by the ledger file.
fn pg_path(field: &FieldPath) -> Result<Vec<String>> {
    field
        .0
        .iter()
        .map(|segment| match segment {
            Segment::Key(key) => Ok(key.clone()),
            Segment::Index(i) => Ok(i.to_string()),
            Segment::Items => Err(LedgerError::Query(format!(
                "`{field}` names every item of a list; query the list itself (`contains`)"
            ))
            .into()),
        })
        .collect()
}

type Param = Box<dyn ToSql + Sync + Send>;

/// The SELECT for a [`Query`] over the table's `doc`, with its parameters.
fn select_sql(schema: &str, collection: &str, query: &Query) -> Result<(String, Vec<Param>)> {
    let mut sql = format!(
        "SELECT id, doc::text, performance, actor, \
         to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
         FROM {}.{} WHERE true",
        quote_ident(schema),
        schema::pg_table(collection)
    );
    let mut params: Vec<Param> = Vec::new();
    let param = |value: Param, params: &mut Vec<Param>| {
        params.push(value);
        format!("${}", params.len())
    };
    for filter in &query.filters {
        let path = param(Box::new(pg_path(&filter.field)?), &mut params);
        let at = format!("(doc #> {path}::text[])");
        let field = filter.field.to_string();
        let value = &filter.value;
        let condition = match filter.op {
            Op::Exists => match value {
                Value::Bool(false) => format!("{at} IS NULL"),
                Value::Bool(true) | Value::Null => format!("{at} IS NOT NULL"),
                _ => {
                    return Err(LedgerError::Query(format!(
                        "`exists` on `{field}` takes true or false"
                    ))
                    .into());
                }
            },
            Op::Eq | Op::Ne => {
                let v = param(Box::new(value.to_string()), &mut params);
                let equal = format!("coalesce({at} = {v}::text::jsonb, false)");
                if filter.op == Op::Eq {
                    equal
                } else {
                    format!("NOT {equal}")
                }
            }
            Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                let comparator = match filter.op {
                    Op::Lt => "<",
                    Op::Le => "<=",
                    Op::Gt => ">",
                    _ => ">=",
                };
                match value {
                    Value::Number(_) => {
                        let v = param(Box::new(value.to_string()), &mut params);
                        format!(
                            "(jsonb_typeof({at}) = 'number' AND ({at} #>> '{{}}')::numeric {comparator} {v}::text::numeric)"
                        )
                    }
                    Value::String(s) => {
                        let v = param(Box::new(s.clone()), &mut params);
                        format!(
                            "(jsonb_typeof({at}) = 'string' AND ({at} #>> '{{}}') COLLATE \"C\" {comparator} {v}::text)"
                        )
                    }
                    _ => {
                        return Err(LedgerError::Query(format!(
                            "`{comparator}` on `{field}` compares numbers or strings"
                        ))
                        .into());
                    }
                }
            }
            Op::Contains => {
                if value.is_object() || value.is_array() {
                    return Err(LedgerError::Query(format!(
                        "`contains` on `{field}` takes a string, number or boolean"
                    ))
                    .into());
                }
                let item = param(Box::new(value.to_string()), &mut params);
                let text = param(
                    Box::new(
                        value
                            .as_str()
                            .map_or_else(|| value.to_string(), str::to_owned),
                    ),
                    &mut params,
                );
                format!(
                    "(CASE jsonb_typeof({at}) \
                     WHEN 'array' THEN {at} @> jsonb_build_array({item}::text::jsonb) \
                     WHEN 'string' THEN strpos({at} #>> '{{}}', {text}::text) > 0 \
                     ELSE false END)"
                )
            }
        };
        sql.push_str(" AND ");
        sql.push_str(&condition);
    }
    let mut order = Vec::new();
    for (field, descending) in &query.order_by {
        let path = param(Box::new(pg_path(field)?), &mut params);
        order.push(format!(
            "doc #> {path}::text[]{}",
            if *descending { " DESC" } else { "" }
        ));
    }
    order.push("id".to_owned());
    sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
    if let Some(limit) = query.limit {
        let limit = param(
            Box::new(i64::try_from(limit).unwrap_or(i64::MAX)),
            &mut params,
        );
        sql.push_str(&format!(" LIMIT {limit}"));
    }
    Ok((sql, params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_name_becomes_one_schema_name() {
        let shop = schema_name("Shop Floor");
        assert!(
            shop.starts_with("ledger_shop_floor_") && shop.len() == 26,
            "{shop}"
        );
        assert_ne!(shop, schema_name("shop-floor"));
        assert_ne!(schema_name("店铺"), schema_name("仓库"));
        assert!(schema_name("\"; DROP").starts_with("ledger_drop_"));
        let long = schema_name(&"Ä".repeat(10).repeat(40));
        assert!(long.len() <= 63, "{long}");
        assert!(schema_name(&"a".repeat(200)).len() == 63);
    }
}
