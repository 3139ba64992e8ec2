//! A production: one performance of a stage, from casting to the last event. It casts the lead
//! inside the edges, wires the hooks (budgets, loop detector, director notes, compaction,
//! checks after writes), performs until the work converges or an edge stops it, and logs
//! everything.
//! [`launch`] runs one in the background (the server, the MCP server); the CLI drives a
//! [`Production`] itself.

use crate::board::Board;
use crate::cast::{self, Cast, Edges, PropSource};
use crate::error::PerformError;
use crate::feedback::{self, WriteChecks};
use crate::inbox::Inbox;
use improv_edges::{Approver, RedactingObserver, Unattended};
use improv_feedback::{Judge, Verdict};
use improv_kernel::performance::new_id;
use improv_kernel::{
    BudgetKind, Ended, Event, EventKind, Hook, Message, NoteSender, Notes, ObserveError, Observer,
    Outcome, Performance, Spent,
};
use improv_log::EventLog;
use improv_stage::CheckOn;
use improv_stage::Stage;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use tokio_util::sync::CancellationToken;

/// Makes a view for each sub-performance a cue starts.
pub type Watch = Arc<dyn Fn() -> Arc<dyn Observer> + Send + Sync>;

/// What to perform, and who watches.
pub struct Launch {
    /// The goal; the lead's first message. Empty starts a session that waits for the
    /// director's first word ([`Production::direct`]).
    pub intent: String,
    /// Every actor's model for this run, as `provider/name`.
    pub model: Option<String>,
    /// Who answers `ask` rules; [`Unattended`] denies them with a reason the actor reads.
    pub approver: Arc<dyn Approver>,
    /// Views of the performance: they see every event, redacted, after the log wrote it.
    pub observers: Vec<Arc<dyn Observer>>,
    /// Continue this logged performance (an id or a unique prefix) instead of starting one.
    pub resume: Option<String>,
    /// The id of a new performance; a fresh one when absent.
    pub id: Option<String>,
    /// Views for the sub-performances of cued actors.
    pub watch: Option<Watch>,
    /// Props from outside improv: the stage's MCP servers, attached by the caller
    /// (`improv_mcp::attach`), whose tools actors ask for by name.
    pub outside: Option<Arc<dyn PropSource>>,
    /// Where the events are recorded instead of the stage folder's log (a worker's store);
    /// `None` logs in the stage folder, as `improv run` does.
    pub journal: Option<Journal>,
    /// More hooks between turns, after the production's own (a draining worker's).
    pub hooks: Vec<Arc<dyn Hook>>,
    /// Where director notes arrive when not in the stage folder's inbox file (a leased
    /// performance's store).
    pub notes: Option<crate::inbox::StoreNotes>,
    /// The store it is performed from: a PostgreSQL one holds the stage's memory too (see
    /// [`Cast::store`]); `None` keeps it in the stage folder.
    pub store: Option<improv_store::StoreUrl>,
}

/// A record of events kept elsewhere than the stage folder's log.
pub struct Journal {
    /// Records each event (redacted) before the loop goes on.
    pub recorder: Arc<dyn Observer>,
    /// What the events recorded so far had reached: the performance continues from it; `None`
    /// (nothing recorded) starts it afresh as [`Launch::id`].
    pub past: Option<improv_kernel::resume::Past>,
}

impl Launch {
    /// An unattended performance of `intent`, watched by nobody but the log.
    pub fn new(intent: impl Into<String>) -> Self {
        Launch {
            intent: intent.into(),
            model: None,
            approver: Arc::new(Unattended),
            observers: Vec::new(),
            resume: None,
            id: None,
            watch: None,
            outside: None,
            journal: None,
            hooks: Vec::new(),
            notes: None,
            store: None,
        }
    }
}

/// How a performance ended, and what it cost.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    pub id: String,
    pub outcome: Outcome,
    pub reason: String,
    /// The budget that ended it, when one did.
    pub budget: Option<BudgetKind>,
    /// Times the lead said it was done and the checks judged the work.
    pub attempts: u32,
    /// The verdicts of the last attempt: (check, passed, output).
    pub verdicts: Vec<(String, bool, String)>,
    pub spent: Spent,
    /// The lead's last words.
    pub answer: String,
}

/// A performance running in the background.
pub struct Running {
    pub id: String,
    /// Director notes for the lead, delivered before its next model call.
    pub notes: NoteSender,
    /// Interrupts it (outcome `interrupted`; it can be resumed).
    pub cancel: CancellationToken,
    pub done: tokio::task::JoinHandle<Result<Summary, PerformError>>,
}

/// Starts performing `stage` in a tokio task. Casting errors (a model that cannot be set up, a
/// sandbox that cannot be had) are returned before anything runs.
pub fn launch(stage: Arc<Stage>, launch: Launch) -> Result<Running, PerformError> {
    let (mut production, notes) = Production::open(stage, launch)?;
    let cancel = CancellationToken::new();
    let id = production.id().to_string();
    let token = cancel.clone();
    let done = tokio::spawn(async move {
        let ended = production.perform(&token).await;
        production.finish(&ended)
    });
    Ok(Running {
        id,
        notes,
        cancel,
        done,
    })
}

/// Where a stage keeps its state: `.improv/` beside the stage file.
pub fn state_dir(stage: &Stage) -> PathBuf {
    stage.dir.join(".improv")
}

/// One performance of a stage, cast and wired, ready to act.
pub struct Production {
    performance: Performance,
    edges: Arc<Edges>,
    inbox: Option<Inbox>,
    /// The director notes not yet delivered.
    pending: Arc<Notes>,
    judge: Option<Arc<Judge>>,
    /// The checks run after writes, which may converge the performance between turns.
    write_checks: Option<Arc<WriteChecks>>,
    max_attempts: u32,
    /// The attempt in progress, counting from 1 (shared with the write checks' hook).
    attempt: Arc<AtomicU32>,
    /// Attempts judged so far.
    attempts: u32,
    verdicts: Vec<(String, bool, String)>,
    /// Props from outside improv, kept for the production's life: the stage's MCP servers stop
    /// when their source is dropped, and the props the actors hold need them running.
    _outside: Option<Arc<dyn PropSource>>,
    stage: Arc<Stage>,
    /// The approved routine that performs the intent before the lead is asked, if one matches.
    replay: Option<crate::routines::Replay>,
}

impl Production {
    /// Casts the lead, opens the log and starts (or resumes) the performance. Returns the
    /// production and the sender of director notes to it.
    pub fn open(
        stage: Arc<Stage>,
        mut launch: Launch,
    ) -> Result<(Production, NoteSender), PerformError> {
        let journal = launch.journal.take();
        let workspace = workspace(&stage)?;
        let log = Arc::new(EventLog::open(&state_dir(&stage))?);
        let edges =
            Arc::new(cast::edges(&stage, &workspace, launch.approver).map_err(PerformError::cast)?);
        let user_skills = improv_skills::user_dir();
        let skills =
            improv_skills::discover(&stage.dir, &stage.context.skills, user_skills.as_deref());
        for warning in &skills.warnings {
            tracing::warn!("{warning}");
        }
        let cast = Arc::new(Cast {
            stage: stage.clone(),
            workspace,
            edges: edges.clone(),
            model_override: launch.model,
            board: Arc::new(Board::default()),
            log: log.clone(),
            watch: launch.watch,
            outside: launch.outside.clone(),
            skills,
            store: launch.store.take(),
        });
        let lead = stage.lead().name.clone();
        let actor = cast.actor(&lead, 0).map_err(PerformError::cast)?;
        let judge = feedback::judge(&cast).map_err(PerformError::cast)?;
        let attempt = Arc::new(AtomicU32::new(1));
        let write_checks = judge.as_ref().and_then(|judge| {
            WriteChecks::new(
                judge.clone(),
                &stage.feedback,
                &actor.props,
                attempt.clone(),
            )
            .map(Arc::new)
        });
        let id = match &launch.resume {
            Some(id) if journal.is_none() => {
                let row = log.find(id)?;
                if row.status == improv_log::Status::Running {
                    return Err(PerformError::Stage(format!(
                        "performance {} is still running in another process; stop it (Ctrl-C there) before resuming it",
                        row.id
                    )));
                }
                row.id
            }
            _ => launch.id.clone().unwrap_or_else(new_id),
        };
        let (notes, inbox_hook) = Notes::channel();
        let inbox_hook = Arc::new(inbox_hook);
        let inbox = match launch.notes.take() {
            Some(from) => Inbox::from_store(from, notes.clone()),
            None => Inbox::open(log.dir(), &id, notes.clone()),
        };
        let mut builder = cast
            .performance(actor)
            .hook(inbox.hook(inbox_hook.clone()))
            // After the notes, so the notes just delivered count towards the context.
            .hook(Arc::new(improv_context::Compactor::new(
                stage.context.compact_at,
                improv_context::DEFAULT_KEEP_RECENT_TURNS,
            )));
        if let Some(hook) = &write_checks {
            builder = builder.hook(hook.clone());
        }
        for hook in launch.hooks {
            builder = builder.hook(hook);
        }
        // Traced wherever it is performed (run, serve, worker), when the environment asks.
        launch.observers.extend(crate::trace::observer());
        let view = fan_out(launch.observers);
        let recorder: Arc<dyn Observer> = match &journal {
            Some(journal) => journal.recorder.clone(),
            None => log.recorder(&id)?,
        };
        let builder = builder
            .id(id.clone())
            .observer(observe(&edges, recorder, view));
        let resuming =
            launch.resume.is_some() || journal.as_ref().is_some_and(|j| j.past.is_some());
        let replay = (!resuming)
            .then(|| crate::routines::choose(&stage, &launch.intent))
            .flatten();
        let mut performance = match (journal, &launch.resume) {
            (
                Some(Journal {
                    past: Some(past), ..
                }),
                _,
            ) => builder.resume_from(past)?,
            (None, Some(_)) => builder.resume_from(log.replay(&id)?)?,
            _ => builder.start(&launch.intent)?,
        };
        if let Some(sandbox) = &edges.sandbox {
            performance.emit(EventKind::SandboxStarted {
                enforced: sandbox.is_enforced(),
                description: sandbox.describe(),
            })?;
        }
        Ok((
            Production {
                performance,
                edges,
                inbox: Some(inbox),
                pending: inbox_hook,
                judge,
                write_checks,
                max_attempts: stage.feedback.max_attempts,
                attempt,
                attempts: 0,
                verdicts: Vec::new(),
                _outside: launch.outside,
                stage,
                replay,
            },
            notes,
        ))
    }

    pub fn id(&self) -> &str {
        self.performance.id()
    }

    /// What the performance has spent so far (the session's `/status`).
    pub fn spent(&self) -> improv_kernel::Spent {
        self.performance.spent()
    }

    /// The director speaks: the text becomes the lead's next message.
    pub fn direct(&mut self, text: &str) -> Result<(), PerformError> {
        Ok(self.performance.direct(text)?)
    }

    /// Someone outside the stage speaks (a chat door's sender): `text`, fenced as untrusted
    /// data, becomes the lead's next message, logged as `from`'s, not the director's.
    pub fn hear(&mut self, from: &str, text: &str) -> Result<(), PerformError> {
        Ok(self.performance.hear(from, text)?)
    }

    /// One act: the lead performs until it ends its turn or something stops it. The
    /// interactive session acts once per line the director types.
    /// A note the director sent while the last turn ran is delivered, and the lead goes on.
    pub async fn act(&mut self, cancel: &CancellationToken) -> Ended {
        loop {
            let ended = self.performance.act(cancel).await;
            if ended.outcome != Outcome::Done {
                return ended;
            }
            if let Some(inbox) = &self.inbox {
                inbox.check().await;
            }
            if !self.pending.pending() {
                return ended;
            }
        }
    }

    /// Performs until the work is done, or, when the stage has checks, until they all pass
    /// (converged) or the attempts or a budget run out (exhausted). Each time the lead says it
    /// is done the checks judge the work; failures go back to it as a director note. Under
    /// `converge_on = "checks"` they also judge it after each turn that wrote, and converge it
    /// without waiting for the lead.
    pub async fn perform(&mut self, cancel: &CancellationToken) -> Ended {
        // A replay a budget stopped ends as the lead's turns would: the checks still judge.
        let mut replayed = None;
        if let Some(ended) = self.replay_routine(cancel).await {
            let budget_spent = ended.outcome == Outcome::Stopped && ended.budget.is_some();
            if !budget_spent || self.judge.is_none() {
                return ended;
            }
            replayed = Some(ended);
        }
        let Some(judge) = self.judge.clone() else {
            return self.act(cancel).await;
        };
        loop {
            let ended = match replayed.take() {
                Some(ended) => ended,
                None => self.act(cancel).await,
            };
            if let Some(verdicts) = self.write_checks.as_ref().and_then(|w| w.take_converged()) {
                self.attempts = self.attempt.load(Ordering::Relaxed);
                self.verdicts = summarise(&verdicts);
                return ended;
            }
            let budget_spent = ended.outcome == Outcome::Stopped && ended.budget.is_some();
            if ended.outcome != Outcome::Done && !budget_spent {
                return ended;
            }
            // A budget that ran out ends the attempts; the checks still say where the work
            // stands, for the summary.
            let attempt = self.attempt.load(Ordering::Relaxed);
            let (verdicts, events) = feedback::run(
                &judge,
                CheckOn::Done,
                attempt,
                self.performance.conversation(),
                cancel,
            )
            .await;
            self.attempts = attempt;
            let mut logged = events;
            logged.push(improv_feedback::attempt_event(
                &verdicts,
                attempt,
                self.max_attempts,
            ));
            for kind in logged {
                if let Err(e) = self.performance.emit(kind) {
                    return Ended::new(Outcome::Failed, format!("the event log failed: {e}"));
                }
            }
            self.verdicts = summarise(&verdicts);
            if cancel.is_cancelled() {
                return Ended::new(Outcome::Interrupted, "interrupted by the director");
            }
            if improv_feedback::all_passed(&verdicts) {
                let reason = format!(
                    "every check passed on attempt {attempt} of {}",
                    self.max_attempts
                );
                return Ended::new(Outcome::Converged, reason).with_budget(ended.budget);
            }
            if budget_spent || attempt >= self.max_attempts {
                let why = if budget_spent {
                    ended.reason.clone()
                } else {
                    let n = self.max_attempts;
                    format!("{n} attempt{} used", if n == 1 { "" } else { "s" })
                };
                let reason = format!("{why}; still failing: {}", failed_names(&verdicts));
                return Ended::new(Outcome::Exhausted, reason).with_budget(ended.budget);
            }
            let note = improv_feedback::note(&verdicts, attempt, self.max_attempts);
            self.attempt.store(attempt + 1, Ordering::Relaxed);
            if let Err(e) = self.performance.direct(&note) {
                return Ended::new(Outcome::Failed, format!("the event log failed: {e}"));
            }
        }
    }

    /// Performs the intent with the approved routine chosen for it, without a model: the end
    /// when it converged or an edge stopped it; `None` when there is none, or the lead takes
    /// over (a director note says from where).
    async fn replay_routine(&mut self, cancel: &CancellationToken) -> Option<Ended> {
        let chosen = self.replay.take()?;
        let attempt = self.attempt.load(Ordering::Relaxed);
        let replayed = crate::routines::replay(
            &mut self.performance,
            self.judge.as_ref(),
            attempt,
            self.max_attempts,
            chosen,
            cancel,
        )
        .await;
        if !replayed.verdicts.is_empty() {
            self.attempts = attempt;
            self.verdicts = summarise(&replayed.verdicts);
            if replayed.ended.is_none() && attempt < self.max_attempts {
                self.attempt.store(attempt + 1, Ordering::Relaxed);
            }
        }
        replayed.ended
    }

    /// Ends the performance: logs its end, then drops the edges, whose sandbox kills whatever
    /// the actors left running.
    pub fn finish(mut self, ended: &Ended) -> Result<Summary, PerformError> {
        if let Some(inbox) = self.inbox.take() {
            inbox.close();
        }
        let answer = last_text(self.performance.conversation());
        let id = self.performance.id().to_string();
        let spent = self.performance.finish(ended)?;
        if ended.outcome == Outcome::Converged {
            crate::routines::learn(&self.stage, &id);
        }
        if let Some(sandbox) = &self.edges.sandbox {
            sandbox.reap();
        }
        Ok(Summary {
            id,
            outcome: ended.outcome,
            reason: ended.reason.clone(),
            budget: ended.budget,
            attempts: self.attempts,
            verdicts: self.verdicts,
            spent,
            answer,
        })
    }
}

/// The verdicts as the summary keeps them: (check, passed, output).
fn summarise(verdicts: &[Verdict]) -> Vec<(String, bool, String)> {
    verdicts
        .iter()
        .map(|v| (v.check.clone(), v.passed, v.output.clone()))
        .collect()
}

fn failed_names(verdicts: &[Verdict]) -> String {
    let names: Vec<&str> = verdicts
        .iter()
        .filter(|v| !v.passed)
        .map(|v| v.check.as_str())
        .collect();
    names.join(", ")
}

/// The stage's workspace, canonical.
fn workspace(stage: &Stage) -> Result<PathBuf, PerformError> {
    let root = stage.workspace();
    root.canonicalize().map_err(|e| {
        PerformError::Stage(format!(
            "the stage's workspace {} cannot be used ({e}); create it or fix `workspace` under [edges] in {}",
            root.display(),
            stage.path.display()
        ))
    })
}

/// The text of the conversation's last assistant message that has some.
pub(crate) fn last_text(conversation: &[Message]) -> String {
    conversation
        .iter()
        .rev()
        .find_map(|m| match m {
            Message::Assistant { text, .. } if !text.trim().is_empty() => Some(text.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The log and the views behind one redaction: each event is checked for secrets once, then
/// handed to all of them, the log first.
pub(crate) fn observe(
    edges: &Edges,
    log: Arc<dyn Observer>,
    view: Option<Arc<dyn Observer>>,
) -> Arc<dyn Observer> {
    let inner: Arc<dyn Observer> = match view {
        Some(view) => Arc::new(FanOut(vec![log, view])),
        None => log,
    };
    Arc::new(RedactingObserver::new(inner, edges.redactor.clone()))
}

/// Several views as one; `None` for none.
pub(crate) fn fan_out(mut views: Vec<Arc<dyn Observer>>) -> Option<Arc<dyn Observer>> {
    match views.len() {
        0 => None,
        1 => views.pop(),
        _ => Some(Arc::new(FanOut(views))),
    }
}

/// Observers as one; all always see the event, and the first error is reported.
struct FanOut(Vec<Arc<dyn Observer>>);

impl Observer for FanOut {
    fn observe(&self, event: &Event) -> Result<(), ObserveError> {
        let mut first = Ok(());
        for o in &self.0 {
            if let Err(e) = o.observe(event)
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        first
    }

    fn settled(&self) -> improv_kernel::Settling<'_> {
        Box::pin(async move {
            for o in &self.0 {
                o.settled().await?;
            }
            Ok(())
        })
    }
}
