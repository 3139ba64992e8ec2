//! SIGTERM and SIGHUP end a performance as cleanly as Ctrl-C, through the real binary: the
//! actor's processes (a background one included) are killed, the sandbox's temp dir and cgroup
//! are removed, the log ends with `performance_finished` / `interrupted`, and improv exits with
//! 128 + the signal (`improv run`) or 0 (`improv serve`, asked to stop).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// How long improv may take to end after the signal: generous, so a slow CI machine passes, but
/// far below the actor's 60 s sleeps, which would otherwise keep it running.
const PROMPT: Duration = Duration::from_secs(30);

/// A workspace and a private TMPDIR (where the sandbox makes its temp dir), both temporary.
struct Fixture {
    root: tempfile::TempDir,
}

impl Fixture {
    /// A stage whose lead runs `command` in bash, then would say it is done.
    fn new(command: &str) -> Fixture {
        Fixture::scripted(serde_json::json!([
            {"say": "Working.", "calls": [{"name": "bash", "arguments": {"command": command}}]},
            {"say": "Done."}
        ]))
    }

    /// A stage whose lead plays `script`.
    fn scripted(script: Value) -> Fixture {
        let root = tempfile::tempdir().unwrap();
        let fixture = Fixture { root };
        std::fs::create_dir(fixture.workspace()).unwrap();
        std::fs::create_dir(fixture.tmp()).unwrap();
        std::fs::write(fixture.workspace().join("script.json"), script.to_string()).unwrap();
        std::fs::write(
            fixture.workspace().join("stage.toml"),
            "[stage]\nname = \"signals\"\nintent = \"Wait.\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"scripted/script.json\"\n",
        )
        .unwrap();
        fixture
    }

    fn workspace(&self) -> PathBuf {
        self.root.path().join("ws")
    }

    fn tmp(&self) -> PathBuf {
        self.root.path().join("tmp")
    }

    fn improv(&self) -> Command {
        let mut c = common::improv_command();
        c.current_dir(self.workspace())
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .env("NO_COLOR", "1")
            .env("TMPDIR", self.tmp())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// The sandbox temp dirs in the private TMPDIR.
    fn sandbox_dirs(&self) -> Vec<String> {
        std::fs::read_dir(self.tmp())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("improv-sandbox-"))
            .collect()
    }

    /// The events of the newest performance, as its log on disk has them.
    fn logged_events(&self) -> Vec<Value> {
        let out = common::improv_command()
            .current_dir(self.workspace())
            .args(["log", "--json"])
            .output()
            .unwrap();
        let first = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .expect("one performance logged");
        let id = first["id"].as_str().unwrap().to_string();
        let out = common::improv_command()
            .current_dir(self.workspace())
            .args(["show", &id, "--json"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The live processes whose command line is exactly `sleep MARKER`.
fn marked(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        // A zombie's command line is empty: it is dead, only not yet reaped.
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.len() >= 2 && args[0].ends_with(b"sleep") && args[1] == marker.as_bytes() {
            found.push(pid);
        }
    }
    found
}

/// Waits (bounded) until `check` holds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < PROMPT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The cgroup folders `pid` is in that differ from this test's own: the sandbox's, when it made
/// one (as root with a writable pids or memory hierarchy).
fn own_cgroups_of(pid: u32) -> Vec<PathBuf> {
    let mine = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let theirs = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    theirs
        .lines()
        .filter(|line| !mine.lines().any(|m| m == *line))
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            let mount = mounts.lines().find_map(|m| {
                let f: Vec<&str> = m.split_whitespace().collect();
                let fits = if controllers.is_empty() {
                    f.get(2) == Some(&"cgroup2")
                } else {
                    f.get(2) == Some(&"cgroup")
                        && controllers
                            .split(',')
                            .all(|c| f.get(3).is_some_and(|o| o.split(',').any(|x| x == c)))
                };
                fits.then(|| PathBuf::from(f[1]))
            })?;
            Some(mount.join(path.trim_start_matches('/')))
        })
        .collect()
}

/// Reads lines on a thread, to the end (a closed pipe would fail improv's next write).
fn lines_of(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Collects everything read, as it comes (the session's prompt ends no line).
fn text_of(mut out: impl std::io::Read + Send + 'static) -> Arc<Mutex<String>> {
    let text = Arc::new(Mutex::new(String::new()));
    let shared = text.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            shared
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: sending a signal to our own child process.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill failed");
}

/// Waits, bounded, for `child` to exit; kills it and fails when it does not.
fn exits_promptly(child: &mut Child) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            eprintln!("improv exited {:?} after the signal", start.elapsed());
            return status;
        }
        if start.elapsed() > PROMPT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("improv did not exit within {PROMPT:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Once the actor's processes run: what was there to clean up, so the checks after the signal
/// cannot pass by accident.
struct Running {
    cgroups: Vec<PathBuf>,
}

fn actor_is_running(fixture: &Fixture, marker: &str) -> Running {
    eventually("both of the actor's sleeps", || marked(marker).len() == 2);
    assert_eq!(
        fixture.sandbox_dirs().len(),
        1,
        "the sandbox's temp dir is in the private TMPDIR while it runs"
    );
    let cgroups = own_cgroups_of(marked(marker)[0]);
    eprintln!("the sandbox's cgroups: {cgroups:?}");
    for c in &cgroups {
        assert!(c.is_dir(), "the sandbox's cgroup {} exists", c.display());
    }
    Running { cgroups }
}

/// Everything of the performance is gone, and its log says how it ended.
fn cleaned_up(fixture: &Fixture, marker: &str, running: &Running) {
    // Killed processes leave /proc as the kernel tears them down: bounded wait.
    eventually("the actor's processes to be gone", || {
        marked(marker).is_empty()
    });
    assert_eq!(
        fixture.sandbox_dirs(),
        Vec::<String>::new(),
        "temp dir left"
    );
    for c in &running.cgroups {
        assert!(!c.exists(), "the sandbox's cgroup {} is left", c.display());
    }
    let events = fixture.logged_events();
    let last = events.last().unwrap();
    assert_eq!(last["type"], "performance_finished", "{events:?}");
    assert_eq!(last["outcome"], "interrupted", "{last}");
}

/// `improv run`, stopped by `sig` while its actor waits on a background and a foreground sleep.
fn run_is_stopped_by(sig: i32, marker: &str) {
    let fixture = Fixture::new(&format!("sleep {marker} & sleep {marker}"));
    let mut child = fixture.improv().args(["run", "--json"]).spawn().unwrap();
    let lines = lines_of(child.stdout.take().unwrap());
    let _stderr = lines_of(child.stderr.take().unwrap());
    let running = actor_is_running(&fixture, marker);
    signal(&child, sig);
    let status = exits_promptly(&mut child);
    let seen: Vec<String> = lines.try_iter().collect();
    assert_eq!(status.code(), Some(128 + sig), "{seen:?}");
    let last: Value = serde_json::from_str(seen.last().unwrap()).unwrap();
    assert_eq!(last["type"], "performance_finished");
    assert_eq!(last["outcome"], "interrupted");
    cleaned_up(&fixture, marker, &running);
}

#[test]
fn sigterm_ends_improv_run_cleanly() {
    run_is_stopped_by(libc::SIGTERM, "60.101");
}

#[test]
fn sighup_ends_improv_run_cleanly() {
    run_is_stopped_by(libc::SIGHUP, "60.102");
}

/// `improv serve` with a performance started through the API, stopped by `sig`.
fn serve_is_stopped_by(sig: i32, marker: &str) {
    let fixture = Fixture::new(&format!("sleep {marker} & sleep {marker}"));
    let mut child = fixture
        .improv()
        .args(["serve", "--bind", "127.0.0.1:0"])
        .spawn()
        .unwrap();
    let _stdout = lines_of(child.stdout.take().unwrap());
    let stderr = lines_of(child.stderr.take().unwrap());
    let (mut url, mut token) = (None, None);
    while let Ok(line) = stderr.recv_timeout(PROMPT) {
        if let Some(at) = line.split("serving the stage view at ").nth(1) {
            url = Some(at.trim().trim_end_matches('/').to_string());
        }
        if let Some(t) = line.strip_prefix("bearer token (shown once; kept in ") {
            token = t.split("): ").nth(1).map(str::to_string);
        }
        if url.is_some() && token.is_some() {
            break;
        }
    }
    let (url, token) = (url.unwrap(), token.unwrap());
    let started = post(&url, &token, "/performances", r#"{"intent": "Wait."}"#);
    assert!(started.starts_with("HTTP/1.1 201"), "{started}");
    let running = actor_is_running(&fixture, marker);
    signal(&child, sig);
    let status = exits_promptly(&mut child);
    assert_eq!(
        status.code(),
        Some(0),
        "a server asked to stop stops cleanly"
    );
    cleaned_up(&fixture, marker, &running);
}

/// A plain HTTP/1.1 POST to the server at `url` (`http://HOST:PORT`); the whole response.
fn post(url: &str, token: &str, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let host = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(PROMPT)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn sigterm_ends_improv_serve_and_its_performances_cleanly() {
    serve_is_stopped_by(libc::SIGTERM, "60.103");
}

#[test]
fn sighup_ends_improv_serve_and_its_performances_cleanly() {
    serve_is_stopped_by(libc::SIGHUP, "60.104");
}

/// The interactive session (`improv` alone), its direction piped in and stdin kept open, stopped
/// by `sig` while its turn runs the actor's sleeps.
fn session_is_stopped_by(sig: i32, marker: &str) {
    let fixture = Fixture::new(&format!("sleep {marker} & sleep {marker}"));
    let mut child = fixture.improv().stdin(Stdio::piped()).spawn().unwrap();
    let _stdout = lines_of(child.stdout.take().unwrap());
    let _stderr = lines_of(child.stderr.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"Wait for me.\n").unwrap();
    let running = actor_is_running(&fixture, marker);
    signal(&child, sig);
    let status = exits_promptly(&mut child);
    assert_eq!(status.code(), Some(128 + sig));
    cleaned_up(&fixture, marker, &running);
    drop(stdin);
}

#[test]
fn sigterm_ends_the_interactive_session_cleanly() {
    session_is_stopped_by(libc::SIGTERM, "60.105");
}

/// At the session's prompt, between turns, SIGHUP (the terminal closed) ends the session and
/// its log too.
#[test]
fn sighup_at_the_session_prompt_ends_it_cleanly() {
    let fixture = Fixture::scripted(serde_json::json!([{"say": "Hello."}]));
    let mut child = fixture.improv().stdin(Stdio::piped()).spawn().unwrap();
    let _stdout = lines_of(child.stdout.take().unwrap());
    let stderr = text_of(child.stderr.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, b"Hi.\n").unwrap();
    eventually("the prompt after the first turn", || {
        stderr.lock().unwrap().matches("director › ").count() >= 2
    });
    signal(&child, libc::SIGHUP);
    let status = exits_promptly(&mut child);
    assert_eq!(status.code(), Some(129));
    let events = fixture.logged_events();
    let last = events.last().unwrap();
    assert_eq!(last["type"], "performance_finished", "{events:?}");
    assert_eq!(last["outcome"], "interrupted", "{last}");
    assert_eq!(
        fixture.sandbox_dirs(),
        Vec::<String>::new(),
        "temp dir left"
    );
    drop(stdin);
}

/// `improv mcp` with a performance an MCP client started over stdio, stopped by SIGTERM.
#[test]
fn sigterm_ends_improv_mcp_and_its_performances_cleanly() {
    let marker = "60.106";
    let fixture = Fixture::new(&format!("sleep {marker} & sleep {marker}"));
    let mut child = fixture
        .improv()
        .arg("mcp")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let replies = lines_of(child.stdout.take().unwrap());
    let _stderr = lines_of(child.stderr.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    let mut send = |message: Value| {
        std::io::Write::write_all(&mut stdin, format!("{message}\n").as_bytes()).unwrap();
    };
    send(
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {},
        "clientInfo": {"name": "signals-test", "version": "0"}}}),
    );
    let hello = replies.recv_timeout(PROMPT).unwrap();
    assert!(hello.contains("\"result\""), "{hello}");
    send(serde_json::json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    send(
        serde_json::json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "perform", "arguments": {"intent": "Wait."}}}),
    );
    let running = actor_is_running(&fixture, marker);
    signal(&child, libc::SIGTERM);
    let status = exits_promptly(&mut child);
    assert_eq!(
        status.code(),
        Some(0),
        "a server asked to stop stops cleanly"
    );
    cleaned_up(&fixture, marker, &running);
}
