//! A ledger file's identity (its `source`), and the detection of copies: the store keeps each
//! file's entries under its source, so two files sharing one (a `cp -a` of `.improv/`, a restored
//! backup, a second checkout) would suppress or overwrite each other's rows there.
//!
//! The file records, next to its source, the host, path and inode where it was made. A file
//! opened on another host is a copy (a second checkout there, a copied volume). A file
//! opened with another inode is a copy only while the original is still there: the recorded
//! path exists, still with the recorded inode, and is not this file. Then it gets a new source,
//! and the log says so. Otherwise the file moved or was replaced (a rename; a move across file
//! systems or a backup restored with the original gone; an rsync deploy renaming a temporary
//! file over it; sshfs without stable inodes): it keeps its source, so its entries are not
//! loaded again, and the new path and inode are recorded. A copy this cannot see (a cloned
//! volume keeps inodes and paths; a copy opened only once the original is gone) is caught by
//! the store, which refuses a file whose entries differ from those loaded under the same source
//! (`PgLedgerError::Conflict`).

use super::LedgerError;
use rusqlite::{Connection, TransactionBehavior};
use std::path::Path;

/// Columns added to `ledger_identity` for copy detection (files made before them lack them),
/// each with its type; each is checked and added on its own.
const ADDED_COLUMNS: [(&str, &str); 3] = [("path", "TEXT"), ("inode", "INTEGER"), ("host", "TEXT")];

/// What opening found about the file's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Found {
    /// The file is where and what it was.
    Same,
    /// First open since copy detection existed, or on a system without inodes: recorded now.
    Recorded,
    /// Renamed or moved (same inode, or another one with the original gone): the source is kept.
    Moved { from: String },
    /// Replaced at the same path by another inode (a restore, an rsync deploy): the source is
    /// kept.
    Replaced,
    /// A copy (another inode, the original still there): a new source was made in place of
    /// `was`.
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
    let here = std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    add_columns(&tx)?;
    let (source, recorded_path, recorded_inode, recorded_host): Recorded = tx.query_row(
        "SELECT source, path, inode, host FROM ledger_identity",
        [],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
    )?;
    let host_now = host();
    let recorded_host_known = recorded_host.is_some();
    let found = match recorded_host {
        // Made on another machine (a second checkout of the stage there, a copied volume): a
        // copy whatever its path and inode say, since the original's host cannot be looked at.
        Some(then) if then != host_now => Found::Copied {
            was: source.clone(),
            from: format!("{then}:{}", recorded_path.unwrap_or_default()),
        },
        _ => judge(&here, inode_now, &source, recorded_path, recorded_inode),
    };
    let source = if matches!(found, Found::Copied { .. }) {
        tx.query_row("SELECT lower(hex(randomblob(16)))", [], |row| row.get(0))?
    } else {
        source
    };
    if found != Found::Same || !recorded_host_known {
        tx.execute(
            "UPDATE ledger_identity SET source = ?1, path = ?2, inode = ?3, host = ?4",
            rusqlite::params![source, here, inode_now, host_now],
        )?;
    }
    tx.commit()?;
    Ok((source, found))
}

/// Adds the copy-detection columns a file made before them lacks, each checked on its own and
/// inside the caller's transaction: two processes opening one old file do not both add a
/// column, and a crash between the two leaves a file the next open completes.
fn add_columns(tx: &Connection) -> rusqlite::Result<()> {
    for (name, kind) in ADDED_COLUMNS {
        let has: i64 = tx.query_row(
            "SELECT count(*) FROM pragma_table_info('ledger_identity') WHERE name = ?1",
            [name],
            |row| row.get(0),
        )?;
        if has == 0 {
            tx.execute_batch(&format!(
                "ALTER TABLE ledger_identity ADD COLUMN {name} {kind}"
            ))?;
        }
    }
    Ok(())
}

/// The row of `ledger_identity`: source, then the path, inode and host it was made at.
type Recorded = (String, Option<String>, Option<i64>, Option<String>);

/// This machine's name, as the identity records it (`this host` where it has none).
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this host".to_owned())
}

/// What the file at `here` with `inode_now` is, given the path and inode recorded with its
/// source (see the module doc).
fn judge(
    here: &str,
    inode_now: Option<i64>,
    source: &str,
    recorded_path: Option<String>,
    recorded_inode: Option<i64>,
) -> Found {
    let from = recorded_path.unwrap_or_default();
    match (recorded_inode, inode_now) {
        (Some(then), Some(now)) if then != now => {
            if from == here {
                Found::Replaced
            } else if original_remains(&from, then) {
                Found::Copied {
                    was: source.to_owned(),
                    from,
                }
            } else {
                Found::Moved { from }
            }
        }
        (Some(_), Some(_)) if from != here => Found::Moved { from },
        (Some(_), Some(_)) => Found::Same,
        _ if from == here && inode_now.is_none() => Found::Same,
        _ => Found::Recorded,
    }
}

/// Whether the file recorded at `path` with inode `then` is still there, that inode.
fn original_remains(path: &str, then: i64) -> bool {
    !path.is_empty() && matches!(inode(Path::new(path)), Ok(Some(ino)) if ino == then)
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
            "this ledger file moved from {from} (nothing is left there): it keeps its source"
        ),
        Found::Replaced => tracing::info!(
            ledger = %path.display(),
            source,
            "this ledger file was replaced at its path (another inode: a restore or a deploy): \
             it keeps its source"
        ),
        Found::Same | Found::Recorded => {}
    }
}

/// Where this file is, for messages the store keeps: `host:path`.
pub(crate) fn whereabouts(path: &Path) -> String {
    let host = host();
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    format!("{host}:{}", path.display())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// An identity table as a file made before copy detection has it, with source `old`.
    fn old_file(file: &Path, columns: &str) -> Connection {
        let conn = Connection::open(file).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE ledger_identity (one INTEGER PRIMARY KEY CHECK (one = 1), \
             source TEXT NOT NULL{columns}); \
             INSERT INTO ledger_identity (one, source) VALUES (1, 'old');"
        ))
        .unwrap();
        conn
    }

    /// A second checkout on another machine, at the same path (`/srv/app`), or a volume copied
    /// there with its inodes: a copy, though path and inode match (review of ec57722: it kept
    /// the original's source, and the store then refused one of the two for good).
    #[test]
    fn a_file_made_on_another_host_is_a_copy_whatever_its_path_and_inode() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ledger.db");
        drop(old_file(&file, ""));
        let open = |at: &Path| source(&mut Connection::open(at).unwrap(), at).unwrap();
        assert_eq!(open(&file), ("old".to_owned(), Found::Recorded));
        assert_eq!(open(&file), ("old".to_owned(), Found::Same));
        Connection::open(&file)
            .unwrap()
            .execute("UPDATE ledger_identity SET host = 'elsewhere'", [])
            .unwrap();
        let (source, found) = open(&file);
        assert_ne!(source, "old");
        assert!(
            matches!(&found, Found::Copied { from, .. } if from.starts_with("elsewhere:")),
            "{found:?}"
        );
        assert_eq!(open(&file), (source, Found::Same));
    }

    #[test]
    fn a_file_that_gained_only_path_opens_and_gains_inode() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ledger.db");
        let mut conn = old_file(&file, ", path TEXT");
        let (source, found) = source(&mut conn, &file).unwrap();
        assert_eq!((source.as_str(), found), ("old", Found::Recorded));
        let inode: Option<i64> = conn
            .query_row("SELECT inode FROM ledger_identity", [], |row| row.get(0))
            .unwrap();
        assert!(inode.is_some());
    }

    #[test]
    fn a_file_replaced_at_its_path_keeps_its_source_and_a_copy_beside_it_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ledger.db");
        drop(old_file(&file, ""));
        let open = |at: &Path| source(&mut Connection::open(at).unwrap(), at).unwrap();
        assert_eq!(open(&file).1, Found::Recorded);
        // A deploy writes a temporary file and renames it over the ledger: another inode.
        let tmp = dir.path().join(".ledger.db.tmp");
        std::fs::copy(&file, &tmp).unwrap();
        std::fs::rename(&tmp, &file).unwrap();
        assert_eq!(open(&file), ("old".to_owned(), Found::Replaced));
        // A copy while the original is still there gets a source of its own.
        let copy = dir.path().join("copy.db");
        std::fs::copy(&file, &copy).unwrap();
        let (source, found) = open(&copy);
        assert_ne!(source, "old");
        assert!(matches!(found, Found::Copied { .. }), "{found:?}");
        assert_eq!(open(&file), ("old".to_owned(), Found::Same));
    }
}
