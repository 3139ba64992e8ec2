//! A chat door's records in the store stay bounded whatever the uptime (issue 16): claims and
//! thread records expire by age and are capped by count, swept by the door's listener on its
//! clock; and the pending list, changed by compare-and-set, loses no entry when two servers on
//! one store add to it at once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

mod common;

use async_trait::async_trait;
use common::fake::{Fake, Kind};
use common::store::TestStore;
use improv_channel::conversation::{ChatDoor, Handled, Performed, Performer, Request};
use improv_channel::gate::{Gate, Limits, Rate};
use improv_channel::outbox::{Outbox, Retry};
use improv_channel::telegram::Telegram;
use improv_channel::{Channel, ChannelError, Inbound};
use improv_door::expiry::{self, Expiry};
use improv_door::{Clock, SimClock};
use improv_kernel::Outcome;
use improv_store::{Store, StoreError, StoreLayer};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const TOKEN: &str = "123456:test-token";
const HOUR: Duration = Duration::from_secs(3600);

/// Performs at once, doing nothing: the records a message leaves are what is measured.
#[derive(Default)]
struct Instant(AtomicUsize);

#[async_trait]
impl Performer for Instant {
    async fn perform(&self, _: Request) -> Result<Performed, ChannelError> {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Performed {
            id: format!("p{n}"),
            outcome: Outcome::Done,
        })
    }
}

/// A store on which no claimed message gets to start (the write marking it started fails), so
/// every message accepted stays on the door's pending list.
struct NeverStarts(TestStore);

#[async_trait]
impl StoreLayer for NeverStarts {
    fn inner(&self) -> &dyn Store {
        &self.0
    }
    async fn put(
        &self,
        scope: &str,
        key: &str,
        value: &serde_json::Value,
        only_if_absent: bool,
    ) -> Result<bool, StoreError> {
        if value["state"] == "started" {
            return Err(StoreError::Unavailable {
                store: "test".into(),
                message: "stopped before the start".into(),
            });
        }
        Store::put(&self.0, scope, key, value, only_if_absent).await
    }
    async fn put_if(
        &self,
        scope: &str,
        key: &str,
        expected: Option<i64>,
        value: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        if value["state"] == "started" {
            return Err(StoreError::Unavailable {
                store: "test".into(),
                message: "stopped before the start".into(),
            });
        }
        Store::put_if(&self.0, scope, key, expected, value).await
    }
}

/// The store of a handler that stalls before starting its message (reading the thread), until
/// released: the handler from before a reload, slow while the new listener retakes.
struct StallsBeforeStart {
    inner: TestStore,
    stalled: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

#[async_trait]
impl StoreLayer for StallsBeforeStart {
    fn inner(&self) -> &dyn Store {
        &self.inner
    }
    async fn get(&self, scope: &str, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        if scope == "door.thread" {
            self.stalled.notify_one();
            self.release.notified().await;
        }
        Store::get(&self.inner, scope, key).await
    }
}

/// Limits no test here reaches.
fn open_limits() -> Limits {
    let wide = Rate {
        burst: 100_000,
        every: Duration::from_millis(1),
    };
    Limits {
        door: wide,
        sender: wide,
        max_running: 1000,
    }
}

fn door(fake: &Fake, store: Arc<dyn Store>, performer: Arc<dyn Performer>) -> Arc<ChatDoor> {
    let client = Arc::new(Telegram::new(TOKEN, Some(&fake.base)).unwrap());
    Arc::new(ChatDoor {
        door: "chat".into(),
        store: store.clone(),
        gate: Gate::new(
            common::stage(),
            "chat",
            &["@alice".into()],
            store.clone(),
            open_limits(),
        ),
        outbox: Arc::new(Outbox::new(
            store,
            common::stage(),
            "chat",
            client,
            Retry::default(),
        )),
        performer,
    })
}

/// Message `n`, in chat `n` (its own thread).
fn message(n: usize) -> Inbound {
    Inbound {
        platform: Channel::Telegram,
        conversation: format!("{}", 100 + n),
        thread: None,
        message_id: format!("{n}"),
        sender_id: "1001".into(),
        sender_name: Some("@alice".into()),
        text: format!("message {n}"),
    }
}

async fn claim_of(store: &dyn Store, n: usize) -> Option<serde_json::Value> {
    let key = format!("chat/telegram/{}/{n}", 100 + n);
    let key = improv_door::kept::key(&common::stage(), &key);
    store.get("door.inbound", &key).await.unwrap()
}

async fn thread_of(store: &dyn Store, n: usize) -> Option<serde_json::Value> {
    store
        .get(
            "door.thread",
            &improv_door::kept::key(&common::stage(), &format!("chat/{}", 100 + n)),
        )
        .await
        .unwrap()
}

/// How many of messages `0..n` still have a claim, and a thread record.
async fn records(store: &dyn Store, n: usize) -> (usize, usize) {
    let (mut claims, mut threads) = (0, 0);
    for i in 0..n {
        claims += usize::from(claim_of(store, i).await.is_some());
        threads += usize::from(thread_of(store, i).await.is_some());
    }
    (claims, threads)
}

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.unwrap().as_millis() as i64
}

/// Claims go after 48 hours, thread records after 30 days, and past its count a scope keeps
/// only its newest: swept through the door's own rules on a simulated clock.
#[tokio::test]
async fn claims_and_threads_expire_by_age_and_are_capped_by_count() {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let store: Arc<dyn Store> = Arc::new(TestStore::default());
    let chat = door(&fake, store.clone(), Arc::new(Instant::default()));
    const N: usize = 30;
    for n in 0..N {
        assert!(matches!(
            chat.handle(&message(n)).await.unwrap(),
            Handled::Performed(_)
        ));
    }
    let rules = improv_channel::door::expiry();
    let clock = SimClock::new(now_ms());
    assert_eq!(
        expiry::sweep(store.as_ref(), &rules, clock.now())
            .await
            .unwrap(),
        0
    );
    assert_eq!(records(store.as_ref(), N).await, (N, N));

    // Over a cap: the oldest go first, the newest stay.
    let capped: Vec<Expiry> = rules.iter().map(|r| Expiry { max: 10, ..*r }).collect();
    expiry::sweep(store.as_ref(), &capped, clock.now())
        .await
        .unwrap();
    assert_eq!(records(store.as_ref(), N).await, (10, 10));
    assert!(
        claim_of(store.as_ref(), N - 1).await.is_some(),
        "the newest is kept"
    );
    assert!(
        claim_of(store.as_ref(), 0).await.is_none(),
        "the oldest went first"
    );

    clock.advance(47 * HOUR);
    expiry::sweep(store.as_ref(), &rules, clock.now())
        .await
        .unwrap();
    assert_eq!(
        records(store.as_ref(), N).await,
        (10, 10),
        "not yet 48 hours"
    );
    clock.advance(2 * HOUR);
    expiry::sweep(store.as_ref(), &rules, clock.now())
        .await
        .unwrap();
    assert_eq!(
        records(store.as_ref(), N).await,
        (0, 10),
        "claims expire after 48 hours"
    );
    clock.advance(30 * 24 * HOUR);
    expiry::sweep(store.as_ref(), &rules, clock.now())
        .await
        .unwrap();
    assert_eq!(
        records(store.as_ref(), N).await,
        (0, 0),
        "threads after 30 days"
    );
}

/// The listener `improv serve` runs sweeps on the door's clock: a claim 49 simulated hours old
/// is gone once the sweep comes round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_doors_listener_sweeps_expired_claims_on_its_clock() {
    const TOKEN_ENV: &str = "IMPROV_CHANNEL_BOUNDED_TEST_TOKEN";
    // SAFETY: the one test of this binary that reads the environment, set before anything
    // reads it.
    unsafe { std::env::set_var(TOKEN_ENV, TOKEN) };
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let dir = tempfile::tempdir().unwrap();
    let stage_file = dir.path().join("stage.toml");
    std::fs::write(
        &stage_file,
        format!(
            "[stage]\nname = \"chat\"\nintent = \"Answer messages.\"\n\n[[actor]]\nname = \"lead\"\n\
             model = \"scripted/script.json\"\nprops = []\n\n[edges]\nsandbox = \"off\"\n\n\
             [[door]]\nname = \"chat\"\nchannel = \"telegram\"\ntoken_env = \"{TOKEN_ENV}\"\n\
             allow = [\"@alice\"]\napi_base = \"{}\"\n",
            fake.base
        ),
    )
    .unwrap();
    let stage = Arc::new(improv_stage::Stage::load(&stage_file).unwrap());
    let door_def = Arc::new(stage.doors[0].clone());
    let file = TestStore::default();
    let chat = door(&fake, Arc::new(file.reopen()), Arc::new(Instant::default()));
    chat.handle(&message(1)).await.unwrap();
    let store: Arc<dyn Store> = Arc::new(file.reopen());
    assert!(claim_of(store.as_ref(), 1).await.is_some());

    let clock = Arc::new(SimClock::new(now_ms()));
    let began = clock.now();
    let listener = (improv_channel::door::listeners())(&door_def).unwrap();
    let ctx = improv_door::DoorContext {
        stage: stage.clone(),
        stage_key: improv_door::expiry::stage_key(&stage),
        door: door_def,
        store: store.clone(),
        launcher: Arc::new(improv_door::PerformLauncher),
        clock: clock.clone(),
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn({
        let cancel = cancel.clone();
        async move { listener.run(ctx, cancel).await }
    });
    let start = std::time::Instant::now();
    while claim_of(store.as_ref(), 1).await.is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the listener never swept the expired claim"
        );
        clock.advance(HOUR);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Not before the claim was 48 hours old.
    assert!(clock.now() - began >= 48 * 3600 * 1000);
    cancel.cancel();
    running.await.unwrap().unwrap();
}

/// Two servers on one store take messages at once: every message claimed is on the pending
/// list (none started here), none lost to the other's write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_one_store_lose_no_pending_message() {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let file = TestStore::default();
    let performer: Arc<dyn Performer> = Arc::new(Instant::default());
    let servers = [
        door(
            &fake,
            Arc::new(NeverStarts(file.reopen())),
            performer.clone(),
        ),
        door(&fake, Arc::new(NeverStarts(file.reopen())), performer),
    ];
    let mut tasks = Vec::new();
    for n in 0..40 {
        let server = servers[n % 2].clone();
        tasks.push(tokio::spawn(async move {
            assert!(server.handle(&message(n)).await.is_err(), "never starts");
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let store: Arc<dyn Store> = Arc::new(file.reopen());
    let pending = store
        .get(
            "door.pending",
            &improv_door::kept::key(&common::stage(), "chat"),
        )
        .await
        .unwrap();
    let pending = pending.unwrap();
    assert_eq!(pending.as_object().unwrap().len(), 40, "{pending}");
}

/// A handler stalled before starting its message past the retake grace (the listener from
/// before a SIGHUP reload) while the new listener retakes the message: it is performed once,
/// by the retake; the stalled handler, released, performs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_stalled_across_a_reload_does_not_perform_a_retaken_message_again() {
    let fake = Fake::start(Kind::Telegram, TOKEN).await;
    let file = TestStore::default();
    let performer = Arc::new(Instant::default());
    let stalling = Arc::new(StallsBeforeStart {
        inner: file.reopen(),
        stalled: Default::default(),
        release: Default::default(),
    });
    let old = door(&fake, stalling.clone(), performer.clone());
    let handling = tokio::spawn({
        let old = old.clone();
        async move { old.handle(&message(1)).await }
    });
    stalling.stalled.notified().await;

    let reloaded = door(&fake, Arc::new(file.reopen()), performer.clone());
    let retaken = reloaded.retake(Duration::ZERO).await.unwrap();
    assert!(
        matches!(retaken.as_slice(), [Handled::Performed(_)]),
        "{retaken:?}"
    );
    stalling.release.notify_one();
    let late = handling.await.unwrap().unwrap();
    assert_eq!(late, Handled::Duplicate);
    assert_eq!(performer.0.load(Ordering::SeqCst), 1, "performed twice");
}
