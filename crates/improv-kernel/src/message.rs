//! The provider-neutral messages of a conversation between an actor and its model.

use serde::{Deserialize, Serialize};

/// One message of a conversation. The system prompt is not a message: it is sent with every
/// request as its stable prefix (see [`crate::Request`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    /// The director speaking: the intent, a director note, a feedback verdict.
    User {
        /// What the director said, as the model reads it.
        text: String,
    },
    /// What the model said, and the props it asked to use.
    Assistant {
        /// The reply's text; empty when the model only called props.
        #[serde(default)]
        text: String,
        /// The prop calls of the reply, in the order the model wrote them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    /// The result of one tool call, sent back to the model.
    Tool {
        /// Id of the [`ToolCall`] this answers.
        call_id: String,
        /// Name of the prop that was called.
        name: String,
        /// The prop's output, or its error, exactly as the model is sent it.
        content: String,
        /// Whether `content` is an error (the call was denied, failed, or its arguments were bad).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
}

impl Message {
    /// A [`Message::User`] holding `text`: how the intent and director notes enter the
    /// conversation.
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
    /// Id the model gave the call; the [`Message::Tool`] with its result carries the same id.
    pub id: String,
    /// Name of the prop to call, as its [`ToolSpec`] says.
    pub name: String,
    /// The arguments as JSON text, unparsed.
    pub arguments: String,
}

/// What a model is told about a prop: its name, a one-line description and a JSON Schema of its
/// arguments. Every byte of it is sent on every turn, so keep all three short.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Name the model calls the prop by; unique among an actor's props.
    pub name: String,
    /// What the prop does, in one line the model reads.
    pub description: String,
    /// JSON Schema of the arguments (an `object` schema).
    pub parameters: serde_json::Value,
}
