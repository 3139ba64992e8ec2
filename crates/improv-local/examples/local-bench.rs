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

/// One timed request: time to the first streamed text, the time between the first and the last
/// streamed piece with how many pieces came, and the usage.
struct Timed {
    first: Option<Duration>,
    /// From the first to the last streamed piece.
    streaming: Duration,
    pieces: u32,
    total: Duration,
    usage: improv_kernel::Usage,
}

impl Timed {
    /// Decode tokens/s as a user sees them: the pieces after the first, over the time they took
    /// (each interval is one decode, one pick and one detokenized piece sent to the caller).
    fn decode_tps(&self) -> Option<f64> {
        (self.pieces > 1).then(|| f64::from(self.pieces - 1) / self.streaming.as_secs_f64())
    }
}

async fn timed(model: &LocalModel, request: Request<'_>) -> Result<Timed, String> {
    let began = Instant::now();
    let mut first = None;
    let mut last = None;
    let mut pieces = 0;
    let reply = model
        .respond(request, &mut |u| {
            if let ModelUpdate::Text(t) = u
                && !t.is_empty()
            {
                let now = Instant::now();
                first.get_or_insert(now);
                last = Some(now);
                pieces += 1;
            }
        })
        .await
        .map_err(|e| e.to_string())?;
    let streaming = match (first, last) {
        (Some(f), Some(l)) => l - f,
        _ => Duration::ZERO,
    };
    Ok(Timed {
        first: first.map(|f| f - began),
        streaming,
        pieces,
        total: began.elapsed(),
        usage: reply.usage,
    })
}

fn median(xs: &[f64]) -> f64 {
    let mut xs = xs.to_vec();
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

/// llama-bench's samples of each figure, one per repetition.
struct Reference {
    prompt_tps: Vec<f64>,
    gen_tps: Vec<f64>,
    peak_rss_mib: Option<f64>,
}

/// Runs llama-bench (`reps` repetitions in one process) with the same model, prompt length, generation length
/// and threads: prompt processing on an empty context, and generation at the depth our decode
/// runs at (after the prompt), since decoding slows as the context fills. llama-bench sizes its
/// context to exactly what each test needs (prompt + generated tokens).
fn reference(
    bin: &std::path::Path,
    model: &std::path::Path,
    prompt: u64,
    gen_tokens: u32,
    threads: usize,
    reps: usize,
) -> Result<Reference, String> {
    let run = |p: u64, n: u32, depth: u64| -> Result<(Vec<f64>, Option<f64>), String> {
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
        let ts: Vec<f64> = results
            .as_array()
            .and_then(|r| r.first())
            .and_then(|r| r["samples_ts"].as_array())
            .map(|s| s.iter().filter_map(|v| v.as_f64()).collect())
            .filter(|s: &Vec<f64>| !s.is_empty())
            .ok_or("llama-bench reported no samples")?;
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

/// The samples of one side of the comparison.
#[derive(Default)]
struct Samples {
    prompt_tps: Vec<f64>,
    gen_tps: Vec<f64>,
    ttft_ms: Vec<f64>,
}

impl Samples {
    fn push(&mut self, t: &Timed) -> Result<(), String> {
        let first = t.first.ok_or("the model streamed no text")?;
        self.prompt_tps
            .push(t.usage.input_tokens as f64 / first.as_secs_f64());
        self.ttft_ms.push(first.as_secs_f64() * 1000.0);
        self.gen_tps
            .push(t.decode_tps().ok_or("the model streamed a single piece")?);
        Ok(())
    }
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
    // What a user gets: the default context size.
    let mut config = LocalConfig::new(&args.model);
    config.threads = Some(args.threads);
    config.prefix_cache = false;
    let loading = Instant::now();
    let model = LocalModel::load(config.clone()).map_err(|e| e.to_string())?;
    let load_ms = loading.elapsed().as_secs_f64() * 1000.0;

    // Prompt processing and decoding, on a ~450-token prompt, cache off so every run is cold.
    let prompt = [Message::user(long_prompt(330))];
    let request = |max| Request {
        system: "You are a storyteller.",
        messages: &prompt,
        tools: &[],
        max_output_tokens: Some(max),
    };
    let prompt_tokens = model
        .prompt_tokens(request(1))
        .await
        .map_err(|e| e.to_string())?
        .len() as u64;
    timed(&model, request(4)).await?; // warm-up
    let rss = peak_rss_mib();
    // The same settings as llama-bench: a context of exactly prompt + generated tokens.
    let same_context = u32::try_from(prompt_tokens).unwrap_or(u32::MAX) + args.gen_tokens;
    let same = LocalModel::load(LocalConfig {
        context: same_context,
        ..config.clone()
    })
    .map_err(|e| e.to_string())?;
    timed(&same, request(4)).await?; // warm-up

    // Interleaved, so that whatever else the machine is doing weighs on both sides alike:
    // ours (default context), llama-bench, ours (llama-bench's context), llama-bench, ...
    let mut ours = Samples::default();
    let mut ours_same = Samples::default();
    let mut theirs = Samples::default();
    let mut ref_rss: Option<f64> = None;
    let mut generated = 0;
    for rep in 0..args.reps {
        // Alternate which of our two runs goes first.
        let order = if rep % 2 == 0 {
            [&model, &same]
        } else {
            [&same, &model]
        };
        for side in order {
            let t = timed(side, request(args.gen_tokens)).await?;
            generated = t.usage.output_tokens;
            if std::ptr::eq(side, &model) {
                ours.push(&t)?;
            } else {
                ours_same.push(&t)?;
            }
            if let Some(bin) = &args.reference {
                let r = reference(
                    bin,
                    &args.model,
                    prompt_tokens,
                    args.gen_tokens,
                    args.threads,
                    2,
                )?;
                theirs.prompt_tps.extend(&r.prompt_tps);
                theirs.gen_tps.extend(&r.gen_tps);
                // llama-bench reports no latency: its time to first token is derived as
                // prompt/pp + 1/tg.
                for (pp, tg) in r.prompt_tps.iter().zip(&r.gen_tps) {
                    theirs
                        .ttft_ms
                        .push((prompt_tokens as f64 / pp + 1.0 / tg) * 1000.0);
                }
                ref_rss = ref_rss.into_iter().chain(r.peak_rss_mib).reduce(f64::max);
            }
        }
    }
    drop(same);
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
    let (with_cache, without_cache) = (median(&with_cache), median(&without_cache));

    let have_ref = !theirs.gen_tps.is_empty();
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
            "medians, interleaved: {} runs of improv-local with its default context ({} tokens), {} with llama-bench's ({same_context} tokens), {} llama-bench repetitions",
            args.reps,
            config.context,
            args.reps,
            theirs.gen_tps.len()
        ),
    );
    line(
        &mut out,
        format!(
            "{:<26} {:>18} {:>18} {:>16} {:>8} {:>8}",
            "", "improv (default)", "improv (same ctx)", "llama-bench", "ratio", "same"
        ),
    );
    let row = |out: &mut String,
               name: &str,
               ours: &[f64],
               same: &[f64],
               theirs: &[f64],
               unit: &str,
               higher_better: bool| {
        let (o, s) = (median(ours), median(same));
        let t = have_ref.then(|| median(theirs));
        let ratio = |x: f64| {
            t.map_or("-".to_string(), |t| {
                format!("{:.2}x", if higher_better { x / t } else { t / x })
            })
        };
        line(
            out,
            format!(
                "{name:<26} {:>18} {:>18} {:>16} {:>8} {:>8}",
                format!("{o:.1} {unit}"),
                format!("{s:.1} {unit}"),
                t.map_or("-".to_string(), |t| format!("{t:.1} {unit}")),
                ratio(o),
                ratio(s)
            ),
        );
    };
    row(
        &mut out,
        "prompt processing",
        &ours.prompt_tps,
        &ours_same.prompt_tps,
        &theirs.prompt_tps,
        "tok/s",
        true,
    );
    row(
        &mut out,
        "decode",
        &ours.gen_tps,
        &ours_same.gen_tps,
        &theirs.gen_tps,
        "tok/s",
        true,
    );
    // On a machine that others share, the fastest run of each side is the least disturbed one.
    let best = |xs: &[f64]| [xs.iter().copied().fold(f64::NEG_INFINITY, f64::max)];
    row(
        &mut out,
        "prompt processing, best run",
        &best(&ours.prompt_tps),
        &best(&ours_same.prompt_tps),
        &best(&theirs.prompt_tps),
        "tok/s",
        true,
    );
    row(
        &mut out,
        "decode, best run",
        &best(&ours.gen_tps),
        &best(&ours_same.gen_tps),
        &best(&theirs.gen_tps),
        "tok/s",
        true,
    );
    row(
        &mut out,
        "time to first token",
        &ours.ttft_ms,
        &ours_same.ttft_ms,
        &theirs.ttft_ms,
        "ms",
        false,
    );
    line(
        &mut out,
        format!(
            "{:<26} {:>18} {:>18} {:>16}",
            "peak RSS",
            rss.map_or("-".to_string(), |r| format!("{r:.1} MiB")),
            "",
            ref_rss.map_or("-".to_string(), |r| format!("{r:.1} MiB"))
        ),
    );
    let spread = |xs: &[f64]| {
        let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{lo:.1}..{hi:.1}")
    };
    line(
        &mut out,
        format!(
            "decode samples (min..max tok/s): default {} · same ctx {} · llama-bench {}",
            spread(&ours.gen_tps),
            spread(&ours_same.gen_tps),
            if have_ref {
                spread(&theirs.gen_tps)
            } else {
                "-".into()
            }
        ),
    );
    line(
        &mut out,
        "ratios: improv / llama-bench for throughput, llama-bench / improv for latency (above 1 is improv ahead); ttft of llama-bench derived as prompt/pp + 1/tg".to_string(),
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
