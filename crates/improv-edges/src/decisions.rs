//! Policy decisions into the performance's log. A decision is made inside a prop call, where no
//! event can be emitted; [`DecisionEvents`] collects them ([`Policy::on_decision`]) and, as a
//! kernel [`Hook`], hands them to the loop before the next model call, so every decision is a
//! `policy_decision` event, in order, between turns.
//!
//! ```no_run
//! # use improv_edges::{DecisionEvents, PathEdges, Policy, Unattended};
//! # use std::sync::Arc;
//! let decisions = Arc::new(DecisionEvents::default());
//! let policy = Policy::new(&[], &PathEdges::default(), Arc::new(Unattended))
//!     .unwrap()
//!     .on_decision(decisions.recorder());
//! // builder.hook(decisions.clone()); after the performance, emit `decisions.take()` too.
//! ```
//!
//! [`Policy::on_decision`]: crate::Policy::on_decision

use crate::policy::PolicyDecision;
use async_trait::async_trait;
use improv_kernel::{Between, Control, EventKind, Hook};
use std::sync::{Arc, Mutex};

/// Decisions made since the loop last asked, waiting to become events.
#[derive(Default)]
pub struct DecisionEvents {
    pending: Mutex<Vec<EventKind>>,
}

impl DecisionEvents {
    /// Queues a decision as its event.
    pub fn record(&self, decision: &PolicyDecision) {
        self.lock().push(event(decision));
    }

    /// A callback for [`Policy::on_decision`](crate::Policy::on_decision) that queues here.
    pub fn recorder(self: &Arc<Self>) -> impl Fn(&PolicyDecision) + Send + Sync + 'static {
        let queue = self.clone();
        move |decision| queue.record(decision)
    }

    /// The queued events, oldest first; the queue is left empty. For the decisions of a
    /// performance's last turn, which no model call follows.
    pub fn take(&self) -> Vec<EventKind> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<EventKind>> {
        // Poisoning needs a panic while pushing; the queue is still sound then.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The `policy_decision` event of a decision (the actor is on the event itself).
pub fn event(d: &PolicyDecision) -> EventKind {
    EventKind::PolicyDecision {
        prop: d.prop.clone(),
        subject: d.subject.clone(),
        decision: d.decision.clone(),
        rule: d.rule.clone(),
        note: d.note.clone(),
    }
}

#[async_trait]
impl Hook for DecisionEvents {
    async fn between_turns(&self, at: &mut Between<'_>) -> Control {
        at.events.extend(self.take());
        Control::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Decision, Guarded, PathEdges, Policy, Rule, Unattended};
    use improv_kernel::{
        Actor, Event, ObserveError, Observer, Performance, Prop, ScriptedModel, ScriptedTurn,
    };

    #[derive(Default)]
    struct Collect(Mutex<Vec<Event>>);

    impl Observer for Collect {
        fn observe(&self, event: &Event) -> Result<(), ObserveError> {
            self.0.lock().unwrap().push(event.clone());
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_decision_made_in_a_call_is_logged_before_the_next_model_call() {
        let dir = tempfile::tempdir().unwrap();
        let decisions = Arc::new(DecisionEvents::default());
        let rule = Rule {
            prop: Some("bash".into()),
            command: Some("curl*".into()),
            path: None,
            decision: Decision::Deny,
        };
        let policy = Arc::new(
            Policy::new(&[rule], &PathEdges::default(), Arc::new(Unattended))
                .unwrap()
                .on_decision(decisions.recorder()),
        );
        let bash: Arc<dyn Prop> = Arc::new(improv_props::Bash::new(
            std::time::Duration::from_secs(30),
            1024,
        ));
        let model = Arc::new(ScriptedModel::new(vec![
            ScriptedTurn::call(
                "bash",
                serde_json::json!({"command": "curl http://x.invalid"}),
            ),
            ScriptedTurn::say("done"),
        ]));
        let collect = Arc::new(Collect::default());
        let actor = Actor {
            name: "lead".into(),
            system: "test".into(),
            model,
            props: Guarded::all(vec![bash], &policy),
            max_output_tokens: None,
        };
        let mut performance = Performance::builder(actor)
            .workspace(dir.path())
            .hook(decisions.clone())
            .observer(collect.clone())
            .start("go")
            .unwrap();
        let ended = performance.act(&Default::default()).await;
        performance.finish(&ended).unwrap();
        assert!(decisions.take().is_empty(), "all drained by the loop");
        let events = collect.0.lock().unwrap();
        let names: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
        let at = names.iter().position(|n| *n == "policy_decision").unwrap();
        assert_eq!(names[at - 1], "tool_call_finished", "{names:?}");
        assert_eq!(names[at + 1], "turn_started", "{names:?}");
        let EventKind::PolicyDecision {
            prop,
            subject,
            decision,
            rule,
            ..
        } = &events[at].kind
        else {
            unreachable!()
        };
        assert_eq!(
            (prop.as_str(), subject.as_str(), decision.as_str()),
            ("bash", "curl http://x.invalid", "deny")
        );
        assert!(rule.contains("curl*"), "{rule}");
        assert_eq!(events[at].actor.as_deref(), Some("lead"));
    }
}
