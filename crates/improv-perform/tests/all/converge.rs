//! The checks decide convergence, through the real loop with scripted leads: when every check
//! passes after a turn that wrote, the performance ends converged without the lead saying it is
//! done; `converge_on = "done"` keeps waiting for the lead; a failing check, or a turn that only
//! read, lets it go on.

#![allow(clippy::unwrap_used)]

use improv_kernel::{Event, EventKind, Outcome};
use improv_log::EventLog;
use improv_perform::{Launch, Production, state_dir};
use improv_stage::Stage;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A stage whose lead can read and write, judged by one file check on `hello.txt`.
fn stage(dir: &Path, feedback: &str) {
    let text = format!(
        r#"
[[actor]]
name = "lead"
model = "scripted/lead.json"
props = ["read", "write"]

[feedback]
{feedback}

[[feedback.check]]
name = "hello"
file = "hello.txt"
contains = "improv works offline."
"#
    );
    std::fs::write(dir.join("stage.toml"), text).unwrap();
}

fn script(dir: &Path, turns: serde_json::Value) {
    std::fs::write(dir.join("lead.json"), turns.to_string()).unwrap();
}

fn write_call(text: &str) -> serde_json::Value {
    json!({"calls": [{"name": "write", "arguments": {"path": "hello.txt", "content": text}}]})
}

async fn perform(dir: &Path) -> (improv_perform::Summary, Vec<Event>) {
    let stage = Arc::new(Stage::load(&dir.join("stage.toml")).unwrap());
    let (mut p, _notes) = Production::open(stage.clone(), Launch::new("write hello.txt")).unwrap();
    let ended = p.perform(&CancellationToken::new()).await;
    let summary = p.finish(&ended).unwrap();
    let events = EventLog::open(&state_dir(&stage))
        .unwrap()
        .events(&summary.id)
        .unwrap();
    (summary, events)
}

/// The (passed, failed checks) of each `attempt_finished` event.
fn attempts(events: &[Event]) -> Vec<(bool, Vec<String>)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::AttemptFinished { passed, failed, .. } => Some((*passed, failed.clone())),
            _ => None,
        })
        .collect()
}

/// How many verdicts on each check were logged, passed or not.
fn verdicts(events: &[Event]) -> Vec<bool> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::CheckFinished { passed, .. } => Some(*passed),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn checks_that_pass_after_a_write_converge_without_the_lead_saying_done() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    stage(d, "");
    // The lead would go on writing the same thing: a small model that never says it is done.
    let again = write_call("improv works offline.");
    script(d, json!([again, again, again, {"say": "done"}]));

    let (summary, events) = perform(d).await;
    assert_eq!(summary.outcome, Outcome::Converged, "{}", summary.reason);
    assert_eq!(summary.spent.turns, 1, "it stopped right after the write");
    assert!(
        summary.reason.contains("every check passed"),
        "{}",
        summary.reason
    );
    assert_eq!(summary.attempts, 1);
    assert_eq!(
        summary.verdicts,
        vec![("hello".to_string(), true, summary.verdicts[0].2.clone())]
    );
    assert_eq!(attempts(&events), vec![(true, vec![])]);
    assert_eq!(
        std::fs::read_to_string(d.join("hello.txt")).unwrap(),
        "improv works offline."
    );
}

#[tokio::test]
async fn converge_on_done_waits_for_the_lead_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    stage(d, r#"converge_on = "done""#);
    let right = write_call("improv works offline.");
    script(d, json!([right, right, {"say": "done"}]));

    let (summary, events) = perform(d).await;
    assert_eq!(summary.outcome, Outcome::Converged, "{}", summary.reason);
    assert_eq!(summary.spent.turns, 3, "the lead played every turn");
    assert_eq!(summary.answer, "done");
    // The checks ran once, when the lead said it was done; never after its writes.
    assert_eq!(verdicts(&events), vec![true]);
    assert_eq!(attempts(&events), vec![(true, vec![])]);
}

#[tokio::test]
async fn a_failing_check_or_a_read_lets_the_lead_go_on_until_the_checks_pass() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    stage(d, "");
    script(
        d,
        json!([
            write_call("improv works online."),
            {"calls": [{"name": "read", "arguments": {"path": "hello.txt"}}]},
            write_call("improv works offline."),
            {"say": "done"}
        ]),
    );

    let (summary, events) = perform(d).await;
    assert_eq!(summary.outcome, Outcome::Converged, "{}", summary.reason);
    assert_eq!(
        summary.spent.turns, 3,
        "converged after the second write, not before"
    );
    assert!(
        summary.reason.contains("after turn 3"),
        "{}",
        summary.reason
    );
    // Judged after each write (failed, then passed), not after the read.
    assert_eq!(verdicts(&events), vec![false, true]);
    assert_eq!(attempts(&events), vec![(true, vec![])]);
    // A failing `on = "done"` check says nothing mid-work: the intent is the only note.
    let notes: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::DirectorNote { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(notes, ["write hello.txt"]);
}
