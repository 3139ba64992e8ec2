//! One suite, run against both backends: every case is a function taking a fresh [`Backend`]
//! (a new SQLite file, or a new throwaway PostgreSQL server), and `conformance!` makes a test of
//! it for each. Races are run many times with many claimers, each on its own store instance
//! (its own connection), as workers on different machines would be.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_kernel::{Event, EventKind, Outcome, ToolCall};
use improv_store::testing::TempPostgres;
use improv_store::{
    Answer, ApprovalAsk, Firing, Lease, ListFilter, NewPerformance, OutboxKey, OutboxMessage,
    Progress, Serving, StageKey, State, Stopping, Store, StoreError, StoreUrl, Sweep,
};
use serde_json::json;
use std::collections::HashMap;
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

    fn url(&self) -> StoreUrl {
        match self {
            Backend::Sqlite(dir) => StoreUrl::Sqlite(dir.path().join("store.db")),
            Backend::Postgres(pg) => StoreUrl::parse(&pg.url("improv")).unwrap(),
        }
    }

    /// A new store instance on the same database: its own connection(s).
    async fn open(&self) -> Arc<dyn Store> {
        let store = improv_store::open(&self.url()).unwrap();
        store.migrate().await.unwrap();
        store
    }

    /// Records a schema version this improv does not know, as a newer improv would.
    fn record_schema_version(&self, version: u32) {
        self.execute(&format!(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ({version}, 0)"
        ));
    }

    /// How many rows `from` (a table, with any `WHERE`) holds, read outside any store.
    fn count(&self, from: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {from}");
        match self {
            Backend::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
                conn.query_row(&sql, [], |r| r.get(0)).unwrap()
            }
            Backend::Postgres(pg) => pg.psql("improv", &sql).trim().parse().unwrap(),
        }
    }

    /// Runs `sql` on the database, outside any store.
    fn execute(&self, sql: &str) {
        match self {
            Backend::Sqlite(dir) => {
                let conn = rusqlite::Connection::open(dir.path().join("store.db")).unwrap();
                conn.execute_batch(sql).unwrap();
            }
            Backend::Postgres(pg) => {
                pg.psql("improv", sql);
            }
        }
    }
}

/// The stage [`new`] queues from: its file, without a name.
fn queued_from() -> StageKey {
    StageKey {
        // `into`: the key's name is the stage's, whether optional or not.
        name: "shop".to_string().into(),
        path: "stage.toml".into(),
    }
}

fn new(intent: &str) -> NewPerformance {
    NewPerformance {
        id: None,
        stage: "stage.toml".into(),
        stage_name: None,
        intent: intent.into(),
        model: Some("mock/instant".into()),
        origin: "cli".into(),
        budget: None,
    }
}

fn event(seq: u64, kind: EventKind) -> Event {
    Event {
        seq,
        at: format!("2026-11-29T13:00:{:02}.000Z", seq % 60),
        actor: Some("lead".into()),
        kind,
    }
}

fn note(seq: u64) -> Event {
    event(
        seq,
        EventKind::DirectorNote {
            text: format!("note {seq}"),
        },
    )
}

const TTL: Duration = Duration::from_secs(60);

async fn claim(store: &Arc<dyn Store>, worker: &str) -> Lease {
    store
        .claim(worker, TTL)
        .await
        .unwrap()
        .expect("a queued performance")
        .0
}

async fn lifecycle(backend: Backend) {
    let store = backend.open().await;
    assert!(store.claim("w1", TTL).await.unwrap().is_none());
    let first = store.enqueue(&new("first")).await.unwrap();
    let mut with_id = new("second");
    with_id.id = Some("fixed-id".into());
    assert_eq!(store.enqueue(&with_id).await.unwrap(), "fixed-id");
    assert!(matches!(
        store.enqueue(&with_id).await,
        Err(StoreError::Exists { .. })
    ));

    let (lease, record) = store.claim("w1", TTL).await.unwrap().unwrap();
    assert_eq!(
        (record.id.as_str(), record.intent.as_str()),
        (first.as_str(), "first")
    );
    assert_eq!(
        (record.state, record.epoch, lease.epoch),
        (State::Leased, 1, 1)
    );
    assert_eq!(record.worker.as_deref(), Some("w1"));
    let renewed = store.renew(&lease, Duration::from_secs(600)).await.unwrap();
    assert!(renewed.expires_at > lease.expires_at);
    store.append(&renewed, &[note(1), note(2)]).await.unwrap();
    store.release(&renewed).await.unwrap();
    assert_eq!(
        store.performance(&first).await.unwrap().state,
        State::Queued
    );
    assert!(matches!(
        store.append(&renewed, &[note(3)]).await,
        Err(StoreError::LeaseLost { .. })
    ));

    // Oldest first: the released one again, then the second; its events are still there.
    let again = claim(&store, "w2").await;
    assert_eq!(
        (again.performance.as_str(), again.epoch),
        (first.as_str(), 2)
    );
    store.append(&again, &[note(3)]).await.unwrap();
    store
        .finish(&again, Outcome::Converged, "checks passed")
        .await
        .unwrap();
    let done = store.performance(&first).await.unwrap();
    assert_eq!(
        (done.state, done.outcome, done.last_seq),
        (State::Finished, Some(Outcome::Converged), 3)
    );
    assert_eq!(done.reason, "checks passed");
    assert!(matches!(
        store.renew(&again, TTL).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert_eq!(claim(&store, "w2").await.performance, "fixed-id");
    assert!(store.claim("w3", TTL).await.unwrap().is_none());

    let all = store.list(&ListFilter::default()).await.unwrap();
    assert_eq!(all.len(), 2);
    let finished = ListFilter {
        state: Some(State::Finished),
        limit: 0,
        ..ListFilter::default()
    };
    let finished: Vec<String> = store
        .list(&finished)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(finished, vec![first.clone()]);
    assert!(matches!(
        store.performance("nope").await,
        Err(StoreError::NotFound { .. })
    ));
}

async fn concurrent_claimers_never_share_a_performance(backend: Backend) {
    const CLAIMERS: usize = 6;
    const ROUNDS: usize = 5;
    const PER_ROUND: usize = 30;
    let stores: Vec<Arc<dyn Store>> =
        futures::future::join_all((0..CLAIMERS).map(|_| backend.open())).await;
    for round in 0..ROUNDS {
        for i in 0..PER_ROUND {
            stores[0]
                .enqueue(&new(&format!("r{round} p{i}")))
                .await
                .unwrap();
        }
        let tasks = stores.iter().enumerate().map(|(w, store)| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Some((lease, _)) = store.claim(&format!("w{w}"), TTL).await.unwrap() {
                    got.push(lease.performance);
                }
                got
            })
        });
        let mut seen: HashMap<String, usize> = HashMap::new();
        for got in futures::future::join_all(tasks).await {
            for id in got.unwrap() {
                *seen.entry(id).or_default() += 1;
            }
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "round {round}: claimed twice: {twice:?}");
        assert_eq!(
            seen.len(),
            PER_ROUND,
            "round {round}: every performance claimed once"
        );
    }
}

async fn an_expired_lease_is_reclaimed_and_fences_out_the_old_holder(backend: Backend) {
    let store = backend.open().await;
    let id = store.enqueue(&new("slow")).await.unwrap();
    let (old, _) = store
        .claim("paused", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    store.append(&old, &[note(1)]).await.unwrap();
    // Wait out the 1 ms lease (not a timed assertion: only time passing).
    tokio::time::sleep(Duration::from_millis(20)).await;
    let other = backend.open().await;
    let (new_lease, record) = other.claim("alive", TTL).await.unwrap().unwrap();
    assert_eq!(
        (record.id.as_str(), new_lease.epoch, record.last_seq),
        (id.as_str(), old.epoch + 1, 1)
    );
    let lost = store.append(&old, &[note(2)]).await.unwrap_err();
    assert!(
        matches!(&lost, StoreError::LeaseLost { performance, epoch } if *performance == id && *epoch == old.epoch),
        "{lost}"
    );
    assert!(matches!(
        store.renew(&old, TTL).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(matches!(
        store.release(&old).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(matches!(
        store.finish(&old, Outcome::Done, "").await,
        Err(StoreError::LeaseLost { .. })
    ));
    other.append(&new_lease, &[note(2)]).await.unwrap();
    let events = other.events(&id, 0, 0).await.unwrap();
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(events[1], note(2));
    // A forged lease (right epoch, wrong worker) writes nothing either.
    let forged = Lease {
        worker: "paused".into(),
        ..new_lease.clone()
    };
    assert!(matches!(
        store.append(&forged, &[note(3)]).await,
        Err(StoreError::LeaseLost { .. })
    ));
}

/// An approval is asked only by the holder of the current lease: a worker that lost it (paused
/// past it) is refused with the error a stale append gets, so two workers never ask for one
/// tool call; the claim that fenced it out denies the ask it left open, so a late answer from
/// the director reaches nobody.
async fn an_ask_is_fenced_by_the_lease(backend: Backend) {
    let store = backend.open().await;
    let id = store.enqueue(&new("asks")).await.unwrap();
    let ask = |subject: &str| ApprovalAsk {
        actor: "lead".into(),
        prop: "bash".into(),
        subject: subject.into(),
        rule: "ask".into(),
    };
    let (old, _) = store
        .claim("paused", Duration::from_millis(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.ask_approval(&old, &ask("first")).await.unwrap(), 1);
    // Wait out the 1 ms lease (not a timed assertion: only time passing).
    tokio::time::sleep(Duration::from_millis(20)).await;
    let other = backend.open().await;
    let (current, _) = other.claim("alive", TTL).await.unwrap().unwrap();
    assert_eq!(current.epoch, old.epoch + 1);
    let asked = store.ask_approval(&old, &ask("stale")).await.unwrap_err();
    let appended = store.append(&old, &[note(1)]).await.unwrap_err();
    for lost in [&asked, &appended] {
        assert!(
            matches!(lost, StoreError::LeaseLost { performance, epoch } if *performance == id && *epoch == old.epoch),
            "{lost}"
        );
    }
    assert_eq!(asked.to_string(), appended.to_string());
    let forged = Lease {
        worker: "paused".into(),
        ..current.clone()
    };
    assert!(matches!(
        store.ask_approval(&forged, &ask("forged")).await,
        Err(StoreError::LeaseLost { .. })
    ));
    // The old holder's open ask was denied by the claim; the director's late answer loses.
    assert!(
        !other
            .answer_approval(&id, 1, Answer::Once, None)
            .await
            .unwrap()
    );
    assert_eq!(
        other.ask_approval(&current, &ask("again")).await.unwrap(),
        2
    );
    let all = other.approvals(&id).await.unwrap();
    let asked: Vec<(&str, Option<Answer>)> = all
        .iter()
        .map(|a| (a.ask.subject.as_str(), a.answer))
        .collect();
    assert_eq!(
        asked,
        [("first", Some(Answer::Deny)), ("again", None)],
        "only the holders' asks, the stale one's denied"
    );
    assert!(
        all[0]
            .note
            .as_deref()
            .unwrap_or("")
            .contains("lost its lease"),
        "{:?}",
        all[0].note
    );
}

/// The old holder appends as fast as it can while another worker claims the expired lease:
/// whatever the interleaving, nothing the old holder writes lands after the claim (the claim
/// sees the journal as it will stay). Many rounds, since one pass proves nothing.
async fn a_stale_writer_racing_a_claim_lands_nothing_after_it(backend: Backend) {
    const ROUNDS: usize = 30;
    let old_store = backend.open().await;
    let new_store = backend.open().await;
    for round in 0..ROUNDS {
        let id = old_store
            .enqueue(&new(&format!("race {round}")))
            .await
            .unwrap();
        // A lease that is already expired: the claim below may come at any moment.
        let (old, _) = old_store
            .claim("old", Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
        let writer = {
            let store = Arc::clone(&old_store);
            tokio::spawn(async move {
                let mut seq = 0;
                loop {
                    match store.append(&old, &[note(seq + 1)]).await {
                        Ok(()) => seq += 1,
                        Err(StoreError::LeaseLost { .. }) => return seq,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(round as u64 % 7)).await;
        // SKIP LOCKED passes over the row while an append holds it: claim again, as a worker
        // polling for work would.
        let claimed = loop {
            if let Some((_, claimed)) = new_store.claim("new", TTL).await.unwrap() {
                break claimed;
            }
            tokio::task::yield_now().await;
        };
        assert_eq!(claimed.id, id);
        let written = writer.await.unwrap();
        let now = new_store.performance(&id).await.unwrap();
        assert_eq!(
            (now.last_seq, written),
            (claimed.last_seq, claimed.last_seq),
            "round {round}: the old holder wrote after the claim"
        );
    }
}

async fn seq_gaps_and_repeats_are_refused(backend: Backend) {
    let store = backend.open().await;
    let id = store.enqueue(&new("seq")).await.unwrap();
    let lease = claim(&store, "w").await;
    let gap = store.append(&lease, &[note(2)]).await.unwrap_err();
    assert!(
        matches!(
            gap,
            StoreError::SeqConflict {
                expected_after: 0,
                got: 2,
                ..
            }
        ),
        "{gap}"
    );
    store.append(&lease, &[note(1), note(2)]).await.unwrap();
    let repeat = store.append(&lease, &[note(2)]).await.unwrap_err();
    assert!(
        matches!(
            repeat,
            StoreError::SeqConflict {
                expected_after: 2,
                got: 2,
                ..
            }
        ),
        "{repeat}"
    );
    // A batch with a hole inside stores none of it.
    let hole = store.append(&lease, &[note(3), note(5)]).await.unwrap_err();
    assert!(
        matches!(
            hole,
            StoreError::SeqConflict {
                expected_after: 3,
                got: 5,
                ..
            }
        ),
        "{hole}"
    );
    store.append(&lease, &[]).await.unwrap();
    assert_eq!(store.performance(&id).await.unwrap().last_seq, 2);
    assert_eq!(store.events(&id, 0, 0).await.unwrap().len(), 2);
}

/// Events of every shape, with long strings (stored as blobs, one of them twice) and odd ones.
fn journal() -> Vec<Event> {
    let output = "line of a file, with \"quotes\", é and a \u{0} byte\n".repeat(100);
    let reply = "I will read the file. ".repeat(80);
    vec![
        event(
            1,
            EventKind::PerformanceStarted {
                performance: "p".into(),
                stage: "s".into(),
                intent: "i".into(),
                model: "m".into(),
                resumed: false,
            },
        ),
        event(
            2,
            EventKind::ModelReplied {
                text: reply.clone(),
                tool_calls: vec![ToolCall {
                    id: "c1".into(),
                    name: "read".into(),
                    arguments: format!("{{\"path\":\"{}\"}}", "a/".repeat(600)),
                }],
                stop: improv_kernel::StopReason::ToolUse,
            },
        ),
        event(
            3,
            EventKind::ToolCallFinished {
                call_id: "c1".into(),
                name: "read".into(),
                ok: true,
                output: output.clone(),
                duration_ms: 12.5,
            },
        ),
        event(
            4,
            EventKind::ToolCallFinished {
                call_id: "c2".into(),
                name: "read".into(),
                ok: true,
                output,
                duration_ms: 0.25,
            },
        ),
        event(
            5,
            EventKind::Compacted {
                messages: 3,
                trimmed: 1,
                tokens_before: 9000,
                tokens_after: 800,
                edits: vec![improv_kernel::Compaction::Summarized {
                    start: 1,
                    end: 4,
                    text: reply,
                }],
            },
        ),
        Event {
            seq: 6,
            at: "2026-11-29T13:00:06.000Z".into(),
            actor: None,
            kind: EventKind::DirectorNote {
                text: "~/ \"$blob\" {}".into(),
            },
        },
    ]
}

async fn events_round_trip_exactly(backend: Backend) {
    let store = backend.open().await;
    let id = store.enqueue(&new("journal")).await.unwrap();
    let lease = claim(&store, "w").await;
    let journal = journal();
    store.append(&lease, &journal[..2]).await.unwrap();
    store.append(&lease, &journal[2..]).await.unwrap();
    let reader = backend.open().await;
    assert_eq!(reader.events(&id, 0, 0).await.unwrap(), journal);
    assert_eq!(
        reader.events(&id, 2, 2).await.unwrap(),
        journal[2..4].to_vec()
    );
    assert_eq!(reader.events(&id, 6, 0).await.unwrap(), vec![]);
    assert!(matches!(
        reader.events("nope", 0, 0).await,
        Err(StoreError::NotFound { .. })
    ));
}

/// A wait that only a wake-up ends: its timeout is an hour.
const NEVER: Duration = Duration::from_secs(3600);

/// The result of a waiter given [`NEVER`]; panics when it was not woken within a bound far
/// above any wake-up (a poll or a NOTIFY takes milliseconds), so a lost wake-up fails the test
/// instead of hanging it for an hour.
async fn woken(waiting: tokio::task::JoinHandle<Result<bool, StoreError>>) -> bool {
    tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the waiter was not woken within 30 s")
        .unwrap()
        .unwrap()
}

async fn wait_events_wakes_on_another_instances_append(backend: Backend) {
    let writer = backend.open().await;
    let watcher = backend.open().await;
    let id = writer.enqueue(&new("watched")).await.unwrap();
    let lease = claim(&writer, "w").await;
    assert!(
        !watcher
            .wait_events(&id, 0, Duration::from_millis(100))
            .await
            .unwrap()
    );
    for seq in 1..=5u64 {
        let waiting = {
            let (watcher, id) = (Arc::clone(&watcher), id.clone());
            tokio::spawn(async move { watcher.wait_events(&id, seq - 1, NEVER).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.append(&lease, &[note(seq)]).await.unwrap();
        assert!(woken(waiting).await, "woken by append {seq}");
    }
    // Already there: returns at once; finishing wakes a watcher with nothing new to read.
    assert!(watcher.wait_events(&id, 0, NEVER).await.unwrap());
    let waiting = {
        let (watcher, id) = (Arc::clone(&watcher), id.clone());
        tokio::spawn(async move { watcher.wait_events(&id, 5, NEVER).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    writer.finish(&lease, Outcome::Done, "").await.unwrap();
    assert!(woken(waiting).await, "woken by finish");
}

async fn a_firing_is_claimed_exactly_once(backend: Backend) {
    const RACERS: usize = 8;
    let stores: Vec<Arc<dyn Store>> =
        futures::future::join_all((0..RACERS).map(|_| backend.open())).await;
    for due in 0..10i64 {
        let tasks = stores.iter().map(|store| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                let firing = Firing {
                    door: "nightly".into(),
                    due,
                    performance: None,
                    note: "fired".into(),
                };
                store.claim_firing(&queued_from(), &firing).await.unwrap()
            })
        });
        let wins = futures::future::join_all(tasks)
            .await
            .into_iter()
            .filter(|won| *won.as_ref().unwrap())
            .count();
        assert_eq!(wins, 1, "due {due}: claimed by {wins}");
    }
    let store = &stores[0];
    let update = Firing {
        door: "nightly".into(),
        due: 3,
        performance: Some("p3".into()),
        note: "started".into(),
    };
    store.update_firing(&queued_from(), &update).await.unwrap();
    let latest = store.firings(&queued_from(), "nightly", 8).await.unwrap();
    assert_eq!(latest.len(), 8);
    assert_eq!(latest[0].due, 9);
    assert_eq!(latest.iter().find(|f| f.due == 3).unwrap(), &update);
    assert!(
        store
            .firings(&queued_from(), "other", 0)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn the_outbox_is_idempotent_by_key(backend: Backend) {
    let store = backend.open().await;
    let key = OutboxKey {
        performance: "p".into(),
        seq: 7,
    };
    let message = |text: &str| OutboxMessage {
        key: key.clone(),
        stage: queued_from().id(),
        door: "chat".into(),
        conversation: "42".into(),
        body: json!({ "text": text }),
    };
    let first = store.outbox_put(&message("hello")).await.unwrap();
    assert_eq!((first.sent_id.as_deref(), first.attempts), (None, 0));
    let again = store.outbox_put(&message("hello, again")).await.unwrap();
    assert_eq!(
        again.message.body,
        json!({ "text": "hello" }),
        "the first one stays"
    );
    let pending = store
        .outbox_pending(&queued_from(), "chat", 0)
        .await
        .unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].attempts, 1);
    assert_eq!(
        store
            .outbox_pending(&queued_from(), "chat", 10)
            .await
            .unwrap()[0]
            .attempts,
        2
    );
    assert!(
        store
            .outbox_pending(&queued_from(), "other", 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.outbox_sent(&key, "m-1").await.unwrap();
    store.outbox_sent(&key, "m-2").await.unwrap();
    assert!(
        store
            .outbox_pending(&queued_from(), "chat", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .outbox_put(&message("x"))
            .await
            .unwrap()
            .sent_id
            .as_deref(),
        Some("m-1")
    );
}

/// Stages A (named) and B (known by its path) share a store, each with a chat door `chat`:
/// each lists only its own pending messages, so neither sends the other's through its channel.
async fn stages_chat_doors_of_one_name_each_send_their_own(backend: Backend) {
    let store = backend.open().await;
    let (a, b) = two_stages();
    for (stage, performance) in [(&a, "pa"), (&b, "pb")] {
        let message = outbox_message(performance, &stage.id());
        store.outbox_put(&message).await.unwrap();
    }
    assert_eq!(pending(&store, &a).await, ["pa"], "A lists only its own");
    assert_eq!(pending(&store, &b).await, ["pb"], "B lists only its own");
    let c = StageKey {
        name: Some("c".into()),
        path: "/srv/c/stage.toml".into(),
    };
    assert!(pending(&store, &c).await.is_empty(), "C has none");
}

/// The outbox as the improv before stages left it: `stage` gone, the pending index on the door.
const OUTBOX_BEFORE_STAGES: &str = "DROP INDEX outbox_pending; \
     ALTER TABLE outbox DROP COLUMN stage; \
     CREATE INDEX outbox_pending ON outbox (door, created_at) WHERE sent_id IS NULL;";

/// A message put before the outbox had a stage is sent by its performance's stage alone (by the
/// name it was queued with, or by its file when queued without one): never by another stage's
/// door of the same name, and by no stage once its performance is gone.
async fn outbox_rows_from_before_stages_go_to_their_performances_stage(backend: Backend) {
    let store = backend.open().await;
    let known = store.migrate().await.unwrap();
    let (a, b) = two_stages();
    for (id, stage, name) in [
        ("pa", &a.path, Some("a")),
        ("pb", &b.path, None),
        ("pa-file", &a.path, None),
    ] {
        let mut performance = new("reply");
        performance.id = Some(id.into());
        performance.stage.clone_from(stage);
        performance.stage_name = name.map(String::from);
        store.enqueue(&performance).await.unwrap();
    }
    drop(store);
    backend.execute(&format!(
        "{OUTBOX_BEFORE_STAGES} DELETE FROM schema_migrations WHERE version > {};
         INSERT INTO outbox (performance, seq, door, conversation, body, created_at)
         VALUES ('pa', 1, 'chat', '1', '{{}}', 1), ('pb', 1, 'chat', '2', '{{}}', 2),
         ('pa-file', 1, 'chat', '3', '{{}}', 3), ('gone', 1, 'chat', '4', '{{}}', 4);",
        known - 1
    ));
    let store = backend.open().await;
    assert_eq!(store.migrate().await.unwrap(), known);
    assert_eq!(pending(&store, &a).await, ["pa", "pa-file"]);
    assert_eq!(pending(&store, &b).await, ["pb"]);
    let key = OutboxKey {
        performance: "pa".into(),
        seq: 1,
    };
    store.outbox_sent(&key, "m-1").await.unwrap();
    assert_eq!(pending(&store, &a).await, ["pa-file"], "sent once");
}

/// A named stage and an unnamed one, in their own folders.
fn two_stages() -> (StageKey, StageKey) {
    let a = StageKey {
        name: Some("a".into()),
        path: "/srv/a/stage.toml".into(),
    };
    let b = StageKey {
        name: None,
        path: "/srv/b/stage.toml".into(),
    };
    (a, b)
}

fn outbox_message(performance: &str, stage: &str) -> OutboxMessage {
    OutboxMessage {
        key: OutboxKey {
            performance: performance.into(),
            seq: 1,
        },
        stage: stage.into(),
        door: "chat".into(),
        conversation: "42".into(),
        body: json!({ "text": performance }),
    }
}

/// The performances of `stage`'s door `chat`'s pending messages, oldest first.
async fn pending(store: &Arc<dyn Store>, stage: &StageKey) -> Vec<String> {
    let pending = store.outbox_pending(stage, "chat", 0).await.unwrap();
    pending
        .into_iter()
        .map(|e| e.message.key.performance)
        .collect()
}

async fn put_only_if_absent_keeps_the_first_value(backend: Backend) {
    let store = backend.open().await;
    assert_eq!(store.get("chat", "thread").await.unwrap(), None);
    assert!(
        store
            .put("chat", "thread", &json!({"n": 1}), true)
            .await
            .unwrap()
    );
    assert!(
        !store
            .put("chat", "thread", &json!({"n": 2}), true)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get("chat", "thread").await.unwrap(),
        Some(json!({"n": 1}))
    );
    assert!(
        store
            .put("chat", "thread", &json!({"n": 3}), false)
            .await
            .unwrap()
    );
    assert_eq!(
        store.get("chat", "thread").await.unwrap(),
        Some(json!({"n": 3}))
    );
    assert_eq!(store.get("other", "thread").await.unwrap(), None);
}

async fn compare_and_set_takes_one_writer_per_version(backend: Backend) {
    let store = backend.open().await;
    assert_eq!(store.get_versioned("pending", "door").await.unwrap(), None);
    assert!(
        store
            .put_if("pending", "door", None, &json!([1]))
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_if("pending", "door", None, &json!([2]))
            .await
            .unwrap()
    );
    let first = store
        .get_versioned("pending", "door")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.value, json!([1]));
    let v = first.version;
    assert!(
        store
            .put_if("pending", "door", Some(v), &json!([1, 3]))
            .await
            .unwrap()
    );
    // Read before that write: refused, nothing written.
    assert!(
        !store
            .put_if("pending", "door", Some(v), &json!([4]))
            .await
            .unwrap()
    );
    // A plain put raises the version too.
    store
        .put("pending", "door", &json!([5]), false)
        .await
        .unwrap();
    let now = store
        .get_versioned("pending", "door")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(now.value, json!([5]));
    assert!(now.version > v + 1, "{now:?}");
    assert!(
        !store
            .put_if("pending", "door", Some(v + 1), &json!([6]))
            .await
            .unwrap()
    );
    assert!(
        !store
            .put_if("pending", "absent", Some(1), &json!([7]))
            .await
            .unwrap()
    );
    assert_eq!(store.get("pending", "absent").await.unwrap(), None);
}

/// Two handles on one store (two servers) each add to one list by read, change, compare-and-set:
/// every entry is there at the end.
async fn racing_compare_and_sets_lose_nothing(backend: Backend) {
    let stores = [backend.open().await, backend.open().await];
    let mut tasks = Vec::new();
    for (s, store) in stores.iter().enumerate() {
        for t in 0..4 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..10 {
                    let entry = format!("{s}-{t}-{i}");
                    loop {
                        let read = store.get_versioned("list", "one").await.unwrap();
                        let mut list = read.as_ref().map_or(json!([]), |r| r.value.clone());
                        list.as_array_mut().unwrap().push(json!(entry));
                        let version = read.map(|r| r.version);
                        if store.put_if("list", "one", version, &list).await.unwrap() {
                            break;
                        }
                    }
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let list = stores[0].get("list", "one").await.unwrap().unwrap();
    assert_eq!(list.as_array().unwrap().len(), 80, "{list}");
}

async fn sweep_deletes_expired_and_surplus_values_in_batches(backend: Backend) {
    let store = backend.open().await;
    for i in 0..10 {
        store
            .put("seen", &format!("k{i}"), &json!(i), false)
            .await
            .unwrap();
        // Distinct write times, so "the newest" is one answer.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    store.put("kept", "k", &json!(0), false).await.unwrap();
    let mut count = Sweep {
        before: 0,
        keep: 4,
        batch: 100,
    };
    assert_eq!(store.sweep("seen", &count).await.unwrap(), 6);
    for i in 0..10 {
        let value = store.get("seen", &format!("k{i}")).await.unwrap();
        assert_eq!(value.is_some(), i >= 6, "k{i}: the four newest are kept");
    }
    count.keep = 0;
    assert_eq!(
        store.sweep("seen", &count).await.unwrap(),
        0,
        "keep 0: no cap"
    );
    let expired = Sweep {
        before: now_ms() + 60_000,
        keep: 0,
        batch: 3,
    };
    assert_eq!(store.sweep("seen", &expired).await.unwrap(), 3);
    assert_eq!(store.sweep("seen", &expired).await.unwrap(), 1);
    assert_eq!(store.sweep("seen", &expired).await.unwrap(), 0);
    let young = Sweep {
        before: now_ms() - 60_000,
        keep: 0,
        batch: 0,
    };
    assert_eq!(store.sweep("kept", &young).await.unwrap(), 0);
    assert_eq!(store.get("kept", "k").await.unwrap(), Some(json!(0)));
}

/// A writer from before updated_at (an older improv on the same database) leaves the column at
/// its default: such values are not taken for the oldest of all and swept at once.
async fn a_value_written_without_a_time_is_not_swept_at_once(backend: Backend) {
    let store = backend.open().await;
    backend.execute("INSERT INTO kv (scope, key, value) VALUES ('seen', 'old', '1')");
    backend
        .execute("INSERT INTO kv (scope, key, value, updated_at) VALUES ('seen', 'zero', '2', 0)");
    let expired = Sweep {
        before: now_ms() - 60_000,
        keep: 0,
        batch: 0,
    };
    assert_eq!(store.sweep("seen", &expired).await.unwrap(), 0);
    assert_eq!(store.get("seen", "old").await.unwrap(), Some(json!(1)));
    assert_eq!(store.get("seen", "zero").await.unwrap(), Some(json!(2)));
    let later = Sweep {
        before: now_ms() + 60_000,
        ..expired
    };
    assert_eq!(
        store.sweep("seen", &later).await.unwrap(),
        2,
        "they do expire"
    );
}

/// Sent outbox rows past their age go, in batches; a row not confirmed sent stays whatever its
/// age (its send may still be retried, and exactly-once rests on the row).
async fn sent_outbox_rows_expire_and_unsent_ones_stay(backend: Backend) {
    let store = backend.open().await;
    let message = |seq: u64, text: &str| OutboxMessage {
        key: OutboxKey {
            performance: "p".into(),
            seq,
        },
        stage: queued_from().id(),
        door: "chat".into(),
        conversation: "42".into(),
        body: json!({ "text": text }),
    };
    for seq in 1..=5 {
        store.outbox_put(&message(seq, "first")).await.unwrap();
    }
    for seq in 1..=3 {
        store
            .outbox_sent(&message(seq, "").key, &format!("m-{seq}"))
            .await
            .unwrap();
    }
    assert_eq!(
        store.sweep_outbox(now_ms() - 60_000, 0).await.unwrap(),
        0,
        "young rows stay"
    );
    let old = now_ms() + 60_000;
    assert_eq!(store.sweep_outbox(old, 2).await.unwrap(), 2);
    assert_eq!(store.sweep_outbox(old, 2).await.unwrap(), 1);
    assert_eq!(store.sweep_outbox(old, 0).await.unwrap(), 0);
    let pending = store
        .outbox_pending(&queued_from(), "chat", 10)
        .await
        .unwrap();
    let seqs: Vec<u64> = pending.iter().map(|e| e.message.key.seq).collect();
    assert_eq!(seqs, [4, 5], "unsent rows stay however old");
    let again = store.outbox_put(&message(1, "second")).await.unwrap();
    assert_eq!(
        again.message.body,
        json!({ "text": "second" }),
        "row 1 went"
    );
}

/// Old firings go, in batches, but each door keeps its `keep` newest (the retake window), and
/// always its newest one (a timed door's cursor), even with `keep` 0.
async fn old_firings_go_but_each_doors_newest_stay(backend: Backend) {
    let store = backend.open().await;
    let doors = [("a", 1..=30), ("b", 1..=3), ("c", 5..=5)];
    for (door, dues) in doors.clone() {
        for due in dues {
            let firing = Firing {
                door: door.into(),
                due,
                performance: None,
                note: "fired".into(),
            };
            assert!(store.claim_firing(&queued_from(), &firing).await.unwrap());
        }
    }
    let dues = |door: &'static str| {
        let store = store.clone();
        async move {
            let mut dues: Vec<i64> = store
                .firings(&queued_from(), door, 100)
                .await
                .unwrap()
                .iter()
                .map(|f| f.due)
                .collect();
            dues.sort_unstable();
            dues
        }
    };
    assert_eq!(
        store.sweep_firings(&queued_from(), 5, 20, 0).await.unwrap(),
        4,
        "only due < 5"
    );
    assert_eq!(
        store
            .sweep_firings(&queued_from(), 1_000, 20, 4)
            .await
            .unwrap(),
        4
    );
    assert_eq!(
        store
            .sweep_firings(&queued_from(), 1_000, 20, 4)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .sweep_firings(&queued_from(), 1_000, 20, 4)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        dues("a").await,
        (11..=30).collect::<Vec<_>>(),
        "the 20 newest"
    );
    assert_eq!(dues("b").await, [1, 2, 3]);
    assert_eq!(dues("c").await, [5]);
    assert_eq!(
        store
            .sweep_firings(&queued_from(), 1_000, 0, 0)
            .await
            .unwrap(),
        21
    );
    assert_eq!(dues("a").await, [30], "the newest stays");
    assert_eq!(dues("b").await, [3]);
    assert_eq!(dues("c").await, [5]);
}

/// The firings table as the improv before firings were keyed by stage left it (the last
/// migration undone), empty: SQL both backends take.
const FIRINGS_BEFORE_STAGES: &str = "DROP TABLE firings; CREATE TABLE firings (door TEXT NOT NULL, \
     due BIGINT NOT NULL, performance TEXT, note TEXT NOT NULL, PRIMARY KEY (door, due));";

fn firing(door: &str, due: i64, note: &str) -> Firing {
    Firing {
        door: door.into(),
        due,
        performance: None,
        note: note.into(),
    }
}

/// Three stages sharing a store with a door `morning` each: a named one, an unnamed one known
/// by its path, and one whose name is that path. Each claims the same due time and gets it, and
/// each lists, updates and sweeps only its own firings.
async fn stages_doors_of_one_name_each_fire_their_own(backend: Backend) {
    let store = backend.open().await;
    let named = StageKey {
        name: Some("ops".into()),
        path: "/srv/ops/stage.toml".into(),
    };
    let unnamed = StageKey {
        name: None,
        path: "/srv/b/stage.toml".into(),
    };
    let path_named = StageKey {
        name: Some("/srv/b/stage.toml".into()),
        path: "/srv/c/stage.toml".into(),
    };
    let stages = [&named, &unnamed, &path_named];
    for stage in stages {
        let claimed = firing("morning", 8, "claimed");
        let claimed = store.claim_firing(stage, &claimed);
        assert!(claimed.await.unwrap(), "{stage:?} fires its own 08:00");
    }
    for stage in stages {
        let again = firing("morning", 8, "claimed");
        let again = store.claim_firing(stage, &again);
        assert!(!again.await.unwrap(), "{stage:?} fires 08:00 once");
    }
    let fired = firing("morning", 8, "fired: done");
    store.update_firing(&unnamed, &fired).await.unwrap();
    let notes = |stage: &StageKey| {
        let (store, stage) = (store.clone(), stage.clone());
        async move {
            let firings = store.firings(&stage, "morning", 0).await.unwrap();
            firings.into_iter().map(|f| f.note).collect::<Vec<_>>()
        }
    };
    assert_eq!(notes(&named).await, ["claimed"]);
    assert_eq!(notes(&unnamed).await, ["fired: done"]);
    assert_eq!(notes(&path_named).await, ["claimed"]);
    // 30 more for the named stage, 3 more for the unnamed: a sweep of the named stage keeping
    // 20 takes 11 of its own, none of the others'.
    for due in 100..130 {
        assert!(
            store
                .claim_firing(&named, &firing("morning", due, "f"))
                .await
                .unwrap()
        );
    }
    for due in 100..103 {
        assert!(
            store
                .claim_firing(&unnamed, &firing("morning", due, "f"))
                .await
                .unwrap()
        );
    }
    assert_eq!(store.sweep_firings(&named, 1_000, 20, 0).await.unwrap(), 11);
    let count = |stage: &StageKey| {
        let (store, stage) = (store.clone(), stage.clone());
        async move { store.firings(&stage, "morning", 0).await.unwrap().len() }
    };
    assert_eq!(count(&named).await, 20);
    assert_eq!(count(&unnamed).await, 4, "the unnamed stage's firings stay");
    assert_eq!(count(&path_named).await, 1);
    assert_eq!(store.sweep_firings(&unnamed, 1_000, 0, 0).await.unwrap(), 3);
    assert_eq!(count(&named).await, 20);
}

/// The firings of a key no daemon sweeps any more (a stage renamed or removed) go with the
/// sweep of abandoned firings any live stage runs, each of its doors' `keep` newest kept; the
/// sweeping stage's own rows stay whatever their age.
async fn firings_of_a_key_no_daemon_sweeps_go_with_another_stages_sweep(backend: Backend) {
    let store = backend.open().await;
    let key = |name: &str| StageKey {
        name: Some(name.into()),
        path: format!("/srv/{name}/stage.toml"),
    };
    let (live, gone) = (key("live"), key("gone"));
    for stage in [&live, &gone] {
        for due in 1..=5 {
            let fired = firing("d", due, "fired");
            assert!(store.claim_firing(stage, &fired).await.unwrap());
        }
    }
    assert_eq!(
        store.sweep_abandoned_firings(&live, 4, 1, 0).await.unwrap(),
        3,
        "the abandoned key's firings due before 4 but its newest go"
    );
    let dues = |stage: StageKey| {
        let store = store.clone();
        async move {
            let firings = store.firings(&stage, "d", 0).await.unwrap();
            firings.iter().map(|f| f.due).collect::<Vec<_>>()
        }
    };
    assert_eq!(dues(gone.clone()).await, [5, 4]);
    assert_eq!(dues(live.clone()).await, [5, 4, 3, 2, 1]);
    let again = store.sweep_abandoned_firings(&live, 4, 1, 0).await.unwrap();
    assert_eq!(again, 0, "nothing more to go");
}

/// A firing recorded before firings had a stage stays its door's under every stage: a stage
/// upgraded from a store of one stage does not fire a due time its old daemon claimed (nor does
/// a second stage), it lists and updates those firings as its own, and its sweep keeps each
/// door's newest of them (a timed door's cursor).
async fn firings_from_before_stages_stay_their_doors_under_every_stage(backend: Backend) {
    let store = backend.open().await;
    let known = store.migrate().await.unwrap();
    drop(store);
    // The firings the improv before stages recorded, in the table as it left it.
    backend.execute(&format!(
        "{OUTBOX_BEFORE_STAGES} {FIRINGS_BEFORE_STAGES} \
         DELETE FROM schema_migrations WHERE version > {};
         INSERT INTO firings (door, due, performance, note) VALUES ('morning', 1, NULL, 'fired'),
         ('morning', 2, NULL, 'fired'), ('morning', 8, 'p8', 'claimed'), ('other', 8, NULL, 'x');",
        known - 2
    ));
    let store = backend.open().await;
    let (a, b) = (
        StageKey {
            name: Some("a".into()),
            path: "/srv/a/stage.toml".into(),
        },
        StageKey {
            name: None,
            path: "/srv/b/stage.toml".into(),
        },
    );
    for stage in [&a, &b] {
        let claimed = firing("morning", 8, "claimed");
        let claimed = store.claim_firing(stage, &claimed);
        assert!(
            !claimed.await.unwrap(),
            "{stage:?}: 08:00 was claimed before the upgrade"
        );
        let dues: Vec<i64> = store
            .firings(stage, "morning", 0)
            .await
            .unwrap()
            .iter()
            .map(|f| f.due)
            .collect();
        assert_eq!(
            dues,
            [8, 2, 1],
            "{stage:?} lists the door's firings from before"
        );
    }
    store
        .update_firing(&a, &firing("morning", 8, "retaken"))
        .await
        .unwrap();
    assert_eq!(
        store.firings(&b, "morning", 1).await.unwrap()[0].note,
        "retaken"
    );
    // A stage's own firings are listed with those from before, newest first.
    assert!(
        store
            .claim_firing(&a, &firing("morning", 9, "fired"))
            .await
            .unwrap()
    );
    let dues = |stage: &StageKey| {
        let (store, stage) = (store.clone(), stage.clone());
        async move {
            let firings = store.firings(&stage, "morning", 0).await.unwrap();
            firings.iter().map(|f| f.due).collect::<Vec<_>>()
        }
    };
    assert_eq!(dues(&a).await, [9, 8, 2, 1]);
    assert_eq!(dues(&b).await, [8, 2, 1]);
    // Old ones go with a sweep, each door's newest from before stays.
    assert_eq!(store.sweep_firings(&b, 1_000, 0, 0).await.unwrap(), 2);
    assert_eq!(dues(&a).await, [9, 8]);
    assert_eq!(store.firings(&a, "other", 0).await.unwrap().len(), 1);
}

/// A journal of one event whose output (long: stored as a blob) is `output`.
fn reading(output: &str) -> Vec<Event> {
    vec![event(
        1,
        EventKind::ToolCallFinished {
            call_id: "c1".into(),
            name: "read".into(),
            ok: true,
            output: output.into(),
            duration_ms: 1.0,
        },
    )]
}

/// Queues performance `id` from `origin`, created at `created_at`; with a journal, claims it,
/// appends the journal, and (unless `leave_leased`) finishes it, last written at `updated_at`.
async fn performed(
    backend: &Backend,
    store: &Arc<dyn Store>,
    (id, origin, created_at): (&str, &str, i64),
    journal: Option<&[Event]>,
    leave_leased: bool,
    updated_at: i64,
) {
    let mut p = new(id);
    (p.id, p.origin) = (Some(id.into()), origin.into());
    store.enqueue(&p).await.unwrap();
    if let Some(journal) = journal {
        let lease = claim(store, "w").await;
        assert_eq!(lease.performance, id);
        store.append(&lease, journal).await.unwrap();
        if !leave_leased {
            store.finish(&lease, Outcome::Done, "").await.unwrap();
        }
    }
    backend.execute(&format!(
        "UPDATE performances SET created_at = {created_at}, updated_at = {updated_at} \
         WHERE id = '{id}'"
    ));
}

/// Finished door-made performances past their age go with their events, notes and approvals and
/// the blobs no other performance refers to, in batches; each door's newest stay, so do queued
/// and leased ones, one finished too recently, and every performance a person started.
async fn old_door_performances_go_with_their_events_and_unshared_blobs(backend: Backend) {
    let store = backend.open().await;
    let shared = "an output two performances read\n".repeat(50);
    let own = "an output only a1 read\n".repeat(50);
    let (both, alone) = (
        reading(&shared),
        vec![reading(&shared)[0].clone(), {
            let mut e = reading(&own)[0].clone();
            e.seq = 2;
            e
        }],
    );
    let old = 10;
    performed(
        &backend,
        &store,
        ("a1", "door:a", 2),
        Some(&alone),
        false,
        old,
    )
    .await;
    performed(
        &backend,
        &store,
        ("a2", "door:a", 3),
        Some(&both),
        false,
        old,
    )
    .await;
    performed(
        &backend,
        &store,
        ("a3", "door:a", 4),
        Some(&both),
        false,
        now_ms(),
    )
    .await;
    performed(
        &backend,
        &store,
        ("a4", "door:a", 5),
        Some(&both),
        true,
        old,
    )
    .await;
    performed(
        &backend,
        &store,
        ("b1", "door:b", 2),
        Some(&both),
        false,
        old,
    )
    .await;
    performed(
        &backend,
        &store,
        ("cli1", "cli", 1),
        Some(&both),
        false,
        old,
    )
    .await;
    performed(
        &backend,
        &store,
        ("api1", "api", 1),
        Some(&both),
        false,
        old,
    )
    .await;
    // Queued last, so the claims above take the others.
    performed(&backend, &store, ("a0", "door:a", 1), None, false, old).await;
    backend.execute(
        "INSERT INTO notes (performance, n, text, created_at) VALUES ('a1', 1, 'late', 1); \
         INSERT INTO approvals (performance, n, actor, prop, subject, rule, created_at) \
         VALUES ('a1', 1, 'lead', 'shell', 'ls', 'ask', 1)",
    );
    let blobs = backend.count("blobs");
    assert_eq!(blobs, 2, "each output is stored once");
    // Keeping each door's newest (a4, b1): a1 and a2 are old enough, a3 finished just now.
    let before = now_ms() - 60_000;
    assert_eq!(
        store
            .sweep_door_performances(&queued_from(), before, 1, 1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .sweep_door_performances(&queued_from(), before, 1, 1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .sweep_door_performances(&queued_from(), before, 1, 0)
            .await
            .unwrap(),
        0
    );
    for gone in ["a1", "a2"] {
        assert!(
            matches!(
                store.performance(gone).await,
                Err(StoreError::NotFound { .. })
            ),
            "{gone} went"
        );
        assert!(
            store.approvals(gone).await.unwrap().is_empty(),
            "{gone}'s approvals went"
        );
    }
    assert_eq!(backend.count("events WHERE performance IN ('a1', 'a2')"), 0);
    assert_eq!(backend.count("notes"), 0);
    assert_eq!(
        backend.count("blobs"),
        1,
        "a1's own output went, the shared one stays"
    );
    for kept in ["a0", "a3", "a4", "b1", "cli1", "api1"] {
        store.performance(kept).await.unwrap();
    }
    assert_eq!(
        store.events("cli1", 0, 0).await.unwrap(),
        both,
        "its blob is there"
    );
    // Later, a3 is old enough too; keeping none, the leased a4, the queued a0 and the
    // performances a person started still stay.
    let later = now_ms() + 60_000;
    assert_eq!(
        store
            .sweep_door_performances(&queued_from(), later, 0, 0)
            .await
            .unwrap(),
        2,
        "a3 and b1"
    );
    let left: Vec<String> = store
        .list(&ListFilter::default())
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect();
    let mut left = left;
    left.sort();
    assert_eq!(left, ["a0", "a4", "api1", "cli1"]);
    assert_eq!(
        backend.count("blobs"),
        1,
        "the shared output is still read by cli1"
    );
    assert_eq!(store.events("api1", 0, 0).await.unwrap(), both);
}

/// One stage's door retention deletes only its own performances (by its name, and by its file
/// those queued without one), its doors' newest counted among its own: stages sharing a store
/// and a door's name each keep theirs as their own `[doors]` says.
async fn a_stages_door_sweep_leaves_other_stages_performances(backend: Backend) {
    let store = backend.open().await;
    let key = |name: &str| StageKey {
        name: name.to_string().into(),
        path: format!("/srv/{name}/stage.toml"),
    };
    let (a, b) = (key("a"), key("b"));
    // Oldest first; the other stage's are the newest, so a newest-N counted across stages
    // would keep none of a's.
    let rows = [
        ("a0", None, &a.path),
        ("a1", Some("a"), &a.path),
        ("a2", Some("a"), &b.path),
        ("a3", Some("a"), &a.path),
        ("b0", None, &b.path),
        ("b1", Some("b"), &b.path),
        ("b2", Some("b"), &a.path),
        ("b3", Some("b"), &b.path),
        ("x0", None, &"/srv/x/stage.toml".to_string()),
    ];
    for (created_at, (id, name, path)) in rows.into_iter().enumerate() {
        let p = NewPerformance {
            id: Some(id.into()),
            stage: path.clone(),
            stage_name: name.map(Into::into),
            origin: "door:nightly".into(),
            ..new(id)
        };
        store.enqueue(&p).await.unwrap();
        let lease = claim(&store, "w").await;
        assert_eq!(lease.performance, id);
        store.finish(&lease, Outcome::Done, "").await.unwrap();
        backend.execute(&format!(
            "UPDATE performances SET created_at = {}, updated_at = 100 WHERE id = '{id}'",
            created_at + 1
        ));
    }
    let left = || async {
        let all = store.list(&ListFilter::default()).await.unwrap();
        let mut ids: Vec<String> = all.into_iter().map(|p| p.id).collect();
        ids.sort();
        ids
    };
    let before = now_ms();
    assert_eq!(
        store
            .sweep_door_performances(&a, before, 1, 0)
            .await
            .unwrap(),
        3,
        "a's own but its newest"
    );
    assert_eq!(left().await, ["a3", "b0", "b1", "b2", "b3", "x0"]);
    assert_eq!(
        store
            .sweep_door_performances(&b, before, 1, 0)
            .await
            .unwrap(),
        3
    );
    assert_eq!(left().await, ["a3", "b3", "x0"]);
    assert_eq!(
        store
            .sweep_door_performances(&a, before, 0, 0)
            .await
            .unwrap(),
        1
    );
    assert_eq!(left().await, ["b3", "x0"]);
}

/// Journals written before blob references were kept get theirs from the migration that adds
/// them: else sweeping a newer performance that shares a blob would delete it from under them.
async fn blob_references_are_filled_for_older_journals(backend: Backend) {
    let store = backend.open().await;
    let mut older = new("older");
    older.origin = "cli".into();
    let id = store.enqueue(&older).await.unwrap();
    let lease = claim(&store, "w").await;
    store.append(&lease, &journal()).await.unwrap();
    store.finish(&lease, Outcome::Done, "").await.unwrap();
    let referred = backend.count("blob_refs");
    assert!(referred >= 2, "the journal refers to {referred} blobs");
    // The store as the improv before blob references (the fifth migration from the last) left
    // it.
    let before = store.migrate().await.unwrap() - 5;
    backend.execute(&format!(
        "{OUTBOX_BEFORE_STAGES} {FIRINGS_BEFORE_STAGES} \
         DROP INDEX performances_by_stage; ALTER TABLE performances DROP COLUMN stage_name; \
         DROP INDEX performances_stopping; DROP INDEX performances_by_origin; \
         DROP TABLE blob_refs; \
         DELETE FROM schema_migrations WHERE version > {before}"
    ));
    let reopened = backend.open().await;
    assert_eq!(
        backend.count("blob_refs"),
        referred,
        "every reference is back"
    );
    let mut shared = new("shares the blobs");
    (shared.id, shared.origin) = (Some("d1".into()), "door:d".into());
    reopened.enqueue(&shared).await.unwrap();
    let lease = claim(&reopened, "w").await;
    reopened.append(&lease, &journal()).await.unwrap();
    reopened.finish(&lease, Outcome::Done, "").await.unwrap();
    let later = now_ms() + 60_000;
    assert_eq!(
        reopened
            .sweep_door_performances(&queued_from(), later, 0, 0)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        reopened.events(&id, 0, 0).await.unwrap(),
        journal(),
        "its blobs stay"
    );
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.unwrap().as_millis() as i64
}

async fn a_performance_keeps_its_own_budget(backend: Backend) {
    let store = backend.open().await;
    let budget = improv_kernel::Budget {
        max_turns: Some(1),
        max_cost_usd: Some(0.25),
        timeout: Some(Duration::from_millis(90_500)),
        ..improv_kernel::Budget::default()
    };
    let mut door = new("door");
    // Claims are oldest first, ties by id: the door's goes first.
    door.id = Some("a-door".into());
    door.budget = Some(budget.clone());
    let id = store.enqueue(&door).await.unwrap();
    let mut plain = new("plain");
    plain.id = Some("b-plain".into());
    let plain = store.enqueue(&plain).await.unwrap();
    assert_eq!(
        store.performance(&id).await.unwrap().budget,
        Some(budget.clone())
    );
    let (_, claimed) = store.claim("w1", TTL).await.unwrap().unwrap();
    assert_eq!((claimed.id, claimed.budget), (id, Some(budget)));
    let (_, claimed) = store.claim("w1", TTL).await.unwrap().unwrap();
    assert_eq!((claimed.id, claimed.budget), (plain, None));
}

async fn a_store_from_before_budgets_is_brought_up_to_date(backend: Backend) {
    let store = backend.open().await;
    let known = store.migrate().await.unwrap();
    let id = store.enqueue(&new("old")).await.unwrap();
    // The store as the improv before per-performance budgets (schema version 3) left it.
    backend.execute(&format!(
        "{OUTBOX_BEFORE_STAGES} {FIRINGS_BEFORE_STAGES} \
         DROP INDEX performances_by_stage; ALTER TABLE performances DROP COLUMN stage_name; \
         DROP INDEX performances_stopping; ALTER TABLE performances DROP COLUMN budget; \
         ALTER TABLE performances DROP COLUMN stop_requested; \
         DROP INDEX kv_by_age; ALTER TABLE kv DROP COLUMN version; \
         ALTER TABLE kv DROP COLUMN updated_at; \
         DROP INDEX outbox_sent; DROP INDEX performances_by_origin; DROP TABLE blob_refs; \
         DELETE FROM schema_migrations WHERE version > 3"
    ));
    let reopened = backend.open().await;
    assert_eq!(reopened.migrate().await.unwrap(), known);
    assert_eq!(reopened.performance(&id).await.unwrap().budget, None);
    let (_, claimed) = reopened.claim("w1", TTL).await.unwrap().unwrap();
    assert_eq!((claimed.id, claimed.budget), (id, None));
}

/// A worker serving named stages claims only their performances, by the name recorded when
/// each was queued (whatever path was recorded with it), oldest first, an expired lease of one
/// too; another stage's performance, and one queued without a name, stay queued for a worker
/// that serves them.
async fn a_claim_among_stages_takes_only_theirs_by_name(backend: Backend) {
    let store = backend.open().await;
    let of = |name: Option<&str>, intent: &str| NewPerformance {
        stage: format!("/releases/old/{intent}/stage.toml"),
        stage_name: name.map(Into::into),
        ..new(intent)
    };
    let mut ids = vec![];
    for new in [
        of(Some("alpha"), "a1"),
        of(Some("beta"), "b"),
        of(None, "u"),
        of(Some("alpha"), "a2"),
    ] {
        ids.push(store.enqueue(&new).await.unwrap());
        // The oldest first: each queued a millisecond (the store's clock) after the last.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let [a1, beta, unnamed, a2] = <[String; 4]>::try_from(ids).unwrap();
    let alpha = Serving::Stages(vec![served("alpha")]);
    let take = async |worker: &str, ttl: Duration, serving: &Serving| {
        let claimed = store.claim_among(worker, ttl, serving).await.unwrap();
        claimed.map(|(_, record)| (record.id, record.stage_name))
    };
    let named = |id: &str, name: &str| Some((id.to_string(), Some(name.to_string())));
    // Its lease runs out at once: the next claimer of alpha takes it again.
    assert_eq!(
        take("w0", Duration::ZERO, &alpha).await,
        named(&a1, "alpha")
    );
    assert_eq!(take("w1", TTL, &alpha).await, named(&a1, "alpha"));
    assert_eq!(store.performance(&a1).await.unwrap().epoch, 2);
    assert_eq!(take("w1", TTL, &alpha).await, named(&a2, "alpha"));
    assert_eq!(
        take("w1", TTL, &alpha).await,
        None,
        "beta's and the unnamed one stay"
    );
    assert_eq!(take("w2", TTL, &Serving::Stages(vec![])).await, None);
    for id in [&beta, &unnamed] {
        assert_eq!(
            store.performance(id).await.unwrap().state,
            State::Queued,
            "{id}"
        );
    }
    let gamma_or_beta = Serving::Stages(vec![served("gamma"), served("beta")]);
    assert_eq!(take("w2", TTL, &gamma_or_beta).await, named(&beta, "beta"));
    assert_eq!(take("w2", TTL, &gamma_or_beta).await, None);
    assert_eq!(take("w3", TTL, &Serving::Any).await, Some((unnamed, None)));
}

/// A served stage of `name` whose file is at none of the recorded paths.
fn served(name: &str) -> StageKey {
    StageKey {
        name: Some(name.into()),
        path: format!("/releases/new/{name}/stage.toml"),
    }
}

/// A worker serving named stages also claims the performances queued without a name from one
/// of its stage files: those queued before the upgrade that recorded names, and those of a
/// stage whose file gives no name (known by its path). Without a name and from another file,
/// or named for another stage at its file, they stay queued.
async fn a_claim_among_stages_takes_the_unnamed_from_their_files(backend: Backend) {
    let store = backend.open().await;
    let (shop, current) = ("/srv/shop/stage.toml", "/srv/a/current/stage.toml");
    let of = |name: Option<&str>, path: &str, intent: &str| NewPerformance {
        stage: path.into(),
        stage_name: name.map(Into::into),
        ..new(intent)
    };
    let mut ids = vec![];
    for new in [
        of(None, shop, "queued before the upgrade"),
        of(
            None,
            "/srv/b/current/stage.toml",
            "another folder named current",
        ),
        of(Some("pantry"), current, "another stage's, at the same file"),
        of(None, current, "a stage without a name"),
    ] {
        ids.push(store.enqueue(&new).await.unwrap());
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let serving = Serving::Stages(vec![
        StageKey {
            name: Some("shop".into()),
            path: shop.into(),
        },
        StageKey {
            name: None,
            path: current.into(),
        },
    ]);
    let mut taken = vec![];
    while let Some((_, record)) = store.claim_among("w", TTL, &serving).await.unwrap() {
        taken.push(record.id);
    }
    assert_eq!(taken, vec![ids[0].clone(), ids[3].clone()]);
    for id in [&ids[1], &ids[2]] {
        assert_eq!(store.performance(id).await.unwrap().state, State::Queued);
    }
    // A stage without a name at `current` lists only its own, not the other `current`'s.
    let key = StageKey {
        name: None,
        path: current.into(),
    };
    let filter = ListFilter {
        stage: Some(key),
        ..ListFilter::default()
    };
    let listed: Vec<String> = store
        .list(&filter)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(listed, vec![ids[3].clone()]);
}

/// A stage's performances are those queued with its name, from whatever folder, and those
/// queued without a name from its stage file: what a server of the stage lists and shows after
/// a deploy moved its folder; another stage's, even from the same path, are not.
async fn a_stages_list_follows_its_name_not_its_folder(backend: Backend) {
    let store = backend.open().await;
    let of = |name: Option<&str>, path: &str, intent: &str| NewPerformance {
        stage: path.into(),
        stage_name: name.map(Into::into),
        ..new(intent)
    };
    let (before, now) = ("/releases/1/stage.toml", "/releases/2/stage.toml");
    let moved = of(Some("shop"), before, "queued before the deploy");
    let unnamed = of(None, now, "queued without a name here");
    let unnamed_elsewhere = of(None, before, "queued without a name elsewhere");
    let other = of(Some("pantry"), now, "another stage at the same path");
    let mut ids = vec![];
    for new in [&moved, &unnamed, &unnamed_elsewhere, &other] {
        ids.push(store.enqueue(new).await.unwrap());
    }
    let key = StageKey {
        name: Some("shop".into()),
        path: now.into(),
    };
    let filter = ListFilter {
        stage: Some(key.clone()),
        ..ListFilter::default()
    };
    let listed: Vec<String> = store
        .list(&filter)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    let mut sorted = listed.clone();
    sorted.sort();
    let mut expected = vec![ids[0].clone(), ids[1].clone()];
    expected.sort();
    assert_eq!(
        sorted, expected,
        "the moved one and the unnamed one from its file"
    );
    for record in store.list(&ListFilter::default()).await.unwrap() {
        assert_eq!(
            key.holds(&record),
            listed.contains(&record.id),
            "{record:?}"
        );
    }
}

async fn a_newer_schema_is_refused(backend: Backend) {
    let store = backend.open().await;
    let known = store.migrate().await.unwrap();
    backend.record_schema_version(known + 1);
    let err = store.migrate().await.unwrap_err();
    assert!(
        matches!(err, StoreError::NewerSchema { found, known: k, .. } if found == known + 1 && k == known),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade improv"), "{err}");
}

/// A stop ends a queued performance at once (no worker ever claims it), is recorded for a
/// leased one (its worker ends it; a claimer after an expiry sees it too), and is refused once
/// it ended.
async fn a_stop_ends_a_queued_one_and_is_asked_of_a_leased_ones_worker(backend: Backend) {
    let store = backend.open().await;
    let queued = store.enqueue(&new("never starts")).await.unwrap();
    assert_eq!(store.stop(&queued).await.unwrap(), Stopping::Stopped);
    let record = store.performance(&queued).await.unwrap();
    assert_eq!(record.state, State::Finished);
    assert_eq!(record.outcome, Some(Outcome::Stopped));
    assert!(store.claim("w", TTL).await.unwrap().is_none(), "claimed");
    assert!(matches!(
        store.stop(&queued).await,
        Err(StoreError::Finished { .. })
    ));
    assert!(matches!(
        store.stop("nobody").await,
        Err(StoreError::NotFound { .. })
    ));

    let leased = store.enqueue(&new("running")).await.unwrap();
    let lease = claim(&store, "w").await;
    assert!(!store.progress(&leased).await.unwrap().stop);
    assert_eq!(store.stop(&leased).await.unwrap(), Stopping::Asked);
    let progress = store.progress(&leased).await.unwrap();
    assert!(progress.stop && !progress.finished, "{progress:?}");
    assert_eq!(
        store.performance(&leased).await.unwrap().state,
        State::Leased
    );
    store
        .finish(&lease, Outcome::Stopped, "stopped")
        .await
        .unwrap();
    assert!(store.progress(&leased).await.unwrap().finished);
}

/// `wait_progress` wakes on another instance's append, approval asked, answer and stop, and
/// says which changed.
async fn wait_progress_wakes_on_events_approvals_and_stops(backend: Backend) {
    let writer = backend.open().await;
    let watcher = backend.open().await;
    let id = writer.enqueue(&new("watched")).await.unwrap();
    let lease = claim(&writer, "w").await;
    let ask = ApprovalAsk {
        actor: "lead".into(),
        prop: "bash".into(),
        subject: "rm -rf build".into(),
        rule: "ask".into(),
    };
    let mut seen = watcher.progress(&id).await.unwrap();
    assert_eq!(seen, Progress::default());
    let same = watcher
        .wait_progress(&id, &seen, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(same, seen, "nothing changed");
    for step in 0..4 {
        let waiting = {
            let (watcher, id) = (Arc::clone(&watcher), id.clone());
            tokio::spawn(async move { watcher.wait_progress(&id, &seen, NEVER).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        match step {
            0 => writer.append(&lease, &[note(1)]).await.unwrap(),
            1 => assert_eq!(writer.ask_approval(&lease, &ask).await.unwrap(), 1),
            2 => assert!(
                writer
                    .answer_approval(&id, 1, Answer::Once, None)
                    .await
                    .unwrap()
            ),
            _ => assert_eq!(writer.stop(&id).await.unwrap(), Stopping::Asked),
        }
        let now = tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("the waiter was not woken within 30 s")
            .unwrap()
            .unwrap();
        let expected = match step {
            0 => Progress {
                last_seq: 1,
                ..seen
            },
            1 => Progress { asked: 1, ..seen },
            2 => Progress {
                answered: 1,
                ..seen
            },
            _ => Progress { stop: true, ..seen },
        };
        assert_eq!(now, expected, "step {step}");
        seen = now;
    }
}

/// `stops_requested` names the performances leased to that worker whose stop was asked, and
/// only those; `wait_stop` wakes on another instance's stop.
async fn stops_requested_names_the_workers_stopped_performances(backend: Backend) {
    let store = backend.open().await;
    let watcher = backend.open().await;
    let mine = store.enqueue(&new("mine")).await.unwrap();
    let _mine = claim(&store, "w").await;
    let other = store.enqueue(&new("another worker's")).await.unwrap();
    let _other = claim(&store, "v").await;
    let running = store.enqueue(&new("mine, running")).await.unwrap();
    let _running = claim(&store, "w").await;
    assert!(watcher.stops_requested("w").await.unwrap().is_empty());
    // Settle the listener's first count, then wait for a stop from the other instance.
    let seen = watcher
        .wait_stop(0, Duration::from_millis(100))
        .await
        .unwrap();
    let waiting = {
        let watcher = Arc::clone(&watcher);
        tokio::spawn(async move { watcher.wait_stop(seen, NEVER).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(store.stop(&mine).await.unwrap(), Stopping::Asked);
    tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("the stop watcher was not woken within 30 s")
        .unwrap()
        .unwrap();
    assert_eq!(store.stop(&other).await.unwrap(), Stopping::Asked);
    assert_eq!(
        watcher.stops_requested("w").await.unwrap(),
        std::slice::from_ref(&mine)
    );
    assert_eq!(watcher.stops_requested("v").await.unwrap(), [other]);
    assert_ne!(mine, running);
}

/// Performances of one stage append at once the same new long strings (its system prompt, its
/// tools: blobs stored once for all) and every append lands: none is aborted as a deadlock over
/// the blobs' rows, which cost the worker its claimed performance.
async fn appends_sharing_new_blobs_all_land(backend: Backend) {
    const PERFORMANCES: usize = 8;
    const BLOBS: u64 = 6;
    const ROUNDS: u64 = 40;
    let mut leases = Vec::new();
    for i in 0..PERFORMANCES {
        let store = backend.open().await;
        store.enqueue(&new(&format!("p{i}"))).await.unwrap();
        leases.push((claim(&store, &format!("w{i}")).await, store));
    }
    let leases = Arc::new(leases);
    for round in 0..ROUNDS {
        let batch: Vec<Event> = (0..BLOBS)
            .map(|k| {
                let seq = round * BLOBS + k + 1;
                let text = format!("round {round}, blob {k}; ").repeat(100);
                event(seq, EventKind::DirectorNote { text })
            })
            .collect();
        let start = Arc::new(tokio::sync::Barrier::new(PERFORMANCES));
        let appends: Vec<_> = (0..PERFORMANCES)
            .map(|i| {
                let (leases, batch, start) = (leases.clone(), batch.clone(), start.clone());
                tokio::spawn(async move {
                    let (lease, store) = &leases[i];
                    start.wait().await;
                    store.append(lease, &batch).await
                })
            })
            .collect();
        for (i, append) in appends.into_iter().enumerate() {
            if let Err(e) = append.await.unwrap() {
                panic!("round {round}: performance {i}'s append was refused: {e}");
            }
        }
    }
}

/// A performance whose stop was asked and that came back unfinished (its worker's lease ran
/// out, or the worker released it, draining) is not opened again by the next claim: the claim
/// ends it, stopped, and takes the next one.
async fn a_claim_ends_a_stopped_one_instead_of_opening_it(backend: Backend) {
    let store = backend.open().await;
    let expired = store.enqueue(&new("its worker died")).await.unwrap();
    let gone = store.claim("w1", Duration::from_millis(1)).await.unwrap();
    assert_eq!(gone.unwrap().0.performance, expired);
    assert_eq!(store.stop(&expired).await.unwrap(), Stopping::Asked);
    let released = store.enqueue(&new("its worker drained")).await.unwrap();
    let draining = claim(&store, "w2").await;
    assert_eq!(draining.performance, released);
    assert_eq!(store.stop(&released).await.unwrap(), Stopping::Asked);
    store.release(&draining).await.unwrap();
    let next = store.enqueue(&new("not stopped")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let taken = claim(&store, "w3").await;
    assert_eq!(taken.performance, next, "a stopped performance was claimed");
    assert!(store.claim("w3", TTL).await.unwrap().is_none());
    for id in [&expired, &released] {
        let record = store.performance(id).await.unwrap();
        assert_eq!(record.state, State::Finished, "{id}");
        assert_eq!(record.outcome, Some(Outcome::Stopped), "{id}");
    }
}

macro_rules! conformance {
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

conformance!(
    lifecycle,
    old_door_performances_go_with_their_events_and_unshared_blobs,
    a_stages_door_sweep_leaves_other_stages_performances,
    blob_references_are_filled_for_older_journals,
    concurrent_claimers_never_share_a_performance,
    an_expired_lease_is_reclaimed_and_fences_out_the_old_holder,
    an_ask_is_fenced_by_the_lease,
    a_stale_writer_racing_a_claim_lands_nothing_after_it,
    seq_gaps_and_repeats_are_refused,
    events_round_trip_exactly,
    wait_events_wakes_on_another_instances_append,
    a_firing_is_claimed_exactly_once,
    stages_doors_of_one_name_each_fire_their_own,
    firings_from_before_stages_stay_their_doors_under_every_stage,
    firings_of_a_key_no_daemon_sweeps_go_with_another_stages_sweep,
    the_outbox_is_idempotent_by_key,
    stages_chat_doors_of_one_name_each_send_their_own,
    outbox_rows_from_before_stages_go_to_their_performances_stage,
    put_only_if_absent_keeps_the_first_value,
    compare_and_set_takes_one_writer_per_version,
    racing_compare_and_sets_lose_nothing,
    sweep_deletes_expired_and_surplus_values_in_batches,
    a_value_written_without_a_time_is_not_swept_at_once,
    sent_outbox_rows_expire_and_unsent_ones_stay,
    old_firings_go_but_each_doors_newest_stay,
    a_newer_schema_is_refused,
    a_performance_keeps_its_own_budget,
    a_store_from_before_budgets_is_brought_up_to_date,
    a_stop_ends_a_queued_one_and_is_asked_of_a_leased_ones_worker,
    wait_progress_wakes_on_events_approvals_and_stops,
    stops_requested_names_the_workers_stopped_performances,
    appends_sharing_new_blobs_all_land,
    a_claim_ends_a_stopped_one_instead_of_opening_it,
    a_claim_among_stages_takes_only_theirs_by_name,
    a_claim_among_stages_takes_the_unnamed_from_their_files,
    a_stages_list_follows_its_name_not_its_folder,
);

/// What only one backend can get wrong: its own kind of misconfiguration and outage.
mod faults {
    use super::*;

    /// A sweep capping a large scope by count finishes: 300,000 values (analyzed, as autovacuum
    /// would), 250,000 kept, within the store's statement timeout (30 s by default; a `NOT IN
    /// (… LIMIT keep)` form rescans its subquery per row once it outgrows work_mem, and is
    /// cancelled).
    #[tokio::test]
    async fn a_count_sweep_of_300_000_values_finishes() {
        let backend = Backend::postgres();
        let store = backend.open().await;
        let now = now_ms();
        backend.execute(&format!(
            "INSERT INTO kv (scope, key, value, updated_at) SELECT 'seen', md5(i::text), '0', \
             {now} - i FROM generate_series(1, 300000) AS i; ANALYZE kv"
        ));
        let sweep = Sweep {
            before: 0,
            keep: 250_000,
            batch: 1_000,
        };
        assert_eq!(store.sweep("seen", &sweep).await.unwrap(), 1_000);
        let all = Sweep { batch: 0, ..sweep };
        assert_eq!(store.sweep("seen", &all).await.unwrap(), 49_000);
        let Backend::Postgres(pg) = &backend else {
            unreachable!("started above")
        };
        let oldest_kept = pg.psql(
            "improv",
            "SELECT min(updated_at) FROM kv WHERE scope = 'seen'",
        );
        assert_eq!(
            oldest_kept.trim(),
            (now - 250_000).to_string(),
            "the newest are kept"
        );
    }

    fn socket_url(user: &str, dir: &std::path::Path) -> StoreUrl {
        StoreUrl::parse(&format!(
            "postgres://{user}@/improv?host={}&port=5432",
            dir.display()
        ))
        .unwrap()
    }

    #[tokio::test]
    async fn a_wrong_password_is_config_and_never_shown() {
        let pg = TempPostgres::start_new();
        pg.create_database("improv");
        pg.psql(
            "postgres",
            "CREATE ROLE improv LOGIN PASSWORD 'right-horse-7'",
        );
        pg.psql("improv", "GRANT ALL ON SCHEMA public TO improv");
        let right =
            improv_store::open(&socket_url("improv:right-horse-7", pg.socket_dir())).unwrap();
        right.migrate().await.unwrap();
        let store =
            improv_store::open(&socket_url("improv:Wr0ng-s3cret", pg.socket_dir())).unwrap();
        assert!(
            !store.describe().contains("Wr0ng-s3cret"),
            "{}",
            store.describe()
        );
        let err = store.migrate().await.unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(matches!(err, StoreError::Config { .. }), "{shown}");
        assert!(!shown.contains("Wr0ng-s3cret"), "{shown}");
        assert!(
            shown.contains("improv:***@") && shown.contains("password authentication failed"),
            "{shown}"
        );
        // A database that does not exist is configuration too: retrying will not create it.
        let missing = improv_store::open(&StoreUrl::parse(&pg.url("nosuchdb")).unwrap()).unwrap();
        let err = missing.migrate().await.unwrap_err();
        assert!(matches!(err, StoreError::Config { .. }), "{err}");
        assert!(
            !err.is_transient() && err.to_string().contains("nosuchdb"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_is_unavailable_and_never_shows_the_password() {
        let nowhere = tempfile::tempdir().unwrap();
        let store =
            improv_store::open(&socket_url("improv:Unre4ch-s3cret", nowhere.path())).unwrap();
        let err = store.enqueue(&new("x")).await.unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(err.is_transient(), "{shown}");
        assert!(
            !shown.contains("Unre4ch-s3cret") && shown.contains("improv:***@"),
            "{shown}"
        );
        let url = format!(
            "postgresql://improv@/improv?host={}&password=Unre4ch-s3cret",
            nowhere.path().display()
        );
        let err = improv_store::open(&StoreUrl::parse(&url).unwrap())
            .unwrap()
            .migrate()
            .await
            .unwrap_err();
        let shown = format!("{err} {err:?}");
        assert!(
            err.is_transient() && !shown.contains("Unre4ch-s3cret"),
            "{shown}"
        );
        let bad =
            StoreUrl::Postgres("postgres://improv:Unre4ch-s3cret@/improv?port=notaport".into());
        let err = improv_store::open(&bad)
            .err()
            .expect("a bad port is refused");
        let shown = format!("{err} {err:?}");
        assert!(
            matches!(err, StoreError::Config { .. }) && !shown.contains("Unre4ch-s3cret"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn an_unopenable_sqlite_file_is_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("file"), "").unwrap();
        let err = improv_store::open(&StoreUrl::Sqlite(dir.path().join("file/store.db")))
            .err()
            .expect("refused");
        assert!(matches!(err, StoreError::Config { .. }), "{err}");
        std::fs::write(dir.path().join("junk.db"), "not a database, ".repeat(100)).unwrap();
        let err = improv_store::open(&StoreUrl::Sqlite(dir.path().join("junk.db")))
            .err()
            .expect("refused");
        assert!(matches!(err, StoreError::Config { .. }), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_database_restart_fails_calls_transiently_then_they_succeed() {
        let backend = Backend::postgres();
        let Backend::Postgres(pg) = &backend else {
            unreachable!()
        };
        let store = backend.open().await;
        let watcher = backend.open().await;
        let id = store.enqueue(&new("restarted")).await.unwrap();
        let lease = claim(&store, "w").await;
        store.append(&lease, &[note(1)]).await.unwrap();
        // The watcher's listening connection exists before the restart.
        assert!(
            watcher
                .wait_events(&id, 0, Duration::from_secs(5))
                .await
                .unwrap()
        );

        pg.stop();
        let err = store.append(&lease, &[note(2)]).await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(store.claim("w2", TTL).await.unwrap_err().is_transient());
        assert!(
            watcher
                .wait_events(&id, 1, Duration::from_millis(200))
                .await
                .unwrap_err()
                .is_transient()
        );
        pg.start();

        // The very next call succeeds: the pool dropped the connections that died.
        store.append(&lease, &[note(2)]).await.unwrap();
        assert_eq!(
            store.events(&id, 0, 0).await.unwrap(),
            vec![note(1), note(2)]
        );
        // And the watcher's listener reconnected: an append wakes it again.
        let waiting = {
            let (watcher, id) = (Arc::clone(&watcher), id.clone());
            tokio::spawn(async move { watcher.wait_events(&id, 2, NEVER).await })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        store.append(&lease, &[note(3)]).await.unwrap();
        assert!(woken(waiting).await, "woken after the restart");
    }
}
