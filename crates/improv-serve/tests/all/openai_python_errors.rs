//! The official `openai` Python package where the compatible endpoint says no: the model
//! retrieved by id, parameters a stage cannot honour refused by name, a body of the wrong type
//! answered 400, and a failed performance answered 502 with `x-should-retry: false`, so the
//! SDK's default retries do not start the performance again. Needs python3 with `openai`
//! (crates/improv-serve/ci-setup.sh installs it); fails, not skips, without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{TestStage, openai_client, serve};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_client_sees_refusals_by_name_and_does_not_retry_a_failed_performance() {
    // Every performance of this stage fails on its first model call.
    let stage = TestStage::new(json!([{"error": "the model is down"}]), "");
    let server = serve(&stage).await;
    let v = openai_client(&server, "openai_errors.py").await;
    assert_eq!(v["retrieved"], "serve-test");
    assert_eq!(v["retrieve_missing"], 404);
    for (param, says) in [
        ("tools", "props"),
        ("n", "must be 1"),
        ("response_format", "text"),
    ] {
        let r = &v[param];
        assert_eq!(r["status"], 400, "{param}: {r}");
        assert_eq!(r["param"], param, "{r}");
        assert!(r["message"].as_str().unwrap().contains(says), "{r}");
    }
    assert_eq!(v["wrong_type"]["status"], 400, "{}", v["wrong_type"]);
    assert_eq!(v["wrong_type"]["param"], "messages", "{}", v["wrong_type"]);
    assert_eq!(v["failed"]["status"], 502, "{}", v["failed"]);
    assert_eq!(v["failed"]["should_retry"], "false");
    assert!(
        v["failed"]["message"]
            .as_str()
            .unwrap()
            .contains("the model is down"),
        "{}",
        v["failed"]
    );

    // Only the failed request performed, once: no retry started it again, and the refused
    // requests started nothing.
    let list: Value = server.get_json("/performances").await;
    let rows = list["performances"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{list}");
    assert_eq!(rows[0]["status"], "failed");
    server.stop_server().await;
}
