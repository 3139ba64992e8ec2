//! The reference MCP servers from npm (server-everything, server-filesystem), attached as props
//! and called by the real kernel loop with a scripted model: over stdio and streamable HTTP,
//! with the tool list cached so later performances start servers only when called.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{everything, node_modules, perform, stdio};
use improv_kernel::ScriptedTurn;
use improv_mcp::attach;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn everything_tools_run_in_the_kernel_loop_with_a_filtered_environment() {
    let stage = tempfile::tempdir().unwrap();
    let mut server = everything();
    // Cargo sets these for the test process: one is allowed through, the other is not.
    server.env = vec!["CARGO_PKG_NAME".into(), "IMPROV_NOT_SET_ANYWHERE".into()];
    server.set_env.insert("IMPROV_GIVEN".into(), "yes".into());
    let attached = attach(&[server], stage.path(), stage.path()).await.unwrap();
    let props = attached.props(&["everything".into()]);
    let names: Vec<&str> = props.iter().map(|p| p.spec().name.as_str()).collect();
    for want in [
        "everything.echo",
        "everything.get-sum",
        "everything.get-env",
        "everything.get-tiny-image",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let echo = props
        .iter()
        .find(|p| p.spec().name == "everything.echo")
        .unwrap();
    let schema = echo.spec().parameters.to_string();
    assert!(
        !schema.contains("$schema") && !schema.contains("additionalProperties"),
        "{schema}"
    );
    assert!(schema.contains("\"message\""), "{schema}");

    let (results, model) = perform(
        props.clone(),
        stage.path(),
        vec![
            ScriptedTurn::call("everything.echo", json!({"message": "hi there"}))
                .and_call("everything.get-sum", json!({"a": 2, "b": 3})),
            ScriptedTurn::call("everything.get-env", json!({})),
            ScriptedTurn::call("everything.get-tiny-image", json!({})),
            ScriptedTurn::call("everything.get-sum", json!({"a": "two"})),
            ScriptedTurn::say("done"),
        ],
    )
    .await;
    assert_eq!(model.tools_offered()[0], props.len());
    let (name, echo, err) = &results[0];
    assert_eq!(
        (name.as_str(), echo.as_str(), *err),
        ("everything.echo", "Echo: hi there", false)
    );
    assert!(
        results[1].1.contains('5') && !results[1].2,
        "{:?}",
        results[1]
    );

    let env: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&results[2].1).unwrap();
    let mut keys: Vec<&str> = env.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["CARGO_PKG_NAME", "IMPROV_GIVEN", "PATH"],
        "only the allowed variables pass"
    );
    assert_eq!(env["CARGO_PKG_NAME"], "improv-mcp");

    let (_, image, err) = &results[3];
    assert!(!err && image.contains("[image image/png,"), "{image}");
    let (_, bad_args, err) = &results[4];
    assert!(err, "a call the server rejects is a tool error: {bad_args}");
    assert!(bad_args.contains("expected number"), "{bad_args}");

    // Resources and prompts are listable.
    let resources = attached.resources("everything").await.unwrap();
    assert!(!resources.is_empty());
    let text = attached
        .read_resource("everything", &resources[0].uri)
        .await
        .unwrap();
    assert!(!text.is_empty());
    let prompts = attached.prompts("everything").await.unwrap();
    assert!(
        prompts.iter().any(|p| p.name == "simple-prompt"),
        "{prompts:?}"
    );
    let prompt = attached
        .prompt("everything", "simple-prompt", Default::default())
        .await
        .unwrap();
    assert!(prompt.starts_with("user: "), "{prompt}");
    let missing = attached.prompts("nope").await.unwrap_err().to_string();
    assert_eq!(
        missing,
        "no MCP server named `nope` in [[props.mcp]]; the servers are: everything"
    );
}

#[tokio::test]
async fn a_cached_tool_list_starts_the_server_only_when_a_tool_is_called() {
    let stage = tempfile::tempdir().unwrap();
    let server = everything();

    let first = attach(std::slice::from_ref(&server), stage.path(), stage.path())
        .await
        .unwrap();
    assert_eq!(
        first.running().len(),
        1,
        "without a cache the server starts to list its tools"
    );
    assert!(stage.path().join(".improv/mcp/everything.json").is_file());
    let listed = first.all_props().len();
    drop(first);

    let second = attach(std::slice::from_ref(&server), stage.path(), stage.path())
        .await
        .unwrap();
    assert!(
        second.running().is_empty(),
        "the cached list needs no server"
    );
    assert_eq!(second.all_props().len(), listed);
    let one = second.props(&["everything.echo".into()]);
    assert_eq!(one.len(), 1);
    let (results, _) = perform(
        one,
        stage.path(),
        vec![
            ScriptedTurn::call("everything.echo", json!({"message": "lazy"})),
            ScriptedTurn::say("done"),
        ],
    )
    .await;
    assert_eq!(results[0].1, "Echo: lazy");
    assert_eq!(second.running().len(), 1, "the call started it");
    drop(second);

    // A changed configuration is listed afresh; `tools` narrows the props and names a typo.
    let mut changed = server.clone();
    changed.tools = Some(vec!["echo".into(), "ecko".into()]);
    let third = attach(&[changed], stage.path(), stage.path())
        .await
        .unwrap();
    assert_eq!(third.running().len(), 1);
    assert_eq!(third.all_props().len(), 1);
    assert!(
        third.warnings()[0].starts_with("MCP server `everything` has no tool `ecko`"),
        "{:?}",
        third.warnings()
    );
}

#[tokio::test]
async fn filesystem_server_reads_and_writes_inside_its_folder_only() {
    let stage = tempfile::tempdir().unwrap();
    let ws = stage.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let ws = ws.canonicalize().unwrap();
    let index = node_modules().join("@modelcontextprotocol/server-filesystem/dist/index.js");
    let server = stdio(
        "fs",
        "node",
        &[index.to_str().unwrap(), ws.to_str().unwrap()],
    );
    let attached = attach(&[server], stage.path(), &ws).await.unwrap();
    let note = ws.join("note.txt");
    let (results, _) = perform(
        attached.props(&["fs".into()]),
        &ws,
        vec![
            ScriptedTurn::call(
                "fs.write_file",
                json!({"path": note, "content": "written by improv"}),
            ),
            ScriptedTurn::call("fs.read_text_file", json!({"path": note})),
            ScriptedTurn::call("fs.read_text_file", json!({"path": "/etc/hostname"})),
            ScriptedTurn::say("done"),
        ],
    )
    .await;
    assert!(!results[0].2, "{:?}", results[0]);
    assert_eq!(std::fs::read_to_string(&note).unwrap(), "written by improv");
    assert_eq!(results[1].1, "written by improv");
    let (_, outside, err) = &results[2];
    assert!(err, "{outside}");
    assert!(
        outside.contains("Access denied") || outside.contains("outside"),
        "{outside}"
    );
}

#[tokio::test]
async fn everything_over_streamable_http_with_a_header_from_the_environment() {
    let modules = node_modules();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let home = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new("node")
        .arg(modules.join("@modelcontextprotocol/server-everything/dist/index.js"))
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .env("HOME", home.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Wait for it to listen (not a timing assertion: a bound on how long to keep trying).
    let mut up = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "server-everything did not listen on port {port}");

    // Through a relay that keeps what the client sends, so the header is seen on arrival.
    let (relay, sent) = relay(port).await;
    let stage = tempfile::tempdir().unwrap();
    let mut server = stdio("web", "unused", &[]);
    server.command = None;
    server.url = Some(format!("http://127.0.0.1:{relay}/mcp"));
    server
        .headers_from_env
        .insert("X-Improv-Test".into(), "CARGO_PKG_NAME".into());
    let attached = attach(&[server.clone()], stage.path(), stage.path())
        .await
        .unwrap();
    let (results, _) = perform(
        attached.props(&["web.echo".into()]),
        stage.path(),
        vec![
            ScriptedTurn::call("web.echo", json!({"message": "over http"})),
            ScriptedTurn::say("done"),
        ],
    )
    .await;
    assert_eq!(results[0].1, "Echo: over http");
    drop(attached);
    let sent = String::from_utf8_lossy(&sent.lock().unwrap()).to_lowercase();
    let requests = sent.matches(" /mcp http/1.1\r\n").count();
    assert!(
        sent.matches("post /mcp ").count() >= 2,
        "the handshake and the call went through the relay: {sent}"
    );
    assert_eq!(
        sent.matches("\r\nx-improv-test: improv-mcp\r\n").count(),
        requests,
        "every request carries the header read from CARGO_PKG_NAME: {sent}"
    );

    // A header whose variable is unset is a clear error, not an empty header.
    let other = tempfile::tempdir().unwrap();
    server
        .headers_from_env
        .insert("Authorization".into(), "IMPROV_TEST_UNSET_TOKEN".into());
    let err = attach(&[server], other.path(), other.path())
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("header `Authorization` reads the environment variable `IMPROV_TEST_UNSET_TOKEN`, which is not set"),
        "{err}"
    );
    child.kill().await.unwrap();
}

/// A TCP relay on a free local port to `port`: returns that port and every byte clients sent
/// through it, so a test sees the requests as they arrive.
async fn relay(port: u16) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_port = listener.local_addr().unwrap().port();
    let sent: Arc<Mutex<Vec<u8>>> = Arc::default();
    let kept = sent.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let (mut from_client, mut to_client) = client.into_split();
            let (mut from_server, mut to_server) = upstream.into_split();
            let kept = kept.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                loop {
                    match from_client.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            kept.lock().unwrap().extend_from_slice(&buf[..n]);
                            if to_server.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = to_server.shutdown().await;
            });
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                let _ = to_client.shutdown().await;
            });
        }
    });
    (relay_port, sent)
}
