//! Policy decisions land in the log of the performance whose actor made the call: a cued
//! actor's decisions are in its own sub-performance, under its name, not in the lead's.

#![allow(clippy::unwrap_used)]

use improv_kernel::event::Decision;
use improv_kernel::{Event, EventKind, Outcome};
use improv_log::EventLog;
use improv_perform::{Launch, Production, state_dir};
use improv_stage::Stage;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The (actor, prop, subject, decision) of each `policy_decision` event.
fn decisions(events: &[Event]) -> Vec<(String, String, String, Decision)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::PolicyDecision {
                prop,
                subject,
                decision,
                ..
            } => Some((
                e.actor.clone().unwrap_or_default(),
                prop.clone(),
                subject.clone(),
                *decision,
            )),
            _ => None,
        })
        .collect()
}

fn write(dir: &Path, name: &str, text: impl AsRef<str>) {
    std::fs::write(dir.join(name), text.as_ref()).unwrap();
}

#[tokio::test]
async fn a_cued_actors_decisions_are_logged_in_its_own_performance_under_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "stage.toml",
        r#"
[[actor]]
name = "lead"
model = "scripted/lead.json"
props = ["cue"]

[[actor]]
name = "scout"
model = "scripted/scout.json"
props = ["read"]

[[edges.rule]]
prop = "read"
path = "secret*"
decision = "deny"
"#,
    );
    write(d, "notes.txt", "the plan");
    write(d, "secret.txt", "the keys");
    let read = |path: &str| json!({"calls": [{"name": "read", "arguments": {"path": path}}]});
    write(
        d,
        "scout.json",
        json!([read("notes.txt"), read("secret.txt"), {"say": "read the notes"}]).to_string(),
    );
    write(
        d,
        "lead.json",
        json!([
            {"calls": [{"name": "cue", "arguments": {"actor": "scout", "task": "read"}}]},
            {"say": "done"}
        ])
        .to_string(),
    );

    let stage = Arc::new(Stage::load(&d.join("stage.toml")).unwrap());
    let (mut p, _notes) = Production::open(stage.clone(), Launch::new("go")).unwrap();
    let ended = p.perform(&CancellationToken::new()).await;
    let summary = p.finish(&ended).unwrap();
    assert_eq!(summary.outcome, Outcome::Done, "{}", summary.reason);
    let log = EventLog::open(&state_dir(&stage)).unwrap();
    let lead = log.events(&summary.id).unwrap();
    let sub = lead
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::CueStarted { performance, .. } => Some(performance.clone()),
            _ => None,
        })
        .unwrap();
    let scout = log.events(&sub).unwrap();

    let d = |actor: &str, prop: &str, subject: &str, decision| {
        (actor.into(), prop.into(), subject.into(), decision)
    };
    assert_eq!(
        decisions(&scout),
        [
            d("scout", "read", "notes.txt", Decision::Allow),
            d("scout", "read", "secret.txt", Decision::Deny),
        ]
    );
    // The lead's log holds the lead's own decisions only: its cue.
    assert_eq!(
        decisions(&lead),
        [d("lead", "cue", "", Decision::Allow)],
        "{lead:#?}"
    );
}
