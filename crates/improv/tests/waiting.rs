//! The waiting bench (`bench/store/waiting.sh`): many performances waiting on a slow model in
//! one `improv worker` on a PostgreSQL store (a throwaway server; `IMPROV_BENCH_STORE=sqlite`: a
//! SQLite file), while `improv serve` on the same store answers the API and the page. It reports the worker's peak resident memory (goal
//! at 10,000 performances: 2 GB) and the latency of `GET /healthz`, `/performances` and the page
//! (goal: 100 ms) while they wait. The real binary; the model is a local server that reads each
//! request and answers nothing for as long as the bench runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use improv_store::testing::TempPostgres;
use improv_store::{NewPerformance, StoreUrl};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Performances, unless `IMPROV_BENCH_WAITING` says how many.
const DEFAULT_PERFORMANCES: usize = 10_000;
/// Requests per route measured.
const SAMPLES: usize = 100;
/// Seconds the worker gets to start them all, unless `IMPROV_BENCH_RAMP_SECS` says. A start
/// costs more the more wait (a release build on 2 shared cores: ~50 a second at first, ~6 near
/// 8,000), so 10,000 takes ~15 minutes.
const DEFAULT_RAMP_SECS: u64 = 1500;

/// Requests the slow model holds open now (the performances waiting on it) and has been asked
/// in all (more: the client gives a request up after its 600 s read timeout and asks again).
#[derive(Default)]
struct Asked {
    open: AtomicUsize,
    total: AtomicUsize,
}

/// A model that takes each request and answers nothing for `hold` (longer than the bench),
/// until its client hangs up.
async fn slow_model(hold: Duration) -> (String, Arc<Asked>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let asked = Arc::new(Asked::default());
    let count = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if !matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {
                    return;
                }
                count.open.fetch_add(1, Ordering::SeqCst);
                count.total.fetch_add(1, Ordering::SeqCst);
                // Until the client hangs up (its read timeout) or the bench is over.
                let _ = tokio::time::timeout(hold, async {
                    while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
                })
                .await;
                count.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (url, asked)
}

/// One `GET path` with `Connection: close`; the time to the whole answer, and its status line.
async fn get(host: &str, path: &str, token: &str) -> (Duration, String) {
    let start = Instant::now();
    let mut socket = TcpStream::connect(host).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    socket.read_to_end(&mut answer).await.unwrap();
    let status = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    (start.elapsed(), status)
}

/// `VmHWM` (peak) and `VmRSS` of a process, in MB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmHWM:") / 1024.0, kb("VmRSS:") / 1024.0)
}

/// The open descriptors of a process, by what they are (`socket`, `pipe`, `anon_inode`, or a
/// path's first two folders), most first.
fn descriptors(pid: u32) -> Vec<(String, usize)> {
    let mut kinds = std::collections::HashMap::<String, usize>::new();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten();
    for target in fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
    {
        let target = target.display().to_string();
        let kind = match target.split_once(':') {
            Some((kind, _)) if !target.starts_with('/') => kind.to_string(),
            _ => target.split('/').take(3).collect::<Vec<_>>().join("/"),
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    let mut kinds: Vec<_> = kinds.into_iter().collect();
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    kinds
}

/// The binary measured: `IMPROV_BENCH_BIN` (a release build: `cargo build --release -p
/// improv`), else the debug build the tests use.
fn improv() -> std::process::Command {
    match std::env::var_os("IMPROV_BENCH_BIN") {
        Some(bin) => {
            let mut c = std::process::Command::new(bin);
            c.env("XDG_DATA_HOME", common::data_home());
            c
        }
        None => common::improv_command(),
    }
}

fn spawn(args: &[&str], store: &str, model: &str, dir: &std::path::Path) -> Child {
    improv()
        .current_dir(dir)
        .env("IMPROV_STORE", store)
        .env("OPENAI_API_KEY", "sk-test")
        .env("OPENAI_BASE_URL", model)
        .env("RUST_LOG", "warn")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The served address and token from `improv serve`'s first lines.
fn served_at(serve: &mut Child) -> (String, String) {
    let lines = BufReader::new(serve.stderr.take().unwrap()).lines();
    let (mut host, mut token) = (None, None);
    for line in lines.map_while(Result::ok) {
        if let Some(at) = line.split("http://").nth(1) {
            host.get_or_insert(at.split(['/', ' ']).next().unwrap().to_string());
        }
        if let Some(t) = line.split("#token=").nth(1) {
            token = Some(t.trim().to_string());
        }
        if host.is_some() && token.is_some() {
            break;
        }
    }
    (host.unwrap(), token.unwrap())
}

/// The store the bench runs on: a throwaway PostgreSQL server (kept while it is held) unless
/// `IMPROV_BENCH_STORE=sqlite` asks for a SQLite file in `dir`; and its URL.
fn bench_store(dir: &std::path::Path) -> (Option<TempPostgres>, String) {
    if std::env::var("IMPROV_BENCH_STORE").is_ok_and(|s| s == "sqlite") {
        return (None, format!("sqlite:{}", dir.join("store.db").display()));
    }
    let server = TempPostgres::start_new();
    let url = server.create_database("waiting");
    (Some(server), url)
}

/// The CPU time a process has used, user and system, in clock ticks (100 a second on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command's `)`: utime and stime are the 12th and 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a bench: bench/store/waiting.sh"]
async fn bench_waiting() {
    let n: usize = std::env::var("IMPROV_BENCH_WAITING")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_PERFORMANCES);
    let ramp_cap = Duration::from_secs(
        std::env::var("IMPROV_BENCH_RAMP_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_RAMP_SECS),
    );
    let dir = tempfile::tempdir().unwrap();
    let (_server, url) = bench_store(dir.path());
    std::fs::write(
        dir.path().join("stage.toml"),
        "[stage]\nname = \"waiting\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"openai/mock\"\n\n[edges]\nworkspace = \".\"\nsandbox = \"off\"\n",
    )
    .unwrap();
    let stage = dir.path().join("stage.toml").display().to_string();
    let (model, asked) = slow_model(ramp_cap + Duration::from_secs(600)).await;
    let store = improv_store::open(&StoreUrl::parse(&url).unwrap()).unwrap();
    store.migrate().await.unwrap();
    let start = Instant::now();
    let mut queued = tokio::task::JoinSet::new();
    for chunk in 0..16 {
        let (store, stage) = (store.clone(), stage.clone());
        queued.spawn(async move {
            for i in (chunk..n).step_by(16) {
                store
                    .enqueue(&NewPerformance {
                        id: None,
                        stage: stage.clone(),
                        stage_name: None,
                        intent: format!("p{i}"),
                        model: None,
                        origin: "bench".into(),
                        budget: None,
                    })
                    .await
                    .unwrap();
            }
        });
    }
    queued.join_all().await;
    eprintln!("queued {n} in {:.1} s", start.elapsed().as_secs_f64());

    let mut serve = spawn(
        &["-s", "stage.toml", "serve", "--bind", "127.0.0.1:0"],
        &url,
        &model,
        dir.path(),
    );
    let (host, token) = served_at(&mut serve);
    let concurrency = n.to_string();
    let worker = spawn(
        &["worker", "--concurrency", &concurrency, "--lease", "60s"],
        &url,
        &model,
        std::path::Path::new("/"),
    );
    let start = Instant::now();
    while asked.open.load(Ordering::SeqCst) < n && start.elapsed() < ramp_cap {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let waiting = asked.open.load(Ordering::SeqCst);
    let ramp = start.elapsed().as_secs_f64();
    println!(
        "\n{waiting} of {n} performances waiting on the model after {ramp:.1} s (one worker, \
         {} store; {} requests in all)\n",
        url.split(':').next().unwrap_or_default(),
        asked.total.load(Ordering::SeqCst)
    );
    let (busy, quiet) = (cpu_ticks(worker.id()), Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    println!(
        "worker CPU while they wait: {:.0}% of a core over {:.1} s\n",
        (cpu_ticks(worker.id()) - busy) as f64 / quiet.elapsed().as_secs_f64(),
        quiet.elapsed().as_secs_f64()
    );
    println!("| route | p50 ms | p99 ms | max ms | status |");
    println!("|---|---|---|---|---|");
    for path in ["/healthz", "/performances", "/"] {
        let mut times = Vec::new();
        let mut status = String::new();
        for _ in 0..SAMPLES {
            let (took, line) = get(&host, path, &token).await;
            times.push(took);
            status = line;
        }
        times.sort();
        println!(
            "| GET {path} | {:.1} | {:.1} | {:.1} | {status} |",
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times.last().unwrap().as_secs_f64() * 1000.0
        );
    }
    let fds = descriptors(worker.id());
    let (peak, now) = memory(worker.id());
    let (serve_peak, _) = memory(serve.id());
    println!(
        "\nworker RSS: peak {peak:.0} MB, now {now:.0} MB (goal <= 2048 MB), {:.0} KB per waiting \
         performance; serve peak {serve_peak:.0} MB",
        now * 1024.0 / waiting.max(1) as f64
    );
    println!(
        "worker descriptors: {} ({fds:?})",
        fds.iter().map(|(_, n)| n).sum::<usize>()
    );
    for mut child in [worker, serve] {
        let _ = child.kill();
        let _ = child.wait();
    }
}
