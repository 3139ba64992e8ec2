//! The `record` and `query` props: how actors write to and read from the ledger.
//!
//! Their tool schemas are kept tiny (each spec is at most 375 bytes serialized, checked by a
//! test), because every byte is paid on every turn; `query`'s `schema` flag (29 bytes) is what
//! lets the context carry a summary of a long settled schema instead of all of it. SQLite work runs on tokio's blocking pool.
//!
//! In a PostgreSQL store ([`props_in_store`]) a settled collection is also a table there
//! ([`crate::postgres`]): `record` brings it up to date after each write, and `query` reads it.

use crate::ledger::{Entry, Input, Ledger, LedgerError, Provenance, Query, RecordOutcome};
use crate::postgres::PgLedger;
use async_trait::async_trait;
use improv_kernel::{Access, Prop, PropContext, PropError, ToolSpec};
use serde_json::{Value, json};
use std::sync::Arc;

/// Entries `query` returns when the model gives no limit.
const DEFAULT_LIMIT: usize = 20;
/// The most entries one `query` call returns.
const MAX_LIMIT: usize = 200;
/// The most bytes of entries one `query` reply carries.
const MAX_REPLY_BYTES: usize = 32 * 1024;

/// The `record` and `query` props over a ledger. Entries are attributed to the performance and
/// actor in the call's [`PropContext`].
pub fn props(ledger: Arc<Ledger>) -> Vec<Arc<dyn Prop>> {
    make(ledger, None)
}

/// The `record` and `query` props of a stage performed from a PostgreSQL store: each settled
/// collection is kept as a table in `store` and queried there.
pub fn props_in_store(ledger: Arc<Ledger>, store: Arc<PgLedger>) -> Vec<Arc<dyn Prop>> {
    make(ledger, Some(store))
}

fn make(ledger: Arc<Ledger>, store: Option<Arc<PgLedger>>) -> Vec<Arc<dyn Prop>> {
    vec![
        Arc::new(RecordProp {
            ledger: ledger.clone(),
            store: store.clone(),
            spec: record_spec(),
        }),
        Arc::new(QueryProp {
            ledger,
            store,
            spec: query_spec(),
        }),
    ]
}

fn record_spec() -> ToolSpec {
    ToolSpec {
        name: "record".into(),
        description: "Save a JSON object in a ledger collection (made on first use). Reuse the field names already in use.".into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "collection": {"type": "string"},
                "entry": {"type": "object"}
            },
            "required": ["collection", "entry"]
        }),
    }
}

fn query_spec() -> ToolSpec {
    ToolSpec {
        name: "query".into(),
        description: "Read a ledger collection.".into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "collection": {"type": "string"},
                "where": {"type": "object", "description": "{f: v} or {f: {op: v}}, op: = != < > <= >= contains exists"},
                "order_by": {"type": "string", "description": "f or -f"},
                "limit": {"type": "integer"},
                "schema": {"type": "boolean"}
            },
            "required": ["collection"]
        }),
    }
}

struct RecordProp {
    ledger: Arc<Ledger>,
    store: Option<Arc<PgLedger>>,
    spec: ToolSpec,
}

struct QueryProp {
    ledger: Arc<Ledger>,
    store: Option<Arc<PgLedger>>,
    spec: ToolSpec,
}

fn collection_arg(arguments: &Value) -> Result<String, PropError> {
    match arguments.get("collection") {
        Some(Value::String(name)) => Ok(name.clone()),
        _ => Err(PropError::new(
            "`collection` is required: the name of a ledger collection, e.g. \"findings\"",
        )),
    }
}

fn to_prop_error(error: LedgerError) -> PropError {
    PropError::new(error.to_string())
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PropError> + Send + 'static,
) -> Result<T, PropError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| PropError::new(format!("the ledger call did not finish: {e}")))?
}

#[async_trait]
impl Prop for RecordProp {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, arguments: Value, context: &PropContext) -> Result<String, PropError> {
        let collection = collection_arg(&arguments)?;
        let input = match arguments.get("entry") {
            Some(Value::String(text)) => Input::Text(text.clone()),
            Some(value @ Value::Object(_)) => Input::Value(value.clone()),
            Some(other) => Input::Value(other.clone()),
            None => {
                return Err(PropError::new(
                    "`entry` is required: the JSON object to record",
                ));
            }
        };
        let ledger = self.ledger.clone();
        let provenance = Provenance::new(context.performance.as_ref(), context.actor.as_ref());
        let outcome = {
            let collection = collection.clone();
            blocking(move || {
                ledger
                    .record(&collection, input, &provenance)
                    .map_err(to_prop_error)
            })
            .await?
        };
        let behind = match (&outcome, &self.store) {
            (RecordOutcome::Recorded { .. }, Some(store)) => {
                match store.sync(&self.ledger, &collection).await {
                    Ok(Some(synced)) if !synced.rejected.is_empty() => {
                        format!(" ({})", refused(&synced.rejected))
                    }
                    Ok(_) => String::new(),
                    // Recorded all the same: the next sync loads every entry not yet loaded.
                    Err(e) => format!(
                        " (the store's table is behind and catches up on the next write: {e})"
                    ),
                }
            }
            _ => String::new(),
        };
        match outcome {
            RecordOutcome::Recorded { id, proposed } if proposed.is_empty() => {
                Ok(format!("recorded #{id} in {collection}{behind}"))
            }
            RecordOutcome::Recorded { id, proposed } => Ok(format!(
                "recorded #{id} in {collection}; new fields {} are not in its settled schema and were proposed to the director{behind}",
                proposed.join(", ")
            )),
            RecordOutcome::Rejected { reason, .. } => Err(PropError::new(format!(
                "rejected: {reason}. The entry is kept in the rejects of {collection}; fix it and record it again."
            ))),
        }
    }
}

#[async_trait]
impl Prop for QueryProp {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn access(&self, _arguments: &Value) -> Access {
        Access::Read
    }

    async fn call(&self, arguments: Value, _context: &PropContext) -> Result<String, PropError> {
        let collection = collection_arg(&arguments)?;
        if arguments.get("schema") == Some(&Value::Bool(true)) {
            return self.schema(collection).await;
        }
        let limit = Query::limit_from_json(arguments.get("limit"))
            .map_err(to_prop_error)?
            .unwrap_or(DEFAULT_LIMIT)
            .min(MAX_LIMIT);
        let order_by = match arguments.get("order_by") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                return Err(PropError::new(
                    "`order_by` must be a field name, e.g. \"-score\"",
                ));
            }
        };
        let query = Query::from_json(arguments.get("where"), order_by.as_deref(), Some(limit))
            .map_err(to_prop_error)?;
        let behind = match self.in_store(&collection, &query).await? {
            InStore::Answered(entries) => return Ok(reply(&collection, &entries, limit, &[])),
            InStore::NotThere => None,
            InStore::Behind(why) => Some(why),
        };
        let ledger = self.ledger.clone();
        let name = collection.clone();
        let (entries, known) = blocking(move || {
            let entries = ledger.query(&name, &query).map_err(to_prop_error)?;
            let known = if entries.is_empty() {
                ledger
                    .collections()
                    .map_err(to_prop_error)?
                    .into_iter()
                    .map(|c| c.name)
                    .collect()
            } else {
                Vec::new()
            };
            Ok((entries, known))
        })
        .await?;
        let answer = reply(&collection, &entries, limit, &known);
        Ok(match behind {
            Some(why) => format!(
                "{answer}(answered from the ledger file: the store's table is behind: {why})\n"
            ),
            None => answer,
        })
    }
}

/// Says which entries the store's table refused, and why (the first reason).
fn refused(rejected: &[(i64, String)]) -> String {
    let ids: Vec<String> = rejected.iter().map(|(id, _)| format!("#{id}")).collect();
    let why = rejected.first().map_or("", |(_, reason)| reason.as_str());
    format!(
        "the store's table could not take {}: {why}; they stay in the ledger file, skipped in the table",
        ids.join(", ")
    )
}

/// Where a query is answered: the store's table, or the ledger file.
enum InStore {
    Answered(Vec<Entry>),
    /// No store, or the collection is not settled.
    NotThere,
    /// The table could not be brought up to date: why.
    Behind(String),
}

/// The reply to a query: an entry a line, capped at [`MAX_REPLY_BYTES`]; with none, whether the
/// collection exists (`known`: the collections there are, when looked up).
fn reply(collection: &str, entries: &[Entry], limit: usize, known: &[String]) -> String {
    if entries.is_empty() {
        return if known.iter().any(|k| k == collection) || known.is_empty() {
            format!("no entries in {collection} match")
        } else {
            format!(
                "no entries: there is no collection {collection}; collections: {}",
                known.join(", ")
            )
        };
    }
    let mut out = String::new();
    let mut shown = 0;
    for entry in entries {
        let line = format!("#{} {}\n", entry.id, entry.text);
        if out.len() + line.len() > MAX_REPLY_BYTES {
            break;
        }
        out.push_str(&line);
        shown += 1;
    }
    if shown < entries.len() {
        out.push_str(&format!(
            "({} more not shown: the reply is capped at 32 KB; narrow `where` or lower `limit`)\n",
            entries.len() - shown
        ));
    } else if entries.len() == limit {
        out.push_str(&format!(
            "(limit {limit} reached; narrow `where` or raise `limit`)\n"
        ));
    }
    out
}

impl QueryProp {
    /// The entries from the store's table of a settled collection, brought up to date first;
    /// [`InStore::NotThere`] without a store or when the collection is not settled, and
    /// [`InStore::Behind`] when the sync fails (the ledger file answers, saying so).
    async fn in_store(&self, collection: &str, query: &Query) -> Result<InStore, PropError> {
        let Some(store) = &self.store else {
            return Ok(InStore::NotThere);
        };
        match store.sync(&self.ledger, collection).await {
            Ok(None) => return Ok(InStore::NotThere),
            Ok(Some(_)) => {}
            Err(e) => return Ok(InStore::Behind(e.to_string())),
        }
        let entries = store
            .query(collection, query)
            .await
            .map_err(|e| PropError::new(e.to_string()))?;
        Ok(InStore::Answered(entries))
    }

    /// The whole settled JSON Schema of a collection: what the context's summary leaves out.
    async fn schema(&self, collection: String) -> Result<String, PropError> {
        let ledger = self.ledger.clone();
        let name = collection.clone();
        let schema = blocking(move || ledger.schema(&name).map_err(to_prop_error)).await?;
        let Some(schema) = schema else {
            return Ok(format!(
                "{collection} is not settled yet: it has no schema; query its entries to see their shape"
            ));
        };
        let text = serde_json::to_string(&schema)
            .map_err(|e| PropError::new(format!("cannot write the schema: {e}")))?;
        if text.len() > MAX_REPLY_BYTES {
            return Ok(format!(
                "{}… (the schema is {} bytes, cut at the 32 KB reply cap)",
                &text[..text.floor_char_boundary(MAX_REPLY_BYTES)],
                text.len()
            ));
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_small() {
        for spec in [record_spec(), query_spec()] {
            let bytes = serde_json::to_string(&spec).unwrap().len();
            assert!(bytes <= 375, "{} spec is {bytes} bytes", spec.name);
        }
    }
}
