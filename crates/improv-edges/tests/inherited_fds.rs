//! A sandboxed command keeps none of improv's open files but its stdio, started either way
//! ([`Sandbox::spawn`] without `fork`, [`Sandbox::apply`] forked): a file improv (or a library,
//! or another thread) opened without `O_CLOEXEC` would otherwise be readable to the command by
//! its number, past Landlock, which checks a path only when it is opened. Its own binary: the
//! tests open descriptors without `O_CLOEXEC`, which every child started meanwhile inherits.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_edges::{Sandbox, SandboxConfig};
use rustix::fs::{Mode, OFlags};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};

/// A secret outside the workspace, opened without `O_CLOEXEC`, as improv's own file.
fn open_secret(dir: &tempfile::TempDir) -> OwnedFd {
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let secret = outside.join("secret");
    std::fs::write(&secret, "TOPSECRET\n").unwrap();
    let fd = rustix::fs::open(&secret, OFlags::RDONLY, Mode::empty()).unwrap();
    let flags = rustix::io::fcntl_getfd(&fd).unwrap();
    assert!(!flags.contains(rustix::io::FdFlags::CLOEXEC));
    fd
}

/// Reads the secret's descriptor by number and says where it leads, then says it ran.
fn script(fd: &OwnedFd) -> String {
    let n = fd.as_raw_fd();
    format!("cat <&{n} 2>&1; readlink /proc/self/fd/{n} 2>&1; echo ran")
}

/// What the command printed shows neither the secret nor its file, and that it ran; improv's
/// own descriptor is as it was (the child marked its copy of the table, not improv's).
fn check(out: &str, fd: &OwnedFd) {
    let flags = rustix::io::fcntl_getfd(fd).unwrap();
    assert!(
        !flags.contains(rustix::io::FdFlags::CLOEXEC),
        "improv's own table changed"
    );
    assert!(!out.contains("TOPSECRET"), "{out}");
    assert!(
        !out.contains("outside/secret"),
        "the command has improv's descriptor: {out}"
    );
    assert!(out.contains("ran"), "{out}");
}

fn sandbox(workspace: &std::path::Path) -> Sandbox {
    Sandbox::new(SandboxConfig::new(workspace)).unwrap()
}

#[tokio::test]
async fn a_command_started_without_fork_cannot_read_improvs_open_files() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("ws");
    std::fs::create_dir(&workspace).unwrap();
    let secret = open_secret(&dir);
    let sandbox = sandbox(&workspace);
    let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c").arg(script(&secret));
    let stderr = writer.try_clone().unwrap();
    let mut child = sandbox.spawn(&cmd, writer, stderr).unwrap();
    let status = child.wait().await.unwrap();
    let mut out = String::new();
    std::fs::File::from(reader)
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "{out}");
    check(&out, &secret);
}

#[tokio::test]
async fn a_forked_command_cannot_read_improvs_open_files() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("ws");
    std::fs::create_dir(&workspace).unwrap();
    let secret = open_secret(&dir);
    let sandbox = sandbox(&workspace);
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c").arg(script(&secret));
    sandbox.apply(&mut cmd).unwrap();
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    check(&text, &secret);
}
