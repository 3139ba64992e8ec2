//! How a door retakes the messages a process accepted and never performed: each is taken over
//! just before it is performed, so a retake stopped midway (the door draining, or the process
//! killed) leaves the rest pending for the next one; and no more are taken than the gate has
//! free places, so a busy door leaves them pending instead of turning them away as busy.

use crate::common::KernelPerformer;
use crate::common::fake::{Fake, Kind};
use crate::common::store::TestStore;
use async_trait::async_trait;
use improv_channel::ChannelError;
use improv_channel::conversation::{ChatDoor, Handled, Performed, Performer, Request};
use improv_channel::gate::{Gate, Limits};
use improv_channel::outbox::{Outbox, Retry};
use improv_channel::telegram::Telegram;
use improv_channel::{Channel, Inbound};
use improv_kernel::ScriptedTurn;
use improv_store::{StageKey, Store, StoreError, StoreLayer};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "123456:test-token";

/// The store of a process that dies as its claim would be marked started: that write and
/// every one after it fail, leaving the claim pending.
struct DiesBeforeStart {
    inner: TestStore,
    dead: AtomicBool,
}

impl DiesBeforeStart {
    fn check(&self, value: &serde_json::Value) -> Result<(), StoreError> {
        if value["state"] == "started" {
            self.dead.store(true, SeqCst);
        }
        if self.dead.load(SeqCst) {
            return Err(StoreError::Unavailable {
                store: "test".into(),
                message: "the process died here".into(),
            });
        }
        Ok(())
    }
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
        self.check(value)?;
        Store::put(&self.inner, scope, key, value, only_if_absent).await
    }
    async fn put_if(
        &self,
        scope: &str,
        key: &str,
        expected: Option<i64>,
        value: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        self.check(value)?;
        Store::put_if(&self.inner, scope, key, expected, value).await
    }
}

/// Performs with `inner`, then cancels `cancel`: the door starts draining while its first
/// retaken message is performed.
struct CancelsOnPerform {
    inner: Arc<KernelPerformer>,
    cancel: CancellationToken,
}

#[async_trait]
impl Performer for CancelsOnPerform {
    async fn perform(&self, request: Request) -> Result<Performed, ChannelError> {
        let performed = self.inner.perform(request).await;
        self.cancel.cancel();
        performed
    }
}

fn door(fake: &Fake, store: Arc<dyn Store>, performer: Arc<dyn Performer>) -> ChatDoor {
    door_of(crate::common::stage(), fake, store, performer)
}

/// [`door`] of `stage`.
fn door_of(
    stage: StageKey,
    fake: &Fake,
    store: Arc<dyn Store>,
    performer: Arc<dyn Performer>,
) -> ChatDoor {
    let client = Arc::new(Telegram::new(TOKEN, Some(&fake.base)).unwrap());
    ChatDoor {
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
        performer,
    }
}

fn message(id: &str) -> Inbound {
    Inbound {
        platform: Channel::Telegram,
        conversation: "42".into(),
        thread: None,
        message_id: id.into(),
        sender_id: "1001".into(),
        sender_name: Some("@alice".into()),
        text: format!("task {id}"),
    }
}

fn replies(text: &str) -> Vec<ScriptedTurn> {
    vec![
        ScriptedTurn::call("reply", json!({ "text": text })),
        ScriptedTurn::say("done"),
    ]
}

/// Leaves messages `ids` of one chat claimed and never performed in `file`, as processes
/// that died between claim and start would.
async fn leave_pending(fake: &Fake, file: &TestStore, ids: &[&str]) {
    for id in ids {
        let dying = Arc::new(DiesBeforeStart {
            inner: file.reopen(),
            dead: AtomicBool::new(false),
        });
        let performer = Arc::new(KernelPerformer::new(Vec::new()));
        let door = door(fake, dying, performer);
        assert!(
            door.handle(&message(id)).await.is_err(),
            "dies before start"
        );
    }
}

/// How many messages the door's pending list holds.
async fn pending(store: &dyn Store) -> usize {
    store
        .get(
            "door.pending",
            &improv_door::kept::key(&crate::common::stage(), "chat"),
        )
        .await
        .unwrap()
        .and_then(|v| v.as_object().map(|o| o.len()))
        .unwrap_or(0)
}

#[tokio::test]
async fn a_retake_cancelled_midway_leaves_the_untaken_messages_pending_for_the_next() {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let file = TestStore::default();
    leave_pending(&fake, &file, &["1", "2", "3"]).await;
    let store: Arc<dyn Store> = Arc::new(file.reopen());
    assert_eq!(pending(store.as_ref()).await, 3);

    // One chat: its messages are retaken in turn; the door drains during the first.
    // One performer for both doors: it keeps the thread's past, as the log would.
    let performer = Arc::new(KernelPerformer::new(vec![
        replies("one"),
        replies("two"),
        replies("three"),
    ]));
    let cancel = CancellationToken::new();
    let draining = Arc::new(CancelsOnPerform {
        inner: performer.clone(),
        cancel: cancel.clone(),
    });
    let first = door(&fake, store.clone(), draining);
    let retaken = first.retake_until(Duration::ZERO, &cancel).await.unwrap();
    assert!(
        matches!(retaken.as_slice(), [Handled::Performed(_)]),
        "only the message under way when the door drained is performed: {retaken:?}"
    );
    assert_eq!(
        pending(store.as_ref()).await,
        2,
        "the messages not yet taken stay pending"
    );

    let next = door(&fake, Arc::new(file.reopen()), performer.clone());
    let retaken = next.retake(Duration::ZERO).await.unwrap();
    assert_eq!(retaken.len(), 2, "{retaken:?}");
    assert!(retaken.iter().all(|h| matches!(h, Handled::Performed(_))));
    let sent: Vec<_> = fake
        .wait_sent(3)
        .await
        .into_iter()
        .map(|s| s.text)
        .collect();
    assert_eq!(
        sent,
        ["one", "two", "three"],
        "once each, in the chat's order"
    );
    assert_eq!(pending(store.as_ref()).await, 0);
}

#[tokio::test]
async fn a_door_with_no_free_place_retakes_nothing_and_leaves_it_pending() {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let file = TestStore::default();
    leave_pending(&fake, &file, &["1"]).await;

    let performer = Arc::new(KernelPerformer::new(vec![replies("done now")]));
    let busy = door(&fake, Arc::new(file.reopen()), performer.clone());
    let held: Vec<_> = std::iter::from_fn(|| busy.gate.start(&message("0"))).collect();
    assert!(!held.is_empty());
    let retaken = busy.retake(Duration::ZERO).await.unwrap();
    assert_eq!(
        retaken,
        Vec::new(),
        "nothing is taken while the door is full"
    );
    assert_eq!(performer.count(), 0);
    assert_eq!(pending(busy.store.as_ref()).await, 1, "still pending");

    drop(held);
    let retaken = busy.retake(Duration::ZERO).await.unwrap();
    assert!(
        matches!(retaken.as_slice(), [Handled::Performed(_)]),
        "{retaken:?}"
    );
    assert_eq!(fake.wait_sent(1).await[0].text, "done now");
}

#[tokio::test]
async fn a_message_held_by_another_process_stops_its_thread_until_the_next_look() {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let file = TestStore::default();
    leave_pending(&fake, &file, &["1", "2"]).await;
    let store: Arc<dyn Store> = Arc::new(file.reopen());
    let listed = store
        .get(
            "door.pending",
            &improv_door::kept::key(&crate::common::stage(), "chat"),
        )
        .await
        .unwrap()
        .unwrap();
    let first = listed
        .as_object()
        .unwrap()
        .keys()
        .find(|seen| seen.contains("/1@"))
        .unwrap()
        .clone();
    // Another process on the same store retakes message 1: its retake record is there first.
    let elsewhere = json!({ "at": 0 });
    assert!(
        store
            .put("door.retake", &first, &elsewhere, true)
            .await
            .unwrap()
    );

    let performer = Arc::new(KernelPerformer::new(vec![replies("two")]));
    let door = door(&fake, store.clone(), performer.clone());
    let retaken = door.retake(Duration::ZERO).await.unwrap();
    assert_eq!(
        retaken,
        Vec::new(),
        "message 2 waits for message 1, held elsewhere"
    );
    assert_eq!(performer.count(), 0, "nothing performed");
    assert_eq!(
        pending(store.as_ref()).await,
        1,
        "message 2 stays pending for the next look"
    );
}

/// Records what it was asked to perform, in order, and ends each at once.
#[derive(Default)]
struct Recording(std::sync::Mutex<Vec<String>>);

#[async_trait]
impl Performer for Recording {
    async fn perform(&self, request: Request) -> Result<Performed, ChannelError> {
        let mut asked = self.0.lock().unwrap();
        asked.push(request.intent);
        Ok(Performed {
            id: format!("p{}", asked.len()),
            outcome: improv_kernel::Outcome::Done,
        })
    }
}

/// Messages of one chat left pending within the same second are retaken in the order they
/// came, not in the order of their keys as text (where message 10 comes before message 9).
#[tokio::test]
async fn messages_pending_from_the_same_second_are_retaken_in_the_order_they_came() {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let file = TestStore::default();
    // At the start of a second, so both are listed within it.
    let into_second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_millis();
    tokio::time::sleep(Duration::from_millis(u64::from(1000 - into_second))).await;
    leave_pending(&fake, &file, &["9", "10"]).await;
    let recording = Arc::new(Recording::default());
    let next = door(&fake, Arc::new(file.reopen()), recording.clone());
    let retaken = next.retake(Duration::ZERO).await.unwrap();
    assert_eq!(retaken.len(), 2, "{retaken:?}");
    let asked = recording.0.lock().unwrap().clone();
    let order: Vec<bool> = asked.iter().map(|i| i.contains("task 9")).collect();
    assert_eq!(order, [true, false], "message 9 first: {asked:?}");
}

/// Messages are retaken in the order they were put on the pending list even when the clocks of
/// the servers that listed them disagree: here the second was listed by a server whose clock is
/// 5 s behind the first's.
#[tokio::test]
async fn messages_pending_are_retaken_in_the_order_listed_whatever_the_clocks() {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let file = TestStore::default();
    leave_pending(&fake, &file, &["9", "10"]).await;
    let store: Arc<dyn Store> = Arc::new(file.reopen());
    let mut list = store
        .get(
            "door.pending",
            &improv_door::kept::key(&crate::common::stage(), "chat"),
        )
        .await
        .unwrap()
        .unwrap();
    let entries = list.as_object_mut().unwrap();
    let first_at = entries
        .values()
        .filter_map(|e| e["at"].as_u64())
        .min()
        .unwrap();
    let last = entries
        .values_mut()
        .max_by_key(|e| e["seq"].as_u64())
        .unwrap();
    assert!(last["inbound"].to_string().contains("task 10"), "{last}");
    last["at"] = serde_json::json!(first_at - 5);
    store
        .put(
            "door.pending",
            &improv_door::kept::key(&crate::common::stage(), "chat"),
            &list,
            false,
        )
        .await
        .unwrap();
    let recording = Arc::new(Recording::default());
    let next = door(&fake, Arc::new(file.reopen()), recording.clone());
    let retaken = next.retake(Duration::ZERO).await.unwrap();
    assert_eq!(retaken.len(), 2, "{retaken:?}");
    let asked = recording.0.lock().unwrap().clone();
    let order: Vec<bool> = asked.iter().map(|i| i.contains("task 9")).collect();
    assert_eq!(order, [true, false], "message 9 first: {asked:?}");
}

/// Leaves message `id` pending as the version before stages were in the keys kept it: its
/// entry in the list under the door's bare name, its claim under its bare key.
async fn leave_pending_before_stages(store: &dyn Store, id: &str) {
    let seen = format!("chat/telegram/42/{id}");
    let entry = json!({ "inbound": message(id), "at": 1, "seq": 1 });
    let list = json!({ seen.clone(): entry });
    store
        .put("door.pending", "chat", &list, false)
        .await
        .unwrap();
    let claimed = json!({ "state": "claimed" });
    store
        .put("door.inbound", &seen, &claimed, false)
        .await
        .unwrap();
}

/// A message the old version accepted and never performed is performed by the upgraded door
/// even when that door handled a message before its first retake (which starts the stage's own
/// pending list): the old list is merged into the stage's, not dropped for it.
#[tokio::test]
async fn a_message_left_pending_before_the_upgrade_is_retaken_after_a_new_one_is_handled() {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let store: Arc<dyn Store> = Arc::new(TestStore::default());
    leave_pending_before_stages(store.as_ref(), "1").await;
    let recording = Arc::new(Recording::default());
    let upgraded = door(&fake, store.clone(), recording.clone());
    let handled = upgraded.handle(&message("5")).await.unwrap();
    assert!(matches!(handled, Handled::Performed(_)), "{handled:?}");
    let retaken = upgraded.retake(Duration::ZERO).await.unwrap();
    assert!(
        matches!(retaken.as_slice(), [Handled::Performed(_)]),
        "message 1 is performed: {retaken:?}"
    );
    let asked = recording.0.lock().unwrap().clone();
    assert!(asked[1].contains("task 1"), "{asked:?}");
    assert_eq!(pending(store.as_ref()).await, 0);
}

/// Two servers of one stage upgraded at once: one has already listed a message under the
/// stage's key when the other adopts the old list; the old entries are still retaken.
#[tokio::test]
async fn the_old_pending_list_is_merged_into_a_list_another_server_started() {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let file = TestStore::default();
    let store: Arc<dyn Store> = Arc::new(file.reopen());
    leave_pending_before_stages(store.as_ref(), "1").await;
    // The first server lists message 2 under the stage's key and dies before starting it; the
    // old list is not adopted yet as the other server reads it.
    let old_list = store.get("door.pending", "chat").await.unwrap().unwrap();
    leave_pending(&fake, &file, &["2"]).await;
    store
        .put("door.pending", "chat", &old_list, false)
        .await
        .unwrap();
    let recording = Arc::new(Recording::default());
    let other = door(&fake, Arc::new(file.reopen()), recording.clone());
    let retaken = other.retake(Duration::ZERO).await.unwrap();
    assert_eq!(retaken.len(), 2, "{retaken:?}");
    let asked = recording.0.lock().unwrap().clone();
    let order: Vec<bool> = asked.iter().map(|i| i.contains("task 1")).collect();
    assert_eq!(order, [true, false], "the old message first: {asked:?}");
}

/// The door's pending list kept under `stage`'s key, as `{seen key: entry}`.
async fn pending_of(
    store: &dyn Store,
    stage: &StageKey,
) -> serde_json::Map<String, serde_json::Value> {
    let key = improv_door::kept::key(stage, "chat");
    let list = store.get("door.pending", &key).await.unwrap();
    list.and_then(|v| v.as_object().cloned())
        .unwrap_or_default()
}

/// Two stages upgraded at once, each with a chat door of this name and its own bot, both look
/// for the pending list the old version kept (two servers of one, one of the other), many
/// times over: only one stage ever lists the old message (the other would retake it and reply
/// through its own bot to the first's chat).
#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn of_two_stages_upgraded_at_once_one_adopts_the_old_pending_list() {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let other = StageKey {
        name: Some("lab".into()),
        path: "/srv/lab/stage.toml".into(),
    };
    // Adopting only: a grace longer than the clock's age retakes nothing.
    let never = Duration::from_secs(u64::MAX / 4);
    for round in 0..40 {
        let file = TestStore::default();
        let store: Arc<dyn Store> = Arc::new(file.reopen());
        leave_pending_before_stages(store.as_ref(), "1").await;
        let servers = [
            (crate::common::stage(), file.reopen()),
            (crate::common::stage(), file.reopen()),
            (other.clone(), file.reopen()),
        ];
        let looks: Vec<_> = servers
            .into_iter()
            .map(|(stage, store)| {
                let performer = Arc::new(Recording::default());
                let door = door_of(stage, &fake, Arc::new(store), performer);
                tokio::spawn(async move { door.retake(never).await.map(|r| r.len()) })
            })
            .collect();
        for look in looks {
            assert_eq!(look.await.unwrap().unwrap(), 0, "round {round}");
        }
        let listed_a = pending_of(store.as_ref(), &crate::common::stage()).await;
        let listed_b = pending_of(store.as_ref(), &other).await;
        assert_eq!(
            listed_a.len() + listed_b.len(),
            1,
            "round {round}: one stage lists the old message: {listed_a:?} {listed_b:?}"
        );
    }
}
