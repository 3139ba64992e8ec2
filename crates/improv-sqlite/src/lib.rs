//! How improv sets up a connection to an SQLite file it keeps state in (the event log's index,
//! the embedded store, memory, the ledger): a busy timeout, write-ahead logging and
//! `synchronous = NORMAL`, one decision for all of them.
//!
//! Written here rather than taken from a crate: rusqlite's `busy_timeout` is the whole mechanism,
//! except that SQLite answers "database is locked" at once, without calling the busy handler, when
//! a connection asks for WAL while another holds the file (two processes, or a worker's
//! performances, opening a new file at the same moment). [`prepare`] retries that one step until
//! the timeout.

use rusqlite::{Connection, ErrorCode};
use std::time::{Duration, Instant};

/// Sets `conn`'s busy timeout to `busy`, switches the file to write-ahead logging (retried while
/// another connection holds it, up to `busy`) and sets `synchronous = NORMAL`, which WAL makes
/// safe against a crash of the process (a power loss may lose the last commits, never the file).
pub fn prepare(conn: &Connection, busy: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy)?;
    let deadline = Instant::now() + busy;
    let mut wait = Duration::from_millis(1);
    loop {
        // journal_mode answers with a row, so it is queried rather than executed.
        match conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(())) {
            Err(e) if is_busy(&e) && Instant::now() + wait < deadline => {
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_millis(50));
            }
            done => break done?,
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
}

/// Opens `path` (creating the file when absent) and [`prepare`]s the connection.
pub fn open(path: &std::path::Path, busy: Duration) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    prepare(&conn, busy)?;
    Ok(conn)
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}
