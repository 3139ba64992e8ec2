//! A chat door end to end on the kernel's real loop with a scripted model: a Telegram message
//! from an allowed user becomes a performance whose `reply` reaches the fake once; a stranger
//! gets a pairing code and no performance until the director pairs them; a thread continues
//! with its history; the message is fenced as untrusted data (the fence: authority.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use crate::common::KernelPerformer;
use crate::common::fake::{Fake, Fault, Kind};
use crate::common::store::TestStore;
use improv_channel::conversation::{ChatDoor, Handled};
use improv_channel::gate::{self, Admission, Gate, Limits, PairError, Rate};
use improv_channel::outbox::{Outbox, Retry};
use improv_channel::telegram::Telegram;
use improv_channel::{Channel, Inbound};
use improv_kernel::{Message, ScriptedTurn};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "123456:test-token";

struct Setup {
    fake: Fake,
    store: Arc<TestStore>,
    performer: Arc<KernelPerformer>,
    door: Arc<ChatDoor>,
}

async fn setup(scripts: Vec<Vec<ScriptedTurn>>) -> Setup {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let store = Arc::new(TestStore::default());
    let performer = Arc::new(KernelPerformer::new(scripts));
    let client = Arc::new(Telegram::new(TOKEN, Some(&fake.base)).unwrap());
    let retry = Retry {
        first: Duration::from_millis(20),
        max: Duration::from_millis(100),
        idle: Duration::from_millis(50),
    };
    let door = Arc::new(ChatDoor {
        door: "chat".into(),
        store: store.clone(),
        gate: Gate::new(
            crate::common::stage(),
            "chat",
            &["@alice".into()],
            store.clone(),
            Limits::default(),
        ),
        outbox: Arc::new(Outbox::new(
            store.clone(),
            crate::common::stage(),
            "chat",
            client,
            retry,
        )),
        performer: performer.clone(),
    });
    Setup {
        fake,
        store,
        performer,
        door,
    }
}

fn message(id: u32, user: (&str, &str), text: &str) -> Inbound {
    Inbound {
        platform: Channel::Telegram,
        conversation: "42".into(),
        thread: None,
        message_id: id.to_string(),
        sender_id: user.0.into(),
        sender_name: Some(format!("@{}", user.1)),
        text: text.into(),
    }
}

const ALICE: (&str, &str) = ("1001", "alice");
const MALLORY: (&str, &str) = ("6666", "mallory");

fn replies(text: &str) -> Vec<ScriptedTurn> {
    vec![
        ScriptedTurn::call("reply", json!({ "text": text })),
        ScriptedTurn::say("done"),
    ]
}

#[tokio::test]
async fn an_allowed_message_is_performed_and_its_reply_arrives_once() {
    let s = setup(vec![replies("Build is green.")]).await;
    let handled = s
        .door
        .handle(&message(77, ALICE, "is the build green?"))
        .await
        .unwrap();
    assert!(matches!(handled, Handled::Performed(_)), "{handled:?}");
    // The retry task finds nothing left to send.
    s.door.outbox.flush().await.unwrap();
    let sent = s.fake.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        (
            sent[0].conversation.as_str(),
            sent[0].text.as_str(),
            sent[0].reply_to.as_deref()
        ),
        ("42", "Build is green.", Some("77"))
    );
    // The outbox entry is keyed by the reply's own tool_call_started event and records the id.
    let entry = &s.store.entries().await[0];
    let Handled::Performed(id) = handled else {
        unreachable!()
    };
    assert_eq!(entry.message.key.performance, id);
    assert_eq!(entry.sent_id.as_deref(), Some(sent[0].id.as_str()));
    let first_request = s.performer.performed.lock().unwrap()[0].2[0].clone();
    let Message::User { text: content, .. } = &first_request[0] else {
        panic!("{first_request:?}")
    };
    assert!(content.contains("untrusted data") && content.contains("is the build green?"));
    // The same message delivered again (Telegram after a crash) performs nothing.
    let again = s
        .door
        .handle(&message(77, ALICE, "is the build green?"))
        .await
        .unwrap();
    assert_eq!(again, Handled::Duplicate);
    assert_eq!(s.performer.count(), 1);
}

#[tokio::test]
async fn a_stranger_gets_one_pairing_code_and_no_performance_until_paired() {
    let s = setup(vec![replies("Hello Mallory.")]).await;
    let first = s
        .door
        .handle(&message(1, MALLORY, "run rm -rf / please"))
        .await
        .unwrap();
    let Handled::Pairing(code) = first else {
        panic!("{first:?}")
    };
    let sent = s.fake.sent();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].text.contains(&format!("improv door pair {code}")),
        "{}",
        sent[0].text
    );
    // Asking again gets nothing: no second code, no performance.
    let second = s.door.handle(&message(2, MALLORY, "hello?")).await.unwrap();
    assert_eq!(second, Handled::Ignored(Admission::Waiting));
    assert_eq!(s.performer.count(), 0);
    assert_eq!(s.fake.sent().len(), 1);

    let unknown = gate::pair(s.store.as_ref(), &crate::common::stage(), "AAAAAAAAAA").await;
    assert!(matches!(unknown, Err(PairError::Unknown(_))), "{unknown:?}");
    let paired = gate::pair(
        s.store.as_ref(),
        &crate::common::stage(),
        &code.to_lowercase(),
    )
    .await
    .unwrap();
    assert_eq!(
        (paired.door.as_str(), paired.sender_id.as_str()),
        ("chat", "6666")
    );
    let reused = gate::pair(s.store.as_ref(), &crate::common::stage(), &code).await;
    assert!(matches!(reused, Err(PairError::Used(_))), "{reused:?}");

    let third = s
        .door
        .handle(&message(3, MALLORY, "hi again"))
        .await
        .unwrap();
    assert!(matches!(third, Handled::Performed(_)), "{third:?}");
    assert_eq!(s.fake.sent()[1].text, "Hello Mallory.");
}

#[tokio::test]
async fn a_thread_continues_with_its_history() {
    let s = setup(vec![replies("It is 4."), replies("And 2+3 is 5.")]).await;
    let Handled::Performed(first) = s
        .door
        .handle(&message(10, ALICE, "what is 2+2?"))
        .await
        .unwrap()
    else {
        panic!()
    };
    let Handled::Performed(_) = s
        .door
        .handle(&message(11, ALICE, "and 2+3?"))
        .await
        .unwrap()
    else {
        panic!()
    };
    let second = s.performer.performed.lock().unwrap()[1].clone();
    assert_eq!(
        second.1.as_deref(),
        Some(first.as_str()),
        "the thread's last performance"
    );
    let seen = format!("{:?}", second.2[0]);
    for earlier in ["what is 2+2?", "It is 4.", "and 2+3?"] {
        assert!(
            seen.contains(earlier),
            "the second performance's model never saw {earlier:?}: {seen}"
        );
    }
    let texts: Vec<_> = s.fake.sent().into_iter().map(|r| r.text).collect();
    assert_eq!(texts, ["It is 4.", "And 2+3 is 5."]);
    // Two replies of one continued performance are two outbox keys.
    let keys: Vec<_> = s
        .store
        .entries()
        .await
        .into_iter()
        .map(|e| e.message.key)
        .collect();
    assert_ne!(keys[0], keys[1]);
}

#[tokio::test]
async fn a_reply_met_by_a_5xx_is_queued_and_sent_once() {
    let s = setup(vec![replies("eventually")]).await;
    s.fake.fail_next(Fault::Status(502));
    s.fake.fail_next(Fault::Status(503));
    s.door.handle(&message(5, ALICE, "ping")).await.unwrap();
    assert!(s.fake.sent().is_empty());
    let cancel = CancellationToken::new();
    let retry = tokio::spawn({
        let (door, cancel) = (s.door.clone(), cancel.clone());
        async move { door.outbox.run(cancel).await }
    });
    s.fake.wait_sent(1).await;
    s.door.outbox.flush().await.unwrap();
    cancel.cancel();
    retry.await.unwrap();
    assert_eq!(s.fake.sent().len(), 1);
    assert_eq!(s.fake.send_requests(), 3);
}

#[tokio::test]
async fn rate_limits_hold_per_sender_and_per_door() {
    let store = Arc::new(TestStore::default());
    let limits = Limits {
        door: Rate {
            burst: 4,
            every: Duration::from_secs(60),
        },
        sender: Rate {
            burst: 2,
            every: Duration::from_secs(60),
        },
        ..Limits::default()
    };
    let allow: Vec<String> = vec!["@alice".into(), "@bob".into(), "@carol".into()];
    let gate = Gate::new(crate::common::stage(), "chat", &allow, store, limits);
    let at = Instant::now();
    let from = |u: &str| Inbound {
        sender_name: Some(format!("@{u}")),
        sender_id: u.into(),
        ..message(1, ALICE, "x")
    };
    let mut got = Vec::new();
    for u in ["alice", "alice", "alice", "bob", "carol", "carol"] {
        got.push(gate.admit(&from(u), at).await.unwrap());
    }
    use Admission::{Allowed, Limited};
    assert_eq!(got, [Allowed, Allowed, Limited, Allowed, Limited, Limited]);
    // A minute later each has a message again.
    let later = at + Duration::from_secs(61);
    assert_eq!(gate.admit(&from("alice"), later).await.unwrap(), Allowed);
}
