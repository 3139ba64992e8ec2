//! The literal recorded streams in improv-mock's fixtures, read by the real providers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_kernel::{Message, ModelUpdate, Reply, Request, StopReason};
use improv_mock::{MockResponse, MockServer, fixtures};
use improv_models::{ModelSpec, Prices, resolve_with};

async fn replay(provider: &str, base_suffix: &str, stream: &str) -> (Reply, Vec<String>) {
    let server = MockServer::start(vec![MockResponse::raw_sse(stream)])
        .await
        .unwrap();
    let spec = ModelSpec {
        model: format!("{provider}/recorded"),
        base_url: Some(format!("{}{base_suffix}", server.url())),
        ..Default::default()
    };
    let model = resolve_with(&spec, &Prices::default(), &|_| Some("k".into())).unwrap();
    let messages = [Message::user("look at the manifest")];
    let request = Request {
        system: "s",
        messages: &messages,
        tools: &[],
        max_output_tokens: None,
    };
    let mut text = Vec::new();
    let reply = model
        .respond(request, &mut |u: ModelUpdate<'_>| {
            if let ModelUpdate::Text(t) = u {
                text.push(t.to_string())
            }
        })
        .await
        .unwrap();
    (reply, text)
}

#[tokio::test]
async fn openai_chat_recording() {
    let (reply, _) = replay("openai", "/v1", fixtures::OPENAI_CHAT_TOOL_CALLS).await;
    assert_eq!(reply.stop, StopReason::ToolUse);
    assert_eq!(reply.tool_calls.len(), 2);
    assert_eq!(reply.tool_calls[0].id, "call_Vq3hYJ0w8pK2cXlT5nR9sD1e");
    assert_eq!(reply.tool_calls[0].arguments, r#"{"path":"Cargo.toml"}"#);
    assert_eq!(reply.tool_calls[1].name, "grep");
    assert_eq!(reply.tool_calls[1].arguments, r#"{"pattern":"fn main"}"#);
    assert_eq!(reply.usage.input_tokens, 1463);
    assert_eq!(reply.usage.cached_input_tokens, 1280);
    assert_eq!(reply.usage.output_tokens, 250);
}

#[tokio::test]
async fn openai_responses_recording() {
    let (reply, _) = replay(
        "openai-responses",
        "/v1",
        fixtures::OPENAI_RESPONSES_FUNCTION_CALL,
    )
    .await;
    assert_eq!(reply.stop, StopReason::ToolUse);
    assert_eq!(
        reply.tool_calls.len(),
        1,
        "the reasoning item is not a call"
    );
    assert_eq!(reply.tool_calls[0].id, "call_uM1x9bQ2kW7pT4zL0aR6sN3e");
    assert_eq!(reply.tool_calls[0].arguments, r#"{"path":"Cargo.toml"}"#);
    assert_eq!(reply.usage.input_tokens, 1320);
    assert_eq!(reply.usage.cached_input_tokens, 1024);
    assert_eq!(reply.usage.output_tokens, 87);
}

#[tokio::test]
async fn anthropic_recording() {
    let (reply, text) = replay("anthropic", "", fixtures::ANTHROPIC_TOOL_USE).await;
    assert_eq!(text, ["I'll check", " the manifest."]);
    assert_eq!(reply.text, "I'll check the manifest.");
    assert_eq!(reply.stop, StopReason::ToolUse);
    assert_eq!(reply.tool_calls[0].id, "toolu_01T1x1fJ34qAmk2tNTrN7Up6");
    assert_eq!(reply.tool_calls[0].arguments, r#"{"path": "Cargo.toml"}"#);
    // 472 fresh + 2048 read from the cache.
    assert_eq!(reply.usage.input_tokens, 2520);
    assert_eq!(reply.usage.cached_input_tokens, 2048);
    assert_eq!(reply.usage.output_tokens, 71);
}
