//! `improv worker --metrics ADDR` on the real binary: a scripted performance queued in a SQLite
//! store is performed, and the scrape (checked line by line as Prometheus text) counts what the
//! store's journal holds; `/readyz` follows a real PostgreSQL going away and coming back, and
//! never names the store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use improv_kernel::EventKind;
use improv_store::StoreUrl;
use improv_store::testing::TempPostgres;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

/// A worker process, stopped with SIGTERM when dropped.
struct Worker {
    child: Child,
    base: String,
}

impl Drop for Worker {
    fn drop(&mut self) {
        // SAFETY: signalling a child this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Starts `improv worker --metrics 127.0.0.1:0` on `store`; learns the address it printed.
fn worker(store: &str, extra_env: &[(&str, &str)]) -> Worker {
    let mut command = common::improv_command();
    command
        .args(["worker", "--store", store, "--metrics", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null());
    for (k, v) in extra_env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = loop {
        let line = lines
            .next()
            .expect("the worker says where its metrics are")
            .unwrap();
        if let Some(rest) = line.split("metrics at ").nth(1) {
            break rest.trim_end_matches("/metrics").to_string();
        }
    };
    // Keep reading, so the worker never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Worker { child, base }
}

/// Every sample of a Prometheus text exposition, each line checked: `# HELP`/`# TYPE`/`# EOF`
/// comments, else `name{labels} value` with a valid name and a number.
fn samples(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    assert_eq!(text.lines().last(), Some("# EOF"), "{text}");
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            assert!(
                ["HELP ", "TYPE ", "UNIT "]
                    .iter()
                    .any(|p| comment.starts_with(p))
                    || comment == "EOF",
                "{line}"
            );
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let name = key.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "{line}"
        );
        if key.contains('{') {
            assert!(key.ends_with('}'), "{line}");
        }
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
        out.insert(key.to_string(), value);
    }
    out
}

async fn get(url: &str) -> (u16, String) {
    let r = improv_models::client_builder()
        .unwrap()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn stage(dir: &Path) -> std::path::PathBuf {
    let script = dir.join("script.json");
    std::fs::write(
        &script,
        r#"[{"say": "Reading.", "calls": [{"name": "read", "arguments": {"path": "a.txt"}}]},
            {"say": "Read it.", "calls": [{"name": "read", "arguments": {"path": "a.txt"}}]},
            {"say": "Done."}]"#,
    )
    .unwrap();
    std::fs::write(dir.join("a.txt"), "alpha\n").unwrap();
    let path = dir.join("stage.toml");
    std::fs::write(
        &path,
        format!(
            "[stage]\nname = \"ops-test\"\nintent = \"Read a.txt.\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"scripted/{}\"\nprops = [\"read\"]\n\n[edges]\nsandbox = \"off\"\n",
            script.display()
        ),
    )
    .unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_metrics_count_what_its_store_journal_holds() {
    let dir = tempfile::tempdir().unwrap();
    let stage = stage(dir.path());
    let db = dir.path().join("store.db");
    let url = format!("sqlite:{}", db.display());
    let w = worker(&url, &[]);

    assert_eq!(get(&format!("{}/healthz", w.base)).await.0, 200);
    let (status, body) = get(&format!("{}/readyz", w.base)).await;
    assert_eq!(status, 200, "{body}");

    let out = common::improv_command()
        .args(["--stage", stage.to_str().unwrap(), "run", "--detach"])
        .args(["--store", &url, "Read a.txt"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let done = "improv_performances_finished_total{outcome=\"done\"}";
    let mut got = HashMap::new();
    for _ in 0..600 {
        let (status, text) = get(&format!("{}/metrics", w.base)).await;
        assert_eq!(status, 200);
        assert!(!text.contains(&id) && !text.contains("store.db"), "{text}");
        got = samples(&text);
        if got.get(done) == Some(&1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(got.get(done), Some(&1.0), "{got:?}");

    let store = improv_store::open(&StoreUrl::parse(&url).unwrap()).unwrap();
    let events = store.events(&id, 0, 0).await.unwrap();
    let turns = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::TurnStarted { .. }))
        .count();
    assert_eq!(turns, 3);
    let input: u64 = events
        .iter()
        .map(|e| match e.kind {
            EventKind::Usage { input_tokens, .. } => input_tokens,
            _ => 0,
        })
        .sum();
    let expect = [
        ("improv_turn_duration_seconds_count", turns as f64),
        ("improv_model_tokens_total{kind=\"input\"}", input as f64),
        ("improv_event_write_lag_seconds_count", events.len() as f64),
        ("improv_lease_claims_total{resumed=\"false\"}", 1.0),
        ("improv_leases_active", 0.0),
        ("improv_performances{state=\"running\"}", 0.0),
        ("improv_lease_expiries_total", 0.0),
    ];
    for (key, value) in expect {
        assert_eq!(got.get(key), Some(&value), "{key} in {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_postgres_and_never_names_it() {
    let pg = TempPostgres::start_new();
    pg.create_database("ops");
    let url = pg.url("ops");
    let w = worker(&url, &[]);
    let ready = format!("{}/readyz", w.base);
    let (status, body) = get(&ready).await;
    assert_eq!(status, 200, "{body}");

    pg.stop();
    let (status, body) = get(&ready).await;
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["reason"], "store_unavailable", "{body}");
    let socket = pg.socket_dir().display().to_string();
    assert!(
        !body.contains("postgres") && !body.contains(&socket),
        "{body}"
    );
    assert_eq!(get(&format!("{}/healthz", w.base)).await.0, 200);

    pg.start();
    let mut status = 0;
    for _ in 0..100 {
        status = get(&ready).await.0;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 200, "ready again once the database is back");
}

#[test]
fn json_logs_are_json_and_never_carry_the_store_password() {
    let secret = "s3cr3t-Pw0rd";
    // Nothing listens on port 1: the worker's claims fail and it logs each retry.
    let url = format!("postgres://ops:{secret}@127.0.0.1:1/improv");
    let mut child = common::improv_command()
        .args(["worker", "--store", &url, "--log-format", "json"])
        .env("IMPROV_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut retries = 0;
    for line in lines.map(Result::unwrap) {
        if line.starts_with('{') {
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(
                v["level"].is_string() && v["timestamp"].is_string(),
                "{line}"
            );
            let message = v["fields"]["message"].as_str().unwrap_or_default();
            if message.contains("cannot claim") {
                retries += 1;
                if retries == 3 {
                    // SAFETY: signalling the child this test started; it drains and exits.
                    unsafe { libc::kill(pid, libc::SIGTERM) };
                }
            }
        }
        seen.push(line);
        assert!(seen.len() < 500, "{seen:#?}");
    }
    child.wait().unwrap();
    assert!(retries >= 3, "{seen:#?}");
    let all = seen.join("\n");
    assert!(!all.contains(secret), "{all}");
    assert!(all.contains("127.0.0.1:1"), "the store is named: {all}");
}
