//! What a sandbox leaves on the machine while it lives — its private temp dir (`HOME` and
//! `TMPDIR` of every command, a size-limited tmpfs where improv may mount one) and its cgroups —
//! and the cleanup of what a crashed improv left behind.
//!
//! Every such name carries its creator: `improv-sandbox-<pidns>-<pid>-<start>-…`, the pid
//! namespace's inode, the pid and the process's start time (clock ticks since boot, so a reused
//! pid is told apart). [`Owner::is_dead`] says whether that process is gone; what dead owners
//! left is removed ([`sweep_temp`], and `cgroup::sweep` for cgroups) by [`sweep_leftovers`]:
//! once when a process builds its first sandbox, then every [`SWEEP_EVERY`] in the background.
//! Not at every sandbox: a sweep lists the whole temp folder and cgroup folders, which hold one
//! entry per live sandbox, so a worker starting performances while thousands wait paid for
//! every waiting one at every start. Only names
//! under improv's own prefixes are looked at, only those made in improv's own pid namespace, and
//! in the temp folder only folders owned by improv's own uid; anything else is left alone.

use crate::cgroup::Controller;
use std::ffi::CString;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How often a process that builds sandboxes sweeps again after its first sweep: what a crashed
/// sibling worker left is gone within this time.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10 * 60);

/// How many sweeps this process has run ([`sweeps_run`]).
static SWEEPS: AtomicUsize = AtomicUsize::new(0);

/// The prefix of the temp dirs and cgroups sandboxes make.
pub const PREFIX: &str = "improv-sandbox-";

/// The prefixes of the temp folders the sweep looks at ([`PREFIX`] and the hidden-file covers).
const TEMP_PREFIXES: [&str; 2] = [PREFIX, "improv-covers-"];

/// Who made a temp dir or cgroup: the fields of its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pidns: u64,
    pid: u32,
    start: u64,
}

impl Owner {
    /// This process.
    pub fn me() -> &'static Owner {
        static ME: OnceLock<Owner> = OnceLock::new();
        ME.get_or_init(|| {
            let pid = std::process::id();
            Owner {
                pidns: own_pidns().unwrap_or(0),
                pid,
                start: start_time(pid).unwrap_or(0),
            }
        })
    }

    /// `<pidns>-<pid>-<start>-`: what follows a prefix in a name.
    pub fn tag(&self) -> String {
        format!("{}-{}-{}-", self.pidns, self.pid, self.start)
    }

    /// The owner written in `name` after `prefix`; `None` for a name improv did not make.
    pub fn parse(name: &str, prefix: &str) -> Option<Owner> {
        let mut fields = name.strip_prefix(prefix)?.splitn(4, '-');
        let owner = Owner {
            pidns: fields.next()?.parse().ok()?,
            pid: fields.next()?.parse().ok()?,
            start: fields.next()?.parse().ok()?,
        };
        fields.next()?;
        Some(owner)
    }

    /// Whether this owner is an improv process of this pid namespace that is gone: its pid is
    /// free, or taken by a process that started at another time. An owner from another pid
    /// namespace, or one whose start time was unknown, is never judged dead.
    pub fn is_dead(&self) -> bool {
        let me = Owner::me();
        if self.pidns != me.pidns || self.pidns == 0 || self.start == 0 || self == me {
            return false;
        }
        match start_time(self.pid) {
            Some(start) => start != self.start,
            None => !Path::new(&format!("/proc/{}", self.pid)).exists(),
        }
    }
}

/// The inode of this process's pid namespace.
fn own_pidns() -> Option<u64> {
    std::fs::metadata("/proc/self/ns/pid").ok().map(|m| m.ino())
}

/// When `pid` started, in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last `)`.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The private temp dir of one sandbox: `<tmp>/improv-sandbox-<owner>-<random>/home`, the outer
/// folder owned by improv, `home` handed to the command's uid. Where improv may mount (root), a
/// tmpfs of `size` bytes is mounted on `home`, so what commands write there is bounded; it is
/// unmounted and everything removed when dropped.
#[derive(Debug)]
pub struct TempDir {
    /// Removed (with `home`) when dropped, after `home` is unmounted.
    _outer: tempfile::TempDir,
    home: PathBuf,
    /// Whether a tmpfs is mounted on `home`.
    mounted: bool,
}

/// How the private temp dir's size is bounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TempSpace {
    /// No bound was asked for ([`crate::Limits::temp_bytes`] is `None`).
    Unbounded,
    /// A tmpfs of at most this many bytes (its pages also count in the memory cgroup).
    Tmpfs(u64),
    /// A bound was asked for but no tmpfs could be mounted: only `RLIMIT_FSIZE` per file holds.
    NotEnforced { reason: String },
}

impl TempDir {
    /// Makes the temp dir, owned by `owner` (`run_as`) when given, with a tmpfs of `size` bytes
    /// on it where possible.
    pub fn new(size: Option<u64>, owner: Option<(u32, u32)>) -> io::Result<(Self, TempSpace)> {
        let outer = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}{}", Owner::me().tag()))
            .tempdir()?;
        let home = outer.path().canonicalize()?.join("home");
        std::fs::create_dir(&home)?;
        if owner.is_some() {
            // The command's uid must reach `home` through the outer folder, not list it.
            std::fs::set_permissions(outer.path(), std::fs::Permissions::from_mode(0o711))?;
        }
        let space = match size {
            None => TempSpace::Unbounded,
            Some(bytes) => match mount_tmpfs(&home, bytes, owner) {
                Ok(()) => TempSpace::Tmpfs(bytes),
                Err(e) => TempSpace::NotEnforced {
                    reason: format!("cannot mount a tmpfs on it: {e}"),
                },
            },
        };
        // Built before anything else can fail, so that dropping it unmounts the tmpfs.
        let dir = TempDir {
            _outer: outer,
            home,
            mounted: matches!(space, TempSpace::Tmpfs(_)),
        };
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&dir.home, Some(uid), Some(gid))?;
        }
        Ok((dir, space))
    }

    /// `HOME` and `TMPDIR` of the commands.
    pub fn path(&self) -> &Path {
        &self.home
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.mounted
            && let Err(e) = unmount(&self.home)
        {
            tracing::warn!(
                "could not unmount the sandbox's temp dir {}: {e}; unmount it with `umount -l`",
                self.home.display()
            );
        }
        // `_outer` drops after this, removing the folder.
    }
}

/// Mounts a tmpfs of `bytes` (no devices, no setuid) on `dir`, owned by `owner` or improv.
fn mount_tmpfs(dir: &Path, bytes: u64, owner: Option<(u32, u32)>) -> io::Result<()> {
    use rustix::mount::{MountFlags, mount};
    let (uid, gid) = owner.unwrap_or_else(|| {
        (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        )
    });
    let options = CString::new(format!("size={bytes},mode=0700,uid={uid},gid={gid}"))
        .map_err(io::Error::other)?;
    mount(
        c"improv-sandbox",
        dir,
        c"tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(options.as_c_str()),
    )
    .map_err(io::Error::from)
}

/// Detaches the mount on `dir`.
fn unmount(dir: &Path) -> io::Result<()> {
    rustix::mount::unmount(dir, rustix::mount::UnmountFlags::DETACH).map_err(io::Error::from)
}

/// Sweeps what crashed improv processes left (temp folders and cgroups) the first time it is
/// called in a process, and starts a thread that sweeps again every [`SWEEP_EVERY`]; later
/// calls do nothing. Called by every sandbox built, so the first one finds a clean machine.
pub fn sweep_leftovers() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        sweep_all();
        let periodic = std::thread::Builder::new()
            .name("improv-sweep".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(SWEEP_EVERY);
                    sweep_all();
                }
            });
        if let Err(e) = periodic {
            tracing::warn!(
                "cannot start the periodic sweep of crashed sandboxes' leftovers: {e}; \
                 they are swept again when improv restarts"
            );
        }
    });
}

/// How many sweeps ([`sweep_leftovers`]) this process has run.
pub fn sweeps_run() -> usize {
    SWEEPS.load(Ordering::Relaxed)
}

/// One sweep: the temp folder, then improv's cgroup in each hierarchy it has one in.
fn sweep_all() {
    SWEEPS.fetch_add(1, Ordering::Relaxed);
    sweep_temp();
    let mut parents: Vec<PathBuf> = Vec::new();
    for controller in [Controller::Pids, Controller::Memory] {
        if let Some((parent, _)) = crate::cgroup::locate(controller)
            && !parents.contains(&parent)
        {
            crate::cgroup::sweep(&parent);
            parents.push(parent);
        }
    }
}

/// Removes the temp folders ([`TEMP_PREFIXES`]) that improv processes now dead left in the
/// temp folder (a crash, a SIGKILL): unmounts a tmpfs left on them, then removes them. Only
/// real folders owned by improv's uid whose name parses; symlinks inside are removed, not
/// followed. How many were removed.
pub fn sweep_temp() -> usize {
    let tmp = std::env::temp_dir();
    let Ok(entries) = std::fs::read_dir(&tmp) else {
        return 0;
    };
    let uid = rustix::process::geteuid().as_raw();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let dead = TEMP_PREFIXES
            .iter()
            .filter_map(|p| Owner::parse(name, p))
            .any(|o| o.is_dead());
        let path = entry.path();
        // Judged by name first: a worker's own live sandboxes (thousands) cost no stat.
        if !dead
            || !path
                .symlink_metadata()
                .is_ok_and(|m| m.is_dir() && m.uid() == uid)
        {
            continue;
        }
        // A tmpfs a crashed sandbox left mounted on its `home`; EINVAL where there is none.
        let _ = unmount(&path.join("home"));
        match std::fs::remove_dir_all(&path) {
            Ok(()) => removed += 1,
            Err(e) => tracing::warn!(
                "could not remove {}, left by a crashed improv: {e}",
                path.display()
            ),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owner_round_trips_through_a_name() {
        let me = Owner::me();
        let name = format!("{PREFIX}{}abc123", me.tag());
        assert_eq!(Owner::parse(&name, PREFIX).as_ref(), Some(me));
        assert!(!me.is_dead(), "this process is alive");
        assert_eq!(Owner::parse("improv-sandbox-abc", PREFIX), None);
        assert_eq!(Owner::parse("other-1-2-3-x", PREFIX), None);
    }

    #[test]
    fn an_owner_whose_process_is_gone_or_reused_is_dead() {
        let me = Owner::me();
        let reused = Owner {
            start: me.start + 1,
            ..me.clone()
        };
        assert!(reused.is_dead());
        let gone = Owner {
            pid: u32::MAX - 1,
            ..me.clone()
        };
        assert!(gone.is_dead());
        let elsewhere = Owner {
            pidns: me.pidns + 1,
            pid: u32::MAX - 1,
            ..me.clone()
        };
        assert!(!elsewhere.is_dead(), "another pid namespace is not judged");
    }
}
