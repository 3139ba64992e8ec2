//! The [`Model`] trait that every provider implements, and the request and reply it speaks.

use crate::message::{Message, ToolCall, ToolSpec};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One call to a model: borrowed from the performance, so building it costs nothing per turn.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The actor's system prompt.
    pub system: &'a str,
    /// The conversation so far, oldest first.
    pub messages: &'a [Message],
    /// The props the actor may call this turn; empty when it may only answer in text.
    pub tools: &'a [ToolSpec],
    /// Most tokens the reply may have; the provider's default when `None`.
    pub max_output_tokens: Option<u32>,
}

/// What a model reports while it answers.
#[derive(Debug)]
pub enum ModelUpdate<'a> {
    /// A piece of the reply's text, as it streams in.
    Text(&'a str),
    /// The provider failed transiently and will try again after `delay`.
    Retry {
        /// Which retry this is, from 1.
        attempt: u32,
        /// How long the provider waits before trying again.
        delay: Duration,
        /// What failed (a status, a broken stream), in words.
        reason: &'a str,
    },
}

/// Why a model stopped answering.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It finished its turn (possibly asking for tool calls).
    EndTurn,
    /// It asked for tool calls.
    ToolUse,
    /// It hit the output-token limit: any tool call in the reply may be cut short.
    MaxTokens,
    /// The provider refused or filtered the reply.
    Refused,
}

/// Tokens a call consumed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens of the request the model read, cached ones included.
    pub input_tokens: u64,
    /// Tokens the model wrote.
    pub output_tokens: u64,
    /// The part of `input_tokens` served from the provider's prompt cache.
    #[serde(default)]
    pub cached_input_tokens: u64,
}

/// A model's complete answer to one request.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    /// The whole text of the reply; may be empty when it only calls props.
    pub text: String,
    /// The prop calls the model asked for, in the order it wrote them.
    pub tool_calls: Vec<ToolCall>,
    /// Why the model stopped.
    pub stop: StopReason,
    /// Tokens the call consumed.
    pub usage: Usage,
    /// Bytes of the request body the provider sent (0 for in-process models).
    pub request_bytes: u64,
}

/// Prices in USD per million tokens.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Price {
    /// Price of input tokens not served from the cache.
    pub input: f64,
    /// Price of output tokens.
    pub output: f64,
    /// Price of cached input tokens; the input price when absent.
    #[serde(default)]
    pub cached_input: Option<f64>,
}

impl Price {
    /// What a call with `usage` costs, in USD: cached input at the cached price, the rest at
    /// the input price.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_input_tokens.min(usage.input_tokens);
        let fresh = usage.input_tokens - cached;
        (fresh as f64 * self.input
            + cached as f64 * self.cached_input.unwrap_or(self.input)
            + usage.output_tokens as f64 * self.output)
            / 1_000_000.0
    }
}

/// Why a model call failed, after the provider's own retries. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// 401/403: a missing or wrong key.
    #[error("{0}")]
    Auth(String),
    /// 404: an unknown model or endpoint.
    #[error("{0}")]
    NotFound(String),
    /// 429 or 5xx after every retry.
    #[error("{0}")]
    Unavailable(String),
    /// The server could not be reached.
    #[error("{0}")]
    Connect(String),
    /// The response stream broke or could not be parsed.
    #[error("{0}")]
    Stream(String),
    /// The request was refused as invalid, or the model is misconfigured.
    #[error("{0}")]
    Invalid(String),
}

/// A language model an actor talks to: a hosted provider, an in-process model or a script.
#[async_trait]
pub trait Model: Send + Sync {
    /// `provider/model`, as written in the stage file.
    fn name(&self) -> &str;

    /// Its price, when known; costs are zero otherwise.
    fn price(&self) -> Option<Price> {
        None
    }

    /// Its context window in tokens, when known.
    fn context_window(&self) -> Option<u64> {
        None
    }

    /// Answers one request, reporting text and retries through `update` as they happen.
    async fn respond(
        &self,
        request: Request<'_>,
        update: &mut (dyn for<'u> FnMut(ModelUpdate<'u>) + Send),
    ) -> Result<Reply, ModelError>;
}
