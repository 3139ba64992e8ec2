//! Every provider against the mock server with the real HTTP client: streams, tool calls,
//! broken streams, retries and errors, for each of the three wire formats.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_kernel::{
    Message, Model, ModelError, ModelUpdate, Reply, Request, StopReason, ToolCall, ToolSpec,
};
use improv_mock::{MockResponse, MockServer, Turn, anthropic, openai_chat, openai_responses};
use improv_models::{ModelSpec, Prices, resolve_with};
use std::sync::Arc;
use std::time::Duration;

/// One wire format, and how to reach it.
struct Wire {
    provider: &'static str,
    /// Appended to the mock's URL to make the base URL.
    base_suffix: &'static str,
    key_env: &'static str,
    path: &'static str,
    frames: fn(&Turn) -> Vec<String>,
    error: fn(u16, &str, &str) -> MockResponse,
    /// The provider's word for "cut off by the output-token limit".
    cut_off: &'static str,
    /// A malformed frame, in the format's own framing.
    malformed: &'static str,
}

const CHAT: Wire = Wire {
    provider: "openai",
    base_suffix: "/v1",
    key_env: "OPENAI_API_KEY",
    path: "/v1/chat/completions",
    frames: openai_chat::frames,
    error: openai_chat::error,
    cut_off: "length",
    malformed: "data: {\"choices\": [{\"delta\": {\"content\": \"x\"}\n\n",
};

const RESPONSES: Wire = Wire {
    provider: "openai-responses",
    base_suffix: "/v1",
    key_env: "OPENAI_API_KEY",
    path: "/v1/responses",
    frames: openai_responses::frames,
    error: openai_responses::error,
    cut_off: "max_output_tokens",
    malformed: "event: response.output_text.delta\ndata: {\"type\": \"response.output_text.delta\", \"delta\": \n\n",
};

const ANTHROPIC: Wire = Wire {
    provider: "anthropic",
    base_suffix: "",
    key_env: "ANTHROPIC_API_KEY",
    path: "/v1/messages",
    frames: anthropic::frames,
    error: anthropic::error,
    cut_off: "max_tokens",
    malformed: "event: content_block_delta\ndata: {\"type\": \"content_block_delta\", \"index\": 0, \"delta\": {\n\n",
};

impl Wire {
    fn stream(&self, turn: &Turn) -> MockResponse {
        MockResponse::raw_sse(&(self.frames)(turn).concat())
    }

    fn model_with(&self, server: &MockServer, max_retries: Option<u32>) -> Arc<dyn Model> {
        let spec = ModelSpec {
            model: format!("{}/test-model", self.provider),
            base_url: Some(format!("{}{}", server.url(), self.base_suffix)),
            api_key_env: None,
            max_retries,
        };
        let key_env = self.key_env;
        resolve_with(&spec, &Prices::default(), &move |name| {
            (name == key_env).then(|| "sk-test-key".to_string())
        })
        .unwrap()
    }

    fn model(&self, server: &MockServer) -> Arc<dyn Model> {
        self.model_with(server, None)
    }
}

fn read_tool() -> ToolSpec {
    ToolSpec {
        name: "read".into(),
        description: "Read a file.".into(),
        parameters: serde_json::json!({
            "type": "object",
            "properties": {"path": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["path"]
        }),
    }
}

fn conversation() -> Vec<Message> {
    vec![
        Message::user("Fix the build."),
        Message::Assistant {
            text: "Looking.".into(),
            tool_calls: vec![
                ToolCall {
                    id: "call_1".into(),
                    name: "read".into(),
                    arguments: r#"{"path":"src/lib.rs"}"#.into(),
                },
                ToolCall {
                    id: "call_2".into(),
                    name: "read".into(),
                    arguments: r#"{"path":"missing.rs"}"#.into(),
                },
            ],
        },
        Message::Tool {
            call_id: "call_1".into(),
            name: "read".into(),
            content: "fn main() {}".into(),
            is_error: false,
        },
        Message::Tool {
            call_id: "call_2".into(),
            name: "read".into(),
            content: "no such file".into(),
            is_error: true,
        },
        Message::user("Director note: keep it small."),
    ]
}

#[derive(Default)]
struct Seen {
    text: Vec<String>,
    retries: Vec<(u32, Duration, String)>,
}

async fn call(
    model: &dyn Model,
    messages: &[Message],
    max_output_tokens: Option<u32>,
) -> (Result<Reply, ModelError>, Seen) {
    let tools = [read_tool()];
    let request = Request {
        system: "You are a careful engineer.",
        messages,
        tools: &tools,
        max_output_tokens,
    };
    let mut seen = Seen::default();
    let mut update = |u: ModelUpdate<'_>| match u {
        ModelUpdate::Text(t) => seen.text.push(t.to_string()),
        ModelUpdate::Retry {
            attempt,
            delay,
            reason,
        } => seen.retries.push((attempt, delay, reason.to_string())),
    };
    let reply = model.respond(request, &mut update).await;
    (reply, seen)
}

async fn ask(model: &dyn Model) -> (Result<Reply, ModelError>, Seen) {
    call(model, &[Message::user("hi")], None).await
}

// ---- the generic checks, run for each wire format ----

async fn streams_text_and_usage(w: &Wire) {
    let turn = Turn::text("Hello there, director.").usage(100, 7, 40);
    let server = MockServer::start(vec![w.stream(&turn)]).await.unwrap();
    let (reply, seen) = ask(&*w.model(&server)).await;
    let reply = reply.unwrap();
    assert_eq!(reply.text, "Hello there, director.");
    assert!(
        seen.text.len() >= 3,
        "text arrives in pieces: {:?}",
        seen.text
    );
    assert_eq!(seen.text.concat(), reply.text);
    assert_eq!(reply.stop, StopReason::EndTurn);
    assert!(reply.tool_calls.is_empty());
    assert_eq!(reply.usage.input_tokens, 100);
    assert_eq!(reply.usage.cached_input_tokens, 40);
    assert_eq!(reply.usage.output_tokens, 7);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "POST");
    assert_eq!(requests[0].path, w.path);
    assert_eq!(reply.request_bytes, requests[0].body.len() as u64);
}

async fn assembles_parallel_tool_calls_split_across_chunks(w: &Wire) {
    let args_a = r#"{"path":"src/main.rs","limit":200}"#;
    let args_b = r#"{"path":"Cargo.toml"}"#;
    let turn =
        Turn::calls(&[("call_a", "read", args_a), ("call_b", "read", args_b)]).say("Reading both.");
    let server = MockServer::start(vec![w.stream(&turn)]).await.unwrap();
    let (reply, _) = ask(&*w.model(&server)).await;
    let reply = reply.unwrap();
    assert_eq!(reply.text, "Reading both.");
    assert_eq!(reply.stop, StopReason::ToolUse);
    assert_eq!(
        reply.tool_calls,
        vec![
            ToolCall {
                id: "call_a".into(),
                name: "read".into(),
                arguments: args_a.into()
            },
            ToolCall {
                id: "call_b".into(),
                name: "read".into(),
                arguments: args_b.into()
            },
        ]
    );
}

async fn reports_the_output_limit(w: &Wire) {
    let turn = Turn::calls(&[("call_a", "read", r#"{"path":"a"}"#)]).stop(w.cut_off);
    let server = MockServer::start(vec![w.stream(&turn)]).await.unwrap();
    let (reply, _) = ask(&*w.model(&server)).await;
    assert_eq!(reply.unwrap().stop, StopReason::MaxTokens);
}

async fn a_malformed_chunk_is_a_stream_error(w: &Wire) {
    let mut frames = (w.frames)(&Turn::text("one two three"));
    frames.insert(2, w.malformed.to_string());
    let server = MockServer::start(vec![MockResponse::raw_sse(&frames.concat())])
        .await
        .unwrap();
    let (reply, _) = ask(&*w.model(&server)).await;
    match reply {
        Err(ModelError::Stream(m)) => assert!(m.contains("malformed"), "{m}"),
        other => panic!("expected a stream error, got {other:?}"),
    }
}

async fn a_stream_without_its_final_event_is_an_error(w: &Wire) {
    let mut frames = (w.frames)(&Turn::text("one two three"));
    frames.pop();
    let server = MockServer::start(vec![MockResponse::raw_sse(&frames.concat())])
        .await
        .unwrap();
    let (reply, seen) = ask(&*w.model(&server)).await;
    match reply {
        Err(ModelError::Stream(m)) => assert!(m.contains("without its final"), "{m}"),
        other => panic!("expected a stream error, got {other:?}"),
    }
    assert!(
        !seen.text.is_empty(),
        "text was streamed before the stream ended"
    );
}

async fn a_connection_cut_mid_stream_is_an_error_and_not_retried(w: &Wire) {
    let frames = (w.frames)(&Turn::text("one two three four"));
    let server = MockServer::start(vec![
        MockResponse::raw_sse(&frames[..4].concat()).cut(),
        w.stream(&Turn::text("should not be asked for")),
    ])
    .await
    .unwrap();
    let (reply, seen) = ask(&*w.model(&server)).await;
    match reply {
        Err(ModelError::Stream(m)) => assert!(m.contains("broke"), "{m}"),
        other => panic!("expected a stream error, got {other:?}"),
    }
    assert!(seen.retries.is_empty());
    assert_eq!(server.requests().len(), 1);
}

async fn retries_429_honouring_retry_after(w: &Wire) {
    let server = MockServer::start(vec![
        (w.error)(429, "Rate limit reached", "rate_limit_error").header("retry-after", "0"),
        w.stream(&Turn::text("done")),
    ])
    .await
    .unwrap();
    let (reply, seen) = ask(&*w.model(&server)).await;
    assert_eq!(reply.unwrap().text, "done");
    assert_eq!(seen.retries.len(), 1);
    let (attempt, delay, reason) = &seen.retries[0];
    assert_eq!(*attempt, 1);
    assert_eq!(*delay, Duration::ZERO, "Retry-After: 0 is honoured");
    assert!(
        reason.contains("429") && reason.contains("Rate limit reached"),
        "{reason}"
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].body, requests[1].body,
        "the same request is sent again"
    );
}

async fn retries_500_then_succeeds(w: &Wire) {
    let server = MockServer::start(vec![
        (w.error)(500, "The server had an error", "server_error").header("retry-after", "0"),
        (w.error)(529, "Overloaded", "overloaded_error").header("retry-after", "0"),
        w.stream(&Turn::text("recovered")),
    ])
    .await
    .unwrap();
    let (reply, seen) = ask(&*w.model(&server)).await;
    assert_eq!(reply.unwrap().text, "recovered");
    let attempts: Vec<u32> = seen.retries.iter().map(|r| r.0).collect();
    assert_eq!(attempts, vec![1, 2]);
    assert!(seen.retries[0].2.contains("500"));
    assert!(seen.retries[1].2.contains("529"));
    assert_eq!(server.requests().len(), 3);
}

async fn gives_up_after_max_retries(w: &Wire) {
    let server = MockServer::start(vec![
        (w.error)(503, "busy", "server_error").header("retry-after", "0"),
        (w.error)(503, "still busy", "server_error").header("retry-after", "0"),
    ])
    .await
    .unwrap();
    let (reply, seen) = ask(&*w.model_with(&server, Some(1))).await;
    match reply {
        Err(ModelError::Unavailable(m)) => {
            assert!(
                m.contains("503") && m.contains("still busy") && m.contains("max_retries"),
                "{m}"
            )
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert_eq!(seen.retries.len(), 1);
    assert_eq!(server.requests().len(), 2);
}

async fn rejects_a_bad_key_naming_the_variable(w: &Wire) {
    let server = MockServer::start(vec![(w.error)(
        401,
        "Incorrect API key provided",
        "authentication_error",
    )])
    .await
    .unwrap();
    let (reply, seen) = ask(&*w.model(&server)).await;
    match reply {
        Err(ModelError::Auth(m)) => {
            assert!(m.contains(w.key_env), "{m}");
            assert!(m.contains("HTTP 401: Incorrect API key provided"), "{m}");
        }
        other => panic!("expected an auth error, got {other:?}"),
    }
    assert!(seen.retries.is_empty());
    assert_eq!(server.requests().len(), 1);
}

async fn names_the_model_and_url_on_404(w: &Wire) {
    let server = MockServer::start(vec![(w.error)(
        404,
        "The model does not exist",
        "not_found_error",
    )])
    .await
    .unwrap();
    let (reply, _) = ask(&*w.model(&server)).await;
    match reply {
        Err(ModelError::NotFound(m)) => {
            assert!(m.contains(&format!("{}/test-model", w.provider)), "{m}");
            assert!(m.contains(&format!("{}{}", server.url(), w.path)), "{m}");
            assert!(m.contains("The model does not exist"), "{m}");
        }
        other => panic!("expected not found, got {other:?}"),
    }
}

async fn passes_on_the_message_of_a_400(w: &Wire) {
    let server = MockServer::start(vec![(w.error)(
        400,
        "messages: field required",
        "invalid_request_error",
    )])
    .await
    .unwrap();
    let (reply, _) = ask(&*w.model(&server)).await;
    match reply {
        Err(ModelError::Invalid(m)) => assert!(m.contains("messages: field required"), "{m}"),
        other => panic!("expected invalid, got {other:?}"),
    }
    assert_eq!(server.requests().len(), 1);
}

async fn retries_connect_errors_then_says_where(w: &Wire) {
    // A port nobody listens on: bind, note it, close.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let spec = ModelSpec {
        model: format!("{}/test-model", w.provider),
        base_url: Some(format!("http://{addr}{}", w.base_suffix)),
        api_key_env: None,
        max_retries: Some(1),
    };
    let key_env = w.key_env;
    let model = resolve_with(&spec, &Prices::default(), &move |n| {
        (n == key_env).then(|| "k".into())
    })
    .unwrap();
    let (reply, seen) = ask(&*model).await;
    match reply {
        Err(ModelError::Connect(m)) => assert!(m.contains(&addr.to_string()), "{m}"),
        other => panic!("expected a connect error, got {other:?}"),
    }
    assert_eq!(seen.retries.len(), 1);
}

/// MCP props are named `server.tool`; providers accept no dots. The name goes out spelled
/// `server__tool` (in the tool list and in the history) and comes back as the real name.
async fn dotted_prop_names_are_mapped_on_the_wire_and_back(w: &Wire) {
    let turn = Turn::calls(&[("call_a", "fs__read_file", r#"{"path":"a.txt"}"#)]);
    let server = MockServer::start(vec![w.stream(&turn)]).await.unwrap();
    let model = w.model(&server);
    let tools = [ToolSpec {
        name: "fs.read_file".into(),
        ..read_tool()
    }];
    let history = [
        Message::user("read a.txt"),
        Message::Assistant {
            text: String::new(),
            tool_calls: vec![ToolCall {
                id: "call_0".into(),
                name: "fs.read_file".into(),
                arguments: r#"{"path":"b.txt"}"#.into(),
            }],
        },
        Message::Tool {
            call_id: "call_0".into(),
            name: "fs.read_file".into(),
            content: "b".into(),
            is_error: false,
        },
    ];
    let request = Request {
        system: "s",
        messages: &history,
        tools: &tools,
        max_output_tokens: None,
    };
    let reply = model.respond(request, &mut |_| {}).await.unwrap();
    assert_eq!(reply.tool_calls[0].name, "fs.read_file");
    let body = String::from_utf8_lossy(&server.requests()[0].body).to_string();
    assert!(!body.contains("fs.read_file"), "{body}");
    assert!(body.matches("fs__read_file").count() >= 2, "{body}");
}

macro_rules! for_each_wire {
    ($($check:ident),* $(,)?) => {
        $(
            mod $check {
                #[tokio::test]
                async fn openai_chat() {
                    super::$check(&super::CHAT).await
                }
                #[tokio::test]
                async fn openai_responses() {
                    super::$check(&super::RESPONSES).await
                }
                #[tokio::test]
                async fn anthropic() {
                    super::$check(&super::ANTHROPIC).await
                }
            }
        )*
    };
}

for_each_wire!(
    streams_text_and_usage,
    assembles_parallel_tool_calls_split_across_chunks,
    reports_the_output_limit,
    a_malformed_chunk_is_a_stream_error,
    a_stream_without_its_final_event_is_an_error,
    a_connection_cut_mid_stream_is_an_error_and_not_retried,
    retries_429_honouring_retry_after,
    retries_500_then_succeeds,
    gives_up_after_max_retries,
    rejects_a_bad_key_naming_the_variable,
    names_the_model_and_url_on_404,
    passes_on_the_message_of_a_400,
    retries_connect_errors_then_says_where,
    dotted_prop_names_are_mapped_on_the_wire_and_back,
);

// ---- the request each wire format sends ----

#[tokio::test]
async fn chat_request_has_the_wire_shape() {
    let server = MockServer::start(vec![CHAT.stream(&Turn::text("ok"))])
        .await
        .unwrap();
    let (reply, _) = call(&*CHAT.model(&server), &conversation(), Some(512)).await;
    reply.unwrap();
    let r = &server.requests()[0];
    assert_eq!(r.header("authorization"), Some("Bearer sk-test-key"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let body = r.json().unwrap();
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    assert_eq!(body["max_completion_tokens"], 512);
    let roles: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles,
        ["system", "user", "assistant", "tool", "tool", "user"]
    );
    assert_eq!(
        body["messages"][0]["content"],
        "You are a careful engineer."
    );
    let assistant = &body["messages"][2];
    assert_eq!(assistant["content"], "Looking.");
    assert_eq!(assistant["tool_calls"][0]["id"], "call_1");
    assert_eq!(assistant["tool_calls"][0]["type"], "function");
    assert_eq!(assistant["tool_calls"][0]["function"]["name"], "read");
    assert_eq!(
        assistant["tool_calls"][1]["function"]["arguments"],
        r#"{"path":"missing.rs"}"#
    );
    assert_eq!(body["messages"][3]["tool_call_id"], "call_1");
    assert_eq!(body["messages"][3]["content"], "fn main() {}");
    assert_eq!(body["messages"][4]["tool_call_id"], "call_2");
    assert_eq!(body["tools"][0]["type"], "function");
    assert_eq!(
        body["tools"][0]["function"]["parameters"],
        read_tool().parameters
    );
}

#[tokio::test]
async fn responses_request_has_the_wire_shape() {
    let server = MockServer::start(vec![RESPONSES.stream(&Turn::text("ok"))])
        .await
        .unwrap();
    let (reply, _) = call(&*RESPONSES.model(&server), &conversation(), Some(300)).await;
    reply.unwrap();
    let r = &server.requests()[0];
    assert_eq!(r.header("authorization"), Some("Bearer sk-test-key"));
    let body = r.json().unwrap();
    assert_eq!(body["instructions"], "You are a careful engineer.");
    assert_eq!(body["store"], false);
    assert_eq!(body["stream"], true);
    assert_eq!(body["max_output_tokens"], 300);
    let input = body["input"].as_array().unwrap();
    let kinds: Vec<&str> = input.iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "message",
            "message",
            "function_call",
            "function_call",
            "function_call_output",
            "function_call_output",
            "message"
        ]
    );
    assert_eq!(input[1]["role"], "assistant");
    assert_eq!(input[2]["call_id"], "call_1");
    assert_eq!(input[2]["arguments"], r#"{"path":"src/lib.rs"}"#);
    assert_eq!(input[5]["call_id"], "call_2");
    assert_eq!(input[5]["output"], "no such file");
    let tool = &body["tools"][0];
    assert_eq!(tool["type"], "function");
    assert_eq!(tool["name"], "read");
    assert_eq!(tool["strict"], false);
    assert_eq!(tool["parameters"], read_tool().parameters);
}

#[tokio::test]
async fn anthropic_request_groups_tool_results_and_caches_the_prefix() {
    let server = MockServer::start(vec![ANTHROPIC.stream(&Turn::text("ok"))])
        .await
        .unwrap();
    let (reply, _) = call(&*ANTHROPIC.model(&server), &conversation(), None).await;
    reply.unwrap();
    let r = &server.requests()[0];
    assert_eq!(r.header("x-api-key"), Some("sk-test-key"));
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(r.header("authorization"), None);
    let body = r.json().unwrap();
    assert_eq!(
        body["max_tokens"], 8192,
        "max_tokens is required; the default fills in"
    );
    assert_eq!(body["system"][0]["text"], "You are a careful engineer.");
    assert_eq!(body["system"][0]["cache_control"]["type"], "ephemeral");
    let messages = body["messages"].as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user"]);
    let assistant = messages[1]["content"].as_array().unwrap();
    assert_eq!(
        assistant[0],
        serde_json::json!({"type": "text", "text": "Looking."})
    );
    assert_eq!(assistant[1]["type"], "tool_use");
    assert_eq!(assistant[1]["id"], "call_1");
    assert_eq!(
        assistant[1]["input"],
        serde_json::json!({"path": "src/lib.rs"})
    );
    let results = messages[2]["content"].as_array().unwrap();
    assert_eq!(
        results.len(),
        3,
        "both tool results and the note share one user message"
    );
    assert_eq!(results[0]["type"], "tool_result");
    assert_eq!(results[0]["tool_use_id"], "call_1");
    assert!(results[0].get("is_error").is_none());
    assert_eq!(results[1]["tool_use_id"], "call_2");
    assert_eq!(results[1]["is_error"], true);
    assert_eq!(results[2]["text"], "Director note: keep it small.");
    assert_eq!(results[2]["cache_control"]["type"], "ephemeral");
    assert_eq!(body["tools"][0]["input_schema"], read_tool().parameters);
}

#[tokio::test]
async fn a_compatible_server_needs_no_key() {
    let server = MockServer::start(vec![CHAT.stream(&Turn::text("local reply"))])
        .await
        .unwrap();
    let spec = ModelSpec {
        model: "compatible/qwen3".into(),
        base_url: Some(format!("{}/v1", server.url())),
        ..Default::default()
    };
    let model = resolve_with(&spec, &Prices::default(), &|_| None).unwrap();
    let (reply, _) = call(&*model, &[Message::user("hi")], Some(64)).await;
    assert_eq!(reply.unwrap().text, "local reply");
    let r = &server.requests()[0];
    assert_eq!(r.header("authorization"), None);
    let body = r.json().unwrap();
    assert_eq!(body["model"], "qwen3");
    assert_eq!(body["max_tokens"], 64, "compatible servers get max_tokens");
    assert!(body.get("max_completion_tokens").is_none());
}

#[tokio::test]
async fn keep_alive_reuses_one_connection_across_turns() {
    let server = MockServer::start(vec![
        CHAT.stream(&Turn::text("one")),
        CHAT.stream(&Turn::text("two")),
    ])
    .await
    .unwrap();
    let model = CHAT.model(&server);
    assert_eq!(ask(&*model).await.0.unwrap().text, "one");
    assert_eq!(ask(&*model).await.0.unwrap().text, "two");
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[1].arrived >= requests[0].answered.unwrap());
}

#[tokio::test]
async fn an_error_event_mid_stream_is_reported() {
    let mut frames = anthropic::frames(&Turn::text("partial words here"));
    frames.truncate(4);
    frames.push(anthropic::error_frame("Overloaded", "overloaded_error"));
    let server = MockServer::start(vec![MockResponse::raw_sse(&frames.concat())])
        .await
        .unwrap();
    let (reply, _) = ask(&*ANTHROPIC.model(&server)).await;
    match reply {
        Err(ModelError::Unavailable(m)) => assert!(
            m.contains("overloaded_error") && m.contains("Overloaded"),
            "{m}"
        ),
        other => panic!("expected unavailable, got {other:?}"),
    }
}
