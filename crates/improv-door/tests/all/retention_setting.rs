//! `[doors] keep_for` and `keep_last` are what the daemon's sweep keeps door-made performances
//! by: with the real SQLite store, performances that the default 30 days keep go after a day
//! once the stage says `keep_for = "1d"` (a SIGHUP reload changes it, no door restarted), and
//! `keep_last` keeps that many of each door's newest. Another stage's door performances in the
//! same store, from a door of the same name, stay: its own `[doors]` keeps them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{Counting, TestStage, store};
use improv_door::expiry::{StageRetention, stage_key, sweep_tables};
use improv_door::{Daemon, SimClock};
use improv_stage::{DoorRetention, Stage};
use improv_store::{ListFilter, NewPerformance, StageKey, Store};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const DAY_MS: i64 = 24 * 3600 * 1000;
const DOOR: &str = "[[door]]\nname = \"nightly\"\nschedule = \"0 3 * * *\"\nintent = \"Sum up.\"\n";

/// Finished performances of stage `key` written now: `n` started by door `nightly`, then one by
/// a person.
async fn performed(store: &dyn Store, key: &StageKey, n: usize) {
    let origins = std::iter::repeat_n("door:nightly", n).chain(["cli"]);
    for origin in origins {
        // Built from JSON so the fields this test does not care about take their defaults.
        let new: NewPerformance = serde_json::from_value(serde_json::json!({
            "stage": key.path, "stage_name": key.name, "intent": "summarise", "origin": origin,
        }))
        .unwrap();
        store.enqueue(&new).await.unwrap();
        let (lease, _) = store
            .claim("w", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        store
            .finish(&lease, improv_kernel::Outcome::Done, "")
            .await
            .unwrap();
    }
}

/// How many performances of stage `key` door `nightly` and a person have: `(door, person)`.
async fn counts(store: &dyn Store, key: &StageKey) -> (usize, usize) {
    let filter = ListFilter {
        limit: 1000,
        stage: Some(key.clone()),
        ..ListFilter::default()
    };
    let all = store.list(&filter).await.unwrap();
    let door = all.iter().filter(|p| p.origin == "door:nightly").count();
    (door, all.len() - door)
}

/// Advances `clock` a sweep at a time until stage `key`'s door `nightly` has `left`
/// performances; false when it did not come to that within 30 s.
async fn swept_to(store: &dyn Store, key: &StageKey, clock: &SimClock, left: usize) -> bool {
    tokio::time::timeout(Duration::from_secs(30), async {
        while counts(store, key).await.0 > left {
            clock.advance(Duration::from_secs(600));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .is_ok()
}

#[tokio::test]
async fn a_day_of_keep_for_deletes_what_the_default_keeps() {
    let t = TestStage::new(DOOR);
    let store = store(&t.db()).await;
    let key = stage_key(&t.stage);
    // Another stage in the same store, with a door of the same name, written after this one's.
    let other = StageKey {
        name: "another".to_string().into(),
        path: "/srv/another/stage.toml".into(),
    };
    performed(store.as_ref(), &key, 30).await;
    performed(store.as_ref(), &other, 30).await;
    let written = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Two days on: older than a day, well within the default 30 days.
    let now = written + 2 * DAY_MS;
    let default = StageRetention {
        stage: key.clone(),
        keep: DoorRetention::default(),
    };
    let gone = sweep_tables(store.as_ref(), now, &default).await.unwrap();
    assert_eq!(gone, 0, "the default keeps performances two days old");
    assert_eq!(counts(store.as_ref(), &key).await, (30, 1));

    let clock = Arc::new(SimClock::new(now));
    let daemon = Daemon::new(
        t.stage.clone(),
        store.clone(),
        Arc::new(Counting::default()),
        clock.clone(),
        None,
    );
    daemon.start().await;
    let text = format!("[doors]\nkeep_for = \"1d\"\nkeep_last = 25\n\n{DOOR}");
    std::fs::write(t.path().join("stage.toml"), text).unwrap();
    let reloaded = Arc::new(Stage::load(&t.path().join("stage.toml")).unwrap());
    let changes = daemon.reload(reloaded).await;
    assert!(
        changes.is_empty(),
        "no door restarts for [doors]: {changes:?}"
    );
    assert!(
        swept_to(store.as_ref(), &key, &clock, 25).await,
        "the daemon never swept by the stage's keep_for: {:?}",
        counts(store.as_ref(), &key).await
    );
    // A few more sweeps: each door's keep_last newest, and a person's, stay.
    for _ in 0..3 {
        clock.advance(Duration::from_secs(600));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counts(store.as_ref(), &key).await, (25, 1));
    assert_eq!(
        counts(store.as_ref(), &other).await,
        (30, 1),
        "another stage's door performances stay"
    );
    daemon.drain().await;
}
