//! OpenTelemetry traces of a real performance: the `improv` binary performs a scripted stage
//! with two prop calls (one fails) while a local OTLP/HTTP receiver (a small axum server)
//! collects what it exports. The spans must nest performance → turn → model call / prop call,
//! carry the GenAI conventions' attributes and improv's own, honour `OTEL_SERVICE_NAME` and
//! `OTEL_EXPORTER_OTLP_HEADERS`, and hold no prompt, argument or output. Without an endpoint (or
//! with the SDK disabled) nothing is sent, and a collector that is down fails nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use axum::Router;
use axum::http::HeaderMap;
use axum::routing::post;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

/// What the receiver got: each request's headers and JSON body.
type Received = Arc<Mutex<Vec<(HeaderMap, Value)>>>;

/// Starts an OTLP/HTTP receiver on a free local port; returns its base URL.
async fn receiver() -> (String, Received) {
    let received: Received = Arc::default();
    let sink = received.clone();
    let app = Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: String| async move {
            let json = serde_json::from_str(&body).expect("an OTLP JSON body");
            sink.lock().unwrap().push((headers, json));
            "{}"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, received)
}

/// Markers that stand for content: they are in the intent, the arguments, the reply and the
/// output, and must be in no span.
const SECRETS: [&str; 4] = [
    "INTENT-MARK",
    "ARGUMENT-MARK",
    "REPLY-MARK",
    "missing-file-mark",
];

/// A stage whose scripted lead runs `bash` (`echo ARGUMENT-MARK`, then `then`) and reads a
/// missing file (a failed call) in its first turn, and ends in its second.
fn stage(dir: &Path, then: &str) {
    std::fs::write(
        dir.join("stage.toml"),
        "[stage]\nname = \"trace-test\"\nintent = \"INTENT-MARK\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"scripted/turns.json\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("turns.json"),
        format!(
            r#"[{{"say": "Working.", "calls": [
              {{"name": "bash", "arguments": {{"command": "echo ARGUMENT-MARK; {then}"}}}},
              {{"name": "read", "arguments": {{"path": "missing-file-mark.txt"}}}}]}},
            {{"say": "REPLY-MARK"}}]"#
        ),
    )
    .unwrap();
}

/// `improv run --json` in `dir`, with only the `OTEL_*` variables given.
async fn run(dir: &Path, otel: &[(&str, String)]) -> Output {
    let mut c: Command = common::improv_command();
    c.current_dir(dir)
        .args(["run", "--json"])
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("OTEL_") {
            c.env_remove(key);
        }
    }
    for (key, value) in otel {
        c.env(key, value);
    }
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The events `--json` printed.
fn events(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A span's attributes as strings (integers arrive as strings in OTLP JSON).
fn attrs(span: &Value) -> HashMap<String, String> {
    span["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let v = &a["value"];
            let text = v["stringValue"]
                .as_str()
                .or(v["intValue"].as_str())
                .unwrap_or_else(|| panic!("a string or int attribute: {a}"));
            (a["key"].as_str().unwrap().to_string(), text.to_string())
        })
        .collect()
}

fn a_model(span: &Value) -> String {
    attrs(span)["gen_ai.request.model"].clone()
}

fn nanos(span: &Value, key: &str) -> u128 {
    span[key].as_str().unwrap().parse().unwrap()
}

/// Asserts `child` nests in `parent`: its parent id, and its time inside the parent's.
fn nested(child: &Value, parent: &Value) {
    assert_eq!(
        child["parentSpanId"], parent["spanId"],
        "{child} under {parent}"
    );
    assert_eq!(child["traceId"], parent["traceId"]);
    assert!(nanos(child, "startTimeUnixNano") >= nanos(parent, "startTimeUnixNano"));
    assert!(nanos(child, "endTimeUnixNano") <= nanos(parent, "endTimeUnixNano"));
    assert!(
        nanos(child, "startTimeUnixNano") <= nanos(child, "endTimeUnixNano"),
        "{child}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_performance_is_traced_with_genai_spans_to_the_otlp_endpoint() {
    let (base, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path(), "true");
    let out = run(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("{base}/")),
            ("OTEL_SERVICE_NAME", "improv-under-test".into()),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-api-key=s%20cret,x-team=ops".into(),
            ),
        ],
    )
    .await;
    let events = events(&out);
    let of = |t: &str| -> Vec<&Value> { events.iter().filter(|e| e["type"] == t).collect() };
    let id = of("performance_started")[0]["performance"]
        .as_str()
        .unwrap();

    let requests = received.lock().unwrap().clone();
    assert!(!requests.is_empty(), "no span reached the receiver");
    let mut spans = Vec::new();
    for (headers, body) in &requests {
        assert_eq!(headers["x-api-key"], "s cret");
        assert_eq!(headers["x-team"], "ops");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .contains("application/json")
        );
        let text = body.to_string();
        for secret in SECRETS {
            assert!(
                !text.contains(secret),
                "{secret} leaked into a span: {text}"
            );
        }
        let resource = &body["resourceSpans"][0];
        assert_eq!(
            attrs(&resource["resource"])["service.name"],
            "improv-under-test"
        );
        spans.extend(
            resource["scopeSpans"][0]["spans"]
                .as_array()
                .unwrap()
                .clone(),
        );
    }
    let named = |prefix: &str| -> Vec<&Value> {
        spans
            .iter()
            .filter(|s| s["name"].as_str().unwrap().starts_with(prefix))
            .collect()
    };

    let roots: Vec<&Value> = spans.iter().filter(|s| s["parentSpanId"] == "").collect();
    assert_eq!(roots.len(), 1, "one root span: {spans:?}");
    let root = roots[0];
    assert_eq!(root["name"], "invoke_agent lead");
    let a = attrs(root);
    assert_eq!(a["gen_ai.operation.name"], "invoke_agent");
    assert_eq!(a["gen_ai.agent.name"], "lead");
    assert_eq!(a["improv.performance.id"], id);
    assert_eq!(a["improv.actor"], "lead");
    assert_eq!(a["improv.outcome"], "done");
    assert_eq!(root["status"]["code"], 0);

    let turns = named("turn");
    assert_eq!(turns.len(), 2, "{spans:?}");
    let turn = |n: &str| *turns.iter().find(|t| attrs(t)["improv.turn"] == n).unwrap();
    for t in &turns {
        nested(t, root);
    }

    let chats = named("chat ");
    let usage = of("usage");
    assert_eq!(chats.len(), 2, "{spans:?}");
    for n in ["1", "2"] {
        let chat = *chats
            .iter()
            .find(|c| c["parentSpanId"] == turn(n)["spanId"])
            .unwrap_or_else(|| panic!("a model call under turn {n}: {chats:?}"));
        nested(chat, turn(n));
        // A scripted model is named by its script's path.
        let model = a_model(chat);
        assert!(model.ends_with("/turns.json"), "{model}");
        assert_eq!(chat["name"], format!("chat {model}"));
        assert_eq!(chat["kind"], 3, "a model call is a client span");
        let a = attrs(chat);
        assert_eq!(a["gen_ai.operation.name"], "chat");
        assert_eq!(a["gen_ai.provider.name"], "scripted");
        assert_eq!(a["gen_ai.system"], "scripted");
        assert_eq!(
            a["gen_ai.response.finish_reasons"],
            if n == "1" { "tool_calls" } else { "stop" }
        );
        let used = usage[n.parse::<usize>().unwrap() - 1];
        assert_eq!(
            a["gen_ai.usage.input_tokens"],
            used["input_tokens"].to_string()
        );
        assert_eq!(
            a["gen_ai.usage.output_tokens"],
            used["output_tokens"].to_string()
        );
    }

    let tools = named("execute_tool ");
    assert_eq!(tools.len(), 2, "{spans:?}");
    for started in of("tool_call_started") {
        let name = started["name"].as_str().unwrap();
        let call_id = started["call_id"].as_str().unwrap();
        let span = *tools
            .iter()
            .find(|s| attrs(s)["gen_ai.tool.call.id"] == call_id)
            .unwrap_or_else(|| panic!("a span for call {call_id}: {tools:?}"));
        nested(span, turn("1"));
        assert_eq!(span["name"], format!("execute_tool {name}"));
        let a = attrs(span);
        assert_eq!(a["gen_ai.operation.name"], "execute_tool");
        assert_eq!(a["gen_ai.tool.name"], name);
        let ok = of("tool_call_finished")
            .into_iter()
            .find(|f| f["call_id"] == call_id)
            .unwrap()["ok"]
            .as_bool()
            .unwrap();
        assert_eq!(ok, name == "bash", "the read of a missing file fails");
        assert_eq!(span["status"]["code"], if ok { 0 } else { 2 }, "{span}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_or_with_the_sdk_disabled_nothing_is_sent() {
    let (base, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path(), "true");
    // The other OTEL variables alone do not turn export on.
    run(
        dir.path(),
        &[
            ("OTEL_SERVICE_NAME", "improv-under-test".into()),
            ("OTEL_EXPORTER_OTLP_HEADERS", format!("x-receiver={base}")),
        ],
    )
    .await;
    run(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", base.clone()),
            ("OTEL_SDK_DISABLED", "true".into()),
        ],
    )
    .await;
    assert!(received.lock().unwrap().is_empty(), "spans were sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_is_reported_once_and_fails_nothing() {
    // A port that was free a moment ago: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    // The call outlasts the export interval, so the first turn's spans are posted (and fail)
    // before the last ones: two failures, one line.
    stage(dir.path(), "sleep 1.5");
    let out = run(
        dir.path(),
        &[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            format!("http://127.0.0.1:{port}/v1/traces"),
        )],
    )
    .await;
    let last = events(&out).pop().unwrap();
    assert_eq!(last["outcome"], "done");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.matches("traces could not be exported").count(),
        1,
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cued_actors_performance_is_traced_under_the_cue_call() {
    let (base, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stage.toml"),
        "[stage]\nname = \"cue-trace\"\nintent = \"go\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"scripted/lead.json\"\nprops = [\"cue\"]\ncues = [\"helper\"]\n\n[[actor]]\nname = \"helper\"\nmodel = \"scripted/helper.json\"\n",
    )
    .unwrap();
    let cue = r#"{"name": "cue", "arguments": {"actor": "helper", "task": "look"}}"#;
    std::fs::write(
        dir.path().join("lead.json"),
        format!(r#"[{{"calls": [{cue}]}}, {{"say": "done"}}]"#),
    )
    .unwrap();
    std::fs::write(dir.path().join("helper.json"), r#"[{"say": "seen"}]"#).unwrap();
    run(dir.path(), &[("OTEL_EXPORTER_OTLP_ENDPOINT", base.clone())]).await;
    let spans: Vec<Value> = received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, body)| {
            body["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .unwrap()
                .clone()
        })
        .collect();
    let one = |name: &str| -> &Value {
        let found: Vec<&Value> = spans.iter().filter(|s| s["name"] == name).collect();
        assert_eq!(found.len(), 1, "one {name}: {spans:?}");
        found[0]
    };
    let lead = one("invoke_agent lead");
    assert_eq!(
        lead["parentSpanId"], "",
        "the lead's performance is the root"
    );
    let call = one("execute_tool cue");
    let helper = one("invoke_agent helper");
    nested(helper, call);
    assert_eq!(attrs(helper)["improv.actor"], "helper");
    let helper_turn = spans
        .iter()
        .find(|s| s["name"] == "turn" && s["parentSpanId"] == helper["spanId"])
        .unwrap_or_else(|| panic!("the helper's turn: {spans:?}"));
    nested(helper_turn, helper);
    let chat = spans
        .iter()
        .find(|s| s["parentSpanId"] == helper_turn["spanId"])
        .unwrap_or_else(|| panic!("the helper's model call: {spans:?}"));
    assert!(chat["name"].as_str().unwrap().ends_with("helper.json"));
}

/// A worker process, stopped with SIGTERM (drained) when dropped.
struct Worker(std::process::Child);

impl Drop for Worker {
    fn drop(&mut self) {
        // SAFETY: signalling a child this test started.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_performance_a_worker_leased_from_the_store_is_traced() {
    let (base, received) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path(), "true");
    let url = format!("sqlite:{}", dir.path().join("store.db").display());
    let queued = common::improv_command()
        .current_dir(dir.path())
        .args(["run", "--detach", "--store", &url, "go"])
        .output()
        .unwrap();
    assert!(queued.status.success(), "{queued:?}");
    let id = String::from_utf8(queued.stdout).unwrap().trim().to_string();
    let mut worker = common::improv_command();
    worker
        .args(["worker", "--store", &url])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &base)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _worker = Worker(worker.spawn().unwrap());
    // The root span is posted as soon as the performance ends; bounded at 60 s.
    let root = async {
        loop {
            let bodies: Vec<Value> = received
                .lock()
                .unwrap()
                .iter()
                .map(|r| r.1.clone())
                .collect();
            for body in bodies {
                for span in body["resourceSpans"][0]["scopeSpans"][0]["spans"]
                    .as_array()
                    .unwrap()
                {
                    if span["parentSpanId"] == "" {
                        return span.clone();
                    }
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    let root = tokio::time::timeout(std::time::Duration::from_secs(60), root)
        .await
        .expect("the worker's performance reached the receiver within 60 s");
    let a = attrs(&root);
    assert_eq!(a["improv.performance.id"], id);
    assert_eq!(a["improv.outcome"], "done");
}

/// What a collector that accepts and never answers saw: requests held, and connections the
/// client gave up on (closed before an answer).
#[derive(Default)]
struct Hung {
    held: std::sync::atomic::AtomicUsize,
    abandoned: std::sync::atomic::AtomicUsize,
}

/// A collector that accepts TCP, reads the request and never answers; returns its base URL.
async fn hung_collector() -> (String, Arc<Hung>) {
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncReadExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let hung = Arc::new(Hung::default());
    let seen = hung.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut counted = false;
                // Read until the client closes; answer nothing.
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    if !counted {
                        counted = true;
                        seen.held.fetch_add(1, Ordering::SeqCst);
                    }
                }
                if counted {
                    seen.abandoned.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (base, hung)
}

/// A collector that accepts and never answers never delays a turn: the first turn's spans are
/// posted during its prop call (which outlasts the export interval), that request is never
/// answered, and still the call goes on and the performance ends while the request is held.
/// Were the export on the turn's path, the call would wait for the client to give up on the
/// collector (its request timeout), so the collector would see the request abandoned before
/// the mark appeared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_collector_never_delays_a_turn() {
    use std::sync::atomic::Ordering;
    let (base, hung) = hung_collector().await;
    let dir = tempfile::tempdir().unwrap();
    stage(dir.path(), "sleep 1.5; touch turn-went-on");
    let root = dir.path().to_path_buf();
    let performed =
        tokio::spawn(async move { run(&root, &[("OTEL_EXPORTER_OTLP_ENDPOINT", base)]).await });
    let mark = dir.path().join("turn-went-on");
    let waited = async {
        while !mark.exists() && hung.abandoned.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), waited)
        .await
        .expect("neither the mark nor an abandoned export within 120 s");
    assert_eq!(
        hung.abandoned.load(Ordering::SeqCst),
        0,
        "the turn waited for the hung collector until the export gave up"
    );
    assert!(
        hung.held.load(Ordering::SeqCst) >= 1,
        "the first turn's spans were not posted during its call"
    );
    let out = performed.await.unwrap();
    assert_eq!(events(&out).pop().unwrap()["outcome"], "done");
}

/// A receiver that answers its first request only after `delay` (the export thread is busy
/// meanwhile), and the others at once.
async fn slow_first_receiver(delay: std::time::Duration) -> (String, Received) {
    let received: Received = Arc::default();
    let sink = received.clone();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: String| async move {
            let json = serde_json::from_str(&body).expect("an OTLP JSON body");
            sink.lock().unwrap().push((headers, json));
            if count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                tokio::time::sleep(delay).await;
            }
            "{}"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, received)
}

/// The names of every span received so far.
fn span_names(received: &Received) -> Vec<String> {
    received
        .lock()
        .unwrap()
        .iter()
        .flat_map(|(_, body)| {
            body["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `improv worker` and `improv serve` post the spans in flight when they exit: the lead's
/// `bash` call ends after the process was told to stop, while the export thread is still
/// busy with an earlier batch (the receiver answers it late), so its span is only posted if
/// the process waits for it (at most trace::FLUSH_AT_EXIT, 3 s).
async fn spans_in_flight_are_posted_at_exit(serve: bool) {
    let (base, received) = slow_first_receiver(std::time::Duration::from_secs(2)).await;
    let dir = tempfile::tempdir().unwrap();
    stage(
        dir.path(),
        "touch started; while [ ! -f go ]; do sleep 0.05; done",
    );
    let url = format!("sqlite:{}", dir.path().join("store.db").display());
    let mut command = common::improv_command();
    command
        .current_dir(dir.path())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &base)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null());
    if serve {
        command
            .args(["serve", "--bind", "127.0.0.1:0"])
            .stderr(Stdio::piped());
    } else {
        let queued = common::improv_command()
            .current_dir(dir.path())
            .args(["run", "--detach", "--store", &url, "go"])
            .output()
            .unwrap();
        assert!(queued.status.success(), "{queued:?}");
        command
            .args(["worker", "--store", &url])
            .stderr(Stdio::null());
    }
    let mut child = command.spawn().unwrap();
    if serve {
        start_over_the_api(&mut child).await;
    }
    let started = dir.path().join("started");
    let first = async {
        while !started.exists() || received.lock().unwrap().is_empty() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(60), first)
        .await
        .expect("the call did not start, or the first batch was not posted, within 60 s");
    // SAFETY: signalling a child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    std::fs::write(dir.path().join("go"), "").unwrap();
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    let names = span_names(&received);
    assert!(
        names.iter().any(|n| n == "execute_tool bash"),
        "the bash call's span, finished at exit, was not posted: {names:?}"
    );
}

/// Reads `improv serve`'s address and token from its stderr and starts a performance.
async fn start_over_the_api(child: &mut std::process::Child) {
    use std::io::BufRead;
    let pipe = child.stderr.take().unwrap();
    let (url, token) = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(pipe).lines();
        let (mut url, mut token) = (None, None);
        while url.is_none() || token.is_none() {
            let line = lines.next().expect("improv serve ended").unwrap();
            if let Some((_, at)) = line.split_once("serving the stage view at ") {
                url = Some(at.trim().to_string());
            }
            if line.starts_with("bearer token (shown once") {
                token = line.rsplit(": ").next().map(|t| t.trim().to_string());
            }
        }
        std::thread::spawn(move || for _ in lines {});
        (url.unwrap(), token.unwrap())
    })
    .await
    .unwrap();
    let started = improv_models::client_builder()
        .unwrap()
        .build()
        .unwrap()
        .post(format!("{url}performances"))
        .bearer_auth(token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status().as_u16(), 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_posts_the_spans_in_flight_at_exit() {
    spans_in_flight_are_posted_at_exit(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_posts_the_spans_in_flight_at_exit() {
    spans_in_flight_are_posted_at_exit(true).await;
}
