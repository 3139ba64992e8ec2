//! A scripted model that replays turns deterministically: the kernel's tests, and anyone who
//! wants to rehearse a stage without a model, drive the real loop with it.

use crate::message::{Message, ToolCall};
use crate::model::{Model, ModelError, ModelUpdate, Price, Reply, Request, StopReason, Usage};
use async_trait::async_trait;
use serde::Deserialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// One scripted reply. In a script file (JSON), a turn reads
/// `{"say": "…", "calls": [{"name": "read", "arguments": {"path": "a.txt"}}]}`; `"stop":
/// "max_tokens"` cuts it off, `"error": "…"` fails the call, `"delay_ms"` makes it slow.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedTurn {
    /// The reply's text, streamed word by word.
    #[serde(default)]
    pub say: String,
    /// The prop calls of the reply, in order; their ids are `call_N_I` (call N, position I).
    #[serde(default)]
    pub calls: Vec<ScriptedCall>,
    /// Why the reply stops; by default `end_turn` without calls and `tool_use` with them.
    #[serde(default)]
    pub stop: Option<StopReason>,
    /// When set, the model call fails as unavailable with this message instead of replying.
    #[serde(default)]
    pub error: Option<String>,
    /// How long the reply takes before it starts, in milliseconds (0: at once).
    #[serde(default)]
    pub delay_ms: u64,
}

/// A scripted tool call. `arguments` is usually a JSON object; a string is sent verbatim, so a
/// script can send malformed JSON.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedCall {
    /// Name of the prop to call.
    pub name: String,
    /// The call's arguments; `null` (absent) sends `{}`.
    #[serde(default)]
    pub arguments: serde_json::Value,
}

impl ScriptedTurn {
    /// A reply in text only: the actor ends its turn.
    pub fn say(text: impl Into<String>) -> Self {
        ScriptedTurn {
            say: text.into(),
            ..Default::default()
        }
    }
    /// A reply that calls one prop.
    pub fn call(name: &str, arguments: serde_json::Value) -> Self {
        ScriptedTurn::default().and_call(name, arguments)
    }
    /// Adds another call to the same reply.
    pub fn and_call(mut self, name: &str, arguments: serde_json::Value) -> Self {
        self.calls.push(ScriptedCall {
            name: name.into(),
            arguments,
        });
        self
    }
    /// Marks the reply as cut off by the output-token limit.
    pub fn cut_off(mut self) -> Self {
        self.stop = Some(StopReason::MaxTokens);
        self
    }
    /// Makes the model call fail with this message.
    pub fn fails(message: impl Into<String>) -> Self {
        ScriptedTurn {
            error: Some(message.into()),
            ..Default::default()
        }
    }
    /// Makes the reply take this long.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay_ms = delay.as_millis() as u64;
        self
    }
}

/// Replays [`ScriptedTurn`]s in order and records every request it was sent.
pub struct ScriptedModel {
    name: String,
    turns: Mutex<VecDeque<ScriptedTurn>>,
    seen: Mutex<Vec<Vec<Message>>>,
    offered: Mutex<Vec<usize>>,
    price: Option<Price>,
    calls: Mutex<u64>,
}

impl ScriptedModel {
    /// A model named `scripted/test` that replies with `turns` in order, then fails: a
    /// script that runs out is an error, not a silent end.
    pub fn new(turns: impl IntoIterator<Item = ScriptedTurn>) -> Self {
        ScriptedModel {
            name: "scripted/test".into(),
            turns: Mutex::new(turns.into_iter().collect()),
            seen: Mutex::new(Vec::new()),
            offered: Mutex::new(Vec::new()),
            price: None,
            calls: Mutex::new(0),
        }
    }

    /// Reads a script: a JSON array of turns.
    pub fn from_json(name: &str, json: &str) -> Result<Self, serde_json::Error> {
        let turns: Vec<ScriptedTurn> = serde_json::from_str(json)?;
        Ok(ScriptedModel {
            name: name.into(),
            ..ScriptedModel::new(turns)
        })
    }

    /// The same model with a price, so its turns cost something (for budget tests).
    pub fn with_price(mut self, price: Price) -> Self {
        self.price = Some(price);
        self
    }

    /// The conversations the model was sent, one per call.
    pub fn requests(&self) -> Vec<Vec<Message>> {
        lock(&self.seen).clone()
    }

    /// How many props each request offered, one per call.
    pub fn tools_offered(&self) -> Vec<usize> {
        lock(&self.offered).clone()
    }

    /// Turns not yet played.
    pub fn remaining(&self) -> usize {
        lock(&self.turns).len()
    }
}

/// Scripted state stays consistent even if a test panicked while holding a lock.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl Model for ScriptedModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn price(&self) -> Option<Price> {
        self.price
    }

    async fn respond(
        &self,
        request: Request<'_>,
        update: &mut (dyn for<'u> FnMut(ModelUpdate<'u>) + Send),
    ) -> Result<Reply, ModelError> {
        lock(&self.seen).push(request.messages.to_vec());
        lock(&self.offered).push(request.tools.len());
        let n = {
            let mut c = lock(&self.calls);
            *c += 1;
            *c
        };
        let turn = lock(&self.turns).pop_front().ok_or_else(|| {
            ModelError::Invalid(format!(
                "the script of {} has no turn {n}: it ran out of replies",
                self.name
            ))
        })?;
        if turn.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(turn.delay_ms)).await;
        }
        if let Some(error) = turn.error {
            return Err(ModelError::Unavailable(error));
        }
        // Stream the text in word-sized pieces, as a provider would.
        for piece in turn.say.split_inclusive(' ') {
            update(ModelUpdate::Text(piece));
        }
        let tool_calls: Vec<ToolCall> = turn
            .calls
            .into_iter()
            .enumerate()
            .map(|(i, c)| ToolCall {
                id: format!("call_{n}_{i}"),
                name: c.name,
                arguments: match c.arguments {
                    serde_json::Value::String(raw) => raw,
                    serde_json::Value::Null => "{}".into(),
                    v => v.to_string(),
                },
            })
            .collect();
        let input_bytes: usize = request.system.len()
            + request
                .messages
                .iter()
                .map(Message::text_len)
                .sum::<usize>();
        let output_bytes =
            turn.say.len() + tool_calls.iter().map(|c| c.arguments.len()).sum::<usize>();
        let stop = turn.stop.unwrap_or(if tool_calls.is_empty() {
            StopReason::EndTurn
        } else {
            StopReason::ToolUse
        });
        Ok(Reply {
            text: turn.say,
            tool_calls,
            stop,
            usage: Usage {
                input_tokens: (input_bytes / 4) as u64 + 1,
                output_tokens: (output_bytes / 4) as u64 + 1,
                cached_input_tokens: 0,
            },
            request_bytes: 0,
        })
    }
}
