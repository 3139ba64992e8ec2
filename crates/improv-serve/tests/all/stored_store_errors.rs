//! A chat on `improv serve --store` whose store fails for a moment (PostgreSQL restarting)
//! while the server follows the performance: the stream waits it out and ends as the
//! performance did, with `[DONE]`, rather than ending silently, and nothing is stopped.

use crate::common::{TestStage, loopback_args};
use improv_kernel::{Event, EventKind, Outcome};
use improv_serve::Backing;
use improv_store::{Progress, SqliteStore, Store, StoreError, StoreLayer};
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A store whose next `failures` reads of events or progress fail as an unavailable one does.
struct Restarting {
    inner: Arc<dyn Store>,
    failures: AtomicUsize,
}

impl Restarting {
    fn fail(&self) -> Result<(), StoreError> {
        let failed = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        match failed {
            Ok(_) => Err(StoreError::Unavailable {
                store: "test".into(),
                message: "the database system is starting up".into(),
            }),
            Err(_) => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl StoreLayer for Restarting {
    fn inner(&self) -> &dyn Store {
        self.inner.as_ref()
    }
    async fn events(&self, id: &str, after: u64, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.fail()?;
        self.inner.events(id, after, limit).await
    }
    async fn progress(&self, id: &str) -> Result<Progress, StoreError> {
        self.fail()?;
        self.inner.progress(id).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_stream_outlasts_a_store_restart() {
    let stage = TestStage::new(json!([]), "");
    let inner: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&stage.path().join("store.db")).unwrap());
    inner.migrate().await.unwrap();
    let store = Arc::new(Restarting {
        inner: inner.clone(),
        failures: AtomicUsize::new(0),
    });
    let backing = Backing {
        doors: None,
        store: Some(store.clone()),
    };
    let server = improv_serve::bind_with(stage.stage.clone(), &loopback_args(), backing)
        .await
        .unwrap();
    let (addr, token) = (server.addr(), server.token().to_string());
    let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let http = improv_models::client_builder().unwrap().build().unwrap();
    let body = json!({
        "model": "serve-test",
        "messages": [{"role": "user", "content": "answer through a restart"}],
        "stream": true,
    });
    let response = http
        .post(format!("http://{addr}/v1/chat/completions"))
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let id = response.headers()["x-improv-performance"]
        .to_str()
        .unwrap()
        .to_string();
    // The database goes away for a few reads; meanwhile a worker performs the chat.
    store.failures.store(4, Ordering::SeqCst);
    let (lease, _) = inner
        .claim("w", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    let said = Event {
        seq: 1,
        at: "2026-11-30T02:00:00.000Z".into(),
        actor: None,
        kind: EventKind::TextDelta {
            text: "answered".into(),
        },
    };
    inner.append(&lease, &[said]).await.unwrap();
    inner.finish(&lease, Outcome::Done, "done").await.unwrap();
    let text = tokio::time::timeout(Duration::from_secs(60), response.text())
        .await
        .expect("the stream never ended")
        .unwrap();
    assert_eq!(store.failures.load(Ordering::SeqCst), 0,);
    assert!(text.contains("\"content\":\"answered\""), "{text}");
    assert!(text.contains("\"finish_reason\":\"stop\""), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let record = inner.performance(&id).await.unwrap();
    assert_eq!(
        store.failures.load(Ordering::SeqCst),
        0,
        "the store never failed"
    );
    assert_eq!(record.outcome, Some(Outcome::Done), "{}", record.reason);
}
