//! The provider-neutral messages of a conversation between an actor and its model.

use serde::{Deserialize, Serialize};

/// One message of a conversation. The system prompt is not a message: it is sent with every
/// request as its stable prefix (see [`crate::Request`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    /// The director speaking: the intent, a director note, a feedback verdict.
    User { text: String },
    /// What the model said, and the props it asked to use.
    Assistant {
        #[serde(default)]
        text: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call, sent back to the model.
    Tool {
        call_id: String,
        name: String,
        content: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
}

impl Message {
    pub fn user(text: impl Into<String>) -> Self {
        Message::User { text: text.into() }
    }

    /// The length of the text this message carries, a cheap proxy for its size in tokens.
    pub fn text_len(&self) -> usize {
        match self {
            Message::User { text } => text.len(),
            Message::Assistant { text, tool_calls } => {
                text.len()
                    + tool_calls
                        .iter()
                        .map(|c| c.name.len() + c.arguments.len())
                        .sum::<usize>()
            }
            Message::Tool { content, .. } => content.len(),
        }
    }
}

/// A model's request to use a prop. `arguments` is the JSON text exactly as the model wrote it:
/// it is parsed by the kernel right before the call, so a malformed one becomes a tool error the
/// model can correct rather than a crash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

/// What a model is told about a prop: its name, a one-line description and a JSON Schema of its
/// arguments. Every byte of it is sent on every turn, so keep all three short.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: serde_json::Value,
}
