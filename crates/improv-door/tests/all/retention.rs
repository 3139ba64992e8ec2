//! The daemon's periodic sweep keeps the door tables from growing forever: outbox rows confirmed
//! sent long ago, old firings and old finished door-made performances go, while unsent rows,
//! each door's newest firings (the catch-up cursor, the retake window) and performances, and
//! every performance a person started stay.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{Counting, TestStage, store};
use improv_door::expiry::{
    FIRINGS_KEEP_FOR, FIRINGS_KEPT, OUTBOX_KEEP_FOR, PERFORMANCES_KEEP_FOR, PERFORMANCES_KEPT,
    stage_key,
};
use improv_door::{Daemon, SimClock};
use improv_store::{Firing, ListFilter, NewPerformance, OutboxKey, OutboxMessage, StageKey, Store};
use std::sync::Arc;
use std::time::Duration;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// The stage whose door's outbox rows [`message`] makes.
const OUTBOX_STAGE: StageKey = StageKey {
    name: None,
    path: String::new(),
};

fn message(seq: u64) -> OutboxMessage {
    OutboxMessage {
        key: OutboxKey {
            performance: "p".into(),
            seq,
        },
        stage: OUTBOX_STAGE.id(),
        door: "chat".into(),
        conversation: "42".into(),
        body: serde_json::json!({ "text": "hi" }),
    }
}

/// Finished performances of stage `key`: `n` started by door `nightly`, then one by a person
/// (`cli`).
async fn performed(store: &dyn Store, key: &StageKey, n: usize) {
    let origins = std::iter::repeat_n("door:nightly", n).chain(["cli"]);
    for origin in origins {
        store
            .enqueue(&NewPerformance {
                id: None,
                stage: key.path.clone(),
                stage_name: key.name.clone(),
                intent: "summarise".into(),
                model: None,
                origin: origin.into(),
                budget: None,
            })
            .await
            .unwrap();
        let (lease, _) = store
            .claim("w", Duration::from_secs(60))
            .await
            .unwrap()
            .unwrap();
        let done = improv_kernel::Outcome::Done;
        store.finish(&lease, done, "").await.unwrap();
    }
}

/// How many performances each origin has, as `(origin, count)` sorted by origin.
async fn origins(store: &dyn Store) -> Vec<(String, usize)> {
    let filter = ListFilter {
        limit: 1000,
        ..ListFilter::default()
    };
    let mut counts = std::collections::BTreeMap::new();
    for p in store.list(&filter).await.unwrap() {
        *counts.entry(p.origin).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}

/// Fills the tables as a door would have: 3 outbox rows (2 sent), 50 firings of `stage` a day
/// apart.
async fn fill(store: &dyn Store, stage: &StageKey, first_due: i64) {
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
        assert!(store.claim_firing(stage, &firing).await.unwrap());
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
    let keep = OUTBOX_KEEP_FOR
        .max(FIRINGS_KEEP_FOR)
        .max(PERFORMANCES_KEEP_FOR);
    let now = written + keep.as_millis() as i64 + 60 * DAY_MS;
    fill(store.as_ref(), &stage_key(&t.stage), written - 100 * DAY_MS).await;
    performed(store.as_ref(), &stage_key(&t.stage), PERFORMANCES_KEPT + 5).await;
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
        while store
            .firings(&stage_key(&t.stage), "nightly", 100)
            .await
            .unwrap()
            .len()
            > FIRINGS_KEPT
        {
            clock.advance(Duration::from_secs(600));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(swept.is_ok(), "the daemon never swept the old firings");
    let kept: Vec<i64> = store
        .firings(&stage_key(&t.stage), "nightly", 100)
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
        .outbox_pending(&OUTBOX_STAGE, "chat", 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.message.key.seq)
        .collect();
    assert!(pending.contains(&3), "an unsent row stays: {pending:?}");
    let swept = tokio::time::timeout(Duration::from_secs(30), async {
        while origins(store.as_ref()).await[1].1 > PERFORMANCES_KEPT {
            clock.advance(Duration::from_secs(600));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        swept.is_ok(),
        "the daemon never swept the old door performances"
    );
    let kept = vec![
        ("cli".to_string(), 1),
        ("door:nightly".to_string(), PERFORMANCES_KEPT),
    ];
    assert_eq!(
        origins(store.as_ref()).await,
        kept,
        "each door's newest and a person's stay"
    );
    daemon.drain().await;
}
