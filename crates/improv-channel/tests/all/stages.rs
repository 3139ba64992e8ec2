//! Two stages sharing one store, each with a chat door `chat` and its own bot: each door keeps
//! its own threads, claims, pairings, codes and Telegram offset, so neither continues, swallows
//! or lets in the other's.

use crate::common::KernelPerformer;
use crate::common::fake::{Fake, Kind};
use crate::common::store::TestStore;
use improv_channel::conversation::{ChatDoor, Handled};
use improv_channel::gate::{self, Admission, Gate, Limits, PairError};
use improv_channel::listen;
use improv_channel::outbox::{Outbox, Retry};
use improv_channel::telegram::Telegram;
use improv_channel::{Channel, Inbound};
use improv_kernel::ScriptedTurn;
use improv_store::{StageKey, Store};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "123456:test-token";

/// The stage beside [`crate::common::stage`]: unnamed, known by its path.
fn other() -> StageKey {
    StageKey {
        name: None,
        path: "/srv/other/stage.toml".into(),
    }
}

struct Door {
    fake: Fake,
    performer: Arc<KernelPerformer>,
    door: ChatDoor,
}

/// `stage`'s door `chat` on `store`, with its own fake bot and a performer of `replies`
/// replies; it allows @alice.
async fn door(stage: StageKey, store: &Arc<TestStore>, replies: usize) -> Door {
    door_with(stage, store, performer(replies)).await
}

fn performer(replies: usize) -> Arc<KernelPerformer> {
    let script = || {
        vec![
            ScriptedTurn::call("reply", json!({ "text": "ok" })),
            ScriptedTurn::say("done"),
        ]
    };
    Arc::new(KernelPerformer::new(
        (0..replies).map(|_| script()).collect(),
    ))
}

/// [`door`] with `performer`, which may perform for another door too.
async fn door_with(
    stage: StageKey,
    store: &Arc<TestStore>,
    performer: Arc<KernelPerformer>,
) -> Door {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let client = Arc::new(Telegram::new(TOKEN, Some(&fake.base)).unwrap());
    let store: Arc<dyn Store> = store.clone();
    let door = ChatDoor {
        door: "chat".into(),
        store: store.clone(),
        gate: Gate::new(
            stage.clone(),
            "chat",
            &["@alice".into()],
            store.clone(),
            Limits::default(),
        ),
        outbox: Arc::new(Outbox::new(store, stage, "chat", client, Retry::default())),
        performer: performer.clone(),
    };
    Door {
        fake,
        performer,
        door,
    }
}

fn message(id: u32, user: (&str, &str)) -> Inbound {
    Inbound {
        platform: Channel::Telegram,
        conversation: "42".into(),
        thread: None,
        message_id: id.to_string(),
        sender_id: user.0.into(),
        sender_name: Some(format!("@{}", user.1)),
        text: format!("message {id}"),
    }
}

const ALICE: (&str, &str) = ("1001", "alice");
const MALLORY: (&str, &str) = ("6666", "mallory");

/// The previous performance each of `door`'s performances continued.
fn previous(door: &Door) -> Vec<Option<String>> {
    let performed = door.performer.performed.lock().unwrap();
    performed
        .iter()
        .map(|(_, previous, _)| previous.clone())
        .collect()
}

/// Both bots are in chat 42: stage B's first message there starts its own conversation (not
/// A's thread), a message id A claimed is still B's to perform, and A's thread goes on.
#[tokio::test]
async fn two_stages_doors_of_one_name_keep_their_own_threads_and_claims() {
    let store = Arc::new(TestStore::default());
    let a = door(crate::common::stage(), &store, 2).await;
    let b = door(other(), &store, 2).await;
    let Handled::Performed(first) = a.door.handle(&message(1, ALICE)).await.unwrap() else {
        panic!("A performs its message")
    };
    let handled = b.door.handle(&message(5, ALICE)).await.unwrap();
    assert!(matches!(handled, Handled::Performed(_)), "{handled:?}");
    assert_eq!(
        previous(&b),
        [None],
        "B's conversation is its own, not A's thread"
    );
    let handled = b.door.handle(&message(1, ALICE)).await.unwrap();
    assert!(
        matches!(handled, Handled::Performed(_)),
        "B's bot got message 1 too: {handled:?}"
    );
    a.door.handle(&message(2, ALICE)).await.unwrap();
    assert_eq!(previous(&a), [None, Some(first)], "A's thread goes on");
    assert_eq!(a.fake.sent().len(), 2);
    assert_eq!(b.fake.sent().len(), 2);
}

/// A thread and a claim kept before the stage was in the key (made here by a door of a third
/// stage, its thread then moved to the bare key): the stage whose door reads the thread first
/// continues it (the other starts afresh), and the claimed message is a duplicate to both.
#[tokio::test]
async fn a_thread_kept_before_stages_is_continued_by_one_stage_only() {
    let store = Arc::new(TestStore::default());
    let shared = performer(2);
    let before = StageKey {
        name: Some("before".into()),
        path: String::new(),
    };
    let old = door_with(before.clone(), &store, shared.clone()).await;
    let Handled::Performed(first) = old.door.handle(&message(9, ALICE)).await.unwrap() else {
        panic!("the door before the upgrade performs")
    };
    for (scope, bare) in [
        ("door.thread", "chat/42"),
        ("door.inbound", "chat/telegram/42/9"),
    ] {
        let kept = store.get(scope, &format!("{bare}@{}", before.id())).await;
        store
            .put(scope, bare, &kept.unwrap().unwrap(), false)
            .await
            .unwrap();
    }
    let a = door_with(crate::common::stage(), &store, shared.clone()).await;
    let b = door(other(), &store, 1).await;
    for door in [&a, &b] {
        let again = door.door.handle(&message(9, ALICE)).await.unwrap();
        assert_eq!(again, Handled::Duplicate, "claimed before the upgrade");
    }
    a.door.handle(&message(10, ALICE)).await.unwrap();
    b.door.handle(&message(11, ALICE)).await.unwrap();
    assert_eq!(previous(&a), [None, Some(first)], "A adopted the thread");
    assert_eq!(previous(&b), [None], "B starts afresh");
}

/// Mallory writes to both stages' doors: each mints its own code; B's director cannot pair A's
/// code, and A's pairing lets Mallory in through A's door only.
#[tokio::test]
async fn a_pairing_code_pairs_only_through_its_own_stage() {
    let store = Arc::new(TestStore::default());
    let a = door(crate::common::stage(), &store, 1).await;
    let b = door(other(), &store, 0).await;
    let Handled::Pairing(code) = a.door.handle(&message(1, MALLORY)).await.unwrap() else {
        panic!("a stranger to A gets a code")
    };
    let handled = b.door.handle(&message(2, MALLORY)).await.unwrap();
    assert!(
        matches!(handled, Handled::Pairing(_)),
        "B's door mints its own code and sends it through B's bot: {handled:?}"
    );
    assert_eq!(b.fake.sent().len(), 1, "B's code reached Mallory");
    let wrong = gate::pair(store.as_ref(), &other(), &code).await;
    assert!(matches!(wrong, Err(PairError::Unknown(_))), "{wrong:?}");
    gate::pair(store.as_ref(), &crate::common::stage(), &code)
        .await
        .unwrap();
    let handled = b.door.handle(&message(3, MALLORY)).await.unwrap();
    assert_eq!(handled, Handled::Ignored(Admission::Waiting), "not in B");
    let handled = a.door.handle(&message(4, MALLORY)).await.unwrap();
    assert!(matches!(handled, Handled::Performed(_)), "{handled:?}");
}

fn update(id: i64, text: &str) -> serde_json::Value {
    json!({
        "update_id": id,
        "message": {
            "message_id": id * 10, "date": 1764400000, "text": text,
            "chat": { "id": 42, "type": "private" },
            "from": { "id": 1001, "is_bot": false, "first_name": "alice", "username": "alice" }
        }
    })
}

/// Polls `door`'s own bot until its fake has sent `n` replies.
async fn poll_until_sent(door: &Door, n: usize) {
    let client = Telegram::new(TOKEN, Some(&door.fake.base)).unwrap();
    let cancel = CancellationToken::new();
    let polling = listen::telegram(&client, &door.door, Duration::from_secs(1), cancel.clone());
    let waiting = async {
        door.fake.wait_sent(n).await;
        cancel.cancel();
    };
    let (polled, ()) = tokio::join!(polling, waiting);
    polled.unwrap();
}

/// Each stage's bot is polled from its own offset: B's first update (its bot numbers its own)
/// is not confirmed away by the offset A's bot reached.
#[tokio::test]
async fn each_stages_bot_is_polled_from_its_own_offset() {
    let store = Arc::new(TestStore::default());
    let a = door(crate::common::stage(), &store, 2).await;
    let b = door(other(), &store, 1).await;
    a.fake.push_update(update(500, "first"));
    a.fake.push_update(update(501, "second"));
    poll_until_sent(&a, 2).await;
    b.fake.push_update(update(7, "to B"));
    poll_until_sent(&b, 1).await;
    assert_eq!(b.fake.offsets()[0], 0, "B starts from its own offset");
}
