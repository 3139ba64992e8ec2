//! The API against the real server on a random loopback port, performances played by the
//! scripted model: start, stream, note, approval, stop, auth, SSE resume, bad input, the ledger
//! and the OpenAPI document.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{ASK_WRITE, TestStage, drain, kinds, logged, serve, until};
use futures::StreamExt;
use serde_json::{Value, json};

fn read_write_say() -> Value {
    json!([
        {"say": "Reading first. ", "calls": [{"name": "read", "arguments": {"path": "a.txt"}}]},
        {"calls": [{"name": "write", "arguments": {"path": "b.txt", "content": "beta\n"}}]},
        {"say": "Wrote b.txt as asked."}
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_performance_streams_waits_for_approval_takes_a_note_and_ends() {
    let stage = TestStage::new(read_write_say(), ASK_WRITE);
    let server = serve(&stage).await;
    let id = server.start(json!({"intent": "Copy a.txt to b.txt"})).await;
    let mut events = server.events(&id, None).await;

    let first = until(&mut events, "approval").await;
    let k = kinds(&first);
    assert_eq!(k[0], "performance_started", "{k:?}");
    assert!(
        k.contains(&"tool_call_started") && k.contains(&"tool_call_finished"),
        "{k:?}"
    );
    let read = first
        .iter()
        .find(|f| f.kind() == "tool_call_finished")
        .unwrap();
    assert_eq!(read.data["name"], "read");
    assert!(
        read.data["output"].as_str().unwrap().contains("alpha"),
        "{}",
        read.data
    );
    let approval = first.last().unwrap();
    assert_eq!(approval.data["prop"], "write");
    assert!(approval.seq().is_none(), "an approval is no logged event");
    let n = approval.data["approval"].as_u64().unwrap();

    // The approval waits, visible to anyone who asks.
    let got: Value = server.get_json(&format!("/performances/{id}")).await;
    assert_eq!(got["live"], true);
    assert_eq!(got["approvals"][0]["approval"], n);
    assert!(!stage.path().join("b.txt").exists());

    // A note sent now reaches the lead before its next model call.
    let r = server
        .send_post(
            &format!("/performances/{id}/notes"),
            json!({"text": "Keep it short."}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let r = server
        .send_post(
            &format!("/performances/{id}/approvals/{n}"),
            json!({"answer": "once"}),
        )
        .await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());

    let rest = drain(&mut events).await;
    let k = kinds(&rest);
    let answered = k.iter().position(|k| *k == "approval_answered").unwrap();
    let decision = rest.iter().find(|f| f.kind() == "policy_decision").unwrap();
    assert_eq!(decision.data["decision"], "approved_once");
    let note = k.iter().position(|k| *k == "director_note").unwrap();
    assert_eq!(rest[note].data["text"], "Keep it short.");
    assert!(answered < note, "{k:?}");
    assert_eq!(k[k.len() - 2], "performance_finished", "{k:?}");
    let end = rest.last().unwrap();
    assert_eq!(end.event, "end");
    assert_eq!(end.data["outcome"], "done");
    assert_eq!(end.data["answer"], "Wrote b.txt as asked.");
    assert_eq!(
        std::fs::read_to_string(stage.path().join("b.txt")).unwrap(),
        "beta\n"
    );

    // Listed, finished, and its log agrees with what was streamed.
    let list: Value = server.get_json("/performances").await;
    let row = &list["performances"][0];
    assert_eq!(row["id"], id.as_str());
    assert_eq!(row["status"], "done");
    assert_eq!(row["live"], false);
    assert!(row.get("log_path").is_none());
    let streamed: Vec<u64> = first.iter().chain(&rest).filter_map(|f| f.seq()).collect();
    for e in logged(&stage, &id) {
        assert!(
            streamed.contains(&e.seq),
            "logged event {} not streamed",
            e.seq
        );
    }
    server.stop_server().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_interrupts_a_running_performance_and_then_it_takes_no_more() {
    // The model's first reply takes a minute: the performance is surely running when stopped.
    let stage = TestStage::new(json!([{"say": "slow", "delay_ms": 60000}]), "");
    let server = serve(&stage).await;
    let id = server.start(json!({})).await;
    let mut events = server.events(&id, None).await;
    let seen = until(&mut events, "turn_started").await;
    assert_eq!(
        seen[0].data["intent"], "Read a.txt and write b.txt.",
        "without an intent the stage's is performed"
    );
    let r = server
        .send_post(&format!("/performances/{id}/stop"), json!({}))
        .await;
    assert_eq!(r.status(), 202);
    let rest = drain(&mut events).await;
    let end = rest.last().unwrap();
    assert_eq!(end.event, "end");
    assert_eq!(end.data["outcome"], "interrupted");

    for path in ["stop", "notes"] {
        let r = server
            .send_post(
                &format!("/performances/{id}/{path}"),
                json!({"text": "hello"}),
            )
            .await;
        assert_eq!(r.status(), 409, "{path}");
        let v: Value = r.json().await.unwrap();
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not running"),
            "{v}"
        );
    }
    let got: Value = server.get_json(&format!("/performances/{id}")).await;
    assert_eq!(got["status"], "interrupted");
    server.stop_server().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_resumes_after_last_event_id_live_and_from_the_log() {
    let stage = TestStage::new(read_write_say(), ASK_WRITE);
    let server = serve(&stage).await;
    let id = server.start(json!({"intent": "go"})).await;

    // Live: read up to the approval, drop the connection, come back with the last id.
    let mut events = server.events(&id, None).await;
    let first = until(&mut events, "approval").await;
    drop(events);
    let last = first.iter().filter_map(|f| f.seq()).max().unwrap();
    let mut again = server.events(&id, Some(last)).await;
    let pending = again.next().await.unwrap();
    assert_eq!(
        pending.event, "approval",
        "the waiting approval is shown again"
    );
    let n = pending.data["approval"].as_u64().unwrap();
    let r = server
        .send_post(
            &format!("/performances/{id}/approvals/{n}"),
            json!({"answer": "deny", "note": "not now"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let rest = drain(&mut again).await;
    let mut seqs: Vec<u64> = first.iter().filter_map(|f| f.seq()).collect();
    seqs.extend(rest.iter().filter_map(|f| f.seq()));
    let mut sorted = seqs.clone();
    sorted.dedup();
    assert_eq!(seqs, sorted, "no event twice, all in order");
    assert_eq!(*seqs.last().unwrap() + 1, seqs.len() as u64, "none missing");
    let denied = rest.iter().find(|f| f.kind() == "policy_decision").unwrap();
    assert_eq!(denied.data["decision"], "denied_by_director");

    // Finished: replayed from the log, after any id.
    let full = drain(&mut server.events(&id, None).await).await;
    let logged_seqs: Vec<u64> = logged(&stage, &id).iter().map(|e| e.seq).collect();
    let replayed: Vec<u64> = full.iter().filter_map(|f| f.seq()).collect();
    assert_eq!(replayed, logged_seqs);
    assert_eq!(full.last().unwrap().event, "end");
    assert_eq!(full.last().unwrap().data["outcome"], "done");
    let cut = logged_seqs[logged_seqs.len() / 2];
    let tail = drain(&mut server.events(&id, Some(cut)).await).await;
    let tail_seqs: Vec<u64> = tail.iter().filter_map(|f| f.seq()).collect();
    let expected: Vec<u64> = logged_seqs.iter().copied().filter(|s| *s > cut).collect();
    assert_eq!(tail_seqs, expected);
    server.stop_server().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_refuses_a_missing_or_wrong_token_but_the_page_needs_none() {
    let stage = TestStage::new(json!([]), "");
    let server = serve(&stage).await;
    let routes = [
        ("GET", "/stage"),
        ("GET", "/performances"),
        ("POST", "/performances"),
        ("GET", "/performances/abc"),
        ("POST", "/performances/abc/stop"),
        ("POST", "/performances/abc/notes"),
        ("POST", "/performances/abc/approvals/1"),
        ("GET", "/performances/abc/events"),
        ("GET", "/ledger"),
        ("GET", "/ledger/leads"),
        ("POST", "/ledger/leads/settle"),
        ("GET", "/routines"),
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/openapi.json"),
    ];
    for (method, path) in routes {
        for token in [None, Some("wrong-token")] {
            let mut req = server
                .http
                .request(method.parse().unwrap(), server.url(path))
                .json(&json!({"intent": "x"}));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 401, "{method} {path} with {token:?}");
            assert_eq!(r.headers()["www-authenticate"], "Bearer");
            let v: Value = r.json().await.unwrap();
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("serve.token")
            );
        }
    }
    assert!(
        !stage
            .state_dir()
            .join("performances")
            .read_dir()
            .unwrap()
            .any(|_| true),
        "nothing was performed"
    );
    for path in ["/", "/assets/app.js", "/assets/app.css"] {
        let r = server.http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.headers().contains_key("content-security-policy"));
    }
    server.stop_server().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_unknown_ids_and_traversal_get_clear_4xx() {
    let stage = TestStage::new(json!([]), "");
    let server = serve(&stage).await;
    let raw = |method: &str, path: &str, body: &'static str| {
        server
            .http
            .request(method.parse().unwrap(), server.url(path))
            .bearer_auth(&server.token)
            .header("content-type", "application/json")
            .body(body)
    };
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            raw("POST", "/performances", "{not json"),
            400,
            "not the JSON",
        ),
        (
            raw("POST", "/performances", "{\"intent\": 7}"),
            422,
            "intent",
        ),
        (
            raw("POST", "/performances", "{\"intnet\": \"x\"}"),
            422,
            "intnet",
        ),
        (
            raw(
                "POST",
                "/performances",
                "{\"resume\": \"../../etc/passwd\"}",
            ),
            400,
            "not a performance id",
        ),
        (
            server
                .http
                .post(server.url("/performances"))
                .bearer_auth(&server.token)
                .body("{\"intent\": \"x\"}"),
            415,
            "Content-Type",
        ),
        (
            server.post("/performances", json!({"intent": "x".repeat(300 * 1024)})),
            413,
            "too large",
        ),
        (server.get("/performances/nope123"), 404, "no performance"),
        (
            server.get("/performances/nope123/events"),
            404,
            "no performance",
        ),
        (
            server.post("/performances/nope123/stop", json!({})),
            404,
            "no performance",
        ),
        (
            server.post("/performances/nope123/notes", json!({"text": "hi"})),
            404,
            "no performance",
        ),
        (
            server.post("/performances/nope123/notes", json!({"text": " "})),
            400,
            "empty",
        ),
        (
            server.get("/performances/..%2F..%2Fetc%2Fpasswd"),
            400,
            "not a performance id",
        ),
        (
            server.get("/performances/%2e%2e%2f%2e%2e%2fetc/events"),
            400,
            "not a performance id",
        ),
        (
            server.get("/performances/.improv"),
            400,
            "not a performance id",
        ),
        (
            server.post("/performances/abc/approvals/x1", json!({"answer": "once"})),
            400,
            "approval number",
        ),
        (
            server.post("/performances/abc/approvals/1", json!({"answer": "maybe"})),
            400,
            "`once`",
        ),
        (
            server
                .get("/performances/abc/events")
                .header("Last-Event-ID", "yesterday"),
            400,
            "Last-Event-ID",
        ),
        (
            server.get("/ledger/..%2Fsecrets"),
            400,
            "invalid collection",
        ),
        (server.get("/ledger/leads"), 404, "no collection"),
        (
            server.post(
                "/v1/chat/completions",
                json!({"model": "gpt-4", "messages": []}),
            ),
            404,
            "serve-test",
        ),
        (
            server.post(
                "/v1/chat/completions",
                json!({"model": "serve-test", "messages": []}),
            ),
            400,
            "no text",
        ),
    ];
    for (req, status, says) in cases {
        let (what, r) = server.execute(req).await;
        assert_eq!(r.status().as_u16(), status, "{what}");
        let v: Value = r
            .json()
            .await
            .unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(says), "{what}: {message}");
    }
    // Still serving after all that.
    let r = server.send_get("/performances").await;
    assert_eq!(r.status(), 200);
    server.stop_server().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_lists_shapes_and_settles() {
    let stage = TestStage::new(json!([]), "");
    {
        let ledger = improv_ledger::Ledger::open_in(stage.state_dir(), Default::default()).unwrap();
        let who = improv_ledger::Provenance::new("p1", "lead");
        for (name, email) in [("Ada", "ada@example.org"), ("Bob", "bob@example.org")] {
            ledger
                .record("leads", json!({"name": name, "email": email}), &who)
                .unwrap();
        }
    }
    let server = serve(&stage).await;
    let v: Value = server.get_json("/ledger").await;
    let leads = &v["collections"][0];
    assert_eq!(leads["name"], "leads");
    assert_eq!(leads["records"], 2);
    let tree = leads["tree"].as_str().unwrap();
    assert!(tree.contains("email") && tree.contains("name"), "{tree}");

    let r = server.send_post("/ledger/leads/settle", json!({})).await;
    assert_eq!(r.status(), 200);
    let settled: Value = r.json().await.unwrap();
    assert_eq!(settled["version"], 1);
    assert!(settled["sqlite_ddl"].as_str().unwrap().contains("leads"));
    assert!(settled.get("schema_file").is_none());
    let r = server.send_post("/ledger/leads/settle", json!({})).await;
    assert_eq!(r.status(), 409);
    let one: Value = server.get_json("/ledger/leads").await;
    assert_eq!(one["settled"], 1);
    assert_eq!(one["schema"]["type"], "object");
    server.stop_server().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_exactly_the_served_routes() {
    let stage = TestStage::new(json!([{"say": "hi"}]), "");
    let server = serve(&stage).await;
    let doc: Value = server.get_json("/openapi.json").await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = Vec::new();
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
            let concrete = path
                .replace("{id}", "nope123")
                .replace("{approval}", "1")
                .replace("{collection}", "leads");
            let r = server
                .http
                .request(
                    method.to_uppercase().parse().unwrap(),
                    server.url(&concrete),
                )
                .bearer_auth(&server.token)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            // `/metrics` answers text; every other route JSON.
            let body: Value = r.json().await.unwrap_or(Value::Null);
            // The router's own 404 says `no_route`; 405 means a wrong method.
            assert!(
                status != 405 && body["error"]["code"] != "no_route",
                "{method} {path} is documented but not served ({status})"
            );
        }
    }
    // The served routes the document leaves out, on purpose: the page and its assets (no API,
    // no token), and `/mcp`, which speaks MCP (JSON-RPC over streamable HTTP) as its own
    // specification describes it. Each is probed, so this list cannot name a route that is gone.
    let outside = [
        "GET /",
        "GET /assets/app.js",
        "GET /assets/app.css",
        "POST /mcp",
    ];
    for page in ["/", "/assets/app.js", "/assets/app.css"] {
        let r = server.http.get(server.url(page)).send().await.unwrap();
        assert_eq!(r.status(), 200, "GET {page} is not served");
    }
    let mcp = server
        .http
        .post(server.url("/mcp"))
        .bearer_auth(&server.token)
        .header("accept", "application/json, text/event-stream")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-03-26", "capabilities": {},
            "clientInfo": {"name": "probe", "version": "0"}}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(mcp.status(), 200, "POST /mcp is not served");
    documented.extend(outside.iter().map(|r| r.to_string()));
    documented.sort();
    let mut served = vec![
        "GET /",
        "GET /assets/app.js",
        "GET /assets/app.css",
        "POST /mcp",
        "GET /stage",
        "GET /performances",
        "POST /performances",
        "GET /performances/{id}",
        "POST /performances/{id}/stop",
        "POST /performances/{id}/notes",
        "POST /performances/{id}/approvals/{approval}",
        "GET /performances/{id}/events",
        "GET /ledger",
        "GET /ledger/{collection}",
        "POST /ledger/{collection}/settle",
        "GET /routines",
        "GET /v1/models",
        "GET /v1/models/{id}",
        "POST /v1/chat/completions",
        "GET /openapi.json",
        "GET /healthz",
        "GET /readyz",
        "GET /metrics",
    ];
    served.sort();
    assert_eq!(documented, served);
    server.stop_server().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_completions_speak_the_openai_wire_format() {
    let stage = TestStage::new(
        json!([
            {"say": "Let me look. ", "calls": [{"name": "read", "arguments": {"path": "a.txt"}}]},
            {"say": "The file says alpha."}
        ]),
        "",
    );
    let server = serve(&stage).await;
    let body = json!({"model": "serve-test", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is in a.txt?"}]}
    ]});
    let r = server.send_post("/v1/chat/completions", body.clone()).await;
    assert_eq!(r.status(), 200);
    let id = r.headers()["x-improv-performance"]
        .to_str()
        .unwrap()
        .to_string();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["id"], format!("chatcmpl-{id}"));
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "The file says alpha."
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert!(v["usage"]["total_tokens"].as_u64().unwrap() > 0);
    let events = logged(&stage, &id);
    let improv_kernel::EventKind::PerformanceStarted { intent, .. } = &events[0].kind else {
        panic!("{:?}", events[0]);
    };
    assert_eq!(intent, "system: Be brief.\n\nuser: What is in a.txt?");

    let mut stream_body = body;
    stream_body["stream"] = json!(true);
    stream_body["stream_options"] = json!({"include_usage": true});
    let r = server.send_post("/v1/chat/completions", stream_body).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let datas: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(*datas.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = datas[..datas.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Let me look. \n\nThe file says alpha.");
    let finish = chunks
        .iter()
        .find(|c| !c["choices"][0]["finish_reason"].is_null())
        .unwrap();
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert!(usage["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    server.stop_server().await;
}

#[tokio::test]
async fn a_non_loopback_bind_without_tls_is_refused() {
    let stage = TestStage::new(json!([]), "");
    let args = improv_serve::ServeArgs {
        bind: "0.0.0.0:0".parse().unwrap(),
        ..Default::default()
    };
    let e = improv_serve::bind(stage.stage.clone(), &args)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("not a loopback address") && e.contains("--behind-tls-proxy"),
        "{e}"
    );
}

/// Answers the first `ask` when the test says so.
struct Gate(tokio::sync::Mutex<Option<tokio::sync::oneshot::Receiver<()>>>);

#[async_trait::async_trait]
impl improv_edges::Approver for Gate {
    async fn ask(&self, _: &improv_edges::ApprovalRequest) -> improv_edges::Approval {
        if let Some(rx) = self.0.lock().await.take() {
            let _ = rx.await;
        }
        improv_edges::Approval::Once
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_performance_run_elsewhere_is_followed_through_its_log_until_it_ends() {
    let stage = TestStage::new(read_write_say(), ASK_WRITE);
    let server = serve(&stage).await;
    // Performed outside the server (as `improv run` would), held at its approval.
    let (open, gate) = tokio::sync::oneshot::channel();
    let mut launch = improv_perform::Launch::new("Copy a.txt to b.txt");
    launch.approver = std::sync::Arc::new(Gate(tokio::sync::Mutex::new(Some(gate))));
    let running = improv_perform::launch(stage.stage.clone(), launch).unwrap();
    let mut events = server.events(&running.id, None).await;
    let seen = until(&mut events, "tool_call_started").await;
    assert_eq!(seen[0].kind(), "performance_started");
    let got: Value = server
        .get_json(&format!("/performances/{}", running.id))
        .await;
    assert_eq!(got["status"], "running");
    assert_eq!(got["live"], false, "not steered by this server");

    open.send(()).unwrap();
    let rest = drain(&mut events).await;
    let end = rest.last().unwrap();
    assert_eq!(end.event, "end");
    assert_eq!(end.data["outcome"], "done");
    assert_eq!(end.data["answer"], "Wrote b.txt as asked.");
    let streamed: Vec<u64> = seen.iter().chain(&rest).filter_map(|f| f.seq()).collect();
    let logged: Vec<u64> = logged(&stage, &running.id).iter().map(|e| e.seq).collect();
    assert_eq!(streamed, logged);
    running.done.await.unwrap().unwrap();
    server.stop_server().await;
}

/// Starts racing for the last place: with `--max-performances 1`, of many `POST /performances`
/// sent at once exactly one starts, whatever their interleaving, and the others get 429 (the
/// place is reserved under the lock that counts the running).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_for_the_last_place_start_exactly_one() {
    const STARTS: usize = 16;
    let stage = TestStage::new(read_write_say(), ASK_WRITE);
    for round in 0..5 {
        let server = crate::common::serve_with(&stage, |args| args.max_performances = 1).await;
        let server = std::sync::Arc::new(server);
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(STARTS));
        let posts: Vec<_> = (0..STARTS)
            .map(|n| {
                let (server, barrier) = (server.clone(), barrier.clone());
                tokio::spawn(async move {
                    let request =
                        server.post("/performances", json!({"intent": format!("race {n}")}));
                    barrier.wait().await;
                    request.send().await.unwrap().status().as_u16()
                })
            })
            .collect();
        let mut statuses = Vec::new();
        for post in posts {
            statuses.push(post.await.unwrap());
        }
        let started = statuses.iter().filter(|s| **s == 201).count();
        assert_eq!(started, 1, "round {round}: {statuses:?}");
        assert!(
            statuses.iter().all(|s| *s == 201 || *s == 429),
            "{statuses:?}"
        );
        let list = server.get_json("/performances").await;
        let live = list["performances"].as_array().unwrap().iter();
        assert_eq!(live.filter(|p| p["live"] == true).count(), 1, "{list}");
    }
}

/// Resumes racing for one id: of many `POST /performances {"resume": ID}` sent at once exactly
/// one resumes it, the others get 409, whatever their interleaving (the id is held under the
/// lock that reserves the place; two resumes both passed the log's "still running" check, and
/// one ran unlisted, never stopped), as does a resume of one running here.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_resumes_of_one_id_resume_it_once() {
    const RESUMES: usize = 16;
    let stage = TestStage::new(json!([{"say": "slow", "delay_ms": 60000}]), "");
    let server = std::sync::Arc::new(serve(&stage).await);
    let id = server.start(json!({"intent": "wait"})).await;
    let mut events = server.events(&id, None).await;
    until(&mut events, "turn_started").await;
    let stop = format!("/performances/{id}/stop");
    assert_eq!(server.send_post(&stop, json!({})).await.status(), 202);
    drain(&mut events).await;
    // Ended, and gone from the running once its task has removed it.
    let start = std::time::Instant::now();
    while server.get_json("/performances").await["performances"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["live"] == true)
    {
        assert!(start.elapsed() < std::time::Duration::from_secs(60));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(RESUMES));
    let posts: Vec<_> = (0..RESUMES)
        .map(|_| {
            let (server, barrier, id) = (server.clone(), barrier.clone(), id.clone());
            tokio::spawn(async move {
                let request = server.post("/performances", json!({"resume": id}));
                barrier.wait().await;
                request.send().await.unwrap().status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for post in posts {
        statuses.push(post.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
    let again = server
        .send_post("/performances", json!({"resume": id}))
        .await;
    assert_eq!(again.status(), 409, "a resume of one running here");
    // The hub counts a resume by its id: a part of the id (which the log would find) is refused
    // before it, rather than getting past it as another id.
    let part = server
        .send_post("/performances", json!({"resume": &id[..8]}))
        .await;
    assert_eq!(part.status(), 400, "a resume by a part of the id");
    let body: serde_json::Value = part.json().await.unwrap();
    assert_eq!(body["error"]["code"], "partial_id", "{body}");
}
