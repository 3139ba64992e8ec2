//! What `improv` writes on stderr, through the real binary: `improv mcp` with stderr to a file
//! logs plain text (no ANSI colour codes), a client's bad requests are not warnings (the answer
//! tells the client; the operator sees them only at debug level), and an error prints each of
//! its causes once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

fn improv(dir: &Path) -> Command {
    let mut c = common::improv_command();
    c.current_dir(dir)
        .env_remove("IMPROV_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    c
}

fn stage(dir: &Path) {
    std::fs::write(
        dir.join("stage.toml"),
        "[stage]\nname = \"logs\"\nintent = \"Say hello.\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"scripted/none\"\n",
    )
    .unwrap();
}

/// Runs `improv mcp` with stderr to a file, sends `requests` (after the handshake), waits for
/// an answer to each, closes stdin and returns what stderr got.
fn mcp_session(dir: &Path, log: Option<&str>, requests: &[Value]) -> String {
    let stderr_path = dir.join("mcp.stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let mut cmd = improv(dir);
    if let Some(level) = log {
        cmd.env("IMPROV_LOG", level);
    }
    let mut child = cmd
        .arg("mcp")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut send = |v: &Value| writeln!(stdin, "{v}").unwrap();
    send(
        &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {},
        "clientInfo": {"name": "mcp-logs-test", "version": "1"}}}),
    );
    let hello: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(hello["id"], 0, "{hello}");
    send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    for r in requests {
        send(r);
    }
    let mut answered = 0;
    while answered < requests.len() {
        let line = lines.next().expect("improv mcp ended early").unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        if v.get("id").is_some() {
            answered += 1;
        }
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    std::fs::read_to_string(&stderr_path).unwrap()
}

/// Three requests a client gets wrong: an unknown method, an unknown tool, a missing resource.
fn mistakes() -> Vec<Value> {
    vec![
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/nosuch", "params": {}}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
               "params": {"name": "nosuch", "arguments": {}}}),
        json!({"jsonrpc": "2.0", "id": 3, "method": "resources/read",
               "params": {"uri": "improv://schema/nope"}}),
    ]
}

#[test]
fn a_clients_mistakes_are_not_warnings() {
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path());
    let stderr = mcp_session(dir.path(), None, &mistakes());
    assert!(
        !stderr.contains("WARN"),
        "a client's bad requests logged as warnings:\n{stderr}"
    );
}

#[test]
fn logs_to_a_file_are_plain_text_and_name_a_clients_mistake_at_debug_level() {
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path());
    let stderr = mcp_session(dir.path(), Some("debug"), &mistakes());
    assert!(
        !stderr.contains('\u{1b}'),
        "ANSI escape codes in a log file:\n{stderr}"
    );
    assert!(!stderr.contains("WARN"), "{stderr}");
    let refused: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("the client's request was refused"))
        .collect();
    assert_eq!(refused.len(), 2, "{stderr}");
    assert!(refused.iter().all(|l| l.contains("DEBUG")), "{refused:?}");
    assert!(refused[0].contains("no tool `nosuch`"), "{refused:?}");
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

#[test]
fn an_error_says_its_cause_once() {
    // A state directory that is a file: `improv log` cannot create its folders in it.
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path());
    std::fs::write(dir.path().join(".improv"), "not a folder").unwrap();
    let out = improv(dir.path()).arg("log").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(".improv"), "{stderr}");
    assert_eq!(count(&stderr, "(os error 20)"), 1, "{stderr}");
}

#[test]
fn a_stage_file_error_says_its_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stage.toml"), b"\xff\xfe not text").unwrap();
    let out = improv(dir.path())
        .env("NO_COLOR", "1")
        .arg("log")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("stage.toml"), "{stderr}");
    assert_eq!(count(&stderr, "valid UTF-8"), 1, "{stderr}");
}

/// Runs `improv mcp` with stderr on a terminal (util-linux `script` gives it one), its stdin
/// from a file of requests, and returns what the terminal showed.
fn on_a_terminal(dir: &Path, no_color: bool) -> String {
    let requests = dir.join("requests.jsonl");
    let mut lines = vec![
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-03-26", "capabilities": {},
            "clientInfo": {"name": "mcp-logs-test", "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    ];
    lines.extend(mistakes());
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&requests, text).unwrap();
    let command = format!(
        "'{}' mcp < '{}' > /dev/null",
        env!("CARGO_BIN_EXE_improv"),
        requests.display()
    );
    let mut script = Command::new("script");
    script
        .args(["-qec", &command, "/dev/null"])
        .current_dir(dir)
        .env("IMPROV_LOG", "debug")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null());
    if no_color {
        script.env("NO_COLOR", "1");
    }
    let out = script
        .output()
        .expect("`script` (util-linux) is needed to give improv a terminal");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn colours_are_for_a_terminal_and_never_under_no_color() {
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path());
    let coloured = on_a_terminal(dir.path(), false);
    assert!(
        coloured.contains("the client's request was refused"),
        "{coloured}"
    );
    assert!(
        coloured.contains('\u{1b}'),
        "no colours on a terminal:\n{coloured}"
    );
    let plain = on_a_terminal(dir.path(), true);
    assert!(
        plain.contains("the client's request was refused"),
        "{plain}"
    );
    assert!(
        !plain.contains('\u{1b}'),
        "colours under NO_COLOR:\n{plain}"
    );
}
