//! Settling and evolving: a collection's shape precipitated into a JSON Schema, DDL and its
//! SQLite view; fields seen after settling kept as proposals for the director to accept (a new
//! version with its migration) or reject; and the settled schemas as compact context for actors.

use super::{Ledger, LedgerError, Result, check_collection_name, format_time, load_fresh};
use crate::path::{FieldPath, Segment};
use crate::schema;
use crate::shape::Shape;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Settled {
    pub(super) version: u32,
    pub(super) at: String,
    /// The shape the schema was made from.
    pub(super) shape: Shape,
    pub(super) schema: Value,
    pub(super) sqlite_ddl: String,
    pub(super) postgres_ddl: String,
    /// Fields the director refused (written as `false` in the schema).
    #[serde(default)]
    pub(super) rejected: Vec<String>,
    /// The fields with a column: they keep it in every later version, rare or not, so a query
    /// on the view never loses a column. Empty in states written before it was kept.
    #[serde(default)]
    pub(super) column_paths: Vec<String>,
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

impl Ledger {
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
        let state = load_fresh(&tx, &mut inner.cache, collection)?;
        let rev = state.rev;
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
        let state = load_fresh(&tx, &mut inner.cache, collection)?;
        let rev = state.rev;
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
        Ok(load_fresh(&inner.conn, &mut inner.cache, collection)?
            .stored
            .settled
            .as_ref()
            .map(|s| s.schema.clone()))
    }

    /// Why `entry` breaks the settled schema of `collection`, in the words a refused write
    /// gets, or `None` when it fits or the collection is not settled. What a routine's guard asks
    /// of a replayed step's output, so it is judged exactly as a write would be.
    pub fn check_entry(&self, collection: &str, entry: &Value) -> Result<Option<String>> {
        check_collection_name(collection)?;
        let mut guard = self.lock();
        let inner = &mut *guard;
        let state = load_fresh(&inner.conn, &mut inner.cache, collection)?;
        Ok(self.violations(state, entry))
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
            if let Some(settled) = &load_fresh(&inner.conn, &mut inner.cache, name)?
                .stored
                .settled
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
}

pub(super) fn compile(collection: &str, schema: &Value) -> Result<jsonschema::Validator> {
    jsonschema::draft202012::new(schema).map_err(|e| LedgerError::Schema {
        collection: collection.to_owned(),
        message: e.to_string(),
    })
}

pub(super) fn load_proposals(conn: &Connection, collection: &str) -> Result<Vec<Proposal>> {
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

pub(super) fn upsert_proposal(
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
pub(super) fn new_fields<'v>(
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

/// A settled collection's version and what its table's columns are made from: what a copy of
/// the collection elsewhere (the PostgreSQL store, [`crate::postgres`]) is brought up to, and,
/// kept there, the "before" of its next migration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SettledColumns {
    pub version: u32,
    /// The shape the version was settled from.
    pub shape: Shape,
    /// The fields that have a column, as field paths.
    pub column_paths: Vec<String>,
}

impl SettledColumns {
    /// The table's columns, as the DDL and migrations of this version name them.
    pub fn columns(&self) -> Result<Vec<schema::Column>> {
        let keep = self
            .column_paths
            .iter()
            .map(|p| FieldPath::parse(p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(schema::columns_with(&self.shape, &keep))
    }
}

impl Ledger {
    /// The settled version of `collection` and its columns; `None` when it is not settled.
    pub fn settled_columns(&self, collection: &str) -> Result<Option<SettledColumns>> {
        check_collection_name(collection)?;
        let mut guard = self.lock();
        let inner = &mut *guard;
        let state = load_fresh(&inner.conn, &mut inner.cache, collection)?;
        let Some(settled) = &state.stored.settled else {
            return Ok(None);
        };
        Ok(Some(SettledColumns {
            version: settled.version,
            shape: settled.shape.clone(),
            column_paths: settled
                .kept_columns()?
                .iter()
                .map(ToString::to_string)
                .collect(),
        }))
    }
}
