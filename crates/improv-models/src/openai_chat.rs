//! OpenAI Chat Completions, streamed: the OpenAI API itself and any server that speaks its
//! dialect (Ollama, vLLM, llama.cpp server, OpenRouter…). Tool calls are assembled from deltas
//! by index; usage comes from the last chunk (`stream_options.include_usage`).

use crate::Endpoint;
use crate::hosted::{Wire, hosted_model};
use crate::http;
use crate::sse::{self, Decoder};
use improv_kernel::{
    Message, ModelError, ModelUpdate, Reply, Request, StopReason, ToolCall, Usage,
};
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

/// Which dialect of Chat Completions a server speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// The OpenAI API: `max_completion_tokens`.
    OpenAi,
    /// Another server: `max_tokens`, which older compatible servers still expect.
    Compatible,
}

/// A model behind a Chat Completions endpoint (`{base_url}/chat/completions`).
pub struct OpenAiChat {
    endpoint: Endpoint,
    url: String,
    flavor: Flavor,
}

impl OpenAiChat {
    pub fn new(endpoint: Endpoint, flavor: Flavor) -> Self {
        let url = format!(
            "{}/chat/completions",
            endpoint.base_url.trim_end_matches('/')
        );
        OpenAiChat {
            endpoint,
            url,
            flavor,
        }
    }

    /// The request body, serialized straight from the borrowed request.
    pub fn body(&self, request: &Request<'_>) -> Result<Vec<u8>, ModelError> {
        let mut messages = Vec::with_capacity(request.messages.len() + 1);
        if !request.system.is_empty() {
            messages.push(Msg::System {
                content: request.system,
            });
        }
        messages.extend(request.messages.iter().map(Msg::from));
        let (max_completion_tokens, max_tokens) = match self.flavor {
            Flavor::OpenAi => (request.max_output_tokens, None),
            Flavor::Compatible => (None, request.max_output_tokens),
        };
        let body = Body {
            model: &self.endpoint.model,
            messages,
            tools: request
                .tools
                .iter()
                .map(|t| Tool {
                    kind: "function",
                    function: FunctionSpec {
                        name: &t.name,
                        description: &t.description,
                        parameters: &t.parameters,
                    },
                })
                .collect(),
            stream: true,
            stream_options: StreamOptions {
                include_usage: true,
            },
            max_completion_tokens,
            max_tokens,
        };
        serde_json::to_vec(&body)
            .map_err(|e| ModelError::Invalid(format!("cannot serialize the request: {e}")))
    }
}

#[derive(Serialize)]
struct Body<'a> {
    model: &'a str,
    messages: Vec<Msg<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool<'a>>,
    stream: bool,
    stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
#[serde(tag = "role", rename_all = "lowercase")]
enum Msg<'a> {
    System {
        content: &'a str,
    },
    User {
        content: &'a str,
    },
    Assistant {
        content: Option<&'a str>,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<CallOut<'a>>,
    },
    Tool {
        tool_call_id: &'a str,
        content: &'a str,
    },
}

impl<'a> From<&'a Message> for Msg<'a> {
    fn from(m: &'a Message) -> Self {
        match m {
            Message::User { text } => Msg::User { content: text },
            Message::Assistant { text, tool_calls } => Msg::Assistant {
                content: (!text.is_empty() || tool_calls.is_empty()).then_some(text.as_str()),
                tool_calls: tool_calls
                    .iter()
                    .map(|c| CallOut {
                        id: &c.id,
                        kind: "function",
                        function: FunctionCall {
                            name: &c.name,
                            arguments: &c.arguments,
                        },
                    })
                    .collect(),
            },
            Message::Tool {
                call_id, content, ..
            } => Msg::Tool {
                tool_call_id: call_id,
                content,
            },
        }
    }
}

#[derive(Serialize)]
struct CallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionCall<'a>,
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct Tool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionSpec<'a>,
}

#[derive(Serialize)]
struct FunctionSpec<'a> {
    name: &'a str,
    description: &'a str,
    parameters: &'a serde_json::Value,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<ChatUsage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    index: u32,
    #[serde(default)]
    delta: Option<Delta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolDelta>>,
}

#[derive(Deserialize)]
struct ToolDelta {
    #[serde(default)]
    index: Option<usize>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct ChatUsage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Deserialize)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

pub(crate) struct ChatDecoder {
    provider: &'static str,
    text: String,
    calls: Vec<ToolCall>,
    finish: Option<String>,
    refused: bool,
    usage: Usage,
}

impl Decoder for ChatDecoder {
    const TERMINAL: &'static str = "data: [DONE]";

    fn event(
        &mut self,
        _event: &str,
        data: &str,
        update: &mut (dyn for<'u> FnMut(ModelUpdate<'u>) + Send),
    ) -> Result<bool, ModelError> {
        if data.trim() == "[DONE]" {
            return Ok(true);
        }
        let chunk: Chunk = sse::parse(self.provider, "chat.completion.chunk", data)?;
        if let Some(error) = chunk.error {
            let message = http::server_message(&serde_json::json!({ "error": error }).to_string());
            return Err(ModelError::Unavailable(format!(
                "{} reported an error mid-reply: {message}",
                self.provider
            )));
        }
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            let delta = choice.delta.unwrap_or_default();
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                update(ModelUpdate::Text(&text));
                self.text.push_str(&text);
            }
            if let Some(text) = delta.refusal.filter(|t| !t.is_empty()) {
                self.refused = true;
                update(ModelUpdate::Text(&text));
                self.text.push_str(&text);
            }
            for d in delta.tool_calls.unwrap_or_default() {
                // Some compatible servers leave out `index`: a delta with an id starts a call,
                // one without continues the last.
                let index = d
                    .index
                    .unwrap_or(if d.id.is_some() || self.calls.is_empty() {
                        self.calls.len()
                    } else {
                        self.calls.len() - 1
                    });
                while self.calls.len() <= index {
                    self.calls.push(ToolCall {
                        id: String::new(),
                        name: String::new(),
                        arguments: String::new(),
                    });
                }
                let call = &mut self.calls[index];
                if let Some(id) = d.id.filter(|id| !id.is_empty()) {
                    call.id = id;
                }
                if let Some(f) = d.function {
                    if let Some(name) = f.name.filter(|n| !n.is_empty()) {
                        call.name = name;
                    }
                    if let Some(args) = f.arguments {
                        call.arguments.push_str(&args);
                    }
                }
            }
            if choice.finish_reason.is_some() {
                self.finish = choice.finish_reason;
            }
        }
        if let Some(u) = chunk.usage {
            self.usage = Usage {
                input_tokens: u.prompt_tokens,
                output_tokens: u.completion_tokens,
                cached_input_tokens: u
                    .prompt_tokens_details
                    .and_then(|d| d.cached_tokens)
                    .unwrap_or(0),
            };
        }
        Ok(false)
    }

    fn finish(mut self, request_bytes: u64) -> Result<Reply, ModelError> {
        for (i, call) in self.calls.iter_mut().enumerate() {
            if call.id.is_empty() {
                call.id = format!("call_{i}");
            }
        }
        let stop = match self.finish.as_deref() {
            Some("length") => StopReason::MaxTokens,
            Some("content_filter") => StopReason::Refused,
            _ if self.refused => StopReason::Refused,
            Some("tool_calls" | "function_call") => StopReason::ToolUse,
            _ if !self.calls.is_empty() => StopReason::ToolUse,
            _ => StopReason::EndTurn,
        };
        Ok(Reply {
            text: self.text,
            tool_calls: self.calls,
            stop,
            usage: self.usage,
            request_bytes,
        })
    }
}

impl Wire for OpenAiChat {
    type Decoder = ChatDecoder;

    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn provider(&self) -> &'static str {
        match self.flavor {
            Flavor::OpenAi => "OpenAI",
            Flavor::Compatible => "OpenAI-compatible server",
        }
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

    fn decoder(&self) -> ChatDecoder {
        ChatDecoder {
            provider: Wire::provider(self),
            text: String::new(),
            calls: Vec::new(),
            finish: None,
            refused: false,
            usage: Usage::default(),
        }
    }
}

hosted_model!(OpenAiChat);
