//! Runs the real `improv` binary end to end: against the mock model server speaking OpenAI's
//! wire format, and with scripted models for interruption, resume and the interactive session.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use improv_mock::{MockServer, openai_chat};
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn improv(dir: &Path) -> Command {
    let mut c = common::improv_command();
    c.current_dir(dir)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_BASE_URL")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c
}

fn stage(dir: &Path, model: &str, extra: &str) {
    std::fs::write(
        dir.join("stage.toml"),
        format!(
            "[stage]\nname = \"cli-test\"\nintent = \"Say hello in hello.txt.\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"{model}\"\n{extra}"
        ),
    )
    .unwrap();
}

fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn types(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_json_against_the_openai_mock() {
    let server = MockServer::start(vec![
        openai_chat::tool_calls(&[(
            "call_a",
            "write",
            r#"{"path": "hello.txt", "content": "hello\n"}"#,
        )]),
        openai_chat::tool_calls(&[("call_b", "bash", r#"{"command": "cat hello.txt"}"#)]),
        openai_chat::text("I wrote hello.txt."),
    ])
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path(), "openai/gpt-5-mini", "");
    let mut cmd = improv(dir.path());
    cmd.args(["run", "--json"])
        .env("OPENAI_API_KEY", "sk-test")
        .env("OPENAI_BASE_URL", format!("{}/v1", server.url()));
    let out = run(cmd).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evs = events(&out);
    let kinds = types(&evs);
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("performance_started")
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("performance_finished")
    );
    assert_eq!(evs.last().unwrap()["outcome"], "done");
    assert!(kinds.iter().any(|k| k == "text_delta"), "streams text");
    let finished: Vec<&Value> = evs
        .iter()
        .filter(|e| e["type"] == "tool_call_finished")
        .collect();
    assert_eq!(finished.len(), 2);
    assert_eq!(finished[1]["output"], "hello\n");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("hello.txt")).unwrap(),
        "hello\n"
    );
    // The wire: three requests, authorised, streaming, each carrying the props and the results.
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].path, "/v1/chat/completions");
    assert_eq!(requests[0].header("authorization"), Some("Bearer sk-test"));
    let first = requests[0].json().unwrap();
    assert_eq!(first["stream"], true);
    assert_eq!(
        first["tools"].as_array().unwrap().len(),
        6,
        "the six core props"
    );
    assert!(
        requests[0].body.len() <= 4000,
        "first request is {} bytes; the budget is 4,000",
        requests[0].body.len()
    );
    let third = requests[2].json().unwrap();
    let tool_msgs: Vec<&Value> = third["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .collect();
    assert_eq!(tool_msgs.len(), 2);
    assert_eq!(tool_msgs[1]["tool_call_id"], "call_b");

    // The log lists it and replays it.
    let out = run({
        let mut c = improv(dir.path());
        c.args(["log", "--json"]);
        c
    })
    .await;
    let rows = events(&out);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["status"], "done");
    assert_eq!(rows[0]["turns"], 3);
    let id = rows[0]["id"].as_str().unwrap().to_string();
    let out = run({
        let mut c = improv(dir.path());
        c.args(["show", &id[..8]]);
        c
    })
    .await;
    assert!(out.status.success());
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("I wrote hello.txt."), "{shown}");
    let chrome = String::from_utf8_lossy(&out.stderr);
    assert!(chrome.contains("▸ bash cat hello.txt"), "{chrome}");
    assert!(
        dir.path()
            .join(format!(".improv/performances/{id}.jsonl"))
            .exists()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_key_fails_with_a_clear_message() {
    let server = MockServer::start(vec![openai_chat::error(
        401,
        "Incorrect API key provided",
        "invalid_request_error",
    )])
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path(), "openai/gpt-5-mini", "");
    let mut cmd = improv(dir.path());
    cmd.args(["run"])
        .env("OPENAI_API_KEY", "sk-wrong")
        .env("OPENAI_BASE_URL", format!("{}/v1", server.url()));
    let out = run(cmd).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failed"), "{err}");
    assert!(err.contains("OPENAI_API_KEY"), "{err}");
}

#[test]
fn a_missing_key_is_named_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path(), "openai/gpt-5-mini", "");
    let out = improv(dir.path()).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("OPENAI_API_KEY"), "{err}");
    assert!(
        !dir.path().join(".improv/performances").exists()
            || std::fs::read_dir(dir.path().join(".improv/performances"))
                .unwrap()
                .next()
                .is_none(),
        "no performance is started without a model"
    );
}

#[test]
fn a_malformed_stage_names_the_file_line_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stage.toml"),
        "[stage]\nname = \"x\"\n\n[edges]\nmax_turn = 5\n",
    )
    .unwrap();
    let out = improv(dir.path()).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stage.toml"), "{err}");
    assert!(err.contains(":5:"), "names the line: {err}");
    assert!(err.contains("max_turns"), "suggests the key: {err}");
}

#[test]
fn init_writes_a_stage_that_loads_and_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let out = improv(dir.path()).arg("init").output().unwrap();
    assert!(out.status.success());
    let written = std::fs::read_to_string(dir.path().join("stage.toml")).unwrap();
    assert!(written.contains("[stage]"));
    let again = improv(dir.path()).arg("init").output().unwrap();
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("stage.toml")).unwrap(),
        written
    );
    // The template is a stage improv accepts: an empty log lists fine.
    let log = improv(dir.path()).arg("log").output().unwrap();
    assert!(
        log.status.success(),
        "{}",
        String::from_utf8_lossy(&log.stderr)
    );
}

fn script(dir: &Path, name: &str, json: &str) {
    std::fs::write(dir.join(name), json).unwrap();
}

#[test]
fn ctrl_c_interrupts_and_resume_continues_the_same_performance() {
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path(), "scripted/first.json", "");
    script(
        dir.path(),
        "first.json",
        r#"[{"say": "Working.", "calls": [{"name": "bash", "arguments": {"command": "sleep 30"}}]}]"#,
    );
    let mut child = improv(dir.path())
        .args(["run", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let started = line.contains("\"tool_call_started\"");
        seen.push(line);
        if started {
            break;
        }
    }
    // SAFETY: sending SIGINT to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    seen.extend(lines.map(|l| l.unwrap()));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen:?}");
    let last: Value = serde_json::from_str(seen.last().unwrap()).unwrap();
    assert_eq!(last["outcome"], "interrupted");
    let id = last_id(dir.path());

    let log = improv(dir.path()).args(["log", "--json"]).output().unwrap();
    assert!(String::from_utf8_lossy(&log.stdout).contains("\"interrupted\""));

    script(
        dir.path(),
        "second.json",
        r#"[{"say": "Picking up where I left off: done."}]"#,
    );
    let out = improv(dir.path())
        .args([
            "run",
            "--json",
            "--model",
            "scripted/second.json",
            "--resume",
            &id,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evs = events(&out);
    assert_eq!(evs[0]["type"], "performance_started");
    assert_eq!(evs[0]["resumed"], true);
    assert_eq!(evs[0]["performance"], id.as_str());
    assert_eq!(evs.last().unwrap()["outcome"], "done");
    let full = improv(dir.path())
        .args(["show", &id, "--json"])
        .output()
        .unwrap();
    let all = events(&full);
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let mut sorted = seqs.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seqs, sorted, "one numbering across the resumption");
    assert_eq!(
        all.iter()
            .filter(|e| e["type"] == "performance_started")
            .count(),
        2
    );
}

fn last_id(dir: &Path) -> String {
    let out = improv(dir).args(["log", "--json"]).output().unwrap();
    let rows = events(&out);
    rows[0]["id"].as_str().unwrap().to_string()
}

#[test]
fn the_interactive_session_talks_turn_after_turn() {
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path(), "scripted/chat.json", "");
    script(
        dir.path(),
        "chat.json",
        r#"[{"say": "Hello, director."},
            {"calls": [{"name": "write", "arguments": {"path": "n.txt", "content": "noted"}}]},
            {"say": "Noted it in n.txt."}]"#,
    );
    let mut child = improv(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "hello").unwrap();
        writeln!(stdin, "note that down").unwrap();
        writeln!(stdin, "/exit").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("Hello, director."), "{said}");
    assert!(said.contains("Noted it in n.txt."), "{said}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("n.txt")).unwrap(),
        "noted"
    );
    let log = improv(dir.path()).args(["log", "--json"]).output().unwrap();
    let rows = events(&log);
    assert_eq!(rows[0]["status"], "done");
    assert_eq!(rows[0]["turns"], 3);
}

#[test]
fn a_budget_stop_says_which_budget_ended_it() {
    let dir = tempfile::tempdir().unwrap();
    stage(
        dir.path(),
        "scripted/loop.json",
        "\n[edges]\nmax_turns = 2\n",
    );
    let turn = r#"{"calls": [{"name": "bash", "arguments": {"command": "echo again"}}]}"#;
    script(dir.path(), "loop.json", &format!("[{turn},{turn},{turn}]"));
    let out = improv(dir.path()).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stopped"), "{err}");
    assert!(err.contains("turn budget spent: 2 of 2"), "{err}");
}

#[test]
fn actors_record_into_the_ledger_and_improv_ledger_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    stage(
        dir.path(),
        "scripted/ledger.json",
        "props = [\"record\", \"query\"]\n",
    );
    script(
        dir.path(),
        "ledger.json",
        r#"[{"calls": [{"name": "record", "arguments": {"collection": "findings", "entry": {"file": "a.rs", "line": 3}}},
                       {"name": "record", "arguments": {"collection": "findings", "entry": {"file": "b.rs", "line": 9}}}]},
            {"calls": [{"name": "query", "arguments": {"collection": "findings", "where": {"line": {">": 5}}}}]},
            {"say": "One finding past line 5."}]"#,
    );
    let out = improv(dir.path()).args(["run", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evs = events(&out);
    let results: Vec<&Value> = evs
        .iter()
        .filter(|e| e["type"] == "tool_call_finished")
        .collect();
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|r| r["ok"] == true), "{results:?}");
    let found = results[2]["output"].as_str().unwrap();
    assert!(found.contains("b.rs") && !found.contains("a.rs"), "{found}");

    let out = improv(dir.path())
        .args(["ledger", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("findings"), "{text}");
}

#[test]
fn a_stage_that_says_so_settles_its_ledger_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    stage(
        dir.path(),
        "scripted/settle.json",
        "props = [\"record\"]\n\n[ledger]\nauto_settle = true\nstable_writes = 3\nstable_after = \"1ms\"\n",
    );
    let rec = |file: &str, line: &str| {
        format!(
            r#"{{"calls": [{{"name": "record", "arguments": {{"collection": "findings", "entry": {{"file": "{file}", "line": {line}}}}}}}]}}"#
        )
    };
    let turns = [
        rec("a.rs", "1"),
        rec("b.rs", "2"),
        rec("c.rs", "3"),
        rec("d.rs", "4"),
        rec("e.rs", "5"),
        rec("f.rs", "\"six\""),
        r#"{"say": "recorded"}"#.to_string(),
    ];
    script(dir.path(), "settle.json", &format!("[{}]", turns.join(",")));
    let out = improv(dir.path()).args(["run", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        dir.path()
            .join(".improv/schemas/findings.schema.json")
            .exists(),
        "settled without the director's word"
    );
    let evs = events(&out);
    let last_record = evs
        .iter()
        .rfind(|e| e["type"] == "tool_call_finished")
        .unwrap();
    let said = last_record["output"].as_str().unwrap();
    assert!(said.contains("line"), "the reject names the field: {said}");
}
