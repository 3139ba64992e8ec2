//! The board: short notes every actor of a performance can post and read, so what one actor
//! found is shared by reference instead of being copied into every cue and every context.

use async_trait::async_trait;
use improv_kernel::{Access, EventKind, Prop, PropContext, PropError, ToolSpec};
use serde_json::{Value, json};
use std::sync::Mutex;

/// The most notes a read returns: the latest ones, so a long performance does not flood a turn.
const READ_LIMIT: usize = 30;
/// The longest note, in characters; a board is for pointers and findings, not documents.
const NOTE_LIMIT: usize = 2_000;

/// The notes of one performance, in the order posted.
#[derive(Default)]
pub struct Board {
    notes: Mutex<Vec<(String, String)>>,
}

impl Board {
    /// Posts a note; returns its number (from 1).
    pub fn post(&self, author: &str, text: &str) -> usize {
        let mut notes = self.lock();
        notes.push((author.to_string(), text.to_string()));
        notes.len()
    }

    /// The notes, oldest first, as (author, text).
    pub fn notes(&self) -> Vec<(String, String)> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, String)>> {
        // Poisoning needs a panic while pushing; the notes are still sound then.
        self.notes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes numbered after `after`, the latest [`READ_LIMIT`] of them, one per line.
    fn render(&self, after: usize) -> String {
        let notes = self.lock();
        if notes.len() <= after {
            return if notes.is_empty() {
                "the board is empty".into()
            } else {
                format!("no notes after #{after} ({} in all)", notes.len())
            };
        }
        let start = after.max(notes.len().saturating_sub(READ_LIMIT));
        let mut out = String::new();
        if start > after {
            out.push_str(&format!(
                "(notes #{}–#{start} left out; pass `after` to page)\n",
                after + 1
            ));
        }
        for (i, (author, text)) in notes.iter().enumerate().skip(start) {
            out.push_str(&format!("#{} {author}: {text}\n", i + 1));
        }
        out
    }
}

/// The `board` prop: post a note, or read the notes.
pub struct BoardProp {
    board: std::sync::Arc<Board>,
    spec: ToolSpec,
}

impl BoardProp {
    pub fn new(board: std::sync::Arc<Board>) -> Self {
        BoardProp {
            board,
            spec: ToolSpec {
                name: "board".into(),
                description: "Shared notes of all actors. Give `post` to add a note; omit it to read (`after`: skip notes up to that number).".into(),
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "post": {"type": "string"},
                        "after": {"type": "integer", "minimum": 0}
                    }
                }),
            },
        }
    }
}

#[async_trait]
impl Prop for BoardProp {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn access(&self, arguments: &Value) -> Access {
        if arguments.get("post").is_some() {
            Access::Write
        } else {
            Access::Read
        }
    }

    async fn call(&self, arguments: Value, context: &PropContext) -> Result<String, PropError> {
        if let Some(post) = arguments.get("post") {
            let Some(text) = post.as_str().map(str::trim).filter(|t| !t.is_empty()) else {
                return Err(PropError::new("`post` must be the note's text"));
            };
            if text.chars().count() > NOTE_LIMIT {
                return Err(PropError::new(format!(
                    "the note is longer than {NOTE_LIMIT} characters; post a short finding and, for details, write a file and point to it"
                )));
            }
            let n = self.board.post(&context.actor, text);
            context
                .events
                .emit(EventKind::BoardNote {
                    author: context.actor.to_string(),
                    text: text.to_string(),
                })
                .map_err(|e| PropError::new(format!("the note could not be logged: {e}")))?;
            return Ok(format!("posted as #{n}"));
        }
        let after = match arguments.get("after") {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_u64()
                .ok_or_else(|| PropError::new("`after` must be a note number (0 or more)"))?
                as usize,
        };
        Ok(self.board.render(after))
    }
}
