//! A server with a store (`improv serve --store`) that stops while a chat client streams: the
//! connection it closes then is not the client leaving, so the chat's performance, queued for
//! the workers, is not stopped (a restart of the server loses none of them).

use crate::common::{TestStage, loopback_args};
use improv_serve::Backing;
use improv_store::{SqliteStore, State, Store};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a stop the server asked for on its way out would take to land (it is spawned as
/// the aborted connection drops; the store is a local file).
const STOP_LANDS: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_leaves_a_streaming_chats_performance_queued() {
    let stage = TestStage::new(json!([]), "");
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&stage.path().join("store.db")).unwrap());
    store.migrate().await.unwrap();
    let backing = Backing {
        doors: None,
        store: Some(store.clone()),
    };
    let server = improv_serve::bind_with(stage.stage.clone(), &loopback_args(), backing)
        .await
        .unwrap();
    let (addr, token) = (server.addr(), server.token().to_string());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let http = improv_models::client_builder().unwrap().build().unwrap();
    let body = json!({
        "model": "serve-test",
        "messages": [{"role": "user", "content": "no worker takes this"}],
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
    // The server stops; its connections close after their grace (the stream's is aborted).
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
    drop(response);
    let start = Instant::now();
    while start.elapsed() < STOP_LANDS {
        let record = store.performance(&id).await.unwrap();
        assert_eq!(
            record.state,
            State::Queued,
            "the server's shutdown stopped the chat's performance: {}",
            record.reason
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
