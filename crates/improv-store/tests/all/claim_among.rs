//! Benchmark (run with `--ignored --nocapture`): what a claim costs a worker serving named
//! stages ([`Serving::Stages`]) in a store shared with other stages, against one serving any,
//! on both backends. The store holds 100,000 performances: 90,000 finished and 10,000 queued
//! across 50 stages (200 each). Each row is 100 claims in a row; "none of its stages" is what a
//! worker pays when woken by other stages' work (it finds nothing and leaves it queued).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_store::testing::TempPostgres;
use improv_store::{Serving, StageKey, Store, StoreUrl};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ROWS: u32 = 100_000;
const CLAIMS: usize = 100;

/// Inserts [`ROWS`] performances: every tenth queued, of stage `stage{i / 10 % 50}`.
fn fill_sql(series: &str) -> String {
    format!(
        "INSERT INTO performances (id, stage, intent, origin, state, created_at, updated_at, \
         stage_name) SELECT 'p' || i, '/srv/s/stage.toml', 'i', 'cli', \
         CASE WHEN i % 10 = 0 THEN 'queued' ELSE 'finished' END, i, i, \
         'stage' || (i / 10 % 50) FROM {series}"
    )
}

/// Median and slowest of [`CLAIMS`] claims for `serving`; checks each claimed one is served.
async fn claims(store: &Arc<dyn Store>, serving: &Serving) -> (Duration, Duration) {
    let mut took = Vec::with_capacity(CLAIMS);
    for _ in 0..CLAIMS {
        let start = Instant::now();
        let claimed = store
            .claim_among("bench", Duration::from_secs(600), serving)
            .await
            .unwrap();
        took.push(start.elapsed());
        if let (Serving::Stages(keys), Some((_, record))) = (serving, &claimed) {
            assert!(keys.iter().any(|k| k.holds(record)));
        }
        if let Serving::Stages(keys) = serving
            && keys[0].name.as_deref() == Some("absent")
        {
            assert!(claimed.is_none());
        }
    }
    took.sort();
    (took[CLAIMS / 2], took[CLAIMS - 1])
}

async fn measure(backend: &str, store: Arc<dyn Store>) {
    // Each served stage's file is elsewhere: only the name selects (no row lacks one).
    let served = |name: &str| {
        Serving::Stages(vec![StageKey {
            name: Some(name.into()),
            path: format!("/srv/{name}/stage.toml"),
        }])
    };
    let (one, absent) = (served("stage7"), served("absent"));
    for (what, serving) in [
        ("one of 50 stages", &one),
        ("none of its stages", &absent),
        ("any stage", &Serving::Any),
    ] {
        let (median, slowest) = claims(&store, serving).await;
        println!(
            "| {backend:<10} | {what:<18} | {:>10.2} | {:>11.2} |",
            median.as_secs_f64() * 1e3,
            slowest.as_secs_f64() * 1e3
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn a_claim_among_named_stages_in_a_shared_store() {
    println!("\n| backend    | claims             | median ms  | slowest ms  |");
    println!("|------------|--------------------|------------|-------------|");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = improv_store::open(&StoreUrl::Sqlite(path.clone())).unwrap();
    store.migrate().await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute_batch(&fill_sql(&format!(
        "(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS}) \
         SELECT i FROM n)"
    )))
    .unwrap();
    drop(conn);
    measure("sqlite", store).await;

    let pg = TempPostgres::start_new();
    pg.create_database("improv");
    let store = improv_store::open(&StoreUrl::parse(&pg.url("improv")).unwrap()).unwrap();
    store.migrate().await.unwrap();
    pg.psql(
        "improv",
        &format!(
            "{}; ANALYZE performances",
            fill_sql(&format!("generate_series(1, {ROWS}) AS i"))
        ),
    );
    measure("postgres", store).await;
}
