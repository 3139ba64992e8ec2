//! The Postgres DDL of a settled collection against a real PostgreSQL server, started by the test
//! in a temporary folder (`improv_store::testing::TempPostgres`: a Unix socket only), with the
//! 255 real `package.json` records loaded and queried. Without the PostgreSQL binaries the test
//! fails and says how to install them: a silent pass would claim a check that did not run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_ledger::Shape;
use improv_ledger::schema::{Column, ColumnKind, columns, postgres_table};
use improv_store::testing::TempPostgres;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/package-json.jsonl"
);

/// The SQL expression that reads a column's value out of the staged `doc`.
fn extract(column: &Column) -> String {
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
    };
    format!("(doc #>> {path})::{cast}")
}

#[test]
fn package_json_table_is_created_loaded_and_queried_in_postgres() {
    let text = std::fs::read_to_string(FIXTURE).unwrap();
    let mut shape = Shape::default();
    for line in text.lines() {
        shape.absorb_json(line).unwrap();
    }
    let columns = columns(&shape);
    let ddl = postgres_table("packages", &columns);
    let dir = tempfile::tempdir().unwrap();
    let server = TempPostgres::start_new();
    let loaded: Vec<String> = columns.iter().map(extract).collect();
    let names: Vec<String> = columns
        .iter()
        .map(|c| improv_ledger::schema::quote_ident(&c.name))
        .collect();
    // CSV with quote and delimiter bytes that JSON text never holds, so each line is one value.
    let script = format!(
        "{ddl}
CREATE TEMP TABLE staging (n BIGSERIAL, doc JSONB);
\\copy staging (doc) FROM '{fixture}' WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')
INSERT INTO packages (id, performance, actor, at, {names}, doc)
SELECT n, 'import', 'director', now(), {loaded}, doc FROM staging;
SELECT count(*), count(*) FILTER (WHERE scripts ? 'test'),
       count(DISTINCT jsonb_typeof(repository)), count(name)
FROM packages;
SELECT count(*) FROM information_schema.columns WHERE table_name = 'packages';
",
        fixture = FIXTURE,
        names = names.join(", "),
        loaded = loaded.join(", "),
    );
    let script_file = dir.path().join("load.sql");
    std::fs::write(&script_file, script).unwrap();
    let out = server.psql_file("postgres", &script_file);
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    let counts: Vec<i64> = lines[0].split('|').map(|n| n.parse().unwrap()).collect();
    assert_eq!(counts[0], 255, "{out}");
    assert!(counts[1] > 100, "packages with a test script: {out}");
    assert_eq!(counts[2], 2, "repository is a string or an object: {out}");
    assert_eq!(counts[3], 255, "name is never null: {out}");
    let width: usize = lines[1].parse().unwrap();
    assert_eq!(width, columns.len() + 5, "{out}");
    assert!(width < 100, "{width} columns");
    eprintln!("postgres: {width} columns, 255 rows loaded and queried");
}
