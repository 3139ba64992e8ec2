//! The daemon answers `alive` (what `improv serve` asks before each systemd WATCHDOG=1) only
//! while its store answers: a wedged store leaves the question unanswered, so the watchdog is
//! not fed and systemd restarts the server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{Counting, TestStage, store};
use async_trait::async_trait;
use improv_door::{Daemon, SimClock};
use improv_store::{Store, StoreError, StoreLayer};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A store whose reads hang while `wedged` is set.
struct Wedged {
    inner: Arc<dyn Store>,
    wedged: AtomicBool,
}

#[async_trait]
impl StoreLayer for Wedged {
    fn inner(&self) -> &dyn Store {
        self.inner.as_ref()
    }
    async fn get(&self, scope: &str, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        if self.wedged.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.get(scope, key).await
    }
}

#[tokio::test]
async fn a_daemon_whose_store_is_wedged_does_not_answer_alive() {
    let t = TestStage::new("");
    let wedged = Arc::new(Wedged {
        inner: store(&t.db()).await,
        wedged: AtomicBool::new(false),
    });
    let daemon = Daemon::new(
        t.stage.clone(),
        wedged.clone(),
        Arc::new(Counting::default()),
        Arc::new(SimClock::new(1_795_651_200_000)),
        None,
    );
    daemon.start().await;
    assert!(daemon.alive().await);
    wedged.wedged.store(true, Ordering::SeqCst);
    let asked = tokio::time::timeout(Duration::from_millis(200), daemon.alive()).await;
    assert!(asked.is_err(), "a wedged daemon answered alive: {asked:?}");
    wedged.wedged.store(false, Ordering::SeqCst);
    assert!(daemon.alive().await);
    daemon.drain().await;
}

/// A reload waits for a removed door's running firing; meanwhile `alive` still answers (else a
/// SIGHUP during a long scheduled performance starves systemd's watchdog and it kills the server).
#[tokio::test]
async fn alive_answers_while_a_reload_waits_for_a_running_firing() {
    let t = TestStage::new("[[door]]\nname = \"tick\"\nevery = \"1m\"\nintent = \"tick\"\n");
    let launcher = Arc::new(Counting::default());
    let held = launcher.hold.clone();
    let hold = held.write().await;
    let clock = Arc::new(SimClock::new(1_795_651_200_000));
    let daemon = Daemon::new(
        t.stage.clone(),
        store(&t.db()).await,
        launcher.clone(),
        clock.clone(),
        None,
    );
    daemon.start().await;
    // The door's task may open after a first advance: the clock moves until it fires.
    let fired = tokio::time::timeout(Duration::from_secs(30), async {
        while launcher.ids().is_empty() {
            clock.advance(Duration::from_secs(60));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(fired.is_ok(), "the door did not fire");
    let empty = TestStage::new("");
    let reloading = tokio::spawn({
        let daemon = daemon.clone();
        let stage = empty.stage.clone();
        async move { daemon.reload(stage).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !reloading.is_finished(),
        "the reload did not wait for the firing"
    );
    let asked = tokio::time::timeout(Duration::from_secs(10), daemon.alive()).await;
    assert_eq!(asked, Ok(true), "alive did not answer during the reload");
    drop(hold);
    let changes = reloading.await.unwrap();
    assert_eq!(changes, vec![improv_door::Change::Removed("tick".into())]);
    daemon.drain().await;
}
