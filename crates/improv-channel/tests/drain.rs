//! A Discord door whose listener has ended while the server drains (SIGTERM; another door's
//! firing keeps the server accepting): its endpoint stays registered, so a command that comes
//! then is answered "deferred" and kept, and the next server answers it once through its
//! token. It was removed, so the command got 401 and was lost (Discord never resends).
//!
//! Its own test binary: [`improv_channel::door::drain_begins`] marks the whole process as
//! draining, which other tests' endpoints must not see.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

mod common;

use common::fake::{Fake, Kind};
use common::store::TestStore;
use ed25519_dalek::{Signer, SigningKey};
use http::{HeaderMap, HeaderValue};
use improv_door::{DoorContext, PerformLauncher, SystemClock};
use improv_stage::Stage;
use improv_store::Store;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "discord-drain-bot-token";
/// Only this test sets them.
const TOKEN_ENV: &str = "IMPROV_CHANNEL_DRAIN_TEST_TOKEN";
const KEY_ENV: &str = "IMPROV_CHANNEL_DRAIN_TEST_KEY";
const APP: &str = "1160000000000000002";

fn signed(key: &SigningKey, ts: i64, body: &[u8]) -> HeaderMap {
    let mut message = ts.to_string().into_bytes();
    message.extend_from_slice(body);
    let mut h = HeaderMap::new();
    h.insert(
        "X-Signature-Timestamp",
        HeaderValue::from_str(&ts.to_string()).unwrap(),
    );
    let signature = hex::encode(key.sign(&message).to_bytes());
    h.insert(
        "X-Signature-Ed25519",
        HeaderValue::from_str(&signature).unwrap(),
    );
    h
}

/// The door's listener as the daemon runs it, on `store`.
fn listen(
    stage: &Arc<Stage>,
    store: Arc<dyn Store>,
) -> (
    JoinHandle<Result<(), improv_door::DoorError>>,
    CancellationToken,
) {
    let door = Arc::new(stage.doors[0].clone());
    let listener = (improv_channel::door::listeners())(&door).unwrap();
    let ctx = DoorContext {
        stage: stage.clone(),
        stage_key: improv_door::expiry::stage_key(stage),
        door,
        store,
        launcher: Arc::new(PerformLauncher),
        clock: Arc::new(SystemClock),
    };
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let cancel = cancel.clone();
        async move { listener.run(ctx, cancel).await }
    });
    (running, cancel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discord_command_arriving_after_its_door_drained_is_answered_once_by_the_next_server() {
    let app = SigningKey::from_bytes(&[9u8; 32]);
    // SAFETY: the only test of this binary, before anything reads the environment.
    unsafe {
        std::env::set_var(TOKEN_ENV, TOKEN);
        std::env::set_var(KEY_ENV, hex::encode(app.verifying_key().to_bytes()));
    }
    let fake = Fake::start(Kind::Discord, TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let script = json!([
        { "calls": [{ "name": "reply", "arguments": { "text": "All green." } }] },
        { "say": "done" },
    ]);
    std::fs::write(dir.path().join("script.json"), script.to_string()).unwrap();
    let stage_file = dir.path().join("stage.toml");
    std::fs::write(
        &stage_file,
        format!(
            "[stage]\nname = \"desk\"\nintent = \"Answer the team.\"\n\n[[actor]]\nname = \"lead\"\n\
             role = \"You answer chat messages.\"\nmodel = \"scripted/script.json\"\nprops = []\n\n\
             [edges]\nsandbox = \"off\"\n\n[[door]]\nname = \"desk\"\nchannel = \"discord\"\n\
             token_env = \"{TOKEN_ENV}\"\nsecret_env = \"{KEY_ENV}\"\nallow = [\"2001\"]\n\
             api_base = \"{}\"\n",
            fake.base
        ),
    )
    .unwrap();
    let stage = Arc::new(Stage::load(&stage_file).unwrap());
    let file = TestStore::default();

    // The draining server: its door's listener ends (nothing under way), the server goes on
    // accepting while another door drains.
    let (running, cancel) = listen(&stage, Arc::new(file.reopen()));
    while improv_channel::door::endpoint("desk").is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    improv_channel::door::drain_begins();
    cancel.cancel();
    running.await.unwrap().unwrap();

    let body = json!({
        "id": "1400000000000000050", "application_id": APP, "type": 2,
        "token": "interaction-token-50", "version": 1, "channel_id": "900",
        "member": { "user": { "id": "2001", "username": "alice" } },
        "data": { "id": "3", "name": "ask", "options": [{ "name": "text", "type": 3, "value": "status?" }] }
    })
    .to_string();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let endpoint = improv_channel::door::endpoint("desk")
        .expect("the drained door's endpoint still answers while the server accepts");
    let answer = endpoint
        .answer(&signed(&app, now, body.as_bytes()), body.as_bytes())
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let answer: Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(answer["type"], 5, "deferred: {answer}");
    assert!(fake.sent().is_empty());

    // The next server on the same store: its listener retakes the command.
    let (running, cancel) = listen(&stage, Arc::new(file.reopen()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while fake.sent().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the next server never answered the deferred command"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cancel.cancel();
    running.await.unwrap().unwrap();
    let sent = fake.sent();
    assert_eq!(sent.len(), 1, "answered once: {sent:?}");
    assert_eq!(
        sent[0].conversation,
        format!("webhooks/{APP}/interaction-token-50/messages/@original")
    );
    assert_eq!(sent[0].text, "All green.");
}
