//! The rest of a stage's state in the store, run against both backends like the conformance
//! suite: director notes (numbered per performance, refused once it finished, waited for across
//! store instances as workers on other machines would) and approvals (asked by the worker,
//! answered once from anywhere).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_kernel::Outcome;
use improv_store::testing::TempPostgres;
use improv_store::{Answer, ApprovalAsk, NewPerformance, Store, StoreError, StoreUrl};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

/// Where one case's store lives; each case gets its own.
enum Backend {
    Sqlite(TempDir),
    Postgres(TempPostgres),
}

impl Backend {
    fn sqlite() -> Backend {
        Backend::Sqlite(tempfile::tempdir().unwrap())
    }

    fn postgres() -> Backend {
        let pg = TempPostgres::start_new();
        pg.create_database("improv");
        Backend::Postgres(pg)
    }

    /// A new store instance on the same database: its own connection(s).
    async fn open(&self) -> Arc<dyn Store> {
        let url = match self {
            Backend::Sqlite(dir) => StoreUrl::Sqlite(dir.path().join("store.db")),
            Backend::Postgres(pg) => StoreUrl::parse(&pg.url("improv")).unwrap(),
        };
        let store = improv_store::open(&url).unwrap();
        store.migrate().await.unwrap();
        store
    }
}

fn new(intent: &str) -> NewPerformance {
    NewPerformance {
        id: None,
        stage: "stage.toml".into(),
        stage_name: None,
        intent: intent.into(),
        model: None,
        origin: "cli".into(),
        budget: None,
    }
}

/// A wait that only a wake-up ends.
const NEVER: Duration = Duration::from_secs(3600);

async fn woken(waiting: tokio::task::JoinHandle<Result<bool, StoreError>>) -> bool {
    tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the waiter was not woken within 30 s")
        .unwrap()
        .unwrap()
}

async fn notes_are_numbered_waited_for_and_refused_once_finished(backend: Backend) {
    let director = backend.open().await;
    let worker = backend.open().await;
    let id = director.enqueue(&new("noted")).await.unwrap();
    // Queued: a note waits for whichever worker takes it.
    assert_eq!(director.send_note(&id, "first").await.unwrap().n, 1);
    let (lease, _) = worker
        .claim("w", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lease.performance, id);
    let other = director.enqueue(&new("other")).await.unwrap();
    director.send_note(&other, "elsewhere").await.unwrap();
    assert!(worker.wait_notes(&id, 0, NEVER).await.unwrap());
    assert!(
        !worker
            .wait_notes(&id, 1, Duration::from_millis(100))
            .await
            .unwrap()
    );
    for n in 2..=4u64 {
        let waiting = {
            let (worker, id) = (worker.clone(), id.clone());
            tokio::spawn(async move { worker.wait_notes(&id, n - 1, NEVER).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let note = director.send_note(&id, &format!("note {n}")).await.unwrap();
        assert_eq!(note.n, n);
        assert!(woken(waiting).await, "woken by note {n}");
    }
    let texts: Vec<String> = worker
        .notes(&id, 1)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.text)
        .collect();
    assert_eq!(texts, ["note 2", "note 3", "note 4"]);
    assert_eq!(worker.notes(&other, 0).await.unwrap().len(), 1);
    // Notes sent at once from many instances get distinct numbers.
    let senders: Vec<Arc<dyn Store>> =
        futures::future::join_all((0..6).map(|_| backend.open())).await;
    let sent = futures::future::join_all(senders.iter().enumerate().map(|(i, s)| {
        let id = id.clone();
        async move { s.send_note(&id, &format!("racing {i}")).await.unwrap().n }
    }))
    .await;
    let mut numbers = sent.clone();
    numbers.sort_unstable();
    assert_eq!(numbers, (5..=10).collect::<Vec<u64>>());
    // Finished: a waiter is woken, and a note is refused.
    let waiting = {
        let (worker, id) = (worker.clone(), id.clone());
        tokio::spawn(async move { worker.wait_notes(&id, 10, NEVER).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    worker.finish(&lease, Outcome::Done, "").await.unwrap();
    assert!(woken(waiting).await, "woken by finish");
    let err = director.send_note(&id, "too late").await.unwrap_err();
    assert!(matches!(err, StoreError::Finished { .. }), "{err}");
    let err = director.send_note("nobody", "hello").await.unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
}

fn ask(subject: &str) -> ApprovalAsk {
    ApprovalAsk {
        actor: "lead".into(),
        prop: "bash".into(),
        subject: subject.into(),
        rule: "command touch approved*".into(),
    }
}

async fn approvals_are_answered_once_from_another_instance(backend: Backend) {
    let worker = backend.open().await;
    let director = backend.open().await;
    let id = worker.enqueue(&new("asks")).await.unwrap();
    let (lease, _) = worker
        .claim("w", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        worker
            .ask_approval(&lease, &ask("touch approved"))
            .await
            .unwrap(),
        1
    );
    assert!(
        !worker
            .wait_answer(&id, 1, Duration::from_millis(100))
            .await
            .unwrap()
    );
    let waiting = {
        let (worker, id) = (worker.clone(), id.clone());
        tokio::spawn(async move { worker.wait_answer(&id, 1, NEVER).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let pending = director.approvals(&id).await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].answer, None);
    assert_eq!(pending[0].ask, ask("touch approved"));
    assert!(
        director
            .answer_approval(&id, 1, Answer::Once, None)
            .await
            .unwrap()
    );
    assert!(woken(waiting).await, "woken by the answer");
    // A second answer does not change the first.
    assert!(
        !director
            .answer_approval(&id, 1, Answer::Deny, Some("no"))
            .await
            .unwrap()
    );
    assert_eq!(
        worker.approvals(&id).await.unwrap()[0].answer,
        Some(Answer::Once)
    );
    assert_eq!(
        worker
            .ask_approval(&lease, &ask("touch again"))
            .await
            .unwrap(),
        2
    );
    director
        .answer_approval(&id, 2, Answer::Deny, Some("not today"))
        .await
        .unwrap();
    let second = &worker.approvals(&id).await.unwrap()[1];
    assert_eq!(
        (second.answer, second.note.as_deref()),
        (Some(Answer::Deny), Some("not today"))
    );
    let err = director
        .answer_approval(&id, 9, Answer::Once, None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
    worker.finish(&lease, Outcome::Done, "").await.unwrap();
    // An ended performance's holder asks nothing more: its lease is over, as for an append.
    let err = worker.ask_approval(&lease, &ask("late")).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err}");
}

macro_rules! both {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::Backend::sqlite()).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    super::$case(super::Backend::postgres()).await;
                }
            )*
        }
    };
}

both!(
    notes_are_numbered_waited_for_and_refused_once_finished,
    approvals_are_answered_once_from_another_instance,
);
