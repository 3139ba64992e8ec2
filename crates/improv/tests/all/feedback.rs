//! The feedback loop end to end, through the real binary: the `fix-the-test` example with a
//! scripted lead that first makes a wrong fix, hears the failing `cargo test` back, fixes it
//! again and converges; and the same stage with one attempt, which ends exhausted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

/// A copy of `examples/fix-the-test` in a temp dir, so the run cannot touch the repository.
fn example(max_attempts: u32) -> tempfile::TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fix-the-test");
    let dir = tempfile::tempdir().unwrap();
    for rel in [
        "stage.toml",
        "AGENTS.md",
        "Cargo.toml",
        "src/lib.rs",
        "tests/mean.rs",
    ] {
        let to = dir.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(src.join(rel), &to).unwrap();
    }
    let stage = std::fs::read_to_string(dir.path().join("stage.toml")).unwrap();
    std::fs::write(
        dir.path().join("stage.toml"),
        stage.replace(
            "max_attempts = 3",
            &format!("max_attempts = {max_attempts}"),
        ),
    )
    .unwrap();
    dir
}

const BUG: &str = "(xs.len() as f64 + 1.0)";

fn script(dir: &Path, turns: Value) -> PathBuf {
    let path = dir.join("lead.json");
    std::fs::write(&path, turns.to_string()).unwrap();
    path
}

fn run(dir: &Path, script: &Path) -> Output {
    common::improv_command()
        .current_dir(dir)
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .args(["run", "--json", "--model"])
        .arg(format!("scripted/{}", script.display()))
        .output()
        .unwrap()
}

fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_wrong_fix_hears_the_failing_test_and_the_second_fix_converges() {
    let dir = example(3);
    let d = dir.path();
    let lead = script(
        d,
        json!([
            {"calls": [{"name": "edit", "arguments": {"path": "src/lib.rs", "old": BUG, "new": "(xs.len() as f64 - 1.0)"}}]},
            {"say": "Fixed the mean."},
            {"calls": [{"name": "edit", "arguments": {"path": "src/lib.rs", "old": "(xs.len() as f64 - 1.0)", "new": "xs.len() as f64"}}]},
            {"say": "Fixed the mean: it divides by the count now."}
        ]),
    );
    let out = run(d, &lead);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let evs = events(&out);

    // The check runs after each edit (the stage converges on its checks) and when the lead says
    // it is done: the wrong edit fails, "done" fails, the second edit passes and ends it.
    let checks = of_type(&evs, "check_finished");
    assert_eq!(checks.len(), 3, "{checks:?}");
    let runs: Vec<(&Value, &Value, &Value)> = checks
        .iter()
        .map(|c| (&c["on"], &c["attempt"], &c["passed"]))
        .collect();
    assert_eq!(
        runs,
        [
            (&json!("write"), &json!(1), &json!(false)),
            (&json!("done"), &json!(1), &json!(false)),
            (&json!("write"), &json!(2), &json!(true)),
        ]
    );
    assert!(
        checks[0]["output"]
            .as_str()
            .unwrap()
            .contains("mean_of_a_few_numbers"),
        "{}",
        checks[0]["output"]
    );

    let attempts = of_type(&evs, "attempt_finished");
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["failed"], json!(["tests"]));
    assert_eq!(attempts[1]["passed"], true);

    // The failing output went back to the lead as a director note, before its third turn.
    let notes = of_type(&evs, "director_note");
    assert_eq!(notes.len(), 2, "{notes:?}");
    let note = notes[1]["text"].as_str().unwrap();
    assert!(note.contains("Attempt 1 of 3"), "{note}");
    assert!(note.contains("## tests"), "{note}");

    let finished = evs.last().unwrap();
    assert_eq!(finished["type"], "performance_finished");
    assert_eq!(finished["outcome"], "converged");
    assert!(
        std::fs::read_to_string(d.join("src/lib.rs"))
            .unwrap()
            .contains("/ xs.len() as f64")
    );
}

#[test]
fn checks_still_failing_after_the_last_attempt_end_exhausted() {
    let dir = example(1);
    let d = dir.path();
    let lead = script(d, json!([{"say": "Looks fine to me."}]));
    let out = run(d, &lead);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    let evs = events(&out);
    let finished = evs.last().unwrap();
    assert_eq!(finished["outcome"], "exhausted");
    assert_eq!(
        finished["reason"], "1 attempt used; still failing: tests",
        "{finished}"
    );
    // No note is sent after the last attempt: nobody would act on it.
    assert_eq!(of_type(&evs, "director_note").len(), 1);
}
