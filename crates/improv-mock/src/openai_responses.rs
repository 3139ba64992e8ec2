//! OpenAI Responses API streams: `response.created`, `response.in_progress`, output items
//! (`response.output_item.added`, `response.output_text.delta`,
//! `response.function_call_arguments.delta` / `.done`, `response.output_item.done`) and a
//! terminal `response.completed` (or `response.incomplete`) carrying the usage. Every event has
//! a `sequence_number`; there is no `[DONE]`.

use crate::{MockResponse, Turn, pieces};
use serde_json::{Value, json};

struct Frames {
    out: Vec<String>,
    seq: u64,
}

impl Frames {
    fn push(&mut self, event: &str, mut data: Value) {
        if let Some(obj) = data.as_object_mut() {
            obj.insert("type".into(), json!(event));
            obj.insert("sequence_number".into(), json!(self.seq));
        }
        self.seq += 1;
        self.out.push(format!("event: {event}\ndata: {data}\n\n"));
    }
}

fn response_object(
    turn: &Turn,
    status: &str,
    output: Value,
    usage: Value,
    incomplete: Value,
) -> Value {
    json!({
        "id": "resp_mock0001", "object": "response", "created_at": 1_760_000_000,
        "status": status, "model": turn.model, "output": output, "usage": usage,
        "incomplete_details": incomplete, "error": null,
    })
}

/// Every SSE frame of the turn, the terminal event last. `turn.stop`, when set, is the reason
/// of an incomplete response (`max_output_tokens`, `content_filter`).
pub fn frames(turn: &Turn) -> Vec<String> {
    let mut f = Frames {
        out: Vec::new(),
        seq: 0,
    };
    let pending = response_object(turn, "in_progress", json!([]), Value::Null, Value::Null);
    f.push("response.created", json!({"response": pending}));
    f.push("response.in_progress", json!({"response": pending}));
    let mut output = Vec::new();
    if !turn.text.is_empty() {
        let index = output.len();
        let id = "msg_mock0001";
        f.push(
            "response.output_item.added",
            json!({"output_index": index, "item": {"id": id, "type": "message",
                "status": "in_progress", "content": [], "role": "assistant"}}),
        );
        f.push(
            "response.content_part.added",
            json!({"item_id": id, "output_index": index, "content_index": 0,
                "part": {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}}),
        );
        for piece in turn.text_pieces() {
            f.push(
                "response.output_text.delta",
                json!({"item_id": id, "output_index": index, "content_index": 0,
                    "delta": piece, "logprobs": []}),
            );
        }
        f.push(
            "response.output_text.done",
            json!({"item_id": id, "output_index": index, "content_index": 0,
                "text": turn.text, "logprobs": []}),
        );
        let part =
            json!({"type": "output_text", "annotations": [], "logprobs": [], "text": turn.text});
        f.push(
            "response.content_part.done",
            json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
        );
        let item = json!({"id": id, "type": "message", "status": "completed",
            "content": [part], "role": "assistant"});
        f.push(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        output.push(item);
    }
    for (i, call) in turn.calls.iter().enumerate() {
        let index = output.len();
        let id = format!("fc_mock{i:04}");
        f.push(
            "response.output_item.added",
            json!({"output_index": index, "item": {"id": id, "type": "function_call",
                "status": "in_progress", "arguments": "", "call_id": call.id, "name": call.name}}),
        );
        for piece in pieces(&call.arguments, 7) {
            f.push(
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": index, "delta": piece}),
            );
        }
        f.push(
            "response.function_call_arguments.done",
            json!({"item_id": id, "output_index": index, "arguments": call.arguments}),
        );
        let item = json!({"id": id, "type": "function_call", "status": "completed",
            "arguments": call.arguments, "call_id": call.id, "name": call.name});
        f.push(
            "response.output_item.done",
            json!({"output_index": index, "item": item}),
        );
        output.push(item);
    }
    let usage = json!({
        "input_tokens": turn.input_tokens,
        "input_tokens_details": {"cached_tokens": turn.cached_tokens},
        "output_tokens": turn.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": turn.input_tokens + turn.output_tokens,
    });
    match &turn.stop {
        None => f.push(
            "response.completed",
            json!({"response": response_object(turn, "completed", json!(output), usage, Value::Null)}),
        ),
        Some(reason) => f.push(
            "response.incomplete",
            json!({"response": response_object(turn, "incomplete", json!(output), usage,
                json!({"reason": reason}))}),
        ),
    }
    f.out
}

/// The turn as a streamed response.
pub fn response(turn: &Turn) -> MockResponse {
    MockResponse::raw_sse(&frames(turn).concat())
}

/// A stream that says `text` and completes.
pub fn text(text: &str) -> MockResponse {
    response(&Turn::text(text))
}

/// A stream that calls tools: `(call_id, name, arguments JSON)`.
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
