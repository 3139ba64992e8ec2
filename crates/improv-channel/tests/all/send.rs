//! The `send` prop: a door whose stage entry says `send = ["ops"]` lets its actors post to the
//! chat `ops` as well as answer in the thread; any other chat is refused; each call is one
//! outbox entry, so nothing arrives twice. A door without `send` offers no such prop.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use crate::common::KernelPerformer;
use crate::common::fake::{Fake, Kind};
use crate::common::store::TestStore;
use improv_channel::conversation::{ChatDoor, Handled};
use improv_channel::gate::{Gate, Limits};
use improv_channel::outbox::{Outbox, Retry};
use improv_channel::telegram::Telegram;
use improv_channel::{Channel, Inbound};
use improv_kernel::{Message, ScriptedTurn};
use improv_stage::{DoorKind, Stage};
use serde_json::json;
use std::sync::Arc;

const TOKEN: &str = "123456:test-token";

/// The `send` list of a chat door written with `keys`.
fn send_of(keys: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stage.toml");
    std::fs::write(
        &path,
        format!(
            "[stage]\nname = \"s\"\nintent = \"Answer.\"\n\n[[actor]]\nname = \"lead\"\n\
             model = \"scripted/script.json\"\n\n[[door]]\nname = \"chat\"\n\
             channel = \"telegram\"\ntoken_env = \"UNUSED\"\n{keys}\n"
        ),
    )
    .unwrap();
    let stage = Stage::load(&path).unwrap();
    let DoorKind::Channel(c) = &stage.doors[0].kind else {
        panic!()
    };
    c.send.clone()
}

fn door(fake: &Fake, performer: Arc<KernelPerformer>, targets: Vec<String>) -> ChatDoor {
    let store = Arc::new(TestStore::default());
    let client = Arc::new(Telegram::new(TOKEN, Some(&fake.base)).unwrap());
    let outbox = Outbox::new(
        store.clone(),
        crate::common::stage(),
        "chat",
        client,
        Retry::default(),
    )
    .with_targets(targets);
    ChatDoor {
        door: "chat".into(),
        store: store.clone(),
        gate: Gate::new(
            crate::common::stage(),
            "chat",
            &["@alice".into()],
            store,
            Limits::default(),
        ),
        outbox: Arc::new(outbox),
        performer,
    }
}

fn message(id: u32) -> Inbound {
    Inbound {
        platform: Channel::Telegram,
        conversation: "42".into(),
        thread: None,
        message_id: id.to_string(),
        sender_id: "1001".into(),
        sender_name: Some("@alice".into()),
        text: "tell ops the deploy is done".into(),
    }
}

fn texts_to(fake: &Fake, conversation: &str) -> Vec<String> {
    fake.sent()
        .into_iter()
        .filter(|r| r.conversation == conversation)
        .map(|r| r.text)
        .collect()
}

#[tokio::test]
async fn send_posts_only_to_the_chats_the_stage_file_allows_and_once() {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let targets = send_of("send = [\"ops\"]");
    assert_eq!(targets, ["ops"]);
    let performer = Arc::new(KernelPerformer::new(vec![vec![
        ScriptedTurn::call("send", json!({ "to": "ops", "text": "Deploy done." })),
        ScriptedTurn::call("send", json!({ "to": "everyone", "text": "Hi all!" })),
        ScriptedTurn::call("reply", json!({ "text": "Told ops." })),
        ScriptedTurn::say("done"),
    ]]));
    let door = door(&fake, performer.clone(), targets);
    let handled = door.handle(&message(1)).await.unwrap();
    assert!(matches!(handled, Handled::Performed(_)), "{handled:?}");
    door.outbox.flush().await.unwrap();
    assert_eq!(texts_to(&fake, "ops"), ["Deploy done."]);
    assert_eq!(texts_to(&fake, "42"), ["Told ops."]);
    assert_eq!(
        fake.sent().len(),
        2,
        "nothing to `everyone`: {:?}",
        fake.sent()
    );
    // The refusal reached the actor as the prop's error.
    let requests = performer.performed.lock().unwrap()[0].2.clone();
    let refused = requests.last().unwrap().iter().any(|m| {
        matches!(m, Message::Tool { name, is_error: true, content, .. }
            if name == "send" && content.contains("ops"))
    });
    assert!(refused, "{requests:?}");
    // Handled again (a redelivery) it sends nothing more.
    assert_eq!(door.handle(&message(1)).await.unwrap(), Handled::Duplicate);
    door.outbox.flush().await.unwrap();
    assert_eq!(fake.sent().len(), 2);
}

#[tokio::test]
async fn a_door_without_send_offers_no_send_prop() {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    assert!(send_of("").is_empty());
    let performer = Arc::new(KernelPerformer::new(vec![vec![
        ScriptedTurn::call("send", json!({ "to": "ops", "text": "Deploy done." })),
        ScriptedTurn::say("done"),
    ]]));
    let door = door(&fake, performer, Vec::new());
    door.handle(&message(1)).await.unwrap();
    door.outbox.flush().await.unwrap();
    assert!(fake.sent().is_empty(), "{:?}", fake.sent());
}
