//! The `cue` prop: an actor asks another, by name, to do something. The cued actor performs a
//! sub-performance with its own budget, logged under its own id, and its answer comes back as
//! the call's result. Cues are reads to the loop, so several cues in one reply run at once.
//! Nothing is pre-wired: who cues whom is the actors' call, within `cues` and `cue_depth`.

use crate::cast::Cast;
use crate::production::{last_text, observe};
use crate::trace;
use async_trait::async_trait;
use improv_kernel::performance::new_id;
use improv_kernel::{Access, EventKind, Outcome, Prop, PropContext, PropError, ToolSpec};
use improv_stage::ActorConfig;
use serde_json::{Value, json};
use std::sync::Arc;

/// The longest answer passed back, in characters; the cued actor can post details on the board
/// or in a file.
const ANSWER_LIMIT: usize = 8_000;

pub struct CueProp {
    cast: Arc<Cast>,
    from: String,
    /// The actors `from` may cue.
    cueable: Vec<String>,
    depth: u32,
    spec: ToolSpec,
}

impl CueProp {
    /// The cue prop of actor `from`, performing at cue depth `depth`.
    pub fn new(cast: Arc<Cast>, from: &ActorConfig, depth: u32) -> Self {
        let cueable: Vec<String> = cast
            .stage
            .actors
            .iter()
            .filter(|a| a.name != from.name)
            .filter(|a| from.cues.as_ref().is_none_or(|c| c.contains(&a.name)))
            .map(|a| a.name.clone())
            .collect();
        let who: Vec<String> = cueable
            .iter()
            .map(|name| {
                let role = cast
                    .stage
                    .actor(name)
                    .and_then(|a| a.role.as_deref())
                    .map(first_sentence)
                    .unwrap_or_default();
                if role.is_empty() {
                    name.clone()
                } else {
                    format!("{name} ({role})")
                }
            })
            .collect();
        let spec = ToolSpec {
            name: "cue".into(),
            description: format!(
                "Ask another actor to do a task; returns its answer. Several cues in one reply run at once. Actors: {}.",
                who.join("; ")
            ),
            parameters: json!({
                "type": "object",
                "properties": {
                    "actor": {"type": "string", "enum": cueable},
                    "task": {"type": "string"}
                },
                "required": ["actor", "task"]
            }),
        };
        CueProp {
            cast,
            from: from.name.clone(),
            cueable,
            depth,
            spec,
        }
    }
}

/// The first sentence of a role, at most 80 characters: enough to choose whom to cue.
fn first_sentence(role: &str) -> String {
    let end = role.find(['.', '\n']).unwrap_or(role.len());
    let s: String = role[..end].chars().take(80).collect();
    s.trim().to_string()
}

#[async_trait]
impl Prop for CueProp {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn access(&self, _arguments: &Value) -> Access {
        Access::Read
    }

    async fn call(&self, arguments: Value, context: &PropContext) -> Result<String, PropError> {
        let actor = arguments
            .get("actor")
            .and_then(Value::as_str)
            .ok_or_else(|| PropError::new("`actor` must name the actor to cue"))?;
        let task = arguments
            .get("task")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| PropError::new("`task` must say what the actor should do"))?;
        if !self.cueable.iter().any(|a| a == actor) {
            return Err(PropError::new(format!(
                "`{}` cannot cue `{actor}`; the actors it can cue are: {}",
                self.from,
                self.cueable.join(", ")
            )));
        }
        let cast = &self.cast;
        let depth = self.depth + 1;
        let performer = cast
            .actor(actor, depth)
            .map_err(|e| PropError::new(format!("cannot cast `{actor}`: {e:#}")))?;
        let id = new_id();
        let logged = |e: improv_kernel::ObserveError| {
            PropError::new(format!("the cue could not be logged: {e}"))
        };
        context
            .events
            .emit(EventKind::CueStarted {
                to: actor.to_string(),
                task: task.to_string(),
                performance: id.clone(),
            })
            .map_err(logged)?;
        let recorder = cast
            .log
            .recorder(&id)
            .map_err(|e| PropError::new(format!("cannot log the cue: {e}")))?;
        // Traced too, under the cue call's span (`trace` links them by the id just logged).
        let views = cast.watch.as_ref().map(|w| w());
        let view = crate::production::fan_out(views.into_iter().chain(trace::observer()).collect());
        let builder = cast.performance(performer).id(id.clone()).observer(observe(
            &cast.edges,
            recorder,
            view,
        ));
        let brief = format!(
            "{} cues you: {task}\nDo it with your props, then answer with what you found or did; your answer goes back to {}.",
            self.from, self.from
        );
        let mut sub = builder
            .start(&brief)
            .map_err(|e| PropError::new(format!("the cue could not be logged: {e}")))?;
        let ended = sub.act(&context.cancel).await;
        let answer = last_text(sub.conversation());
        let spent = sub.finish(&ended).map_err(logged)?;
        context
            .events
            .emit(EventKind::CueFinished {
                to: actor.to_string(),
                performance: id.clone(),
                outcome: ended.outcome,
                spent,
            })
            .map_err(logged)?;
        let mut answer = clip(&answer, ANSWER_LIMIT);
        if answer.trim().is_empty() {
            answer = "(no answer)".into();
        }
        match ended.outcome {
            Outcome::Done | Outcome::Converged => Ok(format!("{actor} answers: {answer}")),
            other => Err(PropError::new(format!(
                "{actor} did not finish ({}: {}); its last words: {answer}",
                other.as_str(),
                ended.reason
            ))),
        }
    }
}

fn clip(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_string();
    }
    let kept: String = text.chars().take(limit).collect();
    format!("{kept}… (cut at {limit} characters)")
}
