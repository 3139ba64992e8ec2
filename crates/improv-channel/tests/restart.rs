//! A message accepted but not yet performed when the process dies is performed after the
//! restart, once: the door's first process claims a Telegram message and dies before its
//! performance starts (the injected failure point: the write that marks the claim started
//! fails, as a kill there would leave it); the restarted door, on the same store file
//! reopened, retakes it, performs it and replies once; retaking again, or the platform
//! delivering the message again, performs nothing more. The same through the door's listener as
//! `improv serve` runs it: up for the grace, it performs the claim left behind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

mod common;

use async_trait::async_trait;
use common::KernelPerformer;
use common::fake::{Fake, Kind};
use common::store::TestStore;
use improv_channel::conversation::{ChatDoor, Handled};
use improv_channel::gate::{Gate, Limits};
use improv_channel::outbox::{Outbox, Retry};
use improv_channel::telegram::Telegram;
use improv_channel::{Channel, Inbound};
use improv_kernel::ScriptedTurn;
use improv_store::{Store, StoreError, StoreLayer};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

const TOKEN: &str = "123456:test-token";

/// The store of a process that dies as its first claim would be marked started: that write
/// and every one after it fail.
struct DiesBeforeStart {
    inner: TestStore,
    dead: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl StoreLayer for DiesBeforeStart {
    fn inner(&self) -> &dyn Store {
        &self.inner
    }
    async fn put(
        &self,
        scope: &str,
        key: &str,
        value: &serde_json::Value,
        only_if_absent: bool,
    ) -> Result<bool, StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        if value["state"] == "started" {
            self.dead.store(true, SeqCst);
        }
        if self.dead.load(SeqCst) {
            return Err(StoreError::Unavailable {
                store: "test".into(),
                message: "the process died here".into(),
            });
        }
        Store::put(&self.inner, scope, key, value, only_if_absent).await
    }
    async fn put_if(
        &self,
        scope: &str,
        key: &str,
        expected: Option<i64>,
        value: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        use std::sync::atomic::Ordering::SeqCst;
        if value["state"] == "started" {
            self.dead.store(true, SeqCst);
        }
        if self.dead.load(SeqCst) {
            return Err(StoreError::Unavailable {
                store: "test".into(),
                message: "the process died here".into(),
            });
        }
        Store::put_if(&self.inner, scope, key, expected, value).await
    }
}

fn door(fake: &Fake, store: Arc<dyn Store>, performer: Arc<KernelPerformer>) -> ChatDoor {
    let client = Arc::new(Telegram::new(TOKEN, Some(&fake.base)).unwrap());
    ChatDoor {
        door: "chat".into(),
        store: store.clone(),
        gate: Gate::new(
            common::stage(),
            "chat",
            &["@alice".into()],
            store.clone(),
            Limits::default(),
        ),
        outbox: Arc::new(Outbox::new(
            store,
            common::stage(),
            "chat",
            client,
            Retry::default(),
        )),
        performer,
    }
}

fn message() -> Inbound {
    Inbound {
        platform: Channel::Telegram,
        conversation: "42".into(),
        thread: None,
        message_id: "7".into(),
        sender_id: "1001".into(),
        sender_name: Some("@alice".into()),
        text: "deploy, please".into(),
    }
}

fn replies(text: &str) -> Vec<ScriptedTurn> {
    vec![
        ScriptedTurn::call("reply", json!({ "text": text })),
        ScriptedTurn::say("done"),
    ]
}

#[tokio::test]
async fn a_message_claimed_by_a_process_that_died_before_performing_it_is_performed_once_after_restart()
 {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let file = TestStore::default();
    let first = Arc::new(DiesBeforeStart {
        inner: file.reopen(),
        dead: Default::default(),
    });
    let dead_performer = Arc::new(KernelPerformer::new(Vec::new()));
    let dying = door(&fake, first, dead_performer.clone());
    assert!(
        dying.handle(&message()).await.is_err(),
        "the first process dies between claim and start"
    );
    assert_eq!(dead_performer.count(), 0);

    // The restart: the same store file, a new door.
    let performer = Arc::new(KernelPerformer::new(vec![replies("Deploying now.")]));
    let restarted = door(&fake, Arc::new(file.reopen()), performer.clone());
    let retaken = restarted.retake(Duration::ZERO).await.unwrap();
    assert!(
        matches!(retaken.as_slice(), [Handled::Performed(_)]),
        "{retaken:?}"
    );
    let sent = fake.wait_sent(1).await;
    assert_eq!(sent[0].text, "Deploying now.");

    // Once: another retake (a second restart) and a redelivery perform nothing.
    assert_eq!(restarted.retake(Duration::ZERO).await.unwrap(), Vec::new());
    assert_eq!(
        restarted.handle(&message()).await.unwrap(),
        Handled::Duplicate
    );
    let again = door(&fake, Arc::new(file.reopen()), performer.clone());
    assert_eq!(again.retake(Duration::ZERO).await.unwrap(), Vec::new());
    assert_eq!(performer.count(), 1, "performed exactly once");
    assert_eq!(fake.sent().len(), 1, "one reply in all");
}

/// A claim younger than the grace is not retaken (its process may still be starting it).
#[tokio::test]
async fn a_young_claim_is_left_to_its_process() {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let file = TestStore::default();
    let first = Arc::new(DiesBeforeStart {
        inner: file.reopen(),
        dead: Default::default(),
    });
    let dying = door(&fake, first, Arc::new(KernelPerformer::new(Vec::new())));
    assert!(dying.handle(&message()).await.is_err());
    let performer = Arc::new(KernelPerformer::new(vec![replies("later")]));
    let restarted = door(&fake, Arc::new(file.reopen()), performer.clone());
    let retaken = restarted.retake(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(retaken, Vec::new());
    assert_eq!(performer.count(), 0);
}

/// The door as `improv serve`'s daemon runs it (the stage file's `[[door]]`, the listener from
/// `improv_channel::door::listeners`, the stage performing with a scripted model): once up for
/// the grace, the restarted listener performs the message the dead process had claimed, and
/// replies once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_restarted_listener_performs_the_claim_left_by_a_dead_process() {
    const TOKEN_ENV: &str = "IMPROV_CHANNEL_RESTART_TEST_TOKEN";
    // SAFETY: the one test of this binary that reads the environment, set before anything
    // reads it.
    unsafe { std::env::set_var(TOKEN_ENV, TOKEN) };
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let script = json!([
        { "calls": [{ "name": "reply", "arguments": { "text": "Retaken and done." } }] },
        { "say": "done" },
    ]);
    std::fs::write(dir.path().join("script.json"), script.to_string()).unwrap();
    let stage_file = dir.path().join("stage.toml");
    std::fs::write(
        &stage_file,
        format!(
            "[stage]\nname = \"shop\"\nintent = \"Answer messages.\"\n\n[[actor]]\nname = \"lead\"\n\
             model = \"scripted/script.json\"\nprops = []\n\n[edges]\nsandbox = \"off\"\n\n\
             [[door]]\nname = \"chat\"\nchannel = \"telegram\"\ntoken_env = \"{TOKEN_ENV}\"\n\
             allow = [\"@alice\"]\napi_base = \"{}\"\n",
            fake.base
        ),
    )
    .unwrap();
    let stage = Arc::new(improv_stage::Stage::load(&stage_file).unwrap());
    let door_def = Arc::new(stage.doors[0].clone());

    let file = TestStore::default();
    let first = Arc::new(DiesBeforeStart {
        inner: file.reopen(),
        dead: Default::default(),
    });
    let dying = door(&fake, first, Arc::new(KernelPerformer::new(Vec::new())));
    assert!(dying.handle(&message()).await.is_err());

    let listener = (improv_channel::door::listeners())(&door_def).unwrap();
    let ctx = improv_door::DoorContext {
        stage: stage.clone(),
        stage_key: improv_door::expiry::stage_key(&stage),
        door: door_def,
        store: Arc::new(file.reopen()),
        launcher: Arc::new(improv_door::PerformLauncher),
        clock: Arc::new(improv_door::SystemClock),
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn({
        let cancel = cancel.clone();
        async move { listener.run(ctx, cancel).await }
    });
    let start = std::time::Instant::now();
    while fake.sent().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the claimed message was never performed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cancel.cancel();
    running.await.unwrap().unwrap();
    let sent = fake.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].text, "Retaken and done.");
    assert_eq!(sent[0].reply_to.as_deref(), Some("7"));
}

/// Two servers restarting together on one store both find the same pending claim: it is
/// performed once, by whichever retakes it first.
#[tokio::test]
async fn two_processes_retaking_together_perform_a_pending_message_once() {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let file = TestStore::default();
    let first = Arc::new(DiesBeforeStart {
        inner: file.reopen(),
        dead: Default::default(),
    });
    let dying = door(&fake, first, Arc::new(KernelPerformer::new(Vec::new())));
    assert!(dying.handle(&message()).await.is_err());

    let one = Arc::new(KernelPerformer::new(vec![replies("From one.")]));
    let two = Arc::new(KernelPerformer::new(vec![replies("From two.")]));
    let a = door(&fake, Arc::new(file.reopen()), one.clone());
    let b = door(&fake, Arc::new(file.reopen()), two.clone());
    let (ra, rb) = tokio::join!(a.retake(Duration::ZERO), b.retake(Duration::ZERO));
    ra.unwrap();
    rb.unwrap();
    assert_eq!(one.count() + two.count(), 1, "performed by both processes");
}
