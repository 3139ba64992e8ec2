//! Stages sharing one store each have their own doors, whatever the doors are named: a door's
//! firings, its backoff and its probes' results are its stage's (issue 16: a due time one
//! stage's daemon claimed kept another stage's door of the same name from ever firing it). The
//! real daemons on the real SQLite store, on a simulated clock.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{Counting, TestStage, context, open_and_tick, store};
use improv_door::expiry::stage_key;
use improv_door::timed::{SINCE, Timed};
use improv_door::{Clock, Daemon, SimClock};
use std::sync::Arc;
use std::time::Duration;

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
/// A midnight, UTC.
const DAY: i64 = 1_795_651_200_000;
const MORNING: &str = "[[door]]\nname = \"morning\"\nschedule = \"0 8 * * *\"\n\
                       timezone = \"UTC\"\nintent = \"Good morning.\"\n";

/// Waits (a bound for a stuck daemon, not a timing) until `until` holds.
async fn eventually(what: &str, until: impl AsyncFn() -> bool) {
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    while !until().await {
        assert!(std::time::Instant::now() < give_up, "{what}: not in 60 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn two_stages_doors_morning_on_one_store_both_fire_at_eight() {
    // One stage named by its file, one known by its path; the store file is the first's.
    let named = TestStage::new(&format!("[stage]\nname = \"ops\"\n\n{MORNING}"));
    let unnamed = TestStage::new(MORNING);
    let clock = Arc::new(SimClock::new(DAY + 7 * HOUR + 59 * MINUTE));
    let mut daemons = Vec::new();
    for t in [&named, &unnamed] {
        let launcher = Arc::new(Counting::default());
        // Each daemon its own connection, as two `improv serve` processes would have.
        let store = store(&named.db()).await;
        let daemon = Daemon::new(
            t.stage.clone(),
            store.clone(),
            launcher.clone(),
            clock.clone(),
            None,
        );
        daemon.start().await;
        daemons.push((t, store, launcher, daemon));
    }
    // The clock moves once both doors are open: their catch-up windows start at the open.
    for (t, store, _, _) in &daemons {
        let since = improv_door::kept::key(&stage_key(&t.stage), "morning");
        eventually("the door opened", async || {
            store.get(SINCE, &since).await.unwrap().is_some()
        })
        .await;
    }
    clock.set(DAY + 8 * HOUR + MINUTE / 2);
    for (_, _, launcher, _) in &daemons {
        eventually("each stage's morning performed", async || {
            !launcher.ids().is_empty()
        })
        .await;
    }
    for (t, store, launcher, _) in &daemons {
        let ids = launcher.ids();
        assert_eq!(ids.len(), 1, "{:?}: 08:00 once", t.stage.path);
        let firings = store
            .firings(&stage_key(&t.stage), "morning", 10)
            .await
            .unwrap();
        assert_eq!(firings.len(), 1, "{firings:?}");
        assert_eq!(firings[0].due, DAY + 8 * HOUR);
        assert_eq!(firings[0].performance.as_ref(), Some(&ids[0]));
        // What `improv door status` and the page show: the stage's own firing only.
        let status = improv_door::status::status(&t.stage, store.as_ref(), clock.now(), 10);
        let status = status.await.unwrap();
        let shown: Vec<_> = status[0].firings.iter().map(|f| &f.performance).collect();
        assert_eq!(shown, [&Some(ids[0].clone())], "{:?}", t.stage.path);
    }
}

/// One stage's door failing backs off that door only: another stage's door of the same name,
/// on the same store, keeps firing.
#[tokio::test]
async fn one_stages_backoff_is_not_anothers() {
    let failing = TestStage::new(MORNING);
    let other = TestStage::new(MORNING);
    let store = store(&failing.db()).await;
    let clock = Arc::new(SimClock::new(DAY + 7 * HOUR));
    let broken = Arc::new(Counting::default());
    broken.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let fine = Arc::new(Counting::default());
    let ctx = |t: &TestStage, launcher: &Arc<Counting>| {
        context(
            &t.stage,
            "morning",
            store.clone(),
            launcher.clone(),
            clock.clone(),
        )
    };
    let mut first = Timed::open(ctx(&failing, &broken)).await.unwrap().unwrap();
    let mut second = Timed::open(ctx(&other, &fine)).await.unwrap().unwrap();
    clock.set(DAY + 8 * HOUR);
    first.tick().await.unwrap();
    let status = improv_door::status::status(&failing.stage, store.as_ref(), clock.now(), 1);
    assert_eq!(status.await.unwrap()[0].backoff.failures, 1);
    // A daemon of the other stage opening its door now reads its own backoff: none.
    let mut second_again = Timed::open(ctx(&other, &fine)).await.unwrap().unwrap();
    second_again.tick().await.unwrap();
    second.tick().await.unwrap();
    assert_eq!(fine.ids().len(), 1, "the other stage's 08:00 performed");
    let status = improv_door::status::status(&other.stage, store.as_ref(), clock.now(), 1);
    let status = status.await.unwrap();
    assert_eq!(status[0].backoff.failures, 0);
    assert!(status[0].firings[0].note.starts_with("fired"), "{status:?}");
}

const TICK: &str =
    "[[door]]\nname = \"tick\"\nevery = \"30m\"\ncatch_up = \"all\"\nintent = \"tick\"\n";

/// A door's catch-up window kept before stages were in the store's keys (under the door's name
/// alone) is still the door's after the upgrade: the due times missed across it are handled,
/// once. The stage adopts it: once its file names it (a new key), its door starts afresh and
/// does not perform those due times again.
#[tokio::test]
async fn a_window_kept_before_stages_is_read_after_the_upgrade() {
    let t = TestStage::new(TICK);
    let store = store(&t.db()).await;
    let start = DAY + 7 * HOUR + MINUTE;
    // The improv before: its daemon opened the door two hours ago and stopped.
    let since = serde_json::json!(start - 2 * HOUR);
    assert!(store.put(SINCE, "tick", &since, true).await.unwrap());
    let clock = Arc::new(SimClock::new(start));
    let launcher = Arc::new(Counting::default());
    open_and_tick(&t.stage, "tick", &store, launcher.clone(), clock.clone()).await;
    assert_eq!(
        launcher.ids().len(),
        4,
        "05:30, 06:00, 06:30, 07:00 since the window opened at 05:01"
    );
    // The file now names the stage: another key, none of the old key's firings.
    let file = t.path().join("stage.toml");
    std::fs::write(&file, format!("[stage]\nname = \"renamed\"\n\n{TICK}")).unwrap();
    let renamed = Arc::new(improv_stage::Stage::load(&file).unwrap());
    open_and_tick(&renamed, "tick", &store, launcher.clone(), clock).await;
    assert_eq!(launcher.ids().len(), 4, "no due time performed twice");
}

/// `improv door status` run from another checkout of the stage (another key) on the store of a
/// daemon upgraded from before stages only reads the window kept under the door's bare name: the
/// daemon's door then adopts it and performs the due times missed since, none dropped.
#[tokio::test]
async fn a_status_from_another_checkout_leaves_the_window_kept_before_stages_to_the_daemon() {
    let t = TestStage::new(TICK);
    let elsewhere = TestStage::new(TICK);
    let store = store(&t.db()).await;
    let start = DAY + 7 * HOUR + MINUTE;
    let since = serde_json::json!(start - 2 * HOUR);
    assert!(store.put(SINCE, "tick", &since, true).await.unwrap());
    let clock = Arc::new(SimClock::new(start));
    let status = improv_door::status::status(&elsewhere.stage, store.as_ref(), start, 1);
    let status = status.await.unwrap();
    assert!(status[0].next_due.is_some());
    let launcher = Arc::new(Counting::default());
    let ctx = context(&t.stage, "tick", store.clone(), launcher.clone(), clock);
    let mut timed = Timed::open(ctx).await.unwrap().unwrap();
    timed.tick().await.unwrap();
    assert_eq!(
        launcher.ids().len(),
        4,
        "05:30, 06:00, 06:30, 07:00: the window the status read stays the daemon's"
    );
}

/// A stage whose door already fired under its own key (past its upgrade) that opens a door of
/// the same name as another stage's does not take the window that other stage kept before
/// stages were in the key: the other's door adopts it and performs the due times it missed.
#[tokio::test]
async fn a_stage_whose_door_fired_under_its_own_key_leaves_the_window_from_before_stages() {
    let upgraded = TestStage::new(TICK);
    let other = TestStage::new(TICK);
    let store = store(&upgraded.db()).await;
    let start = DAY + 7 * HOUR + MINUTE;
    let since = serde_json::json!(start - 2 * HOUR);
    assert!(store.put(SINCE, "tick", &since, true).await.unwrap());
    let fired = improv_store::Firing {
        door: "tick".into(),
        due: start - 30 * MINUTE,
        performance: None,
        note: "fired".into(),
    };
    let other_key = stage_key(&other.stage);
    assert!(store.claim_firing(&other_key, &fired).await.unwrap());
    let clock = Arc::new(SimClock::new(start));
    let launcher = Arc::new(Counting::default());
    for t in [&other, &upgraded] {
        open_and_tick(&t.stage, "tick", &store, launcher.clone(), clock.clone()).await;
    }
    assert_eq!(
        launcher.ids().len(),
        4,
        "05:30, 06:00, 06:30, 07:00 by the upgraded stage; none by the other"
    );
}
