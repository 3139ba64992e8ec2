//! What the PostgreSQL store does that its public interface cannot show: which index a
//! statement reads, on a throwaway server.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use super::*;
use crate::testing::TempPostgres;

/// Every claim runs [`END_STOPPED`] first: a scan of the unfinished performances cost 2.0 ms a
/// claim at 8,000 leased. With that many unfinished and none stopped, the planner must read
/// the index of the stopped ones.
#[tokio::test]
async fn a_claim_reads_only_the_stopped_ones() {
    let pg = TempPostgres::start_new();
    let store = PgStore::connect(&pg.create_database("plan")).unwrap();
    let client = store.client().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO performances (id, stage, intent, origin, state, worker, lease_expires, \
             created_at, updated_at) SELECT 'p' || n, 's', 'i', 'cli', 'leased', 'w', \
             4000000000000, n, n FROM generate_series(1, 8000) n; ANALYZE performances",
        )
        .await
        .unwrap();
    let rows = client
        .query(
            &format!("EXPLAIN {END_STOPPED}"),
            &[&0i64, &STOPPED_UNHELD, &CHANNEL],
        )
        .await
        .unwrap();
    let plan: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let plan = plan.join("\n");
    assert!(plan.contains("performances_stopping"), "{plan}");
}

/// Not a test: how long [`END_STOPPED`] takes at 8,000 leased and none stopped, with and
/// without its index:
/// `cargo test -p improv-store --lib claim_stop_cost -- --ignored --nocapture --test-threads=1`
#[tokio::test]
#[ignore = "a measurement, printed"]
async fn claim_stop_cost() {
    let pg = TempPostgres::start_new();
    let store = PgStore::connect(&pg.create_database("cost")).unwrap();
    let client = store.client().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO performances (id, stage, intent, origin, state, worker, lease_expires, \
             created_at, updated_at) SELECT 'p' || n, 's', 'i', 'cli', 'leased', 'w', \
             4000000000000, n, n FROM generate_series(1, 8000) n; ANALYZE performances",
        )
        .await
        .unwrap();
    let now = now_millis();
    for label in ["with performances_stopping", "without"] {
        let statement = client.prepare(END_STOPPED).await.unwrap();
        let params: [&(dyn ToSql + Sync); 3] = [&now, &STOPPED_UNHELD, &CHANNEL];
        let start = std::time::Instant::now();
        for _ in 0..2000 {
            client.query(&statement, &params).await.unwrap();
        }
        println!("END_STOPPED {label}: {:?} a claim", start.elapsed() / 2000);
        client
            .batch_execute("DROP INDEX IF EXISTS performances_stopping")
            .await
            .unwrap();
    }
}
