//! The [`Recorder`]: the observer that writes a performance's events to its JSONL file and keeps
//! its row in the index current.
//!
//! Each event is one line written with a single `write_all` on the file, with no buffer holding
//! data back, so a crash loses at most the line being written. `text_delta` events are not
//! written: the whole reply is logged once by `model_replied`, and the deltas would only repeat
//! it piece by piece. The file is synced to disk when the performance finishes.

use crate::error::LogError;
use crate::index;
use improv_kernel::{Event, EventKind, ObserveError, Observer, Outcome, Spent};
use rusqlite::{Connection, params};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Writes one performance's events; made by [`crate::EventLog::recorder`].
pub struct Recorder {
    id: String,
    path: PathBuf,
    db_path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    file: File,
    conn: Connection,
}

impl Recorder {
    pub(crate) fn open(id: &str, path: PathBuf, db_path: PathBuf) -> Result<Recorder, LogError> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)
            .map_err(|source| LogError::Io {
                action: "open",
                path: path.clone(),
                source,
            })?;
        lock(&file).map_err(|source| {
            if source.raw_os_error() == Some(libc::EWOULDBLOCK) {
                LogError::Busy {
                    id: id.to_string(),
                    path: path.clone(),
                }
            } else {
                LogError::Io {
                    action: "lock",
                    path: path.clone(),
                    source,
                }
            }
        })?;
        drop_cut_line(&mut file).map_err(|source| LogError::Io {
            action: "repair the cut-off last line of",
            path: path.clone(),
            source,
        })?;
        let conn = index::connect(&db_path)?;
        Ok(Recorder {
            id: id.to_string(),
            path,
            db_path,
            inner: Mutex::new(Inner { file, conn }),
        })
    }

    /// The performance this recorder writes.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its JSONL file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_err(&self, what: &str, e: impl std::fmt::Display) -> ObserveError {
        ObserveError(format!(
            "cannot {what} the event log {}: {e}",
            self.path.display()
        ))
    }

    fn db_err(&self, e: rusqlite::Error) -> ObserveError {
        ObserveError(format!(
            "cannot update the event index {}: {e}",
            self.db_path.display()
        ))
    }

    fn index(&self, conn: &Connection, event: &Event) -> rusqlite::Result<()> {
        match &event.kind {
            EventKind::PerformanceStarted {
                stage,
                intent,
                model,
                ..
            } => {
                // A resumed performance keeps its first start time and runs again under this
                // process.
                conn.prepare_cached(
                    "INSERT INTO performances
                        (id, stage, intent, model, status, started_at, log_path, pid)
                     VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7)
                     ON CONFLICT (id) DO UPDATE SET
                        stage = excluded.stage, intent = excluded.intent, model = excluded.model,
                        status = 'running', reason = '', finished_at = NULL, pid = excluded.pid",
                )?
                .execute(params![
                    self.id,
                    stage,
                    intent,
                    model,
                    event.at,
                    self.path.to_string_lossy(),
                    std::process::id(),
                ])?;
            }
            EventKind::Usage { spent, .. } => {
                self.spend(conn, spent)?;
            }
            EventKind::PerformanceFinished {
                outcome,
                reason,
                spent,
                ..
            } => {
                self.spend(conn, spent)?;
                self.finish(conn, *outcome, reason, &event.at)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn spend(&self, conn: &Connection, spent: &Spent) -> rusqlite::Result<()> {
        conn.prepare_cached(
            "UPDATE performances SET turns = ?2, input_tokens = ?3, output_tokens = ?4,
                cost_usd = ?5, elapsed_ms = ?6
             WHERE id = ?1",
        )?
        .execute(params![
            self.id,
            spent.turns,
            clamp(spent.input_tokens),
            clamp(spent.output_tokens),
            spent.cost_usd,
            clamp(spent.elapsed_ms),
        ])?;
        Ok(())
    }

    fn finish(
        &self,
        conn: &Connection,
        outcome: Outcome,
        reason: &str,
        at: &str,
    ) -> rusqlite::Result<()> {
        conn.prepare_cached(
            "UPDATE performances SET status = ?2, reason = ?3, finished_at = ?4, pid = NULL
             WHERE id = ?1",
        )?
        .execute(params![self.id, outcome.as_str(), reason, at])?;
        Ok(())
    }
}

impl Observer for Recorder {
    fn observe(&self, event: &Event) -> Result<(), ObserveError> {
        if matches!(event.kind, EventKind::TextDelta { .. }) {
            return Ok(());
        }
        let mut line =
            serde_json::to_vec(event).map_err(|e| self.write_err("serialize an event for", e))?;
        line.push(b'\n');
        // A poisoned lock only means another thread panicked mid-event; the file and the
        // connection are still usable, and the cut line is tolerated by readers.
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Inner { file, conn } = &mut *inner;
        file.write_all(&line)
            .map_err(|e| self.write_err("write to", e))?;
        self.index(conn, event).map_err(|e| self.db_err(e))?;
        if matches!(event.kind, EventKind::PerformanceFinished { .. }) {
            file.sync_data().map_err(|e| self.write_err("sync", e))?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("id", &self.id)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Takes the file's exclusive lock, held until the file is closed (the recorder dropped), so two
/// recorders never interleave lines of one performance.
fn lock(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// SQLite integers are signed; counts beyond i64 are clamped rather than wrapped.
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// When a crash cut the file's last line short, removes that partial line so that appended
/// events start on a line of their own. A last line that is a whole event missing only its
/// newline gets the newline instead.
fn drop_cut_line(file: &mut File) -> std::io::Result<()> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    // Find the start of the last line: scan back in chunks for a newline.
    let mut end = len;
    let mut last = [0u8; 1];
    file.seek(SeekFrom::Start(len - 1))?;
    file.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    let mut start = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let from = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(chunk)?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            start = from + i as u64 + 1;
            break;
        }
        end = from;
    }
    let mut tail = Vec::with_capacity((len - start) as usize);
    file.seek(SeekFrom::Start(start))?;
    file.read_to_end(&mut tail)?;
    if serde_json::from_slice::<Event>(&tail).is_ok() {
        file.write_all(b"\n")?;
    } else {
        file.set_len(start)?;
    }
    Ok(())
}
