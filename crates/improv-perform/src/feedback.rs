//! Feedback in a production: the stage's checks judge the work when the lead says it is done,
//! their failures go back to it as a director note, and it tries again until the work converges
//! or the attempts run out. After each turn that wrote, a hook runs the checks too: those with
//! `on = "write"` so the lead hears about a broken build at once, and, under
//! `converge_on = "checks"` (the default), all of them, ending the performance as converged the
//! moment they all pass — the director's feedback, not the actor's opinion, closes the loop.

use crate::cast::Cast;
use async_trait::async_trait;
use improv_feedback::{ActorCritic, Judge, Verdict, brief, write_note};
use improv_kernel::{Access, Between, Control, EventKind, Hook, Message, Outcome, Prop};
use improv_stage::{CheckOn, ConvergeOn};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

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

/// Runs the checks after a turn whose calls may have changed the work: the `on = "write"` ones,
/// whose failures go back to the lead at once, or, when the stage converges on its checks, all
/// of them, stopping the performance as converged when every one passes.
pub(crate) struct WriteChecks {
    judge: Arc<Judge>,
    converge_on: ConvergeOn,
    max_attempts: u32,
    /// The lead's props by name, to tell a call that may write (`Access::Write`) from a read.
    props: HashMap<String, Arc<dyn Prop>>,
    /// The attempt in progress, for the events.
    pub(crate) attempt: Arc<AtomicU32>,
    /// How much of the conversation was already looked at.
    seen: AtomicUsize,
    /// The verdicts that converged the performance, for its summary.
    converged: Mutex<Option<Vec<Verdict>>>,
}

impl WriteChecks {
    /// `None` when nothing would run after a write: no `on = "write"` check, and the stage
    /// converges only when the lead says it is done.
    pub(crate) fn new(
        judge: Arc<Judge>,
        feedback: &improv_stage::Feedback,
        props: &[Arc<dyn Prop>],
        attempt: Arc<AtomicU32>,
    ) -> Option<Self> {
        if feedback.converge_on == ConvergeOn::Done && !judge.has_checks(CheckOn::Write) {
            return None;
        }
        Some(WriteChecks {
            judge,
            converge_on: feedback.converge_on,
            max_attempts: feedback.max_attempts,
            props: props
                .iter()
                .map(|p| (p.spec().name.clone(), p.clone()))
                .collect(),
            attempt,
            seen: AtomicUsize::new(0),
            converged: Mutex::new(None),
        })
    }

    /// The verdicts of the checks that converged the performance, once they have.
    pub(crate) fn take_converged(&self) -> Option<Vec<Verdict>> {
        // A poisoned lock only means a panic elsewhere; the verdicts in it are still whole.
        self.converged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Whether a call among `messages` may have changed the work: a call to one of the lead's
    /// props that says it writes (an unknown name was refused, so it changed nothing).
    fn wrote(&self, messages: &[Message]) -> bool {
        messages.iter().any(|m| match m {
            Message::Assistant { tool_calls, .. } => tool_calls.iter().any(|c| {
                self.props.get(&c.name).is_some_and(|p| {
                    let arguments = serde_json::from_str(&c.arguments).unwrap_or_default();
                    p.access(&arguments) == Access::Write
                })
            }),
            _ => false,
        })
    }
}

#[async_trait]
impl Hook for WriteChecks {
    async fn between_turns(&self, at: &mut Between<'_>) -> Control {
        let from = self.seen.swap(at.conversation.len(), Ordering::Relaxed);
        let from = from.min(at.conversation.len());
        if !self.wrote(&at.conversation[from..]) {
            return Control::Continue;
        }
        let attempt = self.attempt.load(Ordering::Relaxed);
        let on = match self.converge_on {
            ConvergeOn::Checks => CheckOn::Done,
            ConvergeOn::Done => CheckOn::Write,
        };
        // The director's Ctrl-C stops a running check at once (its process group is killed).
        let verdicts = self
            .judge
            .judge(on, &brief(at.conversation), at.cancel)
            .await;
        // Logged as run after a write, whichever checks were due.
        at.events
            .extend(verdicts.iter().map(|v| v.event(attempt, CheckOn::Write)));
        if at.cancel.is_cancelled() {
            // Cut short, the verdicts judge nothing: the loop ends the performance interrupted.
            return Control::Continue;
        }
        if self.converge_on == ConvergeOn::Checks && improv_feedback::all_passed(&verdicts) {
            at.events.push(improv_feedback::attempt_event(
                &verdicts,
                attempt,
                self.max_attempts,
            ));
            *self.converged.lock().unwrap_or_else(|e| e.into_inner()) = Some(verdicts);
            return Control::Stop {
                outcome: Outcome::Converged,
                reason: format!(
                    "every check passed after turn {}; the feedback closed the loop",
                    at.turn.saturating_sub(1)
                ),
                budget: None,
            };
        }
        // Only the `on = "write"` checks speak up mid-work; the others wait for "done".
        let write: Vec<Verdict> = verdicts
            .into_iter()
            .filter(|v| {
                let check = self.judge.checks().iter().find(|c| c.name == v.check);
                check.is_some_and(|c| c.on == CheckOn::Write)
            })
            .collect();
        if let Some(note) = write_note(&write) {
            at.conversation.push(Message::user(note.clone()));
            at.events.push(EventKind::DirectorNote { text: note });
        }
        self.seen.store(at.conversation.len(), Ordering::Relaxed);
        Control::Continue
    }
}
