//! The stage as an MCP server over streamable HTTP (`/mcp` on `improv serve`), driven by the
//! official Rust SDK's client: refused without the token; with it, the `perform` tool runs a
//! real performance of the scripted stage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
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
