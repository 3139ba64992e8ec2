//! The errors of the event log. Each names the file or the performance it is about and, where
//! there is one, what to do.

use std::path::PathBuf;

/// Why the event log could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file or directory of the log could not be created, read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The SQLite index failed.
    #[error("event index {}: {source}", path.display())]
    Db {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The index was written by a newer improv.
    #[error(
        "event index {} has schema version {found}, newer than this improv knows ({known}); upgrade improv",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    /// No performance has this id or id prefix.
    #[error("no performance matches `{query}` in {}", dir.display())]
    NotFound { query: String, dir: PathBuf },
    /// More than one performance starts with this prefix.
    #[error("`{prefix}` matches {} performances: {}; give more of the id", candidates.len(), candidates.join(", "))]
    Ambiguous {
        prefix: String,
        candidates: Vec<String>,
    },
    /// Another recorder (usually another process) is writing this performance.
    #[error(
        "performance `{id}` is being recorded by another improv process ({}); wait for it to finish or stop it first",
        path.display()
    )]
    Busy { id: String, path: PathBuf },
    /// A performance id that cannot be a file name.
    #[error(
        "invalid performance id `{0}`: use letters, digits, `-`, `_` and `.` only, not starting with `.`"
    )]
    InvalidId(String),
    /// A line of a performance's log is not an event (and is not a line cut short by a crash).
    #[error("{}:{line}: not an event: {message}; the log is damaged at this line", path.display())]
    Corrupt {
        path: PathBuf,
        line: usize,
        message: String,
    },
}
