//! The serve token stays the director's: a performance the server runs never sees it in a
//! result nor logs it (it is redacted), a performance that came to hold it anyway is never
//! offered an approval the API could answer, and a token file where actors could read it is
//! refused at start.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use crate::common::{ASK_WRITE, TestStage, drain, kinds, logged, loopback_args, serve};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_performance_that_read_the_token_is_never_offered_for_approval() {
    let script = json!([
        {"calls": [{"name": "read", "arguments": {"path": "leak.txt"}}]},
        {"calls": [{"name": "write", "arguments": {"path": "b.txt", "content": "beta\n"}}]},
        {"say": "Done."}
    ]);
    let stage = TestStage::new(script, ASK_WRITE);
    let server = serve(&stage).await;
    // The token leaked into the workspace somehow (it lives in .improv/, out of reach).
    std::fs::write(
        stage.path().join("leak.txt"),
        format!("token {}\n", server.token),
    )
    .unwrap();
    let id = server.start(json!({"intent": "go"})).await;
    let mut events = server.events(&id, None).await;
    let frames = drain(&mut events).await;
    let k = kinds(&frames);
    assert!(!k.contains(&"approval"), "an approval was offered: {k:?}");
    let results: Vec<&common::Frame> = frames
        .iter()
        .filter(|f| f.kind() == "tool_call_finished")
        .collect();
    assert_eq!(results.len(), 2, "{k:?}");
    assert_eq!(
        results[0].data["output"].as_str().unwrap(),
        "1\ttoken [redacted:IMPROV_SERVE_TOKEN]\n"
    );
    assert_eq!(results[1].data["ok"], false);
    assert!(
        results[1].data["output"]
            .as_str()
            .unwrap()
            .contains("serve token"),
        "{}",
        results[1].data
    );
    assert!(!stage.path().join("b.txt").exists());
    let log = serde_json::to_string(&logged(&stage, &id)).unwrap();
    assert!(!log.contains(&server.token), "the log holds the token");
    server.stop_server().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_inside_the_workspace_is_refused() {
    let stage = TestStage::new(json!([{"say": "Done."}]), "");
    let inside = stage.path().join("token.txt");
    let args = improv_serve::ServeArgs {
        token_file: Some(inside.clone()),
        ..loopback_args()
    };
    let Err(err) = improv_serve::bind(stage.stage.clone(), &args).await else {
        panic!("a token file in the workspace was accepted");
    };
    let message = err.to_string();
    assert!(message.contains("workspace"), "{message}");
    assert!(message.contains("token.txt"), "{message}");
    assert!(!inside.exists(), "no token was written there");

    let outside = tempfile::tempdir().unwrap();
    let args = improv_serve::ServeArgs {
        token_file: Some(outside.path().join("token")),
        ..args
    };
    assert!(improv_serve::bind(stage.stage.clone(), &args).await.is_ok());
}
