//! `improv worker` raises its soft open-file limit to the hard limit at start (issue 15: a
//! worker holds a socket per performance waiting on its model, so thousands waiting need
//! thousands of descriptors, and a soft limit of 1,024 stops it there). The real binary,
//! started with a soft limit lowered below the hard one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::process::Stdio;

/// The soft limit the worker is started with.
const LOWERED: libc::rlim_t = 256;

/// `Max open files` of a process: (soft, hard).
fn open_files(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut fields = line.split_whitespace().skip(3);
    (
        fields.next().unwrap().to_string(),
        fields.next().unwrap().to_string(),
    )
}

#[test]
fn a_worker_raises_its_open_file_limit_to_the_hard_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let store = format!("sqlite:{}", tmp.path().join("store.db").display());
    let mut command = common::improv_command();
    command
        .args(["worker", "--store", &store])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe and reads the struct we pass.
    unsafe {
        command.pre_exec(|| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
            limit.rlim_cur = LOWERED.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            Ok(())
        });
    }
    let mut worker = command.spawn().unwrap();
    let pid = worker.id();
    // Its first line says it is performing: the limit was raised before.
    let mut lines = BufReader::new(worker.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let (soft, hard) = open_files(pid);
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(first.contains("performing from"), "{first}");
    assert_ne!(
        hard,
        LOWERED.to_string(),
        "the hard limit here is {LOWERED}: nothing to raise"
    );
    assert_eq!(
        soft, hard,
        "the worker, started with a soft limit of {LOWERED}, left it at {soft} (hard {hard})"
    );
}
