//! The loop detector: a kernel [`Hook`] that notices an actor making the same tool call (same
//! prop, same arguments) turn after turn. At `limit` repeats in a row it tells the actor so; if
//! the actor repeats it once more, it stops the performance.

use async_trait::async_trait;
use improv_kernel::{Between, Control, EventKind, Hook, Message, Outcome, loop_note};
use std::sync::Mutex;

/// The default number of identical calls in a row before the actor is told.
pub const DEFAULT_LIMIT: usize = 3;

/// Stops an actor that repeats itself. One per performance.
pub struct LoopDetector {
    limit: usize,
    /// The repeated calls the actor has been warned about.
    warned: Mutex<Option<String>>,
}

impl LoopDetector {
    /// Warns at `limit` identical calls in a row (at least 2) and stops at `limit + 1`.
    pub fn new(limit: usize) -> Self {
        LoopDetector {
            limit: limit.max(2),
            warned: Mutex::new(None),
        }
    }
}

impl Default for LoopDetector {
    fn default() -> Self {
        LoopDetector::new(DEFAULT_LIMIT)
    }
}

/// A reply's tool calls as one comparable key (see [`loop_note::calls_key`]).
fn key(message: &Message) -> Option<String> {
    let Message::Assistant { tool_calls, .. } = message else {
        return None;
    };
    loop_note::calls_key(tool_calls)
}

#[async_trait]
impl Hook for LoopDetector {
    async fn between_turns(&self, at: &mut Between<'_>) -> Control {
        // The assistant replies, newest first, skipping tool results and notes.
        let mut replies = at
            .conversation
            .iter()
            .rev()
            .filter(|m| matches!(m, Message::Assistant { .. }));
        let Some(last) = replies.next().and_then(key) else {
            return Control::Continue;
        };
        let repeats = 1 + replies
            .take_while(|m| key(m).as_deref() == Some(&last))
            .count();
        // Poisoning needs a panic while holding the lock; the value is still meaningful.
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if repeats < self.limit {
            *warned = None;
            return Control::Continue;
        }
        if warned.as_deref() == Some(last.as_str()) && repeats > self.limit {
            return Control::Stop {
                outcome: Outcome::Stopped,
                reason: format!(
                    "loop detector: the actor made the same call {repeats} times in a row ({}) after being told",
                    clip(&last)
                ),
                budget: None,
            };
        }
        if warned.is_none() {
            // The embedded model reads this note back (`loop_note::warned_calls`) and refuses
            // to make the warned call again.
            let text = loop_note::note(repeats, &clip(&last));
            at.conversation.push(Message::user(text.clone()));
            at.events.push(EventKind::DirectorNote { text });
            *warned = Some(last);
        }
        Control::Continue
    }
}

fn clip(text: &str) -> String {
    const MAX: usize = 200;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use improv_kernel::ToolCall;

    fn reply(name: &str, arguments: &str) -> Message {
        Message::Assistant {
            text: String::new(),
            tool_calls: vec![ToolCall {
                id: "c".into(),
                name: name.into(),
                arguments: arguments.into(),
            }],
        }
    }

    #[test]
    fn calls_compare_by_parsed_arguments() {
        let a = key(&reply("bash", r#"{"command": "ls", "timeout": 5}"#));
        let b = key(&reply("bash", r#"{"timeout":5,"command":"ls"}"#));
        assert_eq!(a, b);
        assert_ne!(a, key(&reply("bash", r#"{"command": "ls -a"}"#)));
        assert_ne!(a, key(&reply("read", r#"{"command": "ls", "timeout": 5}"#)));
        assert_eq!(key(&Message::user("hi")), None);
    }
}
