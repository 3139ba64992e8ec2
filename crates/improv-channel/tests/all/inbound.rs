//! Messages coming in: Slack's request signing and replay window, Discord's Ed25519 signature
//! and PING, Telegram's long polling with offsets — through the real handlers and clients.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use crate::common::KernelPerformer;
use crate::common::fake::{Fake, Kind};
use crate::common::store::TestStore;
use ed25519_dalek::{Signer, SigningKey};
use http::{HeaderMap, HeaderValue};
use improv_channel::conversation::ChatDoor;
use improv_channel::discord::{Discord, PublicKey};
use improv_channel::gate::{Gate, Limits};
use improv_channel::listen::{self, Intake};
use improv_channel::outbox::{Outbox, Retry};
use improv_channel::slack::{self, Slack};
use improv_channel::telegram::Telegram;
use improv_channel::{Sender, SignatureError};
use improv_kernel::ScriptedTurn;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "123456:test-token";
const NOW: i64 = 1_764_400_000;
const SECRET: &[u8] = b"8f742231b10e8888abcd99yyyzzz85a5";

fn door(
    store: Arc<TestStore>,
    sender: Arc<dyn Sender>,
    allow: &[&str],
    performer: Arc<KernelPerformer>,
) -> Arc<ChatDoor> {
    let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
    Arc::new(ChatDoor {
        door: "chat".into(),
        store: store.clone(),
        gate: Gate::new(
            crate::common::stage(),
            "chat",
            &allow,
            store.clone(),
            Limits::default(),
        ),
        outbox: Arc::new(Outbox::new(
            store,
            crate::common::stage(),
            "chat",
            sender,
            Retry::default(),
        )),
        performer,
    })
}

fn answered(text: &str) -> Vec<ScriptedTurn> {
    vec![
        ScriptedTurn::call("reply", json!({ "text": text })),
        ScriptedTurn::say("done"),
    ]
}

fn slack_headers(ts: i64, signature: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "X-Slack-Request-Timestamp",
        HeaderValue::from_str(&ts.to_string()).unwrap(),
    );
    h.insert(
        "X-Slack-Signature",
        HeaderValue::from_str(signature).unwrap(),
    );
    h
}

#[tokio::test]
async fn slack_requests_need_a_fresh_valid_signature() {
    let fake = Fake::start(Kind::Slack, TOKEN).await;
    let store = Arc::new(TestStore::default());
    let performer = Arc::new(KernelPerformer::new(vec![answered("hi from the stage")]));
    let sender = Arc::new(Slack::new(TOKEN, Some(&fake.base)).unwrap());
    let door = door(store, sender, &["U0ALICE"], performer.clone());
    let challenge = br#"{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let ok = listen::slack(
        &door,
        &Intake::new(),
        SECRET,
        &slack_headers(NOW, &slack::sign(SECRET, NOW, challenge)),
        challenge,
        NOW,
    );
    assert_eq!(
        (ok.status, ok.body.as_str()),
        (200, "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P")
    );

    let event = json!({
        "type": "event_callback", "event_id": "Ev1", "team_id": "T1",
        "event": { "type": "message", "channel": "C1", "user": "U0ALICE", "text": "deploy?", "ts": "1764399999.000100" }
    })
    .to_string();
    let body = event.as_bytes();
    // Each forgery is refused before anything is parsed or performed.
    let forged = [
        slack_headers(NOW, &slack::sign(b"another secret", NOW, body)),
        slack_headers(
            NOW,
            &slack::sign(SECRET, NOW, b"{\"type\":\"event_callback\"}"),
        ),
        // A request captured six minutes ago and replayed, its signature intact.
        slack_headers(NOW - 360, &slack::sign(SECRET, NOW - 360, body)),
        slack_headers(NOW + 360, &slack::sign(SECRET, NOW + 360, body)),
        slack_headers(NOW, "v0=zz"),
        HeaderMap::new(),
    ];
    for headers in &forged {
        let answer = listen::slack(&door, &Intake::new(), SECRET, headers, body, NOW);
        assert_eq!(answer.status, 401, "{headers:?} was let in: {answer:?}");
    }
    assert_eq!(
        slack::verify(SECRET, &forged[2], body, NOW),
        Err(SignatureError::Stale {
            age_s: 360,
            window_s: 300
        })
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(performer.count(), 0, "a refused request performed");
    assert!(fake.sent().is_empty());

    // The genuine request is performed, and answered in its thread.
    let answer = listen::slack(
        &door,
        &Intake::new(),
        SECRET,
        &slack_headers(NOW - 10, &slack::sign(SECRET, NOW - 10, body)),
        body,
        NOW,
    );
    assert_eq!(answer.status, 200);
    let sent = fake.wait_sent(1).await;
    assert_eq!(sent[0].conversation, "C1");
    assert_eq!(sent[0].text, "hi from the stage");
    assert_eq!(sent[0].reply_to.as_deref(), Some("1764399999.000100"));
    // Slack retries a delivery it thinks failed: the same event is not performed again.
    listen::slack(
        &door,
        &Intake::new(),
        SECRET,
        &slack_headers(NOW, &slack::sign(SECRET, NOW, body)),
        body,
        NOW,
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(performer.count(), 1);
}

fn discord_headers(key: &SigningKey, ts: i64, body: &[u8]) -> HeaderMap {
    let mut message = ts.to_string().into_bytes();
    message.extend_from_slice(body);
    let signature = key.sign(&message);
    let mut h = HeaderMap::new();
    h.insert(
        "X-Signature-Timestamp",
        HeaderValue::from_str(&ts.to_string()).unwrap(),
    );
    h.insert(
        "X-Signature-Ed25519",
        HeaderValue::from_str(&hex::encode(signature.to_bytes())).unwrap(),
    );
    h
}

#[tokio::test]
async fn discord_interactions_need_a_valid_signature_and_ping_gets_pong() {
    let fake = Fake::start(Kind::Discord, TOKEN).await;
    let store = Arc::new(TestStore::default());
    let performer = Arc::new(KernelPerformer::new(vec![answered("pong from the stage")]));
    let sender = Arc::new(Discord::new(TOKEN, Some(&fake.base)).unwrap());
    let door = door(store, sender, &["80351110224678912"], performer.clone());
    let app = SigningKey::from_bytes(&[7u8; 32]);
    let key = PublicKey::from_hex(&hex::encode(app.verifying_key().to_bytes())).unwrap();

    let ping = br#"{"id":"1","application_id":"2","type":1,"token":"t","version":1}"#;
    let pong = listen::discord(
        &door,
        &Intake::new(),
        &key,
        &discord_headers(&app, NOW, ping),
        ping,
        NOW,
    )
    .await;
    assert_eq!((pong.status, pong.body.as_str()), (200, r#"{"type":1}"#));

    let command = json!({
        "id": "1180000000000000001", "application_id": "2", "type": 2, "token": "t", "version": 1,
        "channel_id": "1170000000000000009",
        "member": { "user": { "id": "80351110224678912", "username": "alice" } },
        "data": { "id": "3", "name": "ask", "options": [{ "name": "text", "type": 3, "value": "status?" }] }
    })
    .to_string();
    let body = command.as_bytes();
    let stranger = SigningKey::from_bytes(&[9u8; 32]);
    let mut tampered = discord_headers(&app, NOW, body);
    tampered.insert(
        "X-Signature-Timestamp",
        HeaderValue::from_static("1764400001"),
    );
    for headers in [
        discord_headers(&stranger, NOW, body),
        discord_headers(&app, NOW, ping),
        discord_headers(&app, NOW - 3600, body),
        tampered,
        HeaderMap::new(),
    ] {
        let answer = listen::discord(&door, &Intake::new(), &key, &headers, body, NOW).await;
        assert_eq!(answer.status, 401, "{headers:?} was let in");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(performer.count(), 0);

    let answer = listen::discord(
        &door,
        &Intake::new(),
        &key,
        &discord_headers(&app, NOW, body),
        body,
        NOW,
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&answer.body).unwrap()["type"],
        4
    );
    let sent = fake.wait_sent(1).await;
    assert_eq!(sent[0].conversation, "1170000000000000009");
    assert_eq!(sent[0].text, "pong from the stage");
    assert_eq!(sent[0].nonce.as_ref().map(String::len), Some(25));
}

fn update(id: i64, from: i64, username: &str, text: &str) -> serde_json::Value {
    json!({
        "update_id": id,
        "message": {
            "message_id": id * 10, "date": 1764400000, "text": text,
            "chat": { "id": from, "type": "private" },
            "from": { "id": from, "is_bot": false, "first_name": username, "username": username }
        }
    })
}

/// Updates are confirmed with the next offset and the offset is kept: a restarted poller
/// handles nothing twice.
#[tokio::test]
async fn telegram_polling_confirms_each_update_once_across_restarts() {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let store = Arc::new(TestStore::default());
    let performer = Arc::new(KernelPerformer::new(vec![
        answered("one"),
        answered("two"),
        answered("three"),
    ]));
    let client = Arc::new(Telegram::new(TOKEN, Some(&fake.base)).unwrap());
    let door = door(
        store.clone(),
        client.clone(),
        &["@alice"],
        performer.clone(),
    );
    fake.push_update(update(500, 42, "alice", "first"));
    fake.push_update(update(501, 42, "alice", "second"));
    let poll = |cancel: CancellationToken| {
        let (client, door) = (client.clone(), door.clone());
        tokio::spawn(async move {
            listen::telegram(&client, &door, Duration::from_secs(1), cancel).await
        })
    };
    let cancel = CancellationToken::new();
    let poller = poll(cancel.clone());
    fake.wait_sent(2).await;
    cancel.cancel();
    poller.await.unwrap().unwrap();

    // A crash before Telegram heard the confirmation: it delivers the same updates again.
    fake.push_update(update(500, 42, "alice", "first"));
    fake.push_update(update(501, 42, "alice", "second"));
    fake.push_update(update(502, 42, "alice", "third"));
    let asked = fake.offsets().len();
    let cancel = CancellationToken::new();
    let poller = poll(cancel.clone());
    let sent = fake.wait_sent(3).await;
    cancel.cancel();
    poller.await.unwrap().unwrap();
    let texts: Vec<_> = sent
        .iter()
        .map(|r| (r.text.as_str(), r.reply_to.as_deref()))
        .collect();
    assert_eq!(
        texts,
        [
            ("one", Some("5000")),
            ("two", Some("5010")),
            ("three", Some("5020"))
        ]
    );
    assert_eq!(performer.count(), 3);
    assert_eq!(
        fake.offsets()[asked],
        502,
        "the restarted poller starts from the kept offset"
    );
}

/// Holds each performance at its start until released.
struct Held {
    inner: Arc<KernelPerformer>,
    started: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
}

#[async_trait::async_trait]
impl improv_channel::conversation::Performer for Held {
    async fn perform(
        &self,
        request: improv_channel::conversation::Request,
    ) -> Result<improv_channel::conversation::Performed, improv_channel::ChannelError> {
        self.started.notify_one();
        self.release.notified().await;
        self.inner.perform(request).await
    }
}

/// A closing HTTP door takes no new message (503, so the platform delivers it again later) and
/// waits for the one under way, whose reply is sent before the close returns.
#[tokio::test]
async fn a_closing_door_waits_for_the_message_under_way_and_takes_no_new_one() {
    let fake = Fake::start(Kind::Slack, TOKEN).await;
    let store = Arc::new(TestStore::default());
    let inner = Arc::new(KernelPerformer::new(vec![answered("finished anyway")]));
    let (started, release) = (Arc::default(), Arc::default());
    let held = Arc::new(Held {
        inner: inner.clone(),
        started: Arc::clone(&started),
        release: Arc::clone(&release),
    });
    let sender = Arc::new(Slack::new(TOKEN, Some(&fake.base)).unwrap());
    let allow = vec!["U0ALICE".to_string()];
    let door = Arc::new(ChatDoor {
        door: "chat".into(),
        store: store.clone(),
        gate: Gate::new(
            crate::common::stage(),
            "chat",
            &allow,
            store.clone(),
            Limits::default(),
        ),
        outbox: Arc::new(Outbox::new(
            store,
            crate::common::stage(),
            "chat",
            sender,
            Retry::default(),
        )),
        performer: held,
    });
    let event = |id: &str, ts: &str| {
        json!({
            "type": "event_callback", "event_id": id, "team_id": "T1",
            "event": { "type": "message", "channel": "C1", "user": "U0ALICE", "text": "deploy?", "ts": ts }
        })
        .to_string()
    };
    let intake = Intake::new();
    let post = |body: &str| {
        let headers = slack_headers(NOW, &slack::sign(SECRET, NOW, body.as_bytes()));
        listen::slack(&door, &intake, SECRET, &headers, body.as_bytes(), NOW)
    };
    assert_eq!(post(&event("Ev1", "1764399999.000100")).status, 200);
    let closing = intake.close("chat");
    tokio::pin!(closing);
    tokio::select! {
        () = &mut closing => panic!("the door closed while a message was under way"),
        () = started.notified() => {}
    }
    let late = post(&event("Ev2", "1764399999.000200"));
    assert_eq!(
        late.status, 503,
        "a closing door takes no new message: {late:?}"
    );
    release.notify_one();
    closing.await;
    let sent = fake.sent();
    assert_eq!(
        sent.len(),
        1,
        "the reply was sent before the door closed: {sent:?}"
    );
    assert_eq!(sent[0].text, "finished anyway");
    assert_eq!(inner.count(), 1, "the late message was not performed");
}
