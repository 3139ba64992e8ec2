//! The daemon's periodic sweep keeps the door tables from growing forever: outbox rows confirmed
//! sent long ago and old firings go, while unsent rows and each door's newest firings (the
//! catch-up cursor, the retake window) stay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{Counting, TestStage, store};
use improv_door::expiry::{FIRINGS_KEEP_FOR, FIRINGS_KEPT, OUTBOX_KEEP_FOR};
use improv_door::{Daemon, SimClock};
use improv_store::{Firing, OutboxKey, OutboxMessage, Store};
use std::sync::Arc;
use std::time::Duration;

const DAY_MS: i64 = 24 * 3600 * 1000;

fn message(seq: u64) -> OutboxMessage {
    OutboxMessage {
        key: OutboxKey {
            performance: "p".into(),
            seq,
        },
        door: "chat".into(),
        conversation: "42".into(),
        body: serde_json::json!({ "text": "hi" }),
    }
}

/// Fills the tables as a door would have: 3 outbox rows (2 sent), 50 firings a day apart.
async fn fill(store: &dyn Store, first_due: i64) {
    for seq in 1..=3 {
        store.outbox_put(&message(seq)).await.unwrap();
    }
    for seq in 1..=2 {
        store.outbox_sent(&message(seq).key, "m").await.unwrap();
    }
    for i in 0..50 {
        let firing = Firing {
            door: "nightly".into(),
            due: first_due + i * DAY_MS,
            performance: None,
            note: "fired".into(),
        };
        assert!(store.claim_firing(&firing).await.unwrap());
    }
}

#[tokio::test]
async fn the_daemon_sweeps_sent_outbox_rows_and_old_firings_but_keeps_what_doors_need() {
    let t = TestStage::new("");
    let store = store(&t.db()).await;
    let written = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // The clock stands well past both ages: every firing and every sent row is old.
    let keep = OUTBOX_KEEP_FOR.max(FIRINGS_KEEP_FOR).as_millis() as i64;
    let now = written + keep + 60 * DAY_MS;
    fill(store.as_ref(), written - 100 * DAY_MS).await;
    let clock = Arc::new(SimClock::new(now));
    let daemon = Daemon::new(
        t.stage.clone(),
        store.clone(),
        Arc::new(Counting::default()),
        clock.clone(),
        None,
    );
    daemon.start().await;
    let swept = tokio::time::timeout(Duration::from_secs(30), async {
        while store.firings("nightly", 100).await.unwrap().len() > FIRINGS_KEPT {
            clock.advance(Duration::from_secs(600));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(swept.is_ok(), "the daemon never swept the old firings");
    let kept: Vec<i64> = store
        .firings("nightly", 100)
        .await
        .unwrap()
        .iter()
        .map(|f| f.due)
        .collect();
    let newest = written - 100 * DAY_MS + 49 * DAY_MS;
    assert_eq!(kept.len(), FIRINGS_KEPT, "the retake window stays");
    assert_eq!(kept[0], newest, "the newest firing (the cursor) stays");
    // A sent row is gone: putting its key again stores a new, unsent one.
    let tries = tokio::time::timeout(Duration::from_secs(30), async {
        while store
            .outbox_put(&message(1))
            .await
            .unwrap()
            .sent_id
            .is_some()
        {
            clock.advance(Duration::from_secs(600));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(tries.is_ok(), "the daemon never swept the sent outbox rows");
    let pending: Vec<u64> = store
        .outbox_pending("chat", 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.message.key.seq)
        .collect();
    assert!(pending.contains(&3), "an unsent row stays: {pending:?}");
    daemon.drain().await;
}
