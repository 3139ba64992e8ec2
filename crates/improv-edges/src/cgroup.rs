//! The cgroup of one performance: what bounds its commands together. The pids controller bounds
//! a fork bomb when commands run as uid 0, for which the kernel never enforces `RLIMIT_NPROC`
//! (not even inside a user namespace, since the uid stays 0); the memory controller bounds the
//! memory of all the performance's commands together (`memory.max` with `memory.swap.max = 0`
//! on cgroup v2, `memory.limit_in_bytes` and `memory.memsw.limit_in_bytes` on v1): past it the
//! kernel's OOM killer kills a process of the performance, not of the machine.
//!
//! Every sandboxed child joins before `exec` by writing `0` to each hierarchy's `cgroup.procs`
//! (`tasks` on v1), opened beforehand; the cgroups are killed and removed with the sandbox. On
//! cgroup v2 one folder holds both controllers; on v1 each controller's hierarchy gets its own
//! folder. Where no hierarchy with a controller is writable (an unprivileged container) there is
//! none, and the caller is told why. Folders are named after their creator
//! ([`crate::scratch::Owner`]) so that [`sweep`] can remove what a crashed improv left (run
//! once per process and then periodically, by [`crate::scratch::sweep_leftovers`]).

use crate::scratch::{Owner, PREFIX};
use std::fs::OpenOptions;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A cgroup controller improv uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Controller {
    Pids,
    Memory,
}

impl Controller {
    fn name(self) -> &'static str {
        match self {
            Controller::Pids => "pids",
            Controller::Memory => "memory",
        }
    }
}

/// The bounds asked for; `None` leaves a controller out.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bounds {
    /// Tasks (processes and threads) at once.
    pub pids: Option<u64>,
    /// Memory in bytes, swap included (swap is bounded to nothing where it can be).
    pub memory: Option<u64>,
}

/// What [`PerformanceCgroup::create`] made of each bound asked for: the folder that enforces
/// it, or why none does.
#[derive(Debug, Default)]
pub struct Outcome {
    pub pids: Option<Result<PathBuf, String>>,
    pub memory: Option<Result<PathBuf, String>>,
}

/// One folder in one hierarchy.
#[derive(Debug)]
struct Dir {
    path: PathBuf,
    /// `cgroup.procs` (v2) or `tasks` (v1), written by the child to join; opened by the first
    /// command ([`PerformanceCgroup::open`]), so a performance that runs none holds no fd.
    join: OnceLock<OwnedFd>,
    v2: bool,
}

/// The cgroup folders of one performance, killed and removed when dropped.
#[derive(Debug)]
pub struct PerformanceCgroup {
    dirs: Vec<Dir>,
}

impl PerformanceCgroup {
    /// Creates a child of improv's own cgroup in each hierarchy that has a controller asked
    /// for (what dead improv processes left there is swept by
    /// [`crate::scratch::sweep_leftovers`], not here). `None` when no
    /// bound could be set up; the outcome says, per bound, where it holds or why not.
    pub fn create(bounds: Bounds) -> (Option<Self>, Outcome) {
        let mut outcome = Outcome::default();
        let mut dirs: Vec<Dir> = Vec::new();
        let asked = [
            (Controller::Pids, bounds.pids),
            (Controller::Memory, bounds.memory),
        ];
        for (controller, value) in asked {
            let Some(value) = value else { continue };
            let result = locate(controller)
                .ok_or_else(|| format!("no {} cgroup hierarchy is mounted", controller.name()))
                .and_then(|(parent, v2)| {
                    let existing = dirs.iter().position(|d| d.path.parent() == Some(&parent));
                    let index = match existing {
                        Some(i) => i,
                        None => {
                            dirs.push(Dir::create(&parent, v2)?);
                            dirs.len() - 1
                        }
                    };
                    let dir = &dirs[index];
                    enable(&parent, controller, dir.v2)?;
                    dir.set(controller, value)?;
                    Ok(dir.path.clone())
                });
            match controller {
                Controller::Pids => outcome.pids = Some(result),
                Controller::Memory => outcome.memory = Some(result),
            }
        }
        // A folder whose every bound failed holds nothing: drop (remove) it.
        let used: Vec<PathBuf> = [&outcome.pids, &outcome.memory]
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        dirs.retain(|d| used.contains(&d.path));
        let cgroup = (!dirs.is_empty()).then_some(PerformanceCgroup { dirs });
        (cgroup, outcome)
    }

    /// Opens the files a child writes to join (once): before the first command starts.
    pub fn open(&self) -> std::io::Result<()> {
        for dir in &self.dirs {
            if dir.join.get().is_none() {
                let file = OpenOptions::new().write(true).open(dir.join_path())?;
                // Another thread may have opened it meanwhile: its fd is kept, this one closed.
                dir.join.get_or_init(|| file.into());
            }
        }
        Ok(())
    }

    /// The fds a child writes `0` to, to join every hierarchy; `None` for one not
    /// [`open`](PerformanceCgroup::open)ed.
    pub fn joins(&self) -> impl Iterator<Item = Option<BorrowedFd<'_>>> {
        self.dirs.iter().map(|d| d.join.get().map(|j| j.as_fd()))
    }

    /// SIGKILLs every process in the cgroups; how many there were.
    pub fn kill_all(&self) -> usize {
        self.dirs.iter().map(|d| kill_all(&d.path, d.v2)).sum()
    }
}

impl Drop for PerformanceCgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            remove(&dir.path, dir.v2);
        }
    }
}

impl Dir {
    fn create(parent: &Path, v2: bool) -> Result<Dir, String> {
        let name = format!(
            "{PREFIX}{}{}",
            Owner::me().tag(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = parent.join(name);
        std::fs::create_dir(&path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        let dir = Dir {
            path,
            join: OnceLock::new(),
            v2,
        };
        // Checked now, so that the outcome says whether it holds; kept open only from the
        // first command.
        match OpenOptions::new().write(true).open(dir.join_path()) {
            Ok(_) => Ok(dir),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir.path);
                Err(format!("cannot set up {}: {e}", dir.path.display()))
            }
        }
    }

    /// The file a child writes to join. v1: `tasks` moves the writing thread only, which skips
    /// the global lock that a `cgroup.procs` write takes (an RCU grace period, about a
    /// millisecond a spawn); the child is single-threaded, so the thread is the process.
    fn join_path(&self) -> PathBuf {
        self.path
            .join(if self.v2 { "cgroup.procs" } else { "tasks" })
    }

    /// Writes the controller's bound.
    fn set(&self, controller: Controller, value: u64) -> Result<(), String> {
        let write = |file: &str, value: &str| {
            std::fs::write(self.path.join(file), value)
                .map_err(|e| format!("cannot write {}: {e}", self.path.join(file).display()))
        };
        let value = value.to_string();
        match (controller, self.v2) {
            (Controller::Pids, _) => write("pids.max", &value),
            (Controller::Memory, true) => {
                write("memory.max", &value)?;
                // Absent where the kernel does not account swap; then there is none to bound.
                if self.path.join("memory.swap.max").exists() {
                    write("memory.swap.max", "0")?;
                }
                Ok(())
            }
            (Controller::Memory, false) => {
                write("memory.limit_in_bytes", &value)?;
                // memory + swap: the same bound means no swap at all.
                if self.path.join("memory.memsw.limit_in_bytes").exists() {
                    write("memory.memsw.limit_in_bytes", &value)?;
                }
                Ok(())
            }
        }
    }
}

/// On v2, enables `controller` for the children of `parent` (`cgroup.subtree_control`).
fn enable(parent: &Path, controller: Controller, v2: bool) -> Result<(), String> {
    if !v2 {
        return Ok(());
    }
    let control = parent.join("cgroup.subtree_control");
    let enabled = std::fs::read_to_string(&control)
        .map(|s| s.split_whitespace().any(|c| c == controller.name()))
        .unwrap_or(false);
    if enabled {
        return Ok(());
    }
    std::fs::write(&control, format!("+{}", controller.name())).map_err(|e| {
        format!(
            "cannot enable the {} controller in {}: {e}",
            controller.name(),
            control.display()
        )
    })
}

/// The processes in the cgroup folder `dir` now.
fn members(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// SIGKILLs every process in `dir`; how many there were.
fn kill_all(dir: &Path, v2: bool) -> usize {
    if v2 && std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return members(dir).len();
    }
    // Members cannot fork past pids.max, so a few rounds catch the ones forked meanwhile.
    let mut killed = 0;
    for _ in 0..8 {
        let members = members(dir);
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

/// Kills what is in `dir` and removes it, waiting a little for killed processes to leave.
fn remove(dir: &Path, v2: bool) {
    kill_all(dir, v2);
    for _ in 0..200 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                kill_all(dir, v2);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(_) => break,
        }
    }
    tracing::warn!(
        "could not remove the sandbox's cgroup {}; remove it with rmdir",
        dir.display()
    );
}

/// Removes the cgroup folders under `parent` that improv processes now dead left (a crash, a
/// SIGKILL), killing what still runs in them. Only folders owned by improv's uid whose name
/// improv made and whose creator is gone ([`Owner::is_dead`]). How many were removed.
pub fn sweep(parent: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let v2 = parent.join("cgroup.controllers").exists();
    let uid = rustix::process::geteuid().as_raw();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let dead = name
            .to_str()
            .and_then(|n| Owner::parse(n, PREFIX))
            .is_some_and(|o| o.is_dead());
        // Judged by name first: a worker's own live performances (thousands) cost no stat.
        if dead && entry.metadata().is_ok_and(|m| m.is_dir() && m.uid() == uid) {
            remove(&entry.path(), v2);
            removed += usize::from(!entry.path().exists());
        }
    }
    removed
}

/// improv's own cgroup in the hierarchy with `controller`, and whether it is v2. Read once per
/// process: mountinfo grows with every sandbox's mounts, so a worker building a sandbox per
/// performance would read it whole each time (what is mounted where cgroups are does not
/// change under a running improv).
pub fn locate(controller: Controller) -> Option<(PathBuf, bool)> {
    static PIDS: OnceLock<Option<(PathBuf, bool)>> = OnceLock::new();
    static MEMORY: OnceLock<Option<(PathBuf, bool)>> = OnceLock::new();
    let cell = match controller {
        Controller::Pids => &PIDS,
        Controller::Memory => &MEMORY,
    };
    cell.get_or_init(|| read_location(controller)).clone()
}

fn read_location(controller: Controller) -> Option<(PathBuf, bool)> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let name = controller.name();
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
                .is_some_and(|o| o.split(',').any(|o| o == name))
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
                let has = std::fs::read_to_string(dir.join("cgroup.controllers"))
                    .is_ok_and(|c| c.split_whitespace().any(|c| c == name));
                if has {
                    return Some((dir, true));
                }
            }
        } else if controllers.split(',').any(|c| c == name)
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
