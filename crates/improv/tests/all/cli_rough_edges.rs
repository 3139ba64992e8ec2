//! What a new user hits first, through the real binary: a closed pipe after `improv log --json
//! | head -1`, `improv doctor` without the embedded model, the session's slash commands, short
//! ids that `improv show` takes back, `--model` only where it means something, stage errors in
//! plain words, and one short sandbox line unless `-v`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn improv(dir: &Path) -> Command {
    let mut c = common::improv_command();
    c.current_dir(dir)
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("RUST_BACKTRACE")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c
}

/// A stage whose lead replays `script` (a JSON list of turns).
fn scripted_stage(dir: &Path, script: &str) {
    std::fs::write(
        dir.join("stage.toml"),
        "[stage]\nname = \"rough\"\nintent = \"Say hello.\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"scripted/script.json\"\nprops = [\"read\"]\n",
    )
    .unwrap();
    std::fs::write(dir.join("script.json"), script).unwrap();
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn run_ok(dir: &Path, args: &[&str]) -> Output {
    let out = improv(dir).args(args).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    out
}

/// Runs `args` with stdout on a pipe whose reader reads one line and closes it, as `| head -1`
/// does, while the command still has more to write.
fn with_head_1(dir: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut child = improv(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(!first.is_empty(), "{args:?} printed nothing");
    // The reader is dropped here: the pipe is closed with lines still to come.
    let out = child.wait_with_output().unwrap();
    (out.status.code(), stderr(&out))
}

#[test]
fn a_closed_pipe_ends_log_and_show_quietly() {
    let dir = tempfile::tempdir().unwrap();
    scripted_stage(dir.path(), r#"[{"say": "hello"}]"#);
    // Long intents: each listed row and each replayed log is longer than what the pipe and the
    // reader's buffer hold together, so a write after the reader left is certain.
    let intent = "say hello ".repeat(10_000);
    for _ in 0..3 {
        run_ok(dir.path(), &["run", &intent]);
    }
    let log = run_ok(dir.path(), &["log", "--json"]);
    let newest: Value =
        serde_json::from_str(String::from_utf8_lossy(&log.stdout).lines().next().unwrap()).unwrap();
    let id = newest["id"].as_str().unwrap();
    for args in [vec!["log", "--json"], vec!["show", id, "--json"]] {
        let (code, err) = with_head_1(dir.path(), &args);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} ends quietly: {err}");
    }
}

#[test]
fn a_closed_pipe_ends_the_commands_other_crates_print_for_quietly() {
    // `improv doctor --json` prints with println!, as `improv ledger` and `improv memory` do:
    // a cast of hundreds makes a report longer than the pipe holds.
    let dir = tempfile::tempdir().unwrap();
    let mut stage = String::from("[stage]\nname = \"big\"\nintent = \"Say hello.\"\n");
    for i in 0..400 {
        stage.push_str(&format!(
            "\n[[actor]]\nname = \"actor{i}\"\nmodel = \"scripted/script.json\"\nprops = [\"read\"]\n"
        ));
    }
    std::fs::write(dir.path().join("stage.toml"), stage).unwrap();
    std::fs::write(dir.path().join("script.json"), r#"[{"say": "hi"}]"#).unwrap();
    let (code, err) = with_head_1(dir.path(), &["doctor", "--json"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.is_empty(), "ends quietly: {err}");
}

// A build without the embedded model says so instead (improv-doctor/tests/embedded.rs).
#[cfg(feature = "embedded")]
#[test]
fn doctor_says_when_the_embedded_model_is_not_installed_and_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = tempfile::tempdir().unwrap();
    run_ok(dir.path(), &["init"]);
    // The init template's lead performs with the embedded model.
    let out = improv(dir.path())
        .arg("doctor")
        .env("IMPROV_MODELS", store.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains(&format!(
            "✗ `lead`'s model `local/smollm2-135m` is not installed: the model store {} is empty",
            store.path().display()
        )),
        "{report}"
    );
    assert!(report.contains("improv model import FILE"), "{report}");
    assert!(report.contains("improv model pull"), "{report}");
    assert!(
        !report.contains("scripts/"),
        "a user with only the binary has no repository scripts: {report}"
    );

    // With the model in the store, the same stage may run (warnings only).
    std::fs::write(
        store.path().join("SmolLM2-135M-Instruct.Q4_1.gguf"),
        b"GGUF not a real model",
    )
    .unwrap();
    let out = improv(dir.path())
        .arg("doctor")
        .env("IMPROV_MODELS", store.path())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(
        report.contains("✓ `lead` performs with `local/smollm2-135m`"),
        "{report}"
    );
}

#[test]
fn the_session_knows_its_slash_commands_and_sends_only_directions() {
    let dir = tempfile::tempdir().unwrap();
    scripted_stage(
        dir.path(),
        r#"[{"say": "Hello, director."}, {"say": "Paths are fine."}]"#,
    );
    let mut child = improv(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for line in [
            "/help",
            "/nope",
            "hello",
            "/status",
            "//etc is a folder",
            "/quit",
        ] {
            writeln!(stdin, "{line}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("/help for commands"), "{err}");
    assert!(err.contains("/status, /cost"), "/help lists them: {err}");
    assert!(err.contains("unknown command /nope"), "{err}");
    assert!(
        err.contains("performance ") && err.contains(" · 1 turns · "),
        "/status after one turn: {err}"
    );
    // The log: the cast heard the two directions and nothing else.
    let log = run_ok(dir.path(), &["log", "--json"]);
    let id: Value =
        serde_json::from_str(String::from_utf8_lossy(&log.stdout).lines().next().unwrap()).unwrap();
    let events = run_ok(dir.path(), &["show", id["id"].as_str().unwrap(), "--json"]);
    let directions: Vec<String> = String::from_utf8_lossy(&events.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["type"] == "director_note")
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(directions, ["hello", "/etc is a folder"]);
}

#[test]
fn log_shows_short_ids_that_show_takes_back() {
    let dir = tempfile::tempdir().unwrap();
    scripted_stage(dir.path(), r#"[{"say": "hello"}]"#);
    for _ in 0..4 {
        run_ok(dir.path(), &["run"]);
    }
    let table = run_ok(dir.path(), &["log"]);
    let table = String::from_utf8_lossy(&table.stdout);
    let shown: Vec<&str> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(shown.len(), 4, "{table}");
    let json = run_ok(dir.path(), &["log", "--json"]);
    let rows: Vec<Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (short, row) in shown.iter().zip(&rows) {
        let id = row["id"].as_str().unwrap();
        assert!(short.len() < 10 && id.ends_with(short), "{short} for {id}");
        assert_eq!(row["short_id"], *short);
        // Exactly what was shown names the performance.
        let events = run_ok(dir.path(), &["show", short, "--json"]);
        let first: Value = serde_json::from_str(
            String::from_utf8_lossy(&events.stdout)
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(first["performance"], id, "{short}");
    }
}

#[test]
fn model_is_offered_only_where_it_means_something() {
    let dir = tempfile::tempdir().unwrap();
    for (args, offered) in [
        (vec!["--help"], true),
        (vec!["run", "--help"], true),
        (vec!["log", "--help"], false),
        (vec!["show", "--help"], false),
        (vec!["doctor", "--help"], false),
    ] {
        let out = run_ok(dir.path(), &args);
        let help = String::from_utf8_lossy(&out.stdout);
        assert_eq!(help.contains("--model"), offered, "{args:?}:\n{help}");
    }
    let out = improv(dir.path())
        .args(["log", "--model", "openai/x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn stage_errors_are_in_plain_words_without_a_diagnostic_code() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stage.toml"),
        "[stage]\nname = \"x\"\n\n[edges]\nmax_turns = -1\n",
    )
    .unwrap();
    let out = improv(dir.path()).arg("run").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("expected a whole number ≥ 0"), "{err}");
    assert!(err.contains("stage.toml:5:13"), "{err}");
    assert!(
        !err.contains("u32") && !err.contains("improv::stage"),
        "{err}"
    );
}

#[test]
fn the_sandbox_is_one_short_line_unless_verbose() {
    let dir = tempfile::tempdir().unwrap();
    scripted_stage(dir.path(), r#"[{"say": "hello"}]"#);
    let plain = stderr(&run_ok(dir.path(), &["run"]));
    let sandbox: Vec<&str> = plain.lines().filter(|l| l.contains("sandbox")).collect();
    assert_eq!(sandbox.len(), 1, "{plain}");
    assert!(
        sandbox[0] == "  sandbox on (-v for what it enforces)" || sandbox[0].contains("off"),
        "{plain}"
    );
    if sandbox[0].contains("sandbox on") {
        let verbose = stderr(&run_ok(dir.path(), &["run", "-v"]));
        assert!(
            verbose.contains("sandbox on: Landlock"),
            "-v shows what it enforces: {verbose}"
        );
        // The replay of a logged run says it the same way.
        let log = run_ok(dir.path(), &["log", "--json"]);
        let row: Value =
            serde_json::from_str(String::from_utf8_lossy(&log.stdout).lines().next().unwrap())
                .unwrap();
        let id = row["id"].as_str().unwrap();
        let shown = stderr(&run_ok(dir.path(), &["show", id]));
        assert!(shown.contains("  sandbox on (-v for"), "{shown}");
        let shown = stderr(&run_ok(dir.path(), &["show", "-v", id]));
        assert!(shown.contains("sandbox on: Landlock"), "{shown}");
    }
}
