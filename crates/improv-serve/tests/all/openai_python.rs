//! The official `openai` Python package as a client of the compatible endpoint: models, a
//! completion, a streamed completion, and the errors it maps (wrong model, wrong token).
//! Needs python3 with `openai` (crates/improv-serve/ci-setup.sh installs it); fails, not skips,
//! without it. `IMPROV_SERVE_PYTHON` names another interpreter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{TestStage, logged, openai_client, python, serve};
use serde_json::{Value, json};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_talks_to_a_stage() {
    let python = python();
    let probe = Command::new(&python)
        .args(["-c", "import openai"])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {python} ({e}): run crates/improv-serve/ci-setup.sh to install python3 and the openai package")
        });
    assert!(
        probe.status.success(),
        "{python} has no `openai` package: run crates/improv-serve/ci-setup.sh\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );

    let stage = TestStage::new(
        json!([
            {"say": "Let me look. ", "calls": [{"name": "read", "arguments": {"path": "a.txt"}}]},
            {"say": "The file says alpha."}
        ]),
        "",
    );
    let server = serve(&stage).await;
    let v = openai_client(&server, "openai_client.py").await;
    assert_eq!(v["models"], json!(["serve-test"]));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["content"], "The file says alpha.");
    assert_eq!(v["finish_reason"], "stop");
    assert!(v["total_tokens"].as_u64().unwrap() > 0);
    assert_eq!(v["stream_content"], "Let me look. \n\nThe file says alpha.");
    assert_eq!(v["stream_finish_reason"], "stop");
    assert!(v["stream_total_tokens"].as_u64().unwrap() > 0);
    assert!(v["stream_chunks"].as_u64().unwrap() >= 4);
    assert_eq!(v["wrong_model"], 404);
    assert_eq!(v["wrong_token"], 401);

    // Each request was a logged performance of the stage.
    let id = v["id"].as_str().unwrap().strip_prefix("chatcmpl-").unwrap();
    let events = logged(&stage, id);
    assert_eq!(events.first().unwrap().kind.name(), "performance_started");
    assert_eq!(events.last().unwrap().kind.name(), "performance_finished");
    let list: Value = server.get_json("/performances").await;
    assert_eq!(list["performances"].as_array().unwrap().len(), 2);
    server.stop_server().await;
}
