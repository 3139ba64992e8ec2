//! Anthropic Messages (`{base_url}/v1/messages`), streamed. The system prompt goes first as a
//! cached block and the last message carries a cache breakpoint too, so each turn reads the
//! conversation so far from the prompt cache; consecutive tool results travel in one user
//! message.

use crate::Endpoint;
use crate::hosted::{Wire, hosted_model};
use crate::http;
use crate::sse::{self, Decoder};
use improv_kernel::{
    Message, ModelError, ModelUpdate, Reply, Request, StopReason, ToolCall, Usage,
};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;

const PROVIDER: &str = "Anthropic";
/// The API version this module speaks.
pub const API_VERSION: &str = "2023-06-01";
/// `max_tokens` is required by the API; this is sent when the request sets none.
pub const DEFAULT_MAX_TOKENS: u32 = 8192;

/// A model behind the Messages API.
pub struct Anthropic {
    endpoint: Endpoint,
    url: String,
}

impl Anthropic {
    /// `endpoint.base_url` is the API root (`https://api.anthropic.com`); a root that already
    /// ends in `/v1` is accepted too.
    pub fn new(endpoint: Endpoint) -> Self {
        let base = endpoint.base_url.trim_end_matches('/');
        let url = if base.ends_with("/v1") {
            format!("{base}/messages")
        } else {
            format!("{base}/v1/messages")
        };
        Anthropic { endpoint, url }
    }

    /// The request body, serialized straight from the borrowed request.
    pub fn body(&self, request: &Request<'_>) -> Result<Vec<u8>, ModelError> {
        let mut messages: Vec<Msg<'_>> = Vec::with_capacity(request.messages.len());
        for m in request.messages {
            let (role, blocks) = blocks(m);
            match messages.last_mut() {
                // The API wants roles to alternate: tool results that follow one another, and
                // a note that follows them, share one user message.
                Some(last) if last.role == role => last.content.extend(blocks),
                _ => messages.push(Msg {
                    role,
                    content: blocks,
                }),
            }
        }
        for m in &mut messages {
            if m.content.is_empty() {
                m.content.push(Block::Text {
                    text: "(empty)",
                    cache_control: None,
                });
            }
        }
        if let Some(block) = messages.last_mut().and_then(|m| m.content.last_mut()) {
            block.cache();
        }
        let body = Body {
            model: &self.endpoint.model,
            max_tokens: request.max_output_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            system: if request.system.is_empty() {
                Vec::new()
            } else {
                vec![SystemBlock {
                    kind: "text",
                    text: request.system,
                    cache_control: EPHEMERAL,
                }]
            },
            messages,
            tools: request
                .tools
                .iter()
                .map(|t| Tool {
                    name: &t.name,
                    description: &t.description,
                    input_schema: &t.parameters,
                })
                .collect(),
            stream: true,
        };
        serde_json::to_vec(&body)
            .map_err(|e| ModelError::Invalid(format!("cannot serialize the request: {e}")))
    }
}

/// A message's role and content blocks.
fn blocks(m: &Message) -> (&'static str, Vec<Block<'_>>) {
    match m {
        Message::User { text } => (
            "user",
            (!text.is_empty())
                .then_some(Block::Text {
                    text,
                    cache_control: None,
                })
                .into_iter()
                .collect(),
        ),
        Message::Assistant { text, tool_calls } => {
            let mut out = Vec::with_capacity(tool_calls.len() + 1);
            if !text.is_empty() {
                out.push(Block::Text {
                    text,
                    cache_control: None,
                });
            }
            out.extend(tool_calls.iter().map(|c| Block::ToolUse {
                id: &c.id,
                name: &c.name,
                input: input_object(&c.arguments),
                cache_control: None,
            }));
            ("assistant", out)
        }
        Message::Tool {
            call_id,
            content,
            is_error,
            ..
        } => (
            "user",
            vec![Block::ToolResult {
                tool_use_id: call_id,
                content,
                is_error: *is_error,
                cache_control: None,
            }],
        ),
    }
}

/// Tool arguments as the JSON object the API wants for `input`, borrowed without re-encoding.
/// Arguments that are not a JSON object (a call the kernel already failed) become `{}`.
fn input_object(arguments: &str) -> &RawValue {
    match serde_json::from_str::<&RawValue>(arguments) {
        Ok(raw) if raw.get().trim_start().starts_with('{') => raw,
        _ => empty_object(),
    }
}

fn empty_object() -> &'static RawValue {
    static EMPTY: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| {
        // "{}" is valid JSON; the fallback keeps this total.
        RawValue::from_string("{}".into()).unwrap_or_else(|_| RawValue::NULL.to_owned())
    })
}

#[derive(Serialize, Clone, Copy)]
struct CacheControl {
    #[serde(rename = "type")]
    kind: &'static str,
}

const EPHEMERAL: CacheControl = CacheControl { kind: "ephemeral" };

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    system: Vec<SystemBlock<'a>>,
    messages: Vec<Msg<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool<'a>>,
    stream: bool,
}

#[derive(Serialize)]
struct SystemBlock<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    cache_control: CacheControl,
}

#[derive(Serialize)]
struct Msg<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<CacheControl>,
    },
}

impl Block<'_> {
    fn cache(&mut self) {
        let (Block::Text { cache_control, .. }
        | Block::ToolUse { cache_control, .. }
        | Block::ToolResult { cache_control, .. }) = self;
        *cache_control = Some(EPHEMERAL);
    }
}

#[derive(Serialize)]
struct Tool<'a> {
    name: &'a str,
    description: &'a str,
    input_schema: &'a serde_json::Value,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: Option<StartMessage>,
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    content_block: Option<BlockStart>,
    #[serde(default)]
    delta: Option<DeltaBody>,
    #[serde(default)]
    usage: Option<ApiUsage>,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    usage: Option<ApiUsage>,
}

#[derive(Deserialize, Default)]
struct ApiUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct BlockStart {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct DeltaBody {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    partial_json: Option<String>,
    #[serde(default)]
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

#[derive(Default)]
pub(crate) struct MessagesDecoder {
    text: String,
    calls: Vec<ToolCall>,
    /// Content-block index → position in `calls`, for tool-use blocks.
    tool_blocks: BTreeMap<usize, usize>,
    stop: Option<String>,
    input: u64,
    cache_write: u64,
    cache_read: u64,
    output: u64,
}

impl MessagesDecoder {
    fn usage(&mut self, u: ApiUsage) {
        if let Some(v) = u.input_tokens {
            self.input = v;
        }
        if let Some(v) = u.cache_creation_input_tokens {
            self.cache_write = v;
        }
        if let Some(v) = u.cache_read_input_tokens {
            self.cache_read = v;
        }
        if let Some(v) = u.output_tokens {
            self.output = v;
        }
    }
}

impl Decoder for MessagesDecoder {
    const TERMINAL: &'static str = "message_stop";

    fn event(
        &mut self,
        event: &str,
        data: &str,
        update: &mut (dyn for<'u> FnMut(ModelUpdate<'u>) + Send),
    ) -> Result<bool, ModelError> {
        let e: Event = sse::parse(PROVIDER, event, data)?;
        match e.kind.as_str() {
            "message_start" => {
                if let Some(u) = e.message.and_then(|m| m.usage) {
                    self.usage(u);
                }
            }
            "content_block_start" => {
                let (Some(index), Some(block)) = (e.index, e.content_block) else {
                    return Ok(false);
                };
                match block.kind.as_str() {
                    "tool_use" => {
                        self.tool_blocks.insert(index, self.calls.len());
                        self.calls.push(ToolCall {
                            id: block.id.unwrap_or_default(),
                            name: block.name.unwrap_or_default(),
                            arguments: String::new(),
                        });
                    }
                    "text" => {
                        if let Some(text) = block.text.filter(|t| !t.is_empty()) {
                            update(ModelUpdate::Text(&text));
                            self.text.push_str(&text);
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let Some(delta) = e.delta else {
                    return Ok(false);
                };
                match delta.kind.as_deref() {
                    Some("text_delta") => {
                        if let Some(text) = delta.text {
                            update(ModelUpdate::Text(&text));
                            self.text.push_str(&text);
                        }
                    }
                    Some("input_json_delta") => {
                        let slot = e.index.and_then(|i| self.tool_blocks.get(&i).copied());
                        let Some(call) = slot.and_then(|s| self.calls.get_mut(s)) else {
                            return Err(ModelError::Stream(format!(
                                "Anthropic sent tool input for a content block it never \
                                 started: {}",
                                http::shorten(data, 300)
                            )));
                        };
                        call.arguments
                            .push_str(delta.partial_json.as_deref().unwrap_or_default());
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(reason) = e.delta.and_then(|d| d.stop_reason) {
                    self.stop = Some(reason);
                }
                if let Some(u) = e.usage {
                    self.usage(u);
                }
            }
            "message_stop" => return Ok(true),
            "error" => {
                let error = e.error.unwrap_or(ApiError {
                    kind: "error".into(),
                    message: "no message".into(),
                });
                return Err(ModelError::Unavailable(format!(
                    "Anthropic reported an error mid-reply ({}): {}",
                    error.kind, error.message
                )));
            }
            _ => {}
        }
        Ok(false)
    }

    fn finish(mut self, request_bytes: u64) -> Result<Reply, ModelError> {
        for call in &mut self.calls {
            if call.arguments.trim().is_empty() {
                call.arguments = "{}".into();
            }
        }
        let stop = match self.stop.as_deref() {
            Some("max_tokens" | "model_context_window_exceeded") => StopReason::MaxTokens,
            Some("refusal") => StopReason::Refused,
            Some("tool_use") => StopReason::ToolUse,
            _ if !self.calls.is_empty() => StopReason::ToolUse,
            _ => StopReason::EndTurn,
        };
        Ok(Reply {
            text: self.text,
            tool_calls: self.calls,
            stop,
            // Anthropic counts cache reads and writes apart from `input_tokens`; the kernel
            // counts every input token once, cached ones included.
            usage: Usage {
                input_tokens: self.input + self.cache_write + self.cache_read,
                output_tokens: self.output,
                cached_input_tokens: self.cache_read,
            },
            request_bytes,
        })
    }
}

impl Wire for Anthropic {
    type Decoder = MessagesDecoder;

    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn provider(&self) -> &'static str {
        PROVIDER
    }

    fn url(&self) -> &str {
        &self.url
    }

    fn encode(&self, request: &Request<'_>) -> Result<Vec<u8>, ModelError> {
        self.body(request)
    }

    fn headers(&self) -> Result<HeaderMap, ModelError> {
        let mut headers = crate::request_headers(
            self.endpoint
                .api_key
                .as_ref()
                .map(|key| (HeaderName::from_static("x-api-key"), key.clone())),
        )?;
        headers.insert(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(API_VERSION),
        );
        Ok(headers)
    }

    fn decoder(&self) -> MessagesDecoder {
        MessagesDecoder::default()
    }
}

hosted_model!(Anthropic);
