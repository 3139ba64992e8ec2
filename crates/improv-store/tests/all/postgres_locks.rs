//! PostgreSQL under contention: a transaction the server rolls back to settle a conflict is
//! worth retrying, and a sweep with no blob to look at does not wait on appends.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_kernel::Outcome;
use improv_store::testing::TempPostgres;
use improv_store::{NewPerformance, PgPool, StageKey, StoreUrl};
use std::time::Duration;

/// Two transactions each lock a row and then ask for the other's: the server ends one with a
/// deadlock (40P01), rolled back whole. A worker must wait and retry, not give up its
/// performance as on a permanent error.
#[tokio::test]
async fn a_deadlock_is_transient() {
    let pg = TempPostgres::start_new();
    let pool = PgPool::connect(&pg.create_database("locks")).unwrap();
    let (one, two) = (pool.client().await.unwrap(), pool.client().await.unwrap());
    one.batch_execute(
        "CREATE TABLE t (id INT PRIMARY KEY, n INT); INSERT INTO t VALUES (1, 0), (2, 0)",
    )
    .await
    .unwrap();
    one.batch_execute("BEGIN; UPDATE t SET n = 1 WHERE id = 1")
        .await
        .unwrap();
    two.batch_execute("BEGIN; UPDATE t SET n = 2 WHERE id = 2")
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        one.execute("UPDATE t SET n = 1 WHERE id = 2", &[]),
        two.execute("UPDATE t SET n = 2 WHERE id = 1", &[]),
    );
    let error = a.err().or(b.err()).expect("the server ends one of them");
    let error = pool.error(&error);
    assert!(error.is_transient(), "not retried: {error}");
    assert!(error.to_string().contains("deadlock"), "{error}");
}

/// An append's transaction holds blobs' ROW EXCLUSIVE lock until it commits. Sweeping door
/// performances that refer to no blob has nothing to check there, so it must not take the
/// SHARE ROW EXCLUSIVE lock that waits for it.
#[tokio::test]
async fn a_sweep_without_blobs_does_not_wait_for_appends() {
    let pg = TempPostgres::start_new();
    let url = pg.create_database("sweep");
    let store = improv_store::open(&StoreUrl::parse(&url).unwrap()).unwrap();
    store.migrate().await.unwrap();
    let door = NewPerformance {
        id: None,
        stage: "stage.toml".into(),
        stage_name: None,
        intent: "i".into(),
        model: None,
        origin: "door:d".into(),
        budget: None,
    };
    store.enqueue(&door).await.unwrap();
    let (lease, _) = store
        .claim("w", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    store.finish(&lease, Outcome::Done, "").await.unwrap();
    let pool = PgPool::connect(&url).unwrap();
    let append = pool.client().await.unwrap();
    append
        .batch_execute("BEGIN; LOCK TABLE blobs IN ROW EXCLUSIVE MODE")
        .await
        .unwrap();
    let later = i64::MAX / 2;
    let stage = StageKey {
        name: "shop".to_string().into(),
        path: "stage.toml".into(),
    };
    assert_eq!(
        store
            .sweep_door_performances(&stage, later, 0, 10)
            .await
            .unwrap(),
        1
    );
    // Had the sweep waited for the lock, the append's session would have sat idle in its
    // transaction until the server ended it (the store's idle_in_transaction_session_timeout).
    append
        .batch_execute("COMMIT")
        .await
        .expect("the sweep waited for an append's lock on blobs");
}
