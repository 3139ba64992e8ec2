//! Which way [`Sandbox::spawn`] starts a command, and what that leaves of improv itself: a
//! command started without `fork` shares improv's memory until `exec`, and with it improv's
//! `dumpable` flag, which the namespace step sets and a uid change clears. So an improv that is
//! not plainly dumpable, or a sandbox that runs commands as another user, starts them forked,
//! and improv's flag is the same after a start as before. Its own binary: the tests change the
//! flag of the test process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_edges::{Sandbox, SandboxConfig};
use rustix::process::{DumpableBehavior, dumpable_behavior, set_dumpable_behavior};
use std::io::Read;
use std::process::ExitStatus;

/// The tests of this binary change or read the process's `dumpable` flag one at a time.
static FLAG: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Runs `sh -c script` through [`Sandbox::spawn`]: (status, stdout + stderr, started cloned).
async fn run(sandbox: &Sandbox, script: &str) -> (ExitStatus, String, bool) {
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(script);
    let stderr = writer.try_clone().unwrap();
    let mut child = sandbox.spawn(&cmd, writer, stderr).unwrap();
    let cloned = child.is_cloned();
    let status = child.wait().await.unwrap();
    let mut out = String::new();
    std::fs::File::from(reader)
        .read_to_string(&mut out)
        .unwrap();
    (status, out, cloned)
}

/// A sandbox with user and mount namespaces over a temp workspace (they are what sets the flag).
fn sandbox(dir: &tempfile::TempDir, run_as: Option<(u32, u32)>) -> Sandbox {
    let mut config = SandboxConfig::new(dir.path());
    config.run_as = run_as;
    let sandbox = Sandbox::new(config).unwrap();
    assert!(
        sandbox.covered().is_some(),
        "this test needs user namespaces for the sandbox (see Sandbox::covered)"
    );
    sandbox
}

#[tokio::test]
async fn an_undumpable_improv_starts_commands_forked_and_stays_undumpable() {
    let _flag = FLAG.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let sandbox = sandbox(&dir, None);
    assert_eq!(dumpable_behavior().unwrap(), DumpableBehavior::Dumpable);
    let (status, out, cloned) = run(&sandbox, "cat /proc/self/uid_map").await;
    assert!(status.success() && cloned, "{out}");
    assert_eq!(dumpable_behavior().unwrap(), DumpableBehavior::Dumpable);

    set_dumpable_behavior(DumpableBehavior::NotDumpable).unwrap();
    let (status, out, cloned) = run(&sandbox, "cat /proc/self/uid_map").await;
    let after = dumpable_behavior().unwrap();
    set_dumpable_behavior(DumpableBehavior::Dumpable).unwrap();
    assert!(status.success(), "{out}");
    assert_eq!(after, DumpableBehavior::NotDumpable, "{out}");
    assert!(
        !cloned,
        "an undumpable improv started a command without fork"
    );
}

#[tokio::test]
async fn commands_run_as_another_user_start_forked_as_that_user() {
    let _flag = FLAG.lock().await;
    assert!(
        rustix::process::geteuid().is_root(),
        "this test runs commands as another user: run it as root"
    );
    let dir = tempfile::tempdir().unwrap();
    let sandbox = sandbox(&dir, Some((65534, 65534)));
    let (status, out, cloned) = run(&sandbox, "id -u; id -g; id -G").await;
    assert!(status.success(), "{out}");
    assert_eq!(out.split_whitespace().collect::<Vec<_>>(), ["65534"; 3]);
    assert!(!cloned, "a run_as command started without fork");
    assert_eq!(dumpable_behavior().unwrap(), DumpableBehavior::Dumpable);
}
