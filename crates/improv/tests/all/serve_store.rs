//! The performance index in the store, through the real binary: a worker process performs a
//! queued performance while `improv serve --store URL`, run from another folder (as it would
//! be on another machine), lists it, shows it, streams its events, and passes the director's
//! note and approval answers to the worker through the store; `improv log --store` lists and
//! shows it; `improv note`/`approve`/`show`/`log` take a unique id prefix. On a SQLite file and
//! on a real PostgreSQL (TempPostgres), with the model served over HTTP by the mock server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use improv_kernel::Outcome;
use improv_mock::{MockResponse, MockServer, openai_chat};
use improv_store::testing::TempPostgres;
use improv_store::{NewPerformance, State, Store, StoreUrl};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, mpsc};
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
        let stage = format!(
            "[stage]\nname = \"indexed\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"openai/mock\"\nprops = [\"bash\"]\n\n[edges]\nworkspace = \".\"\nsandbox = \"off\"\nmax_turns = 20\n{extra_stage}"
        );
        std::fs::write(dir.path().join("stage.toml"), &stage).unwrap();
        // The server's own stage folder, apart from the worker's.
        std::fs::create_dir(dir.path().join("front")).unwrap();
        std::fs::write(dir.path().join("front/stage.toml"), &stage).unwrap();
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
            .env("NO_COLOR", "1")
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
    fn worker(&self) -> Stopped {
        let child = self
            .improv(&["worker", "--lease", "10s"])
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Stopped(child)
    }

    /// `improv serve --store` of the workers' stage file from the `front` folder; returns it
    /// with its URL and token.
    fn serve(&self) -> (Stopped, Api) {
        let stage = self.path("stage.toml");
        self.serve_stage(&stage)
    }

    /// `improv serve --store` of `stage` from the `front` folder.
    fn serve_stage(&self, stage: &Path) -> (Stopped, Api) {
        let stage = stage.display().to_string();
        let mut child = self
            .improv(&["-s", &stage, "serve", "--bind", "127.0.0.1:0"])
            .current_dir(self.path("front"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pipe = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("serve: {line}");
                let _ = tx.send(line);
            }
        });
        let served = Stopped(child);
        let (mut url, mut token) = (None, None);
        while url.is_none() || token.is_none() {
            let line = rx.recv_timeout(LIMIT).expect("improv serve did not start");
            if let Some((_, at)) = line.split_once("serving the stage view at ") {
                url = Some(at.trim().trim_end_matches('/').to_string());
            }
            if line.starts_with("bearer token (shown once") {
                token = line.rsplit(": ").next().map(|t| t.trim().to_string());
            }
        }
        std::thread::spawn(move || while rx.recv().is_ok() {});
        let api = Api {
            url: url.unwrap(),
            token: token.unwrap(),
            http: improv_models::client_builder().unwrap().build().unwrap(),
        };
        (served, api)
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
        self.wait_finished_within(id, LIMIT).await
    }

    async fn wait_finished_within(
        &self,
        id: &str,
        limit: Duration,
    ) -> improv_store::PerformanceRecord {
        let store = self.store().await;
        let start = Instant::now();
        loop {
            let record = store.performance(id).await.unwrap();
            if record.state == State::Finished {
                return record;
            }
            assert!(
                start.elapsed() < limit,
                "{id} did not finish within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The server's API, with its token.
struct Api {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn json(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// The event stream of `id` read to its end (the `end` frame), as text.
    async fn stream(&self, id: &str) -> String {
        let read = async {
            let r = self
                .http
                .get(format!("{}/performances/{id}/events", self.url))
                .bearer_auth(&self.token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.text().await.unwrap()
        };
        tokio::time::timeout(LIMIT, read)
            .await
            .expect("the stream never ended")
    }
}

/// A child process, stopped with SIGTERM (then killed) when dropped.
struct Stopped(Child);

impl Drop for Stopped {
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
fn postgres_server() -> &'static TempPostgres {
    static PG: std::sync::OnceLock<TempPostgres> = std::sync::OnceLock::new();
    PG.get_or_init(TempPostgres::start_new)
}

fn postgres(database: &str) -> String {
    postgres_server().create_database(database)
}

fn sqlite(dir: &Path) -> String {
    format!("sqlite:{}", dir.join("store.db").display())
}

/// A performance a worker performs shows up in `improv serve --store` (list, show, events) and
/// in `improv log --store`; the note the API takes reaches the worker; `/metrics` counts the
/// store.
async fn a_workers_performance_is_served_from_the_store(store: String) {
    let fixture = Fixture::new(
        store,
        vec![held_until_go(), openai_chat::text("heard you")],
        "",
    )
    .await;
    let id = fixture.enqueue("wait for the director");
    let _worker = fixture.worker();
    fixture.wait_for_file("started").await;
    let (_serve, api) = fixture.serve();

    let listed = api.json("/performances").await;
    let row = listed["performances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} is not listed: {listed}"))
        .clone();
    assert_eq!(row["status"], "running", "{row}");
    assert_eq!(row["intent"], "wait for the director", "{row}");
    assert!(row["worker"].is_string(), "{row}");
    let one = api.json(&format!("/performances/{id}")).await;
    assert_eq!(one["state"], "leased", "{one}");

    let out = fixture
        .improv(&["log", "--store", &fixture.store])
        .output()
        .unwrap();
    assert!(succeeded(&out), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    let line = listing
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{listing}"));
    assert!(
        line.contains("leased") && line.contains("wait for the director"),
        "{line}"
    );

    // The note goes through the store to the worker, before its next model call.
    let (status, body) = api
        .post(
            &format!("/performances/{id}/notes"),
            serde_json::json!({"text": "use the kestrel branch"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    std::fs::write(fixture.path("go"), "").unwrap();
    let streamed = api.stream(&id).await;
    assert!(streamed.contains("\"director_note\""), "{streamed}");
    assert!(streamed.contains("event: end"), "{streamed}");
    assert!(streamed.contains("\"outcome\":\"done\""), "{streamed}");
    assert!(streamed.contains("heard you"), "{streamed}");
    let record = fixture.wait_finished(&id).await;
    assert_eq!(record.outcome, Some(Outcome::Done), "{}", record.reason);
    let requests = fixture.model.requests();
    assert_eq!(requests.len(), 2, "one request per turn");
    assert!(
        text(&requests[1].body).contains("use the kestrel branch"),
        "the turn after the note was asked without it"
    );
    let finished = api.json(&format!("/performances/{id}")).await;
    assert_eq!(finished["status"], "done", "{finished}");
    // A note to a performance that ended reaches no one.
    let (status, body) = api
        .post(
            &format!("/performances/{id}/notes"),
            serde_json::json!({"text": "too late"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");

    let (status, metrics) = api.get("/metrics").await;
    assert_eq!(status, 200, "{metrics}");
    assert!(
        metrics.contains("improv_store_performances{state=\"finished\"} 1"),
        "{metrics}"
    );

    // `improv log --store URL ID` prints its events, by a prefix of its id.
    let out = fixture
        .improv(&["log", "--store", &fixture.store, "--json", &id[..10]])
        .output()
        .unwrap();
    assert!(succeeded(&out), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("use the kestrel branch"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stdout).contains("performance_finished"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_performance_is_served_from_the_store_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_workers_performance_is_served_from_the_store(sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workers_performance_is_served_from_the_store_on_postgres() {
    a_workers_performance_is_served_from_the_store(postgres("served")).await;
}

/// An `ask` in a worker's performance is listed by `improv serve --store` as waiting and
/// answered through its API: the worker goes on and runs the command; a second answer is 409.
async fn an_ask_is_answered_through_the_servers_api(store: String) {
    let touch = serde_json::json!({ "command": "touch approved" }).to_string();
    let fixture = Fixture::new(
        store,
        vec![
            openai_chat::tool_calls(&[("call_1", "bash", &touch)]),
            openai_chat::text("ran it"),
        ],
        "\n[[edges.rule]]\ncommand = \"touch approved*\"\ndecision = \"ask\"\n",
    )
    .await;
    let _worker = fixture.worker();
    let id = fixture.enqueue("approved");
    let (_serve, api) = fixture.serve();
    let start = Instant::now();
    let waiting = loop {
        let one = api.json(&format!("/performances/{id}")).await;
        if one["approvals"].as_array().is_some_and(|a| !a.is_empty()) {
            break one;
        }
        assert!(start.elapsed() < LIMIT, "{id} never asked: {one}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        waiting["approvals"][0]["subject"], "touch approved",
        "{waiting}"
    );
    let (status, body) = api
        .post(
            &format!("/performances/{id}/approvals/1"),
            serde_json::json!({"answer": "once"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let record = fixture.wait_finished(&id).await;
    assert_eq!(record.outcome, Some(Outcome::Done), "{}", record.reason);
    assert!(
        fixture.path("approved").exists(),
        "the approved command did not run"
    );
    let (status, body) = api
        .post(
            &format!("/performances/{id}/approvals/1"),
            serde_json::json!({"answer": "deny"}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ask_is_answered_through_the_servers_api_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    an_ask_is_answered_through_the_servers_api(sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ask_is_answered_through_the_servers_api_on_postgres() {
    an_ask_is_answered_through_the_servers_api(postgres("answered")).await;
}

/// A server of one stage reaches only that stage's performances in a shared store: another
/// stage's is absent from its list and unknown (404) to show, stream, note and approve, so its
/// token reaches no other stage; its own stage's is listed and answered.
async fn another_stages_performance_is_out_of_reach(store: String) {
    let fixture = Fixture::new(store, Vec::new(), "").await;
    let stored = fixture.store().await;
    let ask = improv_store::ApprovalAsk {
        actor: "lead".into(),
        prop: "bash".into(),
        subject: "rm -rf build".into(),
        rule: "ask".into(),
    };
    // The served stage is front/stage.toml, named `indexed`; the others are the workers'
    // stage.toml without a name, and another stage's, named, from the served file's path. One
    // named `indexed` from a folder since gone is the served stage's.
    let front = fixture.path("front/stage.toml");
    let canonical = |path: &Path| path.canonicalize().unwrap().display().to_string();
    for (id, stage, name) in [
        ("own-stage-1111", canonical(&front), None),
        (
            "other-stage-2222",
            canonical(&fixture.path("stage.toml")),
            None,
        ),
        ("other-named-3333", canonical(&front), Some("pantry")),
        (
            "own-named-4444",
            "/releases/gone/stage.toml".into(),
            Some("indexed"),
        ),
    ] {
        let new = NewPerformance {
            id: Some(id.into()),
            stage,
            stage_name: name.map(Into::into),
            intent: format!("be {id}"),
            model: None,
            origin: "cli".into(),
            budget: None,
        };
        stored.enqueue(&new).await.unwrap();
        // Only the holder of its lease asks: claim it as a worker would.
        let (lease, _) = stored
            .claim("w", Duration::from_secs(600))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(lease.performance, id);
        assert_eq!(stored.ask_approval(&lease, &ask).await.unwrap(), 1);
    }
    let (_serve, api) = fixture.serve_stage(&front);

    let listed = api.json("/performances").await;
    let ids: Vec<&str> = listed["performances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(ids, ["own-named-4444", "own-stage-1111"], "{listed}");
    for other in ["other-stage-2222", "other-named-3333"] {
        out_of_reach(&api, &stored, other).await;
    }

    let own = api.json("/performances/own-stage-1111").await;
    assert_eq!(own["approvals"][0]["subject"], "rm -rf build", "{own}");
    let (status, body) = api
        .post(
            "/performances/own-stage-1111/approvals/1",
            serde_json::json!({"answer": "deny"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
}

/// Another stage's performance `other`, as the server of the served stage sees it: absent,
/// 404 to every route, nothing written to it.
async fn out_of_reach(api: &Api, stored: &Arc<dyn Store>, other: &str) {
    for path in ["", "/events"] {
        let (status, body) = api.get(&format!("/performances/{other}{path}")).await;
        assert_eq!(status, 404, "GET {path}: {body}");
    }
    let (status, body) = api
        .post(
            &format!("/performances/{other}/notes"),
            serde_json::json!({"text": "leak"}),
        )
        .await;
    assert_eq!(status, 404, "note: {body}");
    let (status, body) = api
        .post(
            &format!("/performances/{other}/approvals/1"),
            serde_json::json!({"answer": "once"}),
        )
        .await;
    assert_eq!(status, 404, "approval: {body}");
    assert!(stored.notes(other, 0).await.unwrap().is_empty());
    assert!(stored.approvals(other).await.unwrap()[0].answer.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_stages_performance_is_out_of_reach_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    another_stages_performance_is_out_of_reach(sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_stages_performance_is_out_of_reach_on_postgres() {
    another_stages_performance_is_out_of_reach(postgres("walled")).await;
}

/// `note`, `approve`, `show` and `log` take a unique prefix of 6 or more characters; an
/// ambiguous one lists the candidates; none found names the store, its password hidden.
async fn a_unique_prefix_names_a_performance(store: String, secret: Option<&str>) {
    let fixture = Fixture::new(store, Vec::new(), "").await;
    let stored = fixture.store().await;
    for id in ["kestrel-one-1111", "kestrel-two-2222"] {
        let new = NewPerformance {
            id: Some(id.into()),
            stage: fixture.path("stage.toml").display().to_string(),
            stage_name: None,
            intent: format!("be {id}"),
            model: None,
            origin: "cli".into(),
            budget: None,
        };
        stored.enqueue(&new).await.unwrap();
    }
    let out = fixture
        .improv(&["note", "kestrel-o", "go", "north"])
        .output()
        .unwrap();
    assert!(succeeded(&out), "{}", text(&out.stderr));
    let notes = stored.notes("kestrel-one-1111", 0).await.unwrap();
    assert_eq!(notes.len(), 1, "the note went elsewhere");
    assert_eq!(notes[0].text, "go north");

    let out = fixture
        .improv(&["note", "kestrel", "which?"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let said = text(&out.stderr);
    assert!(
        said.contains("kestrel-one-1111") && said.contains("kestrel-two-2222"),
        "{said}"
    );
    for args in [
        &["approve", "kestrel"][..],
        &["show", "--store", &fixture.store, "kestrel"],
        &["log", "kestrel"],
    ] {
        let out = fixture.improv(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains("kestrel-two-2222"),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    for (args, what) in [
        (&["approve", "kestrel-tw"][..], ""),
        (
            &["show", "--store", &fixture.store, "--json", "kestrel-tw"],
            "",
        ),
        (&["log", "kestrel-two"], "queued"),
    ] {
        let out = fixture.improv(args).output().unwrap();
        assert!(succeeded(&out), "{args:?}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains(what),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }

    let out = fixture
        .improv(&["note", "kestr", "short"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("6 characters"),
        "{}",
        text(&out.stderr)
    );
    let out = fixture
        .improv(&["note", "osprey-0", "nobody"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let said = text(&out.stderr);
    assert!(
        said.contains("no performance with an id beginning osprey-0"),
        "{said}"
    );
    let shown = match secret {
        Some(secret) => {
            assert!(!said.contains(secret), "the password was shown: {said}");
            ":***@"
        }
        None => "store.db",
    };
    assert!(said.contains(shown), "the store is not named: {said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_prefix_names_a_performance_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_unique_prefix_names_a_performance(sqlite(dir.path()), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_prefix_names_a_performance_on_postgres() {
    let pg = postgres_server();
    pg.create_database("prefixes");
    pg.psql(
        "postgres",
        "CREATE ROLE director LOGIN PASSWORD 'hidden-heron-9'",
    );
    pg.psql("prefixes", "GRANT ALL ON SCHEMA public TO director");
    let url = pg.url_as("director:hidden-heron-9", "prefixes");
    a_unique_prefix_names_a_performance(url, Some("hidden-heron-9")).await;
}

/// `POST /performances` on `improv serve --store` queues for the workers: a worker performs it
/// (the store names the worker and holds its events), not the server's own process. A model
/// no worker can perform is refused (422) rather than queued.
async fn a_posted_performance_is_performed_by_a_worker(store: String) {
    let fixture = Fixture::new(store, vec![openai_chat::text("done on a worker")], "").await;
    let (_serve, api) = fixture.serve();
    let unknown = serde_json::json!({"intent": "never queued", "model": "nosuch/model"});
    let (status, body) = api.post("/performances", unknown).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("unknown model provider"), "{body}");
    let (status, body) = api
        .post(
            "/performances",
            serde_json::json!({"intent": "queued from the API"}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let posted: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(posted["queued"], true, "{posted}");
    let id = posted["id"].as_str().unwrap().to_string();
    let queued = fixture.store().await.performance(&id).await.unwrap();
    assert_eq!(queued.origin, "api");
    let _worker = fixture.worker();
    let record = fixture.wait_finished(&id).await;
    assert_eq!(record.outcome, Some(Outcome::Done), "{}", record.reason);
    assert!(record.worker.is_some(), "no worker performed it");
    let streamed = api.stream(&id).await;
    assert!(streamed.contains("done on a worker"), "{streamed}");
    assert!(streamed.contains("\"outcome\":\"done\""), "{streamed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posted_performance_is_performed_by_a_worker_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_posted_performance_is_performed_by_a_worker(sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_posted_performance_is_performed_by_a_worker_on_postgres() {
    a_posted_performance_is_performed_by_a_worker(postgres("posted")).await;
}

/// How soon a stop asked through the server ends the worker's performance.
const STOP_REACHES: Duration = Duration::from_secs(10);

/// `POST /performances/ID/stop` reaches the worker holding it on another "machine": the
/// command it runs is cancelled (the test never lets it finish) and it ends `stopped`. A queued
/// one ends `stopped` at once and no worker starts it; a finished one is 409.
async fn a_stop_reaches_the_worker(store: String) {
    let fixture = Fixture::new(
        store,
        vec![held_until_go(), openai_chat::text("should not be asked")],
        "",
    )
    .await;
    let (_serve, api) = fixture.serve();
    let queued = fixture.enqueue("never starts");
    let (status, body) = api
        .post(
            &format!("/performances/{queued}/stop"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("\"stopped\":true"), "{body}");
    let record = fixture.wait_finished(&queued).await;
    assert_eq!(record.outcome, Some(Outcome::Stopped), "{}", record.reason);

    let id = fixture.enqueue("wait for the director");
    let _worker = fixture.worker();
    fixture.wait_for_file("started").await;
    let (status, body) = api
        .post(&format!("/performances/{id}/stop"), serde_json::json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(body.contains("\"stopped\":false"), "{body}");
    // Well within the stop watcher's fallback (60 s): the stop itself wakes it.
    let record = fixture.wait_finished_within(&id, STOP_REACHES).await;
    assert_eq!(record.outcome, Some(Outcome::Stopped), "{}", record.reason);
    assert!(!fixture.path("go").exists());
    let streamed = api.stream(&id).await;
    assert!(streamed.contains("\"outcome\":\"stopped\""), "{streamed}");
    assert_eq!(
        fixture.model.requests().len(),
        1,
        "asked again after the stop"
    );
    let stored = fixture.store().await;
    assert!(
        stored.events(&queued, 0, 0).await.unwrap().is_empty(),
        "the queued one was started"
    );
    let (status, body) = api
        .post(&format!("/performances/{id}/stop"), serde_json::json!({}))
        .await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_reaches_the_worker_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_stop_reaches_the_worker(sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_reaches_the_worker_on_postgres() {
    a_stop_reaches_the_worker(postgres("stopped")).await;
}

/// A director watching the server's stream of a worker's performance sees its `ask` as an
/// `approval` frame, answers it through the server's API (the page's route), and the stream
/// goes on: `approval_answered`, the approved command's effect, the end.
async fn the_stream_carries_a_workers_approvals(store: String) {
    let touch = serde_json::json!({ "command": "touch approved" }).to_string();
    let fixture = Fixture::new(
        store,
        vec![
            openai_chat::tool_calls(&[("call_1", "bash", &touch)]),
            openai_chat::text("ran it"),
        ],
        "\n[[edges.rule]]\ncommand = \"touch approved*\"\ndecision = \"ask\"\n",
    )
    .await;
    let (_serve, api) = fixture.serve();
    let (status, body) = api
        .post("/performances", serde_json::json!({"intent": "approved"}))
        .await;
    assert_eq!(status, 201, "{body}");
    let posted: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = posted["id"].as_str().unwrap().to_string();
    let _worker = fixture.worker();
    let r = api
        .http
        .get(format!("{}/performances/{id}/events", api.url))
        .bearer_auth(&api.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let mut r = r;
    let mut seen = String::new();
    let read = async {
        let mut answered = false;
        while let Some(chunk) = r.chunk().await.unwrap() {
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if !answered && seen.contains("event: approval\n") {
                assert!(seen.contains("touch approved"), "{seen}");
                let (status, body) = api
                    .post(
                        &format!("/performances/{id}/approvals/1"),
                        serde_json::json!({"answer": "once"}),
                    )
                    .await;
                assert_eq!(status, 202, "{body}");
                answered = true;
            }
            if seen.contains("event: end") {
                return;
            }
        }
    };
    tokio::time::timeout(LIMIT, read)
        .await
        .unwrap_or_else(|_| panic!("the stream never ended: {seen}"));
    assert!(seen.contains("event: approval_answered"), "{seen}");
    assert!(seen.contains("\"outcome\":\"done\""), "{seen}");
    assert!(
        fixture.path("approved").exists(),
        "the approved command did not run"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_carries_a_workers_approvals_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    the_stream_carries_a_workers_approvals(sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_carries_a_workers_approvals_on_postgres() {
    the_stream_carries_a_workers_approvals(postgres("streamed_asks")).await;
}

impl Api {
    /// `POST /v1/chat/completions` with one user message; the status, the performance's id
    /// (`x-improv-performance`) and the body read to its end.
    async fn chat(&self, message: &str, stream: bool) -> (u16, String, String) {
        let body = serde_json::json!({
            "model": "indexed",
            "messages": [{"role": "user", "content": message}],
            "stream": stream,
        });
        let ask = async {
            let r = self
                .http
                .post(format!("{}/v1/chat/completions", self.url))
                .bearer_auth(&self.token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let id = r
                .headers()
                .get("x-improv-performance")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            (r.status().as_u16(), id, r.text().await.unwrap())
        };
        tokio::time::timeout(LIMIT, ask)
            .await
            .expect("the chat was never answered")
    }
}

/// `POST /v1/chat/completions` on `improv serve --store` queues for the workers, as `POST
/// /performances` does: a worker performs it (the store names the worker and holds its
/// events), and the answer, streamed or not, is read from the store in OpenAI's format.
async fn a_chat_completion_is_performed_by_a_worker(store: String) {
    let replies = vec![
        openai_chat::text("chat answered on a worker"),
        openai_chat::text("chat streamed from a worker"),
    ];
    let fixture = Fixture::new(store, replies, "").await;
    let (_serve, api) = fixture.serve();
    let _worker = fixture.worker();
    let stored = fixture.store().await;

    let (status, id, body) = api.chat("hello from a chat client", false).await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["object"], "chat.completion", "{answer}");
    assert_eq!(answer["id"], format!("chatcmpl-{id}"), "{answer}");
    assert_eq!(
        answer["choices"][0]["message"]["content"], "chat answered on a worker",
        "{answer}"
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop", "{answer}");
    let record = stored.performance(&id).await.unwrap();
    assert_eq!(record.intent, "hello from a chat client");
    assert_eq!(record.outcome, Some(Outcome::Done), "{}", record.reason);
    assert!(record.worker.is_some(), "no worker performed it");

    let (status, id, body) = api.chat("stream it", true).await;
    assert_eq!(status, 200, "{body}");
    let streamed: String = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert_eq!(streamed, "chat streamed from a worker", "{body}");
    assert!(body.contains("\"finish_reason\":\"stop\""), "{body}");
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    let record = stored.performance(&id).await.unwrap();
    assert_eq!(record.outcome, Some(Outcome::Done), "{}", record.reason);
    assert!(record.worker.is_some(), "no worker performed it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_completion_is_performed_by_a_worker_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_chat_completion_is_performed_by_a_worker(sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_completion_is_performed_by_a_worker_on_postgres() {
    a_chat_completion_is_performed_by_a_worker(postgres("chatted")).await;
}

/// A streaming chat client that leaves before the end stops its performance, as it does one
/// the server performs itself: the stop reaches the worker through the store and the command
/// it runs is cancelled (the test never lets it finish).
async fn a_chat_client_that_leaves_stops_the_workers_performance(store: String) {
    let replies = vec![held_until_go(), openai_chat::text("should not be asked")];
    let fixture = Fixture::new(store, replies, "").await;
    let (_serve, api) = fixture.serve();
    let _worker = fixture.worker();
    let body = serde_json::json!({
        "model": "indexed",
        "messages": [{"role": "user", "content": "wait for the director"}],
        "stream": true,
    });
    let response = api
        .http
        .post(format!("{}/v1/chat/completions", api.url))
        .bearer_auth(&api.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let id = response.headers()["x-improv-performance"]
        .to_str()
        .unwrap()
        .to_string();
    fixture.wait_for_file("started").await;
    drop(response);
    let record = fixture.wait_finished_within(&id, STOP_REACHES).await;
    assert_eq!(record.outcome, Some(Outcome::Stopped), "{}", record.reason);
    assert!(!fixture.path("go").exists());
    assert_eq!(
        fixture.model.requests().len(),
        1,
        "asked again after the stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_client_that_leaves_stops_the_workers_performance_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_chat_client_that_leaves_stops_the_workers_performance(sqlite(dir.path())).await;
}

impl Api {
    /// An MCP client of the server's `/mcp` endpoint (the official Rust SDK's).
    async fn mcp(&self) -> rmcp::service::RunningService<rmcp::RoleClient, ()> {
        use rmcp::ServiceExt;
        use rmcp::transport::StreamableHttpClientTransport;
        use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
        let config = StreamableHttpClientTransportConfig::with_uri(format!("{}/mcp", self.url))
            .auth_header(self.token.clone());
        ().serve(StreamableHttpClientTransport::with_client(
            self.http.clone(),
            config,
        ))
        .await
        .unwrap()
    }
}

/// The `/mcp` endpoint's `perform` on `improv serve --store` queues for the workers: a worker
/// performs it (the store names the worker and holds its events) and the tool's result, read
/// from the store, carries the lead's answer and the outcome.
async fn an_mcp_perform_is_performed_by_a_worker(store: String) {
    use rmcp::model::CallToolRequestParams;
    let replies = vec![openai_chat::text("answered over MCP on a worker")];
    let fixture = Fixture::new(store, replies, "").await;
    let (_serve, api) = fixture.serve();
    let _worker = fixture.worker();
    let client = api.mcp().await;
    let args = serde_json::json!({"intent": "perform over MCP"});
    let call = client.call_tool(
        CallToolRequestParams::new("perform").with_arguments(args.as_object().unwrap().clone()),
    );
    let result = tokio::time::timeout(LIMIT, call)
        .await
        .expect("perform never answered")
        .unwrap();
    let text = serde_json::to_string(&result.content).unwrap();
    assert!(text.contains("answered over MCP on a worker"), "{text}");
    assert_ne!(result.is_error, Some(true), "{text}");
    let summary = result.structured_content.unwrap();
    assert_eq!(summary["outcome"], "done", "{summary}");
    let id = summary["id"].as_str().unwrap();
    let record = fixture.store().await.performance(id).await.unwrap();
    assert_eq!(record.intent, "perform over MCP");
    assert_eq!(record.outcome, Some(Outcome::Done), "{}", record.reason);
    assert!(record.worker.is_some(), "no worker performed it");
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_perform_is_performed_by_a_worker_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    an_mcp_perform_is_performed_by_a_worker(sqlite(dir.path())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mcp_perform_is_performed_by_a_worker_on_postgres() {
    an_mcp_perform_is_performed_by_a_worker(postgres("mcp_performed")).await;
}

/// An MCP client that cancels `perform` stops the worker's performance through the store, as
/// cancelling one the server performs interrupts it: the command it runs is cancelled (the test
/// never lets it finish) and it ends `stopped`.
async fn a_cancelled_mcp_perform_stops_the_workers_performance(store: String) {
    use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest};
    use rmcp::service::PeerRequestOptions;
    let replies = vec![held_until_go(), openai_chat::text("should not be asked")];
    let fixture = Fixture::new(store, replies, "").await;
    let (_serve, api) = fixture.serve();
    let _worker = fixture.worker();
    let client = api.mcp().await;
    let args = serde_json::json!({"intent": "wait for the director"});
    let call = CallToolRequest::new(
        CallToolRequestParams::new("perform").with_arguments(args.as_object().unwrap().clone()),
    );
    let handle = client
        .send_cancellable_request(
            ClientRequest::CallToolRequest(call),
            PeerRequestOptions::no_options(),
        )
        .await
        .unwrap();
    fixture.wait_for_file("started").await;
    let stored = fixture.store().await;
    let queued = stored
        .list(&improv_store::ListFilter::default())
        .await
        .unwrap();
    assert_eq!(queued.len(), 1, "one performance queued");
    let id = queued[0].id.clone();
    handle
        .cancel(Some("the test cancels".into()))
        .await
        .unwrap();
    let record = fixture.wait_finished_within(&id, STOP_REACHES).await;
    assert_eq!(record.outcome, Some(Outcome::Stopped), "{}", record.reason);
    assert!(!fixture.path("go").exists());
    assert_eq!(
        fixture.model.requests().len(),
        1,
        "asked again after the stop"
    );
    client.cancel().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_mcp_perform_stops_the_workers_performance_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_cancelled_mcp_perform_stops_the_workers_performance(sqlite(dir.path())).await;
}

/// A server that stops (SIGTERM, as a restart does) while a chat client streams leaves the
/// chat's performance to its worker: closing the client's connection then is not the client
/// leaving, so nothing is stopped, and the worker finishes it. End to end with the binaries;
/// the server's exit often outruns the stop it would spawn, so the in-process
/// `stored_shutdown` test of improv-serve is the one that fails without the shutdown check.
async fn a_server_restart_leaves_a_chats_performance_to_its_worker(store: String) {
    let replies = vec![
        held_until_go(),
        openai_chat::text("finished after the restart"),
    ];
    let fixture = Fixture::new(store, replies, "").await;
    let (serve, api) = fixture.serve();
    let _worker = fixture.worker();
    let body = serde_json::json!({
        "model": "indexed",
        "messages": [{"role": "user", "content": "wait for the director"}],
        "stream": true,
    });
    let response = api
        .http
        .post(format!("{}/v1/chat/completions", api.url))
        .bearer_auth(&api.token)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let id = response.headers()["x-improv-performance"]
        .to_str()
        .unwrap()
        .to_string();
    fixture.wait_for_file("started").await;
    // SIGTERM; once the server stopped listening it is stopping: the client hangs up then, as
    // one whose server goes away may (the server cannot tell that from a client leaving).
    // SAFETY: kill(2) on a child this test started and has not reaped.
    unsafe {
        libc::kill(serve.0.id() as i32, libc::SIGTERM);
    }
    let addr = api.url.trim_start_matches("http://").to_string();
    let start = Instant::now();
    while std::net::TcpStream::connect(&addr).is_ok() {
        assert!(
            start.elapsed() < LIMIT,
            "the server never stopped listening"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(response);
    // Wait for the server to exit (the connections it still had closed).
    tokio::task::block_in_place(|| drop(serve));
    // A stop the server wrote would reach the worker within this.
    tokio::time::sleep(STOP_REACHES / 2).await;
    std::fs::write(fixture.path("go"), "").unwrap();
    let record = fixture.wait_finished(&id).await;
    assert_eq!(record.outcome, Some(Outcome::Done), "{}", record.reason);
    assert_eq!(fixture.model.requests().len(), 2, "the worker asked on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_leaves_a_chats_performance_to_its_worker_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_server_restart_leaves_a_chats_performance_to_its_worker(sqlite(dir.path())).await;
}
