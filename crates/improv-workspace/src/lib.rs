//! Files beneath a root folder — the workspace, the stage folder, a skills folder — opened so
//! that no symlink, `..` or /proc magic link leads outside it, even while a command the actor
//! left running swaps a folder for a symlink at the moment improv opens a path.
//!
//! A [`Workspace`] holds an open directory fd of its root. Every open is made relative to that
//! fd with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: the kernel resolves the whole path
//! beneath the root in the same call that opens it, so there is no gap between a check and an
//! open for anyone to use. Where `openat2` is missing (Linux before 5.6, or filtered out), and
//! for absolute symlinks that point back inside (which `RESOLVE_BENEATH` refuses outright), the
//! path is walked one component at a time with `O_NOFOLLOW` from held folder fds ([`beneath`]).
//! Writes never follow a symlink at the final component: they go to a temp file in the parent's
//! fd and are renamed into place (`renameat`), and missing parents are made with `mkdirat` on
//! fds opened beneath the root.
//!
//! Why rustix and not cap-std: cap-std does the same underneath (openat2 where it can) but hides
//! *why* an open failed (a symlink that leaves, or a missing file) behind its own error values,
//! and would wrap every std type the props use; improv needs a handful of calls and messages
//! that name the path. rustix is already in the build (through tempfile).
//!
//! [`Workspace::resolve`] stays for what is shown to the model (real paths, relative names); it
//! decides nothing that an open relies on.

mod beneath;

pub use beneath::Method;

use beneath::Denied;
use improv_kernel::PropError;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// What a root folder is, as messages name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Workspace,
    StageFolder,
    SkillsFolder,
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::Workspace => "workspace",
            Scope::StageFolder => "stage folder",
            Scope::SkillsFolder => "skills folder",
        })
    }
}

/// Why a path was refused or could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("the path is empty; give a path relative to the {scope} root")]
    Empty { scope: Scope },
    #[error("`{given}` is outside the {scope} {root}; paths are relative to the {scope} root")]
    Outside {
        given: String,
        scope: Scope,
        root: String,
    },
    #[error(
        "`{given}` leads through a symlink to {real}, outside the {scope} {root}; use a path inside the {scope}"
    )]
    Escapes {
        given: String,
        real: String,
        scope: Scope,
        root: String,
    },
    #[error(
        "`{given}` leads outside the {scope} through a symlink; use a path inside the {scope} {root}"
    )]
    Leaves {
        given: String,
        scope: Scope,
        root: String,
    },
    #[error(
        "`{given}` goes through too many symlinks, or through a /proc magic link, which is refused; use the real path"
    )]
    Loop { given: String },
    #[error("`{given}` is a directory; give a file path")]
    IsDir { given: String },
    #[error("`{given}` is not a regular file (a pipe, socket or device); give a file path")]
    NotAFile { given: String },
    #[error("`{given}`: {source}")]
    Io { given: String, source: io::Error },
    #[error("the {scope} {root} could not be opened: {source}")]
    Root {
        scope: Scope,
        root: String,
        source: io::Error,
    },
}

impl PathError {
    /// Whether the path (or a folder on the way) does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, PathError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

impl From<PathError> for PropError {
    fn from(e: PathError) -> Self {
        PropError::new(e.to_string())
    }
}

/// One entry of a folder: its name and what it is (a symlink is not followed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub name: OsString,
    pub kind: Kind,
}

/// What a folder entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Other,
}

/// A root folder, canonical, held open, and the path logic every reader and writer shares.
#[derive(Clone, Debug)]
pub struct Workspace {
    root: PathBuf,
    dir: Arc<OwnedFd>,
    scope: Scope,
    method: Method,
}

impl Workspace {
    /// Opens the workspace at `root`. The kernel hands over a canonical root; when it is not
    /// (relative, or through a symlink), it is canonicalized here so the checks below hold.
    pub fn new(root: &Path) -> Result<Self, PathError> {
        Self::scoped(root, Scope::Workspace)
    }

    /// Opens another kind of root folder (messages name it by `scope`).
    pub fn scoped(root: &Path, scope: Scope) -> Result<Self, PathError> {
        Self::with_method(root, scope, beneath::detect())
    }

    /// Opens a root that resolves paths by `method` only: the walk can be tested on a kernel that
    /// has `openat2`.
    pub fn with_method(root: &Path, scope: Scope, method: Method) -> Result<Self, PathError> {
        let failed = |source| PathError::Root {
            scope,
            root: root.display().to_string(),
            source,
        };
        let root = root.canonicalize().map_err(failed)?;
        let dir = rustix::fs::open(
            &root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| failed(e.into()))?;
        Ok(Workspace {
            root,
            dir: Arc::new(dir),
            scope,
            method,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// The path argument as a path relative to the root, resolved lexically (`.` and `..`
    /// folded, an absolute path inside the root accepted); `""` for the root itself.
    pub fn relative(&self, given: impl AsRef<Path>) -> Result<PathBuf, PathError> {
        let given = given.as_ref();
        if given.as_os_str().is_empty() {
            return Err(PathError::Empty { scope: self.scope });
        }
        let lexical = normalize(&self.root.join(given));
        match lexical.strip_prefix(&self.root) {
            Ok(rel) => Ok(rel.to_path_buf()),
            Err(_) => Err(self.outside(given)),
        }
    }

    /// Resolves a path argument to a real path inside the root, for showing it. The path need
    /// not exist, but the part of it that exists must not lead outside. An open does not rely on
    /// this: the open itself is made beneath the root.
    pub fn resolve(&self, given: impl AsRef<Path>) -> Result<PathBuf, PathError> {
        let given = given.as_ref();
        let lexical = self.root.join(self.relative(given)?);
        let real = real_path(&lexical).map_err(|source| PathError::Io {
            given: given.display().to_string(),
            source,
        })?;
        if !real.starts_with(&self.root) {
            return Err(PathError::Escapes {
                given: given.display().to_string(),
                real: real.display().to_string(),
                scope: self.scope,
                root: self.root.display().to_string(),
            });
        }
        Ok(real)
    }

    /// The path as the model should see it: relative to the root, `.` for the root itself.
    pub fn display<'a>(&self, path: &'a Path) -> std::borrow::Cow<'a, str> {
        match path.strip_prefix(&self.root) {
            Ok(rel) if rel.as_os_str().is_empty() => ".".into(),
            Ok(rel) => rel.to_string_lossy(),
            Err(_) => path.to_string_lossy(),
        }
    }

    /// Opens `given` for reading, beneath the root. A pipe opens without waiting for a writer.
    pub fn open_read(&self, given: impl AsRef<Path>) -> Result<File, PathError> {
        let given = given.as_ref();
        let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY;
        self.open(given, flags).map(File::from)
    }

    /// Opens the folder `given` for listing or walking, beneath the root.
    pub fn open_dir(&self, given: impl AsRef<Path>) -> Result<File, PathError> {
        let given = given.as_ref();
        self.open(given, OFlags::RDONLY | OFlags::DIRECTORY)
            .map(File::from)
    }

    /// What `given` is (symlinks inside followed), beneath the root.
    pub fn metadata(&self, given: impl AsRef<Path>) -> Result<std::fs::Metadata, PathError> {
        let given = given.as_ref();
        let file = File::from(self.open(given, OFlags::PATH)?);
        file.metadata().map_err(|source| self.io(given, source))
    }

    /// Whether `given` exists beneath the root; a path that leads outside is an error.
    pub fn exists(&self, given: impl AsRef<Path>) -> Result<bool, PathError> {
        let given = given.as_ref();
        match self.metadata(given) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// At most `max_bytes` of the regular file `given`, read beneath the root.
    pub fn read(&self, given: impl AsRef<Path>, max_bytes: usize) -> Result<Vec<u8>, PathError> {
        let given = given.as_ref();
        let file = self.open_read(given)?;
        let meta = file.metadata().map_err(|e| self.io(given, e))?;
        if meta.is_dir() {
            return Err(PathError::IsDir {
                given: given.display().to_string(),
            });
        }
        if !meta.is_file() {
            return Err(PathError::NotAFile {
                given: given.display().to_string(),
            });
        }
        let mut out = Vec::new();
        file.take(max_bytes as u64)
            .read_to_end(&mut out)
            .map_err(|e| self.io(given, e))?;
        Ok(out)
    }

    /// [`read`](Self::read) as text; invalid UTF-8 becomes U+FFFD.
    pub fn read_to_string(
        &self,
        given: impl AsRef<Path>,
        max_bytes: usize,
    ) -> Result<String, PathError> {
        let given = given.as_ref();
        let bytes = self.read(given, max_bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The entries of the folder `given` (not `.` and `..`), unsorted, symlinks not followed.
    pub fn read_dir(&self, given: impl AsRef<Path>) -> Result<Vec<Entry>, PathError> {
        let given = given.as_ref();
        let fd = self.open(given, OFlags::RDONLY | OFlags::DIRECTORY)?;
        let mut dir = rustix::fs::Dir::new(fd).map_err(|e| self.io(given, e.into()))?;
        let mut out = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(|e| self.io(given, e.into()))?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let mut kind = entry.file_type();
            if kind == FileType::Unknown {
                // Some filesystems leave the type out of the listing: ask, without following.
                let fd = dir.fd().map_err(|e| self.io(given, e.into()))?;
                kind = rustix::fs::statat(fd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW)
                    .map_or(FileType::Unknown, |s| FileType::from_raw_mode(s.st_mode));
            }
            let kind = match kind {
                FileType::RegularFile => Kind::File,
                FileType::Directory => Kind::Dir,
                FileType::Symlink => Kind::Symlink,
                _ => Kind::Other,
            };
            out.push(Entry {
                name: name.to_os_string(),
                kind,
            });
        }
        Ok(out)
    }

    /// Creates or replaces the file `given` with `bytes`, beneath the root: missing folders are
    /// made, the bytes go to a temp file in the same folder and are renamed into place, so a
    /// failure leaves the old file or the new one and a symlink at the end is replaced, never
    /// written through. A symlink there that points inside is followed by name (checked again
    /// beneath the root). An existing file keeps its permission bits (setuid and the like
    /// dropped); a new one gets 0644. Returns the length of the file replaced, `None` when
    /// it was created.
    pub fn write(&self, given: impl AsRef<Path>, bytes: &[u8]) -> Result<Option<u64>, PathError> {
        let given = given.as_ref();
        let rel = self.relative(given)?;
        self.write_at(given, rel, bytes, 0)
    }

    fn write_at(
        &self,
        given: &Path,
        rel: PathBuf,
        bytes: &[u8],
        hops: usize,
    ) -> Result<Option<u64>, PathError> {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return Err(PathError::IsDir {
                given: given.display().to_string(),
            });
        };
        let dir = self.folder(given, parent)?;
        let (mode, before) = match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => {
                    return Err(PathError::IsDir {
                        given: given.display().to_string(),
                    });
                }
                FileType::Symlink => {
                    if hops >= beneath::MAX_SYMLINKS {
                        return Err(PathError::Loop {
                            given: given.display().to_string(),
                        });
                    }
                    let target = rustix::fs::readlinkat(&dir, name, Vec::new())
                        .map_err(|e| self.io(given, e.into()))?;
                    let target = Path::new(OsStr::from_bytes(target.as_bytes()));
                    let next = self.link_target(given, parent, target)?;
                    return self.write_at(given, next, bytes, hops + 1);
                }
                _ => (
                    Mode::from_raw_mode(stat.st_mode & 0o777),
                    Some(stat.st_size as u64),
                ),
            },
            Err(Errno::NOENT) => (Mode::from_raw_mode(0o644), None),
            Err(e) => return Err(self.io(given, e.into())),
        };
        replace(&dir, name, mode, bytes).map_err(|e| self.io(given, e))?;
        Ok(before)
    }

    /// Where the symlink in folder `parent` (relative to the root) with `target` leads, relative
    /// to the root; refused when it leaves.
    fn link_target(
        &self,
        given: &Path,
        parent: &Path,
        target: &Path,
    ) -> Result<PathBuf, PathError> {
        let full = normalize(&self.root.join(parent).join(target));
        match full.strip_prefix(&self.root) {
            Ok(rel) if !rel.as_os_str().is_empty() => Ok(rel.to_path_buf()),
            _ => Err(self.leaves(given)),
        }
    }

    /// The folder `rel` (relative to the root) opened beneath it, made (with its parents) when
    /// missing.
    fn folder(&self, given: &Path, rel: &Path) -> Result<OwnedFd, PathError> {
        let flags = OFlags::PATH | OFlags::DIRECTORY;
        match self.open_rel(given, rel, flags) {
            Err(e) if e.is_not_found() => {
                let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
                    return Err(e);
                };
                let up = self.folder(given, parent)?;
                match rustix::fs::mkdirat(&up, name, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(self.io(given, e.into())),
                }
                self.open_rel(given, rel, flags)
            }
            other => other,
        }
    }

    fn open(&self, given: &Path, flags: OFlags) -> Result<OwnedFd, PathError> {
        let rel = self.relative(given)?;
        self.open_rel(given, &rel, flags)
    }

    fn open_rel(&self, given: &Path, rel: &Path, flags: OFlags) -> Result<OwnedFd, PathError> {
        beneath::open(self.method, self.dir.as_fd(), &self.root, rel, flags).map_err(|d| match d {
            Denied::Leaves => self.leaves(given),
            Denied::Io(e) if e.raw_os_error() == Some(Errno::LOOP.raw_os_error()) => {
                PathError::Loop {
                    given: given.display().to_string(),
                }
            }
            Denied::Io(e) => self.io(given, e),
        })
    }

    fn io(&self, given: &Path, source: io::Error) -> PathError {
        PathError::Io {
            given: given.display().to_string(),
            source,
        }
    }

    fn leaves(&self, given: &Path) -> PathError {
        PathError::Leaves {
            given: given.display().to_string(),
            scope: self.scope,
            root: self.root.display().to_string(),
        }
    }

    fn outside(&self, given: &Path) -> PathError {
        PathError::Outside {
            given: given.display().to_string(),
            scope: self.scope,
            root: self.root.display().to_string(),
        }
    }
}

/// Writes `bytes` to a new temp file in `dir` and renames it over `name`.
fn replace(dir: &OwnedFd, name: &OsStr, mode: Mode, bytes: &[u8]) -> io::Result<()> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let (temp, fd) = loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let temp = format!(".improv-write-{}-{n}", std::process::id());
        match rustix::fs::openat(dir, temp.as_str(), flags, Mode::from_raw_mode(0o600)) {
            Ok(fd) => break (temp, fd),
            // Left over by a crashed improv with the same pid; the next number is free.
            Err(Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut file = File::from(fd);
    let written = rustix::fs::fchmod(&file, mode)
        .map_err(io::Error::from)
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| {
            rustix::fs::renameat(dir, temp.as_str(), dir, name).map_err(io::Error::from)
        });
    if written.is_err() {
        let _ = rustix::fs::unlinkat(dir, temp.as_str(), AtFlags::empty());
    }
    written
}

/// Removes `.` and folds `..` into its parent without touching the filesystem. `..` above `/`
/// stays at `/`, as the kernel does. The one lexical normalization of the workspace's users.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The real path of an absolute, normalized path whose tail may not exist yet: the longest
/// existing ancestor is canonicalized and the rest appended. A dangling symlink is followed by
/// hand. For showing paths only (see [`Workspace::resolve`]).
fn real_path(path: &Path) -> io::Result<PathBuf> {
    let mut path = path.to_path_buf();
    for _ in 0..beneath::MAX_SYMLINKS {
        // Walk up to the longest prefix that exists (lstat, so a dangling link counts).
        let mut existing = path.as_path();
        let mut rest = Vec::new();
        loop {
            match existing.symlink_metadata() {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let (Some(parent), Some(name)) = (existing.parent(), existing.file_name())
                    else {
                        // `/` itself always exists; reaching here means a strange path.
                        return Err(e);
                    };
                    rest.push(name.to_os_string());
                    existing = parent;
                }
                Err(e) => return Err(e),
            }
        }
        match existing.canonicalize() {
            Ok(mut real) => {
                real.extend(rest.iter().rev());
                return Ok(real);
            }
            // The prefix exists but does not resolve: a dangling symlink (or one in a loop).
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let target = existing.read_link()?;
                let base = existing.parent().unwrap_or(Path::new("/"));
                let mut next = normalize(&base.join(target));
                next.extend(rest.iter().rev());
                path = next;
            }
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("too many levels of symbolic links"))
}

#[cfg(test)]
mod tests;
