//! A stage's memory in the PostgreSQL store, through the real leased loop: a performance on
//! worker A `remember`s a note, a later one on worker B (its own copy of the stage folder, as
//! on another machine) `recall`s it. Against a real server started by the test in a temporary
//! folder (`improv_store::testing::TempPostgres`); without PostgreSQL it fails, saying so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_kernel::{EventKind, Outcome};
use improv_perform::leased::{self, Leased, WorkerSettings};
use improv_store::testing::TempPostgres;
use improv_store::{NewPerformance, Store, StoreUrl};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A copy of the stage "shop" in `dir` whose scripted lead makes `call`, then says done.
fn stage(dir: &Path, call: &str) -> String {
    std::fs::write(
        dir.join("stage.toml"),
        "[stage]\nname = \"shop\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"scripted/script.json\"\nprops = [\"remember\", \"recall\"]\n\n[edges]\nsandbox = \"off\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("script.json"),
        format!(r#"[{{"calls": [{call}]}}, {{"say": "done"}}]"#),
    )
    .unwrap();
    dir.join("stage.toml").display().to_string()
}

fn settings(name: &str, url: &str) -> WorkerSettings {
    WorkerSettings {
        name: name.into(),
        lease: Duration::from_secs(30),
        concurrency: 1,
        idle_poll: Duration::from_millis(50),
        outside: leased::Outside::default(),
        ask_timeout: Duration::from_secs(1),
        store: Some(StoreUrl::parse(url).unwrap()),
        stages: Default::default(),
    }
}

/// Enqueues `stage` and performs it on the worker `name`; returns the calls' outputs.
async fn perform_on(store: &Arc<dyn Store>, name: &str, url: &str, stage: String) -> Vec<String> {
    let id = store
        .enqueue(&NewPerformance {
            id: None,
            stage,
            stage_name: None,
            intent: "go".into(),
            model: None,
            origin: "test".into(),
            budget: None,
        })
        .await
        .unwrap();
    let (lease, record) = store
        .claim(name, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let left = leased::perform(
        store.clone(),
        lease,
        record,
        &settings(name, url),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(left, Leased::Finished(Outcome::Done));
    store
        .events(&id, 0, 0)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ToolCallFinished { output, ok, .. } => {
                assert!(ok, "{output}");
                Some(output)
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembered_on_worker_a_is_recalled_on_worker_b() {
    let server = TempPostgres::start_new();
    let url = server.create_database("improv");
    let store = improv_store::open(&StoreUrl::parse(&url).unwrap()).unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());

    let remember = r#"{"name": "remember", "arguments": {"text": "The staging database listens on port 6543.", "tags": ["db"]}}"#;
    let saved = perform_on(&store, "worker-a", &url, stage(a.path(), remember)).await;
    assert_eq!(saved, vec!["saved note #1"]);

    let recall = r#"{"name": "recall", "arguments": {"query": "staging port"}}"#;
    let found = perform_on(&store, "worker-b", &url, stage(b.path(), recall)).await;
    assert_eq!(found.len(), 1);
    assert!(
        found[0].contains("#1") && found[0].contains("port 6543") && found[0].contains("[db]"),
        "worker B did not recall worker A's note: {found:?}"
    );
    // In the store, not in either stage folder.
    for dir in [a.path(), b.path()] {
        assert!(
            !dir.join(".improv")
                .join(improv_memory::MEMORY_FILE)
                .exists()
        );
    }
    let rows = server.psql(
        "improv",
        "SELECT stage, actor, text FROM improv_memories ORDER BY id",
    );
    assert_eq!(
        rows.trim(),
        "shop|lead|The staging database listens on port 6543."
    );
}
