//! Feedback: the checks a stage's work must pass, run when an actor says it is done (or after
//! every write), and their verdicts turned into a short director note that goes back into the
//! conversation until the work converges.
//!
//! A [`Judge`] holds a stage's checks and runs those due at a moment ([`CheckOn`]):
//!
//! - a **command** passes with exit code 0; it runs with `bash -c` in the workspace, in the same
//!   sandbox as the actors' shell commands when one is given, and the tail of its output is the
//!   verdict ([`command`]);
//! - a **file** assertion: the file exists (or must not), contains a text, matches a regular
//!   expression, or is JSON that satisfies a JSON Schema ([`file`](mod@file));
//! - a **critic**: an actor that reads the work by a rubric and returns pass or fail with notes
//!   ([`critic`]). Critics run only when every other check of the moment passed: judging work
//!   that fails its tests would be money spent for nothing.
//!
//! [`note`] writes what goes back to the actor; [`brief`] sums up for a critic what the actor was
//! asked and what it says it did. [`Verdict::event`] and [`attempt_event`] are the kernel events
//! an attempt records.
//!
//! ```no_run
//! # async fn demo(stage: &improv_stage::Stage) -> Result<(), improv_feedback::FeedbackError> {
//! use improv_feedback::{Judge, note};
//! use improv_stage::CheckOn;
//! let judge = Judge::new(stage.feedback.checks.clone(), &stage.workspace(), &stage.dir)?;
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let verdicts = judge.judge(CheckOn::Done, "the task and the actor's report", &cancel).await;
//! if verdicts.iter().any(|v| !v.passed) {
//!     println!("{}", note(&verdicts, 1, stage.feedback.max_attempts));
//! }
//! # Ok(()) }
//! ```

pub mod command;
pub mod critic;
pub mod file;
mod note;

pub use critic::{ActorCritic, Critic, CriticError, Judgement, VERDICT_PROP};
pub use note::{brief, is_failing_note, note, write_note};

use futures::future::join_all;
use improv_edges::Sandbox;
use improv_kernel::EventKind;
use improv_stage::{Check, CheckOn};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long a command check may run when its `timeout` says nothing.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// How long a critic may take to give its verdict when its check's `timeout` says nothing.
pub const DEFAULT_CRITIC_TIMEOUT: Duration = Duration::from_secs(10 * 60);

/// The most of a check's output kept in its verdict: the tail of a command's output (where
/// test runners and compilers sum up), the head of a critic's notes.
pub const OUTPUT_LIMIT: usize = 2048;

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// The check's name.
    pub check: String,
    pub passed: bool,
    /// What the actor should read: the command's trimmed output, the assertion that failed,
    /// the critic's notes.
    pub output: String,
    pub duration_ms: f64,
}

impl Verdict {
    /// The `check_finished` event of this verdict in `attempt`, run at moment `on`.
    pub fn event(&self, attempt: u32, on: CheckOn) -> EventKind {
        EventKind::CheckFinished {
            attempt,
            check: self.check.clone(),
            on: on.as_str().to_string(),
            passed: self.passed,
            output: self.output.clone(),
            duration_ms: self.duration_ms,
        }
    }
}

/// The `attempt_finished` event of an attempt whose checks gave `verdicts`.
pub fn attempt_event(verdicts: &[Verdict], attempt: u32, max_attempts: u32) -> EventKind {
    EventKind::AttemptFinished {
        attempt,
        max_attempts,
        passed: all_passed(verdicts),
        failed: verdicts
            .iter()
            .filter(|v| !v.passed)
            .map(|v| v.check.clone())
            .collect(),
    }
}

/// Whether every verdict passed (true for none: a stage without checks converges when its
/// actor is done).
pub fn all_passed(verdicts: &[Verdict]) -> bool {
    verdicts.iter().all(|v| v.passed)
}

/// Why a [`Judge`] could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    #[error(
        "the workspace {path} cannot be opened for the checks: {source}; create it or fix `workspace` under [edges]"
    )]
    Workspace {
        path: String,
        source: std::io::Error,
    },
}

/// Runs a stage's checks. Cheap to keep for a whole performance and to call once per attempt.
pub struct Judge {
    checks: Vec<Check>,
    workspace: Arc<Path>,
    stage_dir: PathBuf,
    sandbox: Option<Arc<Sandbox>>,
    critic: Option<Arc<dyn Critic>>,
}

impl std::fmt::Debug for Judge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Judge")
            .field("checks", &self.checks.len())
            .field("workspace", &self.workspace)
            .field("sandboxed", &self.sandbox.is_some())
            .field("critic", &self.critic.is_some())
            .finish()
    }
}

impl Judge {
    /// A judge of `checks` on the work in `workspace` (made canonical here); relative schema
    /// paths are found in `stage_dir`. Commands run unsandboxed and critic checks fail until
    /// [`with_sandbox`](Judge::with_sandbox) and [`with_critic`](Judge::with_critic) say
    /// otherwise.
    pub fn new(
        checks: Vec<Check>,
        workspace: &Path,
        stage_dir: &Path,
    ) -> Result<Judge, FeedbackError> {
        let workspace = workspace
            .canonicalize()
            .map_err(|source| FeedbackError::Workspace {
                path: workspace.display().to_string(),
                source,
            })?;
        Ok(Judge {
            checks,
            workspace: workspace.into(),
            stage_dir: stage_dir.to_path_buf(),
            sandbox: None,
            critic: None,
        })
    }

    /// Command checks run in `sandbox`: the one the actors' shell commands run in.
    pub fn with_sandbox(mut self, sandbox: Arc<Sandbox>) -> Self {
        self.sandbox = Some(sandbox);
        self
    }

    /// Critic checks ask `critic` (usually an [`ActorCritic`]).
    pub fn with_critic(mut self, critic: Arc<dyn Critic>) -> Self {
        self.critic = Some(critic);
        self
    }

    /// The checks, as the stage gives them.
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// The canonical workspace the checks look at.
    pub fn workspace(&self) -> &Path {
        &self.workspace
    }

    /// Whether any check runs at `on`: after a write only those with `on = "write"`, when the
    /// actor is done all of them.
    pub fn has_checks(&self, on: CheckOn) -> bool {
        self.checks.iter().any(|c| due(c, on))
    }

    /// Runs the checks due at `on`, in the order written, and returns their verdicts in that
    /// order. `brief` (see [`brief`]) tells critics what the actor was asked and what it says
    /// it did. Critics run, concurrently, only when every other due check passed; a critic
    /// left out so has no verdict. When `cancel` fires, the running check fails with a note and
    /// the rest are not run.
    pub async fn judge(
        &self,
        on: CheckOn,
        brief: &str,
        cancel: &CancellationToken,
    ) -> Vec<Verdict> {
        let mut verdicts: Vec<(usize, Verdict)> = Vec::new();
        let mut critics = Vec::new();
        for (i, check) in self.checks.iter().enumerate().filter(|(_, c)| due(c, on)) {
            if check.critic.is_some() {
                critics.push((i, check));
                continue;
            }
            if cancel.is_cancelled() {
                break;
            }
            verdicts.push((i, self.run(check, brief, cancel).await));
        }
        if !cancel.is_cancelled() && verdicts.iter().all(|(_, v)| v.passed) {
            let judged = join_all(
                critics
                    .into_iter()
                    .map(|(i, c)| async move { (i, self.run(c, brief, cancel).await) }),
            )
            .await;
            verdicts.extend(judged);
        }
        verdicts.sort_by_key(|(i, _)| *i);
        verdicts.into_iter().map(|(_, v)| v).collect()
    }

    /// Runs one check, whatever its kind.
    async fn run(&self, check: &Check, brief: &str, cancel: &CancellationToken) -> Verdict {
        let began = Instant::now();
        let (passed, output) = if let Some(cmd) = &check.command {
            let limit = check.timeout.unwrap_or(DEFAULT_COMMAND_TIMEOUT);
            command::run(cmd, &self.workspace, limit, self.sandbox.as_ref(), cancel).await
        } else if let Some(name) = &check.critic {
            self.ask_critic(check, name, brief, cancel).await
        } else if check.file.is_some() {
            let (check_, workspace, stage_dir) = (
                check.clone(),
                self.workspace.clone(),
                self.stage_dir.clone(),
            );
            tokio::task::spawn_blocking(move || file::assert(&check_, &workspace, &stage_dir))
                .await
                .unwrap_or_else(|e| (false, format!("the file check stopped: {e}")))
        } else {
            (
                false,
                "this check has neither `command`, `critic` nor `file`, so it cannot pass".into(),
            )
        };
        Verdict {
            check: check.name.clone(),
            passed,
            output,
            duration_ms: began.elapsed().as_secs_f64() * 1000.0,
        }
    }

    async fn ask_critic(
        &self,
        check: &Check,
        name: &str,
        brief: &str,
        cancel: &CancellationToken,
    ) -> (bool, String) {
        let Some(critic) = &self.critic else {
            return (
                false,
                format!(
                    "no critic is set up to ask `{name}`: the performance was started without one"
                ),
            );
        };
        let rubric = check.rubric.as_deref().unwrap_or_default();
        let limit = check.timeout.unwrap_or(DEFAULT_CRITIC_TIMEOUT);
        tokio::select! {
            judged = tokio::time::timeout(limit, critic.judge(name, rubric, brief)) => match judged {
                Ok(Ok(j)) => {
                    let notes = j.notes.trim();
                    let notes = if notes.is_empty() { "(no notes)" } else { notes };
                    (j.pass, head(notes, OUTPUT_LIMIT))
                }
                Ok(Err(e)) => (false, e.to_string()),
                Err(_) => (
                    false,
                    format!(
                        "critic `{name}` gave no verdict within {}s and was stopped; give the check a longer `timeout`, or the critic a narrower rubric",
                        limit.as_secs_f64()
                    ),
                ),
            },
            () = cancel.cancelled() => (
                false,
                format!("cancelled: the performance stopped before critic `{name}` gave its verdict"),
            ),
        }
    }
}

fn due(check: &Check, on: CheckOn) -> bool {
    on == CheckOn::Done || check.on == CheckOn::Write
}

/// The end of `text`, at most `max` bytes, cut at a line start when one is near.
pub(crate) fn tail(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = text.len() - max;
    while !text.is_char_boundary(cut) {
        cut += 1;
    }
    if let Some(nl) = text[cut..].find('\n')
        && nl < max / 4
    {
        cut += nl + 1;
    }
    format!("[… earlier output omitted …]\n{}", &text[cut..])
}

/// The start of `text`, at most `max` bytes.
pub(crate) fn head(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{} [… {} more bytes]", &text[..cut], text.len() - cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_from_a_line_start() {
        let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let t = tail(&text, 100);
        assert!(t.starts_with("[… earlier output omitted …]\nline "), "{t}");
        assert!(t.ends_with("line 999\n"));
        assert!(t.len() < 140, "{}", t.len());
        assert_eq!(tail("short", 100), "short");
    }

    #[test]
    fn head_respects_characters() {
        assert_eq!(head("ééé", 3), "é [… 4 more bytes]");
        assert_eq!(head("abc", 3), "abc");
    }
}
