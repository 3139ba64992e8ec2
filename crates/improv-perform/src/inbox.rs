//! Director notes from another terminal: `improv note ID "..."` appends a line to the running
//! performance's inbox file (`.improv/notes/ID.jsonl`), and the performance, which watches that
//! file, hands each new line to its lead before the next model call.
//!
//! A file rather than a socket: it needs no listener, survives a note sent while the
//! performance is between turns, works across users of one project folder, and the poll is one
//! `stat` every quarter second.

use crate::error::PerformError;
use improv_kernel::NoteSender;
use improv_log::{EventLog, Status};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NOTES_DIR: &str = "notes";
const POLL: Duration = Duration::from_millis(250);

#[derive(Serialize, Deserialize)]
struct Line {
    text: String,
}

fn inbox_path(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join(NOTES_DIR).join(format!("{id}.jsonl"))
}

/// Sends a director note to the running performance `id` (or a unique prefix) of the stage whose
/// state is in `state_dir`. Returns the performance's full id.
pub fn send_note(state_dir: &Path, id: &str, text: &str) -> Result<String, PerformError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(PerformError::Stage(
            "the note is empty: say something to the cast".into(),
        ));
    }
    let log = EventLog::open(state_dir)?;
    let row = log.find(id)?;
    if row.status != Status::Running {
        return Err(PerformError::Stage(format!(
            "performance {} is {}, not running, so no actor would read the note; continue it with `improv run --resume {}` and direct it there",
            row.id, row.status, row.id
        )));
    }
    let path = inbox_path(state_dir, &row.id);
    let io = |source: std::io::Error| {
        PerformError::Stage(format!(
            "cannot write the note to {}: {source}",
            path.display()
        ))
    };
    std::fs::create_dir_all(state_dir.join(NOTES_DIR)).map_err(io)?;
    let mut line = serde_json::to_string(&Line { text: text.into() })
        .map_err(|e| PerformError::Stage(format!("cannot encode the note: {e}")))?;
    line.push('\n');
    // One write of a whole line with O_APPEND: notes from several terminals never interleave.
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io)?;
    file.write_all(line.as_bytes()).map_err(io)?;
    Ok(row.id)
}

/// Watches a performance's inbox file while it runs.
pub(crate) struct Inbox {
    task: tokio::task::JoinHandle<()>,
    path: PathBuf,
    read: Arc<Mutex<Reader>>,
    notes: NoteSender,
}

/// How far the inbox file has been read, and a line still being written.
#[derive(Default)]
struct Reader {
    at: u64,
    partial: String,
}

impl Inbox {
    /// Starts watching; `None` outside a tokio runtime (nothing to watch with).
    pub(crate) fn watch(state_dir: &Path, id: &str, notes: NoteSender) -> Option<Inbox> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let path = inbox_path(state_dir, id);
        let read: Arc<Mutex<Reader>> = Arc::default();
        let (watched, reader, sender) = (path.clone(), read.clone(), notes.clone());
        let task = runtime.spawn(async move {
            loop {
                tokio::time::sleep(POLL).await;
                if !deliver(&watched, &reader, &sender) {
                    return;
                }
            }
        });
        Some(Inbox {
            task,
            path,
            read,
            notes,
        })
    }

    /// Delivers the notes written since the last poll now, without waiting for the next one.
    pub(crate) fn check(&self) {
        deliver(&self.path, &self.read, &self.notes);
    }

    /// Stops watching and removes the inbox: notes sent later are refused, since the
    /// performance is no longer running.
    pub(crate) fn close(self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Hands the new notes of `path` to the performance; false once it has ended.
fn deliver(path: &Path, read: &Mutex<Reader>, notes: &NoteSender) -> bool {
    // Poisoning needs a panic while reading; the offsets are still sound then.
    let mut r = read.lock().unwrap_or_else(|e| e.into_inner());
    let Reader { at, partial } = &mut *r;
    read_new(path, at, partial)
        .into_iter()
        .all(|text| notes.send(text))
}

/// The notes appended to `path` since offset `at`; a line still being written waits in
/// `partial`. A file that does not exist yet has no notes.
fn read_new(path: &Path, at: &mut u64, partial: &mut String) -> Vec<String> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len <= *at {
        return Vec::new();
    }
    let mut chunk = String::new();
    if file.seek(SeekFrom::Start(*at)).is_err() || file.read_to_string(&mut chunk).is_err() {
        return Vec::new();
    }
    *at += chunk.len() as u64;
    partial.push_str(&chunk);
    let mut out = Vec::new();
    while let Some(end) = partial.find('\n') {
        let line: String = partial.drain(..=end).collect();
        match serde_json::from_str::<Line>(line.trim()) {
            Ok(l) => out.push(l.text),
            Err(e) => tracing::warn!("skipping a malformed line in {}: {e}", path.display()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_once_and_partial_lines_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.jsonl");
        let (mut at, mut partial) = (0, String::new());
        assert!(read_new(&path, &mut at, &mut partial).is_empty());
        std::fs::write(&path, "{\"text\":\"one\"}\n{\"text\":\"tw").unwrap();
        assert_eq!(read_new(&path, &mut at, &mut partial), vec!["one"]);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"o\"}\nnot json\n{\"text\":\"three\"}\n")
            .unwrap();
        assert_eq!(read_new(&path, &mut at, &mut partial), vec!["two", "three"]);
        assert!(read_new(&path, &mut at, &mut partial).is_empty());
    }
}
