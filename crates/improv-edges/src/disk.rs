//! The disk bound of a performance: how much its commands may write into the workspace's
//! filesystem. Filesystem quotas would need a filesystem mounted with them, root and a project
//! id per workspace, which improv cannot count on; so the bound is on free space instead. The
//! sandbox notes the workspace filesystem's free space (`statvfs`: the blocks available to
//! unprivileged users) when it is built; while any of the performance's commands runs, a
//! watchdog thread looks again every [`POLL`], and when free space has dropped by more than
//! [`Limits::disk_bytes_total`](crate::Limits::disk_bytes_total) since, or lies below
//! [`Limits::disk_free_floor`](crate::Limits::disk_free_floor), it kills every process of the
//! performance; [`Sandbox::apply`](crate::Sandbox::apply) refuses commands while that holds.
//!
//! What it measures belongs to the filesystem, not the performance: other processes' writes
//! there count too (and what they free gives room back); a fast writer gets up to one poll's
//! worth of writing past the bound before it is killed. The thread starts with the
//! performance's first command, not with the sandbox: a performance that runs none (one of
//! thousands waiting on a model in a worker) costs no thread. Between commands it sleeps in
//! `poll(2)` on the pipe each sandboxed child writes its pid to. (Hand-written: a thread and
//! `poll` are all it takes; no crate does this.)

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often free space is read while a command runs.
pub const POLL: Duration = Duration::from_millis(100);

/// How the space the performance's commands write is bounded
/// ([`Limits::disk_bytes_total`](crate::Limits::disk_bytes_total),
/// [`Limits::disk_free_floor`](crate::Limits::disk_free_floor)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DiskLimit {
    /// Neither bound is configured.
    Unlimited,
    /// Free space on the workspace's filesystem is watched while commands run.
    Watched {
        /// Free bytes when the sandbox was built.
        start_free: u64,
        /// The most free space the performance may consume.
        total: Option<u64>,
        /// The free space that must remain.
        floor: Option<u64>,
    },
    /// The workspace's free space cannot be read: only `RLIMIT_FSIZE` per file holds.
    NotEnforced { reason: String },
}

/// Why the performance's commands were killed and new ones are refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Breach {
    /// Free space dropped by `used` bytes since the sandbox was built, past `max`.
    Total { used: u64, max: u64 },
    /// Only `free` bytes are left, below `floor`.
    Floor { free: u64, floor: u64 },
}

impl std::fmt::Display for Breach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Breach::Total { used, max } => write!(
                f,
                "the performance has used {} of the workspace's filesystem (free space dropped by that much since it began; other processes' writes there count too), past its disk bound of {} (`Limits::disk_bytes_total`); commands are killed and refused while this holds: free space, then run again",
                size(*used),
                size(*max)
            ),
            Breach::Floor { free, floor } => write!(
                f,
                "the workspace's filesystem has only {} free, below the performance's floor of {} (`Limits::disk_free_floor`); commands are killed and refused while this holds: free space, then run again",
                size(*free),
                size(*floor)
            ),
        }
    }
}

impl std::error::Error for Breach {}

/// `bytes` for a person: MiB below a GiB, GiB with one decimal above.
fn size(bytes: u64) -> String {
    if bytes < 1 << 30 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{:.1} GiB", bytes as f64 / f64::from(1u32 << 30))
    }
}

/// Bytes available to unprivileged users on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(path)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Whether `free` bytes, where the sandbox started with `start_free`, breach the bounds.
fn judge(start_free: u64, free: u64, total: Option<u64>, floor: Option<u64>) -> Option<Breach> {
    let used = start_free.saturating_sub(free);
    match (total, floor) {
        (Some(max), _) if used > max => Some(Breach::Total { used, max }),
        (_, Some(floor)) if free < floor => Some(Breach::Floor { free, floor }),
        _ => None,
    }
}

/// The free-space bound of one workspace.
#[derive(Debug)]
struct Bound {
    path: PathBuf,
    start_free: u64,
    total: Option<u64>,
    floor: Option<u64>,
}

impl Bound {
    /// Reads free space now. One whose free space cannot be read passes: this bound only
    /// acts on what it can measure.
    fn check(&self) -> Result<(), Breach> {
        match free_bytes(&self.path) {
            Ok(free) => match judge(self.start_free, free, self.total, self.floor) {
                Some(breach) => Err(breach),
                None => Ok(()),
            },
            Err(e) => {
                tracing::debug!(path = %self.path.display(), "cannot read free space: {e}");
                Ok(())
            }
        }
    }
}

/// What the watchdog watches and stops: the performance's processes.
pub(crate) trait Performers: Send + Sync + 'static {
    /// Becomes readable when a command starts; `None` before the first command opened it.
    fn started(&self) -> Option<BorrowedFd<'_>>;
    /// Takes in the commands started since the last call (emptying [`Performers::started`]);
    /// whether any command still runs.
    fn running(&self) -> bool;
    /// Kills every process of the performance; how many groups or processes were signalled.
    fn kill(&self) -> usize;
}

/// The disk bound of a sandbox and its watchdog thread (started by the first command's
/// [`DiskGuard::check`]), stopped when dropped. Until then it holds no thread and no file
/// descriptor.
pub(crate) struct DiskGuard {
    bound: Arc<Bound>,
    watchdog: Mutex<Watchdog>,
}

/// The watchdog thread, or what it needs until a command starts it.
enum Watchdog {
    /// No command has started it, or its start failed (that command was refused; the next
    /// tries again).
    NotStarted { performers: Arc<dyn Performers> },
    /// The thread, and the write end of its pipe: dropping it wakes the thread to end.
    Running {
        thread: JoinHandle<()>,
        stop: OwnedFd,
    },
    /// The guard is being dropped.
    Ended,
}

impl std::fmt::Debug for DiskGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskGuard")
            .field("bound", &self.bound)
            .finish_non_exhaustive()
    }
}

impl DiskGuard {
    /// The bound for `workspace` and its watchdog over `performers`; `None` with the limit
    /// when neither bound is asked for or free space cannot be read.
    pub(crate) fn new(
        workspace: &Path,
        total: Option<u64>,
        floor: Option<u64>,
        performers: impl Performers,
    ) -> (Option<Self>, DiskLimit) {
        if total.is_none() && floor.is_none() {
            return (None, DiskLimit::Unlimited);
        }
        let not_enforced = |reason: String| (None, DiskLimit::NotEnforced { reason });
        let start_free = match free_bytes(workspace) {
            Ok(free) => free,
            Err(e) => return not_enforced(format!("statvfs on the workspace failed: {e}")),
        };
        let limit = DiskLimit::Watched {
            start_free,
            total,
            floor,
        };
        let bound = Arc::new(Bound {
            path: workspace.to_path_buf(),
            start_free,
            total,
            floor,
        });
        let watchdog = Watchdog::NotStarted {
            performers: Arc::new(performers),
        };
        let guard = DiskGuard {
            bound,
            watchdog: Mutex::new(watchdog),
        };
        (Some(guard), limit)
    }

    /// `Err` while the bound is breached, or when the watchdog could not start: commands are
    /// refused. Called before each command; the first starts the watchdog.
    pub(crate) fn check(&self) -> Result<(), crate::SandboxError> {
        self.start().map_err(crate::SandboxError::DiskWatchdog)?;
        Ok(self.bound.check()?)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Watchdog> {
        // Poisoned only by a panic while the state was swapped; it is whole either way.
        self.watchdog.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts the watchdog thread unless it runs already. On failure (no file descriptor or
    /// thread to spare) nothing changes: the command that asked is refused rather than run
    /// unwatched, and the next one tries again.
    fn start(&self) -> io::Result<()> {
        let mut watchdog = self.lock();
        let Watchdog::NotStarted { performers } = &*watchdog else {
            return Ok(());
        };
        let performers = performers.clone();
        let watched = self.bound.clone();
        let (stop_reader, stop) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let thread = std::thread::Builder::new()
            .name("improv-disk-watchdog".into())
            .spawn(move || watch(&watched, &*performers, &stop_reader))?;
        *watchdog = Watchdog::Running { thread, stop };
        Ok(())
    }
}

impl Drop for DiskGuard {
    fn drop(&mut self) {
        let watchdog = std::mem::replace(&mut *self.lock(), Watchdog::Ended);
        if let Watchdog::Running { thread, stop } = watchdog {
            // Closing the write end makes the read end the thread polls hang up.
            drop(stop);
            let _ = thread.join();
        }
    }
}

/// The watchdog: asleep until a command starts, then a look at free space every [`POLL`]
/// until none runs, killing them all on a breach. Ends when `stop` hangs up.
fn watch(bound: &Bound, performers: &dyn Performers, stop: &OwnedFd) {
    loop {
        let stopped = if performers.running() {
            if let Err(breach) = bound.check() {
                let killed = performers.kill();
                tracing::warn!(killed, "disk bound: {breach}");
            }
            // Commands started meanwhile are taken in at the next look, not one wake each.
            let poll = i32::try_from(POLL.as_millis()).unwrap_or(i32::MAX);
            wait(stop.as_fd(), None, poll)
        } else if let Some(started) = performers.started() {
            wait(stop.as_fd(), Some(started), -1)
        } else {
            // Not opened yet (the first command opens it before it starts): look again.
            wait(
                stop.as_fd(),
                None,
                i32::try_from(POLL.as_millis()).unwrap_or(i32::MAX),
            )
        };
        if stopped {
            return;
        }
    }
}

/// Waits up to `timeout_ms` (-1: for ever) until `stop` hangs up or, where given, a command
/// starts; whether `stop` hung up.
fn wait(stop: BorrowedFd<'_>, started: Option<BorrowedFd<'_>>, timeout_ms: i32) -> bool {
    let pollfd = |fd: BorrowedFd<'_>| libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let mut fds = [pollfd(stop), started.map_or(pollfd(stop), pollfd)];
    // SAFETY: poll reads and writes the pollfds of the array we pass; their fds are open for
    // the duration (borrowed). EINTR returns early, which is a look like any other.
    unsafe {
        libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms);
    }
    fds[0].revents != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A performance with no command running.
    struct Idle;

    impl Performers for Idle {
        fn started(&self) -> Option<BorrowedFd<'_>> {
            None
        }
        fn running(&self) -> bool {
            false
        }
        fn kill(&self) -> usize {
            0
        }
    }

    /// Set in the child process the test below runs itself in.
    const CHILD: &str = "IMPROV_EDGES_DISK_TEST_CHILD";

    fn set_open_files(limit: &libc::rlimit) {
        // SAFETY: setrlimit reads the struct we pass.
        let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, limit) };
        assert_eq!(set, 0, "setrlimit: {}", io::Error::last_os_error());
    }

    // In a process of its own (this test binary run again for this test alone): it takes away
    // every file descriptor, which would fail the tests running beside it.
    #[test]
    fn a_command_whose_watchdog_cannot_start_is_refused_and_the_next_is_watched() {
        let name =
            "disk::tests::a_command_whose_watchdog_cannot_start_is_refused_and_the_next_is_watched";
        if !crate::child_test::in_child(name, CHILD) {
            return;
        }
        let dir = tempfile::tempdir().expect("a temp dir");
        let (guard, limit) = DiskGuard::new(dir.path(), Some(1 << 40), None, Idle);
        assert!(matches!(limit, DiskLimit::Watched { .. }), "{limit:?}");
        let guard = guard.expect("a guard");

        let mut saved = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we pass.
        let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut saved) };
        assert_eq!(got, 0, "getrlimit: {}", io::Error::last_os_error());
        // No descriptor can be opened: the watchdog's pipe cannot be made.
        set_open_files(&libc::rlimit {
            rlim_cur: 0,
            rlim_max: saved.rlim_max,
        });
        let refused = guard.check();
        set_open_files(&saved);
        match refused {
            Err(crate::SandboxError::DiskWatchdog(e)) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}")
            }
            other => panic!("the command ran without its disk watchdog: {other:?}"),
        }
        assert!(matches!(*guard.lock(), Watchdog::NotStarted { .. }));

        guard.check().expect("the limit is back: the command runs");
        assert!(
            matches!(*guard.lock(), Watchdog::Running { .. }),
            "the next command is not watched"
        );
    }

    #[test]
    fn free_space_consumed_past_the_total_or_below_the_floor_is_a_breach() {
        const MIB: u64 = 1 << 20;
        assert_eq!(judge(100 * MIB, 90 * MIB, Some(16 * MIB), None), None);
        assert_eq!(
            judge(100 * MIB, 80 * MIB, Some(16 * MIB), None),
            Some(Breach::Total {
                used: 20 * MIB,
                max: 16 * MIB
            })
        );
        // Space freed by others gives room back; it never counts as negative use.
        assert_eq!(judge(100 * MIB, 120 * MIB, Some(16 * MIB), None), None);
        assert_eq!(
            judge(100 * MIB, 40 * MIB, None, Some(64 * MIB)),
            Some(Breach::Floor {
                free: 40 * MIB,
                floor: 64 * MIB
            })
        );
        assert_eq!(
            judge(100 * MIB, 90 * MIB, Some(16 * MIB), Some(64 * MIB)),
            None
        );
    }

    #[test]
    fn the_messages_say_what_to_change_and_do() {
        let total = Breach::Total {
            used: 20 << 20,
            max: 3 << 30,
        }
        .to_string();
        assert!(total.contains("used 20 MiB"), "{total}");
        assert!(total.contains("disk bound of 3.0 GiB (`Limits::disk_bytes_total`)"));
        assert!(total.ends_with("free space, then run again"));
        let floor = Breach::Floor {
            free: 1 << 20,
            floor: 512 << 20,
        }
        .to_string();
        assert!(floor.contains("only 1 MiB free"), "{floor}");
        assert!(floor.contains("floor of 512 MiB (`Limits::disk_free_floor`)"));
    }
}
