//! What a client gets wrong, answered as the client's error in one JSON envelope, through the
//! real server: a partial or ambiguous performance id on every route that takes one, a bad
//! query string, `limit` out of its documented bounds, an unknown route, a wrong method, a path
//! that does not decode; and the ledger's state over REST agreeing with `improv ledger`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{TestStage, drain, serve};
use serde_json::{Value, json};

/// Asserts the envelope every error carries, and returns its message.
async fn envelope(r: reqwest::Response, status: u16, what: &str) -> String {
    assert_eq!(r.status().as_u16(), status, "{what}");
    let kind = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    assert!(kind.starts_with("application/json"), "{what}: {kind}");
    let v: Value = r.json().await.unwrap();
    let e = &v["error"];
    for field in ["message", "type", "code"] {
        assert!(
            e[field].as_str().is_some_and(|s| !s.is_empty()),
            "{what}: no {field} in {v}"
        );
    }
    e["message"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_or_ambiguous_id_is_the_clients_error_on_every_route() {
    let stage = TestStage::new(json!([{"say": "done"}]), "");
    let server = serve(&stage).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = server.start(json!({"intent": "go"})).await;
        drain(&mut server.events(&id, None).await).await;
        ids.push(id);
    }
    // Ids start with the time: the first character is shared by all three.
    let shared: String = ids[0]
        .chars()
        .zip(ids[1].chars())
        .zip(ids[2].chars())
        .take_while(|((a, b), c)| a == b && b == c)
        .map(|((a, _), _)| a)
        .collect();
    assert!(!shared.is_empty(), "{ids:?}");
    let unique = &ids[0][..ids[0].len() - 1];
    for (prefix, expected) in [(shared.as_str(), &ids[..]), (unique, &ids[..1])] {
        let routes = [
            server.get(&format!("/performances/{prefix}")),
            server.get(&format!("/performances/{prefix}/events")),
            server.post(&format!("/performances/{prefix}/stop"), json!({})),
            server.post(
                &format!("/performances/{prefix}/notes"),
                json!({"text": "hi"}),
            ),
            server.post(
                &format!("/performances/{prefix}/approvals/1"),
                json!({"answer": "once"}),
            ),
        ];
        for req in routes {
            let (what, r) = server.execute(req).await;
            let message = envelope(r, 400, &what).await;
            assert!(message.contains("whole id"), "{what}: {message}");
            for id in expected {
                assert!(message.contains(id.as_str()), "{what}: {message}");
            }
        }
    }
    // A whole id still answers.
    let r = server.send_get(&format!("/performances/{}", ids[0])).await;
    assert_eq!(r.status(), 200);
    server.stop_server().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_has_the_json_envelope_and_limit_keeps_its_documented_bounds() {
    let stage = TestStage::new(json!([]), "");
    let server = serve(&stage).await;
    let raw = |method: &str, path: &str| {
        server
            .http
            .request(method.parse().unwrap(), server.url(path))
            .bearer_auth(&server.token)
    };
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            raw("GET", "/no/such/route"),
            404,
            "no route GET /no/such/route",
        ),
        (raw("PUT", "/performances"), 405, "does not take PUT"),
        (raw("DELETE", "/ledger"), 405, "does not take DELETE"),
        (raw("GET", "/performances?limit=abc"), 400, "query string"),
        (raw("GET", "/performances?limit=-1"), 400, "query string"),
        (
            raw("GET", "/performances?limit=0"),
            400,
            "`limit` is 1 to 1000",
        ),
        (
            raw("GET", "/performances?limit=1001"),
            400,
            "`limit` is 1 to 1000",
        ),
        (raw("GET", "/performances/%FF%FE"), 400, "UTF-8"),
        (
            raw("POST", "/performances")
                .header("content-type", "application/json")
                .body("{not json"),
            400,
            "not the JSON",
        ),
        (
            raw("POST", "/performances").body("{}"),
            415,
            "Content-Type: application/json",
        ),
        (
            server.http.get(server.url("/no/such/route")),
            401,
            "bearer token",
        ),
    ];
    for (req, status, says) in cases {
        let (what, r) = server.execute(req).await;
        let allow = r.headers().get("allow").cloned();
        let message = envelope(r, status, &what).await;
        assert!(message.contains(says), "{what}: {message}");
        if status == 405 {
            assert!(allow.is_some(), "{what}: a 405 keeps its Allow header");
        }
    }
    for limit in [1, 1000] {
        let r = server
            .send_get(&format!("/performances?limit={limit}"))
            .await;
        assert_eq!(r.status(), 200, "limit={limit}");
    }
    server.stop_server().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settled_collection_reads_settled_over_rest() {
    let stage = TestStage::new(json!([]), "");
    let server = serve(&stage).await;
    let ledger = improv_ledger::Ledger::open_in(stage.state_dir(), Default::default()).unwrap();
    let who = improv_ledger::Provenance::new("p1", "lead");
    ledger
        .record("leads", json!({"name": "Ada"}), &who)
        .unwrap();
    let r = server.send_post("/ledger/leads/settle", json!({})).await;
    assert_eq!(r.status(), 200);
    // Written after settling: the shape's counters start over, the state stays settled.
    ledger
        .record("leads", json!({"name": "Bob"}), &who)
        .unwrap();
    let list: Value = server.get_json("/ledger").await;
    let one: Value = server.get_json("/ledger/leads").await;
    for c in [&list["collections"][0], &one] {
        assert_eq!(c["state"], "settled", "{c}");
        assert_eq!(c["settled"], 1, "{c}");
    }
    server.stop_server().await;
}
