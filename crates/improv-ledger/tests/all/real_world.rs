//! The ledger on real-world data: 255 `package.json` files of npm packages installed on the
//! machine this was written on (tests/fixtures/package-json.jsonl, one per line), and every
//! `Cargo.toml` in the local crate registry (the workspace's dependencies, there after any build)
//! converted to JSON. Their objects
//! `scripts`, `dependencies` and `devDependencies` have a key per package or script name; settled
//! as records they gave a 647 KB schema and 3,165 columns. Settled as maps, the schema, the DDL
//! and the context text stay small, and the SQLite view is created and queried.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_ledger::{Ledger, LedgerOptions, Provenance};
use serde_json::Value;
use std::path::Path;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/package-json.jsonl"
);

fn records() -> Vec<Value> {
    std::fs::read_to_string(FIXTURE)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

fn settled(dir: &Path) -> (Ledger, improv_ledger::Settlement) {
    let ledger = Ledger::open_in(dir, LedgerOptions::default()).unwrap();
    let report = ledger
        .import(
            "packages",
            Path::new(FIXTURE),
            &Provenance::new("t", "director"),
        )
        .unwrap();
    assert_eq!(report.recorded, 255);
    assert_eq!(report.rejected, 0);
    let settlement = ledger.settle("packages").unwrap();
    (ledger, settlement)
}

#[test]
fn package_json_settles_into_a_schema_a_person_would_write() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, settlement) = settled(dir.path());
    let schema = &settlement.schema;
    // The director's view lists each map as one line, not a line per key.
    let tree = ledger.collection("packages").unwrap().shape.tree(8, 20);
    eprintln!("tree: {} lines", tree.lines().count());
    assert!(tree.contains("{[k]: string}"), "{tree}");
    assert!(tree.lines().count() < 400, "{tree}");
    let text = serde_json::to_string(schema).unwrap();
    eprintln!("settled schema: {} bytes", text.len());
    assert!(text.len() < 10 * 1024, "schema is {} bytes", text.len());
    let properties = &schema["properties"];
    for map in ["scripts", "dependencies", "devDependencies"] {
        assert!(
            properties[map].get("properties").is_none(),
            "{map} settled as a record: {}",
            properties[map]
        );
        assert_eq!(
            properties[map]["additionalProperties"]["type"], "string",
            "{map}"
        );
    }
    // Unions keep every variant.
    let repository = properties["repository"]["type"].as_array().unwrap();
    assert!(repository.contains(&"string".into()) && repository.contains(&"object".into()));
    // A record stays a record.
    assert!(properties["bugs"]["properties"].get("url").is_some());
    let validator = jsonschema::draft202012::new(schema).unwrap();
    for (i, record) in records().iter().enumerate() {
        let errors: Vec<String> = validator
            .iter_errors(record)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "record {} fails: {errors:?}", i + 1);
    }
}

#[test]
fn package_json_ddl_has_tens_of_columns_and_the_view_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, settlement) = settled(dir.path());
    let pg_columns = settlement.postgres_ddl.matches("\n  ").count();
    eprintln!("postgres table: {pg_columns} columns");
    assert!(
        (10..=80).contains(&pg_columns),
        "{pg_columns} columns:\n{}",
        settlement.postgres_ddl
    );
    assert!(
        settlement
            .postgres_ddl
            .contains("\"scripts\" JSONB, -- {[k]: string}: a map (its keys are data), kept whole"),
        "{}",
        settlement.postgres_ddl
    );
    assert!(
        settlement
            .postgres_ddl
            .contains("\"repository\" JSONB, -- string|object: values of several kinds"),
        "{}",
        settlement.postgres_ddl
    );
    let conn = rusqlite::Connection::open(ledger.path()).unwrap();
    let mut select = conn.prepare("SELECT * FROM \"ledger_packages\"").unwrap();
    let width = select.column_count();
    assert_eq!(width, pg_columns, "view and table differ");
    let rows = select.query_map([], |_| Ok(())).unwrap().count();
    assert_eq!(rows, 255);
    // Maps and unions read back as JSON, every variant.
    let (kinds, has_test): (String, i64) = conn
        .query_row(
            "SELECT group_concat(DISTINCT json_type(repository)), \
                    sum(json_extract(scripts, '$.test') IS NOT NULL) FROM ledger_packages",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert!(
        kinds.contains("text") && kinds.contains("object"),
        "{kinds}"
    );
    assert!(has_test > 100, "{has_test} packages have a test script");
}

#[test]
fn package_json_context_stays_within_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = settled(dir.path());
    let budget = ledger.options().context_budget_bytes;
    let context = ledger.context_for(&[]).unwrap();
    eprintln!("context: {} bytes", context.len());
    assert!(
        context.len() <= budget + 400,
        "{} bytes:\n{context}",
        context.len()
    );
    assert!(context.contains("scripts?: {[k]: string}"), "{context}");
    let small = Ledger::open_in(
        dir.path(),
        LedgerOptions {
            context_budget_bytes: 600,
            ..LedgerOptions::default()
        },
    )
    .unwrap();
    let summary = small.context_for(&[]).unwrap();
    assert!(summary.len() <= 600 + 400, "{} bytes", summary.len());
    assert!(
        summary.contains("more") && summary.contains("\"schema\": true"),
        "{summary}"
    );
}

/// Every `Cargo.toml` under the local crate registry, as JSON.
fn cargo_manifests() -> Vec<Value> {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .expect("neither CARGO_HOME nor HOME is set: cannot find the crate registry");
    let mut manifests = Vec::new();
    for index in std::fs::read_dir(home.join("registry/src"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for krate in std::fs::read_dir(index.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(text) = std::fs::read_to_string(krate.path().join("Cargo.toml")) else {
                continue;
            };
            if let Ok(manifest) = toml::from_str::<toml::Value>(&text) {
                manifests.push(serde_json::to_value(manifest).unwrap());
            }
        }
    }
    assert!(
        manifests.len() >= 100,
        "only {} Cargo.toml files under {}/registry/src: build the workspace first (cargo build)",
        manifests.len(),
        home.display()
    );
    manifests
}

#[test]
fn cargo_manifests_settle_with_their_maps_as_maps() {
    let manifests = cargo_manifests();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifests.jsonl");
    let lines: Vec<String> = manifests.iter().map(Value::to_string).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let ledger = Ledger::open_in(dir.path(), LedgerOptions::default()).unwrap();
    let report = ledger
        .import("crates", &file, &Provenance::new("t", "director"))
        .unwrap();
    assert_eq!(report.recorded, manifests.len() as u64);
    let settlement = ledger.settle("crates").unwrap();
    let schema = &settlement.schema;
    let size = schema.to_string().len();
    let columns = settlement.postgres_ddl.matches("\n  ").count();
    eprintln!(
        "{} manifests: schema {size} bytes, {columns} columns",
        manifests.len()
    );
    assert!(size < 16 * 1024, "schema is {size} bytes");
    assert!((10..=80).contains(&columns), "{}", settlement.postgres_ddl);
    let properties = &schema["properties"];
    for map in ["dependencies", "dev-dependencies", "features"] {
        assert!(
            properties[map]["additionalProperties"].is_object(),
            "{map}: {}",
            properties[map]
        );
    }
    // Published manifests spell every dependency as a table: a record inside the map.
    let dependency = &properties["dependencies"]["additionalProperties"];
    assert!(
        dependency["properties"]["version"].is_object(),
        "{dependency}"
    );
    // Lint levels are a string or a table: a map, and its union stays.
    let rust_lints = &properties["lints"]["properties"]["rust"]["additionalProperties"]["type"];
    assert_eq!(
        rust_lints,
        &serde_json::json!(["string", "object"]),
        "{}",
        properties["lints"]
    );
    // `package` is a record.
    assert!(properties["package"]["properties"]["name"].is_object());
    let validator = jsonschema::draft202012::new(schema).unwrap();
    for manifest in &manifests {
        let errors: Vec<String> = validator
            .iter_errors(manifest)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
    }
    let conn = rusqlite::Connection::open(ledger.path()).unwrap();
    let rows: i64 = conn
        .query_row(
            "SELECT count(*) FROM ledger_crates WHERE json_type(features) IN ('object', NULL) OR features IS NULL",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(rows, manifests.len() as i64);
}
