//! The OpenAI Responses API (`{base_url}/responses`), streamed. Stateless: every call sends the
//! whole conversation as input items (`message`, `function_call`, `function_call_output`) with
//! the system prompt as `instructions`, and `store: false`.

use crate::Endpoint;
use crate::hosted::{Wire, hosted_model};
use crate::http;
use crate::sse::{self, Decoder};
use improv_kernel::{
    Message, ModelError, ModelUpdate, Reply, Request, StopReason, ToolCall, Usage,
};
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

const PROVIDER: &str = "OpenAI";

/// A model behind the Responses API.
pub struct OpenAiResponses {
    endpoint: Endpoint,
    url: String,
}

impl OpenAiResponses {
    pub fn new(endpoint: Endpoint) -> Self {
        let url = format!("{}/responses", endpoint.base_url.trim_end_matches('/'));
        OpenAiResponses { endpoint, url }
    }

    /// The request body, serialized straight from the borrowed request.
    pub fn body(&self, request: &Request<'_>) -> Result<Vec<u8>, ModelError> {
        let mut input = Vec::with_capacity(request.messages.len() + 4);
        for m in request.messages {
            match m {
                Message::User { text } => input.push(Item::Message {
                    role: "user",
                    content: text,
                }),
                Message::Assistant { text, tool_calls } => {
                    if !text.is_empty() {
                        input.push(Item::Message {
                            role: "assistant",
                            content: text,
                        });
                    }
                    input.extend(tool_calls.iter().map(|c| Item::FunctionCall {
                        call_id: &c.id,
                        name: &c.name,
                        arguments: &c.arguments,
                    }));
                }
                Message::Tool {
                    call_id, content, ..
                } => input.push(Item::FunctionCallOutput {
                    call_id,
                    output: content,
                }),
            }
        }
        let body = Body {
            model: &self.endpoint.model,
            instructions: (!request.system.is_empty()).then_some(request.system),
            input,
            tools: request
                .tools
                .iter()
                .map(|t| Tool {
                    kind: "function",
                    name: &t.name,
                    description: &t.description,
                    parameters: &t.parameters,
                    strict: false,
                })
                .collect(),
            stream: true,
            store: false,
            max_output_tokens: request.max_output_tokens,
        };
        serde_json::to_vec(&body)
            .map_err(|e| ModelError::Invalid(format!("cannot serialize the request: {e}")))
    }
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<&'a str>,
    input: Vec<Item<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool<'a>>,
    stream: bool,
    store: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Item<'a> {
    Message {
        role: &'static str,
        content: &'a str,
    },
    FunctionCall {
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
    },
    FunctionCallOutput {
        call_id: &'a str,
        output: &'a str,
    },
}

/// `strict: false` keeps tool schemas exactly as given (strict mode would demand every property
/// be required and `additionalProperties: false`).
#[derive(Serialize)]
struct Tool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    name: &'a str,
    description: &'a str,
    parameters: &'a serde_json::Value,
    strict: bool,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    delta: Option<String>,
    #[serde(default)]
    output_index: Option<u64>,
    #[serde(default)]
    item: Option<OutputItem>,
    #[serde(default)]
    arguments: Option<String>,
    #[serde(default)]
    response: Option<ResponseObject>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

#[derive(Deserialize)]
struct OutputItem {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    call_id: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct ResponseObject {
    #[serde(default)]
    usage: Option<ResponsesUsage>,
    #[serde(default)]
    incomplete_details: Option<Incomplete>,
    #[serde(default)]
    error: Option<ApiError>,
}

#[derive(Deserialize)]
struct Incomplete {
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct ResponsesUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<InputDetails>,
}

#[derive(Deserialize)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Default)]
pub(crate) struct ResponsesDecoder {
    text: String,
    /// Function calls by output index, so deltas find their call.
    calls: BTreeMap<u64, ToolCall>,
    refused: bool,
    incomplete: Option<String>,
    usage: Usage,
}

impl Decoder for ResponsesDecoder {
    const TERMINAL: &'static str = "response.completed";

    fn event(
        &mut self,
        event: &str,
        data: &str,
        update: &mut (dyn for<'u> FnMut(ModelUpdate<'u>) + Send),
    ) -> Result<bool, ModelError> {
        let e: Event = sse::parse(PROVIDER, event, data)?;
        match e.kind.as_str() {
            "response.output_text.delta" => {
                if let Some(text) = e.delta {
                    update(ModelUpdate::Text(&text));
                    self.text.push_str(&text);
                }
            }
            "response.refusal.delta" => {
                if let Some(text) = e.delta {
                    self.refused = true;
                    update(ModelUpdate::Text(&text));
                    self.text.push_str(&text);
                }
            }
            "response.output_item.added" | "response.output_item.done" => {
                if let Some(item) = e.item.filter(|i| i.kind == "function_call") {
                    let call = self
                        .calls
                        .entry(e.output_index.unwrap_or(u64::MAX))
                        .or_insert_with(|| ToolCall {
                            id: String::new(),
                            name: String::new(),
                            arguments: String::new(),
                        });
                    if let Some(id) = item.call_id {
                        call.id = id;
                    }
                    if let Some(name) = item.name {
                        call.name = name;
                    }
                    // The finished item carries the whole arguments; the added one, none yet.
                    if let Some(args) = item.arguments.filter(|a| !a.is_empty()) {
                        call.arguments = args;
                    }
                }
            }
            "response.function_call_arguments.delta" => {
                let call = e.output_index.and_then(|i| self.calls.get_mut(&i));
                match (call, e.delta) {
                    (Some(call), Some(delta)) => call.arguments.push_str(&delta),
                    (None, _) => return Err(orphan(data)),
                    _ => {}
                }
            }
            "response.function_call_arguments.done" => {
                let call = e.output_index.and_then(|i| self.calls.get_mut(&i));
                match (call, e.arguments) {
                    (Some(call), Some(args)) => call.arguments = args,
                    (None, _) => return Err(orphan(data)),
                    _ => {}
                }
            }
            "response.completed" | "response.incomplete" => {
                if let Some(r) = e.response {
                    if let Some(u) = r.usage {
                        self.usage = Usage {
                            input_tokens: u.input_tokens,
                            output_tokens: u.output_tokens,
                            cached_input_tokens: u
                                .input_tokens_details
                                .and_then(|d| d.cached_tokens)
                                .unwrap_or(0),
                        };
                    }
                    if e.kind == "response.incomplete" {
                        self.incomplete = Some(
                            r.incomplete_details
                                .and_then(|d| d.reason)
                                .unwrap_or_else(|| "unknown".into()),
                        );
                    }
                }
                return Ok(true);
            }
            "response.failed" => {
                let error = e.response.and_then(|r| r.error);
                let code = error.as_ref().and_then(|e| e.code.clone());
                let message = error.and_then(|e| e.message);
                return Err(ModelError::Unavailable(format!(
                    "OpenAI failed the response mid-reply ({}): {}",
                    code.unwrap_or_else(|| "no code".into()),
                    message.unwrap_or_else(|| "no message".into())
                )));
            }
            "error" => {
                return Err(ModelError::Unavailable(format!(
                    "OpenAI reported an error mid-reply ({}): {}",
                    e.code.unwrap_or_else(|| "no code".into()),
                    e.message.unwrap_or_else(|| "no message".into())
                )));
            }
            _ => {}
        }
        Ok(false)
    }

    fn finish(self, request_bytes: u64) -> Result<Reply, ModelError> {
        let tool_calls: Vec<ToolCall> = self.calls.into_values().collect();
        let stop = match self.incomplete.as_deref() {
            Some("content_filter") => StopReason::Refused,
            Some(_) => StopReason::MaxTokens,
            None if self.refused => StopReason::Refused,
            None if !tool_calls.is_empty() => StopReason::ToolUse,
            None => StopReason::EndTurn,
        };
        Ok(Reply {
            text: self.text,
            tool_calls,
            stop,
            usage: self.usage,
            request_bytes,
        })
    }
}

fn orphan(data: &str) -> ModelError {
    ModelError::Stream(format!(
        "OpenAI sent function-call arguments for an output item it never announced: {}",
        http::shorten(data, 300)
    ))
}

impl Wire for OpenAiResponses {
    type Decoder = ResponsesDecoder;

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
        crate::request_headers(crate::bearer(&self.endpoint))
    }

    fn decoder(&self) -> ResponsesDecoder {
        ResponsesDecoder::default()
    }
}

hosted_model!(OpenAiResponses);
