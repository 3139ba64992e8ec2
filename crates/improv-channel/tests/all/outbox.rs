//! The outbox against each platform's fake: injected 5xx, 429s, lost answers and a crash
//! between send and record never make a platform receive a message twice.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use crate::common::fake::{Fake, Fault, Kind};
use crate::common::store::TestStore;
use improv_channel::discord::Discord;
use improv_channel::outbox::{Delivery, Outbox, Retry, UNCONFIRMED};
use improv_channel::slack::Slack;
use improv_channel::telegram::Telegram;
use improv_channel::{Body, Sender};
use improv_store::{OutboxKey, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "123456:test-token";

/// Short waits, so a retry comes quickly; no assertion depends on them.
fn quick() -> Retry {
    Retry {
        first: Duration::from_millis(20),
        max: Duration::from_millis(200),
        idle: Duration::from_millis(50),
    }
}

async fn platform(kind: Kind, timeout: Duration) -> (Fake, Arc<dyn Sender>) {
    let fake = Fake::start(kind, TOKEN).await;
    let base = Some(fake.base.as_str());
    let sender: Arc<dyn Sender> = match kind {
        Kind::Telegram => Arc::new(Telegram::new(TOKEN, base).unwrap().with_timeout(timeout)),
        Kind::Slack => Arc::new(Slack::new(TOKEN, base).unwrap().with_timeout(timeout)),
        Kind::Discord => Arc::new(Discord::new(TOKEN, base).unwrap().with_timeout(timeout)),
    };
    (fake, sender)
}

fn key(seq: u64) -> OutboxKey {
    OutboxKey {
        performance: "p1".into(),
        seq,
    }
}

fn body(text: &str) -> Body {
    Body {
        text: text.into(),
        reply_to: None,
        interaction: None,
    }
}

const ALL: [Kind; 3] = [Kind::Telegram, Kind::Slack, Kind::Discord];

#[tokio::test]
async fn five_hundreds_and_429s_are_retried_and_each_message_arrives_once() {
    for kind in ALL {
        let (fake, sender) = platform(kind, Duration::from_secs(10)).await;
        let store = Arc::new(TestStore::default());
        let outbox = Arc::new(Outbox::new(
            store.clone(),
            crate::common::stage(),
            "chat",
            sender,
            quick(),
        ));
        fake.fail_next(Fault::Status(502));
        fake.fail_next(Fault::Status(500));
        fake.fail_next(Fault::RateLimited(0.0));
        fake.fail_next(Fault::Status(503));
        let first = outbox.send(key(7), "42", &body("hello")).await;
        assert!(
            first.is_err(),
            "{kind:?}: the first send met a 502: {first:?}"
        );
        let cancel = CancellationToken::new();
        let task = tokio::spawn({
            let (outbox, cancel) = (outbox.clone(), cancel.clone());
            async move { outbox.run(cancel).await }
        });
        let sent = fake.wait_sent(1).await;
        // Once recorded, neither the retry task nor a second send of the same key sends it.
        let again = outbox.send(key(7), "42", &body("hello")).await.unwrap();
        assert_eq!(again, Delivery::AlreadySent(sent[0].id.clone()), "{kind:?}");
        outbox.flush().await.unwrap();
        cancel.cancel();
        task.await.unwrap();
        assert_eq!(fake.sent().len(), 1, "{kind:?}: {:?}", fake.sent());
        assert_eq!(
            fake.send_requests(),
            5,
            "{kind:?}: four failures, one success"
        );
        let entries = store.entries().await;
        assert_eq!(entries[0].sent_id.as_deref(), Some(sent[0].id.as_str()));
    }
}

/// The platform took the message but its answer never came (a timeout): Discord gets it again
/// with the same nonce and returns the same message; Telegram and Slack are not sent it again.
#[tokio::test]
async fn a_lost_answer_never_makes_a_second_message() {
    for kind in ALL {
        let (fake, sender) = platform(kind, Duration::from_millis(300)).await;
        let store = Arc::new(TestStore::default());
        let outbox = Outbox::new(
            store.clone(),
            crate::common::stage(),
            "chat",
            sender,
            quick(),
        );
        fake.fail_next(Fault::AcceptThenHang);
        let first = outbox.send(key(3), "42", &body("once")).await;
        outbox.flush().await.unwrap();
        outbox.flush().await.unwrap();
        let sent = fake.sent();
        assert_eq!(sent.len(), 1, "{kind:?}: {sent:?}");
        let recorded = store.entries().await[0].sent_id.clone();
        if kind == Kind::Discord {
            assert!(first.is_err(), "{first:?}");
            assert_eq!(
                fake.send_requests(),
                2,
                "Discord: resent with the same nonce"
            );
            assert_eq!(recorded.as_deref(), Some(sent[0].id.as_str()));
        } else {
            assert_eq!(first.unwrap(), Delivery::Unconfirmed, "{kind:?}");
            assert_eq!(fake.send_requests(), 1, "{kind:?}: never resent");
            assert_eq!(recorded.as_deref(), Some(UNCONFIRMED));
        }
    }
}

/// A crash between send and record: the sender is dropped after the fake accepted the message
/// and before the answer came; a new outbox on the same store (the restarted daemon) goes on.
#[tokio::test]
async fn a_crash_between_send_and_record_never_sends_twice() {
    for kind in ALL {
        let (fake, sender) = platform(kind, Duration::from_secs(30)).await;
        let store: Arc<TestStore> = Arc::new(TestStore::default());
        fake.fail_next(Fault::AcceptThenHang);
        let before = Arc::new(Outbox::new(
            store.clone(),
            crate::common::stage(),
            "chat",
            sender.clone(),
            quick(),
        ));
        let sending =
            tokio::spawn(async move { before.send(key(9), "42", &body("after crash")).await });
        fake.wait_sent(1).await;
        sending.abort();
        let _ = sending.await;
        assert_eq!(
            store.entries().await[0].sent_id,
            None,
            "{kind:?}: not recorded before the crash"
        );

        // The restarted daemon: the same store file, a new connection.
        let after = Outbox::new(
            Arc::new(store.reopen()),
            crate::common::stage(),
            "chat",
            sender,
            quick(),
        );
        after.flush().await.unwrap();
        after.flush().await.unwrap();
        assert_eq!(fake.sent().len(), 1, "{kind:?}: {:?}", fake.sent());
        let recorded = store.entries().await[0].sent_id.clone();
        if kind == Kind::Discord {
            assert_eq!(
                recorded.as_deref(),
                Some(fake.sent()[0].id.as_str()),
                "exactly once, id known"
            );
        } else {
            assert_eq!(
                recorded.as_deref(),
                Some(UNCONFIRMED),
                "{kind:?}: at most once"
            );
        }
    }
}

/// Two daemons (two outboxes on one store, as after a restart that overlapped the old process)
/// flush the same pending messages at once, many times: no message reaches Telegram twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_outboxes_never_send_a_message_twice() {
    let (fake, sender) = platform(Kind::Telegram, Duration::from_secs(10)).await;
    let store = Arc::new(TestStore::default());
    let a = Arc::new(Outbox::new(
        store.clone(),
        crate::common::stage(),
        "chat",
        sender.clone(),
        quick(),
    ));
    let b = Arc::new(Outbox::new(
        Arc::new(store.reopen()),
        crate::common::stage(),
        "chat",
        sender,
        quick(),
    ));
    for round in 0..30u64 {
        for i in 0..10 {
            let message = improv_store::OutboxMessage {
                key: key(round * 100 + i),
                stage: crate::common::stage().id(),
                door: "chat".into(),
                conversation: "42".into(),
                body: serde_json::to_value(body(&format!("{round}/{i}"))).unwrap(),
            };
            store.outbox_put(&message).await.unwrap();
        }
        let (ra, rb) = tokio::join!(
            tokio::spawn({
                let a = a.clone();
                async move { a.flush().await }
            }),
            tokio::spawn({
                let b = b.clone();
                async move { b.flush().await }
            }),
        );
        ra.unwrap().unwrap();
        rb.unwrap().unwrap();
    }
    let sent = fake.sent();
    let mut texts: Vec<_> = sent.iter().map(|r| r.text.clone()).collect();
    texts.sort();
    let total = texts.len();
    texts.dedup();
    assert_eq!(total, texts.len(), "a message arrived twice");
    assert!(total <= 300);
    // Every message was either sent or (when the other daemon held its attempt) recorded.
    assert!(store.entries().await.iter().all(|e| e.sent_id.is_some()));
}

/// Two stages share a store, each with a chat door `chat` and its own bot: the replies each
/// stage's door could not send at first are sent later by that stage's outbox alone, to its own
/// bot, whichever outbox flushes first; neither is marked sent by the other.
#[tokio::test]
async fn two_stages_chat_doors_of_one_name_each_send_only_their_own_replies() {
    let store = Arc::new(TestStore::default());
    let stages = [
        crate::common::stage(),
        improv_store::StageKey {
            name: None,
            path: "/srv/other/stage.toml".into(),
        },
    ];
    let mut doors = Vec::new();
    for (n, stage) in stages.into_iter().enumerate() {
        let (fake, sender) = platform(Kind::Telegram, Duration::from_secs(10)).await;
        let outbox = Outbox::new(store.clone(), stage, "chat", sender, quick());
        fake.fail_next(Fault::Status(502));
        let reply = OutboxKey {
            performance: format!("p-{n}"),
            seq: 1,
        };
        let first = outbox.send(reply, "42", &body(&format!("stage {n}"))).await;
        assert!(first.is_err(), "stage {n}: the first send met a 502");
        doors.push((fake, outbox));
    }
    for (_, outbox) in &doors {
        outbox.flush().await.unwrap();
    }
    for (n, (fake, _)) in doors.iter().enumerate() {
        let texts: Vec<String> = fake.sent().into_iter().map(|r| r.text).collect();
        assert_eq!(texts, [format!("stage {n}")], "stage {n}'s bot");
    }
}
