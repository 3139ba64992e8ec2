//! A server with a store (`improv serve --store`) and no worker: each of its entrances records
//! itself as the queued performance's origin (`api`, `chat`, `mcp`), and the clients that wait
//! for the end (a chat, an MCP `perform`) hold the server's `--max-performances` places, as
//! performances run here do, while a `POST /performances` that queues holds none.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{TestStage, loopback_args};
use improv_serve::{Backing, ServeArgs};
use improv_store::{ListFilter, PerformanceRecord, SqliteStore, Store};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The bound on a wait for the server to act (a queued row, a place freed): not a timing.
const PATIENCE: Duration = Duration::from_secs(30);

struct Served {
    addr: SocketAddr,
    token: String,
    store: Arc<dyn Store>,
    http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
    _stage: TestStage,
}

impl Served {
    /// A server over a new SQLite store with `places` places (`--max-performances`).
    async fn start(places: usize) -> Served {
        let stage = TestStage::new(json!([]), "");
        let store: Arc<dyn Store> =
            Arc::new(SqliteStore::open(&stage.path().join("store.db")).unwrap());
        store.migrate().await.unwrap();
        let backing = Backing {
            doors: None,
            store: Some(store.clone()),
        };
        let args = ServeArgs {
            max_performances: places,
            ..loopback_args()
        };
        let server = improv_serve::bind_with(stage.stage.clone(), &args, backing)
            .await
            .unwrap();
        let (addr, token) = (server.addr(), server.token().to_string());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Served {
            addr,
            token,
            store,
            http: improv_models::client_builder().unwrap().build().unwrap(),
            _stop: stop,
            _stage: stage,
        }
    }

    /// A streaming chat; the response is open while it is held.
    async fn chat(&self, content: &str) -> reqwest::Response {
        let body = json!({
            "model": "serve-test",
            "messages": [{"role": "user", "content": content}],
            "stream": true,
        });
        self.http
            .post(format!("http://{}/v1/chat/completions", self.addr))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn mcp_client(&self) -> RunningService<RoleClient, ()> {
        let url = format!("http://{}/mcp", self.addr);
        let config =
            StreamableHttpClientTransportConfig::with_uri(url).auth_header(self.token.clone());
        ().serve(StreamableHttpClientTransport::with_client(
            improv_models::client_builder().unwrap().build().unwrap(),
            config,
        ))
        .await
        .unwrap()
    }

    async fn queued(&self) -> Vec<PerformanceRecord> {
        self.store.list(&ListFilter::default()).await.unwrap()
    }

    /// Waits until the store holds `n` performances.
    async fn until_queued(&self, n: usize) -> Vec<PerformanceRecord> {
        let start = Instant::now();
        loop {
            let all = self.queued().await;
            if all.len() >= n || start.elapsed() > PATIENCE {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The origin the server's API shows for performance `id`.
    async fn shown_origin(&self, id: &str) -> String {
        let shown: Value = self
            .http
            .get(format!("http://{}/performances/{id}", self.addr))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        shown["origin"].as_str().unwrap_or_default().to_string()
    }
}

fn perform_call(intent: &str) -> CallToolRequestParams {
    CallToolRequestParams::new("perform")
        .with_arguments(json!({"intent": intent}).as_object().unwrap().clone())
}

fn performance_of(response: &reqwest::Response) -> String {
    response.headers()["x-improv-performance"]
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_entrance_is_the_origin_and_waiting_clients_hold_the_places() {
    let served = Served::start(2).await;

    // Two clients wait for performances no worker takes: a chat and an MCP `perform`.
    let chat = served.chat("the first chat").await;
    assert_eq!(chat.status().as_u16(), 200);
    let chatted = performance_of(&chat);
    let waiting = served.mcp_client().await;
    let call = tokio::spawn(async move {
        let result = waiting.call_tool(perform_call("the first call")).await;
        (waiting, result)
    });
    let all = served.until_queued(2).await;
    let called = all
        .iter()
        .find(|p| p.id != chatted)
        .map(|p| p.id.clone())
        .expect("the MCP call queued nothing");

    // The places are taken: a third waiting client is refused before anything is queued.
    let refused = served.chat("one chat too many").await;
    assert_eq!(refused.status().as_u16(), 429);
    let error: Value = refused.json().await.unwrap();
    assert_eq!(error["error"]["code"], "too_many_performances", "{error}");
    let other = served.mcp_client().await;
    let result = other
        .call_tool(perform_call("one call too many"))
        .await
        .unwrap();
    let text = serde_json::to_string(&result.content).unwrap();
    assert_eq!(result.is_error, Some(true), "{text}");
    assert!(text.contains("--max-performances"), "{text}");
    assert_eq!(
        served.queued().await.len(),
        2,
        "a refused client's performance was queued"
    );

    // A queued `POST /performances` holds no place: its client is answered at once.
    let posted: Value = served
        .http
        .post(format!("http://{}/performances", served.addr))
        .bearer_auth(&served.token)
        .json(&json!({"intent": "queued through the API"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(posted["queued"], true, "{posted}");
    let api = posted["id"].as_str().unwrap().to_string();

    for (id, origin) in [(&chatted, "chat"), (&called, "mcp"), (&api, "api")] {
        assert_eq!(served.store.performance(id).await.unwrap().origin, origin);
        assert_eq!(served.shown_origin(id).await, origin, "{id}");
    }

    // The chat's client leaves: its place is free for the next one.
    drop(chat);
    let start = Instant::now();
    let next = loop {
        let next = served.chat("the next chat").await;
        if next.status().as_u16() != 429 || start.elapsed() > PATIENCE {
            break next;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        next.status().as_u16(),
        200,
        "the leaving chat kept its place"
    );
    drop(next);
    call.abort();
    other.cancel().await.unwrap();
}
