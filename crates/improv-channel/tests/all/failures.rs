//! A chat message whose performance fails is not lost in silence: a start that fails is tried
//! again with backoff, and a message that still comes to nothing (no start, or a performance
//! that ended badly: here a model answering 500 through the door's real performer) gets its
//! sender one notice through the outbox, never two.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use crate::common::fake::{Fake, Kind};
use crate::common::store::TestStore;
use async_trait::async_trait;
use improv_channel::conversation::{ChatDoor, Handled, Performed, Performer, Request};
use improv_channel::gate::{Gate, Limits};
use improv_channel::outbox::{Outbox, Retry};
use improv_channel::telegram::Telegram;
use improv_channel::{Channel, ChannelError, Inbound};
use improv_door::{DoorContext, PerformLauncher, SystemClock};
use improv_kernel::Outcome;
use improv_mock::{MockServer, openai_chat};
use improv_stage::Stage;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

const TOKEN: &str = "123456:test-token";
const NOTICE: &str = "Sorry, something went wrong";

fn message(id: u32) -> Inbound {
    Inbound {
        platform: Channel::Telegram,
        conversation: "42".into(),
        thread: None,
        message_id: id.to_string(),
        sender_id: "1001".into(),
        sender_name: Some("@alice".into()),
        text: "deploy please".into(),
    }
}

fn quick() -> Retry {
    Retry {
        first: Duration::from_millis(5),
        max: Duration::from_millis(20),
        idle: Duration::from_millis(50),
    }
}

fn door(fake: &Fake, store: Arc<TestStore>, performer: Arc<dyn Performer>) -> ChatDoor {
    let client = Arc::new(Telegram::new(TOKEN, Some(&fake.base)).unwrap());
    ChatDoor {
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
            store,
            crate::common::stage(),
            "chat",
            client,
            quick(),
        )),
        performer,
    }
}

/// Fails to start its first `failures` requests, then performs (ending `Done`).
struct FailingStarts {
    failures: u32,
    tries: AtomicU32,
}

#[async_trait]
impl Performer for FailingStarts {
    async fn perform(&self, _request: Request) -> Result<Performed, ChannelError> {
        let n = self.tries.fetch_add(1, Ordering::SeqCst);
        if n < self.failures {
            return Err(ChannelError::Setup("the stage cannot be cast".into()));
        }
        Ok(Performed {
            id: format!("p{n}"),
            outcome: Outcome::Done,
        })
    }
}

fn notices(fake: &Fake) -> usize {
    fake.sent()
        .iter()
        .filter(|r| r.text.starts_with(NOTICE))
        .count()
}

#[tokio::test]
async fn a_start_that_fails_is_tried_again() {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let performer = Arc::new(FailingStarts {
        failures: 2,
        tries: AtomicU32::new(0),
    });
    let door = door(&fake, Arc::new(TestStore::default()), performer.clone());
    let handled = door.handle(&message(1)).await.unwrap();
    assert_eq!(handled, Handled::Performed("p2".into()));
    assert_eq!(performer.tries.load(Ordering::SeqCst), 3);
    assert_eq!(notices(&fake), 0, "{:?}", fake.sent());
}

#[tokio::test]
async fn a_message_that_never_starts_tells_its_sender_once() {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let performer = Arc::new(FailingStarts {
        failures: u32::MAX,
        tries: AtomicU32::new(0),
    });
    let store = Arc::new(TestStore::default());
    let door = door(&fake, store.clone(), performer.clone());
    let handled = door.handle(&message(7)).await.unwrap();
    assert_eq!(handled, Handled::Failed { performance: None });
    assert_eq!(
        performer.tries.load(Ordering::SeqCst),
        improv_channel::conversation::START_ATTEMPTS
    );
    let sent = fake.sent();
    assert_eq!(notices(&fake), 1, "{sent:?}");
    assert_eq!(
        sent[0].reply_to.as_deref(),
        Some("7"),
        "it answers the message"
    );
    // Redelivered, the message is a duplicate: no second notice, no second try.
    assert_eq!(door.handle(&message(7)).await.unwrap(), Handled::Duplicate);
    door.outbox.flush().await.unwrap();
    assert_eq!(notices(&fake), 1);
    assert_eq!(store.entries().await.len(), 1, "one outbox entry");
}

#[tokio::test]
async fn a_performance_the_model_fails_tells_its_sender_once() {
    // The provider's own retries (four, told to wait 0 s) meet 500s too; then the mock has
    // nothing left and answers 500 to anything more.
    let failing = || openai_chat::error(500, "boom", "server_error").header("retry-after", "0");
    let model = MockServer::start((0..5).map(|_| failing()).collect())
        .await
        .unwrap();
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stage.toml");
    std::fs::write(
        &path,
        format!(
            "[[actor]]\nname = \"lead\"\nmodel = \"openai/gpt-5-mini\"\nbase_url = \"{}/v1\"\n\
             \n[[door]]\nname = \"chat\"\nchannel = \"telegram\"\n\
             token_env = \"UNUSED\"\n",
            model.url()
        ),
    )
    .unwrap();
    let stage = Arc::new(Stage::load(&path).unwrap());
    let store = Arc::new(TestStore::default());
    let ctx = DoorContext {
        stage: stage.clone(),
        stage_key: improv_door::expiry::stage_key(&stage),
        door: Arc::new(stage.doors[0].clone()),
        store: store.clone(),
        launcher: Arc::new(PerformLauncher),
        clock: Arc::new(SystemClock),
    };
    let door = door(&fake, store.clone(), improv_channel::door::performer(&ctx));
    let handled = door.handle(&message(3)).await.unwrap();
    let Handled::Failed {
        performance: Some(id),
    } = handled
    else {
        panic!("{handled:?}")
    };
    assert_eq!(
        model.requests().len(),
        5,
        "one performance, its provider's retries, and no second performance"
    );
    assert_eq!(notices(&fake), 1, "{:?}", fake.sent());
    let log = improv_log::EventLog::open(&improv_perform::state_dir(&stage)).unwrap();
    assert_eq!(
        log.find(&id).unwrap().id,
        id,
        "the failed performance is logged"
    );
    door.outbox.flush().await.unwrap();
    assert_eq!(notices(&fake), 1);
}
