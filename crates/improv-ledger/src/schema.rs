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
//! The DDL gives typed columns to stable scalar fields (one kind, outside arrays), and keeps the
//! whole entry as JSON beside them. In SQLite it is a view over the ledger's entry table, so there
//! is one copy of the data; the Postgres DDL is a table to load the same data into.

use crate::path::{FieldPath, Segment};
use crate::shape::{Format, Kind, Shape};
use serde_json::{Map, Value, json};
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
    let mut schema = node(shape, rule);
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

fn node(shape: &Shape, rule: EnumRule) -> Value {
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
        out.insert("items".into(), node(&array.items, rule));
    }
    if let Some(object) = &shape.object {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for (key, field) in &object.fields {
            properties.insert(key.clone(), node(field, rule));
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
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ColumnKind {
    Boolean,
    Integer,
    Real,
    Text,
    Date,
    DateTime,
}

impl ColumnKind {
    fn sqlite(self) -> &'static str {
        match self {
            ColumnKind::Boolean | ColumnKind::Integer => "INTEGER",
            ColumnKind::Real => "REAL",
            ColumnKind::Text | ColumnKind::Date | ColumnKind::DateTime => "TEXT",
        }
    }

    fn postgres(self) -> &'static str {
        match self {
            ColumnKind::Boolean => "BOOLEAN",
            ColumnKind::Integer => "BIGINT",
            ColumnKind::Real => "DOUBLE PRECISION",
            ColumnKind::Text => "TEXT",
            ColumnKind::Date => "DATE",
            ColumnKind::DateTime => "TIMESTAMPTZ",
        }
    }
}

/// Column names the view already uses for an entry's provenance.
const RESERVED: [&str; 5] = ["id", "performance", "actor", "at", "doc"];

/// The stable scalar fields of a shape, as typed columns: one non-null kind, not inside an array,
/// a key SQLite can address. Everything else stays in the JSON `doc` column.
pub fn columns(shape: &Shape) -> Vec<Column> {
    let mut columns: Vec<Column> = Vec::new();
    let mut taken: BTreeSet<String> = RESERVED.iter().map(|s| s.to_string()).collect();
    collect_columns(shape, &FieldPath::root(), true, &mut columns, &mut taken);
    columns
}

fn collect_columns(
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
        let required =
            required_so_far && field.count == object.count && shape.kinds() == [Kind::Object];
        let kinds = field.non_null_kinds();
        let kind = match kinds.as_slice() {
            [Kind::Boolean] => Some(ColumnKind::Boolean),
            [Kind::Integer] => Some(ColumnKind::Integer),
            [Kind::Number] | [Kind::Integer, Kind::Number] => Some(ColumnKind::Real),
            [Kind::String] => Some(match field.string_format() {
                Some(Format::DateTime) => ColumnKind::DateTime,
                Some(Format::Date) => ColumnKind::Date,
                _ => ColumnKind::Text,
            }),
            [Kind::Object] => {
                collect_columns(field, &path, required, out, taken);
                None
            }
            _ => None,
        };
        let (Some(kind), Ok(json_path)) = (kind, path.to_sqlite()) else {
            continue;
        };
        let name = unique_name(&column_name(&path), taken);
        out.push(Column {
            name,
            path,
            json_path,
            kind,
            not_null: required && field.null == 0,
        });
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
        format!("f_{name}")
    } else {
        name
    }
}

fn unique_name(base: &str, taken: &mut BTreeSet<String>) -> String {
    let mut name = base.to_owned();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}_{n}");
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
        select.push(format!(
            "CAST(json_extract(body, {}) AS {}) AS {}",
            quote_literal(&column.json_path),
            column.kind.sqlite(),
            quote_ident(&column.name)
        ));
    }
    select.push("json(body) AS doc".to_owned());
    format!(
        "CREATE VIEW {} AS\nSELECT {}\nFROM ledger_entries WHERE collection = {};",
        quote_ident(&sqlite_view_name(collection)),
        select.join(",\n       "),
        quote_literal(collection)
    )
}

/// `CREATE TABLE` for Postgres: provenance, typed columns, and the whole entry as `doc jsonb`.
pub fn postgres_table(collection: &str, columns: &[Column]) -> String {
    let mut lines = vec![
        "id BIGINT PRIMARY KEY".to_owned(),
        "performance TEXT NOT NULL".to_owned(),
        "actor TEXT NOT NULL".to_owned(),
        "at TIMESTAMPTZ NOT NULL".to_owned(),
    ];
    for column in columns {
        lines.push(postgres_column(column));
    }
    lines.push("doc JSONB NOT NULL".to_owned());
    format!(
        "CREATE TABLE {} (\n  {}\n);",
        quote_ident(collection),
        lines.join(",\n  ")
    )
}

fn postgres_column(column: &Column) -> String {
    format!(
        "{} {}{}",
        quote_ident(&column.name),
        column.kind.postgres(),
        if column.not_null { " NOT NULL" } else { "" }
    )
}

/// The migration for a field accepted after settling: the SQLite view is recreated; Postgres gets
/// a new nullable column when the field is a typed scalar (older rows do not have it).
pub fn migration(collection: &str, before: &[Column], after: &[Column]) -> (String, String) {
    let sqlite = format!(
        "DROP VIEW IF EXISTS {};\n{}",
        quote_ident(&sqlite_view_name(collection)),
        sqlite_view(collection, after)
    );
    let added: Vec<String> = after
        .iter()
        .filter(|c| !before.iter().any(|b| b.path == c.path))
        .map(|c| {
            format!(
                "ALTER TABLE {} ADD COLUMN {} {};",
                quote_ident(collection),
                quote_ident(&c.name),
                c.kind.postgres()
            )
        })
        .collect();
    let postgres = if added.is_empty() {
        "-- no column change: the new field lives in doc (JSONB)".to_owned()
    } else {
        added.join("\n")
    };
    (sqlite, postgres)
}

/// The compact form of a settled shape for a system prompt:
/// `{name: string, email?: string(email), tags: string[], status: "new"|"won"}`.
pub fn compact(shape: &Shape, rule: EnumRule, depth: usize) -> String {
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
            Kind::Object => match &shape.object {
                Some(object) if depth < 4 && !object.fields.is_empty() => {
                    let fields: Vec<String> = object
                        .fields
                        .iter()
                        .map(|(key, field)| {
                            let optional = if field.count < object.count { "?" } else { "" };
                            format!(
                                "{}{optional}: {}",
                                FieldPath(vec![Segment::Key(key.clone())]),
                                compact(field, rule, depth + 1)
                            )
                        })
                        .collect();
                    format!("{{{}}}", fields.join(", "))
                }
                _ => "object".into(),
            },
            Kind::Array => match &shape.array {
                Some(array) if array.items.count > 0 => {
                    let items = compact(&array.items, rule, depth + 1);
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
                "status"
            ]
        );
        let pg = postgres_table("leads", &columns);
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
