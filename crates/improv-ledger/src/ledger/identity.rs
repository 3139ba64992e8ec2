//! A ledger file's identity (its `source`), and the detection of copies: the store keeps each
//! file's entries under its source, so two files sharing one (a `cp -a` of `.improv/`, a restored
//! backup, a second checkout) would suppress or overwrite each other's rows there.
//!
//! The file records, next to its source, its path and inode when the source was made. A file
//! opened with another inode is a copy (copying makes a new inode; a rename keeps it): it gets a
//! new source, and the log says so. A rename keeps the source and records the new path. A copy
//! this cannot see (a cloned volume keeps inodes and paths) is caught by the store, which
//! refuses a file whose entries differ from those loaded under the same source
//! (`PgLedgerError::Conflict`).

use super::LedgerError;
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;

/// Columns added to `ledger_identity` for copy detection (files made before them lack them).
const ADD_COLUMNS: &str = "ALTER TABLE ledger_identity ADD COLUMN path TEXT;
                           ALTER TABLE ledger_identity ADD COLUMN inode INTEGER;";

/// What opening found about the file's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Found {
    /// The file is where and what it was.
    Same,
    /// First open since copy detection existed, or on a system without inodes: recorded now.
    Recorded,
    /// Renamed or moved (same inode): the source is kept.
    Moved { from: String },
    /// A copy (another inode): a new source was made in place of `was`.
    Copied { was: String, from: String },
}

/// The file's inode, `None` where the platform has none.
fn inode(path: &Path) -> std::io::Result<Option<i64>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // Inode numbers fit 63 bits on every filesystem in use; the cast keeps the bits.
        Ok(Some(std::fs::metadata(path)?.ino() as i64))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(None)
    }
}

/// Reads the file's source, first checking that the file is the one the source was made for
/// (see the module doc). Runs in one immediate transaction, so two processes opening one copy
/// at once make one new source, not two.
pub(super) fn source(conn: &mut Connection, path: &Path) -> Result<(String, Found), LedgerError> {
    let inode_now = inode(path).map_err(|source| LedgerError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read(conn, path, inode_now).map_err(|source| LedgerError::Open {
        path: path.to_path_buf(),
        source,
    })
}

fn read(
    conn: &mut Connection,
    path: &Path,
    inode_now: Option<i64>,
) -> rusqlite::Result<(String, Found)> {
    let has_inode: bool = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('ledger_identity') WHERE name = 'inode'",
            [],
            |row| row.get(0),
        )
        .map(|n: i64| n > 0)?;
    if !has_inode {
        conn.execute_batch(ADD_COLUMNS)?;
    }
    let here = std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let (source, recorded_path, recorded_inode): (String, Option<String>, Option<i64>) = tx
        .query_row(
            "SELECT source, path, inode FROM ledger_identity",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?;
    let found = match (recorded_inode, inode_now) {
        (Some(then), Some(now)) if then != now => Found::Copied {
            was: source.clone(),
            from: recorded_path.unwrap_or_default(),
        },
        (Some(_), Some(_)) if recorded_path.as_deref() != Some(here.as_str()) => Found::Moved {
            from: recorded_path.unwrap_or_default(),
        },
        (Some(_), Some(_)) => Found::Same,
        _ if recorded_path.as_deref() == Some(here.as_str()) && inode_now.is_none() => Found::Same,
        _ => Found::Recorded,
    };
    let source = if matches!(found, Found::Copied { .. }) {
        tx.query_row("SELECT lower(hex(randomblob(16)))", [], |row| row.get(0))?
    } else {
        source
    };
    if found != Found::Same {
        tx.execute(
            "UPDATE ledger_identity SET source = ?1, path = ?2, inode = ?3",
            rusqlite::params![source, here, inode_now],
        )?;
    }
    tx.commit()?;
    Ok((source, found))
}

/// Says in the log what [`source`] found, when it matters.
pub(super) fn log(path: &Path, source: &str, found: &Found) {
    match found {
        Found::Copied { was, from } => tracing::warn!(
            ledger = %path.display(),
            source,
            was = %was,
            copied_from = %from,
            "this ledger file is a copy of {from} (another inode): it gets its own source {source} \
             in place of {was}, so the store keeps both files' entries apart; the entries it \
             shares with the original are loaded again under the new source"
        ),
        Found::Moved { from } => tracing::info!(
            ledger = %path.display(),
            source,
            "this ledger file moved from {from}: same file, it keeps its source"
        ),
        Found::Same | Found::Recorded => {}
    }
}

/// Where this file is, for messages the store keeps: `host:path`.
pub(crate) fn whereabouts(path: &Path) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this host".to_owned());
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    format!("{host}:{}", path.display())
}
