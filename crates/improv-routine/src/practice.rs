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
    let mut reading = Reading::default();
    for event in events {
        reading.take(event)?;
    }
    reading.finish()
}

/// The practice of performance `id` in `log`, read one line at a time ([`improv_log::each_event`])
/// rather than the whole log at once: a chat thread's log grows with every message. `Ok(Err)`
/// says why it does not teach.
pub fn practice_in(
    log: &improv_log::EventLog,
    id: &str,
) -> Result<Result<Practice, Unfit>, improv_log::LogError> {
    let mut reading = Ok(Reading::default());
    improv_log::each_event(&log.log_path(id)?, |event| {
        if let Ok(r) = &mut reading
            && let Err(unfit) = r.take(&event)
        {
            reading = Err(unfit);
        }
    })?;
    Ok(reading.and_then(Reading::finish))
}

/// What has been read of a performance's events so far, one at a time.
#[derive(Default)]
struct Reading {
    id: Option<String>,
    intent: String,
    lead: Option<String>,
    started: BTreeMap<String, (String, String)>,
    calls: Vec<Observed>,
    checks: BTreeMap<String, bool>,
    outcome: Option<Outcome>,
}

impl Reading {
    /// Takes the next event; an error says the performance does not teach, whatever follows.
    fn take(&mut self, event: &Event) -> Result<(), Unfit> {
        match &event.kind {
            EventKind::PerformanceStarted {
                performance,
                intent,
                ..
            } if self.id.is_none() => {
                self.id = Some(performance.clone());
                self.intent = intent.clone();
                self.lead = event.actor.clone();
            }
            EventKind::RoutineStarted { routine, .. } => {
                return Err(Unfit::Replayed(routine.clone()));
            }
            EventKind::ToolCallStarted {
                call_id,
                name,
                arguments,
            } if event.actor == self.lead => {
                self.started
                    .insert(call_id.clone(), (name.clone(), arguments.clone()));
            }
            EventKind::ToolCallFinished {
                call_id,
                name,
                ok,
                output,
                ..
            } if event.actor == self.lead => {
                if !ok {
                    return Err(Unfit::FailedCall(name.clone()));
                }
                if let Some(routine) = name.strip_prefix("routine.") {
                    return Err(Unfit::Replayed(routine.to_string()));
                }
                let Some((prop, raw)) = self.started.remove(call_id) else {
                    return Ok(());
                };
                let args = match serde_json::from_str::<serde_json::Value>(raw.trim()) {
                    Ok(serde_json::Value::Object(map)) => map,
                    _ if raw.trim().is_empty() => serde_json::Map::new(),
                    _ => return Err(Unfit::BadArguments),
                };
                self.calls.push(Observed {
                    prop,
                    args,
                    output: output.clone(),
                });
            }
            EventKind::CheckFinished { check, passed, .. } => {
                self.checks.insert(check.clone(), *passed);
            }
            EventKind::PerformanceFinished { outcome, .. } => self.outcome = Some(*outcome),
            _ => {}
        }
        Ok(())
    }

    /// The practice read, or why it is none.
    fn finish(self) -> Result<Practice, Unfit> {
        let (Some(performance), Some(outcome)) = (self.id, self.outcome) else {
            return Err(Unfit::Incomplete);
        };
        if outcome != Outcome::Converged {
            return Err(Unfit::NotConverged(outcome.as_str().to_string()));
        }
        if self.calls.is_empty() {
            return Err(Unfit::NoCalls);
        }
        Ok(Practice {
            performance,
            intent: self.intent,
            calls: self.calls,
            checks: self
                .checks
                .into_iter()
                .filter(|(_, passed)| *passed)
                .map(|(c, _)| c)
                .collect(),
        })
    }
}

/// The practice of every converged performance in a stage's event log, oldest first.
pub fn from_log(log: &improv_log::EventLog) -> Result<Vec<Practice>, improv_log::LogError> {
    let mut rows = log.list(usize::MAX)?;
    rows.retain(|r| r.status == improv_log::Status::Converged);
    rows.reverse();
    let mut out = Vec::new();
    for row in rows {
        if let Ok(p) = practice_in(log, &row.id)? {
            out.push(p);
        }
    }
    Ok(out)
}
