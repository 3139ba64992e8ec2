//! Hooks: what the loop calls between turns. Stop conditions (budgets), note delivery,
//! compaction and model switching are hooks, so the loop itself stays one readable function.

use crate::budget::{BudgetKind, Spent};
use crate::event::{EventKind, Outcome};
use crate::message::Message;
use crate::model::Model;
use async_trait::async_trait;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a hook sees and may change before the next model call.
pub struct Between<'a> {
    /// The turn about to start, counting from 1.
    pub turn: u32,
    /// What the performance has spent so far, for stop conditions to weigh.
    pub spent: &'a Spent,
    /// The input tokens of the last model call: what the conversation costs now, for a hook
    /// that keeps it inside the context window. 0 before the first call.
    pub context_tokens: u64,
    /// The conversation the next model call sends; a hook may add notes or compact it.
    pub conversation: &'a mut Vec<Message>,
    /// The actor's model; a hook may switch it.
    pub model: &'a mut Arc<dyn Model>,
    /// Events the hook wants emitted; the loop emits them, in order, after the hook returns.
    pub events: Vec<EventKind>,
    /// Model calls the hook made itself (a compaction summary): the loop adds them to what the
    /// performance spent, prices them with the actor's model and logs a `usage` event for each,
    /// so budgets see every token.
    pub spend: Vec<crate::model::Usage>,
    /// The performance's cancellation (the director's Ctrl-C): a hook that waits on something
    /// (a model call, a command) stops waiting when it fires and returns; the loop then ends
    /// the performance as interrupted.
    pub cancel: &'a CancellationToken,
}

/// A hook's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// Go on: the next hook runs, then the model's turn.
    Continue,
    /// End the performance here with this outcome (a budget ran out, the checks converged).
    Stop {
        /// How the performance ends.
        outcome: Outcome,
        /// Why, in words for the director; logged with `performance_finished`.
        reason: String,
        /// The budget that ended it, when one did.
        budget: Option<BudgetKind>,
    },
}

/// Something the loop runs between turns, before every model call (the first one included).
///
/// **Order.** The budget hook always runs first (the builder puts it there); then the hooks in
/// the order they were added to the [`PerformanceBuilder`](crate::PerformanceBuilder). A
/// production adds the loop detector, director-note delivery, compaction and the checks after
/// writes, in that order, so compaction sees the notes just delivered and the checks run last.
///
/// **Stop.** The first hook that answers [`Control::Stop`] ends the round: the hooks after it
/// do not run and no prop runs again. A stop naming a budget other than time gets one last
/// model reply, offered no props, so the actor can summarize; any other stop makes no more
/// model calls. The events and the spending that the hooks which did
/// run put in [`Between::events`] and [`Between::spend`] are still emitted and accounted, in
/// order, before the performance ends, so nothing a hook did goes unlogged or unpaid.
///
/// **Cancellation.** A hook that waits (a model call, a command) must stop waiting when
/// [`Between::cancel`] fires and return; the loop then ends the performance `interrupted`.
#[async_trait]
pub trait Hook: Send + Sync {
    /// Looks at (and may change) the conversation and the model before the next turn.
    async fn between_turns(&self, at: &mut Between<'_>) -> Control;
}

/// Delivers director notes: notes sent at any time, from any task, reach the actor before its
/// next model call — never lost, never mixed into a tool result.
pub struct Notes {
    inbox: Mutex<mpsc::UnboundedReceiver<String>>,
}

/// The sending side of [`Notes`]; cheap to clone and to hand to another task.
#[derive(Clone, Debug)]
pub struct NoteSender(mpsc::UnboundedSender<String>);

impl NoteSender {
    /// Queues a note. Returns false when the performance has ended.
    pub fn send(&self, note: impl Into<String>) -> bool {
        self.0.send(note.into()).is_ok()
    }
}

impl Notes {
    /// A new inbox: the [`NoteSender`] goes to whoever speaks for the director, the [`Notes`]
    /// hook to the performance.
    pub fn channel() -> (NoteSender, Notes) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            NoteSender(tx),
            Notes {
                inbox: Mutex::new(rx),
            },
        )
    }
}

impl Notes {
    /// Whether notes wait for the actor: a performance whose actor ended its turn goes on
    /// when the director spoke meanwhile, so no note is left unread.
    pub fn pending(&self) -> bool {
        !self
            .inbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

#[async_trait]
impl Hook for Notes {
    async fn between_turns(&self, at: &mut Between<'_>) -> Control {
        // Poisoning needs a panic while the lock is held; the receiver is still sound then.
        let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
        while let Ok(text) = inbox.try_recv() {
            at.conversation.push(Message::user(text.clone()));
            at.events.push(EventKind::DirectorNote { text });
        }
        Control::Continue
    }
}
