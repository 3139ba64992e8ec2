//! The guard that keeps every path a prop touches inside the workspace. It lives in its own
//! crate, [`improv_workspace`], so that skills, context files and checks read the same way:
//! paths are opened beneath an open fd of the workspace root (`openat2` with
//! `RESOLVE_BENEATH`), so a symlink swapped in while a prop works cannot lead it outside.
//!
//! This is the in-process guard; the sandbox of the edges is a second, stronger one.

pub use improv_workspace::{Entry, Kind, Method, PathError, Scope, Workspace};
