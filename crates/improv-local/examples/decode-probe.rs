//! Where decode time goes: runs one decode measurement and prints tokens/s, so a script can
//! interleave it with llama-bench and compare like for like.
//!
//! `decode-probe --model M [--mode raw|sample|engine] [--threads 2] [--depth 453] [--gen 128]
//!  [--ctx N] [--reps 1] [--fa -1|0|1] [--words 330]`
//!
//! - `raw`: llama-bench's own generation loop (random tokens, no sampler) through llama-cpp-2.
//! - `sample`: the same loop, with the engine's greedy sampler and detokenizer picking tokens.
//! - `engine`: a real request through `LocalModel`, timed from the first to the last streamed
//!   token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_kernel::{Message, Model, ModelUpdate, Request};
use improv_local::{LocalConfig, LocalModel};
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use std::num::NonZeroU32;
use std::time::Instant;

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(name: &str, default: u32) -> u32 {
    arg(name).map_or(default, |v| v.parse().expect("a number"))
}

fn long_prompt(words: usize) -> String {
    const TEXT: &str = "The harbour town woke slowly: fishermen mended nets, bakers opened their shutters, and the ferry sounded its horn twice before leaving for the islands across the grey water.";
    let mut body = String::new();
    while body.split_whitespace().count() < words {
        body.push_str(TEXT);
        body.push(' ');
    }
    format!("{body}\nContinue this story at length, in the same style.")
}

fn main() {
    let model_path = arg("--model").expect("--model");
    let mode = arg("--mode").unwrap_or_else(|| "raw".into());
    let threads = num("--threads", 2);
    let depth = num("--depth", 453);
    let gen_n = num("--gen", 128);
    let ctx_n = num("--ctx", depth + gen_n);
    let reps = num("--reps", 1);
    if mode == "engine" {
        engine(
            &model_path,
            threads,
            ctx_n,
            gen_n,
            reps,
            num("--words", 330) as usize,
        );
        return;
    }
    let backend = LlamaBackend::init().unwrap();
    let model =
        LlamaModel::load_from_file(&backend, &model_path, &LlamaModelParams::default()).unwrap();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(ctx_n))
        .with_n_batch(2048)
        .with_n_ubatch(512)
        .with_n_threads(threads as i32)
        .with_n_threads_batch(threads as i32)
        // llama.cpp's flash attention policy: -1 auto (the default), 0 off, 1 on.
        .with_flash_attention_policy(arg("--fa").map_or(-1, |v| v.parse().expect("-1, 0 or 1")));
    let mut ctx = model.new_context(&backend, params).unwrap();
    let n_vocab = model.n_vocab() as u32;
    let mut seed = 12345u64;
    let mut rand = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((seed >> 33) as u32) % n_vocab
    };
    let mut batch = LlamaBatch::new(2048, 1);
    let vocab = model.vocab();
    // warm-up, as llama-bench does
    batch.add(LlamaToken(1), 0, &[0], true).unwrap();
    ctx.decode(&mut batch).unwrap();
    let mut rates = Vec::new();
    for _ in 0..reps {
        ctx.clear_kv_cache();
        batch.clear();
        for i in 0..depth {
            batch
                .add(LlamaToken(rand() as i32), i as i32, &[0], i + 1 == depth)
                .unwrap();
        }
        if depth > 0 {
            ctx.decode(&mut batch).unwrap();
        }
        let mut sampler = LlamaSampler::chain_simple([LlamaSampler::greedy()]);
        let mut token = LlamaToken(1);
        let mut text = String::new();
        let began = Instant::now();
        for pos in depth..depth + gen_n {
            batch.clear();
            batch.add(token, pos as i32, &[0], true).unwrap();
            ctx.decode(&mut batch).unwrap();
            if mode == "sample" {
                token = sampler.sample(&ctx, 0);
                let piece = vocab.token_to_piece(token, false, None);
                text.push_str(&String::from_utf8_lossy(&piece));
            } else {
                ctx.synchronize();
                token = LlamaToken(rand() as i32);
            }
        }
        let secs = began.elapsed().as_secs_f64();
        rates.push(f64::from(gen_n) / secs);
    }
    println!(
        "{}",
        rates
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
}

fn engine(path: &str, threads: u32, ctx_n: u32, gen_n: u32, reps: u32, words: usize) {
    let mut config = LocalConfig::new(path);
    config.threads = Some(threads as usize);
    config.context = ctx_n;
    config.prefix_cache = false;
    let model = LocalModel::load(config.clone()).unwrap();
    // `--second`: a second model loaded and warmed up beside the measured one.
    let second = std::env::args()
        .any(|a| a == "--second")
        .then(|| LocalModel::load(config).unwrap());
    let prompt = [Message::user(long_prompt(words))];
    let request = |max| Request {
        system: "You are a storyteller.",
        messages: &prompt,
        tools: &[],
        max_output_tokens: Some(max),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        model
            .respond(request(4), &mut |_| {})
            .await
            .expect("warm-up");
        if let Some(second) = &second {
            second
                .respond(request(4), &mut |_| {})
                .await
                .expect("warm-up");
        }
        let mut rates = Vec::new();
        for _ in 0..reps {
            let mut first = None;
            let mut last = None;
            let mut pieces = 0u32;
            let reply = model
                .respond(request(gen_n), &mut |u| {
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
                .unwrap();
            let secs = (last.unwrap() - first.unwrap()).as_secs_f64();
            rates.push(f64::from(pieces - 1) / secs);
            eprintln!(
                "prompt {} output {} pieces {pieces}",
                reply.usage.input_tokens, reply.usage.output_tokens
            );
        }
        println!(
            "{}",
            rates
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    });
}
