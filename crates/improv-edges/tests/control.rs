//! The control plane out of commands' reach, and hidden files hidden however they are reached:
//! control files (`stage.toml`, skills, MCP scripts, `.git`'s config and hooks) read-only,
//! improv's state (`.improv/`) invisible and immovable, the stage's `read_only` globs held for
//! commands, hidden files covered after renames, under build output and deep trees, in upper
//! case, past a flood of decoys, and what git keeps of them named. The real sandbox runs real
//! commands (bash, git) on fixtures in temp folders, each test both forked and through
//! `Sandbox::spawn` without fork; one case goes through the real loop.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Rig, bash, call};
use improv_edges::sandbox::ScanError;
use improv_edges::{Sandbox, SandboxConfig, SandboxError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SECRET: &str = "dotenv-secret-5d1f";
const STAGE: &str = "[edges]\nsandbox = \"on\"\n";
const TOKEN: &str = "serve-token-8e2a";

/// How [`run`] starts its commands: each test that runs commands runs twice, once each way
/// ([`both`]), so every attack meets both.
#[derive(Clone, Copy, Debug)]
enum Way {
    /// `Sandbox::apply` and std's fork.
    Forked,
    /// `Sandbox::spawn`, the bash prop's way: without fork (asserted).
    Spawned,
}

thread_local! {
    static WAY: std::cell::Cell<Way> = const { std::cell::Cell::new(Way::Forked) };
}

/// Runs `test` with its commands forked, then again with them spawned without fork.
fn both(test: impl Fn()) {
    for way in [Way::Forked, Way::Spawned] {
        WAY.with(|w| w.set(way));
        eprintln!("---- commands {way:?}");
        test();
    }
}

/// Runs `script` with bash in `sandbox`, the [`Way`] of the test: (exit code, stdout + stderr).
fn run(sandbox: &Sandbox, script: &str) -> (i32, String) {
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c").arg(script);
    match WAY.with(|w| w.get()) {
        Way::Forked => run_forked(sandbox, cmd),
        Way::Spawned => run_spawned(sandbox, &cmd),
    }
}

fn run_forked(sandbox: &Sandbox, mut cmd: std::process::Command) -> (i32, String) {
    if let Err(e) = sandbox.apply(&mut cmd) {
        return (-2, format!("refused: {e}"));
    }
    // A command whose namespace could not be set up fails to spawn (a path moved meanwhile).
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) => return (-3, format!("not started: {e}")),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn run_spawned(sandbox: &Sandbox, cmd: &std::process::Command) -> (i32, String) {
    let (out_reader, out_writer) = rustix::pipe::pipe().unwrap();
    let (err_reader, err_writer) = rustix::pipe::pipe().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let mut child = match sandbox.spawn(cmd, out_writer, err_writer) {
        Ok(child) => child,
        Err(e @ SandboxError::Start { .. }) => return (-3, format!("not started: {e}")),
        Err(e) => return (-2, format!("refused: {e}")),
    };
    assert!(child.is_cloned(), "the command was forked");
    // Read while it runs (a full pipe would stall it), each apart as `run_forked` does.
    let [stdout, stderr] = [out_reader, err_reader].map(|reader| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut std::fs::File::from(reader), &mut text).map(|_| text)
        })
    });
    let status = runtime.block_on(child.wait()).unwrap();
    let [stdout, stderr] = [stdout, stderr].map(|t| t.join().unwrap().unwrap());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    (status.code().unwrap_or(-1), text)
}

/// A workspace in a temp dir.
struct Ws {
    _dir: tempfile::TempDir,
    ws: PathBuf,
    outside: PathBuf,
}

impl Ws {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let ws = root.join("ws");
        let outside = root.join("elsewhere");
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        Ws {
            _dir: dir,
            ws,
            outside,
        }
    }

    fn file(&self, rel: &str, text: &str) {
        let p = self.ws.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.ws.join(rel)).unwrap()
    }

    fn config(&self) -> SandboxConfig {
        SandboxConfig::new(&self.ws)
    }

    /// A git repository with one commit, made by improv's side (unsandboxed) for the fixture.
    fn git_init(&self, add: &[&str]) {
        let git = |args: &[&str]| {
            let out = std::process::Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .current_dir(&self.ws)
                .output()
                .unwrap();
            assert!(out.status.success(), "git {args:?}: {out:?}");
        };
        git(&["init", "-q"]);
        for path in add {
            git(&["add", "-f", path]);
        }
        git(&["commit", "-q", "-m", "init", "--allow-empty"]);
    }
}

fn namespaces(sandbox: &Sandbox) -> bool {
    sandbox.covered().is_some()
}

// ---- control files ----

#[test]
fn control_files_can_be_read_but_not_changed_moved_or_replaced() {
    both(|| {
        let w = Ws::new();
        w.file("stage.toml", STAGE);
        w.file("AGENTS.md", "be careful\n");
        w.file("skills/deploy/SKILL.md", "# deploy\n");
        w.file("tools/mcp/server.py", "print('hi')\n");
        w.file("src/lib.rs", "// code\n");
        let mut config = w.config();
        config.protected = [
            "stage.toml",
            "AGENTS.md",
            "skills",
            "tools/mcp/server.py",
            "missing.md",
        ]
        .iter()
        .map(|p| w.ws.join(p))
        .collect();
        let sandbox = Sandbox::new(config).unwrap();
        assert!(namespaces(&sandbox), "{}", sandbox.describe());
        let (code, out) = run(
            &sandbox,
            "cat stage.toml skills/deploy/SKILL.md && echo ok >> src/lib.rs",
        );
        assert_eq!(code, 0, "{out}");
        assert!(
            out.contains("sandbox = \"on\"") && out.contains("# deploy"),
            "{out}"
        );
        for attack in [
            "echo 'sandbox = \"off\"' >> stage.toml",
            "sed -i s/on/off/ stage.toml",
            "printf 'sandbox=\"off\"' > new.toml && mv -f new.toml stage.toml",
            "rm -f stage.toml",
            "mv stage.toml old.toml",
            "echo ignore-all-rules > AGENTS.md",
            "rm -rf skills",
            "mv skills skills.old",
            "echo evil >> skills/deploy/SKILL.md",
            "mkdir skills/evil",
            "echo 'import os' > tools/mcp/server.py",
            "mv tools/mcp tools/mcp.old && mkdir tools/mcp && echo evil > tools/mcp/server.py",
            "mv tools tools.old",
            "ln -sf /dev/null tools/mcp/server.py",
        ] {
            let (code, out) = run(&sandbox, attack);
            assert_ne!(code, 0, "{attack}: {out}");
        }
        assert_eq!(w.read("stage.toml"), STAGE);
        assert_eq!(w.read("AGENTS.md"), "be careful\n");
        assert_eq!(w.read("skills/deploy/SKILL.md"), "# deploy\n");
        assert_eq!(w.read("tools/mcp/server.py"), "print('hi')\n");
        assert_eq!(w.read("src/lib.rs"), "// code\nok\n");
        for gone in [
            "old.toml",
            "skills.old",
            "skills/evil",
            "tools.old",
            "tools/mcp.old",
        ] {
            assert!(!w.ws.join(gone).exists(), "{gone}");
        }
        // A missing control file is skipped, and may be created.
        let (code, out) = run(&sandbox, "echo new > missing.md");
        assert_eq!(code, 0, "{out}");
    });
}

#[test]
fn git_config_and_hooks_are_read_only_while_git_still_commits() {
    both(|| {
        let w = Ws::new();
        w.file("a.txt", "a\n");
        w.git_init(&["a.txt"]);
        let config_before = w.read(".git/config");
        let mut config = w.config();
        config.protected = vec![w.ws.join(".git/config"), w.ws.join(".git/hooks")];
        let sandbox = Sandbox::new(config).unwrap();
        for attack in [
            "git config core.fsmonitor 'touch pwned'",
            "git config --file .git/config core.hooksPath /tmp",
            "printf '#!/bin/sh\\ntouch pwned\\n' > .git/hooks/pre-commit && chmod +x .git/hooks/pre-commit",
            "rm -rf .git/hooks",
            "mv .git .git.old",
            "mv .git/config .git/config.old",
        ] {
            let (code, out) = run(&sandbox, attack);
            assert_ne!(code, 0, "{attack}: {out}");
        }
        assert_eq!(w.read(".git/config"), config_before);
        assert!(!w.ws.join(".git/hooks/pre-commit").exists());
        assert!(!w.ws.join(".git.old").exists());
        // The rest of .git stays writable: the actor can still commit.
        let (code, out) = run(
            &sandbox,
            "echo b >> a.txt && git -c user.name=t -c user.email=t@t -c gc.auto=0 -c maintenance.auto=false commit -qam b && git log --oneline | wc -l",
        );
        assert_eq!((code, out.trim()), (0, "2"), "{out}");
    });
}

// ---- improv's state ----

#[test]
fn improv_state_can_be_neither_read_nor_removed_nor_replaced() {
    both(|| {
        let w = Ws::new();
        w.file(".improv/serve.token", TOKEN);
        w.file(".improv/logs/run.jsonl", "{\"event\":1}\n");
        let mut config = w.config();
        config.concealed = vec![w.ws.join(".improv")];
        let sandbox = Sandbox::new(config).unwrap();
        let elsewhere = w.outside.display();
        for attack in [
            "cat .improv/serve.token".to_string(),
            "ls .improv".to_string(),
            "echo forged >> .improv/logs/run.jsonl".to_string(),
            "rm -rf .improv".to_string(),
            format!("mv .improv x && ln -s {elsewhere} .improv"),
            format!("ln -sfn {elsewhere} .improv"),
            "cp -r .improv copy".to_string(),
        ] {
            let (code, out) = run(&sandbox, &attack);
            assert_ne!(code, 0, "{attack}: {out}");
            assert!(!out.contains(TOKEN), "{attack}: {out}");
        }
        assert!(!w.ws.join(".improv").is_symlink());
        assert_eq!(w.read(".improv/serve.token"), TOKEN);
        assert_eq!(w.read(".improv/logs/run.jsonl"), "{\"event\":1}\n");
        assert!(!w.ws.join("x").exists());
        assert!(!w.ws.join("copy/serve.token").exists());
    });
}

// ---- the stage's read_only globs ----

#[test]
fn read_only_globs_hold_for_commands_and_hidden_files_inside_stay_covered() {
    both(|| {
        let w = Ws::new();
        w.file("docs/guide.md", "guide\n");
        w.file("docs/.env", SECRET);
        w.file("Cargo.lock", "lock\n");
        w.file("sub/Cargo.lock", "lock\n");
        w.file("src/main.rs", "fn main() {}\n");
        let mut config = w.config();
        config.read_only_globs = vec!["docs".into(), "*.lock".into()];
        let sandbox = Sandbox::new(config).unwrap();
        for attack in [
            "echo x >> docs/guide.md",
            "touch docs/new.md",
            "rm -rf docs",
            "mv docs docs2",
            "rm Cargo.lock",
            "echo x > sub/Cargo.lock",
        ] {
            let (code, out) = run(&sandbox, attack);
            assert_ne!(code, 0, "{attack}: {out}");
        }
        let (code, out) = run(&sandbox, "cat docs/.env");
        assert_ne!(code, 0, "{out}");
        assert!(!out.contains(SECRET), "{out}");
        let (code, out) = run(&sandbox, "cat docs/guide.md && echo y >> src/main.rs");
        assert_eq!((code, out.as_str()), (0, "guide\n"));
        assert_eq!(w.read("docs/guide.md"), "guide\n");
        assert_eq!(w.read("Cargo.lock"), "lock\n");
    });
}

// ---- hidden files however reached ----

#[test]
fn a_hidden_file_cannot_be_moved_by_commands_and_is_found_where_others_move_it() {
    both(|| {
        let w = Ws::new();
        w.file("config/local/.env", SECRET);
        w.file("other/.env.local", SECRET);
        let sandbox = Sandbox::new(w.config()).unwrap();
        // Neither the file nor any folder above it can be moved by a command.
        for attack in [
            "mv config cfg",
            "mv config/local config/l2",
            "mv config/local/.env config/local/env",
            "rm -rf config",
        ] {
            let (code, out) = run(
                &sandbox,
                &format!("{attack} && cat cfg/.env config/l2/.env"),
            );
            assert_ne!(code, 0, "{attack}: {out}");
            assert!(out.contains("Device or resource busy"), "{attack}: {out}");
            assert!(!out.contains(SECRET), "{attack}: {out}");
        }
        // Moved from outside the sandbox (the user, a tool), it is covered where it is now at the
        // next command, which runs.
        std::fs::rename(w.ws.join("config"), w.ws.join("cfg")).unwrap();
        std::fs::create_dir_all(w.ws.join("a/b")).unwrap();
        std::fs::rename(w.ws.join("other"), w.ws.join("a/b/c")).unwrap();
        let (code, out) = run(&sandbox, "cat cfg/local/.env a/b/c/.env.local; echo ran");
        assert_eq!(code, 0, "{out}");
        assert!(out.starts_with("ran"), "{out}");
        assert!(
            out.contains("cfg/local/.env: Permission denied")
                && out.contains("a/b/c/.env.local: Permission denied"),
            "{out}"
        );
        assert_eq!(sandbox.covered().unwrap().len(), 2);
    });
}

#[test]
fn hidden_files_under_build_output_deep_trees_and_in_upper_case_are_covered() {
    both(|| {
        let w = Ws::new();
        let deep = (0..40)
            .map(|i| format!("d{i}"))
            .collect::<Vec<_>>()
            .join("/");
        let places = [
            "target/debug/.env".to_string(),
            "node_modules/pkg/.env".to_string(),
            ".git/.env".to_string(),
            format!("{deep}/.env"),
            ".ENV".to_string(),
            "certs/SERVER.PEM".to_string(),
            "keys/Id_Rsa".to_string(),
        ];
        for p in &places {
            w.file(p, SECRET);
        }
        let sandbox = Sandbox::new(w.config()).unwrap();
        assert_eq!(sandbox.covered().unwrap().len(), places.len());
        for p in &places {
            let (code, out) = run(&sandbox, &format!("cat {p}"));
            assert_ne!(code, 0, "{p}: {out}");
            assert!(!out.contains(SECRET), "{p}: {out}");
        }
        let (_, out) = run(
            &sandbox,
            "grep -r dotenv . ; find . -type f -exec cat {} + 2>&1",
        );
        assert!(!out.contains(SECRET), "{out}");
    });
}

#[test]
fn a_flood_of_decoys_refuses_commands_rather_than_uncovering() {
    both(|| {
        let w = Ws::new();
        w.file(".env", SECRET);
        let sandbox = Sandbox::new(w.config()).unwrap();
        // The actor plants more files named like hidden ones than improv covers.
        let (code, out) = run(
            &sandbox,
            "mkdir decoys && cd decoys && for i in $(seq 1 1001); do : > $i.pem; done",
        );
        assert_eq!(code, 0, "{out}");
        let mut cmd = std::process::Command::new("cat");
        cmd.arg(".env");
        match sandbox.apply(&mut cmd) {
            Err(SandboxError::Scan(ScanError::TooManyHidden { max, .. })) => assert_eq!(max, 1000),
            other => panic!("expected the command refused, got {other:?}"),
        }
        let (code, out) = run(&sandbox, "cat .env");
        assert_eq!(code, -2);
        assert!(
            out.contains("more than 1000 files named like hidden ones")
                && out.contains("narrow `hidden`"),
            "{out}"
        );
        assert!(
            sandbox.describe().contains("COMMANDS ARE REFUSED"),
            "{}",
            sandbox.describe()
        );
    });
}

#[test]
fn hidden_files_git_tracks_are_named_as_readable_through_its_objects() {
    both(|| {
        let w = Ws::new();
        w.file(".env", SECRET);
        w.file("src/a.rs", "a\n");
        w.git_init(&[".env", "src/a.rs"]);
        let sandbox = Sandbox::new(w.config()).unwrap();
        let notes = sandbox.notes().join("\n");
        assert!(
            notes.contains(
                "hidden files tracked by git are readable to commands through git's objects"
            ) && notes.contains(": .env;"),
            "{notes}"
        );
        assert!(
            sandbox.describe().contains("tracked by git"),
            "{}",
            sandbox.describe()
        );
        // What the note warns of: the file is covered, its committed content is not.
        let (code, out) = run(&sandbox, "cat .env");
        assert_ne!(code, 0, "{out}");
        let (_, out) = run(&sandbox, "git show HEAD:.env");
        assert!(out.contains(SECRET), "{out}");
        // Untracked hidden files give no such note.
        let clean = Ws::new();
        clean.file(".env", SECRET);
        clean.git_init(&[]);
        let sandbox = Sandbox::new(clean.config()).unwrap();
        assert!(!sandbox.notes().join("\n").contains("tracked by git"));
    });
}

#[test]
fn without_user_namespaces_the_description_says_what_is_not_protected() {
    both(|| {
        let w = Ws::new();
        w.file("stage.toml", STAGE);
        let mut config = w.config();
        config.user_namespaces = false;
        config.protected = vec![w.ws.join("stage.toml")];
        let sandbox = Sandbox::new(config).unwrap();
        let notes = sandbox.notes().join("\n");
        assert!(
            notes.contains("control files and improv's state are NOT protected from commands"),
            "{notes}"
        );
        assert!(sandbox.describe().contains("NOT protected"));
        // And indeed: the control file can be changed.
        let (code, out) = run(&sandbox, "echo changed > stage.toml");
        assert_eq!(code, 0, "{out}");
        assert_eq!(w.read("stage.toml"), "changed\n");
    });
}

// ---- races ----

/// Something outside the sandbox (the user, a tool) renames the folder holding a hidden file
/// back and forth while commands start and read at both places: none ever reads it, as each
/// command's scan finds it where it is and its mount checks it is still there. Bounded in time;
/// the commands that run must be many.
#[test]
fn a_hidden_file_moved_back_and_forth_during_starts_is_never_uncovered() {
    both(|| {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let w = Ws::new();
        w.file("config/.env", SECRET);
        let sandbox = Sandbox::new(w.config()).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (a, b) = (w.ws.join("config"), w.ws.join("cfg"));
        let mover = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = std::fs::rename(&a, &b);
                    std::thread::sleep(Duration::from_millis(1));
                    let _ = std::fs::rename(&b, &a);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        let started = Instant::now();
        let (mut ran, mut refused) = (0, 0);
        while started.elapsed() < Duration::from_secs(5) {
            let (code, out) = run(&sandbox, "cat config/.env cfg/.env 2>&1; true");
            assert!(!out.contains(SECRET), "leaked after {ran} runs: {out}");
            if code == 0 {
                ran += 1;
            } else {
                refused += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        mover.join().unwrap();
        eprintln!("{ran} commands ran, {refused} were refused");
        assert!(ran >= 20, "only {ran} commands ran ({refused} refused)");
    });
}

// ---- through the real loop ----

#[tokio::test]
async fn an_actor_cannot_rewrite_the_stage_or_reach_improvs_state_through_the_loop() {
    let mut rig = Rig::new();
    rig.file("stage.toml", STAGE);
    rig.file(".improv/serve.token", TOKEN);
    rig.file("config/.env", SECRET);
    rig.config.protected = vec![rig.ws.join("stage.toml")];
    rig.config.concealed = vec![rig.ws.join(".improv")];
    let elsewhere = rig.dir.path().join("elsewhere");
    let run = rig
        .perform(vec![
            bash("sed -i 's/on/off/' stage.toml; echo 'sandbox = \"off\"' >> stage.toml; cat stage.toml"),
            bash(&format!(
                "cat .improv/serve.token; mv .improv x && ln -s {} .improv; rm -rf .improv; ls -la .improv",
                elsewhere.display()
            )),
            bash("mv config cfg; echo moved"),
            bash("cat config/.env cfg/.env; echo done"),
        ])
        .await;
    let log = run.log();
    assert!(!log.contains(TOKEN), "{log}");
    assert!(!log.contains(SECRET), "{log}");
    assert!(
        run.output(0).contains("Read-only file system"),
        "{}",
        run.output(0)
    );
    assert!(
        run.output(1).contains("Device or resource busy"),
        "{}",
        run.output(1)
    );
    assert!(
        run.output(2).contains("Device or resource busy"),
        "{}",
        run.output(2)
    );
    assert!(
        run.output(3).contains("config/.env: Permission denied"),
        "{}",
        run.output(3)
    );
    assert_eq!(
        std::fs::read_to_string(rig.ws.join("stage.toml")).unwrap(),
        STAGE
    );
    assert_eq!(
        std::fs::read_to_string(rig.ws.join(".improv/serve.token")).unwrap(),
        TOKEN
    );
    assert!(!Path::new(&elsewhere).exists());
    run.assert_no_leak();
}

// ---- key material: private keys hidden, certificates not ----

/// A CA bundle as certifi ships it: comments and certificate blocks only.
const CA_BUNDLE: &str = "
# Issuer: CN=Test Root CA O=Example
# Label: \"Test Root CA\"
-----BEGIN CERTIFICATE-----
MIIBszCCAVmgAwIBAgIUcA-public-cert-3c9e-AgIUb2FrZS1jZXJ0aWZpY2F0
ZS1mb3ItdGVzdHMwCgYIKoZIzj0EAwIwFzEVMBMGA1UEAwwMVGVzdCBSb290IENB
-----END CERTIFICATE-----
";
/// What only the certificate holds.
const CERT_MARK: &str = "public-cert-3c9e";
/// A private key, as long as [`CA_BUNDLE`] to the byte: rewriting one into the other in place
/// leaves the file's size as it was.
const PRIVATE_KEY: &str = "
# Issuer: CN=Test Root CA O=Example
# Label: \"Test Root CA\"
-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgPRIVATE-key-5e7b
MHcCAQEEIEXAMPLEexampleEXAMPLEexampleEXAMPLEexample0AwEHoUQDQgAE
-----END PRIVATE KEY-----
";
/// What only the private key holds.
const KEY_MARK: &str = "PRIVATE-key-5e7b";
/// Where a Python environment with `requests` keeps its CA bundle.
const CERTIFI: &str = ".venv/lib/python3.12/site-packages/certifi/cacert.pem";

#[test]
fn a_ca_bundle_is_readable_to_commands_and_its_folder_removable_while_private_keys_stay_covered() {
    both(|| {
        assert_eq!(CA_BUNDLE.len(), PRIVATE_KEY.len());
        let w = Ws::new();
        w.file(CERTIFI, CA_BUNDLE);
        w.file("node_modules/pkg/certs/root.PEM", CA_BUNDLE);
        w.file("deploy/server.pem", PRIVATE_KEY);
        w.file("deploy/tls.key", "opaque key bytes");
        let sandbox = Sandbox::new(w.config()).unwrap();
        if !namespaces(&sandbox) {
            eprintln!("no user namespaces here: nothing is covered for commands");
            return;
        }
        let mut covered = sandbox.covered().unwrap();
        covered.sort();
        assert_eq!(
            covered,
            [w.ws.join("deploy/server.pem"), w.ws.join("deploy/tls.key")]
        );
        let (code, out) = run(
            &sandbox,
            &format!("cat {CERTIFI} node_modules/pkg/certs/root.PEM"),
        );
        assert_eq!((code, out.matches(CERT_MARK).count()), (0, 2), "{out}");
        let (code, out) = run(&sandbox, "cat deploy/server.pem deploy/tls.key");
        assert_ne!(code, 0, "{out}");
        assert!(!out.contains(KEY_MARK) && !out.contains("opaque"), "{out}");
        assert!(
            out.contains("deploy/server.pem: Permission denied"),
            "{out}"
        );
        // Nothing pins the environment: it can be removed and made again.
        let (code, out) = run(&sandbox, "rm -rf .venv node_modules && echo gone");
        assert_eq!((code, out.as_str()), (0, "gone\n"));
        assert!(!w.ws.join(".venv").exists());
        // The folder of a private key still cannot be removed.
        let (code, out) = run(&sandbox, "rm -rf deploy");
        assert_ne!(code, 0, "{out}");
        assert!(out.contains("Device or resource busy"), "{out}");
        assert_eq!(w.read("deploy/server.pem"), PRIVATE_KEY);
    });
}

/// A certificate rewritten in place into a private key (the same size, at once after a command
/// read it, many times over) is covered at the next command: a verdict is kept only while the
/// file is unchanged.
#[test]
fn a_certificate_rewritten_into_a_private_key_is_covered_at_the_next_command() {
    both(|| {
        let w = Ws::new();
        w.file("certs/site.pem", CA_BUNDLE);
        let sandbox = Sandbox::new(w.config()).unwrap();
        if !namespaces(&sandbox) {
            eprintln!("no user namespaces here: nothing is covered for commands");
            return;
        }
        let path = w.ws.join("certs/site.pem");
        let rewrite = |text: &str| {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        for round in 0..25 {
            let (code, out) = run(&sandbox, "cat certs/site.pem");
            assert_eq!(code, 0, "round {round}: {out}");
            assert!(out.contains(CERT_MARK), "round {round}: {out}");
            rewrite(PRIVATE_KEY);
            let (code, out) = run(&sandbox, "cat certs/site.pem");
            assert!(!out.contains(KEY_MARK), "round {round}: leaked: {out}");
            assert_ne!(code, 0, "round {round}: {out}");
            // The actor cannot write it back either: it is covered.
            let (code, _) = run(&sandbox, "echo x > certs/site.pem");
            assert_ne!(code, 0, "round {round}");
            rewrite(CA_BUNDLE);
        }
    });
}

#[tokio::test]
async fn the_file_props_read_a_ca_bundle_and_refuse_a_private_key_through_the_loop() {
    let rig = Rig::new();
    rig.file(CERTIFI, CA_BUNDLE);
    rig.file("server.pem", PRIVATE_KEY);
    // Where `grep` looks (it passes over `.venv`).
    rig.file("certs/ca.pem", CA_BUNDLE);
    let run = rig
        .perform(vec![
            call("read", serde_json::json!({"path": CERTIFI})),
            call("read", serde_json::json!({"path": "server.pem"})),
            call("grep", serde_json::json!({"pattern": "BEGIN"})),
            bash(&format!("cat {CERTIFI} && rm -rf .venv && echo removed")),
        ])
        .await;
    assert!(run.output(0).contains(CERT_MARK), "{}", run.output(0));
    assert!(
        run.output(1)
            .contains("`server.pem` is hidden by the stage's edges (`*.pem`)"),
        "{}",
        run.output(1)
    );
    let grep = run.output(2);
    assert!(
        grep.contains("certs/ca.pem") && !grep.contains("server.pem"),
        "{grep}"
    );
    assert!(run.output(3).contains(CERT_MARK), "{}", run.output(3));
    assert!(run.output(3).contains("removed"), "{}", run.output(3));
    assert!(!rig.ws.join(".venv").exists());
    assert!(!run.log().contains(KEY_MARK), "{}", run.log());
    run.assert_no_leak();
}
