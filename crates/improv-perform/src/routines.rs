//! Where routines plug into a production: an approved routine whose intent template matches the
//! intent is replayed in place of the lead's model turns ([`replay`]), each step through the
//! lead's own props inside the edges, then the checks judge; a step that fails its guard, or
//! checks that fail, hand the work to the lead from exactly there, with the replayed calls in
//! its conversation and a director note saying what happened. Approved routines are also
//! offered to every actor as props ([`offer`]), and after a converged performance the stage's
//! converged logs are learned from ([`learn`]).

use crate::cast::{Edges, Hints, wrap};
use crate::feedback;
use improv_feedback::{Judge, Verdict};
use improv_kernel::{Ended, EventKind, Outcome, Performance, Prop, ToolCall};
use improv_routine::{Repertoire, Routine, RoutineProp, Settled};
use improv_stage::{CheckOn, Stage};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The approved routine chosen for this performance's intent, with its parameters.
pub(crate) struct Replay {
    routine: Routine,
    /// The routine's file stem (`routines/STEM.toml`): what its record is written to, since
    /// another file may hold the same `name`.
    stem: String,
    values: BTreeMap<String, String>,
    repertoire: Repertoire,
    /// The ledger's settled schemas, when a step's guard names one.
    settled: Option<Arc<dyn Settled>>,
    /// `[routines] retire_unused`.
    retire_unused: Option<u32>,
}

/// The routine that performs `intent` without a model, when `[routines] replay` is on and an
/// approved one matches. A routines folder that cannot be read is reported and ignored.
pub(crate) fn choose(stage: &Stage, intent: &str) -> Option<Replay> {
    if !stage.routines.replay || intent.trim().is_empty() {
        return None;
    }
    let mut repertoire = open(stage)?;
    let (stem, routine, values) = repertoire.for_intent(intent)?;
    let (stem, routine) = (stem.to_string(), routine.clone());
    let plain = plain_for_commands(&routine, &values);
    if !plain {
        tracing::info!(
            "routine {} is not replayed: a value from the intent would reach a command as more than one plain word",
            routine.name
        );
    }
    if let Some(n) = stage.routines.retire_unused {
        // The others that matched serve nothing this time; the chosen one counts its replay.
        let chosen = plain.then_some(stem.as_str());
        match repertoire.note_unserved(intent, chosen, n, &improv_routine::now()) {
            Ok(retired) => report_retired(&repertoire, &retired),
            Err(e) => tracing::warn!("unserved matches were not counted: {e}"),
        }
    }
    if !plain {
        return None;
    }
    let settled = guards_settled(&routine).then(|| settled(stage)).flatten();
    Some(Replay {
        routine,
        stem,
        values,
        repertoire,
        settled,
        retire_unused: stage.routines.retire_unused,
    })
}

/// The stage's routines, with those unused longer than `[routines] retire_after` retired first
/// (each says so, in its file and here). A routines folder that cannot be read is reported and
/// ignored.
fn open(stage: &Stage) -> Option<Repertoire> {
    let mut repertoire = match Repertoire::open(&stage.dir) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("routines are not used: {e}");
            return None;
        }
    };
    if let Some(after) = stage.routines.retire_after {
        match repertoire.retire_unused(improv_routine::now_at(), after) {
            Ok(retired) => report_retired(&repertoire, &retired),
            Err(e) => tracing::warn!("routines unused for long were not retired: {e}"),
        }
    }
    Some(repertoire)
}

/// Says which routines were retired and why; `stems` are their files' stems, as
/// [`Repertoire::retire_unused`] and [`Repertoire::note_unserved`] return them.
fn report_retired(repertoire: &Repertoire, stems: &[String]) {
    for stem in stems {
        if let Ok((_, r)) = repertoire.find(stem) {
            let why = r.retired_because.as_deref().unwrap_or_default();
            tracing::warn!(
                "retired the routine `{}` (routines/{stem}.toml): {why}",
                r.name
            );
        }
    }
}

/// Whether a step of `routine` guards its output with a settled schema.
fn guards_settled(routine: &Routine) -> bool {
    routine.steps.iter().any(|s| s.guard.settled.is_some())
}

/// The stage ledger's settled schemas, judged by the ledger itself; `None` when the stage has
/// no ledger (nothing can be settled) or it cannot be opened (reported).
fn settled(stage: &Stage) -> Option<Arc<dyn Settled>> {
    let dir = crate::state_dir(stage);
    if !dir.join(improv_ledger::LEDGER_FILE).exists() {
        return None;
    }
    match improv_ledger::Ledger::open_in(&dir, crate::cast::ledger_options(stage)) {
        Ok(ledger) => Some(Arc::new(LedgerSettled(ledger))),
        Err(e) => {
            tracing::warn!("settled schemas are not checked: {e}");
            None
        }
    }
}

/// The ledger as routine guards consult it.
struct LedgerSettled(improv_ledger::Ledger);

impl Settled for LedgerSettled {
    fn collections(&self) -> Vec<String> {
        match self.0.collections() {
            Ok(all) => all
                .into_iter()
                .filter(|c| c.settled.is_some())
                .map(|c| c.name)
                .collect(),
            Err(e) => {
                tracing::warn!("settled schemas are not learned: {e}");
                Vec::new()
            }
        }
    }

    fn violation(&self, collection: &str, entry: &serde_json::Value) -> Option<String> {
        self.0
            .check_entry(collection, entry)
            .unwrap_or_else(|e| Some(format!("the ledger cannot check it: {e}")))
    }
}

/// Whether every value bound from the intent is one plain word, when a step of the routine may
/// run a command (a prop that runs commands, or one improv does not know, such as an MCP tool).
/// No model reads the intent before a replay, and an intent can carry text from outside (a
/// webhook payload, a chat message): `cargo test -p {crate}` must not become `-p x; curl …`.
fn plain_for_commands(routine: &Routine, values: &BTreeMap<String, String>) -> bool {
    let commands = routine
        .steps
        .iter()
        .any(|step| improv_stage::props::find(&step.prop).is_none_or(|prop| prop.runs_commands));
    let plain = |v: &String| {
        !v.is_empty()
            && v.chars()
                .all(|c| c.is_alphanumeric() || "._/:@+=,%-".contains(c))
    };
    !commands || values.values().all(plain)
}

/// What the replay came to.
pub(crate) struct Replayed {
    /// The performance's end when the replay converged (or the stage has no checks), or when an
    /// edge stopped it; `None` when the lead takes over.
    pub ended: Option<Ended>,
    /// The checks' verdicts, when they ran.
    pub verdicts: Vec<Verdict>,
}

/// Replays the chosen routine step by step in `performance`; on a deviation or failing checks,
/// directs the lead to take over from there. `attempt` is the attempt the checks judge.
pub(crate) async fn replay(
    performance: &mut Performance,
    judge: Option<&Arc<Judge>>,
    attempt: u32,
    max_attempts: u32,
    chosen: Replay,
    cancel: &CancellationToken,
) -> Replayed {
    let Replay {
        mut routine,
        stem,
        values,
        mut repertoire,
        settled,
        retire_unused,
    } = chosen;
    let name = routine.name.clone();
    let mut out = Replayed {
        ended: None,
        verdicts: Vec::new(),
    };
    let calls = match routine.calls(&values) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("routine `{name}` cannot be replayed: {e}");
            return out;
        }
    };
    let started = EventKind::RoutineStarted {
        routine: name.clone(),
        parameters: values,
        steps: calls.len() as u32,
        within: None,
    };
    if let Err(e) = performance.emit(started) {
        out.ended = Some(log_failed(e));
        return out;
    }
    let mut deviation = None;
    let mut steps_run = 0;
    for (i, call) in calls.iter().enumerate() {
        let step = i as u32 + 1;
        let tool_call = ToolCall {
            id: format!("routine-{name}-{step}"),
            name: call.prop.clone(),
            arguments: call.arguments.to_string(),
        };
        let (ok, output) = match performance
            .replay_call(&name, step, tool_call, cancel)
            .await
        {
            Ok(r) => r,
            Err(ended) => {
                // A spent budget, Ctrl-C, a lost lease: the performance ends as it would
                // between two of the actor's turns; the routine neither held nor deviated.
                let finished = EventKind::RoutineFinished {
                    routine: name.clone(),
                    ok: false,
                    steps_run,
                    deviation: Some(format!("stopped before step {step}: {}", ended.reason)),
                };
                out.ended = Some(match performance.emit(finished) {
                    Ok(()) => ended,
                    Err(e) => log_failed(e),
                });
                return out;
            }
        };
        if let Some(why) = call.guard.deviation(ok, &output, settled.as_deref()) {
            deviation = Some(format!("step {step} (`{}`) deviated: {why}", call.prop));
            break;
        }
        steps_run = step;
    }
    let mut failing = None;
    if deviation.is_none()
        && let Some(judge) = judge
    {
        let (verdicts, mut events) = feedback::run(
            judge,
            CheckOn::Done,
            attempt,
            performance.conversation(),
            cancel,
        )
        .await;
        events.push(improv_feedback::attempt_event(
            &verdicts,
            attempt,
            max_attempts,
        ));
        for kind in events {
            if let Err(e) = performance.emit(kind) {
                out.ended = Some(log_failed(e));
                return out;
            }
        }
        if !improv_feedback::all_passed(&verdicts) {
            failing = Some(improv_feedback::note(&verdicts, attempt, max_attempts));
        }
        out.verdicts = verdicts;
    }
    let ok = deviation.is_none() && failing.is_none();
    let finished = EventKind::RoutineFinished {
        routine: name.clone(),
        ok,
        steps_run,
        deviation: deviation
            .clone()
            .or_else(|| failing.as_ref().map(|_| "the checks failed".into())),
    };
    if let Err(e) = performance.emit(finished) {
        out.ended = Some(log_failed(e));
        return out;
    }
    let now = improv_routine::now();
    routine.note_use(ok, &now);
    if let Some(n) = retire_unused {
        routine.note_match(ok, n, &now);
    }
    // Noted on the routine's file as it is now, not on the copy read at the start: another
    // performance or the director may have changed it meanwhile (review L3).
    let noted = repertoire.update(&stem, |kept| {
        kept.note_use(ok, &now);
        if let Some(n) = retire_unused {
            kept.note_match(ok, n, &now);
        }
        true
    });
    if let Err(e) = noted {
        tracing::warn!("the record of routine `{name}` (routines/{stem}.toml) was not saved: {e}");
    }
    if ok {
        let outcome = if judge.is_some() {
            Outcome::Converged
        } else {
            Outcome::Done
        };
        out.ended = Some(Ended::new(
            outcome,
            format!("the routine `{name}` was replayed without a model and every check passed"),
        ));
        return out;
    }
    let total = calls.len();
    let what = match (deviation, failing) {
        (Some(d), _) => d,
        (None, Some(note)) => format!("every step ran, but the checks failed.\n{note}"),
        (None, None) => String::from("it did not finish"),
    };
    let note = format!(
        "The routine `{name}` replayed {steps_run} of {total} steps for this intent (above); {what}\nTake over from there and finish the work."
    );
    if let Err(e) = performance.direct(&note) {
        out.ended = Some(log_failed(e));
    }
    out
}

fn log_failed(e: improv_kernel::ObserveError) -> Ended {
    Ended::new(Outcome::Failed, format!("the event log failed: {e}"))
}

/// The approved routines whose steps use only `props`, as props inside the edges, and the one
/// line of the system prompt that mentions them.
pub(crate) fn offer(
    stage: &Stage,
    props: &[Arc<dyn Prop>],
    edges: &Edges,
    hints: &Hints,
) -> (Vec<Arc<dyn Prop>>, Option<String>) {
    let Some(repertoire) = open(stage) else {
        return (Vec::new(), None);
    };
    let has = |name: &str| props.iter().any(|p| p.spec().name == name);
    let usable: Vec<&Routine> = repertoire
        .approved()
        .filter(|r| r.steps.iter().all(|s| has(&s.prop)))
        .collect();
    let settled = usable
        .iter()
        .any(|r| guards_settled(r))
        .then(|| settled(stage))
        .flatten();
    let offered: Vec<Arc<dyn Prop>> = usable
        .into_iter()
        .map(|r| {
            let prop: Arc<dyn Prop> =
                Arc::new(RoutineProp::new(r.clone(), props.to_vec(), settled.clone()));
            wrap(prop, edges, hints)
        })
        .collect();
    if offered.is_empty() {
        return (offered, None);
    }
    let line =
        "Props named routine.* replay practised work without you; prefer them when they fit.";
    (offered, Some(line.to_string()))
}

/// Learns from every converged performance of the stage into its routines, with the ledger's
/// settled schemas for the guards: after each converged performance, and `improv routines learn`.
pub fn learn_routines(
    stage: &Stage,
) -> Result<improv_routine::Learned, improv_routine::RoutineError> {
    let settled = settled(stage);
    improv_routine::learn_from_log(
        &stage.dir,
        &crate::state_dir(stage),
        stage.routines.auto_approve,
        settled.as_deref(),
    )
}

/// Learns from `performance` after it converged; what was proposed is reported, a failure too,
/// and neither changes the performance's outcome. Only its events and the practices of its
/// shape are read (the practice index, `improv_routine::index`), not every converged log.
pub(crate) fn learn(stage: &Stage, performance: &str) {
    if !stage.routines.learn {
        return;
    }
    let settled = settled(stage);
    let learned = improv_routine::learn_after(
        &stage.dir,
        &crate::state_dir(stage),
        performance,
        stage.routines.auto_approve,
        settled.as_deref(),
    );
    match learned {
        Ok(learned) => {
            for name in &learned.proposed {
                tracing::info!(
                    "proposed the routine `{name}` (routines/{name}.toml); `improv routines approve {name}` to use it"
                );
            }
        }
        Err(e) => tracing::warn!("routines were not learned: {e}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use improv_routine::routine::{Parameter, Provenance, Record, Step};
    use improv_routine::{Guard, Shape, Stability, Status};

    fn routine(prop: &str) -> Routine {
        let mut args = serde_json::Map::new();
        args.insert("command".into(), "cargo test -p {krate}".into());
        Routine {
            name: "test-crate".into(),
            description: String::new(),
            status: Status::Approved,
            stability: Stability::Stable,
            intent: "Run the tests of {krate}".into(),
            parameters: vec![Parameter {
                name: "krate".into(),
                examples: vec!["a".into(), "b".into()],
            }],
            checks: Vec::new(),
            retired_because: None,
            provenance: Provenance {
                skeleton: "00".into(),
                performances: Vec::new(),
                contradicted_by: Vec::new(),
            },
            record: Record::default(),
            steps: vec![Step {
                prop: prop.into(),
                guard: Guard {
                    ok: true,
                    output: Shape::NonEmpty,
                    settled: None,
                },
                args,
            }],
        }
    }

    #[test]
    fn text_from_the_intent_reaches_a_command_only_as_one_plain_word() {
        let bash = routine("bash");
        let bind = |intent: &str| bash.bind(intent).unwrap();
        assert!(plain_for_commands(
            &bash,
            &bind("Run the tests of improv-kernel")
        ));
        for injected in [
            "Run the tests of foo; curl x|sh",
            "Run the tests of foo$(id)",
            "Run the tests of foo\nrm -rf x",
            "Run the tests of `id`",
        ] {
            assert!(!plain_for_commands(&bash, &bind(injected)), "{injected}");
        }
        let mcp = routine("tools.run");
        assert!(!plain_for_commands(&mcp, &bind("Run the tests of a b")));
        let write = routine("write");
        assert!(plain_for_commands(&write, &bind("Run the tests of a; b")));
    }
}
