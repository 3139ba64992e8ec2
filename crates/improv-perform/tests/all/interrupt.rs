//! Ctrl-C reaches what runs between turns: a write check that would run for a minute is
//! stopped at once, and the performance ends interrupted.

#![allow(clippy::unwrap_used)]

use improv_kernel::Outcome;
use improv_perform::{Launch, Production};
use improv_stage::Stage;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_a_long_write_check_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The check says it started through a FIFO the test reads, then runs for a minute, as a
    // slow `cargo test` would.
    std::fs::write(
        d.join("stage.toml"),
        r#"
[[actor]]
name = "lead"
model = "scripted/lead.json"
props = ["write"]

[[feedback.check]]
name = "tests"
command = "echo started > started.fifo; sleep 60"
"#,
    )
    .unwrap();
    let write =
        json!({"calls": [{"name": "write", "arguments": {"path": "a.txt", "content": "x"}}]});
    std::fs::write(
        d.join("lead.json"),
        json!([write, {"say": "done"}]).to_string(),
    )
    .unwrap();
    let fifo = d.join("started.fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo failed");

    let stage = Arc::new(Stage::load(&d.join("stage.toml")).unwrap());
    let (mut p, _notes) = Production::open(stage, Launch::new("write a.txt")).unwrap();
    let cancel = CancellationToken::new();
    // The director presses Ctrl-C once the check has started.
    let director = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            let started = tokio::task::spawn_blocking(move || std::fs::read_to_string(fifo))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(started.trim(), "started");
            cancel.cancel();
        }
    });
    // The check runs 60 s unless the cancellation reaches it.
    let ended = tokio::time::timeout(Duration::from_secs(20), p.perform(&cancel))
        .await
        .expect("the write check ran on after Ctrl-C");
    director.await.unwrap();
    assert_eq!(ended.outcome, Outcome::Interrupted, "{}", ended.reason);
    let summary = p.finish(&ended).unwrap();
    assert_eq!(summary.outcome, Outcome::Interrupted);
}
