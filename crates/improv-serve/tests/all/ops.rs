//! Operations on the real server: `/healthz` and `/readyz` answer without the token and say no
//! more than which check failed; `/metrics` needs the token and, scraped after a scripted
//! performance, parses as Prometheus text with the counts the performance's log shows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use crate::common::{TestStage, drain, serve};
use improv_kernel::EventKind;
use serde_json::{Value, json};
use std::collections::HashMap;

fn three_turns() -> Value {
    json!([
        {"say": "Reading first. ", "calls": [{"name": "read", "arguments": {"path": "a.txt"}}]},
        {"calls": [{"name": "write", "arguments": {"path": "b.txt", "content": "beta\n"}}]},
        {"say": "Wrote b.txt as asked."}
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_need_no_token_and_readiness_follows_the_stage_file_without_naming_it() {
    let stage = TestStage::new(three_turns(), "");
    let server = serve(&stage).await;
    let bare = improv_models::client_builder().unwrap().build().unwrap();

    let health = bare.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = bare.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());

    // The stage file breaks under the running server: not ready, and the probe says which
    // check failed without a path or the parser's words.
    let path = stage.path().join("stage.toml");
    std::fs::write(&path, "[stage\nname = ").unwrap();
    let ready = bare.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["reason"], "stage_unloadable", "{body}");
    let dir = stage.path().display().to_string();
    assert!(
        !body.contains(&dir) && !body.contains("stage.toml"),
        "{body}"
    );
    // Alive all the same.
    let health = bare.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    // Metrics are the API's: no token, no numbers.
    let refused = bare.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let wrong = bare
        .get(server.url("/metrics"))
        .bearer_auth("not-the-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
}

/// Samples by name and labels (`name{k="v",…}` with labels sorted).
fn samples(text: &str) -> HashMap<String, f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    let mut out = HashMap::new();
    for s in scrape.samples {
        let mut labels: Vec<_> = s
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        labels.sort();
        let key = if labels.is_empty() {
            s.metric.clone()
        } else {
            format!("{}{{{}}}", s.metric, labels.join(","))
        };
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => {
                out.insert(
                    format!("{}_bucket_inf", s.metric),
                    h.last().map_or(0.0, |b| b.count),
                );
                continue;
            }
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(key, value);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_scripted_performance_match_its_log() {
    let stage = TestStage::new(three_turns(), "");
    let server = serve(&stage).await;
    let id = server.start(json!({"intent": "Copy a.txt"})).await;
    let mut events = server.events(&id, None).await;
    drain(&mut events).await;
    let log = common::logged(&stage, &id);

    // The meter sees the end just after the stream does: scrape until it has.
    let mut got = HashMap::new();
    for _ in 0..200 {
        let r = server.send_get("/metrics").await;
        assert_eq!(r.status(), 200);
        let kind = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(kind.contains("text"), "{kind}");
        let text = r.text().await.unwrap();
        assert!(
            !text.contains(&id) && !text.contains("Copy a.txt"),
            "no id or intent in a label:\n{text}"
        );
        got = samples(&text);
        if got.get("improv_performances_finished_total{outcome=\"done\"}") == Some(&1.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        got.get("improv_performances_finished_total{outcome=\"done\"}"),
        Some(&1.0),
        "{got:?}"
    );
    assert_eq!(
        got.get("improv_performances{state=\"running\"}"),
        Some(&0.0),
        "{got:?}"
    );

    let turns = log
        .iter()
        .filter(|e| matches!(e.kind, EventKind::TurnStarted { .. }))
        .count();
    assert_eq!(turns, 3);
    assert_eq!(
        got.get("improv_turn_duration_seconds_count"),
        Some(&(turns as f64)),
        "{got:?}"
    );
    let (mut input, mut output, mut cost) = (0u64, 0u64, 0f64);
    for e in &log {
        if let EventKind::Usage {
            input_tokens,
            output_tokens,
            cost_usd,
            ..
        } = &e.kind
        {
            input += input_tokens;
            output += output_tokens;
            cost += cost_usd;
        }
    }
    assert!(input > 0, "the scripted model reports tokens");
    assert_eq!(
        got.get("improv_model_tokens_total{kind=\"input\"}"),
        Some(&(input as f64)),
        "{got:?}"
    );
    assert_eq!(
        got.get("improv_model_tokens_total{kind=\"output\"}"),
        Some(&(output as f64)),
        "{got:?}"
    );
    assert!(
        (got.get("improv_model_cost_usd_total")
            .copied()
            .unwrap_or(-1.0)
            - cost)
            .abs()
            < 1e-9
    );
    // Every logged event passed the meter once it was written.
    let lagged = got
        .get("improv_event_write_lag_seconds_count")
        .copied()
        .unwrap_or(0.0);
    assert!(lagged >= log.len() as f64, "{lagged} < {}", log.len());
}
