//! A worker's SQLite store inside the workspace it performs in is out of the actors' reach:
//! the store holds the approvals and director notes of leased performances, so a command that
//! could write it would answer its own `ask` or plant a note. Through the real binary: a
//! worker with `--store sqlite:WS/store.db` performs a queued performance whose sandboxed
//! `bash` commands try to read and write the store's files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use improv_kernel::Outcome;
use improv_mock::{MockServer, openai_chat};
use improv_store::{State, StoreUrl};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the performance may take before it counts as never.
const LIMIT: Duration = Duration::from_secs(90);

/// The attack, one command: read the store's header, then append to each of its files. A
/// marker file says which of them it reached.
const ATTACK: &str = "head -c 15 store.db > seen.txt; \
    for f in store.db store.db-wal store.db-shm store.db-journal; do \
    printf x >> $f && echo $f >> wrote.txt; done; true";

fn improv(ws: &Path, store: &str, model: &MockServer, args: &[&str]) -> Command {
    let mut c = common::improv_command();
    c.current_dir(ws)
        .env("IMPROV_STORE", store)
        .env("OPENAI_API_KEY", "sk-test")
        .env("OPENAI_BASE_URL", format!("{}/v1", model.url()))
        .env("RUST_LOG", "warn")
        .args(args);
    c
}

/// A worker process, killed when dropped.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_cannot_read_or_write_the_worker_s_store_in_its_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path().canonicalize().unwrap();
    std::fs::write(
        ws.join("stage.toml"),
        "[stage]\nname = \"leased\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"openai/mock\"\nprops = [\"bash\", \"read\"]\n\n[edges]\nmax_turns = 10\n",
    )
    .unwrap();
    let attack = serde_json::json!({ "command": ATTACK }).to_string();
    let read = serde_json::json!({ "path": "store.db" }).to_string();
    let model = MockServer::start(vec![
        openai_chat::tool_calls(&[("call_1", "bash", &attack)]),
        openai_chat::tool_calls(&[("call_2", "read", &read)]),
        openai_chat::text("done"),
    ])
    .await
    .unwrap();
    let store = format!("sqlite:{}", ws.join("store.db").display());
    let out = improv(&ws, &store, &model, &["store", "migrate"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = improv(&ws, &store, &model, &["run", "--detach", "probe the store"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let _worker = Worker(
        improv(&ws, &store, &model, &["worker", "--lease", "10s"])
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let db = improv_store::open(&StoreUrl::parse(&store).unwrap()).unwrap();
    let start = Instant::now();
    let record = loop {
        let record = db.performance(&id).await.unwrap();
        if record.state == State::Finished {
            break record;
        }
        assert!(start.elapsed() < LIMIT, "{id} did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(record.outcome, Some(Outcome::Done), "{}", record.reason);

    let seen = std::fs::read(ws.join("seen.txt")).unwrap_or_default();
    assert!(
        !seen.starts_with(b"SQLite"),
        "a command read the store: {seen:?}"
    );
    let wrote = std::fs::read_to_string(ws.join("wrote.txt")).unwrap_or_default();
    assert!(
        wrote.is_empty(),
        "a command wrote the store's files: {wrote}"
    );
    // The file props see it no more than commands do.
    let requests = model.requests();
    assert_eq!(requests.len(), 3, "one request per turn");
    let last = String::from_utf8_lossy(&requests[2].body).into_owned();
    assert!(!last.contains("SQLite format"), "read showed the store");
    // And the store is whole: the worker recorded the end after the attack.
    assert!(
        !db.events(&id, 0, 0).await.unwrap().is_empty(),
        "the store lost the journal"
    );
}

/// A second name for the store, made by a command in an earlier performance (`ln store.db
/// notes.txt`), would reach it past the cover, which hides by path: improv refuses such a store.
#[test]
fn a_store_with_another_hard_link_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ws = dir.path();
    let store = format!("sqlite:{}", ws.join("store.db").display());
    let mut migrate = common::improv_command();
    migrate
        .current_dir(ws)
        .args(["store", "migrate", "--store", &store]);
    let first = migrate.output().unwrap();
    assert!(first.status.success(), "{first:?}");
    std::fs::hard_link(ws.join("store.db"), ws.join("notes.txt")).unwrap();
    let again = migrate.output().unwrap();
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success(),
        "a linked store was opened: {stderr}"
    );
    assert!(stderr.contains("hard links"), "{stderr}");
}
