//! What the server's tests share: a stage in a temp dir performed by a scripted model, the real
//! server bound on a random loopback port, an HTTP client, an SSE reader, and the runner of the
//! official clients (Python, node) that the interoperability tests drive.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use improv_serve::{ServeArgs, Server};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;

/// A stage whose lead plays `script` (JSON turns); `extra` is appended to the stage file.
pub struct TestStage {
    pub dir: tempfile::TempDir,
    pub stage: Arc<improv_stage::Stage>,
}

impl TestStage {
    pub fn new(script: Value, extra: &str) -> TestStage {
        let dir = tempfile::tempdir().unwrap();
        let script_path = dir.path().join("script.json");
        std::fs::write(&script_path, script.to_string()).unwrap();
        std::fs::write(dir.path().join("a.txt"), "alpha\n").unwrap();
        let text = format!(
            "[stage]\nname = \"serve-test\"\nintent = \"Read a.txt and write b.txt.\"\n\n\
             [[actor]]\nname = \"lead\"\nmodel = \"scripted/{}\"\nprops = [\"read\", \"write\"]\n\n\
             [edges]\nsandbox = \"off\"\n{extra}",
            script_path.display()
        );
        let path = dir.path().join("stage.toml");
        std::fs::write(&path, text).unwrap();
        let stage = Arc::new(improv_stage::Stage::load(&path).unwrap());
        TestStage { dir, stage }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join(".improv")
    }
}

/// `[[edges.rule]]` that makes every `write` wait for the director.
pub const ASK_WRITE: &str = "\n[[edges.rule]]\nprop = \"write\"\ndecision = \"ask\"\n";

/// A running server and a client for it; dropping it stops the server.
pub struct Running {
    pub addr: SocketAddr,
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The server's arguments with a random loopback port, the rest default.
pub fn loopback_args() -> ServeArgs {
    ServeArgs {
        bind: "127.0.0.1:0".parse().unwrap(),
        ..ServeArgs::default()
    }
}

pub async fn serve(stage: &TestStage) -> Running {
    serve_with(stage, |_| {}).await
}

/// Serves `stage` on a random loopback port with the arguments `configure` sets.
pub async fn serve_with(stage: &TestStage, configure: impl FnOnce(&mut ServeArgs)) -> Running {
    let mut args = loopback_args();
    configure(&mut args);
    let server: Server = improv_serve::bind(stage.stage.clone(), &args)
        .await
        .unwrap();
    let addr = server.addr();
    let token = server.token().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        server
            .run(async {
                let _ = rx.await;
            })
            .await
            .unwrap();
    });
    Running {
        addr,
        base: format!("http://{addr}"),
        token,
        http: improv_models::client_builder().unwrap().build().unwrap(),
        shutdown: Some(tx),
        task: Some(task),
    }
}

pub type Frames = Pin<Box<dyn Stream<Item = Frame> + Send>>;

/// One SSE frame: its event name (`message` for logged events), id and JSON data.
#[derive(Debug, Clone)]
pub struct Frame {
    pub event: String,
    pub id: String,
    pub data: Value,
}

impl Frame {
    pub fn kind(&self) -> &str {
        if self.event == "message" {
            self.data["type"].as_str().unwrap_or("")
        } else {
            &self.event
        }
    }
    pub fn seq(&self) -> Option<u64> {
        self.data["seq"]
            .as_u64()
            .filter(|_| self.event == "message")
    }
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(self.url(path)).bearer_auth(&self.token)
    }

    /// GETs `path` with the token and reads the body as JSON, whatever the status.
    pub async fn get_json(&self, path: &str) -> Value {
        self.send_get(path).await.json().await.unwrap()
    }

    /// GETs `path` with the token.
    pub async fn send_get(&self, path: &str) -> reqwest::Response {
        self.get(path).send().await.unwrap()
    }

    /// POSTs `body` as JSON to `path` with the token.
    pub async fn send_post(&self, path: &str, body: Value) -> reqwest::Response {
        self.post(path, body).send().await.unwrap()
    }

    /// Sends `req`; returns "METHOD URL" to name it in assertions, and the response.
    pub async fn execute(&self, req: reqwest::RequestBuilder) -> (String, reqwest::Response) {
        let req = req.build().unwrap();
        let what = format!("{} {}", req.method(), req.url());
        (what, self.http.execute(req).await.unwrap())
    }

    pub fn post(&self, path: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(&body)
    }

    /// Starts a performance and returns its id.
    pub async fn start(&self, body: Value) -> String {
        let r = self.post("/performances", body).send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert_eq!(status, 201, "{v}");
        v["id"].as_str().unwrap().to_string()
    }

    /// The event stream of `id`, after `last` when given.
    pub async fn events(&self, id: &str, last: Option<u64>) -> Frames {
        let mut req = self.get(&format!("/performances/{id}/events"));
        if let Some(l) = last {
            req = req.header("Last-Event-ID", l.to_string());
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Box::pin(r.bytes_stream().eventsource().map(|e| {
            let e = e.unwrap();
            Frame {
                event: e.event,
                id: e.id,
                data: serde_json::from_str(&e.data).unwrap_or(json!(e.data)),
            }
        }))
    }

    pub async fn stop_server(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

/// Reads frames until one of kind `kind`; returns all read, that one last.
pub async fn until(frames: &mut Frames, kind: &str) -> Vec<Frame> {
    let mut seen = Vec::new();
    while let Some(f) = frames.next().await {
        let done = f.kind() == kind;
        seen.push(f);
        if done {
            return seen;
        }
    }
    panic!(
        "the stream ended before a `{kind}` frame; saw {:?}",
        seen.iter()
            .map(|f| f.kind().to_string())
            .collect::<Vec<_>>()
    );
}

/// Reads the stream to its end.
pub async fn drain(frames: &mut Frames) -> Vec<Frame> {
    let mut seen = Vec::new();
    while let Some(f) = frames.next().await {
        seen.push(f);
    }
    seen
}

pub fn kinds(frames: &[Frame]) -> Vec<&str> {
    frames.iter().map(Frame::kind).collect()
}

/// The logged events of performance `id`.
pub fn logged(stage: &TestStage, id: &str) -> Vec<improv_kernel::Event> {
    improv_log::EventLog::open(&stage.state_dir())
        .unwrap()
        .events(id)
        .unwrap()
}

/// The Python interpreter with the `openai` package: `IMPROV_SERVE_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("IMPROV_SERVE_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs the official client `cmd` off the async runtime and returns the JSON it prints; fails,
/// naming `what` and crates/improv-serve/ci-setup.sh (which installs it), when it cannot run
/// or exits non-zero.
pub async fn client_json(mut cmd: Command, what: &str) -> Value {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap_or_else(|e| {
            panic!("cannot run {program} ({e}): run crates/improv-serve/ci-setup.sh")
        });
    assert!(
        out.status.success(),
        "the {what} failed (crates/improv-serve/ci-setup.sh installs it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `tests/clients/{script}` with the `openai` package against `server` for the stage's
/// model, in a clean temp HOME and without the `OPENAI_*` variables that would redirect it.
pub async fn openai_client(server: &Running, script: &str) -> Value {
    let home = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(script);
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .args([&server.base, &server.token, "serve-test"])
        .env("HOME", home.path())
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL");
    client_json(cmd, "openai client").await
}
