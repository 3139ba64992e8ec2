//! One interface to a stage's memory, whichever database holds it: [`MemoryBackend`], with the
//! stage's own SQLite file ([`crate::Memory`]) by default and the PostgreSQL store
//! ([`crate::PgMemory`]) when a performance is performed from one. The props and every caller
//! see the same results (ids, best first, snippets) from both.

use crate::store::{Entry, Found, Memory, MemoryError, Provenance, Remembered};
use async_trait::async_trait;

/// A stage's memory: save, search, list, edit and forget notes.
#[async_trait]
pub trait MemoryBackend: Send + Sync + std::fmt::Debug {
    /// Saves `text`. With a `key`, replaces the memory saved under that key, if any.
    async fn remember(
        &self,
        text: &str,
        tags: &[String],
        key: Option<&str>,
        by: &Provenance,
    ) -> Result<Remembered, MemoryError>;

    /// The memories matching any word of `query`, those matching more ranking higher; the most
    /// recent when it has no words. Any text is a valid query: it is never parsed as syntax.
    async fn recall(&self, query: &str, limit: usize) -> Result<Vec<Found>, MemoryError>;

    /// The most recently saved or changed memories, newest first.
    async fn recent(&self, limit: usize) -> Result<Vec<Entry>, MemoryError>;

    /// Every memory, oldest first.
    async fn all(&self) -> Result<Vec<Entry>, MemoryError>;

    /// The memory `id`.
    async fn get(&self, id: i64) -> Result<Entry, MemoryError>;

    /// Replaces the text of memory `id`; returns it as it is now.
    async fn edit(&self, id: i64, text: &str) -> Result<Entry, MemoryError>;

    /// Deletes memory `id`; returns what it was.
    async fn forget(&self, id: i64) -> Result<Entry, MemoryError>;
}

/// Runs SQLite work on tokio's blocking pool, on a clone of the memory (one shared connection).
async fn blocking<T: Send + 'static>(
    memory: &Memory,
    work: impl FnOnce(&Memory) -> Result<T, MemoryError> + Send + 'static,
) -> Result<T, MemoryError> {
    let memory = memory.clone();
    tokio::task::spawn_blocking(move || work(&memory))
        .await
        .map_err(|e| MemoryError::Interrupted(e.to_string()))?
}

#[async_trait]
impl MemoryBackend for Memory {
    async fn remember(
        &self,
        text: &str,
        tags: &[String],
        key: Option<&str>,
        by: &Provenance,
    ) -> Result<Remembered, MemoryError> {
        let (text, tags, key, by) = (
            text.to_string(),
            tags.to_vec(),
            key.map(str::to_string),
            by.clone(),
        );
        blocking(self, move |m| m.remember(&text, &tags, key.as_deref(), &by)).await
    }

    async fn recall(&self, query: &str, limit: usize) -> Result<Vec<Found>, MemoryError> {
        let query = query.to_string();
        blocking(self, move |m| m.recall(&query, limit)).await
    }

    async fn recent(&self, limit: usize) -> Result<Vec<Entry>, MemoryError> {
        blocking(self, move |m| m.recent(limit)).await
    }

    async fn all(&self) -> Result<Vec<Entry>, MemoryError> {
        blocking(self, Memory::all).await
    }

    async fn get(&self, id: i64) -> Result<Entry, MemoryError> {
        blocking(self, move |m| m.get(id)).await
    }

    async fn edit(&self, id: i64, text: &str) -> Result<Entry, MemoryError> {
        let text = text.to_string();
        blocking(self, move |m| m.edit(id, &text)).await
    }

    async fn forget(&self, id: i64) -> Result<Entry, MemoryError> {
        blocking(self, move |m| m.forget(id)).await
    }
}
