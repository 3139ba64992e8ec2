//! The OpenAPI document against the real server, by a property-based client nobody here wrote:
//! schemathesis reads `/openapi.json`, generates valid and invalid requests for every operation
//! (bounded: a fixed seed and a few examples each) and fails on a 5xx, a status, content type
//! or body the document does not describe, or an invalid request the server accepts. So the
//! document and the server cannot drift apart unnoticed. Needs schemathesis (`st`;
//! crates/improv-serve/ci-setup.sh installs it); fails, not skips, without it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{TestStage, serve};
use serde_json::json;
use std::process::Command;

/// Examples per operation and phase: enough to reach every documented bound, few enough to run
/// in seconds. `IMPROV_SERVE_ST_EXAMPLES` and `IMPROV_SERVE_ST_SEED` run it longer or otherwise.
const EXAMPLES: &str = "20";
const SEED: &str = "13";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_gap_between_the_document_and_the_server() {
    let st = std::env::var("IMPROV_SERVE_SCHEMATHESIS").unwrap_or_else(|_| "st".into());
    // Every performance it starts says one line and ends.
    let stage = TestStage::new(json!([{"say": "ok"}]), "");
    let server = serve(&stage).await;
    let examples = std::env::var("IMPROV_SERVE_ST_EXAMPLES").unwrap_or_else(|_| EXAMPLES.into());
    let seed = std::env::var("IMPROV_SERVE_ST_SEED").unwrap_or_else(|_| SEED.into());
    let work = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(&st);
    cmd.current_dir(work.path())
        .env("HOME", work.path())
        .args([
            "run",
            &server.url("/openapi.json"),
            "--url",
            &server.base,
            "--header",
            &format!("Authorization: Bearer {}", server.token),
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            &examples,
            "--seed",
            &seed,
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--request-timeout",
            "30",
            "--no-color",
        ]);
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {st} ({e}): run crates/improv-serve/ci-setup.sh to install schemathesis"
            )
        });
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found a gap between /openapi.json and the server:\n{report}"
    );
    // It really ran: every documented operation was exercised.
    assert!(report.contains("passed"), "{report}");
    server.stop_server().await;
}
