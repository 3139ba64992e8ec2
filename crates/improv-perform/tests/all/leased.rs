//! A leased performance on a real SQLite store whose appends are slow: a call runs only once
//! the store has its `tool_call_started`, so a worker that dies mid-call leaves a journal that
//! says the call may have run; and a performance whose lease was taken over writes nothing more.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use improv_kernel::{Event, EventKind, Outcome};
use improv_perform::leased::{self, Leased, WorkerSettings};
use improv_store::{Lease, NewPerformance, SqliteStore, Store, StoreError, StoreLayer};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A store whose appends and renewals take `delay` before they reach SQLite: a worker that
/// is slow, or paused.
struct SlowAppends {
    inner: SqliteStore,
    delay: Duration,
}

/// Only `renew` and `append` change: they wait `delay` first.
#[async_trait]
impl StoreLayer for SlowAppends {
    fn inner(&self) -> &dyn Store {
        &self.inner
    }
    async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, StoreError> {
        tokio::time::sleep(self.delay).await;
        self.inner.renew(lease, ttl).await
    }
    async fn append(&self, lease: &Lease, events: &[Event]) -> Result<(), StoreError> {
        tokio::time::sleep(self.delay).await;
        self.inner.append(lease, events).await
    }
}

/// A stage whose scripted lead runs `bash` once (appending to marks.txt), then says done.
fn stage(dir: &Path) -> String {
    std::fs::write(
        dir.join("stage.toml"),
        "[stage]\nname = \"leased\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"scripted/script.json\"\nprops = [\"bash\"]\n\n[edges]\nsandbox = \"off\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("script.json"),
        r#"[{"calls": [{"name": "bash", "arguments": {"command": "echo ran >> marks.txt"}}]}, {"say": "done"}]"#,
    )
    .unwrap();
    dir.join("stage.toml").display().to_string()
}

/// Queues a performance of `stage(dir)`'s intent "go"; returns its id.
async fn enqueue(store: &Arc<dyn Store>, dir: &Path) -> String {
    store
        .enqueue(&NewPerformance {
            id: None,
            stage: stage(dir),
            stage_name: None,
            intent: "go".into(),
            model: None,
            origin: "test".into(),
            budget: None,
        })
        .await
        .unwrap()
}

fn settings() -> WorkerSettings {
    WorkerSettings {
        name: "test-worker".into(),
        lease: Duration::from_secs(30),
        concurrency: 1,
        idle_poll: Duration::from_millis(50),
        outside: leased::Outside::default(),
        ask_timeout: Duration::from_secs(1),
        store: None,
        stages: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_runs_only_once_the_store_has_its_start() {
    let dir = tempfile::tempdir().unwrap();
    let inner = SqliteStore::open(&dir.path().join("store.db")).unwrap();
    let store: Arc<dyn Store> = Arc::new(SlowAppends {
        inner,
        delay: Duration::from_millis(400),
    });
    let id = enqueue(&store, dir.path()).await;
    let (lease, record) = store
        .claim("test-worker", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let performing = tokio::spawn({
        let store = store.clone();
        async move {
            leased::perform(store, lease, record, &settings(), &CancellationToken::new()).await
        }
    });
    let marks = dir.path().join("marks.txt");
    let start = Instant::now();
    while !marks.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the call never ran"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let stored = store.events(&id, 0, 0).await.unwrap();
    assert!(
        stored
            .iter()
            .any(|e| matches!(e.kind, EventKind::ToolCallStarted { .. })),
        "the call ran before the store had its start: {:?}",
        stored.iter().map(|e| e.kind.name()).collect::<Vec<_>>()
    );
    let left = performing.await.unwrap().unwrap();
    assert_eq!(left, Leased::Finished(Outcome::Done));
    let record = store.performance(&id).await.unwrap();
    assert_eq!(record.outcome, Some(Outcome::Done));
    // The journal is whole and numbered from 1.
    let events = store.events(&id, 0, 0).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
    assert!(matches!(
        events.last().unwrap().kind,
        EventKind::PerformanceFinished { .. }
    ));
}

/// Another worker claimed the performance (the first one's lease expired while it was slow):
/// the first one's next write is refused, it abandons the performance and stores nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_lost_its_lease_abandons_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inner = SqliteStore::open(&dir.path().join("store.db")).unwrap();
    let store: Arc<dyn Store> = Arc::new(SlowAppends {
        inner,
        delay: Duration::from_millis(600),
    });
    let id = enqueue(&store, dir.path()).await;
    // A lease shorter than one append or renewal: it expires before the first write lands.
    let (lease, record) = store
        .claim("slow", Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    let mut slow = settings();
    slow.lease = Duration::from_millis(200);
    let performing = tokio::spawn({
        let store = store.clone();
        async move { leased::perform(store, lease, record, &slow, &CancellationToken::new()).await }
    });
    // Taken over as soon as the lease expired.
    let start = Instant::now();
    let taken = loop {
        if let Some((lease, _)) = store.claim("other", Duration::from_secs(60)).await.unwrap() {
            break lease;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let left = performing.await.unwrap().unwrap();
    assert!(matches!(left, Leased::Abandoned(_)), "{left:?}");
    let record = store.performance(&id).await.unwrap();
    assert_eq!(record.epoch, taken.epoch, "still the other worker's");
    assert_eq!(
        record.last_seq, 0,
        "nothing stored by the worker that lost it"
    );
    assert!(!dir.path().join("marks.txt").exists(), "its call never ran");
}

/// A worker resumes a journal longer than the pages it is read in (`leased::REPLAY_PAGE`):
/// the numbering goes on after the last stored event (the store refuses a gap or a repeat, so
/// a replay that stopped at a page's end could not append), and a director note the journal
/// delivered as the first event of its second page is not delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_longer_than_a_page_is_resumed_where_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("store.db")).unwrap());
    let id = enqueue(&store, dir.path()).await;
    let (lease, _) = store
        .claim("first", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let note = "a note delivered first on the second page";
    store.send_note(&id, note).await.unwrap();
    let event = |seq: u64, kind: EventKind| Event {
        seq,
        at: "2026-01-01T00:00:00.000Z".into(),
        actor: Some("lead".into()),
        kind,
    };
    let mut journal = vec![
        event(
            1,
            EventKind::PerformanceStarted {
                performance: id.clone(),
                stage: "leased".into(),
                intent: "go".into(),
                model: "scripted/script.json".into(),
                resumed: false,
            },
        ),
        event(2, EventKind::DirectorNote { text: "go".into() }),
    ];
    // The note is the first event of the second page: a replay that skipped or repeated the
    // page's first event would deliver it again.
    let page = leased::REPLAY_PAGE as u64;
    for seq in 3..=page + 100 {
        let kind = if seq == page + 1 {
            EventKind::DirectorNote { text: note.into() }
        } else {
            EventKind::ModelReplied {
                text: format!("reply {seq}"),
                tool_calls: Vec::new(),
                stop: improv_kernel::StopReason::EndTurn,
            }
        };
        journal.push(event(seq, kind));
    }
    let last = journal.len() as u64;
    store.append(&lease, &journal).await.unwrap();
    // The first worker gives it back, as a draining one does.
    store.release(&lease).await.unwrap();

    let (lease, record) = store
        .claim("second", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let left = leased::perform(
        store.clone(),
        lease,
        record,
        &settings(),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(left, Leased::Finished(Outcome::Done));
    let events = store.events(&id, 0, 0).await.unwrap();
    let resumed = &events[last as usize];
    assert_eq!(resumed.seq, last + 1);
    assert!(
        matches!(
            resumed.kind,
            EventKind::PerformanceStarted { resumed: true, .. }
        ),
        "{resumed:?}"
    );
    let delivered = events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::DirectorNote { text } if text == note))
        .count();
    assert_eq!(delivered, 1, "the note was delivered again");
}
