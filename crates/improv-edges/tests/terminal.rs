//! A sandboxed command cannot type into improv's controlling terminal: `ioctl(TIOCSTI)` on
//! `/dev/tty` pushes keystrokes that the user's shell would read after improv exits (on kernels
//! before 6.2, or with `dev.tty.legacy_tiocsti = 1`). The seccomp program refuses it.
//!
//! The terminal is a pty this test makes, never the real one: the test binary runs itself
//! again as the leader of a new session whose controlling terminal is that pty, and there
//! starts the command both ways (forked and not).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_edges::{Sandbox, SandboxConfig};
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Set in the child run of this binary that owns the pty as its controlling terminal.
const IN_SESSION: &str = "IMPROV_EDGES_TEST_TTY_SESSION";
const NAME: &str = "a_sandboxed_command_cannot_push_keystrokes_into_its_terminal";
/// Opens `/dev/tty` (the controlling terminal) and pushes one keystroke into it.
const PUSH: &str = r#"open(my $t, "+<", "/dev/tty") or die "open: $!\n"; my $c = "x"; if (ioctl($t, 0x5412, $c)) { print "pushed\n" } else { print "errno=", $!+0, "\n" }"#;

/// A pty: (master, slave), both without becoming this process's controlling terminal.
fn pty() -> (OwnedFd, OwnedFd) {
    // SAFETY: plain libc calls on a fd this function owns; ptsname_r writes into `name`.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(master >= 0, "posix_openpt");
        let master = OwnedFd::from_raw_fd(master);
        assert_eq!(libc::grantpt(master.as_raw_fd()), 0, "grantpt");
        assert_eq!(libc::unlockpt(master.as_raw_fd()), 0, "unlockpt");
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(
            libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()),
            0
        );
        let slave = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NOCTTY);
        assert!(slave >= 0, "opening the pty's slave");
        (master, OwnedFd::from_raw_fd(slave))
    }
}

/// What `PUSH` printed when started by `sandbox` forked (`Sandbox::apply`).
fn forked(sandbox: &Sandbox) -> String {
    let mut cmd = Command::new("perl");
    cmd.arg("-e").arg(PUSH).stdin(Stdio::null());
    sandbox.apply(&mut cmd).unwrap();
    let out = cmd.output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What `PUSH` printed when started by `sandbox` without fork (`Sandbox::spawn`).
async fn spawned(sandbox: &Sandbox) -> String {
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    let mut cmd = Command::new("perl");
    cmd.arg("-e").arg(PUSH);
    let stderr = writer.try_clone().unwrap();
    let mut child = sandbox.spawn(&cmd, writer, stderr).unwrap();
    child.wait().await.unwrap();
    let mut out = String::new();
    std::fs::File::from(reader)
        .read_to_string(&mut out)
        .unwrap();
    out
}

#[tokio::test]
async fn a_sandboxed_command_cannot_push_keystrokes_into_its_terminal() {
    if std::env::var_os(IN_SESSION).is_some() {
        // The run inside the pty's session: the commands' answers go to the outer run.
        let dir = tempfile::tempdir().unwrap();
        let sandbox = Sandbox::new(SandboxConfig::new(dir.path())).unwrap();
        assert!(
            sandbox.is_enforced(),
            "this test needs the sandbox enforced"
        );
        println!("forked: {}", forked(&sandbox).trim());
        println!("spawned: {}", spawned(&sandbox).await.trim());
        return;
    }
    let (_master, slave) = pty();
    let slave_fd = slave.as_raw_fd();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env(IN_SESSION, "1")
        .stdin(Stdio::null());
    // SAFETY: setsid and ioctl are async-signal-safe; the slave stays open in the parent
    // until the child has run.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 || libc::ioctl(slave_fd, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    drop(slave);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let eperm = format!("errno={}", libc::EPERM);
    for way in ["forked", "spawned"] {
        let tag = format!("{way}: ");
        let at = text
            .find(&tag)
            .unwrap_or_else(|| panic!("no answer from the {way} command: {text}"));
        let answer = text[at + tag.len()..].lines().next().unwrap_or("");
        assert_eq!(answer, eperm, "the {way} command: {text}");
    }
}
