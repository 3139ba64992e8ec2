//! The typed events a performance emits. The terminal view, the event log and the server all
//! consume this one stream; a performance can be rebuilt from its logged events.

use crate::budget::{BudgetKind, Spent};
use crate::message::ToolCall;
use crate::model::StopReason;
use serde::{Deserialize, Serialize};

/// One step of a performance, numbered in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the performance's stream, from 0 up, one more for each event.
    pub seq: u64,
    /// RFC 3339 time, UTC, in milliseconds.
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Name of the actor (as in the cast) whose loop emitted it; the kernel's loop always sets it.
    pub actor: Option<String>,
    /// What happened, with its details; flattened into the log line next to `type`.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A performance began (or, with `resumed`, continued from its log).
    PerformanceStarted {
        /// Id of the performance, as its log and the store name it.
        performance: String,
        /// Name of the stage it is performed on.
        stage: String,
        /// The intent the director gave, the actor's first message.
        intent: String,
        /// The actor's model, `provider/model` as in the stage file.
        model: String,
        /// Whether the performance continues an earlier, interrupted one from its log.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resumed: bool,
    },
    /// The director spoke: the intent, a note typed mid-performance, a feedback verdict.
    DirectorNote {
        /// The note as the actor reads it.
        text: String,
    },
    /// A message from outside the stage (a chat door's sender), not the director's: untrusted
    /// content, fenced as data in `text`, which the actor reads as its next message.
    OutsideMessage {
        /// Who wrote it, as the door names them (`@alice`, a user id).
        from: String,
        /// The message as the actor reads it: labelled and fenced as untrusted data.
        text: String,
    },
    /// The actor's model is called for the `turn`-th time.
    TurnStarted {
        /// Which turn this is, counting from 1 across resumptions.
        turn: u32,
    },
    /// A piece of the model's reply, as it streams. Not needed to rebuild the performance.
    TextDelta {
        /// The text that just streamed in, appended to what came before.
        text: String,
    },
    /// The provider failed transiently and will retry.
    ModelRetry {
        /// Which retry this is, from 1.
        attempt: u32,
        /// How long the provider waits before it tries again, in milliseconds.
        delay_ms: u64,
        /// What failed, as the provider reported it (a status, a broken stream).
        reason: String,
    },
    /// The model's complete reply.
    ModelReplied {
        /// The whole text of the reply (the streamed deltas joined).
        text: String,
        /// The prop calls the actor asked for, in the order it wrote them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
        /// Why the model stopped.
        stop: StopReason,
    },
    /// Tokens and cost of the last model call, and the running totals.
    Usage {
        /// Input tokens of the last call, cached ones included.
        input_tokens: u64,
        /// Output tokens of the last call.
        output_tokens: u64,
        /// The part of `input_tokens` the provider served from its prompt cache.
        cached_input_tokens: u64,
        /// What the last call cost in USD, at the model's price (0 when unknown).
        cost_usd: f64,
        /// Bytes of the request body sent to the provider (0 for in-process models).
        request_bytes: u64,
        /// What the whole performance has spent so far, this call included.
        spent: Spent,
    },
    /// A prop call the actor asked for begins to run.
    ToolCallStarted {
        /// Id of the call, as the model gave it; its result carries the same id.
        call_id: String,
        /// Name of the prop called.
        name: String,
        /// The arguments as JSON text, exactly as the model wrote them.
        arguments: String,
    },
    /// A prop call ended; its output goes back to the actor.
    ToolCallFinished {
        /// Id of the call, as in its `tool_call_started` event.
        call_id: String,
        /// Name of the prop called.
        name: String,
        /// Whether the prop succeeded (`false`: the output is the error the actor reads).
        ok: bool,
        /// Exactly what the model was sent.
        output: String,
        /// How long the prop ran, in milliseconds.
        duration_ms: f64,
    },
    /// A budget passed 80%.
    BudgetWarning {
        /// Which budget.
        budget: BudgetKind,
        /// What was spent of it, in its unit (turns, tokens, USD, seconds, calls).
        used: f64,
        /// The limit the edge set, in the same unit.
        limit: f64,
    },
    /// The edges' policy decided on a prop call: allowed, denied, or the director's answer.
    PolicyDecision {
        /// Name of the prop whose call was judged.
        prop: String,
        /// The command or path judged.
        subject: String,
        /// What was decided; logged as its snake_case name (`allow`, `denied_by_director`, …).
        decision: Decision,
        /// The rule or edge that decided, as the stage file says it.
        rule: String,
        /// The director's note to the actor, when there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<String>,
    },
    /// The processes of the performance run in a sandbox (`enforced`), or not (`sandbox = "off"`).
    SandboxStarted {
        /// Whether the sandbox really confines the processes.
        enforced: bool,
        /// What confines them (or why nothing does), for the director to read.
        description: String,
    },
    /// A feedback check judged the work: `attempt` counts the times the actor said it was done;
    /// `on` is when the check ran (`done` or `write`).
    CheckFinished {
        /// Which attempt, from 1: how many times the actor had said it was done.
        attempt: u32,
        /// Name of the check, as the stage file gives it.
        check: String,
        /// When the check ran: `done` (the actor ended its turn) or `write` (a file was written).
        on: String,
        /// Whether the check passed.
        passed: bool,
        /// The verdict: the command's trimmed output, the assertion that failed, the critic's notes.
        output: String,
        /// How long the check ran, in milliseconds.
        duration_ms: f64,
    },
    /// Every check of an attempt has run; when some failed, a director note with them follows.
    AttemptFinished {
        /// Which attempt, from 1.
        attempt: u32,
        /// How many attempts the stage allows before the performance ends exhausted.
        max_attempts: u32,
        /// Whether every check of the attempt passed.
        passed: bool,
        /// The names of the checks that failed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        failed: Vec<String>,
    },
    /// The actor cued another: `to` performs `task` as the sub-performance `performance`
    /// (logged on its own under that id).
    CueStarted {
        /// Name of the cued actor, as in the cast.
        to: String,
        /// What the cued actor is asked to do: the intent of its sub-performance.
        task: String,
        /// Id of the sub-performance.
        performance: String,
    },
    /// A cued sub-performance ended.
    CueFinished {
        /// Name of the cued actor.
        to: String,
        /// Id of the sub-performance.
        performance: String,
        /// How the sub-performance ended.
        outcome: Outcome,
        /// What the sub-performance spent.
        spent: Spent,
    },
    /// An actor posted a note on the board every actor can read.
    BoardNote {
        /// Name of the actor who posted it.
        author: String,
        /// The note as the other actors read it.
        text: String,
    },
    /// An approved routine began to replay its recorded steps: in place of the model's turns, or,
    /// with `within`, inside the prop call of that id (`routine.NAME`).
    RoutineStarted {
        /// Name of the routine.
        routine: String,
        /// The values its parameters took for this replay, by parameter name.
        parameters: std::collections::BTreeMap<String, String>,
        /// How many recorded steps it has.
        steps: u32,
        /// Id of the prop call the routine replays inside; `None` when it stands in for turns.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        within: Option<String>,
    },
    /// One replayed step: the call a model would have written. Without `within` it stands for
    /// the model's reply in the conversation, and its result follows as ordinary tool-call events.
    RoutineStep {
        /// Name of the routine.
        routine: String,
        /// Which step, from 1.
        step: u32,
        /// The prop call the step makes, its parameters filled in.
        call: ToolCall,
        /// Id of the prop call the routine replays inside, as in `routine_started`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        within: Option<String>,
    },
    /// The routine ended: every step passed its guard (`ok`), or `deviation` says which did not
    /// and why; the actor takes over from there.
    RoutineFinished {
        /// Name of the routine.
        routine: String,
        /// Whether every step ran and passed its guard.
        ok: bool,
        /// How many steps ran before it ended.
        steps_run: u32,
        /// Which step's guard failed and why, when one did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deviation: Option<String>,
    },
    /// Older turns were compacted into a summary to stay inside the model's context window.
    Compacted {
        /// Messages replaced by the summary, and tool results trimmed.
        messages: u32,
        /// Tool results whose content was cut short.
        trimmed: u32,
        /// Tokens of the conversation before compaction, as the compactor counts them.
        tokens_before: u64,
        /// Tokens of the conversation after it, counted the same way.
        tokens_after: u64,
        /// What changed, in order, so a resumed performance rebuilds the same conversation.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        edits: Vec<Compaction>,
    },
    /// The performance ended; nothing follows this event unless it is resumed.
    PerformanceFinished {
        /// How it ended.
        outcome: Outcome,
        /// Why, in words for the director (the actor's last reply, the budget spent, the error).
        reason: String,
        /// The budget that stopped it, when one did.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        budget: Option<BudgetKind>,
        /// What the whole performance spent, across resumptions.
        spent: Spent,
    },
}

impl EventKind {
    /// The snake_case name of the event, as written in the log's `type` field.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::PerformanceStarted { .. } => "performance_started",
            EventKind::DirectorNote { .. } => "director_note",
            EventKind::OutsideMessage { .. } => "outside_message",
            EventKind::TurnStarted { .. } => "turn_started",
            EventKind::TextDelta { .. } => "text_delta",
            EventKind::ModelRetry { .. } => "model_retry",
            EventKind::ModelReplied { .. } => "model_replied",
            EventKind::Usage { .. } => "usage",
            EventKind::ToolCallStarted { .. } => "tool_call_started",
            EventKind::ToolCallFinished { .. } => "tool_call_finished",
            EventKind::BudgetWarning { .. } => "budget_warning",
            EventKind::PolicyDecision { .. } => "policy_decision",
            EventKind::SandboxStarted { .. } => "sandbox_started",
            EventKind::CheckFinished { .. } => "check_finished",
            EventKind::AttemptFinished { .. } => "attempt_finished",
            EventKind::CueStarted { .. } => "cue_started",
            EventKind::CueFinished { .. } => "cue_finished",
            EventKind::BoardNote { .. } => "board_note",
            EventKind::RoutineStarted { .. } => "routine_started",
            EventKind::RoutineStep { .. } => "routine_step",
            EventKind::RoutineFinished { .. } => "routine_finished",
            EventKind::Compacted { .. } => "compacted",
            EventKind::PerformanceFinished { .. } => "performance_finished",
        }
    }
}

/// One change a compaction made to the conversation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "edit", rename_all = "snake_case")]
pub enum Compaction {
    /// The result of tool call `call_id` now reads `content`.
    Trimmed {
        /// Id of the tool call whose result was trimmed.
        call_id: String,
        /// The shortened result that replaces the original.
        content: String,
    },
    /// Messages `start..end` were replaced by one director message, `text`.
    Summarized {
        /// Index of the first message replaced, in the conversation as it was.
        start: usize,
        /// Index one past the last message replaced.
        end: usize,
        /// The summary the director message now holds.
        text: String,
    },
}

/// What the edges' policy decided on one prop call, as the `policy_decision` event logs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// A rule (or the default) allows the call.
    Allow,
    /// A rule, a hidden or read-only path, or the workspace edge denies it.
    Deny,
    /// The director approved this one call.
    ApprovedOnce,
    /// The director approved what the same rule matches for the rest of the performance.
    ApprovedForPerformance,
    /// The director denied it, maybe with a note to the actor.
    DeniedByDirector,
    /// Nobody could be asked (a non-interactive run), so it was denied.
    DeniedUnattended,
    /// The performance stopped while the director was being asked, so it was denied.
    DeniedInterrupted,
}

impl Decision {
    /// The name the log uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Deny => "deny",
            Decision::ApprovedOnce => "approved_once",
            Decision::ApprovedForPerformance => "approved_for_performance",
            Decision::DeniedByDirector => "denied_by_director",
            Decision::DeniedUnattended => "denied_unattended",
            Decision::DeniedInterrupted => "denied_interrupted",
        }
    }

    /// Whether the call may run.
    pub fn runs(self) -> bool {
        matches!(
            self,
            Decision::Allow | Decision::ApprovedOnce | Decision::ApprovedForPerformance
        )
    }

    /// Whether the director approved it.
    pub fn approved(self) -> bool {
        matches!(
            self,
            Decision::ApprovedOnce | Decision::ApprovedForPerformance
        )
    }
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a performance ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The actor ended its turn (and the stage has no checks).
    Done,
    /// The actor ended its turn and every feedback check passed.
    Converged,
    /// The checks still failed when the attempts (or a budget) ran out.
    Exhausted,
    /// An edge stopped it (a budget, a policy).
    Stopped,
    /// The director interrupted it (Ctrl-C); it can be resumed.
    Interrupted,
    /// An error ended it (the model could not be reached, the log could not be written).
    Failed,
}

impl Outcome {
    /// The snake_case name the log and the store use (`done`, `converged`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::Converged => "converged",
            Outcome::Exhausted => "exhausted",
            Outcome::Stopped => "stopped",
            Outcome::Interrupted => "interrupted",
            Outcome::Failed => "failed",
        }
    }
}

/// An observer could not take an event: the performance stops, since what it does would no
/// longer be recorded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ObserveError(pub String);

/// Something that consumes the event stream: the terminal view, the event log, the server.
/// Observers are called in order, synchronously, before the loop goes on; keep them fast.
pub trait Observer: Send + Sync {
    /// Takes one event; an error stops the performance as [`Outcome::Failed`].
    fn observe(&self, event: &Event) -> Result<(), ObserveError>;

    /// Waits until every event taken so far is kept, before the loop acts on what they say
    /// (asks the model after `turn_started`, runs a prop after `tool_call_started`, goes on
    /// after `model_replied`). An observer that keeps events elsewhere (a store's journal)
    /// waits here rather than in `observe`, so a performance waiting on it holds no thread.
    /// An error stops the performance as [`Outcome::Failed`]. The default waits for nothing.
    fn settled(&self) -> Settling<'_> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// What [`Observer::settled`] returns.
pub type Settling<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), ObserveError>> + Send + 'a>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_decision_is_logged_by_its_snake_case_name() {
        let event = EventKind::PolicyDecision {
            prop: "bash".into(),
            subject: "git push".into(),
            decision: Decision::DeniedInterrupted,
            rule: "rule 1".into(),
            note: None,
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["decision"], "denied_interrupted");
        assert_eq!(serde_json::from_value::<EventKind>(json).unwrap(), event);
        for d in [Decision::Allow, Decision::ApprovedForPerformance] {
            assert_eq!(serde_json::to_value(d).unwrap(), d.as_str());
        }
    }
}
