//! The loop detector's note, in one place: the edges' loop detector writes it into the
//! conversation when an actor repeats a call, and a model that constrains its own output (the
//! embedded one) reads back from the conversation which call it must not make again. Every model
//! sees the same text; a hosted model reads it as a director note, nothing more.
//!
//! The marker is the note's fixed opening rather than a field on [`crate::Request`]: the note is
//! already in the conversation every model receives, so no request changes shape and no provider
//! sends a byte more. A director who writes the marker by hand only keeps the embedded model from
//! repeating a call, which is harmless.

use crate::message::{Message, ToolCall};

/// How the loop detector's note opens.
pub const MARKER: &str = "[loop detector]";

/// The text of the note telling the actor it made the same call `repeats` times in a row;
/// `call` shows it (see [`calls_key`]).
pub fn note(repeats: usize, call: &str) -> String {
    format!(
        "{MARKER} You have made the same call {repeats} times in a row: {call}. It will not give a different result. Change your approach, or end your turn and say what is blocking you; one more identical call stops the performance."
    )
}

/// Whether `message` is the loop detector's note.
pub fn is_note(message: &Message) -> bool {
    matches!(message, Message::User { text } if text.starts_with(MARKER))
}

/// A reply's tool calls as one comparable key: names and arguments, the arguments parsed so that
/// spacing and key order do not matter. `None` for no calls.
pub fn calls_key(calls: &[ToolCall]) -> Option<String> {
    if calls.is_empty() {
        return None;
    }
    let parts: Vec<String> = calls
        .iter()
        .map(|c| {
            let args = serde_json::from_str::<serde_json::Value>(&c.arguments)
                .map(|v| v.to_string())
                .unwrap_or_else(|_| c.arguments.clone());
            format!("{}({args})", c.name)
        })
        .collect();
    Some(parts.join("; "))
}

/// The calls the newest loop note warned about, while it still holds: the calls of the reply
/// right before that note, unless a reply after it made different calls (then the actor changed
/// course and the warning lapsed, as it does in the detector).
pub fn warned_calls(messages: &[Message]) -> Option<&[ToolCall]> {
    let at = messages.iter().rposition(is_note)?;
    let warned = messages[..at].iter().rev().find_map(|m| match m {
        Message::Assistant { tool_calls, .. } => Some(tool_calls.as_slice()),
        _ => None,
    })?;
    let key = calls_key(warned)?;
    let lapsed = messages[at..].iter().any(|m| match m {
        Message::Assistant { tool_calls, .. } => calls_key(tool_calls).as_ref() != Some(&key),
        _ => false,
    });
    (!lapsed).then_some(warned)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn result() -> Message {
        Message::Tool {
            call_id: "c".into(),
            name: "bash".into(),
            content: "same".into(),
            is_error: false,
        }
    }

    fn key_of(message: &Message) -> Option<String> {
        match message {
            Message::Assistant { tool_calls, .. } => calls_key(tool_calls),
            _ => None,
        }
    }

    #[test]
    fn calls_compare_by_parsed_arguments() {
        let a = key_of(&reply("bash", r#"{"command": "ls", "timeout": 5}"#));
        let b = key_of(&reply("bash", r#"{"timeout":5,"command":"ls"}"#));
        assert_eq!(a, b);
        assert_ne!(a, key_of(&reply("bash", r#"{"command": "ls -a"}"#)));
        assert_ne!(
            a,
            key_of(&reply("read", r#"{"command": "ls", "timeout": 5}"#))
        );
        assert_eq!(calls_key(&[]), None);
    }

    #[test]
    fn the_warned_call_is_the_reply_before_the_note_until_the_actor_changes_course() {
        let ls = reply("bash", r#"{"command": "ls"}"#);
        let mut talk = vec![
            Message::user("go"),
            ls.clone(),
            result(),
            ls.clone(),
            result(),
        ];
        assert_eq!(warned_calls(&talk), None, "no note yet");
        talk.push(Message::user(note(2, "bash({\"command\":\"ls\"})")));
        let warned = warned_calls(&talk).map(calls_key);
        assert_eq!(warned, Some(key_of(&ls)));
        // Repeating it anyway keeps the warning; a different call ends it.
        talk.extend([ls.clone(), result()]);
        assert_eq!(warned_calls(&talk).map(calls_key), Some(key_of(&ls)));
        talk.extend([reply("bash", r#"{"command": "pwd"}"#), result()]);
        assert_eq!(warned_calls(&talk), None);
        // A director's note that is not the detector's warns about nothing.
        let other = [ls.clone(), result(), Message::user("[loop] stop")];
        assert_eq!(warned_calls(&other), None);
    }
}
