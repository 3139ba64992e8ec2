//! Changing a routine's file safely while others change it too: a worker noting a match or
//! retiring a routine, another worker, the server, and the director (`improv routines approve`,
//! a text editor) all write `routines/NAME.toml`. [`update`] takes the routines' lock (`flock`
//! on `.improv/routines.lock` beside `routines/`), reads the file as it is now, lets the caller
//! decide on that, writes the result to a temporary file and renames it over the routine's, but
//! only when the file still holds what was read (an editor does not take the lock); otherwise it
//! reads again and decides again. The lock is a file opened for writing, not the folder: NFS
//! emulates `flock` with a byte-range lock that needs a writable descriptor, and CIFS refuses a
//! folder's. Where the file system has no locks at all the content check alone guards the write.
//! Written here over `libc::flock` because the workspace's minimum Rust predates `File::lock`.

use crate::RoutineError;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// How many times [`update`] reads again when the file changed under it before giving up.
const ATTEMPTS: usize = 64;

/// The routines' lock file, in the stage's state folder (never among the routines, which the
/// director reads and may keep in version control).
pub(crate) const LOCK_FILE: &str = "routines.lock";

/// The exclusive lock on the routines, released when dropped (the descriptor closes); `None`
/// where the file system takes no locks.
struct Locked {
    _file: Option<File>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> RoutineError + '_ {
    move |e| RoutineError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Where the lock of the routines in `dir` lives: `.improv/routines.lock` beside `dir` when
/// `dir` is a stage's `routines/`; a hidden file in `dir` otherwise (a folder written on its
/// own, as tests and exports do, has no stage state folder).
pub(crate) fn lock_path(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(stage) if dir.file_name().is_some_and(|n| n == crate::routine::DIR) => {
            stage.join(improv_stage::STATE_DIR).join(LOCK_FILE)
        }
        _ => dir.join(format!(".{LOCK_FILE}")),
    }
}

/// Whether `flock` failing with `e` means the file system takes no locks (NFS without a lock
/// daemon, some CIFS and FUSE mounts) rather than a fault to report.
fn unsupported(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::ENOLCK | libc::EOPNOTSUPP | libc::EINVAL)
    )
}

/// Waits for the routines' lock (see [`lock_path`]).
fn lock(dir: &Path) -> Result<Locked, RoutineError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = lock_path(dir);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io(&path))?;
    loop {
        // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            return Ok(Locked { _file: Some(file) });
        }
        let e = std::io::Error::last_os_error();
        if unsupported(&e) {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    lock = %path.display(),
                    "the file system takes no locks ({e}); routine files are written with the content check alone"
                );
            }
            return Ok(Locked { _file: None });
        }
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(io(&path)(e));
        }
    }
}

/// Whether `name` can be a routine's file name, `routines/NAME.toml`: `Err` says why not. The
/// one check every name passes before it becomes a path ([`update`], [`create`]; a routine's
/// file is refused at read with the same words).
pub(crate) fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        Err("it is empty")
    } else if name.contains('/') {
        Err("it contains `/`")
    } else if name.contains('\0') {
        Err("it contains a NUL byte")
    } else if name.starts_with('.') {
        Err("it starts with `.` (`..` would leave the folder; other names would be hidden)")
    } else if name.len() > MAX_NAME {
        Err("it is longer than 200 bytes")
    } else {
        Ok(())
    }
}

/// The longest routine name: a file name (255 bytes) less `.toml` and the temporary suffix.
const MAX_NAME: usize = 200;

fn bad_name(dir: &Path, name: &str) -> impl Fn(&'static str) -> RoutineError {
    let name = name.to_string();
    let dir = dir.to_path_buf();
    move |reason| RoutineError::BadName {
        name: name.clone(),
        dir: dir.clone(),
        reason,
    }
}

/// Runs `f` holding the routines' lock of `dir` (see [`lock_path`]); `f` may [`create`].
pub(crate) fn locked<T>(
    dir: &Path,
    f: impl FnOnce() -> Result<T, RoutineError>,
) -> Result<T, RoutineError> {
    let _locked = lock(dir)?;
    f()
}

/// Writes `text` as the new file `dir/NAME.toml`, only if there is none; `Ok(false)` when there
/// is. The caller holds the lock ([`locked`]).
pub(crate) fn create(dir: &Path, name: &str, text: &str) -> Result<bool, RoutineError> {
    check_name(name).map_err(bad_name(dir, name))?;
    let path = dir.join(format!("{name}.toml"));
    if read(&path)?.is_some() {
        return Ok(false);
    }
    let tmp = temporary(dir, name);
    replace(&tmp, text, &path, None).inspect_err(|_| {
        // Nothing half-written is left among the routines.
        let _ = std::fs::remove_file(&tmp);
    })
}

/// A temporary file name beside `path` no other writer uses at the same time.
fn temporary(dir: &Path, name: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}.toml.{}.{n}.tmp", std::process::id()))
}

/// The file's bytes, `None` when there is none.
fn read(path: &Path) -> Result<Option<Vec<u8>>, RoutineError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path)(e)),
    }
}

/// Writes `text` to `tmp` and renames it over `path` if `path` still holds `before`;
/// `Ok(false)` (and no temporary file left) when it does not.
fn replace(
    tmp: &Path,
    text: &str,
    path: &Path,
    before: Option<&[u8]>,
) -> Result<bool, RoutineError> {
    std::fs::write(tmp, text).map_err(io(tmp))?;
    if read(path)?.as_deref() != before {
        let _ = std::fs::remove_file(tmp);
        return Ok(false);
    }
    std::fs::rename(tmp, path).map_err(io(path))?;
    Ok(true)
}

/// What [`update`]'s caller decides from the file's content now (`None`: there is no file).
pub(crate) enum Decision {
    /// Leave the file as it is.
    Keep,
    /// Replace it with this text.
    Write(String),
}

/// Runs `decide` on the bytes `dir/NAME.toml` holds now and writes what it decides, under the
/// file's lock and only over the bytes it decided on (see the module doc).
pub(crate) fn update(
    dir: &Path,
    name: &str,
    mut decide: impl FnMut(Option<&[u8]>) -> Result<Decision, RoutineError>,
) -> Result<PathBuf, RoutineError> {
    check_name(name).map_err(bad_name(dir, name))?;
    let path = dir.join(format!("{name}.toml"));
    let _locked = lock(dir)?;
    for _ in 0..ATTEMPTS {
        let before = read(&path)?;
        let Decision::Write(text) = decide(before.as_deref())? else {
            return Ok(path);
        };
        let tmp = temporary(dir, name);
        // A writer that does not take the lock (an editor) may have saved meanwhile: then
        // its version is read and decided on again rather than replaced.
        match replace(&tmp, &text, &path, before.as_deref()) {
            Ok(true) => return Ok(path),
            Ok(false) => {}
            Err(e) => {
                // Nothing half-written is left among the routines.
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
    }
    Err(RoutineError::Io {
        path,
        message: format!(
            "the file kept changing while it was being written ({ATTEMPTS} tries); stop the program rewriting it and try again"
        ),
    })
}
