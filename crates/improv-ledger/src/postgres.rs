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
use tokio_postgres::types::ToSql;

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

/// `ledger_` and the stage's name in lower case, each run of other characters one `_`.
pub fn schema_name(stage: &str) -> String {
    let mut name = String::from("ledger_");
    for c in stage.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_lowercase());
        } else if !name.ends_with('_') {
            name.push('_');
        }
    }
    // PostgreSQL cuts identifiers at 63 bytes; all ASCII here.
    name.truncate(63);
    name
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
    /// migrated to a later one, and the entries not yet loaded loaded. `None` when the collection
    /// is not settled (it has no table yet). One process at a time per stage (an advisory lock):
    /// two workers syncing together do not both create or migrate.
    pub async fn sync(&self, ledger: &Ledger, collection: &str) -> Result<Option<Synced>> {
        let Some(now) = ledger.settled_columns(collection)? else {
            return Ok(None);
        };
        let mut client = self.pool.client().await?;
        let tx = client.transaction().await.map_err(self.err())?;
        let schema = quote_ident(&self.schema);
        tx.batch_execute(&format!(
            "SELECT pg_advisory_xact_lock(hashtext({lock}));
             CREATE SCHEMA IF NOT EXISTS {schema};
             SET LOCAL search_path TO {schema};
             CREATE TABLE IF NOT EXISTS improv_ledger_sync (
                 collection TEXT PRIMARY KEY, settled JSONB NOT NULL, loaded BIGINT NOT NULL);",
            lock = literal(&self.schema),
        ))
        .await
        .map_err(self.err())?;
        let row = tx
            .query_opt(
                "SELECT settled::text, loaded FROM improv_ledger_sync WHERE collection = $1",
                &[&collection],
            )
            .await
            .map_err(self.err())?;
        let before: Option<(SettledColumns, i64)> = match row {
            Some(row) => {
                let text: String = row.get(0);
                let settled = serde_json::from_str(&text).map_err(|e| LedgerError::Corrupt {
                    collection: collection.to_owned(),
                    message: format!("its record in {}.improv_ledger_sync: {e}", self.schema),
                })?;
                Some((settled, row.get(1)))
            }
            None => None,
        };
        let columns = now.columns()?;
        let (table, mut loaded) = match &before {
            None => {
                let ddl = schema::postgres_table(collection, &columns);
                tx.batch_execute(&ddl).await.map_err(self.err())?;
                (TableChange::Created, 0)
            }
            Some((old, loaded)) if old.version != now.version => {
                let (_, ddl) = schema::migration(collection, &old.columns()?, &columns);
                tx.batch_execute(&ddl).await.map_err(self.err())?;
                (TableChange::Migrated, *loaded)
            }
            Some((_, loaded)) => (TableChange::Current, *loaded),
        };
        let insert = insert_sql(collection, &columns);
        let mut count = 0u64;
        loop {
            let batch = ledger.entries_after(collection, loaded, BATCH)?;
            let Some(last) = batch.last() else {
                break;
            };
            loaded = last.id;
            count += batch.len() as u64;
            tx.execute(&insert, &[&batch_json(&batch)])
                .await
                .map_err(self.err())?;
        }
        let settled = serde_json::to_string(&now).map_err(LedgerError::from)?;
        tx.execute(
            "INSERT INTO improv_ledger_sync (collection, settled, loaded) VALUES ($1, $2::text::jsonb, $3)
             ON CONFLICT (collection) DO UPDATE SET settled = EXCLUDED.settled, loaded = EXCLUDED.loaded",
            &[&collection, &settled, &loaded],
        )
        .await
        .map_err(self.err())?;
        tx.commit().await.map_err(self.err())?;
        Ok(Some(Synced {
            collection: collection.to_owned(),
            version: now.version,
            table,
            loaded: count,
        }))
    }

    /// Whether `collection` has a table in the store.
    pub async fn has_table(&self, collection: &str) -> Result<bool> {
        let client = self.pool.client().await?;
        let row = client
            .query_one(
                "SELECT to_regclass(quote_ident($1) || '.' || quote_ident($2)) IS NOT NULL",
                &[&self.schema, &collection],
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
        "INSERT INTO {} (id, performance, actor, at{names}, doc)
         SELECT x.id, x.performance, x.actor, x.at::timestamptz{values}, x.doc
         FROM jsonb_to_recordset($1::text::jsonb)
              AS x(id BIGINT, performance TEXT, actor TEXT, at TEXT, doc JSONB)
         ON CONFLICT (id) DO NOTHING",
        quote_ident(collection)
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
        quote_ident(collection)
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
        assert_eq!(schema_name("Shop Floor-2"), "ledger_shop_floor_2");
        assert_eq!(schema_name("\"; DROP"), "ledger_drop");
    }
}
