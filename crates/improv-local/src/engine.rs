//! The inference engine: one thread per loaded model that owns the llama.cpp model and context,
//! evaluates prompts with a prefix cache and samples replies.
//!
//! # Why a dedicated thread
//!
//! A `LlamaContext` borrows its `LlamaModel`, and decoding is blocking CPU work. Rather than
//! leaking the model to get a `'static` borrow, or rebuilding the context (and losing the KV cache)
//! on every `spawn_blocking` call, the engine thread creates both on its own stack and serves jobs
//! from a channel, one at a time: the channel is the mutex, the thread's stack is the owner, and
//! dropping the [`crate::LocalModel`] closes the channel, which ends the thread and frees both.
//! Text streams back to the async caller through a channel as it is decoded; when the caller goes
//! away (the performance was cancelled), generation stops at the next token.
//!
//! # Prefix cache
//!
//! The engine remembers the tokens whose keys and values are in the KV cache. A new prompt is
//! tokenized in full, its longest common prefix with those tokens is kept, the rest of the cache
//! is removed (`llama_memory_seq_rm`), and only the new tokens are decoded. An agent resends its
//! whole conversation every turn, so turn N costs its new tokens, not the history.

use crate::grammar;
use crate::template::Piece;
use crate::{LocalConfig, LocalError};
use improv_kernel::ModelError;
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_2::token::logit_bias::LlamaLogitBias;
use std::num::NonZeroU32;
use std::sync::OnceLock;
use std::sync::mpsc;
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

/// Tokens decoded per `llama_decode` call while evaluating a prompt.
const BATCH: usize = 512;

/// The process-wide llama.cpp backend: it may be initialized only once.
fn backend() -> Result<&'static LlamaBackend, LocalError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // llama.cpp logs every load step to stderr; route it to `tracing` instead, where
            // it shows at debug level only when asked for.
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| LocalError::Engine(format!("llama.cpp backend: {e}")))
}

/// What the engine learned when it loaded the model.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The context size in use.
    pub context: u32,
    /// The context size the model was trained for.
    pub trained_context: u32,
    /// The Jinja chat template from the GGUF metadata, when it has one.
    pub chat_template: Option<String>,
    /// The model's name from its metadata.
    pub description: String,
}

/// One request for the engine.
pub struct Job {
    pub prompt: Vec<Piece>,
    /// The GBNF tool grammar, when props are offered.
    pub grammar: Option<String>,
    pub max_tokens: u32,
    /// Decoded text, as it comes. Dropped by the caller to stop generation.
    pub text: tokio_mpsc::UnboundedSender<String>,
    pub done: oneshot::Sender<Result<Generated, ModelError>>,
    /// Only tokenize the prompt, generate nothing: `Generated::prompt_tokens` is filled.
    pub tokenize_only: bool,
    /// Apply `tool_bias` to the first token: only when the director just spoke. After a tool
    /// result the model must stay free to answer in text, or a small model never ends its turn.
    pub nudge: bool,
    /// Sample this reply so, instead of as `LocalConfig` says (see `LocalModel`'s
    /// `sampling`): a reply may be sampled though the model decodes greedily.
    pub sampling: Option<Sampling>,
}

/// How a reply is sampled: with `temperature` above 0, nucleus sampling with `top_p`, seeded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u32,
}

/// What the model produced for a job.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Generated {
    /// The reply's text, leading whitespace removed.
    pub text: String,
    /// The reply opened with `{` under the tool grammar: it is a call, not text.
    pub call: bool,
    /// It stopped at the output-token limit or the end of the context.
    pub hit_limit: bool,
    pub input_tokens: u64,
    /// Prompt tokens served from the KV cache.
    pub cached_tokens: u64,
    pub output_tokens: u64,
    /// The prompt's tokens, for `tokenize_only` jobs.
    pub prompt_tokens: Vec<i32>,
}

/// Starts the engine thread for `config`, waits until the model is loaded, and returns the job
/// channel with what was loaded.
pub fn start(config: LocalConfig) -> Result<(mpsc::Sender<Job>, Loaded), LocalError> {
    crate::store::check_gguf(&config.path)?;
    let backend = backend()?;
    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<Loaded, LocalError>>();
    let path = config.path.clone();
    std::thread::Builder::new()
        .name("improv-local".into())
        .spawn(move || serve(backend, config, ready_tx, jobs_rx))
        .map_err(|e| LocalError::Engine(format!("cannot start the engine thread: {e}")))?;
    let loaded = ready_rx.recv().map_err(|_| LocalError::Load {
        path,
        reason: "the engine thread stopped while loading".into(),
    })??;
    Ok((jobs_tx, loaded))
}

fn serve(
    backend: &'static LlamaBackend,
    config: LocalConfig,
    ready: mpsc::Sender<Result<Loaded, LocalError>>,
    jobs: mpsc::Receiver<Job>,
) {
    let load_err = |reason: String| LocalError::Load {
        path: config.path.clone(),
        reason,
    };
    let model =
        match LlamaModel::load_from_file(backend, &config.path, &LlamaModelParams::default()) {
            Ok(m) => m,
            Err(e) => {
                let _ = ready.send(Err(load_err(e.to_string())));
                return;
            }
        };
    let trained = model.n_ctx_train().max(1);
    let n_ctx = config.context.clamp(64, trained.max(64));
    let threads = i32::try_from(config.threads()).unwrap_or(i32::MAX);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(BATCH as u32)
        .with_n_ubatch(BATCH as u32)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let ctx = match model.new_context(backend, params) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(load_err(format!(
                "cannot create a context of {n_ctx} tokens: {e}"
            ))));
            return;
        }
    };
    let loaded = Loaded {
        context: ctx.n_ctx(),
        trained_context: trained,
        chat_template: model
            .chat_template(None)
            .ok()
            .and_then(|t| t.to_string().ok()),
        description: model
            .meta_val_str("general.name")
            .unwrap_or_else(|_| "unnamed".into()),
    };
    tracing::debug!(
        path = %config.path.display(),
        context = loaded.context,
        threads,
        "local model loaded"
    );
    if ready.send(Ok(loaded)).is_err() {
        return;
    }
    let mut engine = Engine {
        model: &model,
        ctx,
        cached: Vec::new(),
        batch: LlamaBatch::new(BATCH, 1),
        config,
        brace_tokens: None,
    };
    while let Ok(job) = jobs.recv() {
        let Job {
            prompt,
            grammar,
            max_tokens,
            text,
            done,
            tokenize_only,
            nudge,
            sampling,
        } = job;
        let configured = Sampling {
            temperature: engine.config.temperature,
            top_p: engine.config.top_p,
            seed: engine.config.seed,
        };
        engine.set_sampling(sampling.unwrap_or(configured));
        let result = if tokenize_only {
            Ok(Generated {
                prompt_tokens: engine.tokenize(&prompt).iter().map(|t| t.0).collect(),
                ..Default::default()
            })
        } else {
            engine.generate(&prompt, grammar.as_deref(), nudge, max_tokens, &text)
        };
        drop(text);
        engine.set_sampling(configured);
        let _ = done.send(result);
        release_worker_threads();
    }
}

/// Lets the OpenMP worker threads of this engine thread go until its next job.
///
/// llama.cpp runs its graphs in OpenMP parallel regions (the `openmp` feature of llama-cpp-2),
/// and OpenMP (GCC's libgomp) keeps a pool of worker threads for each thread that starts them:
/// one pool per engine, so per loaded model. libgomp counts the threads of every pool, and once
/// they outnumber the CPUs it stops spinning at barriers and sleeps instead; llama.cpp passes a
/// barrier after every operation of the graph, hundreds per token. A second loaded model, even
/// idle, cut decoding from 87 to 34 tokens/s on 2 cores that way. Giving the pool back after
/// each job keeps idle models out of the count; the next job starts its workers again, which
/// costs microseconds.
fn release_worker_threads() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // `omp_pause_soft` in omp.h.
        const OMP_PAUSE_SOFT: std::ffi::c_int = 1;
        unsafe extern "C" {
            /// libgomp, linked by llama-cpp-sys-2 with its `openmp` feature (OpenMP 5.0).
            fn omp_pause_resource_all(kind: std::ffi::c_int) -> std::ffi::c_int;
        }
        // SAFETY: called between jobs, outside any parallel region of this thread; a soft pause
        // only ends idle worker threads, and libgomp starts new ones on the next parallel region.
        let _ = unsafe { omp_pause_resource_all(OMP_PAUSE_SOFT) };
    }
}

struct Engine<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    /// The tokens whose keys and values are in the KV cache, positions 0.. in order.
    cached: Vec<LlamaToken>,
    batch: LlamaBatch<'static>,
    config: LocalConfig,
    /// Tokens whose text opens with `{`: the ones `tool_bias` favours. Found on first use.
    brace_tokens: Option<Vec<LlamaToken>>,
}

/// The state of a reply under the tool grammar.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Only whitespace so far.
    Undecided,
    Text,
    Call,
}

impl Engine<'_> {
    /// Tokenizes rendered pieces: markers as special tokens, text as plain text, with the BOS
    /// token first when the model wants one.
    fn tokenize(&self, pieces: &[Piece]) -> Vec<LlamaToken> {
        let vocab = self.model.vocab();
        let mut tokens = Vec::new();
        if vocab.should_add_bos() {
            tokens.push(vocab.bos());
        }
        for piece in pieces {
            match piece {
                Piece::Special(s) => tokens.extend(vocab.tokenize(s.as_bytes(), false, true)),
                Piece::Text(t) => tokens.extend(vocab.tokenize(t.as_bytes(), false, false)),
            }
        }
        tokens
    }

    /// How the next token is picked: `bias` favours opening a call (see
    /// `LocalConfig::tool_bias`), the grammar constrains, then greedy or seeded sampling picks.
    /// Plain greedy decoding needs no sampler at all: see [`Picker::Argmax`].
    fn sampler(&mut self, grammar: Option<&str>, bias: bool) -> Result<Picker, ModelError> {
        if !bias && grammar.is_none() && self.config.temperature <= 0.0 {
            return Ok(Picker::Argmax);
        }
        let mut chain = Vec::new();
        if bias {
            let model = self.model;
            let tokens = self.brace_tokens.get_or_insert_with(|| {
                model
                    .tokens(false)
                    .filter(|(_, bytes)| bytes.trim_ascii_start().starts_with(b"{"))
                    .map(|(t, _)| t)
                    .collect()
            });
            let biases: Vec<LlamaLogitBias> = tokens
                .iter()
                .map(|t| LlamaLogitBias::new(*t, self.config.tool_bias))
                .collect();
            chain.push(LlamaSampler::logit_bias(model.n_vocab(), &biases));
        }
        if let Some(g) = grammar {
            chain.push(LlamaSampler::grammar(self.model, g, "root").map_err(|e| {
                tracing::debug!(grammar = g, "rejected tool grammar");
                ModelError::Invalid(format!(
                    "llama.cpp rejected the tool grammar built from the props' schemas ({e}); run with RUST_LOG=improv_local=debug to see it"
                ))
            })?);
        }
        if self.config.temperature <= 0.0 {
            chain.push(LlamaSampler::greedy());
        } else {
            chain.push(LlamaSampler::top_p(self.config.top_p.clamp(0.01, 1.0), 1));
            chain.push(LlamaSampler::temp(self.config.temperature));
            chain.push(LlamaSampler::dist(self.config.seed));
        }
        Ok(Picker::Chain(LlamaSampler::chain_simple(chain)))
    }

    /// Forgets the KV cache, after an error left it in an unknown state.
    fn forget(&mut self) {
        self.ctx.clear_kv_cache();
        self.cached.clear();
    }

    /// Makes the KV cache hold exactly `prompt`, decoding only what it lacks. Returns how many
    /// prompt tokens were already there, and the batch index of the last token's logits.
    fn evaluate(&mut self, prompt: &[LlamaToken]) -> Result<usize, ModelError> {
        let mut keep = if self.config.prefix_cache {
            self.cached
                .iter()
                .zip(prompt)
                .take_while(|(a, b)| a == b)
                .count()
        } else {
            0
        };
        // The last prompt token is always decoded again: its logits start the reply.
        keep = keep.min(prompt.len().saturating_sub(1));
        if keep < self.cached.len() {
            let removed = self
                .ctx
                .clear_kv_cache_seq(Some(0), Some(keep as u32), None)
                .unwrap_or(false);
            if !removed {
                // Some memory types cannot drop a tail; start over.
                self.forget();
                keep = 0;
            }
            self.cached.truncate(keep);
        }
        let rest = &prompt[keep..];
        // llama.cpp caps the batch at the context size, and asserts (aborts) past it.
        let size = (self.ctx.n_batch() as usize).clamp(1, BATCH);
        for (n, chunk) in rest.chunks(size).enumerate() {
            self.batch.clear();
            let last_chunk = (n + 1) * size >= rest.len();
            for (i, token) in chunk.iter().enumerate() {
                let pos = (self.cached.len() + i) as i32;
                let logits = last_chunk && i + 1 == chunk.len();
                self.batch
                    .add(*token, pos, &[0], logits)
                    .map_err(|e| ModelError::Invalid(format!("batch: {e}")))?;
            }
            if let Err(e) = self.ctx.decode(&mut self.batch) {
                self.forget();
                return Err(ModelError::Invalid(format!(
                    "llama.cpp could not evaluate the prompt: {e}"
                )));
            }
            self.cached.extend_from_slice(chunk);
        }
        Ok(keep)
    }

    /// Samples the next jobs' replies as `s` says (the sampler reads the config).
    fn set_sampling(&mut self, s: Sampling) {
        self.config.temperature = s.temperature;
        self.config.top_p = s.top_p;
        self.config.seed = s.seed;
    }

    fn generate(
        &mut self,
        pieces: &[Piece],
        grammar: Option<&str>,
        nudge: bool,
        max_tokens: u32,
        stream: &tokio_mpsc::UnboundedSender<String>,
    ) -> Result<Generated, ModelError> {
        let prompt = self.tokenize(pieces);
        let n_ctx = self.ctx.n_ctx() as usize;
        if prompt.len() >= n_ctx {
            return Err(ModelError::Invalid(format!(
                "the conversation is {} tokens, which exceeds the local model's context size of {n_ctx} tokens; raise `context` for the local model (up to {} for this model) or start a new performance",
                prompt.len(),
                self.model.n_ctx_train()
            )));
        }
        if prompt.is_empty() {
            return Err(ModelError::Invalid("the prompt is empty".into()));
        }
        let reused = self.evaluate(&prompt)?;
        tracing::debug!(
            prompt = prompt.len(),
            reused,
            evaluated = prompt.len() - reused,
            "prompt evaluated"
        );
        let mut out = Generated {
            input_tokens: prompt.len() as u64,
            cached_tokens: reused as u64,
            ..Default::default()
        };
        let vocab = self.model.vocab();
        let biased = nudge && grammar.is_some() && self.config.tool_bias != 0.0;
        let mut sampler = self.sampler(grammar, biased)?;
        let mut sampled: Vec<LlamaToken> = Vec::new();
        let mut shape = Shape::Undecided;
        let mut utf8 = Utf8Stream::default();
        let mut text = String::new();
        // The batch index holding the logits to sample from.
        let mut logits_at = self.batch.n_tokens() - 1;
        loop {
            if out.output_tokens >= u64::from(max_tokens) || self.cached.len() + 1 >= n_ctx {
                out.hit_limit = true;
                break;
            }
            if stream.is_closed() {
                return Err(ModelError::Stream(
                    "the reply was abandoned by its caller".into(),
                ));
            }
            let token = sampler.pick(&self.ctx, logits_at);
            if vocab.is_eog(token) || vocab.is_control(token) {
                break;
            }
            out.output_tokens += 1;
            sampled.push(token);
            let piece = utf8.push(&vocab.token_to_piece(token, false, None));
            text.push_str(&piece);
            match shape {
                Shape::Undecided => {
                    let visible = text.trim_start();
                    if visible.starts_with('{') && grammar.is_some() {
                        shape = Shape::Call;
                        if biased {
                            // The bias only decides whether to call; inside the call, a fresh
                            // grammar (brought up to here) and the plain sampler go on.
                            sampler = self.sampler(grammar, false)?;
                            for t in &sampled {
                                sampler.accept(*t)?;
                            }
                        }
                    } else if !visible.is_empty() {
                        shape = Shape::Text;
                        let _ = stream.send(visible.to_string());
                        if grammar.is_some() {
                            // Text needs no grammar: sample freely from here on.
                            sampler = self.sampler(None, false)?;
                        }
                    }
                }
                Shape::Text => {
                    let line_ended = piece.contains('\n');
                    if !piece.is_empty() {
                        let _ = stream.send(piece);
                    }
                    if line_ended && repeats_itself(&text) {
                        // A greedy small model that starts to repeat itself never stops: the
                        // rest of the reply would be the same lines until the token limit.
                        tracing::debug!("the reply repeats itself; ended");
                        break;
                    }
                }
                Shape::Call => {
                    if serde_json::from_str::<serde_json::Value>(text.trim()).is_ok() {
                        // The grammar's call is complete: the reply ends here.
                        break;
                    }
                }
            }
            if out.output_tokens >= u64::from(max_tokens) {
                // The last token allowed: decoding it would cost a whole token's time for
                // logits nobody reads.
                out.hit_limit = true;
                break;
            }
            self.batch.clear();
            self.batch
                .add(token, self.cached.len() as i32, &[0], true)
                .map_err(|e| ModelError::Invalid(format!("batch: {e}")))?;
            if let Err(e) = self.ctx.decode(&mut self.batch) {
                self.forget();
                return Err(ModelError::Invalid(format!(
                    "llama.cpp could not decode: {e}"
                )));
            }
            self.cached.push(token);
            logits_at = 0;
        }
        let tail = utf8.finish();
        if !tail.is_empty() {
            if shape == Shape::Text {
                let _ = stream.send(tail.clone());
            }
            text.push_str(&tail);
        }
        out.call = shape == Shape::Call;
        out.text = text.trim_start().to_string();
        if out.call
            && !out.hit_limit
            && !matches!(grammar::parse(&out.text), grammar::Parsed::Call { .. })
        {
            // The model ended (EOG) before its call closed; report it as cut off.
            out.hit_limit = true;
        }
        Ok(out)
    }
}

/// Picks each token of a reply.
enum Picker {
    /// The most likely token, read straight off the logits: exactly what llama.cpp's greedy
    /// sampler picks, without copying the whole vocabulary into a candidate array and scanning
    /// it again on every token (a measurable share of a small model's decode time).
    Argmax,
    /// A llama.cpp sampler chain: grammar, bias, temperature.
    Chain(LlamaSampler),
}

impl Picker {
    /// The next token, from the logits at batch index `at`.
    fn pick(&mut self, ctx: &LlamaContext<'_>, at: i32) -> LlamaToken {
        match self {
            Picker::Argmax => LlamaToken(argmax(ctx.get_logits_ith(at)) as i32),
            // `sample` also accepts the token into every sampler of the chain (the grammar
            // included); accepting it again would make the grammar throw.
            Picker::Chain(chain) => chain.sample(ctx, at),
        }
    }

    /// Brings the chain's state (the grammar's position) past `token`, sampled elsewhere.
    fn accept(&mut self, token: LlamaToken) -> Result<(), ModelError> {
        match self {
            Picker::Argmax => Ok(()),
            Picker::Chain(chain) => chain
                .try_accept(token)
                .map_err(|e| ModelError::Invalid(format!("tool grammar: {e}"))),
        }
    }
}

/// The index of the largest logit, the first one on ties, as llama.cpp's greedy sampler
/// picks it. Lane-wise maxima first (the compiler turns this loop into vector max
/// instructions), then one scan for the first index that holds the maximum.
pub fn argmax(logits: &[f32]) -> usize {
    const LANES: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = logits.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    let max = lanes
        .iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m });
    // No logit equals the maximum only when all are NaN; token 0 is as good as any then.
    logits.iter().position(|&x| x == max).unwrap_or(0)
}

/// The shortest block of text whose verbatim repetition ends a reply: shorter ones (a closing
/// brace, a blank line) repeat in good text too.
const MIN_REPEAT: usize = 24;

/// Whether `text` ends with the same block of lines twice in a row, the block at least
/// [`MIN_REPEAT`] bytes long, ending with a line break and holding two or more lines that are
/// not blank; or with one such line three times: the sign of a reply in a loop. One line twice
/// is good text (two identical code lines, two equal table rows).
pub fn repeats_itself(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.last() != Some(&b'\n') {
        return false;
    }
    let n = bytes.len();
    // A copy of `len` bytes ending at `end` that starts right after a line break (or at the
    // start), as the repetition does, and equals the last `len` bytes.
    let copy_at = |end: usize, len: usize| {
        end >= len
            && (end == len || bytes[end - len - 1] == b'\n')
            && bytes[end - len..end] == bytes[n - len..]
    };
    (MIN_REPEAT..=n / 2).any(|len| {
        if !copy_at(n - len, len) {
            return false;
        }
        let block = &text[n - len..];
        let lines = block.lines().filter(|l| !l.trim().is_empty()).count();
        lines >= 2 || copy_at(n - 2 * len, len)
    })
}

/// Turns token bytes into text, holding back a multi-byte character split across tokens until
/// its last byte arrives. Invalid bytes become U+FFFD.
#[derive(Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// The text completed by `bytes`.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The first `valid` bytes are UTF-8 (the check above says so).
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is still held back, at the end of the reply.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

#[cfg(test)]
mod tests {
    use super::{Utf8Stream, argmax, repeats_itself};
    use llama_cpp_2::sampling::LlamaSampler;
    use llama_cpp_2::token::LlamaToken;
    use llama_cpp_2::token::data::LlamaTokenData;
    use llama_cpp_2::token::data_array::LlamaTokenDataArray;

    /// What llama.cpp's own greedy sampler picks from `logits`.
    fn greedy(logits: &[f32]) -> usize {
        let data = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| LlamaTokenData::new(LlamaToken(i as i32), l, 0.0));
        let mut array = LlamaTokenDataArray::from_iter(data, false);
        array.apply_sampler(&mut LlamaSampler::greedy());
        array.selected_token().expect("greedy selects a token").0 as usize
    }

    #[test]
    fn argmax_picks_what_the_greedy_sampler_picks() {
        // A vocabulary-sized vector with a fixed pseudo-random pattern, then ties, maxima in
        // the remainder after the last full lane chunk, and a maximum at index 0.
        let mut seed = 7u64;
        let mut logits: Vec<f32> = (0..49_157)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                // In [-10, 10): below the maxima planted next.
                (seed >> 40) as f32 / (1u64 << 24) as f32 * 20.0 - 10.0
            })
            .collect();
        assert_eq!(argmax(&logits), greedy(&logits));
        logits[1234] = 99.0;
        logits[40_000] = 99.0;
        assert_eq!(argmax(&logits), 1234);
        assert_eq!(greedy(&logits), 1234);
        logits[49_156] = 100.0;
        assert_eq!(argmax(&logits), 49_156);
        assert_eq!(greedy(&logits), 49_156);
        logits[0] = 101.0;
        assert_eq!(argmax(&logits), 0);
        assert_eq!(greedy(&logits), 0);
        let short = [-1.0, 3.0, f32::NEG_INFINITY, 3.0];
        assert_eq!(argmax(&short), 1);
        assert_eq!(greedy(&short), 1);
    }

    #[test]
    fn a_reply_that_repeats_a_block_of_lines_is_seen_to_repeat() {
        let block = "This will run the tests.\n\n```\ncargo test\n```\n\n";
        let once = format!("You can run them.\n\n{block}");
        assert!(!repeats_itself(&once));
        assert!(repeats_itself(&format!("{once}{block}")));
        // Short repeats (closing braces, blank lines) and repeats mid-line are good text.
        assert!(!repeats_itself("fn a() {\n}\n}\n}\n\n\n"));
        assert!(!repeats_itself(
            "one line that is long enough\nxone line that is long enough\n"
        ));
        assert!(!repeats_itself(&format!("{once}{block}and on")));
    }

    #[test]
    fn one_line_must_come_three_times_to_be_a_repeat() {
        let line = "    assert_eq!(mean(&[1.0, 2.0]), 1.5);\n";
        let twice = format!("fn t() {{\n{line}{line}");
        assert!(
            !repeats_itself(&twice),
            "two identical code lines are good text"
        );
        assert!(repeats_itself(&format!("{twice}{line}")));
        let row = "| a long table row | 1 | 2 |\n";
        assert!(!repeats_itself(&format!("| h |\n{row}\n{row}\n")));
    }

    #[test]
    fn multi_byte_characters_split_across_tokens_come_out_whole() {
        let text = "héllo 🦀 wörld";
        let bytes = text.as_bytes();
        // Feed one byte at a time: every split point is exercised.
        let mut stream = Utf8Stream::default();
        let mut out = String::new();
        let mut pieces = Vec::new();
        for b in bytes {
            let piece = stream.push(std::slice::from_ref(b));
            out.push_str(&piece);
            pieces.push(piece);
        }
        out.push_str(&stream.finish());
        assert_eq!(out, text);
        // The crab's four bytes came out in one piece, only after the fourth.
        assert!(pieces.contains(&"🦀".to_string()));
        assert_eq!(pieces.iter().filter(|p| p.is_empty()).count(), 1 + 3 + 1);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let mut stream = Utf8Stream::default();
        assert_eq!(stream.push(b"a\xffb"), "a\u{FFFD}b");
        assert_eq!(stream.push(b"\xe2\x82"), "");
        assert_eq!(stream.finish(), "\u{FFFD}");
    }
}
