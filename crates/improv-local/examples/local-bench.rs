//! Benchmarks the embedded model against llama.cpp's own `llama-bench` on the same model, prompt
//! length and threads, and measures what the prefix cache saves on the second turn of a 20-turn
//! conversation. Prints a table. Run it through `bench/local/run.sh`, which builds both.
//!
//! `bench --model <file.gguf> [--threads N] [--gen 128] [--reps 3] [--reference <llama-bench>]`

use improv_kernel::{Message, Model, ModelUpdate, Request};
use improv_local::{LocalConfig, LocalModel};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

struct Args {
    model: PathBuf,
    threads: usize,
    gen_tokens: u32,
    reps: usize,
    reference: Option<PathBuf>,
}

fn args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut model = None;
    let mut threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut gen_tokens = 128;
    let mut reps = 3;
    let mut reference = None;
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--model" => model = Some(PathBuf::from(value()?)),
            "--threads" => threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--gen" => gen_tokens = value()?.parse().map_err(|e| format!("--gen: {e}"))?,
            "--reps" => reps = value()?.parse().map_err(|e| format!("--reps: {e}"))?,
            "--reference" => reference = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        model: model.ok_or("--model <file.gguf> is required")?,
        threads,
        gen_tokens,
        reps: reps.max(1),
        reference,
    })
}

/// One timed request: time to the first streamed text, total time, and the usage.
struct Timed {
    first: Option<Duration>,
    total: Duration,
    usage: improv_kernel::Usage,
}

async fn timed(model: &LocalModel, request: Request<'_>) -> Result<Timed, String> {
    let began = Instant::now();
    let mut first = None;
    let reply = model
        .respond(request, &mut |u| {
            if let ModelUpdate::Text(t) = u
                && first.is_none()
                && !t.is_empty()
            {
                first = Some(began.elapsed());
            }
        })
        .await
        .map_err(|e| e.to_string())?;
    Ok(Timed {
        first,
        total: began.elapsed(),
        usage: reply.usage,
    })
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Peak resident memory of this process, in MiB (Linux `VmHWM`).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// A user message of roughly `words` words that asks for a long answer.
fn long_prompt(words: usize) -> String {
    const TEXT: &str = "The harbour town woke slowly: fishermen mended nets, bakers opened their shutters, and the ferry sounded its horn twice before leaving for the islands across the grey water.";
    let mut body = String::new();
    while body.split_whitespace().count() < words {
        body.push_str(TEXT);
        body.push(' ');
    }
    format!("{body}\nContinue this story at length, in the same style.")
}

/// A 20-turn conversation: 19 finished exchanges and the 20th question, ~1,500 tokens.
fn conversation() -> Vec<Message> {
    let mut messages = Vec::new();
    for turn in 1..=19 {
        messages.push(Message::user(format!(
            "Step {turn}: what does handle_{turn} in src/part_{turn}.rs do, and why does it return early?"
        )));
        messages.push(Message::Assistant {
            text: format!(
                "handle_{turn} checks that the id is set and the size is below the limit, and returns early with an error otherwise; then it caches the record and returns the bytes written."
            ),
            tool_calls: vec![],
        });
    }
    messages.push(Message::user(
        "Step 20: summarize what all these handlers have in common.",
    ));
    messages
}

struct Reference {
    prompt_tps: f64,
    gen_tps: f64,
    peak_rss_mib: Option<f64>,
}

/// Runs llama-bench with the same model, prompt length, generation length and threads: prompt
/// processing on an empty context, and generation at the depth our decode runs at (after the
/// prompt), since decoding slows as the context fills.
fn reference(
    bin: &std::path::Path,
    model: &std::path::Path,
    prompt: u64,
    gen_tokens: u32,
    threads: usize,
    reps: usize,
) -> Result<Reference, String> {
    let run = |p: u64, n: u32, depth: u64| -> Result<(f64, Option<f64>), String> {
        let time = std::path::Path::new("/usr/bin/time");
        let mut cmd = if time.exists() {
            let mut c = Command::new(time);
            c.args(["-f", "maxrss_kib=%M"]).arg(bin);
            c
        } else {
            Command::new(bin)
        };
        cmd.arg("-m")
            .arg(model)
            .args(["-p", &p.to_string()])
            .args(["-n", &n.to_string()])
            .args(["-d", &depth.to_string()])
            .args(["-t", &threads.to_string()])
            .args(["-r", &reps.to_string()])
            .args(["-o", "json"]);
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed: {}",
                bin.display(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let results: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("llama-bench printed no JSON: {e}"))?;
        let ts = results
            .as_array()
            .and_then(|r| r.first())
            .and_then(|r| r["avg_ts"].as_f64())
            .ok_or("llama-bench reported no result")?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        let rss = stderr
            .lines()
            .filter_map(|l| l.strip_prefix("maxrss_kib="))
            .filter_map(|v| v.trim().parse::<f64>().ok())
            .next_back()
            .map(|k| k / 1024.0);
        Ok((ts, rss))
    };
    let (prompt_tps, rss_pp) = run(prompt, 0, 0)?;
    let (gen_tps, rss_tg) = run(0, gen_tokens, prompt)?;
    Ok(Reference {
        prompt_tps,
        gen_tps,
        peak_rss_mib: rss_pp.into_iter().chain(rss_tg).reduce(f64::max),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args).await {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<String, String> {
    let mut config = LocalConfig::new(&args.model);
    config.threads = Some(args.threads);
    config.context = 4096;
    config.prefix_cache = false;
    let loading = Instant::now();
    let model = LocalModel::load(config.clone()).map_err(|e| e.to_string())?;
    let load_ms = loading.elapsed().as_secs_f64() * 1000.0;

    // Prompt processing and decoding, on a ~512-token prompt, cache off so every run is cold.
    let prompt = [Message::user(long_prompt(330))];
    let request = |max| Request {
        system: "You are a storyteller.",
        messages: &prompt,
        tools: &[],
        max_output_tokens: Some(max),
    };
    let mut pp = Vec::new();
    let mut tg = Vec::new();
    let mut ttft = Vec::new();
    let mut prompt_tokens = 0;
    let mut generated = 0;
    timed(&model, request(4)).await?; // warm-up
    for _ in 0..args.reps {
        let t = timed(&model, request(1)).await?;
        prompt_tokens = t.usage.input_tokens;
        pp.push(t.usage.input_tokens as f64 / t.total.as_secs_f64());
        let t = timed(&model, request(args.gen_tokens)).await?;
        let first = t.first.ok_or("the model streamed no text")?;
        ttft.push(first.as_secs_f64() * 1000.0);
        generated = t.usage.output_tokens;
        let decode = (t.total - first).as_secs_f64();
        tg.push((t.usage.output_tokens.saturating_sub(1)) as f64 / decode);
    }
    let (pp, tg, ttft) = (median(pp), median(tg), median(ttft));
    let rss = peak_rss_mib();
    drop(model);

    // The second turn of a 20-turn conversation, with and without the prefix cache.
    let with = |cache: bool| LocalConfig {
        prefix_cache: cache,
        ..config.clone()
    };
    let cached_model = LocalModel::load(with(true)).map_err(|e| e.to_string())?;
    let cold_model = LocalModel::load(with(false)).map_err(|e| e.to_string())?;
    let first_turn = conversation();
    let mut history = first_turn.clone();
    fn reply(messages: &[Message]) -> Request<'_> {
        Request {
            system: "You are a careful code reviewer.",
            messages,
            tools: &[],
            max_output_tokens: Some(16),
        }
    }
    // Turn 20 is answered, turn 21 (the "second turn" after the history) is measured.
    history.push(Message::Assistant {
        text: "They all validate their input first and return early on bad input.".into(),
        tool_calls: vec![],
    });
    history.push(Message::user("Step 21: which one would you test first?"));
    let mut with_cache = Vec::new();
    let mut without_cache = Vec::new();
    let mut reused = 0;
    let mut second_prompt = 0;
    for _ in 0..args.reps {
        timed(&cached_model, reply(&first_turn)).await?;
        let t = timed(&cached_model, reply(&history)).await?;
        reused = t.usage.cached_input_tokens;
        second_prompt = t.usage.input_tokens;
        with_cache.push(t.first.unwrap_or(t.total).as_secs_f64() * 1000.0);
        let t = timed(&cold_model, reply(&history)).await?;
        without_cache.push(t.first.unwrap_or(t.total).as_secs_f64() * 1000.0);
    }
    let (with_cache, without_cache) = (median(with_cache), median(without_cache));

    let reference = match &args.reference {
        Some(bin) => Some(reference(
            bin,
            &args.model,
            prompt_tokens,
            args.gen_tokens,
            args.threads,
            args.reps,
        )?),
        None => None,
    };

    let mut out = String::new();
    let line = |out: &mut String, s: String| {
        println!("{s}");
        out.push_str(&s);
        out.push('\n');
    };
    line(
        &mut out,
        format!(
            "model {} · {} threads · prompt {prompt_tokens} tokens · {generated} generated · load {load_ms:.0} ms",
            args.model.display(),
            args.threads
        ),
    );
    line(
        &mut out,
        format!(
            "{:<34} {:>14} {:>22} {:>8}",
            "", "improv-local", "llama.cpp llama-bench", "ratio"
        ),
    );
    let row = |out: &mut String, name: &str, ours: f64, theirs: Option<f64>, unit: &str| {
        let theirs_s = theirs.map_or("-".to_string(), |t| format!("{t:.1} {unit}"));
        let ratio = theirs.map_or("-".to_string(), |t| format!("{:.2}x", ours / t));
        line(
            out,
            format!(
                "{name:<34} {:>14} {theirs_s:>22} {ratio:>8}",
                format!("{ours:.1} {unit}")
            ),
        );
    };
    row(
        &mut out,
        "prompt processing",
        pp,
        reference.as_ref().map(|r| r.prompt_tps),
        "tok/s",
    );
    row(
        &mut out,
        "decode",
        tg,
        reference.as_ref().map(|r| r.gen_tps),
        "tok/s",
    );
    // llama-bench reports no latency: its time to first token is derived as prompt/pp + 1/tg.
    let ref_ttft = reference
        .as_ref()
        .map(|r| (prompt_tokens as f64 / r.prompt_tps + 1.0 / r.gen_tps) * 1000.0);
    row(
        &mut out,
        "time to first token (ref derived)",
        ttft,
        ref_ttft,
        "ms",
    );
    row(
        &mut out,
        "peak RSS",
        rss.unwrap_or(0.0),
        reference.as_ref().and_then(|r| r.peak_rss_mib),
        "MiB",
    );
    line(
        &mut out,
        format!(
            "second turn after a 20-turn conversation ({second_prompt}-token prompt), time to first token:"
        ),
    );
    line(
        &mut out,
        format!(
            "  with prefix cache    {with_cache:>8.1} ms  ({reused} of {second_prompt} prompt tokens reused)"
        ),
    );
    line(
        &mut out,
        format!("  without prefix cache {without_cache:>8.1} ms"),
    );
    line(
        &mut out,
        format!(
            "  speedup              {:>8.1}x",
            without_cache / with_cache
        ),
    );
    Ok(out)
}
