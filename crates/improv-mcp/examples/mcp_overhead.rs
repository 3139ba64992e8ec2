//! Benchmark: the per-call overhead of an MCP tool over stdio through improv's props, against
//! the official TypeScript client calling the same server's tool, side by side; and the bytes
//! the props of server-everything add to the first model request, before and after trimming.
//!
//! Run (after crates/improv-mcp/ci-setup.sh):
//! `cargo run --release -p improv-mcp --example mcp_overhead -- [CALLS]`

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

use improv_kernel::{PropContext, ToolSpec};
use improv_mcp::McpTool;
use std::path::Path;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let calls: usize = std::env::args().nth(1).map_or(2000, |n| n.parse().unwrap());
    let warmup = 200;
    let servers = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers");
    let index = servers.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(index.is_file(), "run crates/improv-mcp/ci-setup.sh first");

    let stage = tempfile::tempdir().unwrap();
    let config = improv_stage::McpServer {
        name: "everything".into(),
        command: Some("node".into()),
        args: vec![index.display().to_string(), "stdio".into()],
        env: Vec::new(),
        set_env: Default::default(),
        cwd: None,
        url: None,
        headers_from_env: Default::default(),
        timeout: None,
        tools: None,
    };
    let attached = improv_mcp::attach(&[config], stage.path(), stage.path())
        .await
        .unwrap();

    // Context bytes: the specs as the server wrote them vs. as the model gets them.
    let cached: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(stage.path().join(".improv/mcp/everything.json")).unwrap(),
    )
    .unwrap();
    let raw: Vec<rmcp::model::Tool> = serde_json::from_value(cached["tools"].clone()).unwrap();
    let before: usize = raw
        .iter()
        .map(|t| McpTool::untrimmed_len(t, "everything"))
        .sum();
    let props = attached.all_props();
    let specs: Vec<&ToolSpec> = props.iter().map(|p| p.spec()).collect();
    let after: usize = specs
        .iter()
        .map(|s| serde_json::to_string(s).unwrap().len())
        .sum();

    // Per call through the prop (what the kernel loop calls).
    let echo = props
        .iter()
        .find(|p| p.spec().name == "everything.echo")
        .unwrap();
    let cx = PropContext::new(stage.path(), "bench", "bench");
    let args = serde_json::json!({"message": "ping"});
    for _ in 0..warmup {
        echo.call(args.clone(), &cx).await.unwrap();
    }
    let mut times = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let out = echo.call(args.clone(), &cx).await.unwrap();
        times.push(t.elapsed());
        assert_eq!(out, "Echo: ping");
    }
    times.sort();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mean = times.iter().map(|d| us(*d)).sum::<f64>() / calls as f64;
    let (p50, p99) = (us(times[calls / 2]), us(times[calls * 99 / 100]));
    drop(attached);

    // The TypeScript client, same server, same tool, same counts.
    let out = std::process::Command::new("node")
        .arg(servers.join("bench-client.mjs"))
        .arg(&index)
        .arg(calls.to_string())
        .arg(warmup.to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ts: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    println!(
        "MCP tool call over stdio: server-everything `echo`, {calls} calls after {warmup} warm-up, µs"
    );
    println!("| client                         |   mean |    p50 |    p99 |");
    println!("|--------------------------------|-------:|-------:|-------:|");
    println!("| improv prop (rmcp)             | {mean:6.0} | {p50:6.0} | {p99:6.0} |");
    println!(
        "| official TypeScript SDK client | {:6.0} | {:6.0} | {:6.0} |",
        ts["mean"].as_f64().unwrap(),
        ts["p50"].as_f64().unwrap(),
        ts["p99"].as_f64().unwrap()
    );
    println!();
    println!(
        "Props of server-everything in the first request ({} tools):",
        specs.len()
    );
    println!("| specs                 |  bytes | ~tokens |");
    println!("|-----------------------|-------:|--------:|");
    println!(
        "| as the server wrote   | {before:6} | {:7} |",
        before.div_ceil(4)
    );
    println!(
        "| trimmed (what is sent)| {after:6} | {:7} |",
        after.div_ceil(4)
    );
    println!(
        "saved: {:.0}%",
        100.0 * (1.0 - after as f64 / before as f64)
    );
}
