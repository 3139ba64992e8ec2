//! The stage view under load, loopback only and bounded: 50 concurrent performances played by
//! the scripted model, 200 clients streaming their events (4 per performance). Prints the
//! event latency (p50, p99: from the event's `at` to its arrival at a client), the server's
//! resident memory (it runs in a child process, so the figure is the server's alone), and that
//! no client lost or repeated an event.
//!
//! ```text
//! cargo run --release -p improv-serve --example load [-- PERFORMANCES CLIENTS_PER TURNS]
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use eventsource_stream::Eventsource;
use futures::StreamExt;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    if args.get(1).map(String::as_str) == Some("--server") {
        rt.block_on(server(Path::new(&args[2])));
    } else {
        let n = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
        rt.block_on(load(n(1, 50), n(2, 4), n(3, 20)));
    }
}

/// The child: serves the stage in `dir` and prints its address and token.
async fn server(dir: &Path) {
    let stage = Arc::new(improv_stage::Stage::load(&dir.join("stage.toml")).unwrap());
    let args = improv_serve::ServeArgs {
        bind: "127.0.0.1:0".parse().unwrap(),
        max_performances: 1000,
        ..Default::default()
    };
    let server = improv_serve::bind(stage, &args).await.unwrap();
    println!("{} {}", server.addr(), server.token());
    server.run(std::future::pending()).await.unwrap();
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

fn at_ms(at: &str) -> f64 {
    let t =
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap();
    t.unix_timestamp_nanos() as f64 / 1e6
}

/// What one client saw.
struct Seen {
    seqs: Vec<u64>,
    latencies: Vec<f64>,
    ended: bool,
}

async fn client(http: reqwest::Client, url: String, token: String) -> Seen {
    let r = http.get(&url).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let connected = now_ms();
    let mut events = r.bytes_stream().eventsource();
    let mut seen = Seen {
        seqs: Vec::new(),
        latencies: Vec::new(),
        ended: false,
    };
    while let Some(e) = events.next().await {
        let e = e.unwrap();
        let arrived = now_ms();
        if e.event == "end" {
            seen.ended = true;
            break;
        }
        if e.event != "message" {
            continue;
        }
        let v: Value = serde_json::from_str(&e.data).unwrap();
        seen.seqs.push(v["seq"].as_u64().unwrap());
        let at = at_ms(v["at"].as_str().unwrap());
        // Events from before the client connected were replayed, not delivered live.
        if at >= connected {
            seen.latencies.push(arrived - at);
        }
    }
    seen
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn load(performances: usize, per: usize, turns: usize) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "alpha\n").unwrap();
    // Each turn reads a file after a short think, so the performances overlap.
    let mut script: Vec<Value> = (0..turns)
        .map(|i| {
            json!({"say": format!("step {i} of the plan "), "delay_ms": 20,
                   "calls": [{"name": "read", "arguments": {"path": "a.txt", "limit": 1 + i % 3}}]})
        })
        .collect();
    script.push(json!({"say": "All steps done."}));
    let script_path = dir.path().join("script.json");
    std::fs::write(&script_path, Value::Array(script).to_string()).unwrap();
    std::fs::write(
        dir.path().join("stage.toml"),
        format!(
            "[stage]\nname = \"load\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"scripted/{}\"\nprops = [\"read\"]\n\n[edges]\nsandbox = \"off\"\n",
            script_path.display()
        ),
    )
    .unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .arg("--server")
        .arg(dir.path())
        .env("HOME", dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut parts = line.split_whitespace();
    let base = format!("http://{}", parts.next().unwrap());
    let token = parts.next().unwrap().to_string();
    let idle_rss = rss_kib(pid, "VmRSS:");

    let http = improv_models::client_builder()
        .unwrap()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let started = Instant::now();
    let mut ids = Vec::new();
    let mut clients = Vec::new();
    for i in 0..performances {
        let r = http
            .post(format!("{base}/performances"))
            .bearer_auth(&token)
            .json(&json!({"intent": format!("load test {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let id = r.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        for _ in 0..per {
            let url = format!("{base}/performances/{id}/events");
            clients.push(tokio::spawn(client(http.clone(), url, token.clone())));
        }
        ids.push(id);
    }
    let mut seen = Vec::new();
    for c in clients {
        seen.push(c.await.unwrap());
    }
    let wall = started.elapsed();
    let hwm = rss_kib(pid, "VmHWM:");
    let end_rss = rss_kib(pid, "VmRSS:");

    // Every client must have every event of its performance, once, in order.
    let log = improv_log::EventLog::open(&dir.path().join(".improv")).unwrap();
    let (mut lost, mut duplicated, mut unended, mut frames) = (0usize, 0usize, 0usize, 0usize);
    let mut latencies = Vec::new();
    for (i, s) in seen.iter().enumerate() {
        let id = &ids[i / per];
        let logged = log.events(id).unwrap();
        let last = logged.last().unwrap().seq;
        frames += s.seqs.len();
        let mut unique = s.seqs.clone();
        unique.sort_unstable();
        unique.dedup();
        duplicated += s.seqs.len() - unique.len();
        lost += (last + 1) as usize - unique.iter().filter(|q| **q <= last).count();
        if !s.ended {
            unended += 1;
        }
        latencies.extend_from_slice(&s.latencies);
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let _ = child.kill();
    let _ = child.wait();

    println!("improv-serve load test (loopback, scripted model)");
    println!(
        "  performances {performances}, clients {} ({per} each), {turns} turns each",
        performances * per
    );
    println!(
        "  events received {frames} in {:.2} s; live latency samples {}",
        wall.as_secs_f64(),
        latencies.len()
    );
    println!(
        "  event latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (event `at` has 1 ms resolution)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  server RSS idle {:.1} MiB, peak {:.1} MiB, after {:.1} MiB",
        idle_rss as f64 / 1024.0,
        hwm as f64 / 1024.0,
        end_rss as f64 / 1024.0
    );
    println!("  lost {lost}, duplicated {duplicated}, streams without end {unended}");
    if lost + duplicated + unended > 0 {
        std::process::exit(1);
    }
}
