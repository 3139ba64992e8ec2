//! The memory store: one SQLite file per stage, a `memories` table and its FTS5 index, kept in
//! step by triggers. WAL mode and a busy timeout let two performances of a stage write at once.

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The memory's file name inside a stage's state directory (`.improv/`).
pub const MEMORY_FILE: &str = "memory.db";

/// The most bytes one memory may hold: memories are notes, not documents.
pub const MAX_TEXT: usize = 4_000;

/// How long a write waits for another process's write to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The most search terms taken from a query.
const MAX_TERMS: usize = 32;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS memories (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    text TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '',
    key TEXT UNIQUE,
    actor TEXT NOT NULL,
    performance TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE VIRTUAL TABLE IF NOT EXISTS memories_fts USING fts5(
    text, tags, key, content = 'memories', content_rowid = 'id',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS memories_ai AFTER INSERT ON memories BEGIN
    INSERT INTO memories_fts(rowid, text, tags, key) VALUES (new.id, new.text, new.tags, new.key);
END;
CREATE TRIGGER IF NOT EXISTS memories_ad AFTER DELETE ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, text, tags, key)
        VALUES ('delete', old.id, old.text, old.tags, old.key);
END;
CREATE TRIGGER IF NOT EXISTS memories_au AFTER UPDATE ON memories BEGIN
    INSERT INTO memories_fts(memories_fts, rowid, text, tags, key)
        VALUES ('delete', old.id, old.text, old.tags, old.key);
    INSERT INTO memories_fts(rowid, text, tags, key) VALUES (new.id, new.text, new.tags, new.key);
END;
PRAGMA user_version = 1;
";

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

const COLUMNS: &str =
    "m.id, m.text, m.tags, m.key, m.actor, m.performance, m.created_at, m.updated_at";

/// What can go wrong with the memory. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot create the state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the memory at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("memory database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("no memory #{0}; `improv memory list` shows the ids")]
    NotFound(i64),
    #[error("a memory needs some text")]
    Empty,
    #[error("the memory is {len} bytes; keep it under {MAX_TEXT} (a short note, not a document)")]
    TooLong { len: usize },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The PostgreSQL store's database: its message names the store, password hidden.
    #[error("memory in the store: {0}")]
    Store(#[from] improv_store::StoreError),
    #[error("the memory call did not finish: {0}")]
    Interrupted(String),
}

/// Who saved a memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provenance {
    pub actor: String,
    pub performance: String,
}

impl Provenance {
    pub fn new(actor: impl Into<String>, performance: impl Into<String>) -> Self {
        Provenance {
            actor: actor.into(),
            performance: performance.into(),
        }
    }
}

/// One memory.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Entry {
    pub id: i64,
    pub text: String,
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub actor: String,
    pub performance: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub updated_at: String,
}

/// A memory that matched a search, best first.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Found {
    #[serde(flatten)]
    pub entry: Entry,
    /// A short excerpt of the text around the matching words.
    pub snippet: String,
}

/// What [`Memory::remember`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Remembered {
    pub id: i64,
    /// Whether it replaced the memory with the same key.
    pub replaced: bool,
}

/// A stage's memory in its SQLite file. Cheap to clone: clones share one connection, on which
/// calls are serialized.
#[derive(Clone)]
pub struct Memory {
    path: PathBuf,
    connection: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory").field("path", &self.path).finish()
    }
}

impl Memory {
    /// Opens (creating as needed) `<state_dir>/memory.db`.
    pub fn open_in(state_dir: &Path) -> Result<Self, MemoryError> {
        std::fs::create_dir_all(state_dir).map_err(|source| MemoryError::CreateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        Memory::open(&state_dir.join(MEMORY_FILE))
    }

    /// Opens (creating as needed) the memory file at `path`.
    pub fn open(path: &Path) -> Result<Self, MemoryError> {
        let open_error = |source| MemoryError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut connection = improv_sqlite::open(path, BUSY_TIMEOUT).map_err(open_error)?;
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(open_error)?;
        tx.execute_batch(SCHEMA).map_err(open_error)?;
        tx.commit().map_err(open_error)?;
        Ok(Memory {
            path: path.to_path_buf(),
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    /// The file this memory lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn connection(&self) -> MutexGuard<'_, Connection> {
        // A panic while the lock was held leaves no half-done work: SQLite rolls back an
        // unfinished transaction, so the connection is still sound.
        self.connection.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Saves `text`. With a `key`, replaces the memory saved under that key, if any.
    pub fn remember(
        &self,
        text: &str,
        tags: &[String],
        key: Option<&str>,
        by: &Provenance,
    ) -> Result<Remembered, MemoryError> {
        let text = checked_text(text)?;
        let tags = normalize_tags(tags);
        let key = key.map(str::trim).filter(|k| !k.is_empty());
        let mut connection = self.connection();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let existing: Option<i64> = match key {
            Some(key) => tx
                .query_row("SELECT id FROM memories WHERE key = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()?,
            None => None,
        };
        let remembered = match existing {
            Some(id) => {
                tx.execute(
                    &format!(
                        "UPDATE memories SET text = ?1, tags = ?2, actor = ?3, performance = ?4,
                         updated_at = {NOW} WHERE id = ?5"
                    ),
                    params![text, tags, by.actor, by.performance, id],
                )?;
                Remembered { id, replaced: true }
            }
            None => {
                tx.execute(
                    &format!(
                        "INSERT INTO memories (text, tags, key, actor, performance, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, {NOW}, {NOW})"
                    ),
                    params![text, tags, key, by.actor, by.performance],
                )?;
                Remembered {
                    id: tx.last_insert_rowid(),
                    replaced: false,
                }
            }
        };
        tx.commit()?;
        Ok(remembered)
    }

    /// The memories that best match `query`, best first; the most recent when the query has no
    /// words. Any text is a valid query: it is searched word by word, never parsed as FTS5
    /// syntax, and a memory matching more of the words ranks higher.
    pub fn recall(&self, query: &str, limit: usize) -> Result<Vec<Found>, MemoryError> {
        let Some(matcher) = fts_query(query) else {
            return Ok(self
                .recent(limit)?
                .into_iter()
                .map(|entry| Found {
                    snippet: entry.text.clone(),
                    entry,
                })
                .collect());
        };
        let connection = self.connection();
        let mut statement = connection.prepare_cached(&format!(
            "SELECT {COLUMNS}, snippet(memories_fts, 0, '', '', '…', 24)
             FROM memories_fts JOIN memories m ON m.id = memories_fts.rowid
             WHERE memories_fts MATCH ?1
             ORDER BY bm25(memories_fts, 1.0, 2.0, 2.0), m.id DESC
             LIMIT ?2"
        ))?;
        let found = statement
            .query_map(params![matcher, limit as i64], |row| {
                Ok(Found {
                    entry: entry(row)?,
                    snippet: row.get(8)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(found)
    }

    /// The most recently saved or changed memories, newest first.
    pub fn recent(&self, limit: usize) -> Result<Vec<Entry>, MemoryError> {
        let connection = self.connection();
        let mut statement = connection.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM memories m ORDER BY m.updated_at DESC, m.id DESC LIMIT ?1"
        ))?;
        let entries = statement
            .query_map([limit as i64], entry)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(entries)
    }

    /// Every memory, oldest first.
    pub fn all(&self) -> Result<Vec<Entry>, MemoryError> {
        let connection = self.connection();
        let mut statement = connection
            .prepare_cached(&format!("SELECT {COLUMNS} FROM memories m ORDER BY m.id"))?;
        let entries = statement
            .query_map([], entry)?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(entries)
    }

    /// The memory `id`.
    pub fn get(&self, id: i64) -> Result<Entry, MemoryError> {
        self.connection()
            .query_row(
                &format!("SELECT {COLUMNS} FROM memories m WHERE m.id = ?1"),
                [id],
                entry,
            )
            .optional()?
            .ok_or(MemoryError::NotFound(id))
    }

    /// Replaces the text of memory `id`; returns it as it is now.
    pub fn edit(&self, id: i64, text: &str) -> Result<Entry, MemoryError> {
        let text = checked_text(text)?;
        let changed = self.connection().execute(
            &format!("UPDATE memories SET text = ?1, updated_at = {NOW} WHERE id = ?2"),
            params![text, id],
        )?;
        if changed == 0 {
            return Err(MemoryError::NotFound(id));
        }
        self.get(id)
    }

    /// Deletes memory `id`; returns what it was.
    pub fn forget(&self, id: i64) -> Result<Entry, MemoryError> {
        let mut connection = self.connection();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let gone = tx
            .query_row(
                &format!("SELECT {COLUMNS} FROM memories m WHERE m.id = ?1"),
                [id],
                entry,
            )
            .optional()?
            .ok_or(MemoryError::NotFound(id))?;
        tx.execute("DELETE FROM memories WHERE id = ?1", [id])?;
        tx.commit()?;
        Ok(gone)
    }
}

fn entry(row: &Row<'_>) -> rusqlite::Result<Entry> {
    let tags: String = row.get(2)?;
    Ok(Entry {
        id: row.get(0)?,
        text: row.get(1)?,
        tags: tags.split_whitespace().map(str::to_string).collect(),
        key: row.get(3)?,
        actor: row.get(4)?,
        performance: row.get(5)?,
        created_at: row.get(6)?,
        updated_at: row.get(7)?,
    })
}

pub(crate) fn checked_text(text: &str) -> Result<&str, MemoryError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(MemoryError::Empty);
    }
    if text.len() > MAX_TEXT {
        return Err(MemoryError::TooLong { len: text.len() });
    }
    Ok(text)
}

/// Tags as stored: each one word (inner spaces become `-`), separated by spaces.
pub(crate) fn normalize_tags(tags: &[String]) -> String {
    tags.iter()
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join("-"))
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The words a query searches for: its runs of letters and digits, at most [`MAX_TERMS`], so no
/// character the user types can be query syntax in either backend.
pub(crate) fn query_words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(MAX_TERMS)
}

/// An FTS5 query that matches any of the words of `text`, each quoted so that nothing the user
/// types (quotes, `AND`, `NEAR(`, `*`, `:`) is read as query syntax. `None` when it has no words.
fn fts_query(text: &str) -> Option<String> {
    let terms: Vec<String> = query_words(text).map(|w| format!("\"{w}\"")).collect();
    (!terms.is_empty()).then(|| terms.join(" OR "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_are_quoted_words() {
        assert_eq!(fts_query("foo\"bar"), Some("\"foo\" OR \"bar\"".into()));
        assert_eq!(fts_query("AND("), Some("\"AND\"".into()));
        assert_eq!(fts_query("  ()\"*: "), None);
        assert_eq!(
            fts_query("café-crème"),
            Some("\"café\" OR \"crème\"".into())
        );
    }

    #[test]
    fn tags_are_single_words() {
        let tags = ["build".to_string(), " ci  speed ".into(), "".into()];
        assert_eq!(normalize_tags(&tags), "build ci-speed");
    }
}
