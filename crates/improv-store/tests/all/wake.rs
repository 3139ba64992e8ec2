//! Idle workers are woken when work appears, not by polling: on a real PostgreSQL,
//! `wait_for_work` with a fallback poll of an hour returns when another store (another
//! machine) queues a performance or gives one back, and when a lease runs out. Nothing is
//! timed: each wait is only bounded far above what it should take, so a missing wake-up fails.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_store::testing::TempPostgres;
use improv_store::{NewPerformance, PgStore, Store};
use std::sync::Arc;
use std::time::Duration;

const NEVER: Duration = Duration::from_secs(3600);
const BOUND: Duration = Duration::from_secs(30);

fn new(n: usize) -> NewPerformance {
    NewPerformance {
        id: Some(format!("p{n}")),
        stage: "stage.toml".into(),
        stage_name: None,
        intent: "wake".into(),
        model: None,
        origin: "test".into(),
        budget: None,
    }
}

/// Starts a wait on `idle` and gives it time to look and find nothing, so what ends it is the
/// wake-up rather than its first look.
async fn waiting(idle: &Arc<PgStore>) -> tokio::task::JoinHandle<()> {
    let idle = idle.clone();
    let wait = tokio::spawn(async move { idle.wait_for_work(NEVER).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!wait.is_finished(), "woke with nothing to claim");
    wait
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_is_woken_by_work_queued_or_given_back_elsewhere_and_by_an_expiring_lease() {
    let pg = TempPostgres::start_new();
    let url = pg.create_database("wake");
    let idle = Arc::new(PgStore::connect(&url).unwrap());
    let other = PgStore::connect(&url).unwrap();
    other.migrate().await.unwrap();

    for n in 0..5 {
        let wait = waiting(&idle).await;
        other.enqueue(&new(n)).await.unwrap();
        tokio::time::timeout(BOUND, wait)
            .await
            .expect("not woken by a performance queued on another store")
            .unwrap();
        assert!(idle.counts().await.unwrap().claimable());
        let (lease, _) = other.claim("elsewhere", NEVER).await.unwrap().unwrap();

        if n == 0 {
            // Given back by a draining worker: claimable again.
            let wait = waiting(&idle).await;
            other.release(&lease).await.unwrap();
            tokio::time::timeout(BOUND, wait)
                .await
                .expect("not woken by a performance given back")
                .unwrap();
            other.claim("elsewhere", NEVER).await.unwrap().unwrap();
        }
    }
    let counts = idle.counts().await.unwrap();
    assert_eq!((counts.queued, counts.leased, counts.expired), (0, 5, 0));

    // No NOTIFY says a lease ran out: the wait ends at the earliest expiry.
    other.enqueue(&new(99)).await.unwrap();
    other
        .claim("short", Duration::from_secs(2))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(BOUND, idle.wait_for_work(NEVER))
        .await
        .expect("not woken when the lease ran out")
        .unwrap();
    let counts = idle.counts().await.unwrap();
    assert_eq!((counts.expired, counts.active_leases()), (1, 5));
}

/// The embedded store counts the same way, and its (polling) wait ends once something is
/// claimable, however long its fallback.
#[tokio::test]
async fn the_embedded_store_counts_and_wakes_alike() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(improv_store::SqliteStore::open(&dir.path().join("s.db")).unwrap());
    store.enqueue(&new(1)).await.unwrap();
    store.enqueue(&new(2)).await.unwrap();
    store.claim("w", NEVER).await.unwrap().unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!((counts.queued, counts.leased, counts.expired), (1, 1, 0));
    assert!(counts.next_expiry.is_some());
    store.claim("w", NEVER).await.unwrap().unwrap();
    assert!(!store.counts().await.unwrap().claimable());
    let waiter = store.clone();
    let wait = tokio::spawn(async move { waiter.wait_for_work(NEVER).await.unwrap() });
    store.enqueue(&new(3)).await.unwrap();
    tokio::time::timeout(BOUND, wait).await.unwrap().unwrap();
}

/// A note sent from another store wakes the note watcher of its own performance through the
/// one listener, and the watcher of another performance goes on waiting (both wait an hour).
/// Whether that other watcher was woken and looked again cannot be seen from here; that the
/// listener wakes only the named performance's waiters is
/// `postgres::listener::tests::a_notification_wakes_only_the_waiters_of_its_performance`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_wakes_its_own_performances_watcher_and_another_keeps_waiting() {
    let pg = TempPostgres::start_new();
    let url = pg.create_database("wake_notes");
    let worker = Arc::new(PgStore::connect(&url).unwrap());
    let director = PgStore::connect(&url).unwrap();
    director.migrate().await.unwrap();
    let (mine, other) = (
        director.enqueue(&new(1)).await.unwrap(),
        director.enqueue(&new(2)).await.unwrap(),
    );
    let watch = |id: String| {
        let worker = worker.clone();
        tokio::spawn(async move { worker.wait_notes(&id, 0, NEVER).await.unwrap() })
    };
    let (mine_waits, other_waits) = (watch(mine.clone()), watch(other.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!mine_waits.is_finished(), "woke with no note");
    director.send_note(&mine, "turn left").await.unwrap();
    let woke = tokio::time::timeout(BOUND, mine_waits)
        .await
        .expect("not woken by a note sent from another store")
        .unwrap();
    assert!(woke, "woken without the note there");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !other_waits.is_finished(),
        "another performance's note ended its wait"
    );
    other_waits.abort();
}
