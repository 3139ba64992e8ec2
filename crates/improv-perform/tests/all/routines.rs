//! Routines through the real production, with the lead's model an OpenAI-compatible mock that
//! counts requests: two converged performances with different parameters propose a routine
//! (and an unconverged one does not); approved, it performs a matching intent with zero model
//! requests; a changed workspace makes a step deviate and the lead takes over from that step
//! with the deviation in its context; a step a `deny` rule forbids is denied exactly as the
//! lead's own call is.

#![allow(clippy::unwrap_used)]

use improv_kernel::{Event, EventKind, Outcome};
use improv_log::EventLog;
use improv_mock::{MockServer, openai_chat};
use improv_perform::{Launch, Production, Summary, state_dir};
use improv_routine::{Repertoire, Status};
use improv_stage::Stage;
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// A stage whose lead reads and writes through the mock, judged by one file check; `rules` is
/// appended under `[edges]`.
fn stage(dir: &Path, server: &MockServer, rules: &str) {
    let text = format!(
        r#"
[[actor]]
name = "lead"
model = "openai/gpt-5-mini"
base_url = "{}/v1"
props = ["read", "write"]

{rules}

[feedback]
max_attempts = 1

[[feedback.check]]
name = "greeting"
file = "greeting.txt"
contains = "Dear"
"#,
        server.url()
    );
    std::fs::write(dir.join("stage.toml"), text).unwrap();
    std::fs::write(dir.join("template.txt"), "Dear").unwrap();
}

/// What a competent lead does for "Greet NAME in greeting.txt": reads the template, writes.
fn practice(server: &MockServer, name: &str) {
    server.push(openai_chat::tool_calls(&[(
        "call_r",
        "read",
        r#"{"path": "template.txt"}"#,
    )]));
    let write = serde_json::json!({"path": "greeting.txt", "content": format!("Dear {name}")});
    server.push(openai_chat::tool_calls(&[(
        "call_w",
        "write",
        &write.to_string(),
    )]));
}

async fn perform(dir: &Path, intent: &str) -> (Summary, Vec<Event>) {
    let stage = Arc::new(Stage::load(&dir.join("stage.toml")).unwrap());
    let (mut p, _notes) = Production::open(stage.clone(), Launch::new(intent)).unwrap();
    let ended = p.perform(&CancellationToken::new()).await;
    let summary = p.finish(&ended).unwrap();
    let events = EventLog::open(&state_dir(&stage))
        .unwrap()
        .events(&summary.id)
        .unwrap();
    (summary, events)
}

/// Two converged performances of the same task, Alice's and Bob's; the routine they propose.
async fn learned(dir: &Path, server: &MockServer) -> String {
    for name in ["Alice", "Bob"] {
        practice(server, name);
        let (summary, _) = perform(dir, &format!("Greet {name} in greeting.txt")).await;
        assert_eq!(summary.outcome, Outcome::Converged, "{}", summary.reason);
    }
    let repertoire = Repertoire::open(dir).unwrap();
    assert_eq!(repertoire.routines.len(), 1, "{:#?}", repertoire.routines);
    repertoire.routines[0].name.clone()
}

fn approve(dir: &Path, name: &str) {
    let mut repertoire = Repertoire::open(dir).unwrap();
    repertoire.get_mut(name).unwrap().status = Status::Approved;
    repertoire.save(name).unwrap();
}

fn kinds(events: &[Event]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_converged_runs_propose_a_routine_and_approved_it_runs_with_zero_model_requests() {
    let server = MockServer::start(Vec::new()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    stage(d, &server, "");
    let name = learned(d, &server).await;
    let routine = Repertoire::open(d).unwrap().get(&name).unwrap().clone();
    assert_eq!(routine.status, Status::Proposed, "auto_approve is off");
    assert_eq!(routine.intent, "Greet {content} in greeting.txt");
    assert_eq!(routine.steps.len(), 2);
    assert_eq!(routine.steps[1].args["content"], "Dear {content}");
    assert_eq!(routine.checks, vec!["greeting".to_string()]);
    assert_eq!(routine.provenance.performances.len(), 2);
    let text = std::fs::read_to_string(d.join("routines").join(format!("{name}.toml"))).unwrap();
    assert!(text.contains("status = \"proposed\""), "{text}");

    // Proposed only: the next performance still asks the model.
    let before = server.requests().len();
    practice(&server, "Carol");
    let (summary, _) = perform(d, "Greet Carol in greeting.txt").await;
    assert_eq!(summary.outcome, Outcome::Converged);
    assert_eq!(server.requests().len(), before + 2);

    approve(d, &name);
    let before = server.requests().len();
    let (summary, events) = perform(d, "Greet Dora in greeting.txt").await;
    assert_eq!(summary.outcome, Outcome::Converged, "{}", summary.reason);
    assert_eq!(server.requests().len(), before, "zero model requests");
    assert_eq!(summary.spent.turns, 0);
    assert_eq!(
        std::fs::read_to_string(d.join("greeting.txt")).unwrap(),
        "Dear Dora"
    );
    let k = kinds(&events);
    for wanted in [
        "routine_started",
        "routine_step",
        "tool_call_started",
        "tool_call_finished",
        "check_finished",
        "routine_finished",
    ] {
        assert!(k.contains(&wanted), "{wanted} missing from {k:?}");
    }
    assert!(!k.contains(&"turn_started"), "{k:?}");
    let routine = Repertoire::open(d).unwrap().get(&name).unwrap().clone();
    assert_eq!(routine.record.uses, 1);
    assert!(routine.record.last_success.is_some());
    assert_eq!(
        routine.provenance.performances.len(),
        3,
        "Carol's run agreed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconverged_performance_does_not_teach() {
    let server = MockServer::start(Vec::new()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    stage(d, &server, "");
    practice(&server, "Alice");
    let (summary, _) = perform(d, "Greet Alice in greeting.txt").await;
    assert_eq!(summary.outcome, Outcome::Converged);
    // The same calls, but the check fails: the lead writes without "Dear", then stops.
    std::fs::write(d.join("template.txt"), "Hi").unwrap();
    server.push(openai_chat::tool_calls(&[(
        "call_r",
        "read",
        r#"{"path": "template.txt"}"#,
    )]));
    server.push(openai_chat::tool_calls(&[(
        "call_w",
        "write",
        r#"{"path": "greeting.txt", "content": "Hi Bob"}"#,
    )]));
    server.push(openai_chat::text("done"));
    let (summary, _) = perform(d, "Greet Bob in greeting.txt").await;
    assert_eq!(summary.outcome, Outcome::Exhausted, "{}", summary.reason);
    // Only a converged performance starts the learner; run it over every log, as
    // `improv routines learn` does.
    let learned = improv_routine::learn_from_log(d, &d.join(".improv"), false, None).unwrap();
    assert!(learned.proposed.is_empty(), "{learned:?}");
    assert!(
        Repertoire::open(d).unwrap().routines.is_empty(),
        "nothing proposed from one converged run and one exhausted one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_workspace_makes_a_step_deviate_and_the_lead_takes_over_from_there() {
    let server = MockServer::start(Vec::new()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    stage(d, &server, "");
    let name = learned(d, &server).await;
    approve(d, &name);
    std::fs::remove_file(d.join("template.txt")).unwrap();
    let before = server.requests().len();
    server.push(openai_chat::tool_calls(&[(
        "call_w",
        "write",
        r#"{"path": "greeting.txt", "content": "Dear Erin"}"#,
    )]));
    let (summary, events) = perform(d, "Greet Erin in greeting.txt").await;
    assert_eq!(summary.outcome, Outcome::Converged, "{}", summary.reason);
    let requests = server.requests();
    assert_eq!(
        requests.len(),
        before + 1,
        "the lead took over for one turn"
    );
    let body = requests[before].json().unwrap();
    let messages = body["messages"].to_string();
    assert!(
        messages.contains("step 1 (`read`) deviated"),
        "the deviation is in the lead's context: {messages}"
    );
    assert!(
        messages.contains("template.txt"),
        "the replayed call and its result are too: {messages}"
    );
    let finished = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::RoutineFinished {
                ok,
                steps_run,
                deviation,
                ..
            } => Some((*ok, *steps_run, deviation.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!((finished.0, finished.1), (false, 0));
    // The write, step 2, never ran from the routine: only the lead's write is logged.
    let writes = events
        .iter()
        .filter(|e| matches!(&e.kind, EventKind::ToolCallStarted { name, .. } if name == "write"))
        .count();
    assert_eq!(writes, 1);
    let routine = Repertoire::open(d).unwrap().get(&name).unwrap().clone();
    assert_eq!((routine.record.uses, routine.record.fallbacks), (1, 1));
}

/// The output of the one `write` call in `events`, and whether it succeeded.
fn write_result(events: &[Event]) -> (bool, String) {
    events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ToolCallFinished {
                name, ok, output, ..
            } if name == "write" => Some((*ok, output.clone())),
            _ => None,
        })
        .unwrap()
}

fn denials(events: &[Event]) -> usize {
    events
        .iter()
        .filter(|e| {
            matches!(&e.kind, EventKind::PolicyDecision { prop, decision, .. }
                if prop == "write" && decision.to_string().starts_with("den"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routine_step_a_deny_rule_forbids_is_denied_as_the_leads_own_call_is() {
    let server = MockServer::start(Vec::new()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    stage(d, &server, "");
    let name = learned(d, &server).await;
    approve(d, &name);
    std::fs::remove_file(d.join("greeting.txt")).unwrap();
    let deny = "[[edges.rule]]\nprop = \"write\"\npath = \"greeting.txt\"\ndecision = \"deny\"\n";
    stage(d, &server, deny);

    // The routine's write is denied; the lead, taking over, tries the same write and is too.
    server.push(openai_chat::tool_calls(&[(
        "call_w",
        "write",
        r#"{"path": "greeting.txt", "content": "Dear Finn"}"#,
    )]));
    server.push(openai_chat::text("I may not write greeting.txt."));
    let (summary, events) = perform(d, "Greet Finn in greeting.txt").await;
    assert!(!d.join("greeting.txt").exists(), "the deny rule held");
    assert_ne!(summary.outcome, Outcome::Converged);
    let outputs: Vec<(bool, String)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolCallFinished {
                name, ok, output, ..
            } if name == "write" => Some((*ok, output.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(outputs.len(), 2, "the routine's write and the lead's");
    assert!(!outputs[0].0);
    assert_eq!(
        outputs[0].1.replace("Finn", ""),
        outputs[1].1.replace("Finn", ""),
        "the routine's step is refused in the same words as the lead's call"
    );
    assert_eq!(
        denials(&events),
        2,
        "both denials are logged as policy decisions"
    );
    let (ok, _) = write_result(&events);
    assert!(!ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_routine_is_a_prop_whose_steps_meet_the_same_deny_rule() {
    let server = MockServer::start(Vec::new()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    stage(d, &server, "");
    let name = learned(d, &server).await;
    approve(d, &name);
    std::fs::remove_file(d.join("greeting.txt")).unwrap();
    let deny = "[[edges.rule]]\nprop = \"write\"\npath = \"greeting.txt\"\ndecision = \"deny\"\n";
    stage(d, &server, deny);

    // An intent the template does not match: the lead is asked, and calls the routine's prop.
    let prop = format!("routine.{name}");
    // On the wire a `.` is spelled `__`.
    let wire = format!("routine__{name}");
    server.push(openai_chat::tool_calls(&[(
        "call_x",
        &wire,
        r#"{"content": "Gil"}"#,
    )]));
    server.push(openai_chat::text("The routine could not write."));
    let before = server.requests().len();
    let (_, events) = perform(d, "Please greet Gil").await;
    let request = server.requests()[before].json().unwrap();
    assert!(
        request["tools"].to_string().contains(&wire),
        "the routine is offered as a prop"
    );
    assert!(!d.join("greeting.txt").exists(), "the deny rule held");
    let (ok, output) = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ToolCallFinished {
                name, ok, output, ..
            } if *name == prop => Some((*ok, output.clone())),
            _ => None,
        })
        .unwrap();
    assert!(!ok);
    assert!(output.contains("step 2 (`write`) deviated"), "{output}");
    assert_eq!(denials(&events), 1, "the step's denial is logged: {output}");
}

/// Sets when the routine `name` was last used: `days` before now.
fn last_used(dir: &Path, name: &str, days: u64) {
    let mut repertoire = Repertoire::open(dir).unwrap();
    let at = improv_routine::now_at() - std::time::Duration::from_secs(days * 86_400);
    repertoire.get_mut(name).unwrap().record.last_used = Some(improv_routine::routine::rfc3339(at));
    repertoire.save(name).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_routine_unused_longer_than_retire_after_is_retired_and_not_replayed() {
    let server = MockServer::start(Vec::new()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    stage(d, &server, "");
    let name = learned(d, &server).await;
    approve(d, &name);
    stage(d, &server, "[routines]\nretire_after = \"30d\"\n");

    // Used a day ago: replayed.
    last_used(d, &name, 1);
    let before = server.requests().len();
    let (summary, _) = perform(d, "Greet Hugo in greeting.txt").await;
    assert_eq!(summary.outcome, Outcome::Converged, "{}", summary.reason);
    assert_eq!(
        server.requests().len(),
        before,
        "replayed with no model request"
    );

    // Last used 60 days ago: retired, saying so, and the lead performs the intent.
    last_used(d, &name, 60);
    practice(&server, "Ines");
    let before = server.requests().len();
    let (summary, events) = perform(d, "Greet Ines in greeting.txt").await;
    assert_eq!(summary.outcome, Outcome::Converged, "{}", summary.reason);
    assert_eq!(server.requests().len(), before + 2, "the lead performed it");
    assert!(!kinds(&events).contains(&"routine_started"));
    let routine = Repertoire::open(d).unwrap().get(&name).unwrap().clone();
    assert_eq!(routine.status, Status::Retired);
    let why = routine.retired_because.unwrap();
    assert!(why.contains("unused for longer than 30days"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_is_recorded_in_the_file_replayed_not_the_file_named_like_the_routine() {
    let server = MockServer::start(Vec::new()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    stage(d, &server, "");
    let name = learned(d, &server).await;
    approve(d, &name);
    // `deploy.toml` holds the approved routine `name`; `name.toml` now holds another
    // routine, `other`, only proposed: the replay is deploy.toml's.
    let folder = d.join("routines");
    let original = folder.join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&original).unwrap();
    std::fs::write(folder.join("deploy.toml"), &text).unwrap();
    let other = text
        .replace(&format!("name = \"{name}\""), "name = \"other\"")
        .replace("status = \"approved\"", "status = \"proposed\"");
    assert_ne!(other, text);
    std::fs::write(&original, other).unwrap();

    let before = server.requests().len();
    let (summary, events) = perform(d, "Greet Dora in greeting.txt").await;
    assert_eq!(summary.outcome, Outcome::Converged, "{}", summary.reason);
    assert_eq!(
        server.requests().len(),
        before,
        "replayed with no model request"
    );
    assert!(kinds(&events).contains(&"routine_started"));
    let repertoire = Repertoire::open(d).unwrap();
    let deploy = repertoire.find("deploy").unwrap().1;
    assert_eq!(deploy.record.uses, 1, "the file replayed keeps its record");
    let named = repertoire.find(&name).unwrap().1;
    assert_eq!(named.name, "other");
    assert_eq!(
        named.record.uses, 0,
        "the file named like it is not touched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_longer_than_the_tool_call_budget_stops_at_the_limit() {
    let server = MockServer::start(Vec::new()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    stage(d, &server, "");
    let name = learned(d, &server).await;
    approve(d, &name);
    std::fs::remove_file(d.join("greeting.txt")).unwrap();
    // Two steps (read, write) against a budget of one call.
    stage(d, &server, "[edges]\nmax_tool_calls = 1\n");
    let before = server.requests().len();
    let (summary, events) = perform(d, "Greet Jo in greeting.txt").await;
    // As when the lead's calls spend it: the checks judge what was done, and it did not pass.
    assert_eq!(summary.outcome, Outcome::Exhausted, "{}", summary.reason);
    assert_eq!(summary.budget, Some(improv_kernel::BudgetKind::ToolCalls));
    assert_eq!(summary.spent.tool_calls, 1);
    assert!(!d.join("greeting.txt").exists(), "step 2 did not run");
    assert_eq!(server.requests().len(), before, "no model request");
    let deviation = events.iter().find_map(|e| match &e.kind {
        EventKind::RoutineFinished { deviation, .. } => deviation.clone(),
        _ => None,
    });
    assert!(
        deviation.is_some_and(|d| d.contains("stopped before step 2: tool-call budget spent")),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_steps_of_a_routine_prop_count_against_the_tool_call_budget() {
    let server = MockServer::start(Vec::new()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    stage(d, &server, "");
    let name = learned(d, &server).await;
    approve(d, &name);
    std::fs::remove_file(d.join("greeting.txt")).unwrap();
    // The prop call and its first step use the budget of two; the write is refused.
    stage(d, &server, "[edges]\nmax_tool_calls = 2\n");
    server.push(openai_chat::tool_calls(&[(
        "call_x",
        &format!("routine__{name}"),
        r#"{"content": "Kim"}"#,
    )]));
    server.push(openai_chat::text("Out of calls."));
    let (summary, events) = perform(d, "Please greet Kim").await;
    assert_eq!(summary.outcome, Outcome::Exhausted, "{}", summary.reason);
    assert_eq!(summary.budget, Some(improv_kernel::BudgetKind::ToolCalls));
    assert!(
        !d.join("greeting.txt").exists(),
        "the write step did not run"
    );
    let output = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ToolCallFinished {
                name: n, output, ..
            } if n.starts_with("routine.") => Some(output.clone()),
            _ => None,
        })
        .unwrap();
    assert!(
        output.contains("step 2 not run: tool-call budget spent: 2 of 2 calls"),
        "{output}"
    );
}

/// A stage whose lead looks a person up in the ledger's `inbox` and writes the greeting. The
/// ledger has settled the shape of `people`, which the inbox's entries have (the inbox is not
/// settled, so it takes any shape: Dora's age is text).
fn people_stage(dir: &Path, server: &MockServer) {
    let text = format!(
        r#"
[[actor]]
name = "lead"
model = "openai/gpt-5-mini"
base_url = "{}/v1"
props = ["query", "write"]

[feedback]
max_attempts = 1

[[feedback.check]]
name = "greeting"
file = "greeting.txt"
contains = "Dear"
"#,
        server.url()
    );
    std::fs::write(dir.join("stage.toml"), text).unwrap();
    let ledger = improv_ledger::Ledger::open_in(
        dir.join(".improv"),
        improv_ledger::LedgerOptions::default(),
    )
    .unwrap();
    let who = improv_ledger::Provenance::new("setup", "director");
    for (name, age) in [("Ann", 30), ("Ben", 41), ("Cy", 25)] {
        let entry = serde_json::json!({"name": name, "age": age});
        ledger.record("people", entry, &who).unwrap();
    }
    ledger.settle("people").unwrap();
    for (name, age) in [
        ("Alice", serde_json::json!(33)),
        ("Bob", serde_json::json!(41)),
        ("Dora", serde_json::json!("unknown")),
    ] {
        let entry = serde_json::json!({"name": name, "age": age});
        ledger.record("inbox", entry, &who).unwrap();
    }
}

/// What a competent lead does for "Greet NAME from the inbox": looks them up, writes.
fn look_up(server: &MockServer, name: &str) {
    let query = serde_json::json!({"collection": "inbox", "where": {"name": name}});
    server.push(openai_chat::tool_calls(&[(
        "call_q",
        "query",
        &query.to_string(),
    )]));
    let write = serde_json::json!({"path": "greeting.txt", "content": format!("Dear {name}")});
    server.push(openai_chat::tool_calls(&[(
        "call_w",
        "write",
        &write.to_string(),
    )]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_whose_output_no_longer_fits_its_settled_schema_hands_over_with_the_deviation() {
    let server = MockServer::start(Vec::new()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    people_stage(d, &server);
    for name in ["Alice", "Bob"] {
        look_up(&server, name);
        let (summary, _) = perform(d, &format!("Greet {name} from the inbox")).await;
        assert_eq!(summary.outcome, Outcome::Converged, "{}", summary.reason);
    }
    let repertoire = Repertoire::open(d).unwrap();
    assert_eq!(repertoire.routines.len(), 1, "{:#?}", repertoire.routines);
    let routine = &repertoire.routines[0];
    assert_eq!(
        routine.steps[0].guard.settled.as_deref(),
        Some("people"),
        "the query's outputs were entries fitting the settled `people`"
    );
    let name = routine.name.clone();
    approve(d, &name);

    // Dora's entry has the settled shape's fields, but her age is no number.
    let before = server.requests().len();
    server.push(openai_chat::text("Dora's age is not a number; I stop."));
    let (_, events) = perform(d, "Greet Dora from the inbox").await;
    let greeting = std::fs::read_to_string(d.join("greeting.txt")).unwrap();
    assert!(!greeting.contains("Dora"), "step 2 did not run");
    let requests = server.requests();
    assert_eq!(requests.len(), before + 1, "the lead took over");
    let messages = requests[before].json().unwrap()["messages"].to_string();
    assert!(
        messages.contains(
            "step 1 (`query`) deviated: its output no longer fits the settled schema of `people`"
        ) && messages.contains("age"),
        "the deviation is in the lead's context: {messages}"
    );
    let finished = events.iter().find_map(|e| match &e.kind {
        EventKind::RoutineFinished { ok, steps_run, .. } => Some((*ok, *steps_run)),
        _ => None,
    });
    assert_eq!(finished, Some((false, 0)));
}

/// The routine files of a stage folder: name → text.
fn routine_files(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir.join("routines"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p.file_name().unwrap().to_string_lossy().into_owned(), text)
        })
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learning_from_the_practice_index_gives_the_routines_learning_from_every_log_gives() {
    let server = MockServer::start(Vec::new()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let shadow = tempfile::tempdir().unwrap();
    stage(d, &server, "");
    // What learning from every converged log after each performance made, as it did before.
    let from_logs =
        || improv_routine::learn_from_log(shadow.path(), &d.join(".improv"), false, None).unwrap();
    let write_only = |name: &str| {
        let write = serde_json::json!({"path": "greeting.txt", "content": format!("Dear {name}")});
        server.push(openai_chat::tool_calls(&[(
            "call_w",
            "write",
            &write.to_string(),
        )]));
    };
    for (name, how) in [
        ("Alice", "read"),
        ("Bob", "read"),
        ("Dan", "write"),
        ("Carol", "read"),
        ("Eve", "write"),
        ("Fay", "read"),
    ] {
        if how == "read" {
            practice(&server, name);
        } else {
            write_only(name);
        }
        let (summary, _) = perform(d, &format!("Greet {name} in greeting.txt")).await;
        assert_eq!(summary.outcome, Outcome::Converged, "{}", summary.reason);
        from_logs();
    }
    let incremental = routine_files(d);
    assert_eq!(incremental.len(), 2, "{incremental:#?}");
    let mut runs: Vec<usize> = Repertoire::open(d)
        .unwrap()
        .routines
        .iter()
        .map(|r| r.provenance.performances.len())
        .collect();
    runs.sort();
    assert_eq!(
        runs,
        vec![2, 4],
        "Carol's and Fay's runs agreed with the first routine"
    );
    assert_eq!(incremental, routine_files(shadow.path()));
    let index = improv_routine::Index::open(&d.join(".improv"))
        .all()
        .unwrap();
    assert_eq!(index.len(), 6, "every converged practice, once");
}
