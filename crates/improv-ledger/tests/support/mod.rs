//! Loading a settled collection's JSON lines into its Postgres table on a real server, for the
//! tests that check the DDL against PostgreSQL (`postgres.rs`, `shapes.rs`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test binary uses a part

use improv_ledger::schema::{Column, ColumnKind, ListOf, quote_ident};
use improv_store::testing::TempPostgres;
use std::path::Path;

/// The SQL expression that reads a column's value out of the staged `doc`.
pub fn extract(column: &Column) -> String {
    let keys: Vec<String> = column
        .path
        .0
        .iter()
        .map(|segment| match segment {
            improv_ledger::path::Segment::Key(key) => {
                format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""))
            }
            other => panic!("a column inside an array: {other:?}"),
        })
        .collect();
    let path = format!("'{{{}}}'", keys.join(",").replace('\'', "''"));
    let cast = match column.kind {
        ColumnKind::Json(_) => return format!("doc #> {path}"),
        ColumnKind::Boolean => "boolean",
        ColumnKind::Integer => "bigint",
        ColumnKind::Real => "double precision",
        ColumnKind::Text => "text",
        ColumnKind::Date => "date",
        ColumnKind::DateTime => "timestamptz",
        ColumnKind::Uuid => "uuid",
        ColumnKind::List(of) => {
            let item = match of {
                ListOf::Boolean => "boolean",
                ListOf::Integer => "bigint",
                ListOf::Real => "double precision",
                ListOf::Text => "text",
            };
            return format!(
                "ARRAY(SELECT x::{item} FROM jsonb_array_elements_text(doc #> {path}) AS x)"
            );
        }
    };
    format!("(doc #>> {path})::{cast}")
}

/// Creates `table` on `server` with `ddl`, loads every line of `jsonl` into it (each column
/// from its field, the whole entry as `doc`), runs `queries` and returns psql's output
/// (unaligned, one line per row).
pub fn load(
    server: &TempPostgres,
    scratch: &Path,
    table: &str,
    ddl: &str,
    columns: &[Column],
    jsonl: &Path,
    queries: &str,
) -> String {
    let loaded: Vec<String> = columns.iter().map(extract).collect();
    let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
    // CSV with quote and delimiter bytes that JSON text never holds, so each line is one value.
    let script = format!(
        "{ddl}
CREATE TEMP TABLE staging (n BIGSERIAL, doc JSONB);
\\copy staging (doc) FROM '{file}' WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')
INSERT INTO {table} (id, performance, actor, at, {names}, doc)
SELECT n, 'import', 'director', now(), {loaded}, doc FROM staging;
{queries}
",
        file = jsonl.display(),
        table = quote_ident(table),
        names = names.join(", "),
        loaded = loaded.join(", "),
    );
    let script_file = scratch.join(format!("load-{table}.sql"));
    std::fs::write(&script_file, script).unwrap();
    server.psql_file("postgres", &script_file)
}
