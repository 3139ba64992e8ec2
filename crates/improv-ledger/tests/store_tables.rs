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
        "SELECT count(*), max(score), pg_typeof(max(score))::text, \
         count(*) FILTER (WHERE 'vip' = ANY(tags)) FROM ledger_shop.leads",
    );
    assert_eq!(typed.trim(), "21|99|bigint|1");

    // The prop reads the table: a row only the store has is found, filtered and ordered there.
    server.psql(
        "improv",
        "INSERT INTO ledger_shop.leads (id, performance, actor, at, name, score, tags, doc) \
         VALUES (1000, 'sql', 'dba', now(), 'Grace', 50, '{b}', \
         '{\"name\": \"Grace\", \"score\": 50, \"tags\": [\"b\"]}')",
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
        "SELECT data_type FROM information_schema.columns \
         WHERE table_schema = 'ledger_shop' AND table_name = 'leads' AND column_name = 'region'",
    );
    assert_eq!(column.trim(), "text");
    assert_eq!(
        server
            .psql(
                "improv",
                "SELECT name FROM ledger_shop.leads WHERE region = 'south'"
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
            .psql("improv", "SELECT count(*) FROM ledger_shop.leads")
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
    let out = improv(&["settle", "deals", "--store", &url]);
    assert!(
        out.contains("table ledger_crm.deals in postgres://")
            && out.contains("created (version 1), 12 entries loaded"),
        "{out}"
    );
    assert_eq!(
        server
            .psql("improv", "SELECT sum(value) FROM ledger_crm.deals")
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
                "SELECT owner FROM ledger_crm.deals WHERE value = 1000"
            )
            .trim(),
        "ada"
    );
}
