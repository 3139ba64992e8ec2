//! The door-table retention sweep on 100,000 rows (and 20,000 door-made performances), on
//! SQLite and on a throwaway PostgreSQL: how long each batch takes while old rows go, and a
//! sweep that finds nothing to delete (the usual one, every 10 minutes; the outbox's also with
//! its index dropped, as before migration 7). Run by `bench/store/retention.sh` (ignored
//! otherwise: figures, not assertions of speed); it prints a table per backend.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_store::StoreUrl;
use std::time::{Duration, Instant};

const ROWS: i64 = 100_000;
const BATCH: usize = 500;
const DOORS: i64 = 100;
const KEPT: usize = 20;
/// Door-made performances (5 events each, one blob of 1,000 each) and the batch they go in.
const PERFORMANCES: i64 = 20_000;
const PERFORMANCE_BATCH: usize = 50;

/// The stage the door-made performances were queued from (`s`, without a name).
fn stage() -> improv_store::StageKey {
    improv_store::StageKey {
        name: "bench".to_string().into(),
        path: "s".into(),
    }
}

/// Sweeps with `call` until it deletes nothing; returns the rows gone and each call's time.
async fn batches<F, Fut>(call: F) -> (u64, Vec<Duration>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let (mut gone, mut times) = (0, Vec::new());
    loop {
        let start = Instant::now();
        let n = call().await;
        times.push(start.elapsed());
        gone += n;
        if n == 0 {
            return (gone, times);
        }
    }
}

/// Calls `call` 5 times (a sweep that finds nothing, as most are); returns the rows gone and
/// each call's time. The first call also reads the schema again after a change: the median
/// is the figure.
async fn five<F, Fut>(call: F) -> (u64, Vec<Duration>)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let (mut gone, mut times) = (0, Vec::new());
    for _ in 0..5 {
        let start = Instant::now();
        gone += call().await;
        times.push(start.elapsed());
    }
    (gone, times)
}

fn row(what: &str, gone: u64, times: &mut [Duration]) {
    times.sort_unstable();
    let total: Duration = times.iter().sum();
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    println!(
        "| {what:<28} | {gone:>7} | {:>5} | {:>9.1} | {:>8.2} | {:>8.2} |",
        times.len(),
        total.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: bench/store/retention.sh"]
async fn bench_retention_sweep() {
    // The firings are the bench stage's own, as its doors record them.
    let stage_id = stage().id();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.db");
    let store = improv_store::open(&StoreUrl::Sqlite(path.clone())).unwrap();
    store.migrate().await.unwrap();
    let conn = rusqlite::Connection::open(&path).unwrap();
    // 90% sent, 10% never confirmed; all written at time 1000 + i.
    conn.execute_batch(&format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS})
         INSERT INTO outbox (performance, seq, door, conversation, body, sent_id, created_at)
         SELECT 'p' || (i / 100), i % 100, 'chat', '42', '{{}}',
                CASE WHEN i % 10 = 0 THEN NULL ELSE 'm' || i END, 1000 + i FROM n;
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {ROWS} - 1)
         INSERT INTO firings (stage, door, due, note)
         SELECT '{stage_id}', 'door' || (i % {DOORS}), 1000 + i, 'fired' FROM n;
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {PERFORMANCES} - 1)
         INSERT INTO performances (id, stage, intent, origin, state, outcome, created_at, updated_at)
         SELECT 'q' || i, 's', 'i', 'door:d' || (i % {DOORS}), 'finished', 'done', 1000 + i,
                1000 + i FROM n;
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n
                                 WHERE i < {PERFORMANCES} * 5 - 1)
         INSERT INTO events (performance, seq, body) SELECT 'q' || (i / 5), i % 5 + 1, '{{}}' FROM n;
         WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 999)
         INSERT INTO blobs (hash, body) SELECT 'h' || i, zeroblob(2000) FROM n;
         INSERT INTO blob_refs (performance, hash)
         SELECT id, 'h' || (CAST(substr(id, 2) AS INTEGER) % 1000) FROM performances;"
    ))
    .unwrap();
    println!(
        "SQLite, {ROWS} outbox rows and {ROWS} firings ({DOORS} doors), batches of {BATCH}; \
         {PERFORMANCES} door-made performances ({DOORS} doors, 5 events each), batches of \
         {PERFORMANCE_BATCH}"
    );
    let count = |table: &str| -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table}");
        conn.query_row(&sql, [], |r| r.get(0)).unwrap()
    };
    table(&store, |sql: &str| conn.execute_batch(sql).unwrap(), count).await;
}

/// Times every sweep on `store`, filled as both benches fill it; `execute` runs SQL beside the
/// store, `count` counts a table's rows.
async fn table(
    store: &std::sync::Arc<dyn improv_store::Store>,
    execute: impl Fn(&str),
    count: impl Fn(&str) -> i64,
) {
    println!(
        "| sweep                        | deleted | calls | total ms  | median ms | max ms  |"
    );
    println!(
        "|------------------------------|---------|-------|-----------|----------|----------|"
    );
    let young = 0;
    let (gone, mut t) = five(|| async { store.sweep_outbox(young, BATCH).await.unwrap() }).await;
    row("outbox, nothing expired", gone, &mut t);
    // The same without the index on confirmed rows (what the sweep was before migration 7).
    execute("DROP INDEX outbox_sent");
    let (gone, mut t) = five(|| async { store.sweep_outbox(young, BATCH).await.unwrap() }).await;
    row("outbox, nothing, no index", gone, &mut t);
    execute("CREATE INDEX outbox_sent ON outbox (created_at) WHERE sent_id IS NOT NULL");
    let (gone, mut t) = five(|| async {
        store
            .sweep_firings(&stage(), young, KEPT, BATCH)
            .await
            .unwrap()
    })
    .await;
    row("firings, nothing expired", gone, &mut t);
    let sweep = |before| {
        let store = store.clone();
        async move {
            let stage = stage();
            let swept = store.sweep_door_performances(&stage, before, KEPT, PERFORMANCE_BATCH);
            swept.await.unwrap()
        }
    };
    let (gone, mut t) = five(|| sweep(young)).await;
    row("performances, none expired", gone, &mut t);
    let old = i64::MAX;
    let (gone, mut t) = batches(|| async { store.sweep_outbox(old, BATCH).await.unwrap() }).await;
    assert_eq!(gone, 90_000, "every sent row goes, no unsent one");
    row("outbox, 90% expired", gone, &mut t);
    let (gone, mut t) = batches(|| async {
        store
            .sweep_firings(&stage(), old, KEPT, BATCH)
            .await
            .unwrap()
    })
    .await;
    assert_eq!(gone, (ROWS - DOORS * KEPT as i64) as u64);
    row("firings, all but 20/door", gone, &mut t);
    let (gone, mut t) = batches(|| sweep(old)).await;
    assert_eq!(gone, (PERFORMANCES - DOORS * KEPT as i64) as u64);
    row("performances, all but 20/door", gone, &mut t);
    let events = count("events");
    assert_eq!(
        events,
        DOORS * KEPT as i64 * 5,
        "their events went with them"
    );
    let (gone, mut t) = batches(|| async { store.sweep_outbox(old, BATCH).await.unwrap() }).await;
    row("outbox, 10,000 unsent left", gone, &mut t);
    let (gone, mut t) = batches(|| async {
        store
            .sweep_firings(&stage(), old, KEPT, BATCH)
            .await
            .unwrap()
    })
    .await;
    row("firings, 2,000 kept left", gone, &mut t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: bench/store/retention.sh"]
async fn bench_retention_sweep_postgres() {
    // The firings are the bench stage's own, as its doors record them.
    let stage_id = stage().id();
    let pg = improv_store::testing::TempPostgres::start_new();
    pg.create_database("improv");
    let store = improv_store::open(&StoreUrl::parse(&pg.url("improv")).unwrap()).unwrap();
    store.migrate().await.unwrap();
    pg.psql(
        "improv",
        &format!(
            "INSERT INTO outbox (performance, seq, door, conversation, body, sent_id, created_at)
             SELECT 'p' || (i / 100), i % 100, 'chat', '42', '{{}}',
                    CASE WHEN i % 10 = 0 THEN NULL ELSE 'm' || i END, 1000 + i
             FROM generate_series(1, {ROWS}) i;
             INSERT INTO firings (stage, door, due, note)
             SELECT '{stage_id}', 'door' || (i % {DOORS}), 1000 + i, 'fired' FROM generate_series(0, {ROWS} - 1) i;
             INSERT INTO performances (id, stage, intent, origin, state, outcome, created_at,
                                       updated_at)
             SELECT 'q' || i, 's', 'i', 'door:d' || (i % {DOORS}), 'finished', 'done', 1000 + i,
                    1000 + i FROM generate_series(0, {PERFORMANCES} - 1) i;
             INSERT INTO events (performance, seq, body)
             SELECT 'q' || (i / 5), i % 5 + 1, '{{}}' FROM generate_series(0, {PERFORMANCES} * 5 - 1) i;
             INSERT INTO blobs (hash, body)
             SELECT 'h' || i, convert_to(repeat('x', 2000), 'UTF8') FROM generate_series(0, 999) i;
             INSERT INTO blob_refs (performance, hash)
             SELECT id, 'h' || (substr(id, 2)::int % 1000) FROM performances;
             ANALYZE;"
        ),
    );
    println!("PostgreSQL (TempPostgres, a Unix socket), the same rows");
    let count = |table: &str| -> i64 {
        let n = pg.psql("improv", &format!("SELECT COUNT(*) FROM {table}"));
        n.trim().parse().unwrap()
    };
    table(&store, |sql: &str| drop(pg.psql("improv", sql)), count).await;
}
