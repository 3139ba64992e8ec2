//! Rebuilds a performance's state from its logged events, so `--resume` continues where the log
//! ends.

use crate::budget::Spent;
use crate::event::{Compaction, Event, EventKind};
use crate::message::{Message, ToolCall};

/// What the log says a performance had reached.
#[derive(Debug, Default)]
pub struct Past {
    /// Id of the performance, from its first `performance_started`; `None` when none was logged.
    pub id: Option<String>,
    /// The intent it was started with (empty when none was logged).
    pub intent: String,
    /// The conversation as the model last saw it, compactions applied.
    pub conversation: Vec<Message>,
    /// What it had spent, from the last `usage` or `performance_finished` event.
    pub spent: Spent,
    /// The `seq` the next event gets: one past the highest logged.
    pub next_seq: u64,
    /// Calls of the last reply that have no result: the performance stopped while they ran.
    pub unanswered: Vec<ToolCall>,
    /// The ids of the calls that started (`tool_call_started` was recorded): an unanswered call
    /// not among them never ran.
    pub started: Vec<String>,
}

/// Replays events into the conversation they produced. Text deltas are ignored: each reply is
/// logged whole.
pub fn replay(events: &[Event]) -> Past {
    let mut past = Past::default();
    for event in events {
        past.next_seq = past.next_seq.max(event.seq + 1);
        match &event.kind {
            EventKind::PerformanceStarted {
                performance,
                intent,
                ..
            } => {
                past.id.get_or_insert_with(|| performance.clone());
                if past.intent.is_empty() {
                    past.intent = intent.clone();
                }
            }
            EventKind::DirectorNote { text } => past.conversation.push(Message::user(text)),
            EventKind::OutsideMessage { from, text } => {
                past.conversation.push(Message::outside(from, text))
            }
            EventKind::ModelReplied {
                text, tool_calls, ..
            } => past.conversation.push(Message::Assistant {
                text: text.clone(),
                tool_calls: tool_calls.clone(),
            }),
            // A step replayed in place of the model's reply stands for that reply.
            EventKind::RoutineStep {
                call, within: None, ..
            } => past.conversation.push(Message::Assistant {
                text: String::new(),
                tool_calls: vec![call.clone()],
            }),
            EventKind::ToolCallFinished {
                call_id,
                name,
                ok,
                output,
                ..
            } => past.conversation.push(Message::Tool {
                call_id: call_id.clone(),
                name: name.clone(),
                content: output.clone(),
                is_error: !ok,
            }),
            EventKind::ToolCallStarted { call_id, .. } => past.started.push(call_id.clone()),
            EventKind::Compacted { edits, .. } => apply(&mut past.conversation, edits),
            EventKind::Usage { spent, .. } => past.spent = *spent,
            EventKind::PerformanceFinished { spent, .. } => past.spent = *spent,
            _ => {}
        }
    }
    // The calls of the last reply that never got an answer.
    if let Some(i) = past
        .conversation
        .iter()
        .rposition(|m| matches!(m, Message::Assistant { .. }))
        && let Message::Assistant { tool_calls, .. } = &past.conversation[i]
    {
        let answered: Vec<&str> = past.conversation[i + 1..]
            .iter()
            .filter_map(|m| match m {
                Message::Tool { call_id, .. } => Some(call_id.as_str()),
                _ => None,
            })
            .collect();
        past.unanswered = tool_calls
            .iter()
            .filter(|c| !answered.contains(&c.id.as_str()))
            .cloned()
            .collect();
    }
    past
}

/// Makes the same changes to the replayed conversation that a compaction made to the live one.
fn apply(conversation: &mut Vec<Message>, edits: &[Compaction]) {
    for edit in edits {
        match edit {
            Compaction::Trimmed { call_id, content } => {
                for m in conversation.iter_mut() {
                    if let Message::Tool {
                        call_id: id,
                        content: c,
                        ..
                    } = m
                        && id == call_id
                    {
                        *c = content.clone();
                    }
                }
            }
            Compaction::Summarized { start, end, text } => {
                if start <= end && *end <= conversation.len() {
                    conversation.splice(*start..*end, [Message::user(text)]);
                }
            }
        }
    }
}
