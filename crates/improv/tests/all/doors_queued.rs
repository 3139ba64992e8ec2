//! `improv serve --store URL` with an `every` door: each firing is enqueued in the shared store
//! under the id its firing names, and an `improv worker` on the same store (as it would on
//! another machine) performs it; no start-once marker file is written on the server's side.
//! Each firing carries its door's own budget (`[door.edges]`) to the worker, on SQLite and on
//! PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PROMPT: Duration = Duration::from_secs(90);

/// A stage allowing 10 turns whose door allows 1, and a script of two turns (a call, then text).
const BUDGET_STAGE: &str = "[stage]\nname = \"budget\"\nintent = \"Wait.\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"scripted/script.json\"\nprops = [\"read\"]\n\n[edges]\nmax_turns = 10\n\n[[door]]\nname = \"tick\"\nevery = \"2s\"\nintent = \"Read the notes.\"\n\n[door.edges]\nmax_turns = 1\n";
const TWO_TURNS: &str =
    r#"[{"calls": [{"name": "read", "arguments": {"path": "notes.txt"}}]}, {"say": "Done."}]"#;

const STAGE: &str = "[stage]\nname = \"queued\"\nintent = \"Wait.\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"scripted/script.json\"\n\n[[door]]\nname = \"tick\"\nevery = \"2s\"\nintent = \"Tick.\"\n";

/// A child process, killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(ws: &Path, tmp: &Path, args: &[&str], ready: &str) -> Running {
    let mut child = common::improv_command()
        .current_dir(ws)
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("IMPROV_STORE")
        .env("NO_COLOR", "1")
        .env("TMPDIR", tmp)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pipe = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            eprintln!("{line}");
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + PROMPT;
    while !ready.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("the process did not start");
        if line.contains(ready) {
            break;
        }
    }
    std::thread::spawn(move || while rx.recv().is_ok() {});
    Running(child)
}

#[test]
fn a_door_firing_on_a_shared_store_is_performed_by_a_worker() {
    let root = tempfile::tempdir().unwrap();
    let ws = root.path().join("ws");
    let tmp = root.path().join("tmp");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(ws.join("stage.toml"), STAGE).unwrap();
    std::fs::write(ws.join("script.json"), r#"[{"say": "Done."}]"#).unwrap();
    let db = root.path().join("shared.db");
    let url = format!("sqlite:{}", db.display());

    let migrate = common::improv_command()
        .current_dir(&ws)
        .args(["store", "migrate", "--store", &url])
        .output()
        .unwrap();
    assert!(migrate.status.success(), "{migrate:?}");
    let _serve = spawn(
        &ws,
        &tmp,
        &["serve", "--bind", "127.0.0.1:0", "--store", &url],
        "serving the stage view at ",
    );
    let _worker = spawn(&ws, &tmp, &["worker", "--store", &url], "");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = improv_store::open(&improv_store::StoreUrl::Sqlite(db.clone())).unwrap();
    let start = Instant::now();
    let performed = loop {
        assert!(
            start.elapsed() < PROMPT,
            "no door firing was performed by the worker"
        );
        std::thread::sleep(Duration::from_millis(200));
        let firings = rt
            .block_on(store.firings(&stage_key_of(&ws), "tick", 100))
            .unwrap();
        let done: Vec<_> = firings
            .iter()
            .filter(|f| f.note.starts_with("fired"))
            .cloned()
            .collect();
        if done.len() >= 2 {
            break done;
        }
    };
    for f in &performed {
        let id = f.performance.as_deref().unwrap();
        let record = rt.block_on(store.performance(id)).unwrap();
        assert_eq!(record.origin, "door:tick", "{record:?}");
        assert_eq!(record.state, improv_store::State::Finished, "{record:?}");
        assert!(record.worker.is_some(), "a worker performed it: {record:?}");
        assert_eq!(f.note, "fired: done", "{f:?}");
    }
    assert!(
        !ws.join(".improv").join("doors").join("started").exists(),
        "no local start-once marker: the store's queue is the fence"
    );
}

/// Serves [`BUDGET_STAGE`] on the store `url` with a worker beside it, and checks that the door's
/// firing was performed under the door's one turn, not the stage's ten.
fn a_doors_budget_reaches_the_worker(url: &str, store_url: improv_store::StoreUrl) {
    let root = tempfile::tempdir().unwrap();
    let ws = root.path().join("ws");
    let tmp = root.path().join("tmp");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(ws.join("stage.toml"), BUDGET_STAGE).unwrap();
    std::fs::write(ws.join("script.json"), TWO_TURNS).unwrap();
    std::fs::write(ws.join("notes.txt"), "nothing yet\n").unwrap();
    let migrate = common::improv_command()
        .current_dir(&ws)
        .args(["store", "migrate", "--store", url])
        .output()
        .unwrap();
    assert!(migrate.status.success(), "{migrate:?}");
    let _serve = spawn(
        &ws,
        &tmp,
        &["serve", "--bind", "127.0.0.1:0", "--store", url],
        "serving the stage view at ",
    );
    let _worker = spawn(&ws, &tmp, &["worker", "--store", url], "");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = improv_store::open(&store_url).unwrap();
    let start = Instant::now();
    let record = loop {
        assert!(
            start.elapsed() < PROMPT,
            "no door firing was performed by the worker"
        );
        std::thread::sleep(Duration::from_millis(200));
        let firings = rt
            .block_on(store.firings(&stage_key_of(&ws), "tick", 100))
            .unwrap();
        let finished = firings.iter().filter_map(|f| {
            let record = rt
                .block_on(store.performance(f.performance.as_deref()?))
                .ok()?;
            (record.state == improv_store::State::Finished).then_some(record)
        });
        if let Some(record) = finished.last() {
            break record;
        }
    };
    assert!(record.worker.is_some(), "a worker performed it: {record:?}");
    assert_eq!(
        record.budget.as_ref().and_then(|b| b.max_turns),
        Some(1),
        "{record:?}"
    );
    assert_eq!(
        record.outcome,
        Some(improv_kernel::Outcome::Stopped),
        "the door's one turn stopped it before the script's second: {record:?}"
    );
    assert!(record.reason.contains("turn"), "{record:?}");
}

#[test]
fn a_doors_budget_reaches_the_worker_on_sqlite() {
    let root = tempfile::tempdir().unwrap();
    let db = root.path().join("shared.db");
    let url = format!("sqlite:{}", db.display());
    a_doors_budget_reaches_the_worker(&url, improv_store::StoreUrl::Sqlite(db));
}

#[test]
fn a_doors_budget_reaches_the_worker_on_postgres() {
    let pg = improv_store::testing::TempPostgres::start_new();
    pg.create_database("doors");
    let url = pg.url("doors");
    a_doors_budget_reaches_the_worker(&url, improv_store::StoreUrl::parse(&url).unwrap());
}

/// The store key of the stage in `ws`, as its doors record their firings.
fn stage_key_of(ws: &Path) -> improv_store::StageKey {
    let stage = improv_stage::Stage::load(&ws.join("stage.toml")).unwrap();
    improv_door::expiry::stage_key(&stage)
}
