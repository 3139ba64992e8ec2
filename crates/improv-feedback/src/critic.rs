//! Critics: actors that judge the work by a rubric. [`Critic`] is what a [`Judge`](crate::Judge)
//! asks; [`ActorCritic`] answers by performing the critic actor in the kernel loop with one
//! extra prop, `verdict`, whose call is its structured answer: `{pass, notes}`.

use async_trait::async_trait;
use improv_kernel::{
    Access, Actor, Between, Budget, Control, Hook, Observer, Outcome, Performance, Prop,
    PropContext, PropError, ToolSpec,
};
use serde::Deserialize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// The name of the prop a critic answers with.
pub const VERDICT_PROP: &str = "verdict";

/// The turns a critic's performance may take when [`ActorCritic::budget`] says nothing.
pub const DEFAULT_CRITIC_TURNS: u32 = 20;

/// A critic's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub pass: bool,
    /// What is wrong and how to fix it; what holds, when it passes.
    pub notes: String,
}

/// Why a critic gave no verdict. The check fails with this message.
#[derive(Debug, thiserror::Error)]
pub enum CriticError {
    #[error("critic `{critic}` could not be cast: {reason}")]
    Cast { critic: String, reason: String },
    #[error(
        "critic `{critic}` ended without calling `verdict`, even when reminded, so the check fails; give it a role that says to end with `verdict`, or a model that calls tools reliably"
    )]
    NoVerdict { critic: String },
    #[error("critic `{critic}` stopped before its verdict: {reason}")]
    Stopped { critic: String, reason: String },
}

/// Judges the work: `critic` is the actor's name, `rubric` what it judges by, `brief` what the
/// performing actor was asked and what it says it did (see [`brief`](crate::brief)).
#[async_trait]
pub trait Critic: Send + Sync {
    async fn judge(
        &self,
        critic: &str,
        rubric: &str,
        brief: &str,
    ) -> Result<Judgement, CriticError>;
}

/// Builds the actor named so: its model, role and own props, as the stage casts it.
pub type Casting = dyn Fn(&str) -> Result<Actor, String> + Send + Sync;

/// A [`Critic`] that performs the critic actor: it reads the work with its own props and must end
/// by calling `verdict`. One reminder is given when it ends its turn without one.
pub struct ActorCritic {
    cast: Arc<Casting>,
    workspace: PathBuf,
    stage: String,
    budget: Budget,
    observers: Vec<Arc<dyn Observer>>,
}

impl ActorCritic {
    /// Critics performing in `workspace`, cast by `cast` (the name of the critic → its actor).
    pub fn new(
        workspace: impl Into<PathBuf>,
        cast: impl Fn(&str) -> Result<Actor, String> + Send + Sync + 'static,
    ) -> Self {
        ActorCritic {
            cast: Arc::new(cast),
            workspace: workspace.into(),
            stage: String::new(),
            budget: Budget {
                max_turns: Some(DEFAULT_CRITIC_TURNS),
                ..Budget::default()
            },
            observers: Vec::new(),
        }
    }

    /// The stage's name, for the critic's `performance_started` event.
    pub fn stage(mut self, name: impl Into<String>) -> Self {
        self.stage = name.into();
        self
    }

    /// The budget of each critic's performance (by default [`DEFAULT_CRITIC_TURNS`] turns).
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }

    /// Sees every event of every critic's performance (each has its own performance id).
    pub fn observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.observers.push(observer);
        self
    }
}

/// The intent a critic performs.
fn intent(rubric: &str, brief: &str) -> String {
    let rubric = rubric.trim();
    let rubric = if rubric.is_empty() {
        "Is the work correct and complete?"
    } else {
        rubric
    };
    format!(
        "Judge the work in this workspace. Look at it with your props; change nothing.\n\
         Rubric: {rubric}\n\n{}\n\n\
         End by calling `verdict` once: pass true or false, and notes saying what is wrong and how to fix it.",
        brief.trim()
    )
}

const REMINDER: &str = "You ended without a verdict. Call `verdict` now with pass and notes.";

#[async_trait]
impl Critic for ActorCritic {
    async fn judge(
        &self,
        critic: &str,
        rubric: &str,
        brief: &str,
    ) -> Result<Judgement, CriticError> {
        let mut actor = (self.cast)(critic).map_err(|reason| CriticError::Cast {
            critic: critic.into(),
            reason,
        })?;
        let given = Arc::new(Mutex::new(None));
        actor.props.retain(|p| p.spec().name != VERDICT_PROP);
        actor.props.push(Arc::new(VerdictProp::new(given.clone())));
        let mut builder = Performance::builder(actor)
            .stage(self.stage.clone())
            .workspace(self.workspace.clone())
            .budget(self.budget.clone())
            .hook(Arc::new(StopAtVerdict(given.clone())));
        for o in &self.observers {
            builder = builder.observer(o.clone());
        }
        let stopped = |reason: String| CriticError::Stopped {
            critic: critic.into(),
            reason,
        };
        let mut performance = builder
            .start(&intent(rubric, brief))
            .map_err(|e| stopped(e.to_string()))?;
        // Dropping this future (the judge's timeout or cancel) drops the performance, whose
        // props stop with it; the token is for the kernel's own bookkeeping.
        let cancel = CancellationToken::new();
        let mut ended = performance.act(&cancel).await;
        if ended.outcome == Outcome::Done && taken(&given).is_none() {
            match performance.direct(REMINDER) {
                Ok(()) => ended = performance.act(&cancel).await,
                Err(e) => return Err(stopped(e.to_string())),
            }
        }
        // The verdict is what matters; a log that failed at the very end does not undo it.
        let _ = performance.finish(&ended);
        match taken(&given) {
            Some(j) => Ok(j),
            None if ended.outcome == Outcome::Done => Err(CriticError::NoVerdict {
                critic: critic.into(),
            }),
            None => Err(stopped(ended.reason)),
        }
    }
}

fn taken(given: &Mutex<Option<Judgement>>) -> Option<Judgement> {
    // Poisoning needs a panic while the lock is held, which leaves the Option whole.
    given.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VerdictArgs {
    pass: bool,
    #[serde(default)]
    notes: String,
}

/// The `verdict` prop: records the critic's answer.
struct VerdictProp {
    spec: ToolSpec,
    given: Arc<Mutex<Option<Judgement>>>,
}

impl VerdictProp {
    fn new(given: Arc<Mutex<Option<Judgement>>>) -> Self {
        VerdictProp {
            spec: ToolSpec {
                name: VERDICT_PROP.into(),
                description: "Give your verdict on the work. Call once, last.".into(),
                parameters: serde_json::json!({
                    "type": "object",
                    "properties": {
                        "pass": {"type": "boolean"},
                        "notes": {"type": "string"}
                    },
                    "required": ["pass", "notes"]
                }),
            },
            given,
        }
    }
}

#[async_trait]
impl Prop for VerdictProp {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn access(&self, _arguments: &serde_json::Value) -> Access {
        Access::Write
    }

    async fn call(
        &self,
        arguments: serde_json::Value,
        _context: &PropContext,
    ) -> Result<String, PropError> {
        let args: VerdictArgs = serde_json::from_value(arguments).map_err(|e| {
            PropError::new(format!(
                "verdict: {e}; call it with {{\"pass\": true or false, \"notes\": \"...\"}}"
            ))
        })?;
        *self.given.lock().unwrap_or_else(|e| e.into_inner()) = Some(Judgement {
            pass: args.pass,
            notes: args.notes,
        });
        Ok("verdict recorded".into())
    }
}

/// Ends the critic's performance once it has given its verdict.
struct StopAtVerdict(Arc<Mutex<Option<Judgement>>>);

#[async_trait]
impl Hook for StopAtVerdict {
    async fn between_turns(&self, _at: &mut Between<'_>) -> Control {
        if taken(&self.0).is_some() {
            Control::Stop {
                outcome: Outcome::Done,
                reason: "the critic gave its verdict".into(),
                budget: None,
            }
        } else {
            Control::Continue
        }
    }
}
