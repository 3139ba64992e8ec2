//! AGENTS.md by convention: the files that apply to a path are those of every folder from the
//! workspace root down to it, outermost first, so nearer files can refine farther ones. They are
//! read beneath the workspace ([`read_agents`]): one that is, or is swapped for, a symlink
//! leading outside is refused.

use improv_workspace::{PathError, Workspace};
use std::path::{Component, Path, PathBuf};

/// The file name looked for in each folder.
pub const AGENTS_FILE: &str = "AGENTS.md";

/// The AGENTS.md files that apply to `path` (a file or folder, relative to `workspace` or
/// absolute inside it): the root's first, then each folder's on the way down. A path outside
/// the workspace gets none; `..` is resolved without following links.
pub fn agents_files(workspace: &Path, path: &Path) -> Vec<PathBuf> {
    let full = if path.is_absolute() {
        path.to_path_buf()
    } else {
        workspace.join(path)
    };
    let Some(full) = normalize(&full) else {
        return Vec::new();
    };
    let Some(root) = normalize(workspace) else {
        return Vec::new();
    };
    let Ok(rel) = full.strip_prefix(&root) else {
        return Vec::new();
    };
    let mut folders = vec![root.clone()];
    let mut at = root;
    let parts: Vec<Component> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        at = at.join(part);
        // The last part is the path itself: a folder counts, a file does not.
        if i + 1 < parts.len() || at.is_dir() {
            folders.push(at.clone());
        }
    }
    folders
        .into_iter()
        .map(|f| f.join(AGENTS_FILE))
        .filter(|f| f.is_file())
        .collect()
}

/// Resolves `.` and `..` lexically; `None` when `..` climbs above the root.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            other => out.push(other),
        }
    }
    Some(out)
}

/// At most `max_bytes` of the AGENTS.md `file` (one of [`agents_files`], absolute or relative to
/// the root), read beneath `workspace`: refused when it leads outside.
pub fn read_agents(
    workspace: &Workspace,
    file: &Path,
    max_bytes: usize,
) -> Result<String, PathError> {
    let rel = file.strip_prefix(workspace.root()).unwrap_or(file);
    workspace.read_to_string(rel, max_bytes)
}
