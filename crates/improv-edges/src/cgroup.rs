//! A pids cgroup for the processes of one performance: what bounds a fork bomb when commands
//! run as uid 0, for which the kernel never enforces `RLIMIT_NPROC` (not even inside a user
//! namespace, since the uid stays 0). Every sandboxed child joins it before `exec` by writing
//! `0` to its `cgroup.procs`, opened beforehand; the cgroup is killed and removed with the
//! sandbox. Works with cgroup v2 (the pids controller enabled for improv's cgroup) and with a
//! v1 `pids` hierarchy; where neither is writable (an unprivileged container) there is none.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A cgroup with `pids.max` set, removed when dropped.
#[derive(Debug)]
pub struct PidsCgroup {
    dir: PathBuf,
    procs: OwnedFd,
    v2: bool,
}

impl PidsCgroup {
    /// Creates a child of improv's own cgroup in the hierarchy that has the pids controller,
    /// with at most `max` tasks (processes and threads). `Err` says why there is none.
    pub fn create(max: u64) -> Result<Self, String> {
        let (parent, v2) = locate().ok_or("no pids cgroup hierarchy is mounted")?;
        if v2 {
            let control = parent.join("cgroup.subtree_control");
            let enabled = std::fs::read_to_string(&control)
                .map(|s| s.split_whitespace().any(|c| c == "pids"))
                .unwrap_or(false);
            if !enabled {
                std::fs::write(&control, "+pids").map_err(|e| {
                    format!(
                        "cannot enable the pids controller in {}: {e}",
                        control.display()
                    )
                })?;
            }
        }
        let name = format!(
            "improv-sandbox-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = parent.join(name);
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let made = (|| -> io::Result<OwnedFd> {
            std::fs::write(dir.join("pids.max"), max.to_string())?;
            // v1: `tasks` moves the writing thread only, which skips the global lock that a
            // `cgroup.procs` write takes (an RCU grace period, about a millisecond a spawn);
            // the child is single-threaded, so the thread is the process.
            let join = if v2 { "cgroup.procs" } else { "tasks" };
            let procs = OpenOptions::new().write(true).open(dir.join(join))?;
            Ok(procs.into())
        })();
        match made {
            Ok(procs) => Ok(PidsCgroup { dir, procs, v2 }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(format!("cannot set up {}: {e}", dir.display()))
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The fd a child writes `0` to, to join.
    pub fn procs(&self) -> BorrowedFd<'_> {
        self.procs.as_fd()
    }

    /// The processes in the cgroup now.
    pub fn members(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// SIGKILLs every process in the cgroup; how many there were.
    pub fn kill_all(&self) -> usize {
        if self.v2 && std::fs::write(self.dir.join("cgroup.kill"), "1").is_ok() {
            return self.members().len();
        }
        // Members cannot fork past pids.max, so a few rounds catch the ones forked meanwhile.
        let mut killed = 0;
        for _ in 0..8 {
            let members = self.members();
            if members.is_empty() {
                break;
            }
            for pid in members {
                // SAFETY: kill only sends a signal; a pid that already exited fails with ESRCH.
                if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
                    killed += 1;
                }
            }
        }
        killed
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        self.kill_all();
        // Killed processes leave the cgroup as the kernel tears them down: wait a little.
        for _ in 0..200 {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    self.kill_all();
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(_) => break,
            }
        }
        tracing::warn!(
            "could not remove the sandbox's cgroup {}; remove it with rmdir",
            self.dir.display()
        );
    }
}

/// improv's own cgroup in the hierarchy with the pids controller, and whether it is v2.
fn locate() -> Option<(PathBuf, bool)> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // mountinfo: id parent major:minor root mountpoint options... - fstype source superoptions
    let mut v1 = None;
    let mut v2 = None;
    for line in mounts.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split_whitespace().collect();
        let theirs: Vec<&str> = right.split_whitespace().collect();
        let (Some(root), Some(point), Some(fstype)) =
            (fields.get(3), fields.get(4), theirs.first())
        else {
            continue;
        };
        let entry = (
            PathBuf::from(unescape(root)),
            PathBuf::from(unescape(point)),
        );
        if *fstype == "cgroup2" && v2.is_none() {
            v2 = Some(entry);
        } else if *fstype == "cgroup"
            && theirs
                .get(2)
                .is_some_and(|o| o.split(',').any(|o| o == "pids"))
        {
            v1 = Some(entry);
        }
    }
    let within = |(root, point): (PathBuf, PathBuf), path: &str| {
        let path = Path::new(path);
        let rel = path.strip_prefix(&root).unwrap_or(path);
        let rel = rel.strip_prefix("/").unwrap_or(rel);
        point.join(rel)
    };
    for line in own.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            if let Some(m) = v2.clone() {
                let dir = within(m, path);
                let has_pids = std::fs::read_to_string(dir.join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|c| c == "pids"));
                if has_pids {
                    return Some((dir, true));
                }
            }
        } else if controllers.split(',').any(|c| c == "pids")
            && let Some(m) = v1.clone()
        {
            return Some((within(m, path), false));
        }
    }
    None
}

/// mountinfo escapes spaces and a few other bytes as octal `\040`.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match octal {
            Some(v) if bytes[i] == b'\\' => {
                out.push(v);
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
