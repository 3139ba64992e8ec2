//! Memory across performances, through the real performance loop with a scripted model: what
//! one performance remembers, a later one recalls.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_kernel::*;
use improv_memory::{Memory, props};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The results of every prop call on the tape: (prop, ok, output).
fn call_results(tape: &Tape) -> Vec<(String, bool, String)> {
    tape.events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ToolCallFinished {
                name, ok, output, ..
            } => Some((name, ok, output)),
            _ => None,
        })
        .collect()
}

/// One performance of the stage whose state lives in `state`, opening its memory afresh.
async fn perform(
    state: &Path,
    id: &str,
    turns: Vec<ScriptedTurn>,
) -> (Arc<Tape>, Arc<ScriptedModel>) {
    let memory = Arc::new(Memory::open_in(state).unwrap());
    let model = Arc::new(ScriptedModel::new(turns));
    let tape = Arc::new(Tape::default());
    let actor = Actor {
        name: "lead".into(),
        system: "You are a test actor.".into(),
        model: model.clone(),
        props: props(memory),
        max_output_tokens: None,
    };
    let mut p = Performance::builder(actor)
        .id(id)
        .stage("memory-test")
        .workspace(state)
        .observer(tape.clone())
        .start("fix the build")
        .unwrap();
    let ended = p.act(&CancellationToken::new()).await;
    assert_eq!(ended.outcome, Outcome::Done, "{}", ended.reason);
    p.finish(&ended).unwrap();
    (tape, model)
}

#[tokio::test]
async fn a_memory_saved_in_one_performance_is_recalled_in_a_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join(".improv");

    let (first, _) = perform(
        &state,
        "perf-one",
        vec![
            ScriptedTurn::call(
                "remember",
                json!({"text": "The build fails without libssl-dev; install it first.", "tags": ["build"]}),
            )
            .and_call("remember", json!({"text": "CI runs on port 8080", "key": "ci-port"})),
            ScriptedTurn::call("remember", json!({"tags": ["oops"]})),
            ScriptedTurn::say("Noted."),
        ],
    )
    .await;
    let results = call_results(&first);
    assert_eq!(
        results[0],
        ("remember".into(), true, "saved note #1".into())
    );
    assert_eq!(
        results[1],
        ("remember".into(), true, "saved note #2".into())
    );
    assert!(
        !results[2].1 && results[2].2.contains("`text` is required"),
        "{:?}",
        results[2]
    );

    let (second, model) = perform(
        &state,
        "perf-two",
        vec![
            ScriptedTurn::call("recall", json!({"query": "why does the build fail?"}))
                .and_call("recall", json!({"query": "AND(\"libssl"}))
                .and_call("recall", json!({})),
            ScriptedTurn::call(
                "remember",
                json!({"text": "CI runs on port 9090", "key": "ci-port"}),
            ),
            ScriptedTurn::call("recall", json!({"query": "port", "limit": 1})),
            ScriptedTurn::say("Installing libssl-dev."),
        ],
    )
    .await;
    let results = call_results(&second);
    let (name, ok, found) = &results[0];
    assert!(name == "recall" && *ok, "{results:?}");
    assert!(
        found.starts_with("#1 ") && found.contains("[build] The build fails without libssl-dev"),
        "{found}"
    );
    assert_eq!(found.lines().count(), 1, "{found}");
    assert!(
        results[1].1 && results[1].2.contains("libssl-dev"),
        "{:?}",
        results[1]
    );
    // An empty query lists the newest first.
    let newest: Vec<&str> = results[2].2.lines().collect();
    assert_eq!(newest.len(), 2);
    assert!(
        newest[0].starts_with("#2 ") && newest[0].contains("(ci-port) CI runs on port 8080"),
        "{newest:?}"
    );
    assert_eq!(
        results[3],
        ("remember".into(), true, "replaced note #2".into())
    );
    assert!(
        results[4].2.contains("9090") && !results[4].2.contains("8080"),
        "{:?}",
        results[4]
    );

    // The model saw the recalled note in its conversation.
    let seen = model.requests();
    assert!(
        seen[1]
            .iter()
            .any(|m| matches!(m, Message::Tool { content, .. } if content.contains("libssl-dev")))
    );

    // Each memory records who saved it, and in which performance.
    let memory = Memory::open_in(&state).unwrap();
    let one = memory.get(1).unwrap();
    assert_eq!(
        (one.actor.as_str(), one.performance.as_str()),
        ("lead", "perf-one")
    );
    let two = memory.get(2).unwrap();
    assert_eq!(two.performance, "perf-two");
}
