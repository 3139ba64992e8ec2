//! A chat door's limits come from the stage file (`rate`, `sender_rate`, `max_running`): over
//! one, nothing is performed and a known sender gets one polite answer through the outbox (not
//! one per message; a flood of strangers gets none).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use crate::common::KernelPerformer;
use crate::common::fake::{Fake, Kind};
use crate::common::store::TestStore;
use async_trait::async_trait;
use improv_channel::conversation::{ChatDoor, Handled, Performed, Performer, Request};
use improv_channel::gate::{Admission, Gate, Limits};
use improv_channel::outbox::{Outbox, Retry};
use improv_channel::telegram::Telegram;
use improv_channel::{Channel, ChannelError, Inbound};
use improv_kernel::{Outcome, ScriptedTurn};
use improv_stage::{Door, Stage};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

const TOKEN: &str = "123456:test-token";

/// The door `chat` of a stage file with these extra keys.
fn door_with(keys: &str) -> Door {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stage.toml");
    std::fs::write(
        &path,
        format!(
            "[stage]\nname = \"s\"\nintent = \"Answer.\"\n\n[[actor]]\nname = \"lead\"\n\
             model = \"scripted/script.json\"\n\n[[door]]\nname = \"chat\"\n\
             channel = \"telegram\"\ntoken_env = \"UNUSED\"\n\
             allow = [\"@alice\", \"@bob\"]\n{keys}\n"
        ),
    )
    .unwrap();
    Stage::load(&path).unwrap().doors[0].clone()
}

fn chat(fake: &Fake, door: &Door, performer: Arc<dyn Performer>) -> ChatDoor {
    let store = Arc::new(TestStore::default());
    let client = Arc::new(Telegram::new(TOKEN, Some(&fake.base)).unwrap());
    let allow: Vec<String> = vec!["@alice".into(), "@bob".into()];
    ChatDoor {
        door: "chat".into(),
        store: store.clone(),
        gate: Gate::new(
            crate::common::stage(),
            "chat",
            &allow,
            store.clone(),
            Limits::of(door),
        ),
        outbox: Arc::new(Outbox::new(
            store,
            crate::common::stage(),
            "chat",
            client,
            Retry::default(),
        )),
        performer,
    }
}

fn from(user: &str, id: u32) -> Inbound {
    let n = match user {
        "alice" => 1,
        "bob" => 2,
        _ => 9,
    };
    Inbound {
        platform: Channel::Telegram,
        conversation: format!("{n}00"),
        thread: None,
        message_id: id.to_string(),
        sender_id: format!("{n}"),
        sender_name: Some(format!("@{user}")),
        text: "do it".into(),
    }
}

fn replies(n: usize) -> Vec<Vec<ScriptedTurn>> {
    (0..n)
        .map(|i| {
            vec![
                ScriptedTurn::call("reply", json!({ "text": format!("done {i}") })),
                ScriptedTurn::say("ok"),
            ]
        })
        .collect()
}

/// What the fake received, per conversation.
fn sent_to(fake: &Fake, conversation: &str) -> Vec<String> {
    fake.sent()
        .into_iter()
        .filter(|r| r.conversation == conversation)
        .map(|r| r.text)
        .collect()
}

#[tokio::test]
async fn rates_from_the_stage_file_turn_messages_away_with_one_polite_answer() {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let door = door_with("rate = \"5/hour\"\nsender_rate = \"2/hour\"");
    let performer = Arc::new(KernelPerformer::new(replies(3)));
    let chat = chat(&fake, &door, performer.clone());
    let limited = Handled::Ignored(Admission::Limited);

    let mut got = Vec::new();
    for id in 1..=4 {
        got.push(chat.handle(&from("alice", id)).await.unwrap());
    }
    assert!(matches!(got[0], Handled::Performed(_)), "{got:?}");
    assert!(matches!(got[1], Handled::Performed(_)), "{got:?}");
    assert_eq!(got[2..], [limited.clone(), limited.clone()], "sender_rate");
    let alice = sent_to(&fake, "100");
    assert_eq!(alice.len(), 3, "two answers and one notice: {alice:?}");
    assert!(
        alice[2].contains("faster than I can take them"),
        "{alice:?}"
    );

    // Every message takes a place at the door, limited or not: Bob takes the fifth; then the
    // door is full for him too.
    assert!(matches!(
        chat.handle(&from("bob", 5)).await.unwrap(),
        Handled::Performed(_)
    ));
    assert_eq!(chat.handle(&from("bob", 6)).await.unwrap(), limited, "rate");
    assert_eq!(chat.handle(&from("bob", 7)).await.unwrap(), limited);
    assert_eq!(sent_to(&fake, "200").len(), 2, "{:?}", fake.sent());
    // A stranger in the flood mints no code and gets no answer.
    let stranger = chat.handle(&from("mallory", 8)).await.unwrap();
    assert_eq!(stranger, limited);
    assert!(sent_to(&fake, "900").is_empty());
    assert_eq!(performer.count(), 3, "nothing started over a limit");
}

/// Holds each performance until told to end it.
#[derive(Default)]
struct Held {
    started: Notify,
    end: Notify,
}

#[async_trait]
impl Performer for Held {
    async fn perform(&self, _request: Request) -> Result<Performed, ChannelError> {
        self.started.notify_one();
        self.end.notified().await;
        Ok(Performed {
            id: "held".into(),
            outcome: Outcome::Done,
        })
    }
}

#[tokio::test]
async fn max_running_from_the_stage_file_starts_nothing_more_and_says_so_once() {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let door = door_with("max_running = 1");
    let held = Arc::new(Held::default());
    let chat = Arc::new(chat(&fake, &door, held.clone()));
    let first = tokio::spawn({
        let chat = chat.clone();
        async move { chat.handle(&from("alice", 1)).await.unwrap() }
    });
    held.started.notified().await;
    let busy = Handled::Ignored(Admission::Busy);
    // A performance started past the limit would wait for ever: bounded, it fails instead.
    let bounded = |id| {
        let chat = chat.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(30), chat.handle(&from("bob", id)))
                .await
                .expect("a second performance started past max_running")
                .unwrap()
        }
    };
    assert_eq!(bounded(2).await, busy);
    assert_eq!(bounded(3).await, busy);
    let bob = sent_to(&fake, "200");
    assert_eq!(bob.len(), 1, "one notice: {bob:?}");
    assert!(bob[0].contains("busy"), "{bob:?}");
    held.end.notify_one();
    assert_eq!(first.await.unwrap(), Handled::Performed("held".into()));
    // The place is free again.
    let again = tokio::spawn({
        let chat = chat.clone();
        async move { chat.handle(&from("bob", 4)).await.unwrap() }
    });
    held.started.notified().await;
    held.end.notify_one();
    assert_eq!(again.await.unwrap(), Handled::Performed("held".into()));
}
