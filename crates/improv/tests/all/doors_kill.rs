//! `improv serve` with an `every` door, SIGKILLed mid-run again and again: two servers share the
//! stage's doors store (a restart and a second `serve` at once), one of them is killed with
//! SIGKILL every few seconds and started again, and afterwards every due time in the run has
//! exactly one firing and every performance the log holds belongs to exactly one firing (a
//! daemon that skipped the claim would perform a due time the other performed too).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The door's period: short, so that a bounded run sees many due times.
const EVERY_MS: i64 = 2000;
/// How many SIGKILLs the run deals.
const KILLS: usize = 6;
/// How long anything here may take on a slow shared machine.
const PROMPT: Duration = Duration::from_secs(60);

const STAGE: &str = "[stage]\nname = \"kill\"\nintent = \"Wait.\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"scripted/script.json\"\n\n[[door]]\nname = \"tick\"\nevery = \"2s\"\nintent = \"Tick.\"\n";

fn improv(ws: &Path, tmp: &Path) -> std::process::Command {
    let mut c = common::improv_command();
    c.current_dir(ws)
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env_remove("IMPROV_STORE")
        .env("NO_COLOR", "1")
        .env("TMPDIR", tmp)
        .stdin(Stdio::null());
    c
}

/// A running `improv serve`, killed when dropped.
struct Served(Child);

impl Served {
    /// Starts `improv serve` and waits (bounded) until it serves, its doors open.
    fn start(ws: &Path, tmp: &Path) -> Served {
        let mut child = improv(ws, tmp)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pipe = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + PROMPT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).expect("improv serve did not start");
            if line.contains("serving the stage view at ") {
                break;
            }
        }
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || while rx.recv().is_ok() {});
        Served(child)
    }

    fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(self.0.id() as i32, sig) }, 0);
    }

    /// Waits (bounded) for it to exit.
    fn wait(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status.code();
            }
            assert!(start.elapsed() < PROMPT, "improv serve did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn every_due_time_fires_once_across_sigkills_and_a_second_serve() {
    let root = tempfile::tempdir().unwrap();
    let ws: PathBuf = root.path().join("ws");
    let tmp = root.path().join("tmp");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(ws.join("stage.toml"), STAGE).unwrap();
    std::fs::write(ws.join("script.json"), r#"[{"say": "Done."}]"#).unwrap();

    let mut served = [Served::start(&ws, &tmp), Served::start(&ws, &tmp)];
    for kill in 0..KILLS {
        std::thread::sleep(Duration::from_millis(2500));
        let victim = kill % 2;
        served[victim].signal(libc::SIGKILL);
        served[victim].wait();
        served[victim] = Served::start(&ws, &tmp);
    }
    std::thread::sleep(Duration::from_millis(3000));
    for s in &served {
        s.signal(libc::SIGTERM);
    }
    for s in &mut served {
        assert_eq!(s.wait(), Some(0), "SIGTERM stops improv serve cleanly");
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = improv_store::StoreUrl::Sqlite(ws.join(".improv").join("doors.db"));
    let store = improv_store::open(&url).unwrap();
    let stage = improv_stage::Stage::load(&ws.join("stage.toml")).unwrap();
    let key = improv_door::expiry::stage_key(&stage);
    let mut firings = rt.block_on(store.firings(&key, "tick", 100_000)).unwrap();
    firings.sort_by_key(|f| f.due);
    let dues: Vec<i64> = firings.iter().map(|f| f.due).collect();
    assert!(dues.len() >= 6, "a run of ~20 s at 2 s: {dues:?}");
    for pair in dues.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            EVERY_MS,
            "no due time missed or doubled: {dues:?}"
        );
    }
    let unfinished: Vec<_> = firings
        .iter()
        .filter(|f| !f.note.starts_with("fired"))
        .collect();
    assert!(
        unfinished.len() <= KILLS,
        "only a firing a SIGKILL landed in may be left unfinished: {unfinished:?}"
    );

    // Every performance the log holds was started for exactly one firing.
    let out = improv(&ws, &tmp).args(["log", "--json"]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let logged: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let mut by_performance: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &firings {
        if let Some(p) = &f.performance {
            *by_performance.entry(p.as_str()).or_default() += 1;
        }
    }
    assert!(
        by_performance.values().all(|n| *n == 1),
        "{by_performance:?}"
    );
    let named: HashSet<&str> = by_performance.keys().copied().collect();
    let orphans: Vec<&String> = logged
        .iter()
        .filter(|id| {
            !named
                .iter()
                .any(|n| n.starts_with(id.as_str()) || id.starts_with(n))
        })
        .collect();
    assert!(
        orphans.is_empty(),
        "performances no firing names (a due time performed twice): {orphans:?} of {} logged, {} firings",
        logged.len(),
        firings.len()
    );
    assert!(
        logged.len() + KILLS >= firings.len(),
        "{} logged, {} firings",
        logged.len(),
        firings.len()
    );
}
