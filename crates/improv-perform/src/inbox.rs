//! Director notes from another terminal. Without a store, `improv note ID "..."` appends a line
//! to the running performance's inbox file (`.improv/notes/ID.jsonl`); a performance leased from
//! a store reads its notes from the store instead ([`StoreNotes`]), wherever they were sent
//! from. Either way the performance hands each new note to its lead before the next model call.
//!
//! Delivery is deterministic: the notes hook reads the inbox before every model call, so a note
//! sent before a call is in that call. A poller also reads it while a long tool runs (one `stat`
//! every quarter second for the file; for the store, a wait woken by NOTIFY on PostgreSQL or a
//! poll on SQLite); both share one cursor, so no note is delivered twice.
//!
//! A file rather than a socket: it needs no listener, survives a note sent while the
//! performance is between turns, and works across users of one project folder.

use crate::error::PerformError;
use async_trait::async_trait;
use improv_kernel::{Between, Control, Hook, NoteSender, Notes};
use improv_log::{EventLog, Status};
use improv_store::Store;
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NOTES_DIR: &str = "notes";
const POLL: Duration = Duration::from_millis(250);
/// The longest a store poller waits for a note before it looks again anyway. Long: a note wakes
/// its own performance's poller (PostgreSQL: a NOTIFY routed by performance id, with every poller
/// woken when the listener reconnects; SQLite: the store polls inside the wait), so this look only
/// guards against a lost wake-up, and a worker with thousands of performances waiting pays it per
/// performance (a 5 s look cost ~20% of a start at 8,000 waiting).
const STORE_WAIT: Duration = Duration::from_secs(60);

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

/// A performance's notes kept in a store: what a leased performance reads instead of the stage
/// folder's inbox file, so a note sent from any machine reaches whichever worker performs it.
pub struct StoreNotes {
    store: Arc<dyn Store>,
    performance: String,
    /// The director notes already in the performance's journal, oldest first: the store's
    /// notes they account for are not delivered again when another worker resumes it.
    delivered: Vec<String>,
}

impl StoreNotes {
    /// The notes of `performance` in `store`, continuing after those its journal so far
    /// `delivered` (the texts of its `director_note` events, oldest first).
    pub fn new(store: Arc<dyn Store>, performance: &str, delivered: Vec<String>) -> StoreNotes {
        StoreNotes {
            store,
            performance: performance.to_string(),
            delivered,
        }
    }
}

/// A performance's inbox while it runs: read before each model call and polled between.
pub(crate) struct Inbox {
    source: Arc<Source>,
    /// The poller; `None` outside a tokio runtime (the hook still reads before each call).
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Where the notes come from: the one reader of the poller and the hook.
enum Source {
    File(InboxFile),
    Store(StoreInbox),
}

/// The inbox file and how far it has been read.
struct InboxFile {
    path: PathBuf,
    read: Mutex<Reader>,
    notes: NoteSender,
}

/// How far the inbox file has been read, and a line still being written.
#[derive(Default)]
struct Reader {
    at: u64,
    partial: String,
}

/// The store's notes and the number of the last one delivered (`None` until the journal's
/// notes have been matched with the store's).
struct StoreInbox {
    from: StoreNotes,
    cursor: tokio::sync::Mutex<Option<u64>>,
    notes: NoteSender,
}

impl Inbox {
    /// Opens the inbox file of performance `id` and starts polling it when inside a tokio
    /// runtime.
    pub(crate) fn open(state_dir: &Path, id: &str, notes: NoteSender) -> Inbox {
        Inbox::start(Source::File(InboxFile {
            path: inbox_path(state_dir, id),
            read: Mutex::default(),
            notes,
        }))
    }

    /// Reads the notes from the store, waiting for them when inside a tokio runtime.
    pub(crate) fn from_store(from: StoreNotes, notes: NoteSender) -> Inbox {
        Inbox::start(Source::Store(StoreInbox {
            from,
            cursor: tokio::sync::Mutex::new(None),
            notes,
        }))
    }

    fn start(source: Source) -> Inbox {
        let source = Arc::new(source);
        let task = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let source = source.clone();
            runtime.spawn(async move { source.poll().await })
        });
        Inbox { source, task }
    }

    /// Delivers the notes sent since the last read now, without waiting for the next poll.
    pub(crate) async fn check(&self) {
        self.source.deliver().await;
    }

    /// The notes hook: reads the inbox, then hands every queued note to the actor, so a note
    /// already sent is in the next model call.
    pub(crate) fn hook(&self, notes: Arc<Notes>) -> Arc<dyn Hook> {
        Arc::new(ReadThenDeliver {
            source: self.source.clone(),
            notes,
        })
    }

    /// Stops watching and removes the inbox file: notes sent later are refused, since the
    /// performance is no longer running (the store refuses them once it is finished).
    pub(crate) fn close(self) {
        if let Source::File(file) = &*self.source {
            let _ = std::fs::remove_file(&file.path);
        }
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The notes hook of a production; see [`Inbox::hook`].
struct ReadThenDeliver {
    source: Arc<Source>,
    notes: Arc<Notes>,
}

#[async_trait]
impl Hook for ReadThenDeliver {
    async fn between_turns(&self, at: &mut Between<'_>) -> Control {
        self.source.deliver().await;
        self.notes.between_turns(at).await
    }
}

impl Source {
    /// Hands the new notes to the performance; false once it has ended.
    async fn deliver(&self) -> bool {
        match self {
            Source::File(file) => file.deliver(),
            Source::Store(store) => store.deliver().await.unwrap_or_else(|e| {
                // The poller or the next turn looks again; an outage must not end the turn.
                tracing::warn!("cannot read the director notes: {e}");
                true
            }),
        }
    }

    /// Delivers notes as they arrive until the performance ends.
    async fn poll(&self) {
        match self {
            Source::File(file) => loop {
                tokio::time::sleep(POLL).await;
                if !file.deliver() {
                    return;
                }
            },
            Source::Store(store) => store.poll().await,
        }
    }
}

impl StoreInbox {
    /// Delivers each note as the store says one came (NOTIFY on PostgreSQL, a poll on SQLite).
    async fn poll(&self) {
        loop {
            let after = self.cursor.lock().await.unwrap_or(0);
            let from = &self.from;
            let woken = from
                .store
                .wait_notes(&from.performance, after, STORE_WAIT)
                .await;
            match self.deliver().await {
                Ok(false) => return,
                // Delivered some: look for more at once.
                Ok(true) if self.cursor.lock().await.unwrap_or(0) > after => {}
                // Nothing new (a timeout; it finished; another worker's lease): a pause keeps
                // a wait that returns at once from spinning.
                Ok(true) => tokio::time::sleep(POLL).await,
                Err(e) => {
                    tracing::warn!("cannot read the director notes: {e}");
                    tokio::time::sleep(POLL).await;
                }
            }
            if let Err(e) = woken {
                tracing::debug!("waiting for director notes: {e}");
            }
        }
    }

    /// Hands the notes sent since the last delivery to the performance; false once it ended.
    async fn deliver(&self) -> Result<bool, improv_store::StoreError> {
        // Held while sending, so notes reach the actor in order and once.
        let mut cursor = self.cursor.lock().await;
        let after = match *cursor {
            Some(after) => after,
            None => {
                let all = self.from.store.notes(&self.from.performance, 0).await?;
                let after = already_delivered(&all, &self.from.delivered);
                *cursor = Some(after);
                after
            }
        };
        let new = self.from.store.notes(&self.from.performance, after).await?;
        for note in new {
            if !self.notes.send(note.text) {
                return Ok(false);
            }
            *cursor = Some(note.n);
        }
        Ok(true)
    }
}

/// The number of the last of the store's `notes` that the journal's director notes account
/// for: the longest run of them, from the first, found in `delivered` in order. A note taken
/// by a worker that died before its journal recorded it is delivered again.
fn already_delivered(notes: &[improv_store::Note], delivered: &[String]) -> u64 {
    let mut rest = delivered.iter();
    let mut last = 0;
    for note in notes {
        if !rest.any(|text| *text == note.text) {
            break;
        }
        last = note.n;
    }
    last
}

impl InboxFile {
    /// Hands the new notes of the file to the performance; false once it has ended.
    fn deliver(&self) -> bool {
        // Poisoning needs a panic while reading; the offsets are still sound then. The lock
        // is held while sending, so notes reach the actor in the order they were written.
        let mut r = self.read.lock().unwrap_or_else(|e| e.into_inner());
        let Reader { at, partial } = &mut *r;
        read_new(&self.path, at, partial)
            .into_iter()
            .all(|text| self.notes.send(text))
    }
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
    use improv_kernel::Message;

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

    fn notes(texts: &[&str]) -> Vec<improv_store::Note> {
        (1..)
            .zip(texts)
            .map(|(n, text)| improv_store::Note {
                performance: "p".into(),
                n,
                text: (*text).into(),
                created_at: 0,
            })
            .collect()
    }

    /// After a takeover, the notes the journal holds are not delivered again; one a dead
    /// worker took but never recorded is, and so is every note after it.
    #[test]
    fn the_journal_tells_which_store_notes_were_delivered() {
        let store = notes(&["a", "b", "c", "d"]);
        let journal = |t: &[&str]| t.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(already_delivered(&store, &journal(&[])), 0);
        // A check's note ("fix x") between them does not count as one of the store's.
        assert_eq!(already_delivered(&store, &journal(&["a", "fix x", "b"])), 2);
        assert_eq!(already_delivered(&store, &journal(&["a", "c"])), 1);
        assert_eq!(
            already_delivered(&store, &journal(&["a", "b", "c", "d"])),
            4
        );
        assert_eq!(already_delivered(&store, &journal(&["b", "a"])), 1);
    }

    /// The poller, the notes hook and `check` race on one file; every note reaches the
    /// conversation once, in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_poller_and_the_hook_never_deliver_a_note_twice() {
        let dir = tempfile::tempdir().unwrap();
        let (sender, notes) = Notes::channel();
        let inbox = Inbox::open(dir.path(), "p", sender);
        let hook = inbox.hook(Arc::new(notes));
        std::fs::create_dir_all(dir.path().join(NOTES_DIR)).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(inbox_path(dir.path(), "p"))
            .unwrap();
        let (spent, mut conversation) = (improv_kernel::Spent::default(), Vec::new());
        let mut model: Arc<dyn improv_kernel::Model> =
            Arc::new(improv_kernel::ScriptedModel::new([]));
        let sent: Vec<String> = (0..400).map(|i| format!("note {i}")).collect();
        for (i, text) in sent.iter().enumerate() {
            let line = serde_json::to_string(&Line { text: text.clone() }).unwrap();
            file.write_all(format!("{line}\n").as_bytes()).unwrap();
            if i % 2 == 0 {
                inbox.check().await;
            }
            let mut between = Between {
                turn: 1,
                spent: &spent,
                context_tokens: 0,
                conversation: &mut conversation,
                model: &mut model,
                events: Vec::new(),
                spend: Vec::new(),
                cancel: &Default::default(),
            };
            assert_eq!(hook.between_turns(&mut between).await, Control::Continue);
            // Written before the hook ran, so delivered by it, whatever the poller did.
            assert_eq!(conversation.len(), i + 1);
            if i % 50 == 0 {
                // Give the poller its turns while notes keep coming.
                tokio::time::sleep(POLL).await;
            }
        }
        let got: Vec<&str> = conversation
            .iter()
            .filter_map(|m| match m {
                Message::User { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(got, sent);
    }
}
