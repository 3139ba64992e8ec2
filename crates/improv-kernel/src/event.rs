//! The typed events a performance emits. The terminal view, the event log and the server all
//! consume this one stream; a performance can be rebuilt from its logged events.

use crate::budget::{BudgetKind, Spent};
use crate::message::ToolCall;
use crate::model::StopReason;
use serde::{Deserialize, Serialize};

/// One step of a performance, numbered in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// RFC 3339 time, UTC, in milliseconds.
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A performance began (or, with `resumed`, continued from its log).
    PerformanceStarted {
        performance: String,
        stage: String,
        intent: String,
        model: String,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resumed: bool,
    },
    /// The director spoke: the intent, a note typed mid-performance, a feedback verdict.
    DirectorNote { text: String },
    /// The actor's model is called for the `turn`-th time.
    TurnStarted { turn: u32 },
    /// A piece of the model's reply, as it streams. Not needed to rebuild the performance.
    TextDelta { text: String },
    /// The provider failed transiently and will retry.
    ModelRetry {
        attempt: u32,
        delay_ms: u64,
        reason: String,
    },
    /// The model's complete reply.
    ModelReplied {
        text: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
        stop: StopReason,
    },
    /// Tokens and cost of the last model call, and the running totals.
    Usage {
        input_tokens: u64,
        output_tokens: u64,
        cached_input_tokens: u64,
        cost_usd: f64,
        request_bytes: u64,
        spent: Spent,
    },
    ToolCallStarted {
        call_id: String,
        name: String,
        arguments: String,
    },
    ToolCallFinished {
        call_id: String,
        name: String,
        ok: bool,
        /// Exactly what the model was sent.
        output: String,
        duration_ms: f64,
    },
    /// A budget passed 80%.
    BudgetWarning {
        budget: BudgetKind,
        used: f64,
        limit: f64,
    },
    /// The edges' policy decided on a prop call: allowed, denied, or the director's answer.
    PolicyDecision {
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
    SandboxStarted { enforced: bool, description: String },
    /// A feedback check judged the work: `attempt` counts the times the actor said it was done;
    /// `on` is when the check ran (`done` or `write`).
    CheckFinished {
        attempt: u32,
        check: String,
        on: String,
        passed: bool,
        /// The verdict: the command's trimmed output, the assertion that failed, the critic's notes.
        output: String,
        duration_ms: f64,
    },
    /// Every check of an attempt has run; when some failed, a director note with them follows.
    AttemptFinished {
        attempt: u32,
        max_attempts: u32,
        passed: bool,
        /// The names of the checks that failed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        failed: Vec<String>,
    },
    /// The actor cued another: `to` performs `task` as the sub-performance `performance`
    /// (logged on its own under that id).
    CueStarted {
        to: String,
        task: String,
        performance: String,
    },
    /// A cued sub-performance ended.
    CueFinished {
        to: String,
        performance: String,
        outcome: Outcome,
        spent: Spent,
    },
    /// An actor posted a note on the board every actor can read.
    BoardNote { author: String, text: String },
    /// An approved routine began to replay its recorded steps: in place of the model's turns, or,
    /// with `within`, inside the prop call of that id (`routine.NAME`).
    RoutineStarted {
        routine: String,
        parameters: std::collections::BTreeMap<String, String>,
        steps: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        within: Option<String>,
    },
    /// One replayed step: the call a model would have written. Without `within` it stands for
    /// the model's reply in the conversation, and its result follows as ordinary tool-call events.
    RoutineStep {
        routine: String,
        step: u32,
        call: ToolCall,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        within: Option<String>,
    },
    /// The routine ended: every step passed its guard (`ok`), or `deviation` says which did not
    /// and why; the actor takes over from there.
    RoutineFinished {
        routine: String,
        ok: bool,
        steps_run: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deviation: Option<String>,
    },
    /// Older turns were compacted into a summary to stay inside the model's context window.
    Compacted {
        /// Messages replaced by the summary, and tool results trimmed.
        messages: u32,
        trimmed: u32,
        tokens_before: u64,
        tokens_after: u64,
        /// What changed, in order, so a resumed performance rebuilds the same conversation.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        edits: Vec<Compaction>,
    },
    PerformanceFinished {
        outcome: Outcome,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        budget: Option<BudgetKind>,
        spent: Spent,
    },
}

impl EventKind {
    /// The snake_case name of the event, as written in the log's `type` field.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::PerformanceStarted { .. } => "performance_started",
            EventKind::DirectorNote { .. } => "director_note",
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
    Trimmed { call_id: String, content: String },
    /// Messages `start..end` were replaced by one director message, `text`.
    Summarized {
        start: usize,
        end: usize,
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
    fn observe(&self, event: &Event) -> Result<(), ObserveError>;
}

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
