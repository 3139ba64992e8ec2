//! What a leased performance keeps in the store besides its events, through the real binary:
//! a worker process performs a queued performance while other `improv` processes direct it
//! through the store (a real PostgreSQL from TempPostgres, or a SQLite file), with the model
//! served over HTTP by the mock server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use improv_kernel::{EventKind, Outcome};
use improv_mock::{MockResponse, MockServer, openai_chat};
use improv_store::testing::TempPostgres;
use improv_store::{State, Store, StoreUrl};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long anything in these tests may take before it counts as never.
const LIMIT: Duration = Duration::from_secs(90);

/// A stage with the `bash` prop, its store and the mock model, in a temp folder.
struct Fixture {
    dir: tempfile::TempDir,
    store: String,
    model: MockServer,
}

impl Fixture {
    async fn new(store: String, replies: Vec<MockResponse>, extra_stage: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("stage.toml"),
            format!(
                "[stage]\nname = \"leased\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"openai/mock\"\nprops = [\"bash\"]\n\n[edges]\nworkspace = \".\"\nsandbox = \"off\"\nmax_turns = 20\n{extra_stage}"
            ),
        )
        .unwrap();
        let model = MockServer::start(replies).await.unwrap();
        let fixture = Fixture { dir, store, model };
        let out = fixture.improv(&["store", "migrate"]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        fixture
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn improv(&self, args: &[&str]) -> Command {
        let mut c = common::improv_command();
        c.current_dir(self.dir.path())
            .env("IMPROV_STORE", &self.store)
            .env("OPENAI_API_KEY", "sk-test")
            .env("OPENAI_BASE_URL", format!("{}/v1", self.model.url()))
            .env("RUST_LOG", "warn")
            .args(args);
        c
    }

    /// Queues `intent` with `improv run --detach`; returns its id.
    fn enqueue(&self, intent: &str) -> String {
        let out = self
            .improv(&["-s", "stage.toml", "run", "--detach", intent])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    }

    /// A worker process, run from elsewhere than the stage folder.
    fn worker(&self) -> Worker {
        let child = self
            .improv(&["worker", "--lease", "10s"])
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Worker(child)
    }

    async fn store(&self) -> Arc<dyn Store> {
        improv_store::open(&StoreUrl::parse(&self.store).unwrap()).unwrap()
    }

    /// Waits for a file the performance's commands write, or panics after [`LIMIT`].
    async fn wait_for_file(&self, name: &str) {
        let start = Instant::now();
        while !self.path(name).exists() {
            assert!(start.elapsed() < LIMIT, "{name} never appeared");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `id` finished, or panics after [`LIMIT`].
    async fn wait_finished(&self, id: &str) -> improv_store::PerformanceRecord {
        let store = self.store().await;
        let start = Instant::now();
        loop {
            let record = store.performance(id).await.unwrap();
            if record.state == State::Finished {
                return record;
            }
            assert!(start.elapsed() < LIMIT, "{id} did not finish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A worker process, drained when dropped.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        // SAFETY: kill(2) on a child this test started and has not reaped.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if self.0.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.0.kill().ok();
        self.0.wait().ok();
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn succeeded(out: &Output) -> bool {
    out.status.success()
}

/// A bash call that marks it started, then runs until the test creates `go`.
fn held_until_go() -> MockResponse {
    let args = serde_json::json!({
        "command": "touch started; while [ ! -f go ]; do sleep 0.05; done"
    })
    .to_string();
    openai_chat::tool_calls(&[("call_1", "bash", &args)])
}

/// One throwaway PostgreSQL server for this test process.
fn postgres(database: &str) -> String {
    static PG: std::sync::OnceLock<TempPostgres> = std::sync::OnceLock::new();
    PG.get_or_init(TempPostgres::start_new)
        .create_database(database)
}

fn sqlite(dir: &Path) -> String {
    format!("sqlite:{}", dir.join("store.db").display())
}

/// `improv note --store` from another process reaches the worker performing the performance:
/// the note is in the model request after the turn it was sent in, and in the journal.
async fn a_note_sent_from_another_process_reaches_the_worker(store: String) {
    let fixture = Fixture::new(
        store,
        vec![held_until_go(), openai_chat::text("heard you")],
        "",
    )
    .await;
    let id = fixture.enqueue("wait for the director");
    let _worker = fixture.worker();
    fixture.wait_for_file("started").await;
    let out = fixture
        .improv(&["note", &id, "use", "the", "kestrel", "branch"])
        .output()
        .unwrap();
    assert!(succeeded(&out), "{}", text(&out.stderr));
    std::fs::write(fixture.path("go"), "").unwrap();
    let record = fixture.wait_finished(&id).await;
    assert_eq!(record.outcome, Some(Outcome::Done), "{}", record.reason);
    let requests = fixture.model.requests();
    assert_eq!(requests.len(), 2, "one request per turn");
    assert!(
        text(&requests[1].body).contains("use the kestrel branch"),
        "the turn after the note was asked without it"
    );
    let events = fixture.store().await.events(&id, 0, 0).await.unwrap();
    assert!(events.iter().any(|e| matches!(
        &e.kind,
        EventKind::DirectorNote { text } if text == "use the kestrel branch"
    )));
    // It finished: a note now reaches no one and says so.
    let out = fixture
        .improv(&["note", &id, "too", "late"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("has finished"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_sent_from_another_process_reaches_the_worker_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_note_sent_from_another_process_reaches_the_worker(sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_sent_from_another_process_reaches_the_worker_on_postgres() {
    a_note_sent_from_another_process_reaches_the_worker(postgres("notes")).await;
}

/// server-filesystem's entry point; fails loudly when the reference servers are not installed.
fn filesystem_server() -> PathBuf {
    let index = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../improv-mcp/tests/servers/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js");
    assert!(
        index.is_file(),
        "the reference MCP servers are not installed ({} is missing): run crates/improv-mcp/ci-setup.sh",
        index.display()
    );
    index.canonicalize().unwrap()
}

/// A worker casts as `improv run` does: the stage's MCP server (the reference filesystem
/// server) is attached, and the lead's call to its tool reads the file.
async fn a_worker_attaches_the_stage_s_mcp_servers(store: String) {
    let server = filesystem_server();
    let mut fixture = Fixture::new(store, Vec::new(), "").await;
    let root = fixture.dir.path().canonicalize().unwrap();
    let note = root.join("note.txt");
    std::fs::write(&note, "written before the worker started\n").unwrap();
    let args = serde_json::json!({ "path": note }).to_string();
    fixture.model = MockServer::start(vec![
        openai_chat::tool_calls(&[("call_1", "fs.read_text_file", &args)]),
        openai_chat::text("read it"),
    ])
    .await
    .unwrap();
    // The lead may use the server's tools.
    let stage = std::fs::read_to_string(fixture.path("stage.toml"))
        .unwrap()
        .replace("props = [\"bash\"]", "props = [\"bash\", \"fs\"]");
    let mcp = format!(
        "\n[[props.mcp]]\nname = \"fs\"\ncommand = \"node\"\nargs = [{server:?}, {root:?}]\n",
        server = server.to_str().unwrap(),
        root = root.to_str().unwrap(),
    );
    std::fs::write(fixture.path("stage.toml"), stage + &mcp).unwrap();
    let id = fixture.enqueue("read the note with the fs server");
    let _worker = fixture.worker();
    let record = fixture.wait_finished(&id).await;
    assert_eq!(record.outcome, Some(Outcome::Done), "{}", record.reason);
    let events = fixture.store().await.events(&id, 0, 0).await.unwrap();
    let finished: Vec<(bool, String)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolCallFinished { ok, output, .. } => Some((*ok, output.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        finished,
        [(true, "written before the worker started\n".to_string())],
        "the MCP tool was not attached in the worker's performance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_attaches_the_stage_s_mcp_servers_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_worker_attaches_the_stage_s_mcp_servers(sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_attaches_the_stage_s_mcp_servers_on_postgres() {
    a_worker_attaches_the_stage_s_mcp_servers(postgres("mcp")).await;
}

/// An `ask` in a leased performance waits in the store; `improv approve` from another process
/// answers it and the worker goes on: the command runs once approved, and not when denied.
async fn an_ask_is_answered_from_another_process(store: String) {
    let touch = serde_json::json!({ "command": "touch approved" }).to_string();
    let fixture = Fixture::new(
        store,
        vec![
            openai_chat::tool_calls(&[("call_1", "bash", &touch)]),
            openai_chat::text("ran it"),
            openai_chat::tool_calls(&[(
                "call_1",
                "bash",
                &touch.replace("approved", "approved-2"),
            )]),
            openai_chat::text("was told no"),
        ],
        "\n[[edges.rule]]\ncommand = \"touch approved*\"\ndecision = \"ask\"\n",
    )
    .await;
    let _worker = fixture.worker();
    for (file, answer, ran) in [("approved", "once", true), ("approved-2", "deny", false)] {
        let id = fixture.enqueue(file);
        let store = fixture.store().await;
        let start = Instant::now();
        while store.approvals(&id).await.unwrap().is_empty() {
            assert!(start.elapsed() < LIMIT, "{id} never asked");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let listed = fixture.improv(&["approve", &id]).output().unwrap();
        assert!(
            text(&listed.stdout).contains("waiting  lead asks to run bash: touch"),
            "{}",
            text(&listed.stdout)
        );
        let out = fixture
            .improv(&["approve", &id, "1", answer, "not", "now"])
            .output()
            .unwrap();
        assert!(succeeded(&out), "{}", text(&out.stderr));
        let record = fixture.wait_finished(&id).await;
        assert_eq!(record.outcome, Some(Outcome::Done), "{}", record.reason);
        assert_eq!(fixture.path(file).exists(), ran, "{file} after {answer}");
        // Answered already: a second answer is refused and changes nothing.
        let again = fixture
            .improv(&["approve", &id, "1", "once"])
            .output()
            .unwrap();
        assert_eq!(again.status.code(), Some(2));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ask_is_answered_from_another_process_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    an_ask_is_answered_from_another_process(sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ask_is_answered_from_another_process_on_postgres() {
    an_ask_is_answered_from_another_process(postgres("asks")).await;
}
