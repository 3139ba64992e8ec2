//! A Discord command that arrives while its door drains is not lost (Discord never sends an
//! interaction again): it is answered "deferred" (type 5) and kept in the store; the next
//! server retakes it and its reply edits the deferred answer through the interaction's token,
//! once. A command retaken past Discord's 15 minutes is reported (log and door status) and
//! answered in the channel instead.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use crate::common::KernelPerformer;
use crate::common::fake::{Fake, Kind};
use crate::common::store::TestStore;
use async_trait::async_trait;
use ed25519_dalek::{Signer, SigningKey};
use http::{HeaderMap, HeaderValue};
use improv_channel::conversation::{self, ChatDoor, Handled, Performer, Request};
use improv_channel::discord::{Discord, PublicKey};
use improv_channel::gate::{Gate, Limits};
use improv_channel::listen::{self, Intake};
use improv_channel::outbox::{Outbox, Retry};
use improv_channel::{Channel, ChannelError, Inbound};
use improv_kernel::{Outcome, ScriptedTurn};
use improv_store::Store;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

const TOKEN: &str = "discord-bot-token";
const USER: &str = "80351110224678912";
const CHANNEL: &str = "1170000000000000009";
const APP: &str = "1160000000000000002";

fn door(fake: &Fake, store: Arc<dyn Store>, performer: Arc<dyn Performer>) -> Arc<ChatDoor> {
    door_allowing(fake, store, performer, &[USER.into()])
}

fn door_allowing(
    fake: &Fake,
    store: Arc<dyn Store>,
    performer: Arc<dyn Performer>,
    allow: &[String],
) -> Arc<ChatDoor> {
    let sender = Arc::new(Discord::new(TOKEN, Some(&fake.base)).unwrap());
    Arc::new(ChatDoor {
        door: "chat".into(),
        store: store.clone(),
        gate: Gate::new(
            crate::common::stage(),
            "chat",
            allow,
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

/// Performs nothing until released: the message under way that the drain waits for.
#[derive(Default)]
struct Held {
    started: Notify,
    release: Notify,
}

#[async_trait]
impl Performer for Held {
    async fn perform(&self, _: Request) -> Result<conversation::Performed, ChannelError> {
        self.started.notify_one();
        self.release.notified().await;
        Ok(conversation::Performed {
            id: "held".into(),
            outcome: Outcome::Done,
        })
    }
}

fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn app_key() -> (SigningKey, PublicKey) {
    let app = SigningKey::from_bytes(&[7u8; 32]);
    let key = PublicKey::from_hex(&hex::encode(app.verifying_key().to_bytes())).unwrap();
    (app, key)
}

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

fn command(id: &str, token: &str, text: &str) -> String {
    json!({
        "id": id, "application_id": APP, "type": 2, "token": token, "version": 1,
        "channel_id": CHANNEL,
        "member": { "user": { "id": USER, "username": "alice" } },
        "data": { "id": "3", "name": "ask", "options": [{ "name": "text", "type": 3, "value": text }] }
    })
    .to_string()
}

fn replies(text: &str) -> Vec<ScriptedTurn> {
    vec![
        ScriptedTurn::call("reply", json!({ "text": text })),
        ScriptedTurn::say("done"),
    ]
}

static UNDER_WAY: AtomicU64 = AtomicU64::new(0);

/// Sends `body` to the door while its intake is closing (a message under way holds the
/// drain open), and returns the answer; the drain then ends.
async fn arrive_during_drain(door: &Arc<ChatDoor>, body: &str, now: i64) -> Value {
    let mut answers = arrive_all_during_drain(door, &[body.to_string()], now).await;
    answers.remove(0)
}

/// [`arrive_during_drain`] for each of `bodies` in turn, in one drain (one gate).
async fn arrive_all_during_drain(door: &Arc<ChatDoor>, bodies: &[String], now: i64) -> Vec<Value> {
    let (app, key) = app_key();
    let held = Arc::new(Held::default());
    let draining = ChatDoor {
        door: door.door.clone(),
        store: door.store.clone(),
        gate: Gate::new(
            crate::common::stage(),
            "chat",
            &[USER.into()],
            door.store.clone(),
            Limits::default(),
        ),
        outbox: door.outbox.clone(),
        performer: held.clone(),
    };
    let draining = Arc::new(draining);
    let intake = Intake::new();
    let under_way = Inbound {
        platform: Channel::Discord,
        // Another channel: its thread is not the one the command continues.
        conversation: "1170000000000000099".into(),
        thread: None,
        // One per call: a second drain on one store has its own message under way.
        message_id: format!(
            "118000000000000{:04}",
            UNDER_WAY.fetch_add(1, Ordering::Relaxed)
        ),
        sender_id: USER.into(),
        sender_name: Some("alice".into()),
        text: "the message under way".into(),
    };
    assert!(intake.perform(&draining, under_way));
    held.started.notified().await;
    let closing = tokio::spawn({
        let intake = intake.clone();
        async move { intake.close("chat").await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        !closing.is_finished(),
        "the drain waits for the message under way"
    );
    let mut answers = Vec::new();
    for body in bodies {
        let answer = listen::discord(
            &draining,
            &intake,
            &key,
            &signed(&app, now, body.as_bytes()),
            body.as_bytes(),
            now,
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        answers.push(serde_json::from_str(&answer.body).unwrap());
    }
    held.release.notify_one();
    closing.await.unwrap();
    answers
}

#[tokio::test]
async fn a_discord_command_arriving_during_a_drain_is_answered_once_by_the_next_server() {
    let fake = Fake::start(Kind::Discord, TOKEN).await;
    let file = TestStore::default();
    let first = door(
        &fake,
        Arc::new(file.reopen()),
        Arc::new(KernelPerformer::new(vec![])),
    );
    let body = command("1180000000000000001", "interaction-token-1", "status?");
    let answer = arrive_during_drain(&first, &body, now_s()).await;
    assert_eq!(answer["type"], 5, "deferred, not refused: {answer}");
    assert!(
        fake.sent().is_empty(),
        "nothing is answered by the draining server"
    );

    // The next server, on the same store: its listener retakes what was kept.
    let performer = Arc::new(KernelPerformer::new(vec![replies("All green.")]));
    let next = door(&fake, Arc::new(file.reopen()), performer.clone());
    let retaken = next.retake(Duration::ZERO).await.unwrap();
    assert!(
        matches!(retaken.as_slice(), [Handled::Performed(_)]),
        "{retaken:?}"
    );
    let sent = fake.wait_sent(1).await;
    assert_eq!(
        sent[0].conversation,
        format!("webhooks/{APP}/interaction-token-1/messages/@original"),
        "the reply edits the deferred answer through the interaction's token"
    );
    assert_eq!(sent[0].text, "All green.");

    // Once: retaking again (another restart) and the same interaction again perform nothing.
    assert_eq!(next.retake(Duration::ZERO).await.unwrap(), Vec::new());
    let again = door(&fake, Arc::new(file.reopen()), performer.clone());
    assert_eq!(again.retake(Duration::ZERO).await.unwrap(), Vec::new());
    let (app, key) = app_key();
    let now = now_s();
    let redelivered = listen::discord(
        &again,
        &Intake::new(),
        &key,
        &signed(&app, now, body.as_bytes()),
        body.as_bytes(),
        now,
    )
    .await;
    assert_eq!(redelivered.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(performer.count(), 1, "performed exactly once");
    assert_eq!(fake.sent().len(), 1, "one reply in all");
}

/// Retaken 16 minutes after it came, past the token's 15: the director is told (the door's
/// status) and the sender still gets the answer, in the channel.
#[tokio::test]
async fn a_deferred_command_past_discords_fifteen_minutes_is_reported_and_answered_in_the_channel()
{
    let fake = Fake::start(Kind::Discord, TOKEN).await;
    let file = TestStore::default();
    let first = door(
        &fake,
        Arc::new(file.reopen()),
        Arc::new(KernelPerformer::new(vec![])),
    );
    let body = command("1180000000000000002", "interaction-token-2", "late?");
    let arrived = now_s() - 16 * 60;
    let answer = arrive_during_drain(&first, &body, arrived).await;
    assert_eq!(answer["type"], 5);

    let store: Arc<dyn Store> = Arc::new(file.reopen());
    let performer = Arc::new(KernelPerformer::new(vec![replies("Sorry for the wait.")]));
    let next = door(&fake, store.clone(), performer);
    next.retake(Duration::ZERO).await.unwrap();
    let sent = fake.wait_sent(1).await;
    assert_eq!(
        sent[0].conversation, CHANNEL,
        "the expired token is not used"
    );
    assert_eq!(sent[0].text, "Sorry for the wait.");

    let dir = tempfile::tempdir().unwrap();
    let stage_file = dir.path().join("stage.toml");
    std::fs::write(
        &stage_file,
        "[stage]\nname = \"shop\"\nintent = \"Answer messages.\"\n\n[[actor]]\nname = \"lead\"\n\
         model = \"scripted/script.json\"\nprops = []\n\n[[door]]\nname = \"chat\"\nchannel = \"discord\"\n\
         token_env = \"T\"\nsecret_env = \"S\"\nallow = [\"80351110224678912\"]\n",
    )
    .unwrap();
    let stage = improv_stage::Stage::load(&stage_file).unwrap();
    let status = improv_door::status::status(&stage, store.as_ref(), 0, 5)
        .await
        .unwrap();
    let notices = &status[0].notices;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0].text.contains("15 minutes"),
        "{}",
        notices[0].text
    );
}

/// A reply made after the interaction's token stopped working (Discord answers 401 past its 15
/// minutes, even when the command was retaken in time) goes to the channel with its nonce; it
/// was refused and lost (review of the deferral, M1).
#[tokio::test]
async fn a_reply_whose_token_expired_goes_to_the_channel_instead() {
    use improv_channel::discord::Followup;
    use improv_channel::{Body, Sender};
    let fake = Fake::start(Kind::Discord, TOKEN).await;
    let discord = Discord::new(TOKEN, Some(&fake.base)).unwrap();
    let body = Body {
        text: "the answer".into(),
        reply_to: None,
        interaction: Some(Followup {
            application_id: APP.into(),
            token: "expired".into(),
            at: 0,
            may_have_landed: false,
        }),
    };
    let key = improv_store::OutboxKey {
        performance: "p-late".into(),
        seq: 7,
    };
    let id = discord.send(CHANNEL, &body, &key).await.unwrap();
    let sent = fake.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].conversation, CHANNEL);
    assert_eq!(sent[0].text, "the answer");
    assert!(
        sent[0].nonce.is_some(),
        "the channel message carries its nonce"
    );
    assert_eq!(sent[0].id, id);
}

/// Ends as `outcome` without replying (a model that failed, a performance that said nothing);
/// with `meet`, each waits until that many performances have started, so performances run one
/// after another never get past it.
struct Silent {
    outcome: Outcome,
    meet: Option<tokio::sync::Barrier>,
}

#[async_trait]
impl Performer for Silent {
    async fn perform(&self, _: Request) -> Result<conversation::Performed, ChannelError> {
        if let Some(meet) = &self.meet {
            meet.wait().await;
        }
        Ok(conversation::Performed {
            id: "silent".into(),
            outcome: self.outcome,
        })
    }
}

fn hook(token: &str) -> String {
    format!("webhooks/{APP}/{token}/messages/@original")
}

/// A deferred command whose performance fails without replying: its "thinking" answer is
/// edited with the failure, once, not left thinking while the notice goes to the channel.
#[tokio::test]
async fn a_deferred_command_whose_performance_fails_without_replying_is_answered_in_its_edit() {
    let fake = Fake::start(Kind::Discord, TOKEN).await;
    let file = TestStore::default();
    let first = door(
        &fake,
        Arc::new(file.reopen()),
        Arc::new(KernelPerformer::new(vec![])),
    );
    let body = command("1180000000000000011", "interaction-token-11", "deploy");
    assert_eq!(arrive_during_drain(&first, &body, now_s()).await["type"], 5);
    let silent = Arc::new(Silent {
        outcome: Outcome::Failed,
        meet: None,
    });
    let next = door(&fake, Arc::new(file.reopen()), silent);
    let retaken = next.retake(Duration::ZERO).await.unwrap();
    assert!(
        matches!(retaken.as_slice(), [Handled::Failed { .. }]),
        "{retaken:?}"
    );
    let sent = fake.wait_sent(1).await;
    assert_eq!(sent.len(), 1, "one answer: {sent:?}");
    assert_eq!(sent[0].conversation, hook("interaction-token-11"));
    assert!(sent[0].text.contains("went wrong"), "{}", sent[0].text);
}

/// A deferred command from a stranger who already has a pairing code: nothing is performed,
/// and the "thinking" answer says why instead of waiting until Discord gives up.
#[tokio::test]
async fn a_deferred_command_from_a_sender_awaiting_pairing_is_told_so_in_its_edit() {
    let fake = Fake::start(Kind::Discord, TOKEN).await;
    let file = TestStore::default();
    let nobody: Vec<String> = Vec::new();
    let none = || Arc::new(KernelPerformer::new(vec![])) as Arc<dyn Performer>;
    // The stranger's first message got a code (a new message in the channel).
    let stranger = door_allowing(&fake, Arc::new(file.reopen()), none(), &nobody);
    let first = Inbound {
        platform: Channel::Discord,
        conversation: CHANNEL.into(),
        thread: None,
        message_id: "1180000000000000020".into(),
        sender_id: USER.into(),
        sender_name: Some("alice".into()),
        text: "hello".into(),
    };
    assert!(matches!(
        stranger.handle(&first).await.unwrap(),
        Handled::Pairing(_)
    ));
    assert_eq!(fake.wait_sent(1).await[0].conversation, CHANNEL);

    let draining = door(&fake, Arc::new(file.reopen()), none());
    let body = command("1180000000000000021", "interaction-token-21", "deploy");
    assert_eq!(
        arrive_during_drain(&draining, &body, now_s()).await["type"],
        5
    );
    let next = door_allowing(&fake, Arc::new(file.reopen()), none(), &nobody);
    let retaken = next.retake(Duration::ZERO).await.unwrap();
    assert!(
        matches!(retaken.as_slice(), [Handled::Ignored(_)]),
        "{retaken:?}"
    );
    let sent = fake.wait_sent(2).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1].conversation, hook("interaction-token-21"));
    assert!(
        sent[1].text.contains("improv door pair"),
        "{}",
        sent[1].text
    );
    // Once: the claim is done, a further retake answers nothing more.
    assert_eq!(next.retake(Duration::ZERO).await.unwrap(), Vec::new());
    assert_eq!(fake.sent().len(), 2);
}

/// An edit whose answer was lost (Discord took it, the answer never came) and whose token has
/// expired by the resend: the edit may have landed, so the resend posts nothing to the channel
/// (a second answer) and records the reply as unconfirmed. An edit Discord said it did not do
/// (a 500) still goes to the channel once the token has expired: nothing is lost.
#[tokio::test]
async fn an_edit_whose_answer_was_lost_is_not_posted_again_after_the_token_expired() {
    use improv_channel::Body;
    use improv_channel::discord::Followup;
    use improv_channel::outbox::{Delivery, UNCONFIRMED};
    let fake = Fake::start(Kind::Discord, TOKEN).await;
    let file = TestStore::default();
    let discord = Discord::new(TOKEN, Some(&fake.base))
        .unwrap()
        .with_timeout(Duration::from_millis(500));
    let outbox = Outbox::new(
        Arc::new(file.reopen()),
        crate::common::stage(),
        "chat",
        Arc::new(discord),
        Retry::default(),
    );
    let body = |token: &str| Body {
        text: format!("the answer to {token}"),
        reply_to: None,
        interaction: Some(Followup {
            application_id: APP.into(),
            token: token.into(),
            at: now_s() as u64,
            may_have_landed: false,
        }),
    };
    let key = |seq| improv_store::OutboxKey {
        performance: "p-edit".into(),
        seq,
    };
    fake.fail_next(crate::common::fake::Fault::AcceptThenHang);
    assert!(outbox.send(key(1), CHANNEL, &body("lost")).await.is_err());
    fake.fail_next(crate::common::fake::Fault::Status(500));
    assert!(
        outbox
            .send(key(2), CHANNEL, &body("refused"))
            .await
            .is_err()
    );
    assert_eq!(fake.sent().len(), 1, "the lost answer's edit landed");

    fake.expire_tokens();
    outbox.flush().await.unwrap();
    let sent = fake.sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].conversation, hook("lost"));
    assert_eq!(
        (sent[1].conversation.as_str(), sent[1].text.as_str()),
        (CHANNEL, "the answer to refused"),
        "the edit that was refused goes to the channel"
    );
    let entries = file.entries().await;
    let lost = entries.iter().find(|e| e.message.key == key(1)).unwrap();
    assert_eq!(lost.sent_id.as_deref(), Some(UNCONFIRMED));
    // Not resent again.
    outbox.flush().await.unwrap();
    assert_eq!(fake.sent().len(), 2);
    assert!(matches!(
        outbox.send(key(1), CHANNEL, &body("lost")).await.unwrap(),
        Delivery::AlreadySent(_)
    ));
}

/// Deferred commands of different channels are retaken side by side: two whose performances
/// each wait for the other both finish (retaken one after another, the first would wait for
/// ever). One channel's commands are retaken in turn, in the order they came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_commands_are_retaken_side_by_side() {
    let fake = Fake::start(Kind::Discord, TOKEN).await;
    let file = TestStore::default();
    let first = door(
        &fake,
        Arc::new(file.reopen()),
        Arc::new(KernelPerformer::new(vec![])),
    );
    for n in 0..2 {
        let body = command(
            &format!("118000000000000003{n}"),
            &format!("side-{n}"),
            "go",
        )
        .replace(CHANNEL, &format!("{CHANNEL}{n}"));
        assert_eq!(arrive_during_drain(&first, &body, now_s()).await["type"], 5);
    }
    let meeting = Arc::new(Silent {
        outcome: Outcome::Done,
        meet: Some(tokio::sync::Barrier::new(2)),
    });
    let next = door(&fake, Arc::new(file.reopen()), meeting);
    let retaken = tokio::time::timeout(Duration::from_secs(30), next.retake(Duration::ZERO))
        .await
        .expect("both retaken commands run at once")
        .unwrap();
    assert_eq!(retaken.len(), 2, "{retaken:?}");
    // Neither replied: each "thinking" answer is closed, once.
    let mut hooks: Vec<_> = fake
        .wait_sent(2)
        .await
        .into_iter()
        .map(|r| r.conversation)
        .collect();
    hooks.sort();
    assert_eq!(hooks, vec![hook("side-0"), hook("side-1")]);
}

/// A running door looks for deferred commands again and again, not only when its listener
/// starts: a command deferred after the first look (another listener of the door drained, or
/// another server) is answered by the next one, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_door_retakes_a_command_deferred_after_it_started() {
    let fake = Fake::start(Kind::Discord, TOKEN).await;
    let file = TestStore::default();
    let performer = Arc::new(KernelPerformer::new(vec![replies("Later, but answered.")]));
    let running = door(&fake, Arc::new(file.reopen()), performer.clone());
    let cancel = tokio_util::sync::CancellationToken::new();
    let retaking =
        improv_channel::door::retake(running, Duration::from_millis(250), cancel.clone());
    // Past the first look (RETAKE_GRACE after the start), which found nothing.
    tokio::time::sleep(conversation::RETAKE_GRACE + Duration::from_secs(1)).await;
    let draining = door(
        &fake,
        Arc::new(file.reopen()),
        Arc::new(KernelPerformer::new(vec![])),
    );
    let body = command("1180000000000000040", "interaction-token-40", "status?");
    assert_eq!(
        arrive_during_drain(&draining, &body, now_s()).await["type"],
        5
    );
    // Retaken once it is RETAKE_GRACE old, by a later look.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while fake.sent().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the running door never retook the deferred command"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cancel.cancel();
    retaking.await.unwrap();
    let sent = fake.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].conversation, hook("interaction-token-40"));
    assert_eq!(sent[0].text, "Later, but answered.");
    assert_eq!(performer.count(), 1);
}

/// A reply the platform refuses for good (HTTP 400) leaves the deferred answer unanswered: it
/// is not used up, so the door's closing notice still edits it instead of leaving "thinking".
#[tokio::test]
async fn a_refused_reply_leaves_the_deferred_answer_for_the_closing_notice() {
    let fake = Fake::start(Kind::Discord, TOKEN).await;
    let file = TestStore::default();
    let first = door(
        &fake,
        Arc::new(file.reopen()),
        Arc::new(KernelPerformer::new(vec![])),
    );
    let body = command("1180000000000000077", "interaction-token-77", "status?");
    assert_eq!(arrive_during_drain(&first, &body, now_s()).await["type"], 5);

    let performer = Arc::new(KernelPerformer::new(vec![replies("refused text")]));
    let next = door(&fake, Arc::new(file.reopen()), performer);
    fake.fail_next(crate::common::fake::Fault::Status(400));
    let retaken = next.retake(Duration::ZERO).await.unwrap();
    assert!(
        matches!(retaken.as_slice(), [Handled::Performed(_)]),
        "{retaken:?}"
    );
    let sent = fake.wait_sent(1).await;
    assert_eq!(
        sent[0].conversation,
        format!("webhooks/{APP}/interaction-token-77/messages/@original"),
        "the closing notice edits the deferred answer: {sent:?}"
    );
}

/// A deferred command whose performance fails, and whose failure notice Discord refuses for
/// good (400): the notice gives the deferred answer back, so the closing word still edits it
/// rather than leaving it "thinking".
#[tokio::test]
async fn a_refused_failure_notice_leaves_the_deferred_answer_for_the_closing_word() {
    let fake = Fake::start(Kind::Discord, TOKEN).await;
    let file = TestStore::default();
    let first = door(
        &fake,
        Arc::new(file.reopen()),
        Arc::new(KernelPerformer::new(vec![])),
    );
    let body = command("1180000000000000078", "interaction-token-78", "deploy");
    assert_eq!(arrive_during_drain(&first, &body, now_s()).await["type"], 5);
    let silent = Arc::new(Silent {
        outcome: Outcome::Failed,
        meet: None,
    });
    let next = door(&fake, Arc::new(file.reopen()), silent);
    fake.fail_next(crate::common::fake::Fault::Status(400));
    let retaken = next.retake(Duration::ZERO).await.unwrap();
    assert!(
        matches!(retaken.as_slice(), [Handled::Failed { .. }]),
        "{retaken:?}"
    );
    let sent = fake.wait_sent(1).await;
    assert_eq!(sent.len(), 1, "the closing word, once: {sent:?}");
    assert_eq!(sent[0].conversation, hook("interaction-token-78"));
    assert!(sent[0].text.contains("went wrong"), "{}", sent[0].text);
}

/// A store whose first two reads of an edit's "may have landed" note wait for each other: two
/// deliveries of one edit read the note before either writes it.
struct MeetAtNote {
    inner: Arc<dyn Store>,
    reads: Arc<AtomicU64>,
    meet: Arc<tokio::sync::Barrier>,
}

impl MeetAtNote {
    async fn read(&self, scope: &str) {
        if scope == "outbox.edit" && self.reads.fetch_add(1, Ordering::SeqCst) < 2 {
            self.meet.wait().await;
        }
    }
}

#[async_trait]
impl improv_store::StoreLayer for MeetAtNote {
    fn inner(&self) -> &dyn Store {
        self.inner.as_ref()
    }
    async fn get(&self, scope: &str, key: &str) -> Result<Option<Value>, improv_store::StoreError> {
        self.read(scope).await;
        self.inner.get(scope, key).await
    }
    async fn get_versioned(
        &self,
        scope: &str,
        key: &str,
    ) -> Result<Option<improv_store::Versioned>, improv_store::StoreError> {
        self.read(scope).await;
        self.inner.get_versioned(scope, key).await
    }
}

fn edit_body(token: &str) -> improv_channel::Body {
    improv_channel::Body {
        text: format!("the answer to {token}"),
        reply_to: None,
        interaction: Some(improv_channel::discord::Followup {
            application_id: APP.into(),
            token: token.into(),
            at: now_s() as u64,
            may_have_landed: false,
        }),
    }
}

fn edit_outbox(fake: &Fake, store: Arc<dyn Store>) -> Outbox {
    let discord = Discord::new(TOKEN, Some(&fake.base))
        .unwrap()
        .with_timeout(Duration::from_millis(500));
    Outbox::new(
        store,
        crate::common::stage(),
        "chat",
        Arc::new(discord),
        Retry::default(),
    )
}

/// Two deliveries of one edit at once (two servers, or an old and a new door in a reload):
/// one's answer is lost (the edit landed), the other is told 500. The second must not put the
/// note back to "not landed" over the first's, or a resend after the token expired posts the
/// reply to the channel a second time.
#[tokio::test]
async fn two_deliveries_of_one_edit_at_once_keep_each_others_landed_note() {
    use improv_channel::outbox::UNCONFIRMED;
    let fake = Fake::start(Kind::Discord, TOKEN).await;
    let file = TestStore::default();
    let (reads, meet) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(tokio::sync::Barrier::new(2)),
    );
    let layered = || -> Arc<dyn Store> {
        Arc::new(MeetAtNote {
            inner: Arc::new(file.reopen()),
            reads: reads.clone(),
            meet: meet.clone(),
        })
    };
    let (a, b) = (edit_outbox(&fake, layered()), edit_outbox(&fake, layered()));
    let key = improv_store::OutboxKey {
        performance: "p-race".into(),
        seq: 1,
    };
    fake.fail_next(crate::common::fake::Fault::AcceptThenHang);
    fake.fail_next(crate::common::fake::Fault::Status(500));
    let body = edit_body("raced");
    let (first, second) = tokio::join!(
        a.send(key.clone(), CHANNEL, &body),
        b.send(key.clone(), CHANNEL, &body)
    );
    assert!(first.is_err() && second.is_err(), "{first:?} {second:?}");
    assert_eq!(fake.sent().len(), 1, "one edit landed, its answer lost");

    fake.expire_tokens();
    a.flush().await.unwrap();
    let sent = fake.sent();
    assert_eq!(sent.len(), 1, "nothing posted to the channel: {sent:?}");
    let entries = file.entries().await;
    let entry = entries.iter().find(|e| e.message.key == key).unwrap();
    assert_eq!(entry.sent_id.as_deref(), Some(UNCONFIRMED));
}

/// A resend of an edit that may have landed, refused for a reason other than its token (a
/// 400): that is a refusal like a first try's, recorded refused, not "unconfirmed".
#[tokio::test]
async fn a_resent_edit_refused_for_another_reason_than_its_token_is_recorded_refused() {
    use improv_channel::outbox::{Delivery, REFUSED};
    let fake = Fake::start(Kind::Discord, TOKEN).await;
    let file = TestStore::default();
    let outbox = edit_outbox(&fake, Arc::new(file.reopen()));
    let key = improv_store::OutboxKey {
        performance: "p-bad".into(),
        seq: 1,
    };
    fake.fail_next(crate::common::fake::Fault::AcceptThenHang);
    let body = edit_body("bad");
    assert!(outbox.send(key.clone(), CHANNEL, &body).await.is_err());
    fake.fail_next(crate::common::fake::Fault::Status(400));
    outbox.flush().await.unwrap();
    let entries = file.entries().await;
    let entry = entries.iter().find(|e| e.message.key == key).unwrap();
    assert_eq!(entry.sent_id.as_deref(), Some(REFUSED));
    assert!(matches!(
        outbox.send(key, CHANNEL, &body).await.unwrap(),
        Delivery::AlreadySent(id) if id == REFUSED
    ));
}

/// A flood of signed commands while the door drains is kept within the door's limits (here
/// its sender's: 5 at once by default, one of them spent by the message under way), like
/// messages while it is open: the rest are told to send again, not kept, so the pending list
/// does not grow with the flood.
#[tokio::test]
async fn commands_deferred_during_a_drain_are_rate_limited() {
    let fake = Fake::start(Kind::Discord, TOKEN).await;
    let file = TestStore::default();
    let store: Arc<dyn Store> = Arc::new(file.reopen());
    let door = door(&fake, store.clone(), Arc::new(KernelPerformer::new(vec![])));
    let bodies: Vec<String> = (0..8)
        .map(|i| {
            command(
                &format!("11900000000000000{i:02}"),
                &format!("flood-{i}"),
                "again",
            )
        })
        .collect();
    let answers = arrive_all_during_drain(&door, &bodies, now_s()).await;
    let kinds: Vec<u64> = answers
        .iter()
        .map(|a| a["type"].as_u64().unwrap())
        .collect();
    assert_eq!(kinds, [5, 5, 5, 5, 4, 4, 4, 4], "{answers:?}");
    assert!(
        answers[4]["data"]["content"]
            .as_str()
            .unwrap()
            .contains("send it again"),
        "{answers:?}"
    );
    let pending = store
        .get(
            "door.pending",
            &improv_door::kept::key(&crate::common::stage(), "chat"),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pending.as_object().unwrap().len(), 4, "{pending}");
}
