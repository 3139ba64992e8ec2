//! Changing a routine's file safely while others change it too: a worker noting a match or
//! retiring a routine, another worker, the server, and the director (`improv routines approve`,
//! a text editor) all write `routines/NAME.toml`. [`update`] takes the lock of the `routines/`
//! folder (`flock` on the folder), reads the file as it is now, lets the caller decide on that,
//! writes the result to a temporary file and renames it over the routine's, but only when the
//! file still holds what was read (an editor does not take the lock); otherwise it reads again
//! and decides again. Written here over `libc::flock` because the workspace's minimum Rust
//! predates `File::lock`.

use crate::RoutineError;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// How many times [`update`] reads again when the file changed under it before giving up.
const ATTEMPTS: usize = 64;

/// The exclusive lock on the routines' folder, released when dropped (the descriptor closes).
struct Locked {
    _file: File,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> RoutineError + '_ {
    move |e| RoutineError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Waits for the lock of the routines' folder `dir` (the folder itself is locked: no lock file
/// is left among the routines, which the director reads and may keep in version control).
fn lock(dir: &Path) -> Result<Locked, RoutineError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.to_path_buf();
    let file = File::open(&path).map_err(io(&path))?;
    loop {
        // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if r == 0 {
            return Ok(Locked { _file: file });
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(io(&path)(e));
        }
    }
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
    let path = dir.join(format!("{name}.toml"));
    let _locked = lock(dir)?;
    for _ in 0..ATTEMPTS {
        let before = read(&path)?;
        let Decision::Write(text) = decide(before.as_deref())? else {
            return Ok(path);
        };
        let tmp = temporary(dir, name);
        std::fs::write(&tmp, text).map_err(io(&tmp))?;
        // A writer that does not take the lock (an editor) may have saved meanwhile: then
        // its version is read and decided on again rather than replaced.
        if read(&path)? != before {
            let _ = std::fs::remove_file(&tmp);
            continue;
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        return Ok(path);
    }
    Err(RoutineError::Io {
        path,
        message: format!(
            "the file kept changing while it was being written ({ATTEMPTS} tries); stop the program rewriting it and try again"
        ),
    })
}
