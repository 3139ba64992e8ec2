//! The stage view's routines through the real server: `GET /routines` lists the routines
//! beside the stage file with their record, behind the token; the OpenAPI document names the
//! route and the page has a Routines view that asks for it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{TestStage, serve};
use serde_json::{Value, json};

const GREET: &str = r#"name = "greet"
description = "Greet someone"
status = "approved"
stability = "stable"
intent = "Greet {who}"

[[parameters]]
name = "who"

[provenance]
skeleton = "00"
performances = ["p1", "p2", "p3"]

[record]
uses = 4
fallbacks = 1
last_success = "2026-11-28T10:00:00.000Z"

[[steps]]
prop = "write"

[steps.guard]
ok = true
output = "any"

[steps.args]
path = "{who}.txt"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_routines_and_their_record_are_listed_behind_the_token() {
    let stage = TestStage::new(json!([]), "");
    let server = serve(&stage).await;
    let empty: Value = server.get_json("/routines").await;
    assert_eq!(empty, json!({"routines": []}));

    std::fs::create_dir(stage.path().join("routines")).unwrap();
    std::fs::write(stage.path().join("routines/greet.toml"), GREET).unwrap();
    let got: Value = server.get_json("/routines").await;
    let r = &got["routines"][0];
    assert_eq!(r["name"], "greet", "{got}");
    assert_eq!(r["status"], "approved");
    assert_eq!(r["stability"], "stable");
    assert_eq!(r["intent"], "Greet {who}");
    assert_eq!(
        (r["uses"].as_u64(), r["fallbacks"].as_u64()),
        (Some(4), Some(1))
    );
    assert_eq!(r["last_success"], "2026-11-28T10:00:00.000Z");
    assert_eq!(r["performances"], 3);

    let r = server
        .http
        .get(server.url("/routines"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the routines are behind the token");

    let openapi: Value = server.get_json("/openapi.json").await;
    assert!(
        openapi["paths"]["/routines"]["get"].is_object(),
        "documented"
    );
    let page = server.send_get("/").await.text().await.unwrap();
    assert!(page.contains("id=\"routines-view\"") && page.contains("#/routines"));
    let js = server
        .send_get("/assets/app.js")
        .await
        .text()
        .await
        .unwrap();
    assert!(js.contains("api(\"/routines\")"), "the page asks for them");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_routine_file_is_named_with_its_line() {
    let stage = TestStage::new(json!([]), "");
    let server = serve(&stage).await;
    std::fs::create_dir(stage.path().join("routines")).unwrap();
    let broken = GREET.replace("stability = \"stable\"", "stability = \"solid\"");
    std::fs::write(stage.path().join("routines/greet.toml"), broken).unwrap();
    let r = server.send_get("/routines").await;
    assert_eq!(r.status(), 500);
    let v: Value = r.json().await.unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("routines/greet.toml:4:"), "{message}");
}
