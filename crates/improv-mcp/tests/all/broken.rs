//! A deliberately broken MCP server, written here: it crashes, hangs on initialize or on a call,
//! prints garbage, or returns a malformed result. Each case must give the actor (or the caller
//! of `attach`) a clear error and never hang the performance. Also: servers stop with their
//! guard, and a command that does not exist says so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{node_modules, perform, stdio};
use improv_kernel::ScriptedTurn;
use improv_mcp::attach;
use improv_stage::McpServer;
use serde_json::json;
use std::path::Path;
use std::time::Duration;

/// A line-based JSON-RPC server in Node; `MODE` (argv[2]) picks how it misbehaves.
const BROKEN: &str = r#"
const mode = process.argv[2];
const send = (m) => process.stdout.write(JSON.stringify(m) + "\n");
if (mode === "garbage") setInterval(() => process.stdout.write("this is not json {\n"), 20);
require("readline").createInterface({ input: process.stdin }).on("line", (line) => {
  if (mode === "garbage" || mode === "hang-init") return;
  const msg = JSON.parse(line);
  if (msg.id === undefined) return;
  const result = (r) => send({ jsonrpc: "2.0", id: msg.id, result: r });
  if (msg.method === "initialize") {
    result({ protocolVersion: msg.params.protocolVersion, capabilities: { tools: {} }, serverInfo: { name: "broken", version: "0" } });
  } else if (msg.method === "tools/list") {
    const tool = (name) => ({ name, description: name, inputSchema: { type: "object" } });
    result({ tools: ["ok", "crash", "hang", "bad"].map(tool) });
  } else if (msg.method === "tools/call") {
    const name = msg.params.name;
    if (name === "ok") result({ content: [{ type: "text", text: "fine" }] });
    else if (name === "crash") { process.stderr.write("boom: crashing on purpose\n"); process.exit(3); }
    else if (name === "bad") result({ content: "not a list", isError: "maybe" });
    // "hang": never answers
  } else {
    send({ jsonrpc: "2.0", id: msg.id, error: { code: -32601, message: "no such method" } });
  }
});
"#;

/// The broken server in `mode`, with the default `timeout` (long enough for node to start on a
/// loaded machine: the limit covers the handshake too, node's start included).
fn broken(dir: &Path, mode: &str) -> McpServer {
    node_modules(); // Node must be there; says how to install it otherwise.
    let script = dir.join("broken.cjs");
    std::fs::write(&script, BROKEN).unwrap();
    stdio("broken", "node", &[script.to_str().unwrap(), mode])
}

/// The broken server with a short `timeout`, for the tests of what a timeout does.
fn broken_within(dir: &Path, mode: &str, limit: Duration) -> McpServer {
    let mut s = broken(dir, mode);
    s.timeout = Some(limit);
    s
}

#[tokio::test]
async fn a_crash_restarts_once_then_the_server_stays_down() {
    let stage = tempfile::tempdir().unwrap();
    let attached = attach(&[broken(stage.path(), "ok")], stage.path(), stage.path())
        .await
        .unwrap();
    let (results, _) = perform(
        attached.props(&["broken".into()]),
        stage.path(),
        vec![
            ScriptedTurn::call("broken.crash", json!({})),
            ScriptedTurn::call("broken.ok", json!({})),
            ScriptedTurn::call("broken.crash", json!({})),
            ScriptedTurn::call("broken.ok", json!({})),
            ScriptedTurn::say("done"),
        ],
    )
    .await;
    let (_, first, err) = &results[0];
    assert!(err);
    assert!(
        first.starts_with("MCP server `broken`: the server exited during `crash`"),
        "{first}"
    );
    assert!(
        first.contains("boom: crashing on purpose"),
        "stderr is quoted: {first}"
    );
    assert!(
        first.ends_with("It was restarted: re-issue the call if it is still needed."),
        "{first}"
    );
    assert_eq!(
        (results[1].1.as_str(), results[1].2),
        ("fine", false),
        "the restarted server answers"
    );
    let (_, second, err) = &results[2];
    assert!(err);
    assert!(second.contains("It could not be restarted: it crashed again after being restarted once, so it stays down"), "{second}");
    let (_, after, err) = &results[3];
    assert!(err);
    assert!(
        after.starts_with("MCP server `broken`: it crashed again after being restarted once"),
        "{after}"
    );
}

#[tokio::test]
async fn a_hung_call_and_a_malformed_result_are_tool_errors() {
    let stage = tempfile::tempdir().unwrap();
    // The limit bounds the handshake, node's start included, as well as the hung call: 10 s
    // leaves node room on a loaded machine (the hung call waits it out).
    let server = broken_within(stage.path(), "ok", Duration::from_secs(10));
    let attached = attach(&[server], stage.path(), stage.path()).await.unwrap();
    let (results, _) = perform(
        attached.props(&["broken".into()]),
        stage.path(),
        vec![
            ScriptedTurn::call("broken.hang", json!({})),
            ScriptedTurn::call("broken.bad", json!({})),
            ScriptedTurn::call("broken.ok", json!({})),
            ScriptedTurn::say("done"),
        ],
    )
    .await;
    let (_, hung, err) = &results[0];
    assert!(err);
    assert_eq!(
        hung,
        "MCP server `broken`: `hang` gave no answer within 10s (the server's `timeout`); it may still be working. Try a smaller step."
    );
    let (_, bad, err) = &results[1];
    assert!(err, "{bad}");
    assert!(bad.starts_with("MCP server `broken`: `bad`"), "{bad}");
    assert_eq!(
        (results[2].1.as_str(), results[2].2),
        ("fine", false),
        "still usable afterwards"
    );
}

#[tokio::test]
async fn a_server_that_hangs_on_initialize_or_prints_garbage_fails_attach_clearly() {
    for mode in ["hang-init", "garbage"] {
        let stage = tempfile::tempdir().unwrap();
        // Neither ever completes the handshake, so a slow node start cannot change the result.
        let server = broken_within(stage.path(), mode, Duration::from_secs(2));
        let err = attach(&[server], stage.path(), stage.path())
            .await
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            err,
            "MCP server `broken`: it could not start: it did not complete the MCP handshake within 2s: it hangs, or prints something other than JSON-RPC on stdout",
            "{mode}"
        );
    }
}

#[tokio::test]
async fn a_missing_command_says_what_could_not_run() {
    let stage = tempfile::tempdir().unwrap();
    let server = stdio("ghost", "improv-no-such-mcp-server", &[]);
    let err = attach(&[server], stage.path(), stage.path())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.starts_with("MCP server `ghost`: it could not start: `improv-no-such-mcp-server` could not be run in"),
        "{err}"
    );
}

/// Whether a process is gone (or a zombie waiting to be reaped).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn dropping_the_guard_kills_the_servers() {
    let stage = tempfile::tempdir().unwrap();
    let attached = attach(&[broken(stage.path(), "ok")], stage.path(), stage.path())
        .await
        .unwrap();
    let props = attached.props(&["broken.ok".into()]);
    let pid = attached.running()[0].1.unwrap();
    assert!(!gone(pid));
    drop(attached);
    // Bounded wait for the kernel to deliver the kill; not a timing assertion.
    let mut waited = 0;
    while !gone(pid) && waited < 200 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        waited += 1;
    }
    assert!(
        gone(pid),
        "server {pid} still runs after its guard was dropped"
    );
    // A prop that outlived the guard does not start the server again.
    let (results, _) = perform(
        props,
        stage.path(),
        vec![
            ScriptedTurn::call("broken.ok", json!({})),
            ScriptedTurn::say("done"),
        ],
    )
    .await;
    assert_eq!(
        results[0].1,
        "MCP server `broken`: the performance has ended and its MCP servers are stopped"
    );
}
