//! `/mcp` as the official MCP TypeScript SDK meets it when something is wrong: without the
//! token the client shows the server's message on how to pass it (and starts no OAuth flow that
//! cannot work); a `perform` without `intent`, a `ledger_query` with `limit: -1` or an unknown
//! operator come back as tool errors the calling model can read. Needs node and the SDK
//! installed by crates/improv-mcp/ci-setup.sh (crates/improv-serve/ci-setup.sh runs it); fails,
//! not skips, without them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{TestStage, client_json, serve};
use serde_json::{Value, json};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_clients_show_how_to_pass_the_token_and_models_read_their_argument_errors() {
    let stage = TestStage::new(json!([{"say": "never reached"}]), "");
    let server = serve(&stage).await;

    // The refusal itself: no 401 and no WWW-Authenticate, which send clients into OAuth.
    let refused = server
        .http
        .post(server.url("/mcp"))
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.headers().get("www-authenticate").is_none());

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/mcp_client.mjs");
    let mut cmd = Command::new("node");
    cmd.args([script, &server.url("/mcp"), &server.token]);
    let v = client_json(cmd, "MCP TypeScript client").await;
    let shown = v["without_token"].as_str().unwrap();
    assert!(
        shown.contains("Authorization: Bearer <token>") && shown.contains("serve.token"),
        "the client shows: {shown}"
    );
    assert_eq!(v["oauth_calls"], json!([]), "{v}");
    assert_eq!(v["discovery"], json!([]), "{v}");

    for (call, says) in [
        ("no_intent", "`intent`"),
        ("bad_limit", "`limit` is a whole number ≥ 1"),
        ("bad_operator", "unknown operator `~~`"),
    ] {
        assert_eq!(v[call]["isError"], true, "{call}: {v}");
        assert!(
            v[call]["text"].as_str().unwrap().contains(says),
            "{call}: {v}"
        );
    }
    // Nothing was performed.
    let list: Value = server.get_json("/performances").await;
    assert_eq!(list["performances"], json!([]));
    server.stop_server().await;
}
