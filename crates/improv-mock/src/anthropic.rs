//! Anthropic Messages streams: `message_start` (with input usage), content blocks
//! (`content_block_start`, `content_block_delta` with `text_delta` or `input_json_delta`,
//! `content_block_stop`), `message_delta` (with `stop_reason` and output usage) and
//! `message_stop`. Every frame names its event, as the API does.

use crate::{MockResponse, Turn, pieces};
use serde_json::{Value, json};

fn frame(event: &str, data: Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

/// Every SSE frame of the turn, `message_stop` last. `turn.stop` is a `stop_reason`
/// (`end_turn`, `tool_use`, `max_tokens`, `refusal`). The turn's input tokens are split the
/// way the API reports them: `input_tokens` excludes `cache_read_input_tokens`.
pub fn frames(turn: &Turn) -> Vec<String> {
    let mut out = Vec::new();
    out.push(frame(
        "message_start",
        json!({"type": "message_start", "message": {
            "id": "msg_mock0001", "type": "message", "role": "assistant", "model": turn.model,
            "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {
                "input_tokens": turn.input_tokens.saturating_sub(turn.cached_tokens),
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": turn.cached_tokens,
                "output_tokens": 1,
            }
        }}),
    ));
    out.push(frame("ping", json!({"type": "ping"})));
    let mut index = 0;
    if !turn.text.is_empty() {
        out.push(frame(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "text", "text": ""}}),
        ));
        for piece in turn.text_pieces() {
            out.push(frame(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "text_delta", "text": piece}}),
            ));
        }
        out.push(frame(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    for call in &turn.calls {
        out.push(frame(
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
                "content_block": {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}}),
        ));
        for piece in std::iter::once("").chain(pieces(&call.arguments, 9)) {
            out.push(frame(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
        out.push(frame(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    let stop = turn.stop.clone().unwrap_or_else(|| {
        if turn.calls.is_empty() {
            "end_turn".into()
        } else {
            "tool_use".into()
        }
    });
    out.push(frame(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
            "usage": {"output_tokens": turn.output_tokens}}),
    ));
    out.push(frame("message_stop", json!({"type": "message_stop"})));
    out
}

/// The turn as a streamed response.
pub fn response(turn: &Turn) -> MockResponse {
    MockResponse::raw_sse(&frames(turn).concat())
}

/// A stream that says `text` and ends its turn.
pub fn text(text: &str) -> MockResponse {
    response(&Turn::text(text))
}

/// A stream that calls tools: `(id, name, arguments JSON)`.
pub fn tool_calls(calls: &[(&str, &str, &str)]) -> MockResponse {
    response(&Turn::calls(calls))
}

/// An error body as the API sends it (`authentication_error`, `not_found_error`,
/// `rate_limit_error`, `overloaded_error`, `invalid_request_error`…).
pub fn error(status: u16, message: &str, kind: &str) -> MockResponse {
    MockResponse::json(
        status,
        json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}

/// An `error` event in the middle of a stream, as the API sends when it overloads mid-reply.
pub fn error_frame(message: &str, kind: &str) -> String {
    frame(
        "error",
        json!({"type": "error", "error": {"type": kind, "message": message}}),
    )
}
