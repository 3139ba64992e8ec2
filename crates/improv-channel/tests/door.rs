//! A Telegram channel door run the way `improv serve`'s daemon runs it: the stage file's
//! `[[door]]` parsed by improv-stage, the listener from `improv_channel::door::listeners`, and
//! each message performed by improv-perform on the stage (a scripted model) with the `reply`
//! prop — its answer arrives at the fake once, and the thread's next message resumes it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

mod common;

use common::fake::{Fake, Kind};
use common::store::TestStore;
use improv_door::{DoorContext, PerformLauncher, SystemClock};
use improv_stage::Stage;
use serde_json::json;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "123456:door-test-token";
/// Only this test sets it.
const TOKEN_ENV: &str = "IMPROV_CHANNEL_DOOR_TEST_TOKEN";

const SLACK_TOKEN_ENV: &str = "IMPROV_CHANNEL_DOOR_TEST_SLACK_TOKEN";
const SLACK_SECRET_ENV: &str = "IMPROV_CHANNEL_DOOR_TEST_SLACK_SECRET";

/// Sets the doors' variables once, before either test goes on, so no test changes the
/// environment while another reads it.
fn set_env() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: every test of this binary calls this first, and the Once makes the others wait
    // until it is done; nothing reads the environment concurrently with these writes.
    ONCE.call_once(|| unsafe {
        std::env::set_var(TOKEN_ENV, TOKEN);
        std::env::set_var(SLACK_TOKEN_ENV, TOKEN);
        std::env::set_var(SLACK_SECRET_ENV, "signing-secret");
    });
}

fn update(id: i64, text: &str) -> serde_json::Value {
    json!({
        "update_id": id,
        "message": {
            "message_id": id * 10, "date": 1764400000, "text": text,
            "chat": { "id": 42, "type": "private" },
            "from": { "id": 1001, "is_bot": false, "first_name": "Alice", "username": "alice" }
        }
    })
}

/// A Slack door: its listener registers the door's endpoint, which `improv serve` hands
/// `POST /doors/NAME`; a signed event is performed and answered in its thread; a forged one is
/// refused; once the listener stops, the endpoint is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_door_answers_signed_events_through_its_endpoint() {
    set_env();
    let fake = Fake::start(Kind::Slack, TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let script = json!([
        { "calls": [{ "name": "reply", "arguments": { "text": "Deployed." } }] },
        { "say": "done" },
    ]);
    std::fs::write(dir.path().join("script.json"), script.to_string()).unwrap();
    let stage_file = dir.path().join("stage.toml");
    std::fs::write(
        &stage_file,
        format!(
            r#"[stage]
name = "team"
intent = "Answer the team."

[[actor]]
name = "lead"
role = "You answer chat messages."
model = "scripted/script.json"
props = []

[edges]
sandbox = "off"

[[door]]
name = "team"
channel = "slack"
token_env = "{SLACK_TOKEN_ENV}"
secret_env = "{SLACK_SECRET_ENV}"
allow = ["U0ALICE"]
api_base = "{}"
"#,
            fake.base
        ),
    )
    .unwrap();
    let stage = Arc::new(Stage::load(&stage_file).unwrap());
    let door = Arc::new(stage.doors[0].clone());
    let listener = (improv_channel::door::listeners())(&door).unwrap();
    let ctx = DoorContext {
        stage: stage.clone(),
        stage_key: improv_door::expiry::stage_key(&stage),
        door,
        store: Arc::new(TestStore::default()),
        launcher: Arc::new(PerformLauncher),
        clock: Arc::new(SystemClock),
    };
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let cancel = cancel.clone();
        async move { listener.run(ctx, cancel).await }
    });
    let endpoint = loop {
        if let Some(e) = improv_channel::door::endpoint("team") {
            break e;
        }
        tokio::task::yield_now().await;
    };
    let body = json!({
        "type": "event_callback", "event_id": "Ev9", "team_id": "T1",
        "event": { "type": "message", "channel": "C9", "user": "U0ALICE", "text": "deploy", "ts": "1764400100.000200" }
    })
    .to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let headers = |secret: &[u8]| {
        let mut h = http::HeaderMap::new();
        h.insert(
            "X-Slack-Request-Timestamp",
            now.to_string().parse().unwrap(),
        );
        h.insert(
            "X-Slack-Signature",
            improv_channel::slack::sign(secret, now, body.as_bytes())
                .parse()
                .unwrap(),
        );
        h
    };
    let forged = endpoint.answer(&headers(b"guessed"), body.as_bytes()).await;
    assert_eq!(forged.status, 401);
    let answer = endpoint
        .answer(&headers(b"signing-secret"), body.as_bytes())
        .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let sent = fake.wait_sent(1).await;
    assert_eq!(
        (
            sent[0].conversation.as_str(),
            sent[0].text.as_str(),
            sent[0].reply_to.as_deref()
        ),
        ("C9", "Deployed.", Some("1764400100.000200"))
    );
    cancel.cancel();
    running.await.unwrap().unwrap();
    assert!(improv_channel::door::endpoint("team").is_none());
    assert_eq!(fake.sent().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telegram_door_performs_the_stage_and_replies_once_per_message() {
    set_env();
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let script = json!([
        { "calls": [{ "name": "reply", "arguments": { "text": "Hello from the stage." } }] },
        { "say": "done" },
    ]);
    std::fs::write(dir.path().join("script.json"), script.to_string()).unwrap();
    let stage_file = dir.path().join("stage.toml");
    std::fs::write(
        &stage_file,
        format!(
            r#"[stage]
name = "chat"
intent = "Answer messages."

[[actor]]
name = "lead"
role = "You answer chat messages."
model = "scripted/script.json"
props = []

[edges]
sandbox = "off"

[[door]]
name = "chat"
channel = "telegram"
token_env = "{TOKEN_ENV}"
allow = ["@alice"]
api_base = "{}"
"#,
            fake.base
        ),
    )
    .unwrap();
    let stage = Arc::new(Stage::load(&stage_file).unwrap());
    let door = Arc::new(
        stage
            .doors
            .iter()
            .find(|d| d.name == "chat")
            .unwrap()
            .clone(),
    );
    let listener =
        (improv_channel::door::listeners())(&door).expect("a listener for a telegram door");
    let store = Arc::new(TestStore::default());
    let ctx = DoorContext {
        stage: stage.clone(),
        stage_key: improv_door::expiry::stage_key(&stage),
        door,
        store: store.clone(),
        launcher: Arc::new(PerformLauncher),
        clock: Arc::new(SystemClock),
    };
    let cancel = CancellationToken::new();
    let running = tokio::spawn({
        let cancel = cancel.clone();
        async move { listener.run(ctx, cancel).await }
    });
    fake.push_update(update(900, "hello?"));
    let sent = fake.wait_sent(1).await;
    assert_eq!(
        (
            sent[0].conversation.as_str(),
            sent[0].text.as_str(),
            sent[0].reply_to.as_deref()
        ),
        ("42", "Hello from the stage.", Some("9000"))
    );
    fake.push_update(update(901, "and again?"));
    let sent = fake.wait_sent(2).await;
    cancel.cancel();
    running.await.unwrap().unwrap();
    assert_eq!(sent.len(), 2, "{sent:?}");
    let entries = store.entries().await;
    assert_eq!(entries.len(), 2);
    // The thread's second message continued the first performance (same id, a later seq).
    assert_eq!(
        entries[0].message.key.performance,
        entries[1].message.key.performance
    );
    assert!(entries[1].message.key.seq > entries[0].message.key.seq);
    assert!(entries.iter().all(|e| e.sent_id.is_some()));
}

/// The store of a PostgreSQL server restarting: reading the Telegram offset fails.
struct OffsetUnavailable(TestStore);

#[async_trait::async_trait]
impl improv_store::StoreLayer for OffsetUnavailable {
    fn inner(&self) -> &dyn improv_store::Store {
        &self.0
    }
    async fn get(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<serde_json::Value>, improv_store::StoreError> {
        if scope == "telegram.offset" {
            return Err(improv_store::StoreError::Unavailable {
                store: "test".into(),
                message: "the server is restarting".into(),
            });
        }
        improv_store::Store::get(&self.0, scope, key).await
    }
}

/// A listener that ends with an error leaves the daemon's token alone: the daemon's restart
/// loop watches that token, and a cancelled one would keep the door shut until the process
/// restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_fails_does_not_cancel_the_token_the_daemon_restarts_it_by() {
    set_env();
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let stage_file = dir.path().join("stage.toml");
    std::fs::write(
        &stage_file,
        format!(
            r#"[stage]
name = "chat"
intent = "Answer messages."

[[actor]]
name = "lead"
role = "You answer chat messages."
model = "scripted/script.json"
props = []

[[door]]
name = "chat"
channel = "telegram"
token_env = "{TOKEN_ENV}"
allow = ["@alice"]
api_base = "{}"
"#,
            fake.base
        ),
    )
    .unwrap();
    let stage = Arc::new(Stage::load(&stage_file).unwrap());
    let door = Arc::new(stage.doors[0].clone());
    let listener = (improv_channel::door::listeners())(&door).unwrap();
    let ctx = DoorContext {
        stage: stage.clone(),
        stage_key: improv_door::expiry::stage_key(&stage),
        door,
        store: Arc::new(OffsetUnavailable(TestStore::default())),
        launcher: Arc::new(PerformLauncher),
        clock: Arc::new(SystemClock),
    };
    let daemons = CancellationToken::new();
    let ended = listener.run(ctx, daemons.clone()).await;
    assert!(ended.is_err(), "the listener fails: {ended:?}");
    assert!(
        !daemons.is_cancelled(),
        "the daemon's token is left alone, so the door is started again"
    );
}
