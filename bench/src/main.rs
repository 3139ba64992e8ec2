//! The kernel benchmark: a scripted 20-turn task through the real OpenAI Chat Completions path
//! against a local mock server that answers instantly, measured from outside the `improv`
//! process. Prints a table; it asserts nothing (targets are read off the table, not tested).
//! Below it, side by side with their goals: the peak RSS of the run, the binary's size stripped,
//! and the turn ratio: a bash turn (sandbox on) against a bare `bash -c` spawn timed in the same
//! run, between the runs of the bash rows, so both sides see the same load.
//!
//! Usage: `improv-bench [PATH/TO/improv] [--turns N] [--runs N]` (see bench/run.sh).

use improv_mock::{MockServer, openai_chat};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Run {
    overheads_ms: Vec<f64>,
    wall_ms: f64,
    peak_rss_kb: i64,
    first_request_bytes: usize,
    total_request_bytes: usize,
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

/// Runs a command to its end and returns its wall time and peak RSS (KiB), from wait4.
fn measure(cmd: &mut Command) -> std::io::Result<(f64, i64, i32)> {
    let started = Instant::now();
    let child = cmd.spawn()?;
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data, valid all zeroes.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, waited once; status and usage are live locals wait4 fills.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    std::mem::forget(child); // already reaped by wait4
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    Ok((
        started.elapsed().as_secs_f64() * 1000.0,
        usage.ru_maxrss,
        code,
    ))
}

fn stage_file(dir: &Path, props: &str, sandbox: bool) -> std::io::Result<()> {
    let sandbox = if sandbox { "on" } else { "off" };
    std::fs::write(
        dir.join("stage.toml"),
        format!(
            "[stage]\nname = \"bench\"\nintent = \"Run the steps.\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"openai/bench-model\"\nprops = {props}\n\n[edges]\nsandbox = \"{sandbox}\"\n"
        ),
    )?;
    std::fs::write(dir.join("notes.txt"), "one\ntwo\nthree\n")
}

async fn run_once(improv: &Path, prop: &str, sandbox: bool, turns: usize) -> Result<Run, String> {
    let mut responses = Vec::new();
    for k in 1..=turns {
        let (name, args) = if prop == "bash" {
            ("bash", format!("{{\"command\":\"echo step {k}\"}}"))
        } else {
            // Each read differs, or the loop detector would rightly stop a model repeating itself.
            ("read", format!("{{\"path\":\"notes.txt\",\"limit\":{k}}}"))
        };
        responses.push(openai_chat::tool_calls(&[(
            &format!("call_{k}"),
            name,
            &args,
        )]));
    }
    responses.push(openai_chat::text("All steps done."));
    let expected = responses.len();
    let server = MockServer::start(responses)
        .await
        .map_err(|e| format!("mock server: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    stage_file(
        dir.path(),
        r#"["read", "write", "edit", "bash", "grep", "find"]"#,
        sandbox,
    )
    .map_err(|e| e.to_string())?;
    let mut cmd = Command::new(improv);
    cmd.args(["run", "--json"])
        .current_dir(dir.path())
        .env("OPENAI_API_KEY", "bench-key")
        .env("OPENAI_BASE_URL", format!("{}/v1", server.url()))
        .env_remove("ANTHROPIC_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let (wall_ms, peak_rss_kb, code) = tokio::task::spawn_blocking(move || measure(&mut cmd))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot run {}: {e}", improv.display()))?;
    let requests = server.requests();
    if code != 0 || requests.len() != expected {
        return Err(format!(
            "improv exited with {code} after {} of {expected} requests; run it by hand in a stage like this one to see why",
            requests.len()
        ));
    }
    let overheads_ms = requests
        .windows(2)
        .filter_map(|w| {
            let answered = w[0].answered?;
            Some(
                w[1].arrived
                    .saturating_duration_since(answered)
                    .as_secs_f64()
                    * 1000.0,
            )
        })
        .collect();
    Ok(Run {
        overheads_ms,
        wall_ms,
        peak_rss_kb,
        first_request_bytes: requests[0].body.len(),
        total_request_bytes: requests.iter().map(|r| r.body.len()).sum(),
    })
}

/// The wall times of `bash -c 'echo step N'` spawned from here with its output read, the same
/// command a bash turn runs: what the turn costs at the very least.
fn bare_bash(runs: usize) -> Vec<f64> {
    let mut times = Vec::new();
    for k in 0..runs {
        let started = Instant::now();
        let out = Command::new("bash")
            .args(["-c", &format!("echo step {k}")])
            .stdin(Stdio::null())
            .output();
        if out.is_ok_and(|o| o.status.success()) {
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times
}

/// The size of `improv` as installed and with every symbol and debug section stripped (`strip`
/// into a temp file; `None` when strip is missing).
fn sizes(improv: &Path) -> (u64, Option<u64>) {
    let installed = std::fs::metadata(improv).map_or(0, |m| m.len());
    let stripped = tempfile::tempdir().ok().and_then(|dir| {
        let out = dir.path().join("improv");
        let status = Command::new("strip")
            .arg("-o")
            .arg(&out)
            .arg(improv)
            .status()
            .ok()?;
        status
            .success()
            .then(|| std::fs::metadata(&out).ok().map(|m| m.len()))?
    });
    (installed, stripped)
}

fn cold_start(improv: &Path, runs: usize) -> f64 {
    let mut times = Vec::new();
    for _ in 0..runs {
        let mut cmd = Command::new(improv);
        cmd.arg("--version").stdout(Stdio::null());
        if let Ok((ms, _, 0)) = measure(&mut cmd) {
            times.push(ms);
        }
    }
    median(&mut times)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut improv = PathBuf::from("target/release/improv");
    let mut turns = 20;
    let mut runs = 5;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--turns" => turns = args.next().and_then(|v| v.parse().ok()).unwrap_or(turns),
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).unwrap_or(runs),
            other => improv = PathBuf::from(other),
        }
    }
    let improv = match improv.canonicalize() {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "cannot find the improv binary at {}: {e}; build it with `cargo build --release -p improv`",
                improv.display()
            );
            std::process::exit(2);
        }
    };
    println!(
        "improv kernel benchmark · {turns}-turn task · {runs} runs per row · medians over all turns of all runs\n"
    );
    println!(
        "| prop | per-turn overhead median | p90 | wall time | peak RSS | first request | total request bytes |"
    );
    println!("|---|---|---|---|---|---|---|");
    // Bare spawns are timed between the runs of the bash rows, so that both sides of the ratio
    // see the same load on a busy machine.
    let mut bare = bare_bash(20);
    let mut bash_turn = f64::NAN;
    let mut peak_rss = 0.0f64;
    for (label, prop, sandbox) in [
        ("bash, sandbox on", "bash", true),
        ("bash, sandbox off", "bash", false),
        ("read", "read", true),
    ] {
        let mut overheads = Vec::new();
        let mut walls = Vec::new();
        let mut rss = Vec::new();
        let mut first = 0;
        let mut total = 0;
        for _ in 0..runs {
            if prop == "bash" {
                bare.extend(bare_bash(turns));
            }
            match run_once(&improv, prop, sandbox, turns).await {
                Ok(r) => {
                    overheads.extend(r.overheads_ms);
                    walls.push(r.wall_ms);
                    rss.push(r.peak_rss_kb as f64);
                    first = r.first_request_bytes;
                    total = r.total_request_bytes;
                }
                Err(e) => {
                    eprintln!("{label}: {e}");
                    std::process::exit(1);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let p90 = percentile(&mut overheads.clone(), 0.9);
        let per_turn = median(&mut overheads);
        if prop == "bash" && sandbox {
            bash_turn = per_turn;
        }
        peak_rss = peak_rss.max(median(&mut rss) / 1024.0);
        println!(
            "| {label} | {:.3} ms | {:.3} ms | {:.1} ms | {:.1} MB | {first} B | {total} B |",
            per_turn,
            p90,
            median(&mut walls),
            median(&mut rss) / 1024.0,
        );
    }
    let bare = median(&mut bare);
    let (installed, stripped) = sizes(&improv);
    let mb = |b: u64| b as f64 / 1e6;
    println!("\n| figure | measured | goal |\n|---|---|---|");
    println!(
        "| peak RSS of a {turns}-turn hosted-model run (largest row) | {peak_rss:.1} MB | ≤ 15 MB |"
    );
    match stripped {
        Some(s) => println!(
            "| binary size stripped (as built: {:.1} MB) | {:.1} MB | ≤ 30 MB |",
            mb(installed),
            mb(s)
        ),
        None => println!(
            "| binary size (`strip` not found; as built) | {:.1} MB | ≤ 30 MB stripped |",
            mb(installed)
        ),
    }
    println!(
        "| a bash turn (sandbox on) / a bare `bash -c` spawn | {bash_turn:.3} / {bare:.3} ms = {:.2}× | ≤ 1.5× |",
        bash_turn / bare
    );
    println!(
        "\n`improv --version` cold start: {:.2} ms (median of 30)",
        cold_start(&improv, 30)
    );
    println!(
        "\nper-turn overhead = time from the mock finishing a reply to the next request arriving;\nit includes running the tool (bash spawns a process)."
    );
}
