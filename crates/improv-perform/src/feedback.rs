//! Feedback in a production: the stage's checks judge the work when the lead says it is done,
//! their failures go back to it as a director note, and it tries again until the work converges
//! or the attempts run out. Checks with `on = "write"` also run after each turn that wrote, as a
//! hook, so the lead hears about a broken build at once.

use crate::cast::Cast;
use async_trait::async_trait;
use improv_feedback::{ActorCritic, Judge, Verdict, brief, write_note};
use improv_kernel::{Between, Control, EventKind, Hook, Message};
use improv_stage::CheckOn;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use tokio_util::sync::CancellationToken;

/// Props whose calls may change the work.
const WRITING_PROPS: &[&str] = &["write", "edit", "bash"];

/// The judge of a stage's checks, with critics cast from the stage and commands in the actors'
/// sandbox; `None` when the stage has no checks.
pub(crate) fn judge(cast: &Arc<Cast>) -> anyhow::Result<Option<Arc<Judge>>> {
    let stage = &cast.stage;
    if stage.feedback.checks.is_empty() {
        return Ok(None);
    }
    let mut judge = Judge::new(stage.feedback.checks.clone(), &cast.workspace, &stage.dir)?;
    if let Some(sandbox) = &cast.edges.sandbox {
        judge = judge.with_sandbox(sandbox.clone());
    }
    if stage.feedback.checks.iter().any(|c| c.critic.is_some()) {
        let casting = cast.clone();
        // Critics judge; they do not cue others, so they are cast at the deepest cue level.
        let depth = stage.edges.cue_depth;
        let mut critic = ActorCritic::new(cast.workspace.clone(), move |name: &str| {
            casting.actor(name, depth).map_err(|e| format!("{e:#}"))
        })
        .stage(stage.stage.name.clone());
        if let Some(name) = stage.feedback.checks.iter().find_map(|c| c.critic.as_ref()) {
            let mut budget = cast.budget(name);
            budget.max_turns = budget
                .max_turns
                .or(Some(improv_feedback::critic::DEFAULT_CRITIC_TURNS));
            critic = critic.budget(budget);
        }
        if let Some(watch) = &cast.watch {
            critic = critic.observer(watch());
        }
        judge = judge.with_critic(Arc::new(critic));
    }
    Ok(Some(Arc::new(judge)))
}

/// Runs the checks due at `on` and returns the verdicts with their events.
pub(crate) async fn run(
    judge: &Judge,
    on: CheckOn,
    attempt: u32,
    conversation: &[Message],
    cancel: &CancellationToken,
) -> (Vec<Verdict>, Vec<EventKind>) {
    let verdicts = judge.judge(on, &brief(conversation), cancel).await;
    let events = verdicts.iter().map(|v| v.event(attempt, on)).collect();
    (verdicts, events)
}

/// Runs the `on = "write"` checks after a turn whose calls may have changed the work.
pub(crate) struct WriteChecks {
    judge: Arc<Judge>,
    /// The attempt in progress, for the events.
    pub(crate) attempt: Arc<AtomicU32>,
    /// How much of the conversation was already looked at.
    seen: AtomicUsize,
}

impl WriteChecks {
    pub(crate) fn new(judge: Arc<Judge>, attempt: Arc<AtomicU32>) -> Self {
        WriteChecks {
            judge,
            attempt,
            seen: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl Hook for WriteChecks {
    async fn between_turns(&self, at: &mut Between<'_>) -> Control {
        let from = self.seen.swap(at.conversation.len(), Ordering::Relaxed);
        let wrote = at.conversation.iter().skip(from).any(|m| {
            matches!(m, Message::Assistant { tool_calls, .. }
                if tool_calls.iter().any(|c| WRITING_PROPS.contains(&c.name.as_str())))
        });
        if !wrote || !self.judge.has_checks(CheckOn::Write) {
            return Control::Continue;
        }
        let attempt = self.attempt.load(Ordering::Relaxed);
        let (verdicts, events) = run(
            &self.judge,
            CheckOn::Write,
            attempt,
            at.conversation,
            // A hook has no cancellation of its own; each check's time limit bounds it.
            &CancellationToken::new(),
        )
        .await;
        at.events.extend(events);
        if let Some(note) = write_note(&verdicts) {
            at.conversation.push(Message::user(note.clone()));
            at.events.push(EventKind::DirectorNote { text: note });
        }
        self.seen.store(at.conversation.len(), Ordering::Relaxed);
        Control::Continue
    }
}
