//! A stage known by its name, not its folder, through the real binary on a SQLite store (and
//! a real PostgreSQL from TempPostgres for the move itself): a
//! performance queued with `improv run --detach` before a deploy moved the stage's folder is
//! performed by a worker told the new place (`improv worker --stages DIR`), a worker serving
//! another stage leaves it queued, and a worker whose recorded path now holds another stage
//! fails it with an error naming the stage, the places looked in and what to do. A server of
//! the stage from its new folder lists and shows what was queued from the old one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use improv_kernel::Outcome;
use improv_store::testing::TempPostgres;
use improv_store::{PerformanceRecord, State, Store, StoreUrl};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long anything here may take before it counts as never.
const LIMIT: Duration = Duration::from_secs(90);

/// Stages in one temp folder, and a store: a SQLite file there, or a PostgreSQL database.
struct Fixture {
    dir: tempfile::TempDir,
    store: Option<String>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            store: None,
        }
    }

    fn on_postgres(database: &str) -> Fixture {
        static PG: std::sync::OnceLock<TempPostgres> = std::sync::OnceLock::new();
        let url = PG
            .get_or_init(TempPostgres::start_new)
            .create_database(database);
        Fixture {
            store: Some(url),
            ..Fixture::new()
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn store_url(&self) -> String {
        match &self.store {
            Some(url) => url.clone(),
            None => format!("sqlite:{}", self.path("store.db").display()),
        }
    }

    /// A stage named `name` in `folder`, whose scripted lead appends `name` to marks.txt in
    /// the stage's folder, then says done.
    fn stage(&self, folder: &str, name: &str) -> PathBuf {
        let dir = self.path(folder);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("stage.toml"),
            format!(
                "[stage]\nname = \"{name}\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"scripted/script.json\"\nprops = [\"bash\"]\n\n[edges]\nworkspace = \".\"\nsandbox = \"off\"\n"
            ),
        )
        .unwrap();
        let call = serde_json::json!({"command": format!("echo {name} >> marks.txt")});
        std::fs::write(
            dir.join("script.json"),
            serde_json::json!([
                {"calls": [{"name": "bash", "arguments": call}]},
                {"say": "done"}
            ])
            .to_string(),
        )
        .unwrap();
        dir
    }

    /// A stage as [`Fixture::stage`] makes it, whose file gives no `[stage] name`: it is named
    /// after its folder, which is no identity in a store.
    fn unnamed(&self, folder: &str, mark: &str) -> PathBuf {
        let dir = self.stage(folder, mark);
        let file = dir.join("stage.toml");
        let named = std::fs::read_to_string(&file).unwrap();
        let without = named.replace(&format!("[stage]\nname = \"{mark}\"\n\n"), "");
        assert_ne!(named, without);
        std::fs::write(&file, without).unwrap();
        dir
    }

    fn improv(&self, args: &[&str]) -> Command {
        let mut c = common::improv_command();
        c.current_dir(self.dir.path())
            .env("IMPROV_STORE", self.store_url())
            .env_remove("IMPROV_STAGES")
            .env("RUST_LOG", "warn")
            .args(args);
        c
    }

    /// Queues a performance of the stage in `folder` with `improv run --detach`; its id.
    fn enqueue(&self, folder: &str) -> String {
        let file = self.path(folder).join("stage.toml");
        let out = self
            .improv(&["-s", file.to_str().unwrap(), "run", "--detach", "go"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    }

    /// A worker process with `args`, run from elsewhere than any stage folder; its stderr goes
    /// to `log`.
    fn worker(&self, args: &[&str], log: &str) -> Worker {
        let log = std::fs::File::create(self.path(log)).unwrap();
        let child = self
            .improv(&[&["worker", "--lease", "10s"], args].concat())
            .current_dir("/")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Worker(child)
    }

    async fn store(&self) -> Arc<dyn Store> {
        improv_store::open(&StoreUrl::parse(&self.store_url()).unwrap()).unwrap()
    }

    /// Waits until `id` finished, or panics after [`LIMIT`].
    async fn wait_finished(&self, id: &str) -> PerformanceRecord {
        let store = self.store().await;
        let start = Instant::now();
        loop {
            let record = store.performance(id).await.unwrap();
            if record.state == State::Finished {
                return record;
            }
            assert!(start.elapsed() < LIMIT, "{id} did not finish: {record:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `improv serve --store` of the stage in `folder`; its process, URL and token.
    fn serve(&self, folder: &str) -> (Worker, String, String) {
        let file = self.path(folder).join("stage.toml");
        let mut child = self
            .improv(&[
                "-s",
                file.to_str().unwrap(),
                "serve",
                "--bind",
                "127.0.0.1:0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let served = Worker(child);
        let (mut url, mut token) = (None, None);
        while let Some(Ok(line)) = lines.next() {
            if let Some((_, at)) = line.split_once("serving the stage view at ") {
                url = Some(at.trim().trim_end_matches('/').to_string());
            }
            if line.starts_with("bearer token (shown once") {
                token = line.rsplit(": ").next().map(|t| t.trim().to_string());
            }
            if url.is_some() && token.is_some() {
                break;
            }
        }
        // The server keeps writing to stderr: read on, or it would write to a closed pipe.
        std::thread::spawn(move || lines.for_each(drop));
        (served, url.expect("serve started"), token.expect("a token"))
    }

    /// Waits until the worker's log says `line`, or panics after [`LIMIT`].
    async fn wait_log(&self, log: &str, line: &str) {
        let start = Instant::now();
        while !std::fs::read_to_string(self.path(log))
            .unwrap_or_default()
            .contains(line)
        {
            assert!(start.elapsed() < LIMIT, "{log} never said {line:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
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

fn marks(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("marks.txt")).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_performance_queued_before_its_stage_moved_is_performed_from_the_new_place_on_sqlite() {
    queued_before_the_stage_moved(Fixture::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_performance_queued_before_its_stage_moved_is_performed_from_the_new_place_on_postgres() {
    queued_before_the_stage_moved(Fixture::on_postgres("moved")).await;
}

/// Queued from `releases/1`, which a deploy then renames `releases/2`: a worker serving only
/// another stage leaves it queued (never claimed), and a worker told the new folder performs
/// it there; a server of the stage from there shows it.
async fn queued_before_the_stage_moved(f: Fixture) {
    f.stage("releases/1", "shop");
    let pantry = f.stage("pantry", "pantry");
    let id = f.enqueue("releases/1");
    std::fs::rename(f.path("releases/1"), f.path("releases/2")).unwrap();

    let other = f.worker(&["--stages", pantry.to_str().unwrap()], "other.log");
    f.wait_log("other.log", "serving stage `pantry`").await;
    // Long enough for several claims: woken by the queued work, it looks again later each time.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let record = f.store().await.performance(&id).await.unwrap();
    assert_eq!(
        (record.state, record.epoch, record.stage_name.as_deref()),
        (State::Queued, 0, Some("shop")),
        "a worker serving another stage left it alone: {record:?}"
    );
    drop(other);

    let moved = f.path("releases/2");
    let _worker = f.worker(&["--stages", moved.to_str().unwrap()], "shop.log");
    let record = f.wait_finished(&id).await;
    assert_eq!(record.outcome, Some(Outcome::Done), "{record:?}");
    assert_eq!(
        marks(&moved),
        "shop\n",
        "performed in the stage's new folder"
    );
    assert!(marks(&pantry).is_empty());

    // A server of the stage from its new folder lists and shows it; one of another stage not.
    let http = improv_models::client_builder().unwrap().build().unwrap();
    for (folder, seen) in [("releases/2", true), ("pantry", false)] {
        let (_serve, url, token) = f.serve(folder);
        let get = |path: String| http.get(format!("{url}{path}")).bearer_auth(&token).send();
        let shown = get(format!("/performances/{id}")).await.unwrap().status();
        assert_eq!(shown.as_u16(), if seen { 200 } else { 404 }, "{folder}");
        let listed: serde_json::Value = get("/performances".into())
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(listed.to_string().contains(&id), seen, "{folder}: {listed}");
    }
}

/// Two stages whose files give no name, in folders both named `current` (two releases'
/// checkouts sharing one store): each is known by its path, not by its folder's name, so a
/// server of one neither lists nor shows the other's performance, and a worker serving one
/// performs only its own, in its own folder; the other's stays queued, never claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_without_a_name_in_folders_named_alike_do_not_reach_each_others_work() {
    let f = Fixture::new();
    let a = f.unnamed("a/current", "a");
    let b = f.unnamed("b/current", "b");
    let own = f.enqueue("a/current");
    let others = f.enqueue("b/current");

    let worker = f.worker(&["--stages", a.to_str().unwrap()], "a.log");
    let record = f.wait_finished(&own).await;
    assert_eq!(record.outcome, Some(Outcome::Done), "{record:?}");
    // Long enough for several claims after its own ended.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let record = f.store().await.performance(&others).await.unwrap();
    assert_eq!(
        (record.state, record.epoch, record.stage_name.as_deref()),
        (State::Queued, 0, None),
        "the other `current`'s stays queued: {record:?}"
    );
    drop(worker);
    assert_eq!(marks(&a), "a\n", "performed once, its own");
    assert!(marks(&b).is_empty());

    let http = improv_models::client_builder().unwrap().build().unwrap();
    let (_serve, url, token) = f.serve("a/current");
    let get = |path: String| http.get(format!("{url}{path}")).bearer_auth(&token).send();
    for (id, seen) in [(&own, true), (&others, false)] {
        let shown = get(format!("/performances/{id}")).await.unwrap().status();
        assert_eq!(shown.as_u16(), if seen { 200 } else { 404 }, "{id}");
    }
    let listed: serde_json::Value = get("/performances".into())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = listed.to_string();
    assert!(
        listed.contains(&own) && !listed.contains(&others),
        "{listed}"
    );
}

/// The folder it was queued from now holds another stage (a deploy reused the path): a worker
/// serving any stage does not perform that one in its place; it fails the performance, saying
/// which stage it wanted, where it looked and what to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_path_holding_another_stage_is_not_performed_in_its_place() {
    let f = Fixture::new();
    f.stage("app", "shop");
    let id = f.enqueue("app");
    let app = f.stage("app", "pantry");

    let _worker = f.worker(&[], "any.log");
    let record = f.wait_finished(&id).await;
    assert_eq!(record.outcome, Some(Outcome::Failed), "{record:?}");
    for said in [
        "stage `shop` cannot be found",
        "holds stage `pantry`",
        app.join("stage.toml").to_str().unwrap(),
        "--stages DIR",
    ] {
        assert!(
            record.reason.contains(said),
            "{said:?} in {}",
            record.reason
        );
    }
    assert!(marks(&app).is_empty(), "pantry's lead never ran");
}
