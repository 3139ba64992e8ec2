//! The improv event log: every performance is an append-only JSONL file,
//! `.improv/performances/<id>.jsonl`, one [`improv_kernel::Event`] a line, and a row in an SQLite
//! index, `.improv/improv.db`, that lists performances without reading their files.
//!
//! A [`Recorder`] (an [`improv_kernel::Observer`]) writes one performance; an [`EventLog`] opens
//! the state directory, hands out recorders and reads performances back.

mod error;
mod index;
mod recorder;

pub use error::LogError;
pub use index::{PerformanceRow, Status};
pub use recorder::Recorder;

use improv_kernel::Event;
use improv_kernel::resume::Past;
use rusqlite::{Connection, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The file name of the index inside the state directory.
pub const DB_FILE: &str = "improv.db";
/// The directory of the JSONL files inside the state directory.
pub const PERFORMANCES_DIR: &str = "performances";

/// How many candidates an ambiguous prefix lists.
const MAX_CANDIDATES: usize = 10;

/// The fewest characters a short id ([`EventLog::short_ids`]) has. Ids start with a shared time
/// prefix and end in random digits, so a short form is a suffix; five hex digits keep it unique
/// in a stage's log for a long time, so what `improv log` showed yesterday still resolves.
pub const SHORT_ID_MIN: usize = 5;

/// The event log of one state directory (usually `.improv/` next to the stage).
pub struct EventLog {
    dir: PathBuf,
    db_path: PathBuf,
    conn: Mutex<Connection>,
}

impl EventLog {
    /// Opens the log in `state_dir`, creating the directory, the index and its schema as needed.
    pub fn open(state_dir: &Path) -> Result<EventLog, LogError> {
        let performances = state_dir.join(PERFORMANCES_DIR);
        std::fs::create_dir_all(&performances).map_err(|source| LogError::Io {
            action: "create the directory",
            path: performances,
            source,
        })?;
        let db_path = state_dir.join(DB_FILE);
        let conn = index::connect(&db_path)?;
        Ok(EventLog {
            dir: state_dir.to_path_buf(),
            db_path,
            conn: Mutex::new(conn),
        })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The JSONL file of performance `id` (which need not exist yet).
    pub fn log_path(&self, id: &str) -> Result<PathBuf, LogError> {
        check_id(id)?;
        Ok(self.dir.join(PERFORMANCES_DIR).join(format!("{id}.jsonl")))
    }

    /// A recorder for performance `id`, appending to its file (a resumed performance goes on in
    /// the same file). Add it to the performance with `PerformanceBuilder::observer`.
    pub fn recorder(&self, id: &str) -> Result<Arc<Recorder>, LogError> {
        let path = self.log_path(id)?;
        Ok(Arc::new(Recorder::open(id, path, self.db_path.clone())?))
    }

    /// The latest `limit` performances, newest first.
    pub fn list(&self, limit: usize) -> Result<Vec<PerformanceRow>, LogError> {
        let conn = self.conn();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = conn
            .prepare_cached(&format!(
                "SELECT {} FROM performances ORDER BY started_at DESC, rowid DESC LIMIT ?1",
                index::ROW_COLUMNS
            ))
            .and_then(|mut s| {
                s.query_map(params![limit], index::row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| self.db_err(e))?;
        Ok(rows)
    }

    /// The performance whose id is `id_or_prefix` or, failing that, the only one whose id starts
    /// or ends with it (a short id from [`EventLog::short_ids`] is such an end).
    pub fn find(&self, id_or_prefix: &str) -> Result<PerformanceRow, LogError> {
        let not_found = || LogError::NotFound {
            query: id_or_prefix.to_string(),
            dir: self.dir.clone(),
        };
        if id_or_prefix.is_empty() {
            return Err(not_found());
        }
        let conn = self.conn();
        if let Some(row) = index::get(&conn, id_or_prefix).map_err(|e| self.db_err(e))? {
            return Ok(row);
        }
        let mut rows = conn
            .prepare_cached(&format!(
                "SELECT {} FROM performances
                 WHERE substr(id, 1, length(?1)) = ?1 OR substr(id, -length(?1)) = ?1
                 ORDER BY started_at DESC, rowid DESC LIMIT ?2",
                index::ROW_COLUMNS
            ))
            .and_then(|mut s| {
                s.query_map(params![id_or_prefix, MAX_CANDIDATES as i64 + 1], index::row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| self.db_err(e))?;
        match rows.len() {
            0 => Err(not_found()),
            1 => Ok(rows.remove(0)),
            n => {
                let mut candidates: Vec<String> = rows
                    .into_iter()
                    .take(MAX_CANDIDATES)
                    .map(|r| r.id)
                    .collect();
                if n > MAX_CANDIDATES {
                    candidates.push("…".into());
                }
                Err(LogError::Ambiguous {
                    prefix: id_or_prefix.to_string(),
                    candidates,
                })
            }
        }
    }

    /// The shortest form of each of `ids` that [`EventLog::find`] resolves to it alone, as git
    /// shortens hashes: its last [`SHORT_ID_MIN`] characters or more, as many as no other
    /// performance starts or ends with; the whole id when no shorter form is unique.
    pub fn short_ids(&self, ids: &[&str]) -> Result<Vec<String>, LogError> {
        let conn = self.conn();
        let all = conn
            .prepare_cached("SELECT id FROM performances")
            .and_then(|mut s| {
                s.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| self.db_err(e))?;
        Ok(ids.iter().map(|id| shortest_suffix(id, &all)).collect())
    }

    /// The logged events of performance `id`, in order. A last line cut short by a crash is left
    /// out; a damaged line anywhere else is an error naming the file and line.
    pub fn events(&self, id: &str) -> Result<Vec<Event>, LogError> {
        read_events(&self.log_path(id)?)
    }

    /// What performance `id` had reached, replayed from its log one event at a time (see
    /// [`each_event`]): what a resume needs, in memory that grows with the conversation the
    /// model sees, not with the whole log (which a compaction never shortens).
    pub fn replay(&self, id: &str) -> Result<Past, LogError> {
        let mut past = Past::default();
        each_event(&self.log_path(id)?, |event| past.take(&event))?;
        Ok(past.finish())
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A poisoned lock only means a reader panicked; the connection itself is intact.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn db_err(&self, source: rusqlite::Error) -> LogError {
        LogError::Db {
            path: self.db_path.clone(),
            source,
        }
    }
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Reads the events of one JSONL file. See [`EventLog::events`].
pub fn read_events(path: &Path) -> Result<Vec<Event>, LogError> {
    let mut events = Vec::new();
    each_event(path, |event| events.push(event))?;
    Ok(events)
}

/// Hands `each` the events of one JSONL file in order, reading one line at a time, so a long
/// journal (a chat thread's, continued message after message for weeks) is never held whole.
/// Blank lines are skipped; a last line without its newline that is not an event is a write a
/// crash cut short (or one still under way) and is left out; any other line that is not an
/// event is [`LogError::Corrupt`], naming its line.
pub fn each_event(path: &Path, each: impl FnMut(Event)) -> Result<(), LogError> {
    let file = std::fs::File::open(path).map_err(|e| read_failed(path, e))?;
    each_event_in(std::io::BufReader::new(file), path, each)
}

/// A log file that could not be opened or read.
fn read_failed(path: &Path, source: std::io::Error) -> LogError {
    LogError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    }
}

/// [`each_event`] over any reader of the file at `path`. It stops at the first end of the
/// file: a line without its newline is the last, even if a writer appends to it meanwhile (its
/// rest would read as a damaged line).
fn each_event_in(
    mut file: impl std::io::BufRead,
    path: &Path,
    mut each: impl FnMut(Event),
) -> Result<(), LogError> {
    let mut line = Vec::new();
    for number in 1.. {
        line.clear();
        let read = file
            .read_until(b'\n', &mut line)
            .map_err(|e| read_failed(path, e))?;
        if read == 0 {
            break;
        }
        let last = line.last() != Some(&b'\n');
        if !line.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Event>(&line) {
                Ok(event) => each(event),
                Err(_) if last => {}
                Err(e) => {
                    return Err(LogError::Corrupt {
                        path: path.to_path_buf(),
                        line: number,
                        message: e.to_string(),
                    });
                }
            }
        }
        if last {
            break;
        }
    }
    Ok(())
}

/// The shortest suffix of `id`, of at least [`SHORT_ID_MIN`] characters, that no other id of
/// `all` starts or ends with; `id` itself when there is none.
fn shortest_suffix(id: &str, all: &[String]) -> String {
    // Logged ids are ASCII (see `check_id`), so every byte offset is a character boundary.
    if !id.is_ascii() {
        return id.to_string();
    }
    let len = id.len();
    (SHORT_ID_MIN..len)
        .map(|n| &id[len - n..])
        .find(|short| {
            !all.iter()
                .any(|other| other != id && (other.starts_with(short) || other.ends_with(short)))
        })
        .unwrap_or(id)
        .to_string()
}

/// Ids become file names: keep them to a safe alphabet.
fn check_id(id: &str) -> Result<(), LogError> {
    let ok = !id.is_empty()
        && !id.starts_with('.')
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(LogError::InvalidId(id.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::io::Read;

    /// A file a writer appends to while it is read: each read hands over the next part, an
    /// empty part is an end of the file.
    struct Growing(VecDeque<Vec<u8>>);

    impl Read for Growing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let Some(part) = self.0.pop_front() else {
                return Ok(0);
            };
            buf[..part.len()].copy_from_slice(&part);
            Ok(part.len())
        }
    }

    #[test]
    fn a_line_being_written_is_the_last_read_not_a_damaged_one() {
        let whole = r#"{"seq":0,"at":"2026-01-01T00:00:00.000Z","type":"turn_started","turn":1}"#;
        let (head, rest) = whole.split_at(20);
        let file = Growing(VecDeque::from([
            format!("{whole}\n{head}").into_bytes(),
            Vec::new(),
            format!("{rest}\n").into_bytes(),
        ]));
        let mut seen = Vec::new();
        each_event_in(
            std::io::BufReader::with_capacity(1024, file),
            Path::new("p.jsonl"),
            |e| seen.push(e.seq),
        )
        .unwrap();
        assert_eq!(seen, [0]);
    }
}
