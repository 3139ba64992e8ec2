//! The cast at work, through the real loop with scripted models: cues run concurrently and come
//! back merged, the board shares notes between actors, cue edges hold, a cued actor's budget
//! stops it, and a director note sent from "another terminal" reaches the lead mid-performance.

#![allow(clippy::unwrap_used)]

use improv_kernel::{Event, EventKind, ObserveError, Observer, Outcome};
use improv_log::EventLog;
use improv_perform::{Launch, Production, launch, send_note, state_dir};
use improv_stage::Stage;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn script(dir: &Path, name: &str, turns: serde_json::Value) {
    write(dir, name, &turns.to_string());
}

async fn perform(dir: &Path, intent: &str) -> (improv_perform::Summary, Vec<Event>) {
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

fn tool_outputs(events: &[Event]) -> Vec<(String, bool, String)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolCallFinished {
                name, ok, output, ..
            } => Some((name.clone(), *ok, output.clone())),
            _ => None,
        })
        .collect()
}

fn sub_events(dir: &Path, id: &str) -> Vec<Event> {
    EventLog::open(&dir.join(".improv"))
        .unwrap()
        .events(id)
        .unwrap()
}

#[tokio::test]
async fn a_lead_cues_two_actors_at_once_and_merges_their_answers() {
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
name = "counter"
role = "You count things. Nothing else."
model = "scripted/counter.json"
props = ["read"]

[[actor]]
name = "lister"
model = "scripted/lister.json"
props = ["read"]
"#,
    );
    script(
        d,
        "lead.json",
        json!([
            {"calls": [
                {"name": "cue", "arguments": {"actor": "counter", "task": "count the files"}},
                {"name": "cue", "arguments": {"actor": "lister", "task": "list the files"}}
            ]},
            {"say": "3 files: a, b, c"}
        ]),
    );
    script(
        d,
        "counter.json",
        json!([{"say": "there are 3", "delay_ms": 300}]),
    );
    script(
        d,
        "lister.json",
        json!([{"say": "a, b, c", "delay_ms": 300}]),
    );

    let (summary, events) = perform(d, "How many files, and which?").await;
    assert_eq!(summary.outcome, Outcome::Done, "{}", summary.reason);
    assert_eq!(summary.answer, "3 files: a, b, c");

    let outputs = tool_outputs(&events);
    assert_eq!(
        outputs,
        vec![
            ("cue".into(), true, "counter answers: there are 3".into()),
            ("cue".into(), true, "lister answers: a, b, c".into()),
        ]
    );
    // Both cues started before either finished: they ran at once.
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e.kind.name())
        .filter(|k| k.starts_with("cue_"))
        .collect();
    assert_eq!(
        kinds,
        ["cue_started", "cue_started", "cue_finished", "cue_finished"]
    );
    // Each cued actor performed its own logged sub-performance, on the task it was given.
    for e in &events {
        if let EventKind::CueStarted {
            to, performance, ..
        } = &e.kind
        {
            let sub = sub_events(d, performance);
            assert!(
                matches!(&sub[0].kind, EventKind::PerformanceStarted { intent, .. } if intent.contains("lead cues you")),
                "{sub:?}"
            );
            assert!(sub.iter().all(|e| e.actor.as_deref() == Some(to.as_str())));
            assert!(matches!(
                sub.last().unwrap().kind,
                EventKind::PerformanceFinished {
                    outcome: Outcome::Done,
                    ..
                }
            ));
        }
    }
}

#[tokio::test]
async fn a_board_note_posted_by_one_actor_is_read_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "stage.toml",
        r#"
[[actor]]
name = "lead"
model = "scripted/lead.json"
props = ["cue", "board"]

[[actor]]
name = "reader"
model = "scripted/reader.json"
props = ["board"]
"#,
    );
    script(
        d,
        "lead.json",
        json!([
            {"calls": [{"name": "board", "arguments": {"post": "the config lives in etc/app.toml"}}]},
            {"calls": [{"name": "cue", "arguments": {"actor": "reader", "task": "check the board"}}]},
            {"say": "done"}
        ]),
    );
    script(
        d,
        "reader.json",
        json!([
            {"calls": [{"name": "board", "arguments": {}}]},
            {"calls": [{"name": "board", "arguments": {"post": "seen; etc/app.toml has 2 keys"}}]},
            {"say": "the config is in etc/app.toml"}
        ]),
    );
    let (summary, events) = perform(d, "find the config").await;
    assert_eq!(summary.outcome, Outcome::Done, "{}", summary.reason);
    let outputs = tool_outputs(&events);
    assert_eq!(outputs[0], ("board".into(), true, "posted as #1".into()));
    assert_eq!(
        outputs[1].2,
        "reader answers: the config is in etc/app.toml"
    );
    let sub_id = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::CueStarted { performance, .. } => Some(performance.clone()),
            _ => None,
        })
        .unwrap();
    let sub = sub_events(d, &sub_id);
    let read = tool_outputs(&sub);
    assert_eq!(
        read[0],
        (
            "board".into(),
            true,
            "#1 lead: the config lives in etc/app.toml\n".into()
        )
    );
    assert_eq!(read[1].2, "posted as #2");
    let notes: Vec<(String, String)> = events
        .iter()
        .chain(sub.iter())
        .filter_map(|e| match &e.kind {
            EventKind::BoardNote { author, text } => Some((author.clone(), text.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert_eq!(notes[1].0, "reader");
}

#[tokio::test]
async fn cues_stay_within_who_may_cue_whom_and_the_depth_limit() {
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
cues = ["helper"]

[[actor]]
name = "helper"
model = "scripted/helper.json"
props = ["cue"]

[[actor]]
name = "other"
model = "scripted/other.json"

[edges]
cue_depth = 1
"#,
    );
    script(
        d,
        "lead.json",
        json!([
            {"calls": [{"name": "cue", "arguments": {"actor": "other", "task": "x"}}]},
            {"calls": [{"name": "cue", "arguments": {"actor": "helper", "task": "cue other"}}]},
            {"say": "done"}
        ]),
    );
    script(
        d,
        "helper.json",
        json!([
            {"calls": [{"name": "cue", "arguments": {"actor": "other", "task": "deeper"}}]},
            {"say": "could not cue"}
        ]),
    );
    script(d, "other.json", json!([{"say": "never asked"}]));
    let (summary, events) = perform(d, "go").await;
    assert_eq!(summary.outcome, Outcome::Done, "{}", summary.reason);
    let outputs = tool_outputs(&events);
    assert!(!outputs[0].1);
    assert!(
        outputs[0]
            .2
            .contains("`lead` cannot cue `other`; the actors it can cue are: helper"),
        "{outputs:?}"
    );
    // At depth 1 the helper has no cue prop at all.
    let sub_id = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::CueStarted { performance, .. } => Some(performance.clone()),
            _ => None,
        })
        .unwrap();
    let sub = tool_outputs(&sub_events(d, &sub_id));
    assert!(!sub[0].1);
    assert!(sub[0].2.starts_with("unknown prop `cue`"), "{sub:?}");
}

#[tokio::test]
async fn a_cued_actor_is_stopped_by_its_own_budget() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "notes.txt", "hello");
    write(
        d,
        "stage.toml",
        r#"
[[actor]]
name = "lead"
model = "scripted/lead.json"
props = ["cue"]

[[actor]]
name = "reader"
model = "scripted/reader.json"
props = ["read"]
max_turns = 2
"#,
    );
    script(
        d,
        "lead.json",
        json!([
            {"calls": [{"name": "cue", "arguments": {"actor": "reader", "task": "read forever"}}]},
            {"say": "the reader ran out of turns"}
        ]),
    );
    script(
        d,
        "reader.json",
        json!([
            {"calls": [{"name": "read", "arguments": {"path": "notes.txt"}}]},
            {"calls": [{"name": "read", "arguments": {"path": "notes.txt", "offset": 1}}]},
            {"say": "read notes.txt twice"}
        ]),
    );
    let (summary, events) = perform(d, "go").await;
    assert_eq!(summary.outcome, Outcome::Done, "{}", summary.reason);
    let outputs = tool_outputs(&events);
    assert!(!outputs[0].1);
    assert!(
        outputs[0]
            .2
            .contains("reader did not finish (stopped: turn budget spent"),
        "{outputs:?}"
    );
    // The wrap-up turn's words come back with the refusal.
    assert!(outputs[0].2.contains("read notes.txt twice"), "{outputs:?}");
}

/// Sends a director note as `improv note` does from another terminal, the moment the
/// performance emits the first event `when` matches. Observers run before the loop goes on, so
/// the note is in the inbox file before the performance takes its next step: no clock decides
/// whether it arrives in time.
struct NoteAt {
    state: PathBuf,
    id: &'static str,
    when: fn(&EventKind) -> bool,
    text: &'static str,
    sent: Mutex<Option<Result<String, String>>>,
}

impl NoteAt {
    fn new(
        state: PathBuf,
        id: &'static str,
        when: fn(&EventKind) -> bool,
        text: &'static str,
    ) -> Arc<NoteAt> {
        Arc::new(NoteAt {
            state,
            id,
            when,
            text,
            sent: Mutex::new(None),
        })
    }

    fn sent(&self) -> Option<Result<String, String>> {
        self.sent.lock().unwrap().clone()
    }
}

impl Observer for NoteAt {
    fn observe(&self, event: &Event) -> Result<(), ObserveError> {
        let mut sent = self.sent.lock().unwrap();
        if sent.is_none() && (self.when)(&event.kind) {
            *sent = Some(send_note(&self.state, self.id, self.text).map_err(|e| e.to_string()));
        }
        Ok(())
    }
}

/// Launches the stage in `d` with a note sender watching it, and waits for it to finish.
async fn perform_noted(
    d: &Path,
    intent: &str,
    note: impl FnOnce(PathBuf) -> Arc<NoteAt>,
) -> (improv_perform::Summary, Vec<Event>, Arc<NoteAt>) {
    let stage = Arc::new(Stage::load(&d.join("stage.toml")).unwrap());
    let state = state_dir(&stage);
    let note = note(state.clone());
    let mut l = Launch::new(intent);
    l.id = Some(note.id.into());
    l.observers.push(note.clone());
    let running = launch(stage, l).unwrap();
    let summary = running.done.await.unwrap().unwrap();
    let events = EventLog::open(&state).unwrap().events(&summary.id).unwrap();
    (summary, events, note)
}

#[tokio::test]
async fn a_note_sent_from_another_terminal_reaches_the_lead_before_its_next_turn() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "notes.txt", "hello");
    write(
        d,
        "stage.toml",
        r#"
[[actor]]
name = "lead"
model = "scripted/lead.json"
props = ["read"]
"#,
    );
    script(
        d,
        "lead.json",
        json!([
            {"calls": [{"name": "read", "arguments": {"path": "notes.txt"}}]},
            {"say": "noted"},
        ]),
    );
    // The note is written while turn 1's tool call ends, before turn 2's model call.
    let (summary, events, note) = perform_noted(d, "read the notes", |state| {
        NoteAt::new(
            state,
            "p-note-mid",
            |k| matches!(k, EventKind::ToolCallFinished { .. }),
            "use tabs, not spaces",
        )
    })
    .await;
    assert_eq!(note.sent(), Some(Ok("p-note-mid".to_string())));
    assert_eq!(summary.outcome, Outcome::Done, "{}", summary.reason);
    // The note is in the conversation turn 2's model call sees: the notes hook emits it as
    // it adds it, before the turn starts.
    let kinds: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::DirectorNote { text } => Some(format!("note: {text}")),
            EventKind::TurnStarted { turn } => Some(format!("turn {turn}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "note: read the notes",
            "turn 1",
            "note: use tabs, not spaces",
            "turn 2"
        ]
    );
    // Once it has finished, a note is refused with the way to go on.
    let err = send_note(&note.state, &summary.id, "too late").unwrap_err();
    assert!(err.to_string().contains("not running"), "{err}");
    assert!(err.to_string().contains("--resume"), "{err}");
}

#[tokio::test]
async fn a_note_sent_during_the_last_turn_is_not_lost_the_lead_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "stage.toml",
        "[[actor]]\nname = \"lead\"\nmodel = \"scripted/lead.json\"\nprops = []\n",
    );
    script(
        d,
        "lead.json",
        json!([{"say": "all done"}, {"say": "done, with tabs"}]),
    );
    // The note is written as the lead's last reply comes back, after the notes hook ran.
    let (summary, events, note) = perform_noted(d, "format it", |state| {
        NoteAt::new(
            state,
            "p-note-last",
            |k| matches!(k, EventKind::ModelReplied { .. }),
            "use tabs",
        )
    })
    .await;
    assert_eq!(note.sent(), Some(Ok("p-note-last".to_string())));
    assert_eq!(summary.answer, "done, with tabs");
    let notes: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::DirectorNote { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(notes, ["format it", "use tabs"]);
}

#[tokio::test]
async fn a_critic_of_the_cast_judges_once_the_other_checks_pass_and_the_work_converges() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(
        d,
        "stage.toml",
        r#"
[[actor]]
name = "lead"
model = "scripted/lead.json"
props = ["write"]

[[actor]]
name = "reviewer"
model = "scripted/reviewer.json"
props = ["read"]

[feedback]
max_attempts = 2

[[feedback.check]]
name = "greeting"
file = "hello.txt"
contains = "hello"

[[feedback.check]]
name = "review"
critic = "reviewer"
rubric = "Is the greeting friendly?"
"#,
    );
    script(
        d,
        "lead.json",
        json!([
            {"say": "done"},
            {"calls": [{"name": "write", "arguments": {"path": "hello.txt", "content": "hello there\n"}}]},
            {"say": "wrote hello.txt"}
        ]),
    );
    script(
        d,
        "reviewer.json",
        json!([
            {"calls": [{"name": "read", "arguments": {"path": "hello.txt"}}]},
            {"calls": [{"name": "verdict", "arguments": {"pass": true, "notes": "friendly enough"}}]}
        ]),
    );
    let (summary, events) = perform(d, "greet").await;
    assert_eq!(summary.outcome, Outcome::Converged, "{}", summary.reason);
    assert_eq!(summary.attempts, 2);
    let checks: Vec<(u32, String, bool, String)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::CheckFinished {
                attempt,
                check,
                passed,
                output,
                ..
            } => Some((*attempt, check.clone(), *passed, output.clone())),
            _ => None,
        })
        .collect();
    // Attempt 1: the file is missing, so the critic is not asked; attempt 2: both pass.
    assert_eq!(checks.len(), 3, "{checks:?}");
    assert_eq!((checks[0].0, checks[0].2), (1, false));
    assert_eq!(
        (checks[1].0, checks[1].1.as_str(), checks[1].2),
        (2, "greeting", true)
    );
    assert_eq!(
        (checks[2].0, checks[2].1.as_str(), checks[2].2),
        (2, "review", true)
    );
    assert!(checks[2].3.contains("friendly enough"), "{checks:?}");
}
