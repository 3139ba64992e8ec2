//! The Postgres DDL of a settled collection against a real PostgreSQL server, started by the test
//! in a temporary folder (`improv_store::testing::TempPostgres`: a Unix socket only), with the
//! 255 real `package.json` records loaded and queried. Without the PostgreSQL binaries the test
//! fails and says how to install them: a silent pass would claim a check that did not run.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_ledger::Shape;
use improv_ledger::schema::{columns, postgres_table};
use improv_store::testing::TempPostgres;

use crate::support;

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

/// A list of records with scalar fields, as DuckDB types it `STRUCT(...)[]`, is an array of a
/// composite type in PostgreSQL: created, loaded from the stored JSON, queried by member and
/// by `unnest`. Later entries widen it twice: the items gain a field and a wider kind (the
/// column is rebuilt with the new type), then a nested record (the column goes back to JSONB
/// and the type is dropped). SQLite keeps JSON throughout.
#[test]
fn lists_of_records_are_composite_arrays_that_evolve_in_postgres() {
    use improv_ledger::schema::{
        ColumnKind, JsonReason, migration, postgres_value, quote_ident, sqlite_view,
    };
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("orders.jsonl");
    let mut lines: Vec<String> = (0..30)
        .map(|i| {
            format!(
                r#"{{"n":{i},"items":[{{"sku":"A-{i}","qty":{i},"price":1.5}},{{"sku":"B","qty":1,"price":2}}]}}"#
            )
        })
        .collect();
    lines.push(r#"{"n":30,"items":[]}"#.to_owned());
    std::fs::write(&jsonl, lines.join("\n") + "\n").unwrap();
    let mut shape = Shape::default();
    for line in &lines {
        shape.absorb_json(line).unwrap();
    }
    let first = columns(&shape);
    let items = first.iter().find(|c| c.name == "items").unwrap();
    assert_eq!(items.kind, ColumnKind::Records, "{first:?}");
    let fields: Vec<(&str, ColumnKind)> = items
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f.kind))
        .collect();
    assert_eq!(
        fields,
        [
            ("price", ColumnKind::Real),
            ("qty", ColumnKind::Integer),
            ("sku", ColumnKind::Text)
        ]
    );
    let ddl = postgres_table("orders", &first);
    assert!(
        ddl.starts_with("CREATE TYPE \"orders.items\" AS (\"price\" DOUBLE PRECISION, \"qty\" BIGINT, \"sku\" TEXT);\n"),
        "{ddl}"
    );
    assert!(
        ddl.contains("\"items\" \"orders.items\"[] NOT NULL"),
        "{ddl}"
    );
    let view = sqlite_view("orders", &first);
    assert!(
        view.contains("body -> '$.\"items\"' AS \"items\""),
        "{view}"
    );
    let server = TempPostgres::start_new();
    let out = support::load(
        &server,
        dir.path(),
        "orders",
        &ddl,
        &first,
        &jsonl,
        "SELECT count(*), min(pg_typeof(items)::text), sum((items[1]).qty), \
         count(*) FILTER (WHERE (items[1]).sku = 'A-7'), sum(cardinality(items)) FROM orders;
SELECT count(*), sum(it.price) FROM orders, unnest(items) AS it WHERE it.sku = 'B';",
    );
    let rows: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(rows, ["31|\"orders.items\"[]|435|1|60", "30|60"], "{out}");

    // Insert an entry the way the load does: every column read from its doc by postgres_value.
    let insert = |columns: &[improv_ledger::schema::Column], id: u32, doc: &str| {
        let names: Vec<String> = columns.iter().map(|c| quote_ident(&c.name)).collect();
        let values: Vec<String> = columns
            .iter()
            .map(|c| postgres_value("orders", c, "doc"))
            .collect();
        format!(
            "INSERT INTO orders (id, performance, actor, at, {}, doc) SELECT {id}, 'p', 'a', now(), {}, doc \
             FROM (VALUES ('{doc}'::jsonb)) AS s(doc);",
            names.join(", "),
            values.join(", ")
        )
    };
    let run = |name: &str, sql: String| {
        let script = dir.path().join(name);
        std::fs::write(&script, sql).unwrap();
        server.psql_file("postgres", &script)
    };

    // Wider: a new field (`note`) and a quantity with a fraction.
    let wider = r#"{"n":31,"items":[{"sku":"C","qty":2.5,"price":3,"note":"gift"}]}"#;
    shape.absorb_json(wider).unwrap();
    let second = columns(&shape);
    let items = second.iter().find(|c| c.name == "items").unwrap();
    assert_eq!(items.kind, ColumnKind::Records);
    assert_eq!(items.fields.len(), 4, "{items:?}");
    let (_, alter) = migration("orders", &first, &second);
    assert!(alter.contains("CREATE TYPE \"orders.items\" AS (\"note\" TEXT, \"price\" DOUBLE PRECISION, \"qty\" DOUBLE PRECISION"), "{alter}");
    let out = run(
        "wider.sql",
        format!(
            "{alter}\n{}\nSELECT count(*), sum((items[1]).qty), count((items[1]).note), \
             min(pg_typeof(items)::text) FROM orders;",
            insert(&second, 1000, wider)
        ),
    );
    let line = out.lines().rev().find(|l| l.contains('|')).unwrap();
    assert_eq!(line, "32|437.5|1|\"orders.items\"[]", "{out}");

    // Irregular: an item holds a nested record, so the list is JSONB again and the type goes.
    let nested = r#"{"n":32,"items":[{"sku":"D","qty":1,"price":1,"box":{"w":2}}]}"#;
    shape.absorb_json(nested).unwrap();
    let third = columns(&shape);
    let items = third.iter().find(|c| c.name == "items").unwrap();
    assert_eq!(items.kind, ColumnKind::Json(JsonReason::Array), "{items:?}");
    let (_, alter) = migration("orders", &second, &third);
    assert!(alter.contains("DROP TYPE \"orders.items\""), "{alter}");
    let out = run(
        "nested.sql",
        format!(
            "{alter}\n{}\nSELECT count(*), min(pg_typeof(items)::text), \
             count(*) FILTER (WHERE items -> 0 -> 'box' ->> 'w' = '2'), \
             sum(jsonb_array_length(items)), \
             (SELECT count(*) FROM pg_type WHERE typname = 'orders.items') FROM orders;",
            insert(&third, 1001, nested)
        ),
    );
    let line = out.lines().rev().find(|l| l.contains('|')).unwrap();
    assert_eq!(line, "33|jsonb|1|62|0", "{out}");
}
