//! Loading a settled collection's JSON lines into its Postgres table on a real server, for the
//! tests that check the DDL against PostgreSQL (`postgres.rs`, `shapes.rs`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test binary uses a part

use improv_ledger::schema::Column;
use improv_ledger::schema::{postgres_value, quote_ident};
use improv_store::testing::TempPostgres;
use std::path::Path;

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
    let loaded: Vec<String> = columns
        .iter()
        .map(|c| postgres_value(table, c, "doc"))
        .collect();
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
