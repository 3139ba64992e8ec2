//! Reading a collection: the query a prop or the CLI sends (filters, ordering, a limit) turned
//! into one SQL statement over the entries' JSONB, and rows turned back into entries.

use super::{Entry, Ledger, LedgerError, Result, check_collection_name};
use crate::path::FieldPath;
use crate::shape::Kind;
use rusqlite::types::Value as SqlValue;
use serde_json::Value;

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

impl Ledger {
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
}

impl Ledger {
    /// Up to `limit` entries of a collection recorded after entry `after`, in recording order:
    /// how a copy elsewhere (the PostgreSQL store) catches up without reading what it has.
    pub fn entries_after(&self, collection: &str, after: i64, limit: usize) -> Result<Vec<Entry>> {
        check_collection_name(collection)?;
        let guard = self.lock();
        let mut statement = guard.conn.prepare_cached(
            "SELECT id, json(body), raw, performance, actor, at FROM ledger_entries
             WHERE collection = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = statement.query_map(
            rusqlite::params![collection, after, limit],
            row_to_entry(collection),
        )?;
        let mut entries = Vec::new();
        for row in rows {
            entries.push(row??);
        }
        Ok(entries)
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

pub(super) fn row_to_entry(
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
