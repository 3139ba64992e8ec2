//! Hiding the workspace's secret files from sandboxed processes. Landlock grants the workspace
//! as a whole and cannot carve a subpath out of it, so each command starts in a user and mount
//! namespace of its own where every hidden file (`.env`, `*.pem`, ... as the edges say) found in
//! the workspace is covered by an empty, unreadable, read-only file, and every hidden folder by
//! an empty one. The mounts exist only in that command's namespace; seccomp then denies
//! `mount`, `umount2`, `unshare` and `setns`, and `exec` drops every capability, so the command
//! cannot uncover them.
//!
//! The workspace is scanned when the sandbox is built ([`scan`]); what an actor writes later under
//! a hidden name is its own and stays readable to it.

use crate::policy::PathGlob;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use rustix::mount::{MountFlags, MountPropagationFlags};
use rustix::thread::UnshareFlags;
use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How deep the scan for hidden files goes below the workspace.
pub const SCAN_DEPTH: usize = 16;
/// How many entries the scan looks at, at most.
pub const SCAN_ENTRIES: usize = 100_000;
/// How many hidden paths are covered, at most.
pub const MAX_COVERS: usize = 1_000;
/// Folders the scan does not enter: build output, dependencies and git's internals hold no
/// secrets of the project, and are large.
pub const SKIPPED: [&str; 3] = ["target", "node_modules", ".git"];

/// What a scan of the workspace found.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// Hidden paths to cover: (absolute path, is a folder).
    pub hidden: Vec<(PathBuf, bool)>,
    /// Whether the scan stopped at a bound ([`SCAN_DEPTH`], [`SCAN_ENTRIES`], [`MAX_COVERS`]).
    pub truncated: bool,
}

/// Finds the hidden files and folders in `workspace`: no ignore files honored (a `.env` is
/// usually git-ignored), symlinks not followed (a link's target is judged by its own name),
/// [`SKIPPED`] folders not entered, a hidden folder covered whole.
pub fn scan(workspace: &Path, globs: &[PathGlob]) -> Scan {
    if globs.is_empty() {
        return Scan::default();
    }
    let found: Arc<Mutex<Vec<(PathBuf, bool)>>> = Arc::default();
    let root = workspace.to_path_buf();
    let (globs, sink) = (globs.to_vec(), found.clone());
    let walk = ignore::WalkBuilder::new(workspace)
        .standard_filters(false)
        .follow_links(false)
        .max_depth(Some(SCAN_DEPTH))
        .filter_entry(move |entry| {
            if entry.depth() == 0 {
                return true;
            }
            let Some(kind) = entry.file_type() else {
                return false;
            };
            if kind.is_symlink() {
                return false;
            }
            let is_dir = kind.is_dir();
            if is_dir && SKIPPED.iter().any(|s| entry.file_name() == *s) {
                return false;
            }
            let rel = entry.path().strip_prefix(&root).unwrap_or(entry.path());
            if (kind.is_file() || is_dir) && globs.iter().any(|g| g.matches(rel)) {
                // A poisoned lock still holds a valid list.
                let mut found = sink.lock().unwrap_or_else(|e| e.into_inner());
                found.push((entry.path().to_path_buf(), is_dir));
                // Covered whole: nothing inside needs a look.
                return false;
            }
            is_dir
        })
        .build();
    let mut truncated = false;
    for (seen, entry) in walk.enumerate() {
        if seen >= SCAN_ENTRIES {
            truncated = true;
            break;
        }
        if let Ok(entry) = entry
            && entry.depth() == SCAN_DEPTH
            && entry.file_type().is_some_and(|t| t.is_dir())
        {
            truncated = true;
        }
    }
    let mut hidden = std::mem::take(&mut *found.lock().unwrap_or_else(|e| e.into_inner()));
    if hidden.len() > MAX_COVERS {
        hidden.truncate(MAX_COVERS);
        truncated = true;
    }
    Scan { hidden, truncated }
}

/// The empty, unreadable file and folder that cover hidden paths, in a private folder outside
/// the workspace and the sandbox's temp dir. The folder can be searched by anyone (the covers
/// are mounted by the command's own uid, which may be `run_as`), not listed.
pub struct Covers {
    /// Removed with the sandbox.
    _dir: tempfile::TempDir,
    file: CString,
    folder: CString,
    /// A file the availability probe covers.
    probe: CString,
}

impl Covers {
    pub fn new() -> io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("improv-covers-")
            .tempdir()?;
        let base = dir.path().canonicalize()?;
        let file = base.join("file");
        std::fs::write(&file, b"")?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000))?;
        let folder = base.join("folder");
        std::fs::create_dir(&folder)?;
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o000))?;
        let probe = base.join("probe");
        std::fs::write(&probe, b"probe")?;
        std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o644))?;
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o711))?;
        Ok(Covers {
            _dir: dir,
            file: c_path(&file)?,
            folder: c_path(&folder)?,
            probe: c_path(&probe)?,
        })
    }
}

pub fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// Absolute paths to cover, and whether each is a folder, ready for the child.
pub type Targets = Arc<Vec<(CString, bool)>>;

/// What the child does to enter its namespaces, prepared before `fork`.
pub struct Plan {
    /// `"uid uid 1"`: the command's uid maps to itself (no privilege is gained; files keep
    /// their owners).
    pub uid_map: Vec<u8>,
    pub gid_map: Vec<u8>,
    pub file: CString,
    pub folder: CString,
    /// Absolute paths to cover, and whether each is a folder.
    pub targets: Targets,
}

impl Plan {
    pub fn new(uid: u32, gid: u32, covers: &Covers, targets: Targets) -> Self {
        Plan {
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
            file: covers.file.clone(),
            folder: covers.folder.clone(),
            targets,
        }
    }
}

/// A step of [`enter`] that failed, and why.
pub type Failed = (&'static CStr, Errno);

/// Runs in the forked child before `exec`: system calls only, no allocation (the paths and map
/// lines were built before `fork`). Enters a new user and mount namespace, maps the uid and gid
/// to themselves, makes every mount private and covers each target. A target that is gone, or
/// that the command could not reach anyway, is skipped; any other failure fails the command.
pub fn enter(plan: &Plan) -> Result<(), Failed> {
    // A uid changed by `run_as` leaves the process undumpable, and /proc/self then belongs
    // to root: the maps could not be written. `exec` sets it again from the program.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::Dumpable)
        .map_err(|e| (c"prctl(PR_SET_DUMPABLE)", e))?;
    // SAFETY: the child is single-threaded and shares no file table or fs info with another
    // process (`fork` copied them); only the namespaces change.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNS) }
        .map_err(|e| (c"unshare(CLONE_NEWUSER | CLONE_NEWNS)", e))?;
    write_proc(c"/proc/self/setgroups", b"deny")?;
    write_proc(c"/proc/self/uid_map", &plan.uid_map)?;
    write_proc(c"/proc/self/gid_map", &plan.gid_map)?;
    rustix::mount::mount_change(
        c"/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| (c"making mounts private", e))?;
    for (target, is_dir) in plan.targets.iter() {
        let cover = if *is_dir { &plan.folder } else { &plan.file };
        cover_one(cover, target)?;
    }
    Ok(())
}

fn cover_one(cover: &CStr, target: &CStr) -> Result<(), Failed> {
    match rustix::mount::mount_bind(cover, target) {
        Ok(()) => {}
        // Gone since the scan, or out of the command's reach (so unreadable to it anyway).
        Err(Errno::NOENT | Errno::ACCESS) => return Ok(()),
        Err(e) => return Err((c"covering a hidden path", e)),
    }
    // Read-only, so neither the cover's mode nor its contents can be changed through it.
    rustix::mount::mount_remount(
        target,
        MountFlags::BIND
            | MountFlags::RDONLY
            | MountFlags::NOSUID
            | MountFlags::NODEV
            | MountFlags::NOEXEC,
        c"",
    )
    .map_err(|e| (c"making a cover read-only", e))
}

fn write_proc(path: &'static CStr, data: &[u8]) -> Result<(), Failed> {
    let fd = rustix::fs::open(path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| (path, e))?;
    match rustix::io::write(&fd, data) {
        Ok(n) if n == data.len() => Ok(()),
        Ok(_) => Err((path, Errno::IO)),
        Err(e) => Err((path, e)),
    }
}

/// Whether this kernel lets a command of `uid`/`gid` (`run_as`, or improv's own) enter the
/// namespaces and cover a file: a forked child tries it on the probe file and exits. `Err` says
/// which step failed and why (user namespaces disabled, or without the right to mount).
pub fn probe(covers: &Covers, run_as: Option<(u32, u32)>) -> Result<(), String> {
    let (uid, gid) = run_as.unwrap_or_else(|| {
        (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        )
    });
    let target = covers.probe.clone();
    let plan = Plan::new(uid, gid, covers, Arc::new(vec![(target.clone(), false)]));
    let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the child only makes system calls (setgid, setuid, those of `enter`, write and
    // _exit) on memory prepared before the fork, which is what is safe in the child of a
    // multi-threaded process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(reader);
        let result = (|| -> Result<(), Failed> {
            if let Some((uid, gid)) = run_as {
                // SAFETY: plain system calls with integer arguments.
                if unsafe { libc::setgid(gid) } != 0 || unsafe { libc::setuid(uid) } != 0 {
                    return Err((c"setuid to run_as", Errno::PERM));
                }
            }
            enter(&plan)?;
            // The probe file must now be the cover.
            let seen = rustix::fs::stat(target.as_c_str()).map_err(|e| (c"stat", e))?;
            let cover = rustix::fs::stat(plan.file.as_c_str()).map_err(|e| (c"stat", e))?;
            if (seen.st_dev, seen.st_ino) == (cover.st_dev, cover.st_ino) {
                Ok(())
            } else {
                Err((c"covering the probe file", Errno::EXIST))
            }
        })();
        let code = match result {
            Ok(()) => 0,
            Err((step, errno)) => {
                let raw = errno.raw_os_error().to_ne_bytes();
                let _ = rustix::io::write(&writer, &raw);
                let _ = rustix::io::write(&writer, step.to_bytes());
                1
            }
        };
        // SAFETY: leaves the child at once, without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    drop(writer);
    let mut status = 0;
    // SAFETY: waits for the child we just forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let mut message = Vec::new();
    let mut buf = [0u8; 256];
    while let Ok(n) = rustix::io::read(&reader, &mut buf) {
        if n == 0 {
            break;
        }
        message.extend_from_slice(&buf[..n]);
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        return Ok(());
    }
    if message.len() < 4 {
        return Err(format!("the probe process failed (status {status})"));
    }
    let errno = i32::from_ne_bytes([message[0], message[1], message[2], message[3]]);
    Err(format!(
        "{}: {}",
        String::from_utf8_lossy(&message[4..]),
        io::Error::from_raw_os_error(errno)
    ))
}
