//! `routine.NAME`: an approved routine offered to an actor as a prop. Calling it runs the
//! recorded steps with the given parameters through the actor's own props, the ones already
//! inside the edges (policy, sandbox, approvals), so a step is allowed or denied exactly as the
//! actor's own call would be; each step counts against the performance's budget like the
//! actor's own calls ([`improv_kernel::Meter`]), and none runs once the performance is stopped
//! (Ctrl-C, a lost lease). It stops at the first step whose result fails its guard, or that a
//! budget refuses, and says what happened, so the actor goes on from there.

use crate::guard::{Settled, clip};
use crate::routine::Routine;
use async_trait::async_trait;
use improv_kernel::{Access, EventKind, Prop, PropContext, PropError, ToolCall, ToolSpec};
use std::collections::BTreeMap;
use std::sync::Arc;

/// An approved routine as a prop.
pub struct RoutineProp {
    routine: Routine,
    spec: ToolSpec,
    /// The actor's props, each already wrapped in the edges.
    props: Vec<Arc<dyn Prop>>,
    /// The ledger's settled schemas, for steps guarded by one.
    settled: Option<Arc<dyn Settled>>,
}

impl RoutineProp {
    pub fn new(
        routine: Routine,
        props: Vec<Arc<dyn Prop>>,
        settled: Option<Arc<dyn Settled>>,
    ) -> Self {
        let properties: serde_json::Map<String, serde_json::Value> = routine
            .parameters
            .iter()
            .map(|p| (p.name.clone(), serde_json::json!({"type": "string"})))
            .collect();
        let required: Vec<&str> = routine.parameters.iter().map(|p| p.name.as_str()).collect();
        let spec = ToolSpec {
            name: routine.prop_name(),
            description: format!("Replay a practised routine: {}", routine.intent),
            parameters: serde_json::json!({
                "type": "object",
                "properties": properties,
                "required": required,
            }),
        };
        RoutineProp {
            routine,
            spec,
            props,
            settled,
        }
    }

    async fn steps(
        &self,
        values: &BTreeMap<String, String>,
        context: &PropContext,
        within: &str,
    ) -> Result<(u32, Vec<String>), (u32, String)> {
        let name = &self.routine.name;
        let calls = self.routine.calls(values).map_err(|e| (0, e.to_string()))?;
        let mut outputs = Vec::new();
        for (i, call) in calls.into_iter().enumerate() {
            let step = i as u32 + 1;
            // Between steps, as between an actor's turns: a performance stopped (Ctrl-C, a
            // worker that lost its lease) replays nothing more, and a spent budget refuses the
            // step as it would the actor's next call.
            if context.cancel.is_cancelled() {
                return Err((
                    step,
                    format!("step {step} not run: the performance was stopped"),
                ));
            }
            if let Err(ended) = context.meter.charge() {
                return Err((step, format!("step {step} not run: {}", ended.reason)));
            }
            let emit = context.events.emit(EventKind::RoutineStep {
                routine: name.clone(),
                step,
                call: ToolCall {
                    id: format!("{within}.{step}"),
                    name: call.prop.clone(),
                    arguments: call.arguments.to_string(),
                },
                within: Some(within.to_string()),
            });
            emit.map_err(|e| (step, format!("the event log failed: {e}")))?;
            let Some(prop) = self.props.iter().find(|p| p.spec().name == call.prop) else {
                return Err((step, format!("this actor has no prop `{}`", call.prop)));
            };
            let result = prop.call(call.arguments, context).await;
            let (ok, output) = match result {
                Ok(o) => (true, o),
                Err(e) => (false, e.into_message()),
            };
            if let Some(why) = call.guard.deviation(ok, &output, self.settled.as_deref()) {
                let prop = &call.prop;
                return Err((step, format!("step {step} (`{prop}`) deviated: {why}")));
            }
            outputs.push(format!("{step}. {}: {}", call.prop, clip(&output, 200)));
        }
        Ok((outputs.len() as u32, outputs))
    }
}

#[async_trait]
impl Prop for RoutineProp {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn access(&self, _arguments: &serde_json::Value) -> Access {
        Access::Write
    }

    async fn call(
        &self,
        arguments: serde_json::Value,
        context: &PropContext,
    ) -> Result<String, PropError> {
        let mut values = BTreeMap::new();
        for p in &self.routine.parameters {
            match arguments.get(&p.name).and_then(|v| v.as_str()) {
                Some(v) => {
                    values.insert(p.name.clone(), v.to_string());
                }
                None => {
                    return Err(PropError::new(format!(
                        "`{}` needs the parameter `{}` (a string)",
                        self.spec.name, p.name
                    )));
                }
            }
        }
        let within = format!("{}-{}", self.spec.name, context.performance);
        let routine = self.routine.name.clone();
        let started = context.events.emit(EventKind::RoutineStarted {
            routine: routine.clone(),
            parameters: values.clone(),
            steps: self.routine.steps.len() as u32,
            within: Some(within.clone()),
        });
        started.map_err(|e| PropError::new(format!("the event log failed: {e}")))?;
        let result = self.steps(&values, context, &within).await;
        let (ok, steps_run, deviation) = match &result {
            Ok((n, _)) => (true, *n, None),
            Err((step, why)) => (false, step.saturating_sub(1), Some(why.clone())),
        };
        let finished = context.events.emit(EventKind::RoutineFinished {
            routine,
            ok,
            steps_run,
            deviation,
        });
        finished.map_err(|e| PropError::new(format!("the event log failed: {e}")))?;
        match result {
            Ok((_, outputs)) => Ok(outputs.join("\n")),
            Err((_, why)) => Err(PropError::new(format!("{why}; go on from there yourself"))),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::guard::Guard;
    use crate::routine::{Provenance, Record, Stability, Status, Step};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A prop that counts its calls, and stops the performance when `stops` is set.
    struct Probe {
        spec: ToolSpec,
        calls: AtomicU32,
        stops: bool,
    }

    #[async_trait]
    impl Prop for Probe {
        fn spec(&self) -> &ToolSpec {
            &self.spec
        }
        async fn call(
            &self,
            _arguments: serde_json::Value,
            context: &PropContext,
        ) -> Result<String, PropError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if self.stops {
                context.cancel.cancel();
            }
            Ok("done".into())
        }
    }

    fn probe(name: &str, stops: bool) -> Arc<Probe> {
        Arc::new(Probe {
            spec: ToolSpec {
                name: name.into(),
                description: String::new(),
                parameters: serde_json::json!({"type": "object"}),
            },
            calls: AtomicU32::new(0),
            stops,
        })
    }

    fn routine(props: &[&str]) -> Routine {
        Routine {
            name: "steps".into(),
            description: String::new(),
            status: Status::Approved,
            stability: Stability::Stable,
            intent: "Do the steps".into(),
            parameters: Vec::new(),
            checks: Vec::new(),
            retired_because: None,
            provenance: Provenance::default(),
            record: Record::default(),
            steps: props
                .iter()
                .map(|p| Step {
                    prop: p.to_string(),
                    guard: Guard::default(),
                    args: serde_json::Map::new(),
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn a_stopped_performance_replays_no_further_step() {
        let (first, second) = (probe("first", true), probe("second", false));
        let props: Vec<Arc<dyn Prop>> = vec![first.clone(), second.clone()];
        let prop = RoutineProp::new(routine(&["first", "second"]), props, None);
        let dir = tempfile::tempdir().unwrap();
        let context = PropContext::new(dir.path(), "lead", "p1");
        let err = prop
            .call(serde_json::json!({}), &context)
            .await
            .unwrap_err();
        assert_eq!(first.calls.load(Ordering::SeqCst), 1);
        assert_eq!(
            second.calls.load(Ordering::SeqCst),
            0,
            "the step after the stop did not run"
        );
        assert!(
            err.message()
                .contains("step 2 not run: the performance was stopped"),
            "{}",
            err.message()
        );
    }
}
