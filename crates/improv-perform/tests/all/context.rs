//! Memory and compaction wired into a production: a memory saved in one performance is recalled
//! in the next, and a long performance with `compact_at` stays inside it.
#![allow(clippy::unwrap_used)]

use improv_kernel::{EventKind, Outcome};
use improv_log::EventLog;
use improv_perform::{Launch, Production, state_dir};
use improv_stage::Stage;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

async fn perform(dir: &Path, intent: &str) -> Vec<improv_kernel::Event> {
    let stage = Arc::new(Stage::load(&dir.join("stage.toml")).unwrap());
    let (mut p, _notes) = Production::open(stage.clone(), Launch::new(intent)).unwrap();
    let ended = p.perform(&CancellationToken::new()).await;
    let summary = p.finish(&ended).unwrap();
    assert_eq!(summary.outcome, Outcome::Done, "{}", summary.reason);
    EventLog::open(&state_dir(&stage))
        .unwrap()
        .events(&summary.id)
        .unwrap()
}

#[tokio::test]
async fn a_memory_saved_in_one_performance_is_recalled_in_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("stage.toml"),
        "[[actor]]\nname = \"lead\"\nmodel = \"scripted/lead.json\"\nprops = [\"remember\", \"recall\"]\n",
    )
    .unwrap();
    std::fs::write(
        d.join("lead.json"),
        json!([
            {"calls": [{"name": "remember", "arguments": {"text": "The staging database is called cedar-7."}}]},
            {"say": "noted"}
        ])
        .to_string(),
    )
    .unwrap();
    perform(d, "remember the database name").await;
    std::fs::write(
        d.join("lead.json"),
        json!([
            {"calls": [{"name": "recall", "arguments": {"query": "staging database"}}]},
            {"say": "cedar-7"}
        ])
        .to_string(),
    )
    .unwrap();
    let events = perform(d, "which database?").await;
    let recalled = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ToolCallFinished { name, output, .. } if name == "recall" => {
                Some(output.clone())
            }
            _ => None,
        })
        .unwrap();
    assert!(recalled.contains("cedar-7"), "{recalled}");
}

#[tokio::test]
async fn a_long_performance_is_compacted_to_stay_inside_compact_at() {
    // Above what the kept recent turns take with their results trimmed (about 500 tokens each):
    // below that no compaction could get inside, and it only trims (measured: 1500 gives
    // requests of up to 2585 tokens).
    const COMPACT_AT: u64 = 3000;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("big.txt"), "line of text\n".repeat(600)).unwrap();
    std::fs::write(
        d.join("stage.toml"),
        format!("[context]\ncompact_at = {COMPACT_AT}\n\n[[actor]]\nname = \"lead\"\nmodel = \"scripted/lead.json\"\nprops = [\"read\"]\n"),
    )
    .unwrap();
    let mut turns: Vec<serde_json::Value> = (0..6)
        .map(|i| json!({"calls": [{"name": "read", "arguments": {"path": "big.txt", "offset": i + 1}}]}))
        .collect();
    turns.push(json!({"say": "read it all"}));
    std::fs::write(
        d.join("lead.json"),
        serde_json::Value::Array(turns).to_string(),
    )
    .unwrap();
    let events = perform(d, "read big.txt").await;
    let compacted: Vec<(u64, u64)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Compacted {
                tokens_before,
                tokens_after,
                ..
            } => Some((*tokens_before, *tokens_after)),
            _ => None,
        })
        .collect();
    assert!(!compacted.is_empty(), "no compaction in {events:?}");
    for (before, after) in compacted {
        assert!(after < before, "{before} → {after}");
        assert!(
            after < COMPACT_AT,
            "compacted {before} → {after}, not inside compact_at"
        );
    }
    // Staying inside means every model call, not only the compactions, is under compact_at.
    let inputs: Vec<u64> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Usage { input_tokens, .. } => Some(*input_tokens),
            _ => None,
        })
        .collect();
    assert_eq!(inputs.len(), 6, "{inputs:?}");
    assert!(
        inputs.iter().all(|&t| t < COMPACT_AT),
        "a request above compact_at = {COMPACT_AT}: {inputs:?}"
    );
}

#[tokio::test]
async fn a_subfolders_agents_md_comes_along_the_first_time_the_actor_works_there() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("api/v1")).unwrap();
    std::fs::write(d.join("AGENTS.md"), "Root rules: in the system prompt.").unwrap();
    std::fs::write(
        d.join("api/AGENTS.md"),
        "Handlers return Result; never panic.",
    )
    .unwrap();
    std::fs::write(d.join("api/v1/users.rs"), "fn users() {}").unwrap();
    std::fs::write(d.join("api/v1/posts.rs"), "fn posts() {}").unwrap();
    std::fs::write(
        d.join("stage.toml"),
        "[[actor]]\nname = \"lead\"\nmodel = \"scripted/lead.json\"\nprops = [\"read\"]\n",
    )
    .unwrap();
    std::fs::write(
        d.join("lead.json"),
        json!([
            {"calls": [{"name": "read", "arguments": {"path": "api/v1/users.rs"}}]},
            {"calls": [{"name": "read", "arguments": {"path": "api/v1/posts.rs"}}]},
            {"say": "read both"}
        ])
        .to_string(),
    )
    .unwrap();
    let events = perform(d, "read the handlers").await;
    let outputs: Vec<String> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolCallFinished { output, .. } => Some(output.clone()),
            _ => None,
        })
        .collect();
    assert!(
        outputs[0].contains("[api/AGENTS.md applies to this folder]\nHandlers return Result"),
        "{}",
        outputs[0]
    );
    assert!(!outputs[0].contains("Root rules"), "{}", outputs[0]);
    assert!(
        !outputs[1].contains("AGENTS.md"),
        "once only: {}",
        outputs[1]
    );
}
