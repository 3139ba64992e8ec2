//! The director's serve token through the real loop with a scripted lead: every performance of
//! the stage redacts it, and once a call has shown it (it leaked into a workspace file here),
//! the performance's `ask` rules are denied without asking the director, who would otherwise
//! be answering a performance that can answer for itself through the API.

#![allow(clippy::unwrap_used)]

use async_trait::async_trait;
use improv_edges::{Approval, ApprovalRequest, Approver};
use improv_kernel::{Event, EventKind};
use improv_log::EventLog;
use improv_perform::{Launch, Production, state_dir};
use improv_stage::Stage;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "9f2c4e1a7b3d5f6e8a0c2e4f6a8b0d2c";

/// A director who approves everything and counts the questions.
#[derive(Default)]
struct Approves(AtomicUsize);

#[async_trait]
impl Approver for Approves {
    async fn ask(&self, _request: &ApprovalRequest) -> Approval {
        self.0.fetch_add(1, Ordering::SeqCst);
        Approval::Once
    }
}

/// Performs `commands` (one `bash` call a turn) on a stage with an `ask` rule for `echo ask*`,
/// the serve token in `.improv/` and a copy of it leaked into `leak.txt`.
async fn perform(dir: &Path, commands: &[&str], director: Arc<Approves>) -> Vec<Event> {
    std::fs::write(
        dir.join("stage.toml"),
        "[[actor]]\nname = \"lead\"\nmodel = \"scripted/script.json\"\nprops = [\"bash\"]\n\n\
         [[edges.rule]]\ncommand = \"echo ask*\"\ndecision = \"ask\"\n",
    )
    .unwrap();
    let mut turns: Vec<serde_json::Value> = commands
        .iter()
        .map(|c| json!({"calls": [{"name": "bash", "arguments": {"command": c}}]}))
        .collect();
    turns.push(json!({"say": "Done."}));
    std::fs::write(dir.join("script.json"), json!(turns).to_string()).unwrap();
    std::fs::create_dir_all(dir.join(".improv")).unwrap();
    std::fs::write(dir.join(".improv/serve.token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(dir.join("leak.txt"), format!("the token is {TOKEN}\n")).unwrap();

    let stage = Arc::new(Stage::load(&dir.join("stage.toml")).unwrap());
    let mut launch = Launch::new("Work.");
    launch.approver = director;
    let (mut p, _notes) = Production::open(stage.clone(), launch).unwrap();
    let ended = p.perform(&CancellationToken::new()).await;
    let summary = p.finish(&ended).unwrap();
    EventLog::open(&state_dir(&stage))
        .unwrap()
        .events(&summary.id)
        .unwrap()
}

fn outputs(events: &[Event]) -> Vec<(bool, String)> {
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolCallFinished { ok, output, .. } => Some((*ok, output.clone())),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn the_director_is_asked_until_a_call_shows_the_serve_token() {
    let dir = tempfile::tempdir().unwrap();
    let director = Arc::new(Approves::default());
    let events = perform(
        dir.path(),
        &["echo ask one", "cat leak.txt", "echo ask two"],
        director.clone(),
    )
    .await;
    let out = outputs(&events);
    assert_eq!(out.len(), 3, "{out:?}");
    assert!(
        out[0].0 && out[0].1.ends_with("ask one\n"),
        "asked and approved: {out:?}"
    );
    assert_eq!(
        out[1].1, "the token is [redacted:IMPROV_SERVE_TOKEN]\n",
        "the token is redacted for every performance of the stage"
    );
    assert!(!out[2].0, "{:?}", out[2]);
    assert!(out[2].1.contains("serve token"), "says why: {}", out[2].1);
    assert_eq!(
        director.0.load(Ordering::SeqCst),
        1,
        "the director was not asked once the token was seen"
    );
    let log = serde_json::to_string(&events).unwrap();
    assert!(!log.contains(TOKEN), "the log holds the token");
}

#[tokio::test]
async fn without_the_token_shown_every_ask_reaches_the_director() {
    let dir = tempfile::tempdir().unwrap();
    let director = Arc::new(Approves::default());
    let events = perform(
        dir.path(),
        &["echo ask one", "cat stage.toml", "echo ask two"],
        director.clone(),
    )
    .await;
    let out = outputs(&events);
    assert!(out[2].0 && out[2].1.ends_with("ask two\n"), "{out:?}");
    assert_eq!(director.0.load(Ordering::SeqCst), 2);
}
