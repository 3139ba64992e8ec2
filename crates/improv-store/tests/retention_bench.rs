//! The door-table retention sweep on 100,000 rows of SQLite: how long each batch of 500 takes
//! while old rows go, and a sweep that finds nothing to delete (the usual one, every 10
//! minutes). Run by `bench/store/retention.sh` (ignored otherwise: figures, not assertions of
//! speed); it prints a table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_store::StoreUrl;
use std::time::{Duration, Instant};

const ROWS: i64 = 100_000;
const BATCH: usize = 500;
const DOORS: i64 = 100;
const KEPT: usize = 20;

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
         INSERT INTO firings (door, due, note)
         SELECT 'door' || (i % {DOORS}), 1000 + i, 'fired' FROM n;"
    ))
    .unwrap();
    println!("SQLite, {ROWS} outbox rows and {ROWS} firings ({DOORS} doors), batches of {BATCH}");
    println!(
        "| sweep                        | deleted | calls | total ms  | median ms | max ms  |"
    );
    println!(
        "|------------------------------|---------|-------|-----------|----------|----------|"
    );
    let young = 0;
    let (gone, mut t) = batches(|| async { store.sweep_outbox(young, BATCH).await.unwrap() }).await;
    row("outbox, nothing expired", gone, &mut t);
    let (gone, mut t) =
        batches(|| async { store.sweep_firings(young, KEPT, BATCH).await.unwrap() }).await;
    row("firings, nothing expired", gone, &mut t);
    let old = i64::MAX;
    let (gone, mut t) = batches(|| async { store.sweep_outbox(old, BATCH).await.unwrap() }).await;
    assert_eq!(gone, 90_000, "every sent row goes, no unsent one");
    row("outbox, 90% expired", gone, &mut t);
    let (gone, mut t) =
        batches(|| async { store.sweep_firings(old, KEPT, BATCH).await.unwrap() }).await;
    assert_eq!(gone, (ROWS - DOORS * KEPT as i64) as u64);
    row("firings, all but 20/door", gone, &mut t);
    let (gone, mut t) = batches(|| async { store.sweep_outbox(old, BATCH).await.unwrap() }).await;
    row("outbox, 10,000 unsent left", gone, &mut t);
    let (gone, mut t) =
        batches(|| async { store.sweep_firings(old, KEPT, BATCH).await.unwrap() }).await;
    row("firings, 2,000 kept left", gone, &mut t);
}
