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
