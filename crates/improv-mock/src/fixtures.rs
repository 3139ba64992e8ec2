//! Literal recorded-shape streams, kept byte for byte as the APIs send them (ids, extra fields
//! and all), so providers are also tested against input no builder of ours produced.

/// OpenAI Chat Completions: two tool calls, arguments split across chunks, usage last.
pub const OPENAI_CHAT_TOOL_CALLS: &str = include_str!("../fixtures/openai_chat_tool_calls.sse");
/// OpenAI Responses: a reasoning item, then one function call, then `response.completed`.
pub const OPENAI_RESPONSES_FUNCTION_CALL: &str =
    include_str!("../fixtures/openai_responses_function_call.sse");
/// Anthropic Messages: text, then a `tool_use` block with `input_json_delta`s.
pub const ANTHROPIC_TOOL_USE: &str = include_str!("../fixtures/anthropic_tool_use.sse");
