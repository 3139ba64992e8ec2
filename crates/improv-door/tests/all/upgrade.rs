//! The upgrade to stage keys, under races and across stages (issue 16, second review): what a
//! door kept under its bare name before stages were in the store's keys is adopted before any
//! claim (the probes' baseline too) and by one stage only, all of a door's values by the same
//! one, and a firing claimed before the upgrade is retaken once, never by a stage other than the
//! one its performance was queued under. The real doors on
//! the real SQLite store, on a simulated clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{Counting, TestStage, open_and_tick, store};
use improv_door::expiry::stage_key;
use improv_door::timed::{BACKOFF, CLAIMED, SINCE};
use improv_door::{SimClock, kept, probe};
use improv_store::NewPerformance;
use std::sync::Arc;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
/// A midnight, UTC.
const DAY: i64 = 1_795_651_200_000;

/// Records in the store file `db` a firing as the improv before stages were in the key left it
/// (its stage column empty), claimed and never started.
fn claimed_before_stages(db: &std::path::Path, due: i64, performance: &str) {
    let old = rusqlite::Connection::open(db).unwrap();
    let sql =
        "INSERT INTO firings (stage, door, due, performance, note) VALUES ('', 'tick', ?1, ?2, ?3)";
    old.execute(sql, rusqlite::params![due, performance, CLAIMED])
        .unwrap();
}

/// The first probe firing after the upgrade performs a change made since the last firing
/// before it: the probes' baseline kept under the door's bare name is adopted when the door
/// opens, before its first claim (which would leave the stage with a firing of its own, and
/// nothing adopted: the change taken as a first baseline, performing nothing).
#[tokio::test]
async fn the_first_probe_firing_after_the_upgrade_performs_a_change() {
    let t = TestStage::new(
        "[[door]]\nname = \"watch\"\nevery = \"30m\"\nprobe = [\"cat inbox.txt\"]\n\
         intent = \"changed: {probe_diff}\"\n",
    );
    let inbox = t.path().join("inbox.txt");
    std::fs::write(&inbox, "nothing yet\n").unwrap();
    let store = store(&t.db()).await;
    let start = DAY + 7 * HOUR + MINUTE;
    // The improv before: its daemon opened the door at 06:41, kept the probes' outputs then.
    let since = serde_json::json!(start - 20 * MINUTE);
    assert!(store.put(SINCE, "watch", &since, true).await.unwrap());
    let seen = probe::run(&t.stage, &t.stage.doors[0]).await.unwrap();
    let seen = serde_json::to_value(seen).unwrap();
    assert!(store.put(probe::SCOPE, "watch", &seen, true).await.unwrap());
    std::fs::write(&inbox, "a new letter\n").unwrap();
    let clock = Arc::new(SimClock::new(start));
    let launcher = Arc::new(Counting::default());
    open_and_tick(&t.stage, "watch", &store, launcher.clone(), clock).await;
    let rows = store.firings(&stage_key(&t.stage), "watch", 10).await;
    let rows = rows.unwrap();
    assert_eq!(launcher.ids().len(), 1, "07:00 saw the change: {rows:?}");
    assert!(rows[0].note.starts_with("fired"), "{rows:?}");
    assert!(
        launcher.requests.lock().unwrap()[0]
            .intent
            .contains("a new letter")
    );
}

/// Two stages upgraded at once, each with a door of one name, reading the value kept under the
/// bare name from three processes' connections at the same moment (two daemons of stage a, one
/// of b): one stage adopts it, never both (both would then perform every due time of the window
/// before the upgrade), and each of its daemons reads it. Many rounds, as a single pass proves
/// nothing about a race.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_two_stages_upgraded_at_once_one_adopts() {
    let a = TestStage::new("[stage]\nname = \"a\"\n");
    let b = TestStage::new("[stage]\nname = \"b\"\n");
    let (key_a, key_b) = (stage_key(&a.stage), stage_key(&b.stage));
    let daemons = [
        (store(&a.db()).await, key_a.clone()),
        (store(&a.db()).await, key_a.clone()),
        (store(&a.db()).await, key_b.clone()),
    ];
    let mut both = 0;
    for round in 0..60 {
        let door = format!("tick{round}");
        let since = serde_json::json!(DAY + round);
        assert!(daemons[0].0.put(SINCE, &door, &since, true).await.unwrap());
        let reads: Vec<_> = daemons
            .iter()
            .map(|(store, key)| {
                let (store, key, door) = (store.clone(), key.clone(), door.clone());
                tokio::spawn(async move { kept::get(store.as_ref(), SINCE, &key, &door).await })
            })
            .collect();
        let mut read = Vec::new();
        for r in reads {
            read.push(r.await.unwrap().unwrap());
        }
        let (a1, a2, b) = (&read[0], &read[1], &read[2]);
        both += usize::from(a1.is_some() && b.is_some());
        let adopted = if b.is_some() { [b] } else { [a1] };
        assert_eq!(adopted[0], &Some(since.clone()), "round {round}: {read:?}");
        assert_eq!(a1, a2, "round {round}: the daemons of a read alike");
        let store = &daemons[0].0;
        let kept_a = store.get(SINCE, &kept::key(&key_a, &door)).await.unwrap();
        let kept_b = store.get(SINCE, &kept::key(&key_b, &door)).await.unwrap();
        assert_eq!(kept_a.is_some(), a1.is_some(), "round {round}");
        assert_eq!(kept_b.is_some(), b.is_some(), "round {round}");
    }
    assert_eq!(both, 0, "rounds in which both stages adopted the window");
}

/// A firing claimed before the upgrade by a daemon killed before starting it is listed by every
/// stage. One never queued (the local launcher writes no record before it starts) is retaken,
/// once, by the first stage that sees it (it used to be left by all, that due time lost). One
/// whose performance was queued under stage a is left by stage b (which used to start it first,
/// with its own intent); a launcher that queues knows it started, so a starts it no more.
#[tokio::test]
async fn a_firing_claimed_before_the_upgrade_is_retaken_only_by_its_own_stage() {
    let door = |intent: &str| {
        format!("[[door]]\nname = \"tick\"\nevery = \"30m\"\nintent = \"{intent}\"\n")
    };
    let a = TestStage::new(&format!("[stage]\nname = \"a\"\n\n{}", door("a's")));
    let b = TestStage::new(&format!("[stage]\nname = \"b\"\n\n{}", door("b's")));
    let store = store(&a.db()).await;
    let start = DAY + 7 * HOUR + MINUTE;
    // Two killed between claim and start: one queued under a, one never queued anywhere.
    let (queued, lost) = ("queuedbeforeupgrade", "lostbeforeupgrade");
    claimed_before_stages(&a.db(), start - HOUR, lost);
    claimed_before_stages(&a.db(), start - 30 * MINUTE, queued);
    store
        .enqueue(&NewPerformance {
            id: Some(queued.into()),
            stage: a.stage.path.display().to_string(),
            stage_name: Some("a".into()),
            intent: "a's".into(),
            model: None,
            origin: "door:tick".into(),
            budget: None,
        })
        .await
        .unwrap();
    let clock = Arc::new(SimClock::new(start));
    let launcher = Arc::new(Counting::default());
    for t in [&b, &a] {
        open_and_tick(&t.stage, "tick", &store, launcher.clone(), clock.clone()).await;
    }
    let started: Vec<(String, String)> = launcher
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.id.clone(), r.intent.clone()))
        .collect();
    let of = |id: &str| started.iter().filter(|(i, _)| i == id).count();
    assert_eq!(of(lost), 1, "the never-queued firing, once: {started:?}");
    assert!(
        started
            .iter()
            .all(|(i, intent)| i != queued || intent == "a's"),
        "b started a's queued firing: {started:?}"
    );
}

/// Two stages upgraded at once: the one that takes the door's window takes its backoff and its
/// probes' baseline too, never the other (each scope adopted on its own, b could take the
/// baseline a daemon of it reads while a took the window). Stage b reads each scope right after
/// a took the window, before a reads the others; then many rounds at the same moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_stage_adopts_all_a_door_kept() {
    let a = TestStage::new("[stage]\nname = \"a\"\n");
    let b = TestStage::new("[stage]\nname = \"b\"\n");
    let (key_a, key_b) = (stage_key(&a.stage), stage_key(&b.stage));
    let (sa, sb) = (store(&a.db()).await, store(&a.db()).await);
    let scopes = [SINCE, BACKOFF, probe::SCOPE];
    for round in 0..40 {
        let door = format!("tick{round}");
        for scope in scopes {
            let kept = serde_json::json!({ "kept": round });
            assert!(sa.put(scope, &door, &kept, true).await.unwrap());
        }
        let read = |store: Arc<dyn improv_store::Store>, key: improv_store::StageKey| {
            let door = door.clone();
            async move {
                let mut got = Vec::new();
                for scope in scopes {
                    got.push(kept::get(store.as_ref(), scope, &key, &door).await.unwrap());
                }
                got
            }
        };
        let (got_a, got_b) = if round == 0 {
            assert!(
                kept::get(sa.as_ref(), SINCE, &key_a, &door)
                    .await
                    .unwrap()
                    .is_some()
            );
            let got_b = read(sb.clone(), key_b.clone()).await;
            (read(sa.clone(), key_a.clone()).await, got_b)
        } else {
            let b = tokio::spawn(read(sb.clone(), key_b.clone()));
            (read(sa.clone(), key_a.clone()).await, b.await.unwrap())
        };
        for got in [&got_a, &got_b] {
            let all = got.iter().all(Option::is_some);
            assert!(
                all || got.iter().all(Option::is_none),
                "round {round}: {got:?}"
            );
        }
        assert!(got_a[0].is_some() != got_b[0].is_some(), "round {round}");
    }
}

/// Only a timed door's backoff and baseline follow its window: a chat or email door's record kept
/// under the same name before the upgrade (here an email door's INBOX position) is its own stage's
/// to adopt even when another stage's timed door of that name took the window. Tying it to the
/// window left the email door starting "from now on", skipping the mail that came meanwhile.
#[tokio::test]
async fn another_stages_window_of_one_name_does_not_hold_back_a_chat_doors_record() {
    let a = TestStage::new("[stage]\nname = \"a\"\n");
    let b = TestStage::new("[stage]\nname = \"b\"\n");
    let (key_a, key_b) = (stage_key(&a.stage), stage_key(&b.stage));
    let store = store(&a.db()).await;
    let window = serde_json::json!(DAY);
    assert!(store.put(SINCE, "support", &window, true).await.unwrap());
    let position = serde_json::json!({ "next_uid": 42 });
    let scope = "email.position";
    assert!(store.put(scope, "support", &position, true).await.unwrap());
    // Stage a's timed door `support` takes its window; stage b's email door `support` then reads
    // its position.
    let since = kept::get(store.as_ref(), SINCE, &key_a, "support").await;
    assert_eq!(since.unwrap(), Some(window));
    let got = kept::get(store.as_ref(), scope, &key_b, "support").await;
    assert_eq!(got.unwrap(), Some(position));
}
