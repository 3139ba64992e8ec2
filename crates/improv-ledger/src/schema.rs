//! Settling: a shape precipitated into a JSON Schema (2020-12), SQL DDL for SQLite and Postgres,
//! and the compact text that goes back into actors' context.
//!
//! The JSON Schema says what the data has shown: the kinds at each field, the fields every entry
//! had (`required`), a string format when every string had it, an `enum` for small sets of
//! values. It does not close objects (`additionalProperties` stays open): a field that is new
//! after settling is not an error but a proposal the director accepts or rejects, and a rejected
//! field is written as `false`, so entries carrying it are refused. Numeric ranges stay out of the
//! schema on purpose: the range seen so far is an observation, not a rule.
//!
//! Every function here works on the shape's [`Shape::settled_form`], so an object whose keys are
//! data (see "Maps and records" in [`crate::shape`]) is a map everywhere: `additionalProperties`
//! with the value schema in JSON Schema, one JSON column in the DDL, `{[k]: T}` in context.
//!
//! The DDL gives typed columns to stable scalar fields (one kind, outside arrays), and a JSON
//! column (`JSONB` in Postgres; JSON text through `->` in SQLite) to maps, arrays and fields of
//! more than one kind, which no scalar type could hold in every variant; the DDL says why in a
//! comment beside each. PostgreSQL gets two typed lists where DuckDB has them too: a list whose
//! items are one scalar kind is an array of that type (`TEXT[]`, as DuckDB's `VARCHAR[]`), and a
//! *list of records* is an array of a composite type (`CREATE TYPE "<collection>.<column>" AS
//! (...)`, column `<type>[]`, as DuckDB's `STRUCT(...)[]`). The rule for the second
//! ([`record_fields`]): every non-null item is an object that is a record (not a map, not
//! sparse), and each of its fields has one scalar kind (boolean, integer, number, string, with
//! its date, date-time or UUID format). When the items stop being records, a field of theirs
//! holds a nested record, a list or values of several kinds, or was only ever null, the list is
//! JSONB again; a migration rebuilds the column from `doc` either way ([`migration`]). SQLite,
//! which has no list or composite type, keeps JSON. A sparse record (fields that each appear in few of its objects, like
//! a payload whose fields depend on an event's type) is one JSON column too, its fields kept in
//! the JSON Schema. Fields seen in under [`RARE_SHARE`] of the entries get no column:
//! they stay in the whole entry, kept as JSON beside the columns, and a table of a column per
//! rare key would have hundreds. In SQLite it is a view over the ledger's entry table, so there
//! is one copy of the data; the Postgres DDL is a table to load the same data into.

use crate::path::{FieldPath, Segment};
use crate::shape::{Format, Kind, Shape};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

/// The JSON Schema dialect settled schemas declare.
pub const DIALECT: &str = "https://json-schema.org/draft/2020-12/schema";

/// Thresholds that decide when a set of string values is written as an `enum`.
#[derive(Clone, Copy, Debug)]
pub struct EnumRule {
    /// At most this many distinct values.
    pub max_values: usize,
    /// Over at least this many strings.
    pub min_records: u64,
}

/// The JSON Schema of a collection's settled shape. `rejected` fields are written as `false`.
pub fn json_schema(
    collection: &str,
    shape: &Shape,
    rejected: &[FieldPath],
    rule: EnumRule,
) -> Value {
    let shape = shape.settled_form();
    let mut schema = node(&shape, rule, rare_below(&shape));
    for path in rejected {
        forbid(&mut schema, &path.0);
    }
    let mut root = Map::new();
    root.insert("$schema".into(), json!(DIALECT));
    root.insert("title".into(), json!(collection));
    if let Value::Object(body) = schema {
        root.extend(body);
    }
    Value::Object(root)
}

/// Fields in fewer than this share of the entries are rare: they get no column of their own, and
/// the JSON Schema does not spell out the fields of a rare object (it says `object`). A structure
/// seen that seldom is an anecdote, not a design, and writing it out is what made schemas of
/// real data grow to hundreds of kilobytes; a rare object is still validated as an object.
pub const RARE_SHARE: f64 = 0.05;

/// The fewest occurrences a field needs not to be rare in a collection whose root shape is `root`.
fn rare_below(root: &Shape) -> u64 {
    (root.count as f64 * RARE_SHARE).ceil() as u64
}

fn node(shape: &Shape, rule: EnumRule, rare_below: u64) -> Value {
    let mut out = Map::new();
    let kinds = shape.kinds();
    if kinds.is_empty() {
        return Value::Object(out);
    }
    let mut types: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
    // An integer is a number: when both were seen, `number` covers them.
    if shape.number.is_some() {
        types.retain(|t| *t != "integer");
    }
    out.insert(
        "type".into(),
        if types.len() == 1 {
            json!(types[0])
        } else {
            json!(types)
        },
    );
    if let Some(format) = shape.string_format() {
        out.insert("format".into(), json!(format.name()));
    }
    if let Some(values) = shape.string_enum(rule.max_values, rule.min_records) {
        let mut options: Vec<Value> = values.into_iter().map(|v| json!(v)).collect();
        if shape.null > 0 {
            options.push(Value::Null);
        }
        out.insert("enum".into(), Value::Array(options));
    }
    if let Some(array) = &shape.array
        && array.items.count > 0
    {
        out.insert("items".into(), node(&array.items, rule, rare_below));
    }
    if let Some(map) = shape.object.as_ref().and_then(|o| o.map.as_ref()) {
        out.insert(
            "additionalProperties".into(),
            node(&map.values, rule, rare_below),
        );
    } else if let Some(object) = &shape.object
        && object.count >= rare_below
    {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for (key, field) in &object.fields {
            properties.insert(key.clone(), node(field, rule, rare_below));
            if field.count == object.count {
                required.push(json!(key));
            }
        }
        out.insert("properties".into(), Value::Object(properties));
        if !required.is_empty() {
            out.insert("required".into(), Value::Array(required));
        }
    }
    Value::Object(out)
}

fn forbid(schema: &mut Value, segments: &[Segment]) {
    match segments {
        [] => {}
        [Segment::Key(key)] => {
            let properties = schema
                .as_object_mut()
                .map(|o| o.entry("properties").or_insert_with(|| json!({})));
            if let Some(Value::Object(properties)) = properties {
                properties.insert(key.clone(), Value::Bool(false));
            }
        }
        [Segment::Key(key), rest @ ..] => {
            if let Some(child) = schema.pointer_mut(&format!("/properties/{}", escape_pointer(key)))
            {
                forbid(child, rest);
            }
        }
        [Segment::Items | Segment::Index(_), rest @ ..] => {
            if let Some(child) = schema.get_mut("items") {
                forbid(child, rest);
            }
        }
    }
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// A typed column of a settled collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    /// The column name, unique within the table.
    pub name: String,
    pub path: FieldPath,
    /// The SQLite JSON path of the field, for `json_extract`.
    pub json_path: String,
    pub kind: ColumnKind,
    /// Present in every entry, never null.
    pub not_null: bool,
    /// The field's type label (`string|object`, `{[k]: string}`), for the DDL comment of a
    /// JSON column.
    pub label: String,
    /// The fields of the items of a [`ColumnKind::Records`] column; empty for other kinds.
    pub fields: Vec<RecordField>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    Boolean,
    Integer,
    Real,
    Text,
    Date,
    DateTime,
    /// A string that was a UUID in every entry: PostgreSQL's `UUID` (16 bytes, compared as
    /// one), SQLite's `TEXT` (it has no such type). DuckDB gives such a field `UUID` too.
    Uuid,
    /// A list whose items are all of one scalar kind: PostgreSQL's array of that type (as
    /// DuckDB types it `VARCHAR[]`, `BIGINT[]`…); SQLite, which has no list type, keeps JSON.
    List(ListOf),
    /// A list of records with scalar fields ([`Column::fields`]): in PostgreSQL an array of a
    /// composite type named by [`record_type_name`] (as DuckDB types it `STRUCT(...)[]`);
    /// SQLite keeps JSON.
    Records,
    /// The field's JSON, for values no scalar type holds in every variant.
    Json(JsonReason),
}

/// The kind of every item of a [`ColumnKind::List`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListOf {
    Boolean,
    Integer,
    Real,
    Text,
}

/// Why a field is a JSON column.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonReason {
    /// Its keys are data (see [`Shape::settled_form`]).
    Map,
    /// Its values have more than one kind.
    Union,
    /// An array.
    Array,
    /// A sparse record: its fields are each missing from most of its objects (see "Sparse
    /// records" in [`crate::shape`]).
    Sparse,
}

impl JsonReason {
    fn why(self) -> &'static str {
        match self {
            JsonReason::Map => "a map (its keys are data), kept whole",
            JsonReason::Union => "values of several kinds; JSON keeps every variant",
            JsonReason::Array => "an array, kept whole",
            JsonReason::Sparse => {
                "a sparse record (most of its fields absent from most entries), kept whole"
            }
        }
    }
}

impl ColumnKind {
    /// The type of the column in the SQLite view.
    pub fn sqlite(self) -> &'static str {
        match self {
            ColumnKind::Boolean | ColumnKind::Integer => "INTEGER",
            ColumnKind::Real => "REAL",
            ColumnKind::Text | ColumnKind::Date | ColumnKind::DateTime | ColumnKind::Uuid => "TEXT",
            ColumnKind::Json(_) | ColumnKind::List(_) | ColumnKind::Records => "JSON",
        }
    }

    /// Whether a value of this kind is one scalar (what a field of a [`ColumnKind::Records`]
    /// item may be).
    fn is_scalar(self) -> bool {
        !matches!(
            self,
            ColumnKind::List(_) | ColumnKind::Records | ColumnKind::Json(_)
        )
    }

    /// The PostgreSQL type; a [`ColumnKind::Records`] column's is its composite type's array,
    /// which [`postgres_type`] names.
    pub fn postgres(self) -> &'static str {
        match self {
            ColumnKind::Boolean => "BOOLEAN",
            ColumnKind::Integer => "BIGINT",
            ColumnKind::Real => "DOUBLE PRECISION",
            ColumnKind::Text => "TEXT",
            ColumnKind::Date => "DATE",
            ColumnKind::DateTime => "TIMESTAMPTZ",
            ColumnKind::Uuid => "UUID",
            ColumnKind::List(ListOf::Boolean) => "BOOLEAN[]",
            ColumnKind::List(ListOf::Integer) => "BIGINT[]",
            ColumnKind::List(ListOf::Real) => "DOUBLE PRECISION[]",
            ColumnKind::List(ListOf::Text) => "TEXT[]",
            ColumnKind::Json(_) => "JSONB",
            // Its real type is named per collection, by `postgres_type`, which every column of
            // a table goes through; this is what an element reads as without that name.
            ColumnKind::Records => "RECORD[]",
        }
    }
}

/// A field of the items of a [`ColumnKind::Records`] column: an attribute of its composite type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordField {
    /// The key in the items' JSON.
    pub key: String,
    /// The attribute name, unique within the type.
    pub name: String,
    /// One scalar kind (never a list, records or JSON).
    pub kind: ColumnKind,
}

/// The name of the composite type of a [`ColumnKind::Records`] column: `<collection>.<column>`,
/// fitted to [`pg_name`]. A collection's name has no `.`, so no table takes a type's name (as a
/// collection named `<collection>_<column>` did when types were named so).
pub fn record_type_name(collection: &str, column: &Column) -> String {
    pg_name(&format!("{collection}.{}", column.name))
}

/// PostgreSQL keeps the first 63 bytes of an identifier: a name that fits is itself, a longer
/// one its first bytes, `_` and 8 hex digits of the SHA-256 of the whole name, 63 bytes in all,
/// so two long names that share their first 63 bytes stay two.
pub fn pg_name(name: &str) -> String {
    const MAX: usize = 63;
    if name.len() <= MAX {
        return name.to_owned();
    }
    let mut cut = MAX - 9;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    let hash = hex::encode(Sha256::digest(name.as_bytes()));
    format!("{}_{}", &name[..cut], &hash[..8])
}

/// A collection's table in PostgreSQL, quoted: its name fitted to [`pg_name`].
pub fn pg_table(collection: &str) -> String {
    quote_ident(&pg_name(collection))
}

/// A column's PostgreSQL type, as `CREATE TABLE` writes it.
pub fn postgres_type(collection: &str, column: &Column) -> String {
    match column.kind {
        ColumnKind::Records => format!("{}[]", quote_ident(&record_type_name(collection, column))),
        kind => kind.postgres().to_owned(),
    }
}

/// `CREATE TYPE` for a [`ColumnKind::Records`] column's items; `None` for other columns.
pub fn postgres_record_type(collection: &str, column: &Column) -> Option<String> {
    if column.kind != ColumnKind::Records {
        return None;
    }
    let attributes: Vec<String> = column
        .fields
        .iter()
        .map(|f| format!("{} {}", quote_ident(&f.name), f.kind.postgres()))
        .collect();
    Some(format!(
        "CREATE TYPE {} AS ({});",
        quote_ident(&record_type_name(collection, column)),
        attributes.join(", ")
    ))
}

/// The SQL expression that reads a column's value out of `doc`, an entry's whole JSONB in
/// PostgreSQL (for loading a table, and for rebuilding a column in a [`migration`]). A list is
/// read only from a JSON array (an absent field is NULL, not an empty list), in order.
pub fn postgres_value(collection: &str, column: &Column, doc: &str) -> String {
    let keys: Vec<String> = column
        .path
        .0
        .iter()
        .filter_map(|segment| match segment {
            // Columns are never inside arrays (see `Walk::collect`).
            Segment::Key(key) => Some(format!(
                "\"{}\"",
                key.replace('\\', "\\\\").replace('"', "\\\"")
            )),
            Segment::Items | Segment::Index(_) => None,
        })
        .collect();
    let at = format!(
        "{doc} #> {}",
        quote_literal(&format!("{{{}}}", keys.join(",")))
    );
    let items = |item: String| {
        format!(
            "CASE WHEN jsonb_typeof({at}) = 'array' THEN ARRAY(SELECT {item} \
             FROM jsonb_array_elements({at}) WITH ORDINALITY AS i(e, n) ORDER BY n) END"
        )
    };
    match column.kind {
        ColumnKind::Json(_) => at,
        ColumnKind::List(of) => items(format!("(e #>> '{{}}')::{}", ListOf::postgres(of))),
        ColumnKind::Records => {
            let fields: Vec<String> = column
                .fields
                .iter()
                .map(|f| format!("(e ->> {})::{}", quote_literal(&f.key), f.kind.postgres()))
                .collect();
            items(format!(
                "CASE WHEN jsonb_typeof(e) = 'object' THEN ROW({})::{} END",
                fields.join(", "),
                quote_ident(&record_type_name(collection, column))
            ))
        }
        kind => format!(
            "({doc} #>> {})::{}",
            quote_literal(&format!("{{{}}}", keys.join(","))),
            kind.postgres()
        ),
    }
}

impl Column {
    /// The DDL comment for a JSON column: what the field holds and why it is JSON.
    fn comment(&self) -> Option<String> {
        match self.kind {
            ColumnKind::Json(reason) => Some(format!(
                "-- {}: {}",
                self.label.replace(['\n', '\r'], " "),
                reason.why()
            )),
            _ => None,
        }
    }
}

impl ListOf {
    fn postgres(self) -> &'static str {
        match self {
            ListOf::Boolean => "BOOLEAN",
            ListOf::Integer => "BIGINT",
            ListOf::Real => "DOUBLE PRECISION",
            ListOf::Text => "TEXT",
        }
    }
}

/// The one scalar kind every non-null item of a list has, if there is one.
fn list_of(items: &Shape) -> Option<ListOf> {
    match items.non_null_kinds().as_slice() {
        [Kind::Boolean] => Some(ListOf::Boolean),
        [Kind::Integer] => Some(ListOf::Integer),
        [Kind::Number] | [Kind::Integer, Kind::Number] => Some(ListOf::Real),
        [Kind::String] => Some(ListOf::Text),
        _ => None,
    }
}

/// Column names the view already uses for an entry's provenance.
const RESERVED: [&str; 5] = ["id", "performance", "actor", "at", "doc"];

/// The stable scalar fields of a shape, as typed columns: one non-null kind, not inside an array,
/// a key SQLite can address. Everything else stays in the JSON `doc` column.
pub fn columns(shape: &Shape) -> Vec<Column> {
    columns_with(shape, &[])
}

/// [`columns`], where the fields at `keep` (and the fields of records at `keep`) get a column
/// however rare they are: columns a settled collection already has, and fields the director
/// accepted.
pub fn columns_with(shape: &Shape, keep: &[FieldPath]) -> Vec<Column> {
    let shape = shape.settled_form();
    let mut columns: Vec<Column> = Vec::new();
    let mut taken: BTreeSet<String> = RESERVED.iter().map(|s| s.to_string()).collect();
    let walk = Walk {
        min_count: rare_below(&shape),
        keep,
    };
    walk.collect(&shape, &FieldPath::root(), true, &mut columns, &mut taken);
    columns
}

/// The fields of a list's items when they settle as a [`ColumnKind::Records`]: every non-null
/// item is a record (not a map, not sparse) and each of its fields has one scalar kind (the rule
/// is in the module docs). `None` sends the list to JSONB.
fn record_fields(items: &Shape) -> Option<Vec<RecordField>> {
    if items.non_null_kinds() != [Kind::Object] {
        return None;
    }
    let object = items.object.as_ref()?;
    if object.map.is_some() || object.is_sparse() || object.fields.is_empty() {
        return None;
    }
    let mut taken = BTreeSet::new();
    object
        .fields
        .iter()
        .map(|(key, field)| {
            let (kind, _) = column_kind(field)?;
            kind.is_scalar().then(|| RecordField {
                key: key.clone(),
                name: unique_name(&column_name(&FieldPath::root().key(key)), &mut taken),
                kind,
            })
        })
        .collect()
}

/// The column a field of one kind (or a map, array or union) gets, with the item fields of a
/// list of records; `None` for a record, whose fields get columns of their own, and for a field
/// that was only ever null.
fn column_kind(field: &Shape) -> Option<(ColumnKind, Vec<RecordField>)> {
    let list = (field.non_null_kinds() == [Kind::Array]).then_some(field.array.as_ref());
    let Some(items) = list.flatten().map(|a| &a.items) else {
        return scalar_or_json(field).map(|kind| (kind, Vec::new()));
    };
    Some(if let Some(of) = list_of(items) {
        (ColumnKind::List(of), Vec::new())
    } else if let Some(fields) = record_fields(items) {
        (ColumnKind::Records, fields)
    } else {
        (ColumnKind::Json(JsonReason::Array), Vec::new())
    })
}

/// [`column_kind`] for every field but a list.
fn scalar_or_json(field: &Shape) -> Option<ColumnKind> {
    let is_map = field.object.as_ref().is_some_and(|o| o.map.is_some());
    match field.non_null_kinds().as_slice() {
        [] => None,
        [Kind::Boolean] => Some(ColumnKind::Boolean),
        [Kind::Integer] => Some(ColumnKind::Integer),
        [Kind::Number] | [Kind::Integer, Kind::Number] => Some(ColumnKind::Real),
        [Kind::String] => Some(match field.string_format() {
            Some(Format::DateTime) => ColumnKind::DateTime,
            Some(Format::Date) => ColumnKind::Date,
            Some(Format::Uuid) => ColumnKind::Uuid,
            _ => ColumnKind::Text,
        }),
        [Kind::Object] if is_map => Some(ColumnKind::Json(JsonReason::Map)),
        [Kind::Object] if field.object.as_ref().is_some_and(|o| o.is_sparse()) => {
            Some(ColumnKind::Json(JsonReason::Sparse))
        }
        [Kind::Object] => None,
        [Kind::Array] => Some(ColumnKind::Json(JsonReason::Array)),
        _ => Some(ColumnKind::Json(JsonReason::Union)),
    }
}

/// The walk over a settled shape that lists its columns.
struct Walk<'k> {
    /// Fields seen fewer times than this get no column...
    min_count: u64,
    /// ...unless they are, or are inside, one of these.
    keep: &'k [FieldPath],
}

impl Walk<'_> {
    fn kept(&self, path: &FieldPath) -> bool {
        self.keep
            .iter()
            .any(|k| k.0.starts_with(&path.0) || path.0.starts_with(&k.0))
    }

    fn collect(
        &self,
        shape: &Shape,
        at: &FieldPath,
        required_so_far: bool,
        out: &mut Vec<Column>,
        taken: &mut BTreeSet<String>,
    ) {
        let Some(object) = &shape.object else {
            return;
        };
        for (key, field) in &object.fields {
            let path = at.key(key);
            if field.count < self.min_count && !self.kept(&path) {
                continue;
            }
            let required =
                required_so_far && field.count == object.count && shape.kinds() == [Kind::Object];
            let Some((kind, fields)) = column_kind(field) else {
                if field.non_null_kinds() == [Kind::Object] {
                    self.collect(field, &path, required, out, taken);
                }
                continue;
            };
            let Ok(json_path) = path.to_sqlite() else {
                continue;
            };
            let name = unique_name(&column_name(&path), taken);
            out.push(Column {
                name,
                path,
                json_path,
                kind,
                not_null: required && field.null == 0,
                label: field.label(),
                fields,
            });
        }
    }
}

fn column_name(path: &FieldPath) -> String {
    let mut name = String::new();
    for segment in &path.0 {
        if let Segment::Key(key) = segment {
            if !name.is_empty() {
                name.push('_');
            }
            for c in key.chars() {
                if c.is_alphanumeric() {
                    name.extend(c.to_lowercase());
                } else if !name.ends_with('_') {
                    name.push('_');
                }
            }
        }
    }
    let name = name.trim_matches('_').to_owned();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        pg_name(&format!("f_{name}"))
    } else {
        pg_name(&name)
    }
}

fn unique_name(base: &str, taken: &mut BTreeSet<String>) -> String {
    let mut name = base.to_owned();
    let mut n = 2;
    while taken.contains(&name) {
        name = pg_name(&format!("{base}_{n}"));
        n += 1;
    }
    taken.insert(name.clone());
    name
}

/// A SQL identifier, double-quoted.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The name of a collection's typed view in SQLite.
pub fn sqlite_view_name(collection: &str) -> String {
    format!("ledger_{collection}")
}

/// `CREATE VIEW` over the ledger's entries, typed columns first, the whole entry as `doc`.
pub fn sqlite_view(collection: &str, columns: &[Column]) -> String {
    let mut select = vec![
        "id".to_owned(),
        "performance".to_owned(),
        "actor".to_owned(),
        "at".to_owned(),
    ];
    for column in columns {
        let value = match column.kind {
            // `->` gives the JSON of the value: a string stays quoted, so every variant reads back.
            ColumnKind::Json(_) | ColumnKind::List(_) | ColumnKind::Records => {
                format!("body -> {}", quote_literal(&column.json_path))
            }
            kind => format!(
                "CAST(json_extract(body, {}) AS {})",
                quote_literal(&column.json_path),
                kind.sqlite()
            ),
        };
        select.push(format!("{value} AS {}", quote_ident(&column.name)));
    }
    select.push("json(body) AS doc".to_owned());
    let comments: Vec<Option<String>> = std::iter::repeat_n(None, 4)
        .chain(columns.iter().map(Column::comment))
        .chain([None])
        .collect();
    format!(
        "CREATE VIEW {} AS\nSELECT {}\nFROM ledger_entries WHERE collection = {};",
        quote_ident(&sqlite_view_name(collection)),
        join_commented(&select, &comments, "\n       "),
        quote_literal(collection)
    )
}

/// Joins SQL list items with commas, each followed by its `-- comment` when it has one (after the
/// comma, so the comment never swallows it).
fn join_commented(items: &[String], comments: &[Option<String>], separator: &str) -> String {
    let mut out = String::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(separator);
        }
        out.push_str(item);
        if i + 1 < items.len() {
            out.push(',');
        }
        if let Some(Some(comment)) = comments.get(i) {
            out.push(' ');
            out.push_str(comment);
        }
    }
    out
}

/// `CREATE TABLE` for Postgres: provenance, typed columns, and the whole entry as `doc jsonb`.
pub fn postgres_table(collection: &str, columns: &[Column]) -> String {
    table_with(collection, columns, &["id BIGINT PRIMARY KEY"], None)
}

/// [`postgres_table`] for the store's copy, where several ledger files load into one table:
/// each row names the file it came from (`source`, [`crate::Ledger::source`]) and is keyed by
/// `(source, id)`, since every file numbers its entries from 1.
pub fn postgres_store_table(collection: &str, columns: &[Column]) -> String {
    table_with(
        collection,
        columns,
        &["source TEXT NOT NULL", "id BIGINT NOT NULL"],
        Some("PRIMARY KEY (source, id)"),
    )
}

fn table_with(collection: &str, columns: &[Column], key: &[&str], last: Option<&str>) -> String {
    let mut lines: Vec<String> = key.iter().map(|k| (*k).to_owned()).collect();
    lines.extend([
        "performance TEXT NOT NULL".to_owned(),
        "actor TEXT NOT NULL".to_owned(),
        "at TIMESTAMPTZ NOT NULL".to_owned(),
    ]);
    for column in columns {
        lines.push(postgres_column(collection, column));
    }
    lines.push("doc JSONB NOT NULL".to_owned());
    lines.extend(last.map(str::to_owned));
    let comments: Vec<Option<String>> = std::iter::repeat_n(None, key.len() + 3)
        .chain(columns.iter().map(Column::comment))
        .chain([None, None])
        .collect();
    let types: String = columns
        .iter()
        .filter_map(|c| postgres_record_type(collection, c))
        .map(|t| t + "\n")
        .collect();
    format!(
        "{types}CREATE TABLE {} (\n  {}\n);",
        pg_table(collection),
        join_commented(&lines, &comments, "\n  ")
    )
}

fn postgres_column(collection: &str, column: &Column) -> String {
    format!(
        "{} {}{}",
        quote_ident(&column.name),
        postgres_type(collection, column),
        if column.not_null { " NOT NULL" } else { "" }
    )
}

/// The migration for a field accepted after settling: the SQLite view is recreated; Postgres gets
/// a new nullable column when the field is a typed scalar (older rows do not have it), and a
/// column whose kind changed (a `UUID` that met other text, a `BIGINT` that met fractions, a list
/// that met mixed items) is altered to the new type, its rows converted. A column that is or
/// becomes a list of records ([`ColumnKind::Records`]), or whose records changed (a new field, a
/// field of a wider kind), is rebuilt from `doc`: dropped with its composite type, the new type
/// created, the column added and filled by [`postgres_value`]. PostgreSQL can neither alter the
/// attribute type of a composite type a column uses nor read a subquery in `ALTER ... USING`.
pub fn migration(collection: &str, before: &[Column], after: &[Column]) -> (String, String) {
    let sqlite = format!(
        "DROP VIEW IF EXISTS {};\n{}",
        quote_ident(&sqlite_view_name(collection)),
        sqlite_view(collection, after)
    );
    let table = pg_table(collection);
    let mut steps: Vec<String> = Vec::new();
    for column in after {
        match before.iter().find(|b| b.path == column.path) {
            None => {
                steps.extend(postgres_record_type(collection, column));
                steps.push(format!(
                    "ALTER TABLE {table} ADD COLUMN {} {};",
                    quote_ident(&column.name),
                    postgres_type(collection, column)
                ));
            }
            Some(old) if old.kind == column.kind && old.fields == column.fields => {}
            Some(old) if old.kind == ColumnKind::Records || column.kind == ColumnKind::Records => {
                steps.extend(rebuild(collection, old, column));
            }
            Some(old) => {
                let name = quote_ident(&old.name);
                let using = match column.kind {
                    ColumnKind::Json(_) => format!("to_jsonb({name})"),
                    kind => format!("{name}::{}", kind.postgres()),
                };
                steps.push(format!(
                    "ALTER TABLE {table} ALTER COLUMN {name} TYPE {} USING {using};",
                    postgres_type(collection, column)
                ));
            }
        }
    }
    let postgres = if steps.is_empty() {
        "-- no column change: the new field lives in doc (JSONB)".to_owned()
    } else {
        steps.join("\n")
    };
    (sqlite, postgres)
}

/// The statements that replace column `old` by `new`, read again from `doc` (see [`migration`]).
fn rebuild(collection: &str, old: &Column, new: &Column) -> Vec<String> {
    let table = pg_table(collection);
    let mut steps = vec![format!(
        "ALTER TABLE {table} DROP COLUMN {};",
        quote_ident(&old.name)
    )];
    if old.kind == ColumnKind::Records {
        steps.push(format!(
            "DROP TYPE {};",
            quote_ident(&record_type_name(collection, old))
        ));
    }
    steps.extend(postgres_record_type(collection, new));
    steps.push(format!(
        "ALTER TABLE {table} ADD COLUMN {} {};",
        quote_ident(&new.name),
        postgres_type(collection, new)
    ));
    steps.push(format!(
        "UPDATE {table} SET {} = {};",
        quote_ident(&new.name),
        postgres_value(collection, new, "doc")
    ));
    steps
}

/// The compact form of a settled shape for a system prompt:
/// `{name: string, email?: string(email), tags: string[], status: "new"|"won", deps?: {[k]: string}}`.
pub fn compact(shape: &Shape, rule: EnumRule, depth: usize) -> String {
    let render = Render {
        rule,
        max_depth: FULL_DEPTH,
        top_fields: None,
    };
    render.shape(&shape.settled_form(), depth)
}

/// How deep [`compact`] spells out nested records.
const FULL_DEPTH: usize = 3;

/// The compact form within `max_bytes`, and whether it had to be summarised. The whole form when
/// it fits; otherwise nested records are cut to `object` from the deepest level up, and if the
/// top-level fields alone are still too long, the rarest are left out with a count of them
/// (`…+12 more`). A summary is never longer than `max_bytes` unless even the first field is.
pub fn compact_within(shape: &Shape, rule: EnumRule, max_bytes: usize) -> (String, bool) {
    let shape = shape.settled_form();
    let mut render = Render {
        rule,
        max_depth: FULL_DEPTH,
        top_fields: None,
    };
    let whole = render.shape(&shape, 0);
    if whole.len() <= max_bytes {
        return (whole, false);
    }
    for max_depth in (0..FULL_DEPTH).rev() {
        render.max_depth = max_depth;
        let text = render.shape(&shape, 0);
        if text.len() <= max_bytes {
            return (text, true);
        }
    }
    let fields = shape.object.as_ref().map_or(0, |o| o.fields.len());
    // The top level alone, for when no field can be left out (a single long field).
    let mut text = render.shape(&shape, 0);
    for keep in (1..fields).rev() {
        render.top_fields = Some(keep);
        text = render.shape(&shape, 0);
        if text.len() <= max_bytes {
            break;
        }
    }
    (text, true)
}

/// One way of writing a shape compactly (see [`compact_within`]).
struct Render {
    rule: EnumRule,
    /// Records nested deeper than this are written `object`.
    max_depth: usize,
    /// At the top level, only this many of the most common fields, then `…+N more`.
    top_fields: Option<usize>,
}

impl Render {
    fn shape(&self, shape: &Shape, depth: usize) -> String {
        let rule = self.rule;
        if let Some(values) = shape.string_enum(rule.max_values, rule.min_records) {
            let mut parts: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
            if shape.null > 0 {
                parts.push("null".into());
            }
            return parts.join("|");
        }
        let mut parts = Vec::new();
        for kind in shape.kinds() {
            let part = match kind {
                Kind::Object => self.object(shape, depth),
                Kind::Array => match &shape.array {
                    Some(array) if array.items.count > 0 => {
                        let items = self.shape(&array.items, depth + 1);
                        if items.contains('|') {
                            format!("({items})[]")
                        } else {
                            format!("{items}[]")
                        }
                    }
                    _ => "[]".into(),
                },
                Kind::Integer if shape.number.is_some() => continue,
                Kind::String => match shape.string_format() {
                    Some(format) => format!("string({})", format.name()),
                    None => "string".into(),
                },
                other => other.name().into(),
            };
            parts.push(part);
        }
        parts.join("|")
    }

    fn object(&self, shape: &Shape, depth: usize) -> String {
        let Some(object) = &shape.object else {
            return "object".into();
        };
        if let Some(map) = &object.map {
            return match map.values.count {
                0 => "{}".into(),
                _ => format!("{{[k]: {}}}", self.shape(&map.values, depth + 1)),
            };
        }
        if depth > self.max_depth || object.fields.is_empty() {
            return "object".into();
        }
        let mut fields: Vec<(&String, &Shape)> = object.fields.iter().collect();
        let mut more = 0;
        if let (Some(keep), 0) = (self.top_fields, depth) {
            // Most common first; the sort is stable, so ties stay in name order.
            fields.sort_by_key(|(_, field)| std::cmp::Reverse(field.count));
            more = fields.len().saturating_sub(keep);
            fields.truncate(keep);
        }
        let mut parts: Vec<String> = fields
            .into_iter()
            .map(|(key, field)| {
                let optional = if field.count < object.count { "?" } else { "" };
                format!(
                    "{}{optional}: {}",
                    FieldPath(vec![Segment::Key(key.clone())]),
                    self.shape(field, depth + 1)
                )
            })
            .collect();
        if more > 0 {
            parts.push(format!("…+{more} more"));
        }
        format!("{{{}}}", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const RULE: EnumRule = EnumRule {
        max_values: 8,
        min_records: 4,
    };

    fn sample() -> Shape {
        let mut shape = Shape::default();
        for i in 0..6 {
            shape.absorb(&json!({
                "name": format!("n{i}"),
                "email": "a@b.co",
                "status": (["new", "won"][i % 2]),
                "score": if i % 2 == 0 { json!(i) } else { json!(null) },
                "price": 1.5,
                "address": {"city": format!("c{i}"), "zip": i},
                "tags": [format!("t{i}")],
                "key.dot": true,
            }));
        }
        shape.absorb(
            &json!({"name": "last", "email": "c@d.co", "status": "new", "price": 2,
            "address": {"city": "Rome", "zip": 1}, "tags": [], "key.dot": false, "score": 1}),
        );
        shape
    }

    #[test]
    fn schema_marks_required_formats_and_enums() {
        let schema = json_schema("leads", &sample(), &[], RULE);
        assert_eq!(schema["$schema"], DIALECT);
        assert_eq!(schema["properties"]["email"]["format"], "email");
        assert_eq!(
            schema["properties"]["status"]["enum"],
            json!(["new", "won"])
        );
        assert_eq!(
            schema["properties"]["score"]["type"],
            json!(["null", "integer"])
        );
        assert_eq!(schema["properties"]["price"]["type"], "number");
        assert_eq!(schema["properties"]["tags"]["items"]["type"], "string");
        let required = schema["required"].as_array().unwrap();
        assert!(required.contains(&json!("name")));
        assert!(required.contains(&json!("score")));
    }

    #[test]
    fn rejected_fields_are_false() {
        let schema = json_schema(
            "leads",
            &sample(),
            &[
                FieldPath::parse("nickname").unwrap(),
                FieldPath::parse("address.street").unwrap(),
            ],
            RULE,
        );
        assert_eq!(schema["properties"]["nickname"], json!(false));
        assert_eq!(
            schema["properties"]["address"]["properties"]["street"],
            json!(false)
        );
    }

    #[test]
    fn ddl_types_scalar_fields_and_keeps_the_rest_as_json() {
        let columns = columns(&sample());
        let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "address_city",
                "address_zip",
                "email",
                "key_dot",
                "name",
                "price",
                "score",
                "status",
                "tags"
            ]
        );
        let pg = postgres_table("leads", &columns);
        // A list of strings is an array of text, as DuckDB types it VARCHAR[].
        assert!(pg.contains("\"tags\" TEXT[] NOT NULL,\n"), "{pg}");
        assert!(pg.contains("\"price\" DOUBLE PRECISION NOT NULL"), "{pg}");
        assert!(pg.contains("\"score\" BIGINT,"), "{pg}");
        assert!(pg.contains("\"key_dot\" BOOLEAN NOT NULL"), "{pg}");
        assert!(pg.contains("doc JSONB NOT NULL"));
        let view = sqlite_view("leads", &columns);
        assert!(
            view.contains("json_extract(body, '$.\"key.dot\"')"),
            "{view}"
        );
    }

    /// Lists of records with scalar fields get a composite type; items that are not all
    /// records, or records holding a record, a list or a union, leave the list JSON.
    #[test]
    fn lists_of_scalar_records_settle_as_records_and_the_rest_as_json() {
        let kind_of = |items: Value| {
            let shape = Shape::of(&json!({ "items": items }));
            columns(&shape)[0].kind
        };
        assert_eq!(
            kind_of(json!([{"sku": "a", "at": "2025-01-02"}, null, {"sku": "b"}])),
            ColumnKind::Records
        );
        for irregular in [
            json!([{"sku": "a"}, "b"]),
            json!([{"sku": "a", "box": {"w": 1}}]),
            json!([{"sku": "a", "tags": ["x"]}]),
            json!([{"sku": "a"}, {"sku": 1}]),
            json!([{"sku": null}]),
        ] {
            assert_eq!(
                kind_of(irregular.clone()),
                ColumnKind::Json(JsonReason::Array),
                "{irregular}"
            );
        }
        let shape = Shape::of(&json!({"items": [{"sku": "a", "qty": 1, "when": "2025-01-02"}]}));
        let column = &columns(&shape)[0];
        let ddl = postgres_table("o", std::slice::from_ref(column));
        assert!(
            ddl.starts_with(
                "CREATE TYPE \"o.items\" AS (\"qty\" BIGINT, \"sku\" TEXT, \"when\" DATE);\n"
            ),
            "{ddl}"
        );
        assert!(sqlite_view("o", std::slice::from_ref(column)).contains("body -> "));
    }

    #[test]
    fn compact_within_summarises_to_its_budget() {
        let shape = sample();
        let (whole, cut) = compact_within(&shape, RULE, 10_000);
        assert!(!cut);
        assert_eq!(whole, compact(&shape, RULE, 0));
        let (shallow, cut) = compact_within(&shape, RULE, whole.len() - 1);
        assert!(cut && shallow.len() < whole.len(), "{shallow}");
        assert!(shallow.contains("address: object"), "{shallow}");
        let (few, _) = compact_within(&shape, RULE, 60);
        assert!(few.len() <= 60 && few.contains("more}"), "{few}");
        let one = Shape::of(&json!({"only": {"a": 1, "b": 2, "c": 3}}));
        let (text, cut) = compact_within(&one, RULE, 5);
        assert!(cut && text == "{only: object}", "{text}");
    }

    #[test]
    fn compact_form_is_short_and_readable() {
        let text = compact(&sample(), RULE, 0);
        assert!(text.contains("status: \"new\"|\"won\""), "{text}");
        assert!(text.contains("email: string(email)"), "{text}");
        assert!(text.contains("tags: string[]"), "{text}");
        assert!(text.contains("\"key.dot\": boolean"), "{text}");
        assert!(
            text.contains("address: {city: string, zip: integer}"),
            "{text}"
        );
    }
}
