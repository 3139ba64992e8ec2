//! Commands started without `fork` join a mount namespace prepared once for the workspace as
//! scanned ([`improv_edges::Sandbox::spawn`], `namespace::Template`), each in a user namespace
//! of its own. These tests check that the prepared namespace is shared only while every mount in
//! it still stands where it was made: a cover or a read-only bind taken off from outside the
//! sandbox (an entry removed or replaced under it) makes the next command get a new one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_edges::{Sandbox, SandboxConfig};
use std::io::Read;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

/// Runs `sh -c script` through [`Sandbox::spawn`]: (status, stdout + stderr).
async fn run(sandbox: &Sandbox, script: &str) -> (ExitStatus, String) {
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(script);
    let stderr = writer.try_clone().unwrap();
    let mut child = sandbox.spawn(&cmd, writer, stderr).unwrap();
    assert!(
        child.is_cloned(),
        "this test is about commands started without fork"
    );
    let status = child.wait().await.unwrap();
    let mut out = String::new();
    std::fs::File::from(reader)
        .read_to_string(&mut out)
        .unwrap();
    (status, out)
}

fn sandbox(workspace: &Path, protected: &[&str]) -> Sandbox {
    let mut config = SandboxConfig::new(workspace);
    config.protected = protected.iter().map(|p| workspace.join(p)).collect();
    let sandbox = Sandbox::new(config).unwrap();
    assert!(
        sandbox.covered().is_some(),
        "this test needs user namespaces for the sandbox (see Sandbox::covered)"
    );
    sandbox
}

/// Lets the folders just changed age past the coarse clock tick, so that a later change moves
/// their change time and the prepared namespace may be shared (a setup step, not a timing
/// assertion: waiting longer changes nothing).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// `(mount namespace, user namespace)` of a command, as `/proc/self/ns` names them.
async fn namespaces(sandbox: &Sandbox) -> (String, String) {
    let (status, out) = run(sandbox, "readlink /proc/self/ns/mnt /proc/self/ns/user").await;
    assert!(status.success(), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    (lines[0].to_string(), lines[1].to_string())
}

/// Namespace numbers are compared only between namespaces that exist at the same moment: the
/// kernel hands a freed namespace's number to the next one (seen in CI on an idle machine). So a
/// first command, which says its namespaces, stays running while the others are looked at.
#[tokio::test]
async fn commands_share_the_prepared_mount_namespace_each_in_a_user_namespace_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "TOPSECRET\n").unwrap();
    let sandbox = sandbox(dir.path(), &[]);
    settle().await;
    let first = run(
        &sandbox,
        "readlink /proc/self/ns/mnt /proc/self/ns/user; sleep 8",
    );
    let others = async {
        settle().await;
        let (mnt2, user2) = namespaces(&sandbox).await;
        // The shared namespace cannot be changed by a command: no capability over it.
        let (status, out) = run(
            &sandbox,
            "cat .env; mount -t tmpfs none . 2>&1; echo; cat .env",
        )
        .await;
        assert!(!out.contains("TOPSECRET"), "{status}: {out}");
        // A hidden file that appears is covered for the next command, in a new namespace.
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/.env"), "NEWSECRET\n").unwrap();
        let (status, out) = run(&sandbox, "cat sub/.env").await;
        assert!(!out.contains("NEWSECRET"), "{status}: {out}");
        let (mnt3, _) = namespaces(&sandbox).await;
        (mnt2, user2, mnt3)
    };
    let ((status, out), (mnt2, user2, mnt3)) = tokio::join!(first, others);
    assert!(status.success(), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let (mnt1, user1) = (lines[0], lines[1]);
    assert_eq!(mnt1, mnt2, "the prepared mount namespace was not shared");
    assert_ne!(user1, user2, "two commands shared a user namespace");
    assert_ne!(
        mnt1, mnt3,
        "a new hidden file was guarded in the old namespace"
    );
}

/// The attack: from outside the sandbox, a covered file is unlinked and linked again under the
/// same name (the same inode, so the scan finds the same targets). The unlink takes the cover
/// off in every other mount namespace, the prepared one included; reusing it would show the
/// secret. Tried several times, each with a namespace that had been shared.
#[tokio::test]
async fn a_cover_taken_off_by_relinking_outside_the_sandbox_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("ws");
    std::fs::create_dir(&workspace).unwrap();
    let secret = workspace.join(".env");
    std::fs::write(&secret, "TOPSECRET\n").unwrap();
    let aside = dir.path().join("aside");
    let sandbox = sandbox(&workspace, &[]);
    for round in 0..5 {
        settle().await;
        let (mnt1, _) = namespaces(&sandbox).await;
        let (mnt2, _) = namespaces(&sandbox).await;
        assert_eq!(mnt1, mnt2, "round {round}: the namespace was not shared");
        std::fs::hard_link(&secret, &aside).unwrap();
        std::fs::remove_file(&secret).unwrap();
        std::fs::hard_link(&aside, &secret).unwrap();
        std::fs::remove_file(&aside).unwrap();
        let (status, out) = run(&sandbox, "cat .env").await;
        assert!(!out.contains("TOPSECRET"), "round {round}: {status}: {out}");
    }
}

/// The attack on a control file: replaced from outside the sandbox by a rename over it (as an
/// editor saves), which takes the read-only bind off the old file everywhere; the next command
/// must find the new one read-only.
#[tokio::test]
async fn a_control_file_replaced_outside_the_sandbox_is_read_only_to_the_next_command() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("stage.toml"), "old\n").unwrap();
    let sandbox = sandbox(dir.path(), &["stage.toml"]);
    for round in 0..5 {
        settle().await;
        let (status, out) = run(&sandbox, "echo changed >> stage.toml").await;
        assert!(!status.success(), "round {round}: {out}");
        let (status, out) = run(&sandbox, "echo changed >> stage.toml").await;
        assert!(!status.success(), "round {round}: {out}");
        let new = dir.path().join("stage.toml.new");
        std::fs::write(&new, format!("round {round}\n")).unwrap();
        std::fs::rename(&new, dir.path().join("stage.toml")).unwrap();
        let (status, out) = run(&sandbox, "echo changed >> stage.toml").await;
        assert!(!status.success(), "round {round}: {out}");
        let now = std::fs::read_to_string(dir.path().join("stage.toml")).unwrap();
        assert_eq!(now, format!("round {round}\n"));
    }
}

/// The review's attack on the host stamps: improv's state lies outside the workspace, under a
/// folder reached through a symlink, so the folder stamped is the link, whose change time the
/// relink does not move, and the relinked file keeps its inode. Only the mounts seen in the
/// prepared namespace show that the cover came off (`View`): without that check the next
/// command joins it and reads the secret.
#[tokio::test]
async fn a_cover_taken_off_under_a_symlinked_folder_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let workspace = base.join("ws");
    let real = base.join("real");
    std::fs::create_dir(&workspace).unwrap();
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, base.join("link")).unwrap();
    let state = real.join("state");
    std::fs::write(&state, "TOPSECRET\n").unwrap();
    let aside = base.join("aside");
    let mut config = SandboxConfig::new(&workspace);
    config.concealed = vec![base.join("link/state")];
    config.read_only = vec![real.clone()];
    let sandbox = Sandbox::new(config).unwrap();
    assert!(sandbox.covered().is_some(), "needs user namespaces");
    let read = format!("cat {}", base.join("link/state").display());
    for round in 0..5 {
        settle().await;
        let (mnt1, _) = namespaces(&sandbox).await;
        let (status, out) = run(&sandbox, &read).await;
        assert!(!out.contains("TOPSECRET"), "round {round}: {status}: {out}");
        let (mnt2, _) = namespaces(&sandbox).await;
        assert_eq!(mnt1, mnt2, "round {round}: the namespace was not shared");
        std::fs::hard_link(&state, &aside).unwrap();
        std::fs::remove_file(&state).unwrap();
        std::fs::hard_link(&aside, &state).unwrap();
        std::fs::remove_file(&aside).unwrap();
        let (status, out) = run(&sandbox, &read).await;
        assert!(!out.contains("TOPSECRET"), "round {round}: {status}: {out}");
    }
}

/// A template serves for [`improv_edges::sandbox::TEMPLATE_AGE`] at most, so that mounts the host adds
/// later reach commands: past it, the next command is in a new mount namespace. (Waits past the
/// age as a setup step; nothing here is timed.)
#[tokio::test]
async fn a_template_older_than_its_age_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(".env"), "TOPSECRET\n").unwrap();
    let sandbox = sandbox(dir.path(), &[]);
    settle().await;
    let (mnt1, _) = namespaces(&sandbox).await;
    let (mnt2, _) = namespaces(&sandbox).await;
    assert_eq!(mnt1, mnt2, "the namespace was not shared");
    // A command still running in the first template keeps its mount namespace alive across the
    // check: the kernel hands a freed namespace's number to the next one, so once the first was
    // gone a new template could show the same number (seen once in CI).
    let hold = run(&sandbox, "sleep 8");
    let later = async {
        tokio::time::sleep(improv_edges::sandbox::TEMPLATE_AGE + Duration::from_millis(200)).await;
        namespaces(&sandbox).await
    };
    let ((status, out), (mnt3, _)) = tokio::join!(hold, later);
    assert!(status.success(), "{out}");
    assert_ne!(mnt1, mnt3, "a template served past its age");
}

/// The same attack on a read-only bind: the relinked control file keeps its identity, so only
/// its mount (the parent's once the bind came off) shows the change in the prepared namespace.
#[tokio::test]
async fn a_read_only_bind_taken_off_under_a_symlinked_folder_is_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().canonicalize().unwrap();
    let workspace = base.join("ws");
    let real = base.join("real");
    std::fs::create_dir(&workspace).unwrap();
    std::fs::create_dir(&real).unwrap();
    std::os::unix::fs::symlink(&real, base.join("link")).unwrap();
    let control = real.join("control");
    std::fs::write(&control, "old\n").unwrap();
    let aside = base.join("aside");
    let mut config = SandboxConfig::new(&workspace);
    config.protected = vec![base.join("link/control")];
    config.read_write = vec![real.clone()];
    let sandbox = Sandbox::new(config).unwrap();
    assert!(sandbox.covered().is_some(), "needs user namespaces");
    let write = format!("echo changed >> {}", base.join("link/control").display());
    for round in 0..5 {
        settle().await;
        let (mnt1, _) = namespaces(&sandbox).await;
        let (status, out) = run(&sandbox, &write).await;
        assert!(!status.success(), "round {round}: {out}");
        let (mnt2, _) = namespaces(&sandbox).await;
        assert_eq!(mnt1, mnt2, "round {round}: the namespace was not shared");
        std::fs::hard_link(&control, &aside).unwrap();
        std::fs::remove_file(&control).unwrap();
        std::fs::hard_link(&aside, &control).unwrap();
        std::fs::remove_file(&aside).unwrap();
        let (status, out) = run(&sandbox, &write).await;
        assert!(!status.success(), "round {round}: {out}");
        assert_eq!(std::fs::read_to_string(&control).unwrap(), "old\n");
    }
}
