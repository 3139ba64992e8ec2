//! The Postgres DDL of a settled collection against a real PostgreSQL server, started by the test
//! in a temporary folder (`improv_store::testing::TempPostgres`: a Unix socket only), with the
//! 255 real `package.json` records loaded and queried. Without the PostgreSQL binaries the test
//! fails and says how to install them: a silent pass would claim a check that did not run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_ledger::Shape;
use improv_ledger::schema::{columns, postgres_table};
use improv_store::testing::TempPostgres;

mod support;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/package-json.jsonl"
);

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
    let queries = "SELECT count(*), count(*) FILTER (WHERE scripts ? 'test'),
       count(DISTINCT jsonb_typeof(repository)), count(name)
FROM packages;
SELECT count(*) FROM information_schema.columns WHERE table_name = 'packages';";
    let out = support::load(
        &server,
        dir.path(),
        "packages",
        &ddl,
        &columns,
        std::path::Path::new(FIXTURE),
        queries,
    );
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

/// Fields DuckDB types more precisely than JSON or text get a column type of their own: a string
/// that was a UUID in every entry is `UUID`, a list of one scalar kind is an array of it
/// (`TEXT[]`, `BIGINT[]`), and PostgreSQL stores and compares them as such. SQLite, which has
/// neither type, keeps TEXT and JSON.
#[test]
fn uuids_and_lists_of_one_kind_get_their_own_postgres_types() {
    use improv_ledger::schema::{ColumnKind, ListOf, sqlite_view};
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("orders.jsonl");
    let lines: Vec<String> = (0..40)
        .map(|i| {
            format!(
                r#"{{"ref":"5f0c7a3e-1b2d-4c8e-9a{i:02}-0123456789ab","tags":["a","b{i}"],"qty":[{i},1],"mixed":[1,"x"]}}"#
            )
        })
        .collect();
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    let mut shape = Shape::default();
    for line in &lines {
        shape.absorb_json(line).unwrap();
    }
    let columns = columns(&shape);
    let kind = |name: &str| columns.iter().find(|c| c.name == name).unwrap().kind;
    assert_eq!(kind("ref"), ColumnKind::Uuid, "{columns:?}");
    assert_eq!(kind("tags"), ColumnKind::List(ListOf::Text));
    assert_eq!(kind("qty"), ColumnKind::List(ListOf::Integer));
    assert!(matches!(kind("mixed"), ColumnKind::Json(_)), "{columns:?}");
    let ddl = postgres_table("orders", &columns);
    assert!(ddl.contains("UUID") && ddl.contains("TEXT[]"), "{ddl}");
    let view = sqlite_view("orders", &columns);
    assert!(!view.contains("UUID") && !view.contains("TEXT[]"), "{view}");
    let server = TempPostgres::start_new();
    let out = support::load(
        &server,
        dir.path(),
        "orders",
        &ddl,
        &columns,
        &jsonl,
        "SELECT count(*), min(pg_typeof(\"ref\")::text), min(pg_typeof(tags)::text), \
         sum(cardinality(qty)), count(*) FILTER (WHERE 'a' = ANY(tags)) FROM orders;",
    );
    let line = out.lines().find(|l| !l.is_empty()).unwrap();
    assert_eq!(line, "40|uuid|text[]|80|40", "{out}");

    // Later entries widen the kinds (a ref that is not a UUID, tags of mixed items): the
    // migration alters the columns and converts the rows already there.
    let mut wider = columns.clone();
    for column in &mut wider {
        match column.name.as_str() {
            "ref" => column.kind = ColumnKind::Text,
            "tags" => column.kind = ColumnKind::Json(improv_ledger::schema::JsonReason::Union),
            _ => {}
        }
    }
    let (_, alter) = improv_ledger::schema::migration("orders", &columns, &wider);
    assert!(alter.contains("ALTER COLUMN"), "{alter}");
    let script = dir.path().join("alter.sql");
    std::fs::write(
        &script,
        format!(
            "{alter}\nINSERT INTO orders (id, performance, actor, at, \"ref\", tags, mixed, qty, doc) \
             VALUES (1000, 'p', 'a', now(), 'not-a-uuid', '[1, \"x\"]', '[]', '{{1}}', '{{}}');\n\
             SELECT count(*), min(pg_typeof(\"ref\")::text), min(pg_typeof(tags)::text), \
             count(*) FILTER (WHERE tags ? 'a') FROM orders;"
        ),
    )
    .unwrap();
    let out = server.psql_file("postgres", &script);
    let line = out.lines().rev().find(|l| l.contains('|')).unwrap();
    assert_eq!(line, "41|text|jsonb|40", "{out}");
}
