//! Opening one path beneath a directory fd: `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`
//! where the kernel has it, else (and for absolute symlinks that point back inside, which
//! `RESOLVE_BENEATH` refuses outright) a walk one component at a time from held directory fds.
//!
//! The walk opens every component with `O_NOFOLLOW` relative to the folder fd it already holds,
//! and follows a symlink only by reading it and interpreting its target itself: a relative
//! target against the folders it holds (`..` above the root is refused), an absolute one only
//! when it names a path under the root. Nothing is ever looked up by name from the top again, so
//! a folder swapped for a symlink between two steps is seen as the symlink it now is.

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicU8, Ordering};

/// How many symlinks one open may follow (the kernel's own limit).
pub(crate) const MAX_SYMLINKS: usize = 40;

/// How often an `openat2` that a concurrent rename interrupted (`EAGAIN`) is tried again before
/// the walk takes over.
const RETRIES: usize = 8;

/// How a path is opened beneath the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS` (Linux 5.6 and later), the walk
    /// for what it refuses that may still be inside.
    Openat2,
    /// The component-by-component walk only, for kernels without `openat2`.
    Walk,
}

/// Why an open beneath the root did not happen.
#[derive(Debug)]
pub(crate) enum Denied {
    /// A symlink (or `..` in one) leads outside the root.
    Leaves,
    Io(std::io::Error),
}

impl From<Errno> for Denied {
    fn from(e: Errno) -> Self {
        Denied::Io(e.into())
    }
}

/// Whether this kernel has `openat2`: unknown (0), yes (1), no (2). Probed once.
static OPENAT2: AtomicU8 = AtomicU8::new(0);

/// The method this kernel allows: `openat2` unless it is missing or filtered out.
pub(crate) fn detect() -> Method {
    let known = OPENAT2.load(Ordering::Relaxed);
    if known == 0 {
        let probe = rustix::fs::openat2(
            rustix::fs::CWD,
            "/",
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::empty(),
        );
        // ENOSYS: an old kernel; EPERM: a seccomp filter that forbids it (older containers).
        let has = !matches!(probe, Err(Errno::NOSYS) | Err(Errno::PERM));
        OPENAT2.store(if has { 1 } else { 2 }, Ordering::Relaxed);
        return if has { Method::Openat2 } else { Method::Walk };
    }
    if known == 1 {
        Method::Openat2
    } else {
        Method::Walk
    }
}

/// Opens `rel` (relative, lexically normal: no `.` or `..`) beneath `root`, whose real path is
/// `root_path`, with `flags`. Symlinks are followed while they stay beneath the root.
pub(crate) fn open(
    method: Method,
    root: BorrowedFd<'_>,
    root_path: &Path,
    rel: &Path,
    flags: OFlags,
) -> Result<OwnedFd, Denied> {
    if method == Method::Openat2 {
        let path = if rel.as_os_str().is_empty() {
            Path::new(".")
        } else {
            rel
        };
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
        for _ in 0..RETRIES {
            match rustix::fs::openat2(root, path, flags | OFlags::CLOEXEC, Mode::empty(), resolve) {
                Ok(fd) => return Ok(fd),
                // A rename raced the lookup of `..`: the kernel asks to try again.
                Err(Errno::AGAIN) => continue,
                // It leaves, or it is an absolute symlink that may point back inside: the walk
                // tells which.
                Err(Errno::XDEV) => break,
                Err(Errno::NOSYS) => {
                    OPENAT2.store(2, Ordering::Relaxed);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    walk(root, root_path, rel, flags)
}

/// The component-by-component open (see the module doc).
fn walk(
    root: BorrowedFd<'_>,
    root_path: &Path,
    rel: &Path,
    flags: OFlags,
) -> Result<OwnedFd, Denied> {
    let mut pending: VecDeque<OsString> = parts(rel).collect();
    // The folders descended into, innermost last; empty means the root.
    let mut held: Vec<OwnedFd> = Vec::new();
    let mut links = 0;
    loop {
        let at = held.last().map_or(root, |fd| fd.as_fd());
        let Some(name) = pending.pop_front() else {
            return Ok(rustix::fs::openat(
                at,
                ".",
                flags | OFlags::CLOEXEC,
                Mode::empty(),
            )?);
        };
        if name == "." {
            continue;
        }
        if name == ".." {
            if held.pop().is_none() {
                return Err(Denied::Leaves);
            }
            continue;
        }
        let last = pending.is_empty();
        let step = if last {
            flags | OFlags::NOFOLLOW
        } else {
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW
        };
        let target = match rustix::fs::openat(at, &*name, step | OFlags::CLOEXEC, Mode::empty()) {
            // With O_PATH | O_NOFOLLOW a symlink opens as itself: read it through its own fd.
            Ok(fd) if is_symlink(&fd)? => rustix::fs::readlinkat(&fd, "", Vec::new())?,
            Ok(fd) if last => return Ok(fd),
            Ok(fd) => {
                held.push(fd);
                continue;
            }
            // A symlink where O_NOFOLLOW or O_DIRECTORY stopped; anything else keeps its error.
            Err(e @ (Errno::LOOP | Errno::NOTDIR)) => {
                rustix::fs::readlinkat(at, &*name, Vec::new()).map_err(|_| Denied::from(e))?
            }
            Err(e) => return Err(e.into()),
        };
        links += 1;
        if links > MAX_SYMLINKS {
            return Err(Errno::LOOP.into());
        }
        let target = Path::new(OsStr::from_bytes(target.as_bytes()));
        let front: Vec<OsString> = if target.is_absolute() {
            let normal = crate::normalize(target);
            let Ok(inside) = normal.strip_prefix(root_path) else {
                return Err(Denied::Leaves);
            };
            held.clear();
            parts(inside).collect()
        } else {
            parts(target).collect()
        };
        for part in front.into_iter().rev() {
            pending.push_front(part);
        }
    }
}

/// The names of `path`'s components, `.` and `..` kept as they are.
fn parts(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(n) => Some(n.to_os_string()),
        Component::ParentDir => Some("..".into()),
        Component::CurDir => Some(".".into()),
        Component::RootDir | Component::Prefix(_) => None,
    })
}

fn is_symlink(fd: &OwnedFd) -> Result<bool, Denied> {
    let stat = rustix::fs::fstat(fd)?;
    Ok(FileType::from_raw_mode(stat.st_mode) == FileType::Symlink)
}
