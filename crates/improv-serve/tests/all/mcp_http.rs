//! The stage as an MCP server over streamable HTTP (`/mcp` on `improv serve`), driven by the
//! official Rust SDK's client: refused without the token; with it, the `perform` tool runs a
//! real performance of the scripted stage, bounded by the server's `--max-performances`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest};
use rmcp::service::{PeerRequestOptions, RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_clients_cast_the_stage_over_streamable_http() {
    let stage = common::TestStage::new(json!([{"say": "the answer is 42"}]), "");
    let server = common::serve(&stage).await;

    let refused = improv_models::client_builder()
        .unwrap()
        .build()
        .unwrap()
        .post(server.url("/mcp"))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        403,
        "not 401: that starts OAuth in MCP clients"
    );

    let config = StreamableHttpClientTransportConfig::with_uri(server.url("/mcp"))
        .auth_header(server.token.clone());
    let client = ()
        .serve(StreamableHttpClientTransport::with_client(
            improv_models::client_builder().unwrap().build().unwrap(),
            config,
        ))
        .await
        .unwrap();
    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert!(names.contains(&"perform"), "{names:?}");
    let result = client
        .call_tool(
            CallToolRequestParams::new("perform").with_arguments(
                json!({"intent": "what is the answer?"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap();
    let text = serde_json::to_string(&result.content).unwrap();
    assert!(text.contains("the answer is 42"), "{text}");
    assert_ne!(result.is_error, Some(true), "{text}");
    client.cancel().await.unwrap();
}

/// The bound on a wait for the server to act (an approval asked, a place freed): not a timing.
const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

async fn mcp_client(server: &common::Running) -> RunningService<RoleClient, ()> {
    let config = StreamableHttpClientTransportConfig::with_uri(server.url("/mcp"))
        .auth_header(server.token.clone());
    ().serve(StreamableHttpClientTransport::with_client(
        improv_models::client_builder().unwrap().build().unwrap(),
        config,
    ))
    .await
    .unwrap()
}

fn perform_call(intent: &str) -> CallToolRequestParams {
    CallToolRequestParams::new("perform")
        .with_arguments(json!({"intent": intent}).as_object().unwrap().clone())
}

/// Waits until a performance other than `known` runs in the server waiting for an approval;
/// returns its id and the approval's number.
async fn waiting_for_approval(server: &common::Running, known: &[&str]) -> (String, u64) {
    let start = std::time::Instant::now();
    loop {
        let list = server.get_json("/performances").await;
        let waiting = list["performances"].as_array().unwrap().iter().find(|p| {
            p["live"] == true
                && p["approvals"][0]["approval"].is_u64()
                && !known.contains(&p["id"].as_str().unwrap())
        });
        if let Some(p) = waiting {
            let n = p["approvals"][0]["approval"].as_u64().unwrap();
            return (p["id"].as_str().unwrap().to_string(), n);
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no MCP perform waits for its approval in this server: {list}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Without a store, `/mcp`'s `perform` is one of the server's own performances and takes one of
/// its `--max-performances` places, as `POST /performances` does: with one place, a second call
/// (and a `POST /performances`) is refused while the first waits for its approval, a call is
/// accepted once the first ended, and a cancelled call gives its place back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_perform_without_a_store_takes_one_of_the_servers_places() {
    let script = json!([
        {"calls": [{"name": "write", "arguments": {"path": "b.txt", "content": "beta\n"}}]},
        {"say": "Wrote b.txt."}
    ]);
    let stage = common::TestStage::new(script, common::ASK_WRITE);
    let server = common::serve_with(&stage, |args| args.max_performances = 1).await;

    let first = mcp_client(&server).await;
    let call = tokio::spawn(async move {
        let result = first.call_tool(perform_call("write b.txt")).await;
        (first, result)
    });
    let (id, approval) = waiting_for_approval(&server, &[]).await;

    // The place is taken: another call and another start are refused, nothing started.
    let other = mcp_client(&server).await;
    let refused = other.call_tool(perform_call("one too many")).await.unwrap();
    let text = serde_json::to_string(&refused.content).unwrap();
    assert_eq!(refused.is_error, Some(true), "{text}");
    assert!(text.contains("--max-performances"), "{text}");
    let posted = server
        .send_post("/performances", json!({"intent": "one too many"}))
        .await;
    assert_eq!(posted.status(), 429);
    let list = server.get_json("/performances").await;
    assert_eq!(list["performances"].as_array().unwrap().len(), 1, "{list}");

    // The first ends: its call has the answer, and its place is free for the next call.
    let answered = server
        .send_post(
            &format!("/performances/{id}/approvals/{approval}"),
            json!({"answer": "once"}),
        )
        .await;
    assert_eq!(answered.status(), 202);
    let (first, result) = call.await.unwrap();
    let text = serde_json::to_string(&result.unwrap().content).unwrap();
    assert!(text.contains("Wrote b.txt."), "{text}");
    let (start, known) = (std::time::Instant::now(), [id.as_str()]);
    let (handle, next) = loop {
        let mut handle = other
            .send_cancellable_request(
                ClientRequest::CallToolRequest(CallToolRequest::new(perform_call("the next"))),
                PeerRequestOptions::no_options(),
            )
            .await
            .unwrap();
        tokio::select! {
            answer = &mut handle.rx => {
                // Answered before it waited for an approval: refused, the place not yet free.
                let answer = format!("{answer:?}");
                assert!(answer.contains("--max-performances"), "{answer}");
                assert!(start.elapsed() < PATIENCE, "the ended call kept its place");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            (next, _) = waiting_for_approval(&server, &known) => break (handle, next),
        }
    };

    // The next call is cancelled: its performance is interrupted and its place given back.
    handle
        .cancel(Some("the test cancels".into()))
        .await
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        let posted = server
            .send_post("/performances", json!({"intent": "after the cancel"}))
            .await;
        if posted.status() == 201 {
            break;
        }
        assert_eq!(posted.status(), 429);
        assert!(
            start.elapsed() < PATIENCE,
            "the cancelled call kept its place"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let shown = server.get_json(&format!("/performances/{next}")).await;
    assert_eq!(shown["live"], false, "{shown}");
    first.cancel().await.unwrap();
    other.cancel().await.unwrap();
}

/// An MCP client that keeps the progress messages it is sent.
#[derive(Clone, Default)]
struct Progress(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl rmcp::ClientHandler for Progress {
    async fn on_progress(
        &self,
        params: rmcp::model::ProgressNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        if let Some(message) = params.message {
            self.0.lock().unwrap().push(message);
        }
    }
}

/// A `perform` call that asks for progress.
fn perform_with_progress(intent: &str) -> CallToolRequestParams {
    use rmcp::model::{NumberOrString, ProgressToken, RequestParamsMeta};
    let mut call = perform_call(intent);
    call.set_progress_token(ProgressToken(NumberOrString::Number(1)));
    call
}

const WRITE_B: &str = r#"[
    {"calls": [{"name": "write", "arguments": {"path": "b.txt", "content": "beta\n"}}]},
    {"say": "Wrote b.txt."}
]"#;

/// Without a store, a `perform` whose performance waits for the director's approval tells its
/// client so in a progress message naming the API path that answers it; answered there, the
/// performance goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_perform_waiting_for_an_approval_says_where_to_answer_it() {
    let stage = common::TestStage::new(serde_json::from_str(WRITE_B).unwrap(), common::ASK_WRITE);
    let server = common::serve(&stage).await;
    let progress = Progress::default();
    let config = StreamableHttpClientTransportConfig::with_uri(server.url("/mcp"))
        .auth_header(server.token.clone());
    let client = progress
        .clone()
        .serve(StreamableHttpClientTransport::with_client(
            improv_models::client_builder().unwrap().build().unwrap(),
            config,
        ))
        .await
        .unwrap();
    let call = tokio::spawn(async move {
        let result = client.call_tool(perform_with_progress("write b.txt")).await;
        (client, result)
    });

    let start = std::time::Instant::now();
    let told = loop {
        let messages = progress.0.lock().unwrap().clone();
        if let Some(m) = messages.into_iter().find(|m| m.contains("approval")) {
            break m;
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no progress message names the approval"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(told.contains(r#""write" "b.txt""#), "{told}");
    assert!(told.contains("or it is denied"), "{told}");
    let path = told
        .split_whitespace()
        .find(|w| w.starts_with("/performances/"))
        .unwrap_or_else(|| panic!("no API path in: {told}"));
    let answered = server.send_post(path, json!({"answer": "once"})).await;
    assert_eq!(answered.status(), 202, "{told}");
    let (client, result) = tokio::time::timeout(PATIENCE, call).await.unwrap().unwrap();
    let text = serde_json::to_string(&result.unwrap().content).unwrap();
    assert!(text.contains("Wrote b.txt."), "{text}");
    assert!(stage.stage.workspace().join("b.txt").exists());
    client.cancel().await.unwrap();
}

/// Without a store, an approval of a `perform` nobody answers within `--ask-timeout` is denied,
/// as on a worker: the call does not hold its place forever, and the actor is told that nobody
/// answered in time (not that it runs where nobody can approve anything).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_approval_of_a_perform_is_denied_saying_so() {
    let stage = common::TestStage::new(serde_json::from_str(WRITE_B).unwrap(), common::ASK_WRITE);
    let server = common::serve_with(&stage, |args| {
        args.ask_timeout = std::time::Duration::from_millis(200);
    })
    .await;
    let client = mcp_client(&server).await;
    let result = tokio::time::timeout(PATIENCE, client.call_tool(perform_call("write b.txt")))
        .await
        .expect("the call still waits for its approval")
        .unwrap();
    let id = result.structured_content.as_ref().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let logged = serde_json::to_string(&common::logged(&stage, &id)).unwrap();
    assert!(
        logged.contains("no answer from the director within 200ms"),
        "{logged}"
    );
    assert!(!logged.contains("non-interactive"), "{logged}");
    assert!(!stage.stage.workspace().join("b.txt").exists());
    client.cancel().await.unwrap();
}
