//! Settled collections as real tables in the PostgreSQL store, through the `record` and `query`
//! props of a stage performed from that store: settle, query through the prop (read from the
//! table), evolve (the migration runs there), query again. Against a real server started by the
//! test in a temporary folder; without the PostgreSQL binaries it fails, saying so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_kernel::{Prop, PropContext};
use improv_ledger::postgres::{PgLedger, TableChange};
use improv_ledger::{Decision, Ledger, Provenance, props_in_store};
use improv_store::PgPool;
use improv_store::testing::TempPostgres;
use serde_json::{Value, json};
use std::sync::Arc;

fn prop(props: &[Arc<dyn Prop>], name: &str) -> Arc<dyn Prop> {
    props
        .iter()
        .find(|p| p.spec().name == name)
        .unwrap()
        .clone()
}

async fn call(prop: &Arc<dyn Prop>, arguments: Value, dir: &std::path::Path) -> String {
    prop.call(arguments, &PropContext::new(dir, "scout", "perf-1"))
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", prop.spec().name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_collection_is_a_table_queried_and_evolved_in_the_store() {
    let server = TempPostgres::start_new();
    let url = server.create_database("improv");
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open_in(dir.path(), Default::default()).unwrap());
    let who = Provenance::new("perf-0", "scout");
    for i in 0..20 {
        let entry =
            json!({"name": format!("lead {i}"), "score": i, "tags": ["a", format!("t{i}")]});
        ledger.record("leads", entry, &who).unwrap();
    }
    ledger.settle("leads").unwrap();
    let store = Arc::new(PgLedger::new(PgPool::connect(&url).unwrap(), "Shop"));
    let s = store.schema().to_owned();
    let props = props_in_store(ledger.clone(), store.clone());
    let (record, query) = (prop(&props, "record"), prop(&props, "query"));

    // The first write after settling makes the table from the DDL and loads every entry.
    let out = call(
        &record,
        json!({"collection": "leads", "entry": {"name": "Ada", "score": 99, "tags": ["vip"]}}),
        dir.path(),
    )
    .await;
    assert_eq!(out, "recorded #21 in leads");
    let typed = server.psql(
        "improv",
        &format!(
            "SELECT count(*), max(score), pg_typeof(max(score))::text, \
             count(*) FILTER (WHERE 'vip' = ANY(tags)) FROM {s}.leads"
        ),
    );
    assert_eq!(typed.trim(), "21|99|bigint|1");

    // The prop reads the table: a row only the store has is found, filtered and ordered there.
    server.psql(
        "improv",
        &format!(
            "INSERT INTO {s}.leads (source, id, performance, actor, at, name, score, tags, doc) \
             VALUES ('sql', 1000, 'sql', 'dba', now(), 'Grace', 50, '{{b}}', \
             '{{\"name\": \"Grace\", \"score\": 50, \"tags\": [\"b\"]}}')"
        ),
    );
    let out = call(
        &query,
        json!({"collection": "leads", "where": {"score": {">": 17}}, "order_by": "-score"}),
        dir.path(),
    )
    .await;
    let ids: Vec<&str> = out.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(ids, vec!["#21", "#1000", "#20", "#19"], "{out}");
    let out = call(
        &query,
        json!({"collection": "leads", "where": {"tags": {"contains": "t3"}}}),
        dir.path(),
    )
    .await;
    assert!(out.starts_with("#4 ") && out.lines().count() == 1, "{out}");

    // Evolve: a new field is proposed, accepted; its migration runs in the store, later
    // entries load into the new column, and the prop queries it.
    let out = call(&record, json!({"collection": "leads", "entry": {"name": "Lin", "score": 7, "tags": [], "region": "north"}}), dir.path()).await;
    assert!(out.contains("proposed"), "{out}");
    ledger.evolve("leads", "region", Decision::Accept).unwrap();
    let synced = store.sync(&ledger, "leads").await.unwrap().unwrap();
    assert_eq!((synced.version, synced.table), (2, TableChange::Migrated));
    call(&record, json!({"collection": "leads", "entry": {"name": "Bo", "score": 8, "tags": [], "region": "south"}}), dir.path()).await;
    let column = server.psql(
        "improv",
        &format!(
            "SELECT data_type FROM information_schema.columns \
             WHERE table_schema = '{s}' AND table_name = 'leads' AND column_name = 'region'"
        ),
    );
    assert_eq!(column.trim(), "text");
    assert_eq!(
        server
            .psql(
                "improv",
                &format!("SELECT name FROM {s}.leads WHERE region = 'south'")
            )
            .trim(),
        "Bo"
    );
    let out = call(
        &query,
        json!({"collection": "leads", "where": {"region": "north"}}),
        dir.path(),
    )
    .await;
    assert!(out.starts_with("#22 ") && out.contains("Lin"), "{out}");
    // Nothing loaded twice.
    assert_eq!(
        server
            .psql("improv", &format!("SELECT count(*) FROM {s}.leads"))
            .trim(),
        "24"
    );
    let again = store.sync(&ledger, "leads").await.unwrap().unwrap();
    assert_eq!((again.table, again.loaded), (TableChange::Current, 0));
}

/// `improv ledger settle --store URL` and `evolve --accept FIELD --store URL`: the table is
/// created and loaded, then migrated, as the command says.
#[cfg(feature = "cli")]
#[test]
fn settle_and_evolve_with_a_store_make_and_migrate_the_table() {
    use clap::Parser;
    use improv_ledger::cli::{LedgerCommand, run_with};
    #[derive(Parser)]
    struct Improv {
        #[command(subcommand)]
        command: Option<LedgerCommand>,
    }
    let server = TempPostgres::start_new();
    let url = server.create_database("improv");
    let dir = tempfile::tempdir().unwrap();
    let improv = |args: &[&str]| {
        let cli =
            Improv::try_parse_from(std::iter::once("ledger").chain(args.iter().copied())).unwrap();
        let mut out = Vec::new();
        run_with(
            cli.command,
            dir.path(),
            "crm",
            Default::default(),
            false,
            &mut out,
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    };
    {
        let ledger = Ledger::open_in(dir.path(), Default::default()).unwrap();
        let who = Provenance::new("perf-0", "scout");
        for i in 0..12 {
            ledger
                .record(
                    "deals",
                    json!({"title": format!("deal {i}"), "value": i * 10}),
                    &who,
                )
                .unwrap();
        }
    }
    let s = improv_ledger::postgres::schema_name("crm");
    let out = improv(&["settle", "deals", "--store", &url]);
    assert!(
        out.contains(&format!("table {s}.deals in postgres://"))
            && out.contains("created (version 1), 12 entries loaded"),
        "{out}"
    );
    assert_eq!(
        server
            .psql("improv", &format!("SELECT sum(value) FROM {s}.deals"))
            .trim(),
        "660"
    );
    {
        let ledger = Ledger::open_in(dir.path(), Default::default()).unwrap();
        let entry = json!({"title": "big", "value": 1000, "owner": "ada"});
        ledger
            .record("deals", entry, &Provenance::new("perf-1", "scout"))
            .unwrap();
    }
    let out = improv(&["evolve", "deals", "--accept", "owner", "--store", &url]);
    assert!(
        out.contains("migrated (version 2), 1 entries loaded"),
        "{out}"
    );
    assert_eq!(
        server
            .psql(
                "improv",
                &format!("SELECT owner FROM {s}.deals WHERE value = 1000")
            )
            .trim(),
        "ada"
    );
}

/// A ledger in a new temporary folder with `entries` recorded into `collection`, settled.
fn settled_ledger(collection: &str, entries: &[Value]) -> (tempfile::TempDir, Arc<Ledger>) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open_in(dir.path(), Default::default()).unwrap());
    let who = Provenance::new("perf-0", "scout");
    for entry in entries {
        ledger.record(collection, entry.clone(), &who).unwrap();
    }
    ledger.settle(collection).unwrap();
    (dir, ledger)
}

fn store(url: &str, stage: &str) -> Arc<PgLedger> {
    Arc::new(PgLedger::new(PgPool::connect(url).unwrap(), stage))
}

/// H1: two workers' ledger files (both numbering from 1) and a recreated `.improv/` load into
/// one table, every entry once; a file settled differently is refused, saying what differs, and
/// its `query` answers from the file, saying the table is behind; a row already in the table
/// under the same (source, id) is an error, not a silent drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ledger_file_loads_under_its_own_source() {
    let server = TempPostgres::start_new();
    let url = server.create_database("improv");
    let leads = |from: i64| -> Vec<Value> {
        (from..from + 5)
            .map(|i| json!({"name": format!("lead {i}"), "score": i}))
            .collect()
    };
    let (dir_a, a) = settled_ledger("leads", &leads(0));
    let (_dir_b, b) = settled_ledger("leads", &leads(100));
    assert_ne!(a.source(), b.source());
    let reopened = Ledger::open_in(dir_a.path(), Default::default()).unwrap();
    assert_eq!(
        reopened.source(),
        a.source(),
        "the identity is kept in the file"
    );
    let store = store(&url, "Shop");
    let s = store.schema().to_owned();
    assert_eq!(store.sync(&a, "leads").await.unwrap().unwrap().loaded, 5);
    assert_eq!(store.sync(&b, "leads").await.unwrap().unwrap().loaded, 5);
    let (_dir_c, c) = settled_ledger("leads", &leads(200));
    assert_eq!(store.sync(&c, "leads").await.unwrap().unwrap().loaded, 5);
    let sum = server.psql(
        "improv",
        &format!("SELECT count(*), count(DISTINCT source), sum(score) FROM {s}.leads"),
    );
    assert_eq!(sum.trim(), "15|3|1530");

    // Settled as v1 with `score` as text: refused, naming the column.
    let texts: Vec<Value> = (0..5)
        .map(|i| json!({"name": format!("x {i}"), "score": format!("s{i}")}))
        .collect();
    let (dir_d, d) = settled_ledger("leads", &texts);
    let error = store.sync(&d, "leads").await.unwrap_err().to_string();
    assert!(
        error.contains("`score` is TEXT here, BIGINT in the table"),
        "{error}"
    );
    let props = props_in_store(d.clone(), store.clone());
    let out = call(
        &prop(&props, "query"),
        json!({"collection": "leads", "where": {"score": "s3"}}),
        dir_d.path(),
    )
    .await;
    assert!(
        out.starts_with("#4 ") && out.contains("answered from the ledger file"),
        "{out}"
    );

    // A row put in by hand under A's source and A's next id: the load says so.
    server.psql(
        "improv",
        &format!(
            "INSERT INTO {s}.leads (source, id, performance, actor, at, name, score, doc) \
             VALUES ('{}', 6, 'sql', 'dba', now(), 'hand', 1, '{{}}')",
            a.source()
        ),
    );
    a.record(
        "leads",
        json!({"name": "six", "score": 6}),
        &Provenance::new("p", "a"),
    )
    .unwrap();
    let error = store.sync(&a, "leads").await.unwrap_err().to_string();
    assert!(error.contains("0 of 1 entries were loaded"), "{error}");
}

/// H2: integers above i64::MAX settle as numbers (DOUBLE PRECISION; `doc` keeps every digit) and year-0000 dates as text, so both load; a
/// value PostgreSQL still cannot take (a huge integer in a BIGINT column settled before) is
/// skipped and named in the reply, and the entries beside it load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_postgres_cannot_take_skips_its_entry_not_the_collection() {
    let server = TempPostgres::start_new();
    let url = server.create_database("improv");
    let store = store(&url, "Shop");
    let s = store.schema().to_owned();
    let odd = [
        json!({"n": 1, "day": "2020-01-02"}),
        json!({"n": u64::MAX, "day": "0000-01-01"}),
    ];
    let (_dir, odd) = settled_ledger("odd", &odd);
    assert_eq!(store.sync(&odd, "odd").await.unwrap().unwrap().loaded, 2);
    let types = server.psql(
        "improv",
        &format!(
            "SELECT pg_typeof(n)::text, pg_typeof(day)::text, count(*), \
             max(doc ->> 'n') FILTER (WHERE day LIKE '0000%') FROM {s}.odd GROUP BY 1, 2"
        ),
    );
    assert_eq!(types.trim(), "double precision|text|2|18446744073709551615");

    let small: Vec<Value> = (0..3).map(|i| json!({"n": i})).collect();
    let (dir, ledger) = settled_ledger("small", &small);
    let props = props_in_store(ledger.clone(), store.clone());
    let record = prop(&props, "record");
    let out = call(
        &record,
        json!({"collection": "small", "entry": {"n": u64::MAX}}),
        dir.path(),
    )
    .await;
    assert!(
        out.starts_with("recorded #4") && out.contains("could not take #4"),
        "{out}"
    );
    let out = call(
        &record,
        json!({"collection": "small", "entry": {"n": 5}}),
        dir.path(),
    )
    .await;
    assert_eq!(out, "recorded #5 in small");
    let out = call(
        &prop(&props, "query"),
        json!({"collection": "small"}),
        dir.path(),
    )
    .await;
    let ids: Vec<&str> = out.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(ids, ["#1", "#2", "#3", "#5"], "{out}");
    let kept = server.psql(
        "improv",
        &format!("SELECT id FROM {s}.improv_ledger_rejected WHERE collection = 'small'"),
    );
    assert_eq!(kept.trim(), "4");
}

/// M1: a collection named like a catalog table, one named as another's record type, two whose
/// names share their first 63 bytes, each get a table of their own; the sync table's name and
/// built-in type names (`date`, `text`, `pg_type`) are refused, and a later sync is unharmed. L1: a field key with a backslash loads with `standard_conforming_strings` off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_collection_gets_a_table_of_its_own() {
    let server = TempPostgres::start_new();
    let url = server.create_database("improv");
    server.psql(
        "improv",
        "ALTER DATABASE improv SET standard_conforming_strings = off",
    );
    let store = store(&url, "Shop");
    let s = store.schema().to_owned();
    let long = "c".repeat(63);
    let names = [
        "pg_types".to_owned(),
        "o".to_owned(),
        "o_items".to_owned(),
        format!("{long}1"),
        format!("{long}2"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open_in(dir.path(), Default::default()).unwrap();
    let who = Provenance::new("perf-0", "scout");
    for name in &names {
        for i in 0..3 {
            let entry = json!({"items": [{"sku": format!("s{i}"), "qty": i}], "a\\b": i});
            ledger.record(name, entry, &who).unwrap();
        }
        ledger.settle(name).unwrap();
        assert_eq!(
            store.sync(&ledger, name).await.unwrap().unwrap().loaded,
            3,
            "{name}"
        );
    }
    for name in &names {
        let query =
            improv_ledger::Query::from_json(Some(&json!({"items": {"exists": true}})), None, None)
                .unwrap();
        assert_eq!(store.query(name, &query).await.unwrap().len(), 3, "{name}");
    }
    let backslash = server.psql("improv", &format!("SELECT sum(a_b) FROM {s}.o"));
    assert_eq!(backslash.trim(), "3");
    ledger
        .record("improv_ledger_sync", json!({"x": 1}), &who)
        .unwrap();
    ledger.settle("improv_ledger_sync").unwrap();
    let error = store
        .sync(&ledger, "improv_ledger_sync")
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("the name is the ledger's own"), "{error}");
    // A collection named as a built-in type (or a catalog table, whose row type is one) gets no
    // table: its row type would stand in for `date` or `text` in every later sync's SQL.
    for name in ["date", "text", "pg_type"] {
        ledger.record(name, json!({"x": 1}), &who).unwrap();
        ledger.settle(name).unwrap();
        let error = store.sync(&ledger, name).await.unwrap_err().to_string();
        assert!(error.contains("built-in type"), "{name}: {error}");
    }
    for i in 0..3 {
        let entry = json!({"day": format!("2026-11-0{}", i + 1), "note": "t"});
        ledger.record("days", entry, &who).unwrap();
    }
    ledger.settle("days").unwrap();
    let synced = store.sync(&ledger, "days").await.unwrap().unwrap();
    assert_eq!((synced.loaded, synced.rejected.len()), (3, 0));
}

/// A load that fails for the store's sake (here the table locked past `lock_timeout`) fails the
/// sync and loads later; only an entry's own data rejects it for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failure_does_not_reject_entries() {
    let server = TempPostgres::start_new();
    let url = server.create_database("improv");
    server.psql("improv", "ALTER DATABASE improv SET lock_timeout = '200ms'");
    let rows: Vec<Value> = (0..3).map(|i| json!({"n": i})).collect();
    let (_dir, ledger) = settled_ledger("small", &rows);
    let store = store(&url, "Shop");
    let s = store.schema().to_owned();
    assert_eq!(
        store.sync(&ledger, "small").await.unwrap().unwrap().loaded,
        3
    );
    ledger
        .record("small", json!({"n": 3}), &Provenance::new("p", "a"))
        .unwrap();
    let holder = PgPool::connect(&url).unwrap();
    let mut client = holder.client().await.unwrap();
    let lock = client.transaction().await.unwrap();
    lock.batch_execute(&format!("LOCK TABLE {s}.small IN ACCESS EXCLUSIVE MODE"))
        .await
        .unwrap();
    let error = store.sync(&ledger, "small").await.unwrap_err().to_string();
    assert!(error.contains("lock"), "{error}");
    lock.rollback().await.unwrap();
    let synced = store.sync(&ledger, "small").await.unwrap().unwrap();
    assert_eq!((synced.loaded, synced.rejected.len()), (1, 0));
}

/// Copies `from` (a stage's `.improv/`) to a new temporary folder as `cp -a` does.
fn copy_folder(from: &std::path::Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to.path())
        .status()
        .unwrap();
    assert!(status.success());
    to
}

fn names(server: &TempPostgres, schema: &str, like: &str) -> String {
    server
        .psql(
            "improv",
            &format!("SELECT count(*) FROM {schema}.leads WHERE name LIKE '{like}'"),
        )
        .trim()
        .to_owned()
}

/// M1: a stage folder copied with `cp -a` (a second checkout, a restored backup) and both
/// copies written to: each file's entries reach the store. The copy is another inode, so it
/// gets its own source; before, both loaded under one source and the second's entries at ids
/// the first had loaded were never loaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_stage_folder_loads_its_own_entries_beside_the_original() {
    let server = TempPostgres::start_new();
    let url = server.create_database("improv");
    let first: Vec<Value> = (0..5)
        .map(|i| json!({"name": format!("lead {i}"), "score": i}))
        .collect();
    let (dir_a, a) = settled_ledger("leads", &first);
    let store = store(&url, "Shop");
    let s = store.schema().to_owned();
    assert_eq!(store.sync(&a, "leads").await.unwrap().unwrap().loaded, 5);
    let source = a.source().to_owned();
    drop(a);
    let dir_b = copy_folder(dir_a.path());

    let a = Ledger::open_in(dir_a.path(), Default::default()).unwrap();
    let b = Ledger::open_in(dir_b.path(), Default::default()).unwrap();
    assert_eq!(a.source(), source, "the original keeps its source");
    assert_ne!(b.source(), source, "the copy gets its own");
    for (ledger, tag) in [(&a, "a"), (&b, "b")] {
        for i in 0..3 {
            let entry = json!({"name": format!("{tag}-{i}"), "score": 10 + i});
            ledger
                .record("leads", entry, &Provenance::new("perf-1", tag))
                .unwrap();
        }
    }
    store.sync(&a, "leads").await.unwrap();
    store.sync(&b, "leads").await.unwrap();
    assert_eq!(names(&server, &s, "a-%"), "3", "the original's entries");
    assert_eq!(names(&server, &s, "b-%"), "3", "the copy's entries");
    // The entries the copy shares with the original are its own too, under its source.
    assert_eq!(names(&server, &s, "lead %"), "10");
    // Reopening the copy keeps the source it was given.
    let again = Ledger::open_in(dir_b.path(), Default::default()).unwrap();
    assert_eq!(again.source(), b.source());
}

/// A stage folder moved to another file system (copied, then the original deleted: the file
/// is another inode, and nothing is left where it was) is the same ledger: it keeps its source,
/// and the sync loads only what is new, not every entry again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_stage_folder_with_the_original_gone_loads_nothing_twice() {
    let server = TempPostgres::start_new();
    let url = server.create_database("improv");
    let first: Vec<Value> = (0..5)
        .map(|i| json!({"name": format!("lead {i}"), "score": i}))
        .collect();
    let (dir_a, a) = settled_ledger("leads", &first);
    let store = store(&url, "Shop");
    let s = store.schema().to_owned();
    assert_eq!(store.sync(&a, "leads").await.unwrap().unwrap().loaded, 5);
    let source = a.source().to_owned();
    drop(a);
    let dir_b = copy_folder(dir_a.path());
    dir_a.close().unwrap();

    let b = Ledger::open_in(dir_b.path(), Default::default()).unwrap();
    b.record(
        "leads",
        json!({"name": "b-0", "score": 10}),
        &Provenance::new("perf-1", "b"),
    )
    .unwrap();
    store.sync(&b, "leads").await.unwrap();
    assert_eq!(names(&server, &s, "lead %"), "5", "no entry loaded twice");
    assert_eq!(names(&server, &s, "b-%"), "1");
    assert_eq!(b.source(), source, "a moved file keeps its source");
}

/// M1, the copy no inode tells apart (a cloned volume keeps inodes and paths): the store sees
/// that the second file holds other entries than those loaded under the same source, and the
/// sync fails naming both files; nothing of the first is overwritten or hidden.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_sharing_the_source_is_refused_naming_both_files() {
    let server = TempPostgres::start_new();
    let url = server.create_database("improv");
    let first: Vec<Value> = (0..5)
        .map(|i| json!({"name": format!("lead {i}"), "score": i}))
        .collect();
    let (dir_a, a) = settled_ledger("leads", &first);
    drop(a);
    let dir_b = copy_folder(dir_a.path());
    // Make the copy look like the file it was copied from was always here, as on a cloned
    // volume: its recorded inode and path are its own.
    let file_b = dir_b.path().join("ledger.db");
    let inode = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(&file_b).unwrap().ino() as i64
    };
    let path_b = file_b.canonicalize().unwrap().display().to_string();
    rusqlite::Connection::open(&file_b)
        .unwrap()
        .execute(
            "UPDATE ledger_identity SET inode = ?1, path = ?2",
            rusqlite::params![inode, path_b],
        )
        .unwrap();
    let a = Ledger::open_in(dir_a.path(), Default::default()).unwrap();
    let b = Ledger::open_in(dir_b.path(), Default::default()).unwrap();
    assert_eq!(a.source(), b.source());
    for (ledger, tag) in [(&a, "a"), (&b, "b")] {
        let entry = json!({"name": format!("{tag}-0"), "score": 10});
        ledger
            .record("leads", entry, &Provenance::new("perf-1", tag))
            .unwrap();
    }
    let store = store(&url, "Shop");
    let s = store.schema().to_owned();
    store.sync(&a, "leads").await.unwrap();
    let error = store.sync(&b, "leads").await.unwrap_err().to_string();
    let path_a = dir_a.path().canonicalize().unwrap();
    assert!(
        error.contains("two ledger files share the source")
            && error.contains(&path_b)
            && error.contains(&path_a.display().to_string()),
        "{error}"
    );
    assert_eq!(names(&server, &s, "a-%"), "1");
    assert_eq!(names(&server, &s, "b-%"), "0");
    // The original keeps syncing.
    a.record(
        "leads",
        json!({"name": "a-1", "score": 11}),
        &Provenance::new("perf-2", "a"),
    )
    .unwrap();
    store.sync(&a, "leads").await.unwrap();
    assert_eq!(names(&server, &s, "a-%"), "2");
}
