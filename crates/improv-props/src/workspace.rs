//! Keeps every path a prop touches inside the workspace: resolves the model's path argument
//! against the workspace root, lexically and then through the real filesystem (symlinks).
//!
//! This is the in-process guard; the sandbox of the edges is a second, stronger one.

use improv_kernel::PropError;
use std::io;
use std::path::{Component, Path, PathBuf};

/// How many symlinks one resolution may follow before it gives up (the kernel's own limit).
const MAX_SYMLINKS: usize = 40;

/// Why a path argument was refused.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("the path is empty; give a path relative to the workspace root")]
    Empty,
    #[error("`{given}` is outside the workspace {root}; paths are relative to the workspace root")]
    Outside { given: String, root: String },
    #[error(
        "`{given}` leads through a symlink to {real}, outside the workspace {root}; use a path inside the workspace"
    )]
    Escapes {
        given: String,
        real: String,
        root: String,
    },
    #[error("`{given}` could not be resolved: {source}")]
    Io { given: String, source: io::Error },
    #[error("the workspace root {root} could not be opened: {source}")]
    Root { root: String, source: io::Error },
}

impl From<PathError> for PropError {
    fn from(e: PathError) -> Self {
        PropError(e.to_string())
    }
}

/// The workspace root, canonical, and the path logic every prop shares.
#[derive(Clone, Debug)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// Opens the workspace at `root`. The kernel hands over a canonical root; when it is not
    /// (relative, or through a symlink), it is canonicalized here so the checks below hold.
    pub fn new(root: &Path) -> Result<Self, PathError> {
        let root = root.canonicalize().map_err(|source| PathError::Root {
            root: root.display().to_string(),
            source,
        })?;
        Ok(Workspace { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Resolves a path argument to a real path inside the workspace. The path need not exist
    /// (`write` creates it), but the part of it that exists must not lead outside.
    pub fn resolve(&self, given: &str) -> Result<PathBuf, PathError> {
        if given.is_empty() {
            return Err(PathError::Empty);
        }
        let joined = self.root.join(given);
        let lexical = normalize(&joined);
        if !lexical.starts_with(&self.root) {
            return Err(self.outside(given));
        }
        let real = real_path(&lexical).map_err(|source| PathError::Io {
            given: given.to_string(),
            source,
        })?;
        if !real.starts_with(&self.root) {
            return Err(PathError::Escapes {
                given: given.to_string(),
                real: real.display().to_string(),
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

    fn outside(&self, given: &str) -> PathError {
        PathError::Outside {
            given: given.to_string(),
            root: self.root.display().to_string(),
        }
    }
}

/// Removes `.` and folds `..` into its parent without touching the filesystem. `..` above `/`
/// stays at `/`, as the kernel does.
fn normalize(path: &Path) -> PathBuf {
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
/// hand, so that writing through it cannot create a file somewhere else.
fn real_path(path: &Path) -> io::Result<PathBuf> {
    let mut path = path.to_path_buf();
    for _ in 0..MAX_SYMLINKS {
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
mod tests {
    use super::*;

    fn workspace() -> (tempfile::TempDir, Workspace) {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::new(dir.path()).unwrap();
        (dir, ws)
    }

    #[test]
    fn relative_and_inside_absolute_paths_resolve() {
        let (_dir, ws) = workspace();
        std::fs::create_dir(ws.root().join("src")).unwrap();
        assert_eq!(ws.resolve("src/a.rs").unwrap(), ws.root().join("src/a.rs"));
        assert_eq!(ws.resolve("./src/../b").unwrap(), ws.root().join("b"));
        let abs = ws.root().join("src").display().to_string();
        assert_eq!(ws.resolve(&abs).unwrap(), ws.root().join("src"));
        assert_eq!(ws.resolve(".").unwrap(), ws.root());
        assert_eq!(ws.display(&ws.root().join("src/a.rs")), "src/a.rs");
    }

    #[test]
    fn parent_escape_is_refused_with_the_reason() {
        let (_dir, ws) = workspace();
        let err = ws.resolve("../x").unwrap_err().to_string();
        assert!(err.contains("`../x` is outside the workspace"), "{err}");
        assert!(err.contains(&ws.root().display().to_string()), "{err}");
        assert!(ws.resolve("a/../../x").is_err());
        assert!(ws.resolve("/etc/passwd").is_err());
        assert!(matches!(ws.resolve(""), Err(PathError::Empty)));
    }

    #[test]
    fn symlinks_out_of_the_workspace_are_refused() {
        let (_dir, ws) = workspace();
        std::os::unix::fs::symlink("/", ws.root().join("root")).unwrap();
        let err = ws.resolve("root/etc/passwd").unwrap_err().to_string();
        assert!(err.contains("symlink to /etc/passwd"), "{err}");
        // A link that points nowhere yet must not let `write` create a file outside.
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().canonicalize().unwrap().join("new.txt");
        std::os::unix::fs::symlink(&target, ws.root().join("dangling")).unwrap();
        assert!(ws.resolve("dangling").is_err());
        // A link inside the workspace is fine.
        std::fs::create_dir(ws.root().join("real")).unwrap();
        std::os::unix::fs::symlink("real", ws.root().join("alias")).unwrap();
        assert_eq!(ws.resolve("alias/f").unwrap(), ws.root().join("real/f"));
    }
}
