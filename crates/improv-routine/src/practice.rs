//! Practice: what one performance did, read back from its logged events. Only a performance
//! that converged (every check passed) without a failed call and without replaying a routine
//! teaches; anything else says why it does not.

use improv_kernel::{Event, EventKind, Outcome};
use std::collections::BTreeMap;

/// One call of the lead that succeeded.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Observed {
    pub prop: String,
    pub args: serde_json::Map<String, serde_json::Value>,
    pub output: String,
}

/// A converged performance's intent, the lead's calls in order, and the checks that passed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Practice {
    pub performance: String,
    pub intent: String,
    pub calls: Vec<Observed>,
    pub checks: Vec<String>,
}

/// Why a performance does not teach.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unfit {
    #[error("it ended {0}, not converged: only work every check passed is practice")]
    NotConverged(String),
    #[error(
        "its call to `{0}` failed: a path with a failure (even a retried, transient one) is not practice"
    )]
    FailedCall(String),
    #[error("it replayed the routine `{0}`: that is a use of a routine, not new practice")]
    Replayed(String),
    #[error("the lead called no prop")]
    NoCalls,
    #[error("a call's arguments were not a JSON object")]
    BadArguments,
    #[error("the log has no start or no end")]
    Incomplete,
}

/// Reads the practice of one performance from its events.
pub fn practice(events: &[Event]) -> Result<Practice, Unfit> {
    let mut id = None;
    let mut intent = String::new();
    let mut lead = None;
    let mut started: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut calls = Vec::new();
    let mut checks: BTreeMap<String, bool> = BTreeMap::new();
    let mut outcome = None;
    for event in events {
        match &event.kind {
            EventKind::PerformanceStarted {
                performance,
                intent: i,
                ..
            } if id.is_none() => {
                id = Some(performance.clone());
                intent = i.clone();
                lead = event.actor.clone();
            }
            EventKind::RoutineStarted { routine, .. } => {
                return Err(Unfit::Replayed(routine.clone()));
            }
            EventKind::ToolCallStarted {
                call_id,
                name,
                arguments,
            } if event.actor == lead => {
                started.insert(call_id.clone(), (name.clone(), arguments.clone()));
            }
            EventKind::ToolCallFinished {
                call_id,
                name,
                ok,
                output,
                ..
            } if event.actor == lead => {
                if !ok {
                    return Err(Unfit::FailedCall(name.clone()));
                }
                if let Some(routine) = name.strip_prefix("routine.") {
                    return Err(Unfit::Replayed(routine.to_string()));
                }
                let Some((prop, raw)) = started.remove(call_id) else {
                    continue;
                };
                let args = match serde_json::from_str::<serde_json::Value>(raw.trim()) {
                    Ok(serde_json::Value::Object(map)) => map,
                    _ if raw.trim().is_empty() => serde_json::Map::new(),
                    _ => return Err(Unfit::BadArguments),
                };
                calls.push(Observed {
                    prop,
                    args,
                    output: output.clone(),
                });
            }
            EventKind::CheckFinished { check, passed, .. } => {
                checks.insert(check.clone(), *passed);
            }
            EventKind::PerformanceFinished { outcome: o, .. } => outcome = Some(*o),
            _ => {}
        }
    }
    let (Some(performance), Some(outcome)) = (id, outcome) else {
        return Err(Unfit::Incomplete);
    };
    if outcome != Outcome::Converged {
        return Err(Unfit::NotConverged(outcome.as_str().to_string()));
    }
    if calls.is_empty() {
        return Err(Unfit::NoCalls);
    }
    Ok(Practice {
        performance,
        intent,
        calls,
        checks: checks
            .into_iter()
            .filter(|(_, passed)| *passed)
            .map(|(c, _)| c)
            .collect(),
    })
}

/// The practice of every converged performance in a stage's event log, oldest first.
pub fn from_log(log: &improv_log::EventLog) -> Result<Vec<Practice>, improv_log::LogError> {
    let mut rows = log.list(usize::MAX)?;
    rows.retain(|r| r.status == improv_log::Status::Converged);
    rows.reverse();
    let mut out = Vec::new();
    for row in rows {
        if let Ok(p) = practice(&log.events(&row.id)?) {
            out.push(p);
        }
    }
    Ok(out)
}
