//! OpenAI Chat Completions streams (`chat.completion.chunk` frames, then `data: [DONE]`), in the
//! shape the API sends with `stream_options.include_usage`: every chunk carries `"usage": null`
//! except a last one with empty `choices` and the usage. Tool-call arguments arrive split across
//! several chunks, addressed by `index`.

use crate::{MockResponse, Turn, pieces};
use serde_json::{Value, json};

fn chunk(turn: &Turn, choices: Value, usage: Value) -> String {
    let v = json!({
        "id": "chatcmpl-mock0001",
        "object": "chat.completion.chunk",
        "created": 1_760_000_000,
        "model": turn.model,
        "system_fingerprint": "fp_mock",
        "choices": choices,
        "usage": usage,
    });
    format!("data: {v}\n\n")
}

fn delta(turn: &Turn, delta: Value, finish: Value) -> String {
    chunk(
        turn,
        json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]),
        Value::Null,
    )
}

/// Every SSE frame of the turn, `data: [DONE]` last. `turn.stop` is a `finish_reason`
/// (`stop`, `tool_calls`, `length`, `content_filter`).
pub fn frames(turn: &Turn) -> Vec<String> {
    let mut out = Vec::new();
    let first_content = if turn.text.is_empty() && !turn.calls.is_empty() {
        Value::Null
    } else {
        json!("")
    };
    out.push(delta(
        turn,
        json!({"role": "assistant", "content": first_content, "refusal": null}),
        Value::Null,
    ));
    for piece in turn.text_pieces() {
        out.push(delta(turn, json!({"content": piece}), Value::Null));
    }
    for (i, call) in turn.calls.iter().enumerate() {
        out.push(delta(
            turn,
            json!({"tool_calls": [{"index": i, "id": call.id, "type": "function",
                "function": {"name": call.name, "arguments": ""}}]}),
            Value::Null,
        ));
        for piece in pieces(&call.arguments, 7) {
            out.push(delta(
                turn,
                json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                Value::Null,
            ));
        }
    }
    let finish = turn.stop.clone().unwrap_or_else(|| {
        if turn.calls.is_empty() {
            "stop".into()
        } else {
            "tool_calls".into()
        }
    });
    out.push(delta(turn, json!({}), json!(finish)));
    out.push(chunk(
        turn,
        json!([]),
        json!({
            "prompt_tokens": turn.input_tokens,
            "completion_tokens": turn.output_tokens,
            "total_tokens": turn.input_tokens + turn.output_tokens,
            "prompt_tokens_details": {"cached_tokens": turn.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        }),
    ));
    out.push("data: [DONE]\n\n".into());
    out
}

/// The turn as a streamed response.
pub fn response(turn: &Turn) -> MockResponse {
    MockResponse::raw_sse(&frames(turn).concat())
}

/// A stream that says `text` and stops.
pub fn text(text: &str) -> MockResponse {
    response(&Turn::text(text))
}

/// A stream that calls tools: `(id, name, arguments JSON)`.
pub fn tool_calls(calls: &[(&str, &str, &str)]) -> MockResponse {
    response(&Turn::calls(calls))
}

/// An error body as the API sends it.
pub fn error(status: u16, message: &str, kind: &str) -> MockResponse {
    MockResponse::json(
        status,
        json!({"error": {"message": message, "type": kind, "param": null, "code": null}}),
    )
}
