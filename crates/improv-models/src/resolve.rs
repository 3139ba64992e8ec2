//! Turning a stage file's `provider/model` into a ready [`Model`]: which provider, which URL,
//! which key. Every configuration mistake is caught here, before any request is made.

use crate::anthropic::Anthropic;
use crate::names::WireNames;
use crate::openai_chat::{Flavor, OpenAiChat};
use crate::openai_responses::OpenAiResponses;
use crate::{Endpoint, Prices, RetryPolicy};
use improv_kernel::{Model, ScriptedModel};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

/// The public OpenAI API root.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// The public Anthropic API root.
pub const ANTHROPIC_BASE_URL: &str = "https://api.anthropic.com";
/// Where a local Ollama serves its OpenAI-compatible API.
pub const OLLAMA_BASE_URL: &str = "http://127.0.0.1:11434/v1";

/// The providers [`resolve`] knows, with what each one is.
pub const PROVIDERS: &[(&str, &str)] = &[
    (
        "openai",
        "OpenAI Chat Completions (OPENAI_API_KEY, OPENAI_BASE_URL)",
    ),
    (
        "openai-responses",
        "the OpenAI Responses API (OPENAI_API_KEY, OPENAI_BASE_URL)",
    ),
    (
        "anthropic",
        "Anthropic Messages (ANTHROPIC_API_KEY, ANTHROPIC_BASE_URL)",
    ),
    (
        "compatible",
        "any OpenAI-compatible server at base_url (key optional)",
    ),
    (
        "ollama",
        "a local Ollama (base_url, default http://127.0.0.1:11434/v1)",
    ),
    (
        "scripted",
        "a JSON script of replies, for rehearsals: scripted/PATH",
    ),
    ("local", "the embedded model, resolved by improv-local"),
];

/// How an actor's model is configured in the stage file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// `provider/name`, e.g. `openai/gpt-5-mini`, `anthropic/claude-sonnet-4-5`.
    pub model: String,
    /// The API root, for a proxy or a compatible server.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The environment variable that holds the key, instead of the provider's usual one.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Retries of transient failures (429, 5xx, connect errors); 4 when absent.
    #[serde(default)]
    pub max_retries: Option<u32>,
}

impl ModelSpec {
    pub fn new(model: impl Into<String>) -> Self {
        ModelSpec {
            model: model.into(),
            ..Default::default()
        }
    }
}

/// Why a model could not be set up. Each message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// `local/…`: the embedded model, which the caller resolves (improv-local).
    #[error(
        "`{model}` is the embedded model: resolve `local/` models with improv-local, not improv-models"
    )]
    Local { model: String },
    #[error(
        "`{model}` names no provider: write the model as provider/name, e.g. openai/gpt-5-mini. Known providers: {known}"
    )]
    NoProvider { model: String, known: String },
    #[error("unknown model provider `{provider}` in `{model}`. Known providers: {known}")]
    UnknownProvider {
        provider: String,
        model: String,
        known: String,
    },
    #[error(
        "`{model}` needs an API key: set the environment variable {env}{hint}, or set api_key_env in the actor's stage entry to the variable that holds it"
    )]
    MissingKey {
        model: String,
        env: String,
        hint: &'static str,
    },
    #[error(
        "`{model}` needs a base_url: set base_url in the actor's stage entry to the server's API root, e.g. http://127.0.0.1:8000/v1"
    )]
    MissingBaseUrl { model: String },
    #[error("cannot read the script of `{model}` at {}: {source}", path.display())]
    ScriptRead {
        model: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the script of `{model}` at {}:{line}:{column} is not valid: {message}", path.display())]
    Script {
        model: String,
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

fn known() -> String {
    PROVIDERS
        .iter()
        .map(|(p, _)| *p)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Splits `model` (`provider/name`) and checks that improv knows the provider, without
/// resolving it (no key, file or client is looked at): what a server that queues for workers
/// can check of a model.
pub fn provider_of(model: &str) -> Result<(&str, &str), ResolveError> {
    let Some((provider, name)) = model
        .split_once('/')
        .filter(|(p, n)| !p.is_empty() && !n.is_empty())
    else {
        return Err(ResolveError::NoProvider {
            model: model.to_string(),
            known: known(),
        });
    };
    if !PROVIDERS.iter().any(|(p, _)| *p == provider) {
        return Err(ResolveError::UnknownProvider {
            provider: provider.to_string(),
            model: model.to_string(),
            known: known(),
        });
    }
    Ok((provider, name))
}

/// Resolves `spec` with keys and base URLs from the process environment.
pub fn resolve(spec: &ModelSpec, prices: &Prices) -> Result<Arc<dyn Model>, ResolveError> {
    resolve_with(spec, prices, &|name| std::env::var(name).ok())
}

/// Resolves `spec` reading environment variables through `env` (tests pass a map). Empty
/// values count as unset. `scripted/PATH` reads PATH relative to the current directory: pass
/// an absolute path to resolve against the stage's directory.
pub fn resolve_with(
    spec: &ModelSpec,
    prices: &Prices,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn Model>, ResolveError> {
    let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    let (provider, name) = provider_of(&spec.model)?;
    let retry = RetryPolicy {
        max_retries: spec
            .max_retries
            .unwrap_or(RetryPolicy::default().max_retries),
        ..RetryPolicy::default()
    };
    let endpoint = |base_url: String, api_key: Option<String>, key_env: String| Endpoint {
        name: spec.model.clone(),
        model: name.to_string(),
        base_url: base_url.trim_end_matches('/').to_string(),
        api_key,
        key_env,
        retry,
        price: prices.lookup(provider, name),
        context_window: prices.context_window(provider, name),
    };
    let missing_key = |key_env: &str, hint: &'static str| ResolveError::MissingKey {
        model: spec.model.clone(),
        env: key_env.to_string(),
        hint,
    };
    match provider {
        "openai" | "openai-responses" | "anthropic" => {
            let (key_var, base_var, default_base) = if provider == "anthropic" {
                (
                    "ANTHROPIC_API_KEY",
                    "ANTHROPIC_BASE_URL",
                    ANTHROPIC_BASE_URL,
                )
            } else {
                ("OPENAI_API_KEY", "OPENAI_BASE_URL", OPENAI_BASE_URL)
            };
            let key_env = spec.api_key_env.clone().unwrap_or_else(|| key_var.into());
            let custom_base = spec.base_url.clone().or_else(|| env(base_var));
            let key = env(&key_env);
            // A server of one's own (a proxy, a local server) may need no key; the public API
            // always does, and so does a key variable named on purpose.
            if key.is_none() && (custom_base.is_none() || spec.api_key_env.is_some()) {
                return Err(missing_key(
                    &key_env,
                    " (or set base_url for a server of your own that needs no key)",
                ));
            }
            let ep = endpoint(
                custom_base.unwrap_or_else(|| default_base.into()),
                key,
                key_env,
            );
            let model: Arc<dyn Model> = match provider {
                "openai" => Arc::new(OpenAiChat::new(ep, Flavor::OpenAi)),
                "openai-responses" => Arc::new(OpenAiResponses::new(ep)),
                _ => Arc::new(Anthropic::new(ep)),
            };
            Ok(Arc::new(WireNames(model)))
        }
        "compatible" | "ollama" => {
            let base = match (&spec.base_url, provider) {
                (Some(b), _) => b.clone(),
                (None, "ollama") => OLLAMA_BASE_URL.into(),
                (None, _) => {
                    return Err(ResolveError::MissingBaseUrl {
                        model: spec.model.clone(),
                    });
                }
            };
            let (key, key_env) = match &spec.api_key_env {
                Some(var) => (
                    Some(env(var).ok_or_else(|| missing_key(var, ""))?),
                    var.clone(),
                ),
                None if provider == "compatible" => {
                    (env("OPENAI_API_KEY"), "OPENAI_API_KEY".into())
                }
                None => (None, "the variable named by api_key_env".into()),
            };
            Ok(Arc::new(WireNames(Arc::new(OpenAiChat::new(
                endpoint(base, key, key_env),
                Flavor::Compatible,
            )))))
        }
        "scripted" => {
            let path = PathBuf::from(name);
            let text =
                std::fs::read_to_string(&path).map_err(|source| ResolveError::ScriptRead {
                    model: spec.model.clone(),
                    path: path.clone(),
                    source,
                })?;
            let model =
                ScriptedModel::from_json(&spec.model, &text).map_err(|e| ResolveError::Script {
                    model: spec.model.clone(),
                    path: path.clone(),
                    line: e.line(),
                    column: e.column(),
                    message: e.to_string(),
                })?;
            Ok(Arc::new(match prices.lookup(provider, name) {
                Some(price) => model.with_price(price),
                None => model,
            }))
        }
        "local" => Err(ResolveError::Local {
            model: spec.model.clone(),
        }),
        other => Err(ResolveError::UnknownProvider {
            provider: other.to_string(),
            model: spec.model.clone(),
            known: known(),
        }),
    }
}
