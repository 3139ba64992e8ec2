//! The routines benchmark (bench/routines/run.sh): 10 task families × 10 parameter variants,
//! each judged by a deterministic file check, performed by a scripted competent lead through the
//! OpenAI mock. Cold: no routines. Warm: `[routines] auto_approve = true`, so the first two
//! converged runs of a family propose (and approve) a routine and the rest may replay it.
//! Prints, per family and in total, the share of performances served with zero model requests,
//! model requests, request bytes, tokens (as the mock reports them), wall time, success and the
//! routines kept.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_mock::{MockServer, openai_chat};
use improv_perform::{Launch, Production};
use improv_stage::Stage;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// A task family: the intent template, the file read first (if any), the file written and its
/// content for a parameter, and the text the check wants in the file.
struct Family {
    name: &'static str,
    intent: &'static str,
    read: Option<(&'static str, &'static str)>,
    file: &'static str,
    content: fn(&str) -> String,
    wants: &'static str,
}

const VARIANTS: [&str; 10] = [
    "Alice", "Bob", "Carol", "Dan", "Erin", "Finn", "Gil", "Hana", "Ivan", "Jade",
];

fn families() -> Vec<Family> {
    vec![
        Family {
            name: "greet",
            intent: "Greet {} in greeting.txt",
            read: Some(("template.txt", "Dear")),
            file: "greeting.txt",
            content: |p| format!("Dear {p}"),
            wants: "Dear",
        },
        Family {
            name: "todo",
            intent: "Record the todo {} in todo.txt",
            read: None,
            file: "todo.txt",
            content: |p| format!("TODO: {p}"),
            wants: "TODO:",
        },
        Family {
            name: "config",
            intent: "Name the app {} in config.toml",
            read: Some(("config.toml", "version = 1")),
            file: "config.toml",
            content: |p| format!("name = \"{p}\"\nversion = 1\n"),
            wants: "version = 1",
        },
        Family {
            name: "log",
            intent: "Log that {} arrived",
            read: Some(("log.txt", "")),
            file: "log.txt",
            content: |p| format!("LOG {p} arrived\n"),
            wants: "LOG",
        },
        Family {
            name: "json",
            intent: "Store the item {} as JSON",
            read: None,
            file: "data.json",
            content: |p| json!({"item": p}).to_string(),
            wants: "\"item\"",
        },
        Family {
            name: "title",
            intent: "Title the page {}",
            read: Some(("title.md", "# old")),
            file: "title.md",
            content: |p| format!("# {p}\n"),
            wants: "# ",
        },
        Family {
            name: "csv",
            intent: "Make a table with the row {}",
            read: None,
            file: "rows.csv",
            content: |p| format!("id,name\n1,{p}\n"),
            wants: "id,name",
        },
        Family {
            name: "html",
            intent: "Make a page headed {}",
            read: None,
            file: "index.html",
            content: |p| format!("<h1>{p}</h1>\n"),
            wants: "<h1>",
        },
        Family {
            name: "sql",
            intent: "Write a query over the table {}",
            read: None,
            file: "query.sql",
            content: |p| format!("SELECT * FROM {p};\n"),
            wants: "SELECT",
        },
        Family {
            name: "env",
            intent: "Set the app to {} in env.txt",
            read: Some(("env.example", "APP=")),
            file: "env.txt",
            content: |p| format!("APP={p}\n"),
            wants: "APP=",
        },
    ]
}

fn stage(dir: &Path, family: &Family, server: &MockServer, warm: bool) {
    let routines = if warm {
        "[routines]\nauto_approve = true\n"
    } else {
        "[routines]\nlearn = false\nreplay = false\n"
    };
    let text = format!(
        "[[actor]]\nname = \"lead\"\nmodel = \"openai/gpt-5-mini\"\nbase_url = \"{}/v1\"\nprops = [\"read\", \"write\"]\n\n{routines}\n[[feedback.check]]\nname = \"{}\"\nfile = \"{}\"\ncontains = '{}'\n",
        server.url(),
        family.name,
        family.file,
        family.wants
    );
    std::fs::write(dir.join("stage.toml"), text).unwrap();
}

/// What the competent lead answers: read the input (if any), then write the file.
/// The model's latency per response, from `ROUTINES_BENCH_LATENCY_MS` (default 0: the mock
/// answers at once, so the wall time is improv's own).
fn latency() -> std::time::Duration {
    let ms = std::env::var("ROUTINES_BENCH_LATENCY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    std::time::Duration::from_millis(ms)
}

fn script(family: &Family, p: &str) -> Vec<improv_mock::MockResponse> {
    let mut out = Vec::new();
    if let Some((file, _)) = family.read {
        let args = json!({"path": file}).to_string();
        out.push(openai_chat::tool_calls(&[("r", "read", &args)]).after(latency()));
    }
    let args = json!({"path": family.file, "content": (family.content)(p)}).to_string();
    out.push(openai_chat::tool_calls(&[("w", "write", &args)]).after(latency()));
    out
}

#[derive(Default, Clone, Copy)]
struct Tally {
    runs: u32,
    converged: u32,
    zero_model: u32,
    requests: u64,
    request_bytes: u64,
    tokens: u64,
    wall_ms: f64,
}

async fn perform_family(family: &Family, warm: bool) -> (Tally, usize) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    if let Some((file, text)) = family.read {
        std::fs::write(d.join(file), text).unwrap();
    }
    let mut t = Tally::default();
    for p in VARIANTS {
        let server = MockServer::start(script(family, p)).await.unwrap();
        stage(d, family, &server, warm);
        let stage = Arc::new(Stage::load(&d.join("stage.toml")).unwrap());
        let intent = family.intent.replace("{}", p);
        let began = Instant::now();
        let (mut production, _notes) = Production::open(stage, Launch::new(intent)).unwrap();
        let ended = production.perform(&CancellationToken::new()).await;
        let summary = production.finish(&ended).unwrap();
        t.wall_ms += began.elapsed().as_secs_f64() * 1000.0;
        let requests = server.requests();
        t.runs += 1;
        t.converged += u32::from(summary.outcome == improv_kernel::Outcome::Converged);
        t.zero_model += u32::from(requests.is_empty());
        t.requests += requests.len() as u64;
        t.request_bytes += requests.iter().map(|r| r.body.len() as u64).sum::<u64>();
        t.tokens += summary.spent.input_tokens + summary.spent.output_tokens;
    }
    let routines = improv_routine::Repertoire::open(d).unwrap().routines.len();
    (t, routines)
}

fn pct(part: f64, whole: f64) -> String {
    if whole == 0.0 {
        "-".into()
    } else {
        format!("{:.0}%", 100.0 * part / whole)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    println!("model latency per response: {} ms", latency().as_millis());
    println!(
        "{:<8} {:>9} {:>9} {:>11} {:>11} {:>13} {:>13} {:>11} {:>11} {:>9}",
        "family",
        "ok cold",
        "ok warm",
        "0-model",
        "requests",
        "req KB",
        "tokens",
        "wall ms",
        "",
        "routines"
    );
    println!(
        "{:<8} {:>9} {:>9} {:>11} {:>11} {:>13} {:>13} {:>11} {:>11} {:>9}",
        "", "", "", "warm", "cold→warm", "cold→warm", "cold→warm", "cold", "warm", "kept"
    );
    let (mut cold_all, mut warm_all, mut kept) = (Tally::default(), Tally::default(), 0);
    for family in families() {
        let (cold, _) = perform_family(&family, false).await;
        let (warm, routines) = perform_family(&family, true).await;
        kept += routines;
        println!(
            "{:<8} {:>9} {:>9} {:>11} {:>11} {:>13} {:>13} {:>11.0} {:>11.0} {:>9}",
            family.name,
            format!("{}/{}", cold.converged, cold.runs),
            format!("{}/{}", warm.converged, warm.runs),
            pct(f64::from(warm.zero_model), f64::from(warm.runs)),
            format!("{}→{}", cold.requests, warm.requests),
            format!(
                "{:.1}→{:.1}",
                cold.request_bytes as f64 / 1024.0,
                warm.request_bytes as f64 / 1024.0
            ),
            format!("{}→{}", cold.tokens, warm.tokens),
            cold.wall_ms,
            warm.wall_ms,
            routines
        );
        for (all, one) in [(&mut cold_all, cold), (&mut warm_all, warm)] {
            all.runs += one.runs;
            all.converged += one.converged;
            all.zero_model += one.zero_model;
            all.requests += one.requests;
            all.request_bytes += one.request_bytes;
            all.tokens += one.tokens;
            all.wall_ms += one.wall_ms;
        }
    }
    let cut = |cold: f64, warm: f64| format!("{:+.0}%", 100.0 * (warm / cold - 1.0));
    println!(
        "\ntotal: success cold {}/{} warm {}/{}; zero model calls warm {}; requests {} → {} ({}); request bytes {}; tokens {}; wall {:.0} → {:.0} ms ({}); routines kept {} for 10 families ({:.1} each)",
        cold_all.converged,
        cold_all.runs,
        warm_all.converged,
        warm_all.runs,
        pct(f64::from(warm_all.zero_model), f64::from(warm_all.runs)),
        cold_all.requests,
        warm_all.requests,
        cut(cold_all.requests as f64, warm_all.requests as f64),
        cut(cold_all.request_bytes as f64, warm_all.request_bytes as f64),
        cut(cold_all.tokens as f64, warm_all.tokens as f64),
        cold_all.wall_ms,
        warm_all.wall_ms,
        cut(cold_all.wall_ms, warm_all.wall_ms),
        kept,
        kept as f64 / 10.0
    );
}
