//! Model providers for improv: each implements [`improv_kernel::Model`] over HTTP, streaming.
//!
//! - [`openai_chat`]: OpenAI Chat Completions, and any OpenAI-compatible server.
//! - [`openai_responses`]: the OpenAI Responses API.
//! - [`anthropic`]: Anthropic Messages.
//!
//! [`resolve`] turns a stage file's `provider/model` into a ready model; [`pricing`] knows what
//! common models cost. All providers share one HTTP client and one retry policy ([`http`]) and one
//! `Model` body ([`hosted`]).

pub mod anthropic;
mod hosted;
mod http;
pub mod names;
pub mod openai_chat;
pub mod openai_responses;
pub mod pricing;
pub mod resolve;
mod sse;

pub use http::{RetryPolicy, TlsSetupError, client_builder};
pub use pricing::Prices;
pub use resolve::{ModelSpec, ResolveError, provider_of, resolve, resolve_with};

use improv_kernel::{ModelError, Price};
use reqwest::header::HeaderValue;

/// Where and how a provider reaches one model.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `provider/model`, as written in the stage file.
    pub name: String,
    /// The model id sent on the wire.
    pub model: String,
    /// The API base, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub api_key: Option<String>,
    /// The environment variable the key comes from, named in authentication errors.
    pub key_env: String,
    pub retry: RetryPolicy,
    pub price: Option<Price>,
    pub context_window: Option<u64>,
}

impl Endpoint {
    /// An endpoint with the default retry policy and no price.
    pub fn new(
        name: &str,
        model: &str,
        base_url: &str,
        api_key: Option<String>,
        key_env: &str,
    ) -> Self {
        Endpoint {
            name: name.into(),
            model: model.into(),
            base_url: base_url.trim_end_matches('/').into(),
            api_key,
            key_env: key_env.into(),
            retry: RetryPolicy::default(),
            price: None,
            context_window: None,
        }
    }
}

/// The headers of a JSON request, with the provider's credential header when a key is set.
pub(crate) fn request_headers(
    credential: Option<(reqwest::header::HeaderName, String)>,
) -> Result<reqwest::header::HeaderMap, ModelError> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some((name, value)) = credential {
        headers.insert(name, header_value(&value)?);
    }
    Ok(headers)
}

/// `Authorization: Bearer KEY`, the OpenAI APIs' credential, when a key is set.
pub(crate) fn bearer(endpoint: &Endpoint) -> Option<(reqwest::header::HeaderName, String)> {
    endpoint
        .api_key
        .as_ref()
        .map(|key| (reqwest::header::AUTHORIZATION, format!("Bearer {key}")))
}

/// A header value, or an error that says the key has characters HTTP headers cannot carry.
pub(crate) fn header_value(value: &str) -> Result<HeaderValue, ModelError> {
    HeaderValue::from_str(value).map_err(|_| {
        ModelError::Auth(
            "the API key contains characters that cannot be sent in an HTTP header (a stray \
             newline or quote?); check the environment variable that holds it"
                .into(),
        )
    })
}
