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
    /// The ids of the last reply's calls that started (`tool_call_started` was recorded): an
    /// unanswered call not among them never ran.
    pub started: Vec<String>,
}

/// Replays events into the conversation they produced. Text deltas are ignored: each reply is
/// logged whole.
pub fn replay(events: &[Event]) -> Past {
    let mut past = Past::default();
    for event in events {
        past.take(event);
    }
    past.finish()
}

impl Past {
    /// Takes the next logged event, in the log's order, keeping only what the conversation and
    /// the spending need: a reader can replay a long journal one line at a time without holding
    /// it. Call [`Past::finish`] after the last.
    pub fn take(&mut self, event: &Event) {
        self.next_seq = self.next_seq.max(event.seq + 1);
        match &event.kind {
            EventKind::PerformanceStarted {
                performance,
                intent,
                ..
            } => {
                self.id.get_or_insert_with(|| performance.clone());
                if self.intent.is_empty() {
                    self.intent = intent.clone();
                }
            }
            EventKind::DirectorNote { text } => self.conversation.push(Message::user(text)),
            EventKind::OutsideMessage { from, text } => {
                self.conversation.push(Message::outside(from, text))
            }
            EventKind::ModelReplied {
                text, tool_calls, ..
            } => self.reply(text.clone(), tool_calls.clone()),
            // A step replayed in place of the model's reply stands for that reply.
            EventKind::RoutineStep {
                call, within: None, ..
            } => self.reply(String::new(), vec![call.clone()]),
            EventKind::ToolCallFinished {
                call_id,
                name,
                ok,
                output,
                ..
            } => self.conversation.push(Message::Tool {
                call_id: call_id.clone(),
                name: name.clone(),
                content: output.clone(),
                is_error: !ok,
            }),
            EventKind::ToolCallStarted { call_id, .. } => self.started.push(call_id.clone()),
            EventKind::Compacted { edits, .. } => apply(&mut self.conversation, edits),
            EventKind::Usage { spent, .. } => self.spent = *spent,
            EventKind::PerformanceFinished { spent, .. } => self.spent = *spent,
            _ => {}
        }
    }

    /// A reply of the model's, or a step standing for one: only the last reply's calls can be
    /// unanswered, so the calls started before it are forgotten (the log is never held whole,
    /// nor a list that grows with it).
    fn reply(&mut self, text: String, tool_calls: Vec<ToolCall>) {
        self.started.clear();
        self.conversation
            .push(Message::Assistant { text, tool_calls });
    }

    /// Ends the replay: finds the calls of the last reply that never got an answer.
    pub fn finish(mut self) -> Past {
        if let Some(i) = self
            .conversation
            .iter()
            .rposition(|m| matches!(m, Message::Assistant { .. }))
            && let Message::Assistant { tool_calls, .. } = &self.conversation[i]
        {
            let answered: Vec<&str> = self.conversation[i + 1..]
                .iter()
                .filter_map(|m| match m {
                    Message::Tool { call_id, .. } => Some(call_id.as_str()),
                    _ => None,
                })
                .collect();
            self.unanswered = tool_calls
                .iter()
                .filter(|c| !answered.contains(&c.id.as_str()))
                .cloned()
                .collect();
        }
        self
    }
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
