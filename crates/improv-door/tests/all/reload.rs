//! A reload waits for a changed door's firing under way, and meanwhile the other doors answer:
//! a webhook delivered during the reload is taken at once (the state lock is not held while a
//! door stops), and the changed door is swapped in once its firing ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{Counting, TestStage, store};
use async_trait::async_trait;
use improv_door::webhook::{self, Accepted, Delivery};
use improv_door::{Change, Daemon, DoorContext, DoorError, Listener, Listeners, SimClock};
use improv_stage::{Door, DoorKind, Stage};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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
    assert!(
        !reloading.is_finished(),
        "the reload did not wait for the firing"
    );

    let delivered = tokio::time::timeout(Duration::from_secs(10), async {
        let (ctx, limits) = daemon
            .open_door("hook")
            .await
            .expect("the hook door is open");
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
    assert!(
        matches!(delivered, Ok(Accepted::Started { .. })),
        "{delivered:?}"
    );
    assert!(!reloading.is_finished(), "the reload is still waiting");

    drop(hold);
    let changes = tokio::time::timeout(Duration::from_secs(30), reloading)
        .await
        .expect("the reload ended once the firing did")
        .unwrap();
    assert_eq!(changes, vec![Change::Changed("tick".into())]);
    let (tick, _) = daemon.open_door("tick").await.unwrap();
    assert_eq!(
        tick.door.intent.as_deref(),
        Some("tock"),
        "the new door is swapped in"
    );
    daemon.drain().await;
}

/// A listener that counts its starts, and itself live until its door is cancelled.
#[derive(Default)]
struct Chats {
    live: AtomicUsize,
    starts: AtomicUsize,
    /// Held (written) by a test, it keeps a cancelled listener from ending.
    linger: tokio::sync::RwLock<()>,
}

struct Live(Arc<Chats>);

#[async_trait]
impl Listener for Live {
    async fn run(&self, _: DoorContext, cancel: CancellationToken) -> Result<(), DoorError> {
        self.0.starts.fetch_add(1, Ordering::SeqCst);
        self.0.live.fetch_add(1, Ordering::SeqCst);
        cancel.cancelled().await;
        let _ending = self.0.linger.read().await;
        self.0.live.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

const CHAT: &str = "\n[[door]]\nname = \"chat\"\nchannel = \"discord\"\ntoken_env = \"T\"\n\
                    secret_env = \"S\"\nallow = [\"1\"]\n";

/// A daemon on `t` whose chat doors count themselves in `live`, with the tick door's first
/// firing under way and held (while `hold` is).
async fn held_daemon(
    t: &TestStage,
    live: &Arc<Chats>,
) -> (Arc<Daemon>, Arc<Counting>, Arc<SimClock>) {
    let launcher = Arc::new(Counting::default());
    let clock = Arc::new(SimClock::new(1_795_651_200_000));
    let l2 = live.clone();
    let listeners: Listeners =
        Arc::new(move |_: &Door| Some(Arc::new(Live(l2.clone())) as Arc<dyn Listener>));
    let daemon = Daemon::new(
        t.stage.clone(),
        store(&t.db()).await,
        launcher.clone(),
        clock.clone(),
        Some(listeners),
    );
    (daemon, launcher, clock)
}

async fn fire(daemon: &Daemon, launcher: &Counting, clock: &SimClock) {
    daemon.start().await;
    tokio::time::timeout(Duration::from_secs(30), async {
        while launcher.ids().is_empty() {
            clock.advance(Duration::from_secs(60));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the tick door fired");
}

/// The same stage file rewritten with `text` and loaded again (same folder: same stage).
fn rewritten(t: &TestStage, text: &str) -> Arc<Stage> {
    let path = t.path().join("stage.toml");
    std::fs::write(&path, text).unwrap();
    Arc::new(Stage::load(&path).unwrap())
}

/// SIGTERM during a SIGHUP: the reload's restarted doors must not open after the drain was
/// asked (a Telegram door would poll and take messages from a stopping server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_asked_during_a_reload_opens_no_new_door() {
    // The old `zchat` listener lingers after its cancel until the drain was asked, so the
    // reload would restart it after that.
    let zchat = CHAT.replace("\"chat\"", "\"zchat\"");
    let t = TestStage::new(&format!("{DOORS}{zchat}"));
    let live = Arc::new(Chats::default());
    let (daemon, launcher, clock) = held_daemon(&t, &live).await;
    let held = launcher.hold.clone();
    let hold = held.write().await;
    fire(&daemon, &launcher, &clock).await;
    let linger = live.linger.write().await;
    // A stage-wide change restarts every door.
    let next = rewritten(&t, &format!("[stage]\nintent = \"other\"\n{DOORS}{zchat}"));
    let reloading = tokio::spawn({
        let d = daemon.clone();
        async move { d.reload(next).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let draining = tokio::spawn({
        let d = daemon.clone();
        async move { d.drain().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let asked = live.starts.load(Ordering::SeqCst);
    assert_eq!(asked, 1);
    drop(linger);
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(hold);
    reloading.await.unwrap();
    draining.await.unwrap();
    assert_eq!(
        live.live.load(Ordering::SeqCst),
        0,
        "a door is open after the drain"
    );
    assert_eq!(
        live.starts.load(Ordering::SeqCst),
        asked,
        "a door opened after the drain was asked"
    );
    assert!(
        daemon.open_door("tick").await.is_none(),
        "the new tick door opened"
    );
    let again = rewritten(&t, DOORS);
    assert!(
        daemon.reload(again).await.is_empty(),
        "a reload after the drain"
    );
}

/// A reload waiting for one door's firing leaves the doors that did not change up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_door_stays_up_while_a_reload_waits_for_another_doors_firing() {
    let t = TestStage::new(&format!("{DOORS}{CHAT}"));
    let live = Arc::new(Chats::default());
    let (daemon, launcher, clock) = held_daemon(&t, &live).await;
    let held = launcher.hold.clone();
    let hold = held.write().await;
    fire(&daemon, &launcher, &clock).await;
    assert_eq!(live.live.load(Ordering::SeqCst), 1);
    let next = rewritten(
        &t,
        &format!(
            "{}{CHAT}",
            DOORS.replace("intent = \"tick\"", "intent = \"tock\"")
        ),
    );
    let reloading = tokio::spawn({
        let d = daemon.clone();
        async move { d.reload(next).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !reloading.is_finished(),
        "the reload did not wait for the firing"
    );
    let during = live.live.load(Ordering::SeqCst);
    drop(hold);
    let changes = reloading.await.unwrap();
    assert_eq!(changes, vec![Change::Changed("tick".into())]);
    assert_eq!(
        during, 1,
        "the unchanged chat door was down during the reload"
    );
    assert_eq!(
        live.starts.load(Ordering::SeqCst),
        1,
        "the unchanged chat door was restarted"
    );
    daemon.drain().await;
}

/// A chat door that changed is back up as soon as its own listener stopped, not after another
/// door's firing that the reload also waits for (review of 0bd616b: the reload joined the
/// stopping doors in turn, in name order, so `zchat` waited for `tick`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_chat_door_is_back_up_while_a_reload_waits_for_another_doors_firing() {
    let chat = CHAT.replace("\"chat\"", "\"zchat\"");
    let t = TestStage::new(&format!("{DOORS}{chat}"));
    let live = Arc::new(Chats::default());
    let (daemon, launcher, clock) = held_daemon(&t, &live).await;
    let held = launcher.hold.clone();
    let hold = held.write().await;
    fire(&daemon, &launcher, &clock).await;
    let text = format!("{DOORS}{chat}")
        .replace("intent = \"tick\"", "intent = \"tock\"")
        .replace("allow = [\"1\"]", "allow = [\"1\", \"2\"]");
    let reloading = tokio::spawn({
        let d = daemon.clone();
        let next = rewritten(&t, &text);
        async move { d.reload(next).await }
    });
    let mut back = false;
    for _ in 0..100 {
        if live.starts.load(Ordering::SeqCst) == 2 && live.live.load(Ordering::SeqCst) == 1 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !reloading.is_finished(),
        "the reload did not wait for the firing"
    );
    assert!(
        back,
        "the changed chat door stayed down while tick's firing was held"
    );
    drop(hold);
    reloading.await.unwrap();
    daemon.drain().await;
}

/// A webhook door whose secret changes by reload stops taking the old secret at once, not
/// after the reload's wait for another door's firing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_webhook_secret_is_refused_while_a_reload_waits() {
    // `zhook` sorts after `tick`: a swap after each join would come after tick's firing.
    let doors = DOORS.replace("hook\"", "zhook\"");
    let t = TestStage::new(&doors);
    let live = Arc::new(Chats::default());
    let (daemon, launcher, clock) = held_daemon(&t, &live).await;
    let held = launcher.hold.clone();
    let hold = held.write().await;
    fire(&daemon, &launcher, &clock).await;
    let text = doors
        .replace("intent = \"tick\"", "intent = \"tock\"")
        .replace("HOOK_SECRET", "HOOK_SECRET_NEW");
    let reloading = tokio::spawn({
        let d = daemon.clone();
        let next = rewritten(&t, &text);
        async move { d.reload(next).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !reloading.is_finished(),
        "the reload did not wait for the firing"
    );
    // What the server does: the secret is the one the door's `secret_env` names.
    let (ctx, limits) = daemon
        .open_door("zhook")
        .await
        .expect("the hook door is open");
    let secret = match &ctx.door.kind {
        DoorKind::Webhook { secret_env } if secret_env == "HOOK_SECRET" => "old",
        _ => "new",
    };
    let body: &[u8] = br#"{"action":"opened"}"#;
    let signature = webhook::sign(b"old", body);
    let delivery = Delivery {
        body,
        signature: Some(&signature),
        delivery_id: Some("old-secret"),
    };
    let r = webhook::deliver(&ctx, &limits, Some(secret), delivery).await;
    assert!(
        r.is_err(),
        "the old secret was taken during the reload: {r:?}"
    );
    drop(hold);
    reloading.await.unwrap();
    daemon.drain().await;
}
