//! A reload waits for a changed door's firing under way, and meanwhile the other doors answer:
//! a webhook delivered during the reload is taken at once (the state lock is not held while a
//! door stops), and the changed door is swapped in once its firing ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Counting, TestStage, store};
use improv_door::webhook::{self, Accepted, Delivery};
use improv_door::{Change, Daemon, SimClock};
use std::sync::Arc;
use std::time::Duration;

const DOORS: &str = "[[door]]\nname = \"hook\"\nwebhook = \"/doors/hook\"\n\
                     secret_env = \"HOOK_SECRET\"\nintent = \"Triage this event.\"\n\n\
                     [[door]]\nname = \"tick\"\nevery = \"1m\"\nintent = \"tick\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_answered_while_a_reload_waits_for_a_firing_under_way() {
    let t = TestStage::new(DOORS);
    let launcher = Arc::new(Counting::default());
    let held = launcher.hold.clone();
    let hold = held.write().await;
    let clock = Arc::new(SimClock::new(1_795_651_200_000));
    let daemon = Daemon::new(
        t.stage.clone(),
        store(&t.db()).await,
        launcher.clone(),
        clock.clone(),
        None,
    );
    daemon.start().await;
    let fired = tokio::time::timeout(Duration::from_secs(30), async {
        while launcher.ids().is_empty() {
            clock.advance(Duration::from_secs(60));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(fired.is_ok(), "the door did not fire");

    // The tick door changes: the reload must wait for its firing, still held.
    let changed = TestStage::new(&DOORS.replace("intent = \"tick\"", "intent = \"tock\""));
    let reloading = tokio::spawn({
        let daemon = daemon.clone();
        let stage = changed.stage.clone();
        async move { daemon.reload(stage).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!reloading.is_finished(), "the reload did not wait for the firing");

    let delivered = tokio::time::timeout(Duration::from_secs(10), async {
        let (ctx, limits) = daemon.open_door("hook").await.expect("the hook door is open");
        let body: &[u8] = br#"{"action":"opened"}"#;
        let signature = webhook::sign(b"s3cret", body);
        let delivery = Delivery {
            body,
            signature: Some(&signature),
            delivery_id: Some("during-the-reload"),
        };
        webhook::deliver(&ctx, &limits, Some("s3cret"), delivery).await
    })
    .await;
    let delivered = delivered.expect("the webhook waited for the reload");
    assert!(matches!(delivered, Ok(Accepted::Started { .. })), "{delivered:?}");
    assert!(!reloading.is_finished(), "the reload is still waiting");

    drop(hold);
    let changes = tokio::time::timeout(Duration::from_secs(30), reloading)
        .await
        .expect("the reload ended once the firing did")
        .unwrap();
    assert_eq!(changes, vec![Change::Changed("tick".into())]);
    let (tick, _) = daemon.open_door("tick").await.unwrap();
    assert_eq!(tick.door.intent.as_deref(), Some("tock"), "the new door is swapped in");
    daemon.drain().await;
}
