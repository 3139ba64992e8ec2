//! `improv serve` as a systemd service, through the real binary on a temp stage with a webhook
//! door: the notify protocol (`READY=1` once it listens, `RELOADING=1` and `READY=1` around a
//! SIGHUP, `STOPPING=1` at SIGTERM, `WATCHDOG=1` when asked) received on a datagram socket the
//! test binds, at a path and at an abstract name; and `--log-file`, rotated by size, its files
//! bounded in number and no line lost or cut.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take for anything here: generous, for a slow shared machine.
const PROMPT: Duration = Duration::from_secs(60);
const SECRET_ENV: &str = "IMPROV_TEST_HOOK_SECRET";
const STAGE: &str = "[stage]\nname = \"daemon\"\nintent = \"Wait.\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"scripted/script.json\"\n\n[[door]]\nname = \"github\"\nwebhook = \"/doors/github\"\nsecret_env = \"IMPROV_TEST_HOOK_SECRET\"\nintent = \"Look at the delivery.\"\n";
const SECOND_DOOR: &str = "\n[[door]]\nname = \"second\"\nwebhook = \"/doors/second\"\nsecret_env = \"IMPROV_TEST_HOOK_SECRET\"\n";

/// A temp stage (ws/) with a private TMPDIR, removed with it.
struct Fixture {
    root: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let fixture = Fixture {
            root: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(fixture.workspace()).unwrap();
        std::fs::create_dir(fixture.root.path().join("tmp")).unwrap();
        std::fs::write(
            fixture.workspace().join("script.json"),
            r#"[{"say": "Done."}]"#,
        )
        .unwrap();
        std::fs::write(fixture.stage_file(), STAGE).unwrap();
        fixture
    }

    fn workspace(&self) -> PathBuf {
        self.root.path().join("ws")
    }

    fn stage_file(&self) -> PathBuf {
        self.workspace().join("stage.toml")
    }

    /// `improv serve` on the stage, on a free port, its stderr echoed for the test's log.
    fn serve(&self, env: &[(&str, &str)], args: &[&str]) -> Served {
        let mut c = common::improv_command();
        c.current_dir(self.workspace())
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("IMPROV_STORE")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("IMPROV_LOG_FILE")
            .env("NO_COLOR", "1")
            .env("TMPDIR", self.root.path().join("tmp"))
            .env(SECRET_ENV, "the-door-secret")
            .envs(env.iter().copied())
            .args(args)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let pipe = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                eprintln!("serve: {line}");
                let _ = tx.send(line);
            }
        });
        Served { child, lines }
    }
}

/// A running `improv serve`, killed when dropped.
struct Served {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Served {
    fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }

    /// The address the server says it serves at (`127.0.0.1:PORT`).
    fn host(&self) -> String {
        let deadline = Instant::now() + PROMPT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).expect("the serving line");
            if let Some(at) = line.split("serving the stage view at http://").nth(1) {
                return at.trim_end_matches('/').to_string();
            }
        }
    }

    /// Waits (bounded) for the server to exit; its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(start.elapsed() < PROMPT, "improv serve did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The service manager's end: the datagrams `improv serve` sends, the watchdog's apart.
struct Manager {
    socket: UnixDatagram,
    watchdogs: usize,
}

impl Manager {
    fn new(socket: UnixDatagram) -> Manager {
        socket.set_read_timeout(Some(PROMPT)).unwrap();
        Manager {
            socket,
            watchdogs: 0,
        }
    }

    /// The next message that is not a watchdog ping, as its `KEY=value` lines (bounded: the
    /// pings do not extend the wait).
    fn next(&mut self) -> Vec<String> {
        let mut buf = vec![0u8; 64 * 1024];
        let deadline = Instant::now() + PROMPT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no notification but WATCHDOG=1 from improv serve"
            );
            self.socket.set_read_timeout(Some(left)).unwrap();
            let n = self
                .socket
                .recv(&mut buf)
                .expect("a notification from improv serve");
            let lines: Vec<String> = String::from_utf8_lossy(&buf[..n])
                .lines()
                .map(str::to_string)
                .collect();
            if lines == ["WATCHDOG=1"] {
                self.watchdogs += 1;
                continue;
            }
            return lines;
        }
    }
}

/// The value of `key` in a message, if it is there.
fn value<'a>(message: &'a [String], key: &str) -> Option<&'a str> {
    message
        .iter()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// Readiness, reload and stop told through `NOTIFY_SOCKET` at a path, in that order, and each
/// when it is true: at `READY=1` the server answers; the reload's `READY=1` names the door it
/// added; the watchdog is fed at half its period meanwhile.
#[test]
fn serve_tells_systemd_ready_reloading_and_stopping() {
    let fixture = Fixture::new();
    let path = fixture.root.path().join("notify.sock");
    let mut manager = Manager::new(UnixDatagram::bind(&path).unwrap());
    let mut served = fixture.serve(
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
        &[],
    );

    let ready = manager.next();
    assert_eq!(value(&ready, "READY"), Some("1"), "{ready:?}");
    let status = value(&ready, "STATUS").expect("a STATUS line").to_string();
    assert!(status.contains("1 door open"), "{status}");
    let host = served.host();
    assert!(status.contains(&host), "{status} names {host}");
    let mut s = std::net::TcpStream::connect(&host).expect("listening once READY=1 is sent");
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "the stage view answers");

    let mut stage = std::fs::read_to_string(fixture.stage_file()).unwrap();
    stage.push_str(SECOND_DOOR);
    std::fs::write(fixture.stage_file(), stage).unwrap();
    served.signal(libc::SIGHUP);
    let reloading = manager.next();
    assert_eq!(value(&reloading, "RELOADING"), Some("1"), "{reloading:?}");
    let usec: u64 = value(&reloading, "MONOTONIC_USEC")
        .expect("RELOADING=1 comes with MONOTONIC_USEC")
        .parse()
        .unwrap();
    assert!(usec > 0);
    let reloaded = manager.next();
    assert_eq!(value(&reloaded, "READY"), Some("1"), "{reloaded:?}");
    let said = value(&reloaded, "STATUS").unwrap();
    assert!(
        said.contains("second"),
        "the reload says what changed: {said}"
    );

    // At least two pings at 100 ms apart, well before this wait ends.
    let start = Instant::now();
    while manager.watchdogs < 2 && start.elapsed() < PROMPT {
        manager
            .socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut buf = [0u8; 64];
        if let Ok(n) = manager.socket.recv(&mut buf) {
            assert_eq!(&buf[..n], b"WATCHDOG=1\n");
            manager.watchdogs += 1;
        }
    }
    assert!(manager.watchdogs >= 2, "WATCHDOG=1 is sent");
    manager.socket.set_read_timeout(Some(PROMPT)).unwrap();

    served.signal(libc::SIGTERM);
    let stopping = manager.next();
    assert_eq!(value(&stopping, "STOPPING"), Some("1"), "{stopping:?}");
    assert_eq!(served.exit_code(), Some(0));
}

/// systemd may hand a service an abstract socket (`@name`): `READY=1` reaches it too.
#[test]
fn serve_reaches_an_abstract_notify_socket() {
    use std::os::linux::net::SocketAddrExt;
    let fixture = Fixture::new();
    let name = format!(
        "improv-daemon-test-{}-{}",
        std::process::id(),
        fixture.root.path().display()
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let mut manager = Manager::new(UnixDatagram::bind_addr(&addr).unwrap());
    let served = fixture.serve(&[("NOTIFY_SOCKET", &format!("@{name}"))], &[]);
    let ready = manager.next();
    assert_eq!(value(&ready, "READY"), Some("1"), "{ready:?}");
    served.signal(libc::SIGTERM);
    assert_eq!(value(&manager.next(), "STOPPING"), Some("1"));
}

/// The lines of the log files in `folder`, oldest file first, and how many files there are.
fn log_lines(folder: &Path) -> (Vec<String>, usize) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // improv.log.N is older the larger N; improv.log is the newest.
    let age = |p: &PathBuf| -> usize {
        p.extension()
            .and_then(|e| e.to_str())
            .and_then(|e| e.parse().ok())
            .unwrap_or(0)
    };
    files.sort_by_key(|p| std::cmp::Reverse(age(p)));
    let mut lines = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{} ends in a cut line",
            file.display()
        );
        lines.extend(text.lines().map(str::to_string));
    }
    (lines, files.len())
}

/// `--log-file` with a tiny `--log-max-size`: 300 logged requests rotate the file, at most
/// `--log-keep` old files stay beside it, every line is whole JSON, and the kept files hold the
/// last requests in order with none missing; the newest is in the current file.
#[test]
fn the_log_file_rotates_by_size_and_keeps_a_bounded_number() {
    const REQUESTS: usize = 300;
    let fixture = Fixture::new();
    let folder = fixture.root.path().join("logs");
    let file = folder.join("improv.log");
    let served = fixture.serve(
        &[("IMPROV_LOG", "info")],
        &[
            "--log-file",
            file.to_str().unwrap(),
            "--log-format",
            "json",
            "--log-max-size",
            "4KiB",
            "--log-keep",
            "3",
        ],
    );
    let host = served.host();
    for i in 0..REQUESTS {
        let mut s = std::net::TcpStream::connect(&host).unwrap();
        s.set_read_timeout(Some(PROMPT)).unwrap();
        write!(
            s,
            "POST /doors/nowhere-{i} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 401"), "{response}");
    }

    let (lines, files) = log_lines(&folder);
    assert!(files > 1, "the log was rotated: {files} file(s)");
    assert!(files <= 4, "improv.log and at most 3 old ones: {files}");
    for entry in std::fs::read_dir(&folder).unwrap() {
        use std::os::unix::fs::PermissionsExt;
        let mode = entry.unwrap().metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "log files are the owner's only");
    }
    let mut seen = Vec::new();
    for line in &lines {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("a whole line: {e}: {line}"));
        let message = event["fields"]["message"].as_str().unwrap_or_default();
        if let Some(rest) = message.strip_prefix("a delivery to door `nowhere-") {
            seen.push(rest.split('`').next().unwrap().parse::<usize>().unwrap());
        }
    }
    assert_eq!(
        seen.last(),
        Some(&(REQUESTS - 1)),
        "the newest line is kept"
    );
    assert!(seen.len() < REQUESTS, "old files were removed");
    let first = seen[0];
    assert_eq!(
        seen,
        (first..REQUESTS).collect::<Vec<_>>(),
        "no line lost between the kept files"
    );
    let current = std::fs::read_to_string(&file).unwrap();
    assert!(
        current.contains(&format!("nowhere-{}`", REQUESTS - 1)),
        "the newest line is in {}",
        file.display()
    );
}

/// A `--log-file` that cannot be written is refused with its path, before anything runs.
#[test]
fn a_log_file_that_cannot_be_written_is_refused() {
    let fixture = Fixture::new();
    let blocker = fixture.root.path().join("not-a-folder");
    std::fs::write(&blocker, "").unwrap();
    let out = common::improv_command()
        .current_dir(fixture.workspace())
        .args(["--log-file"])
        .arg(blocker.join("improv.log"))
        .args(["door", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not-a-folder"), "{stderr}");
}
