//! A stage's memory in the PostgreSQL store, shared by every worker on every machine: one
//! `improv_memories` table for all stages (a `stage` column keeps them apart), searched with
//! PostgreSQL's full-text search: a stored `tsvector` (tags and key weigh more than the text, as
//! in the SQLite index) under a GIN index, matched with `websearch_to_tsquery` and ranked with
//! `ts_rank_cd`. Connections come from the store's own pool ([`improv_store::PgPool`]), so the
//! URL, TLS, timeouts and the hidden password are handled in one place.

use crate::backend::MemoryBackend;
use crate::store::{
    Entry, Found, MemoryError, Provenance, Remembered, checked_text, normalize_tags, query_words,
};
use async_trait::async_trait;
use improv_store::PgPool;
use tokio::sync::OnceCell;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

/// The table and its index, created on first use. Two processes starting together take turns
/// under an advisory lock (`CREATE ... IF NOT EXISTS` alone can race on the catalog).
const SCHEMA: &str = "
SELECT pg_advisory_xact_lock(hashtext('improv_memories'));
CREATE TABLE IF NOT EXISTS improv_memories (
    id BIGSERIAL PRIMARY KEY,
    stage TEXT NOT NULL,
    text TEXT NOT NULL,
    tags TEXT NOT NULL DEFAULT '',
    key TEXT,
    actor TEXT NOT NULL,
    performance TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    search TSVECTOR GENERATED ALWAYS AS (
        setweight(to_tsvector('english', tags || ' ' || coalesce(key, '')), 'A')
        || setweight(to_tsvector('english', text), 'B')
    ) STORED,
    UNIQUE (stage, key)
);
CREATE INDEX IF NOT EXISTS improv_memories_search ON improv_memories USING GIN (search);
CREATE INDEX IF NOT EXISTS improv_memories_recent ON improv_memories (stage, updated_at DESC);
";

/// The columns of an [`Entry`], in the order [`entry`] reads them; times as the SQLite backend
/// writes them (RFC 3339, UTC, milliseconds).
const COLUMNS: &str = "id, text, tags, key, actor, performance, \
     to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
     to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')";

/// A short excerpt around the matching words, unmarked, as the SQLite backend's `snippet`,
/// for a query `q` in the text search configuration `config`.
fn headline(config: &str) -> String {
    format!(
        "ts_headline('{config}', text, q, \
         'StartSel=\"\", StopSel=\"\", MaxWords=24, MinWords=12, MaxFragments=1, \
          FragmentDelimiter=\"…\"')"
    )
}

/// The notes matching a query of stop words only (`it`, `the`), whose `english` tsquery is
/// empty and matches nothing, while SQLite's index finds them: the words as written (the
/// `simple` configuration) against the notes' whole text. Unindexed, but such queries are rare
/// and the stage's notes few; it returns nothing when the `english` query has words.
const STOP_WORDS_ONLY: &str =
    "to_tsvector('simple', tags || ' ' || coalesce(key, '') || ' ' || text)";

/// One stage's memory in the PostgreSQL store.
pub struct PgMemory {
    pool: PgPool,
    stage: String,
    ready: OnceCell<()>,
}

impl std::fmt::Debug for PgMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgMemory")
            .field("store", &self.pool.name())
            .field("stage", &self.stage)
            .finish()
    }
}

impl PgMemory {
    /// The memory of the stage named `stage` in the database of `pool`; the table is created
    /// on first use.
    pub fn new(pool: PgPool, stage: impl Into<String>) -> PgMemory {
        PgMemory {
            pool,
            stage: stage.into(),
            ready: OnceCell::new(),
        }
    }

    /// A connection, the table made first (once per instance).
    async fn client(&self) -> Result<deadpool_postgres::Client, MemoryError> {
        self.ready
            .get_or_try_init(|| async {
                let mut client = self.pool.client().await?;
                let tx = client.transaction().await.map_err(|e| self.err(&e))?;
                tx.batch_execute(SCHEMA).await.map_err(|e| self.err(&e))?;
                tx.commit().await.map_err(|e| self.err(&e))?;
                Ok::<(), MemoryError>(())
            })
            .await?;
        Ok(self.pool.client().await?)
    }

    fn err(&self, error: &tokio_postgres::Error) -> MemoryError {
        MemoryError::Store(self.pool.error(error))
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, MemoryError> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.map_err(|e| self.err(&e))?;
        client
            .query(&statement, params)
            .await
            .map_err(|e| self.err(&e))
    }

    /// The one row of memory `id` of this stage, through `sql` (which returns [`COLUMNS`]).
    async fn one(&self, sql: &str, id: i64, text: Option<&str>) -> Result<Entry, MemoryError> {
        let rows = match text {
            Some(text) => self.query(sql, &[&self.stage, &id, &text]).await?,
            None => self.query(sql, &[&self.stage, &id]).await?,
        };
        rows.first().map(entry).ok_or(MemoryError::NotFound(id))
    }
}

fn entry(row: &Row) -> Entry {
    let tags: String = row.get(2);
    Entry {
        id: row.get(0),
        text: row.get(1),
        tags: tags.split_whitespace().map(str::to_string).collect(),
        key: row.get(3),
        actor: row.get(4),
        performance: row.get(5),
        created_at: row.get(6),
        updated_at: row.get(7),
    }
}

/// A `websearch_to_tsquery` text matching any of the query's words: its words joined by `or`
/// (the only operator it is given; the words themselves hold no syntax). `None` when none.
fn websearch(text: &str) -> Option<String> {
    let words: Vec<&str> = query_words(text)
        .filter(|w| !w.eq_ignore_ascii_case("or"))
        .collect();
    (!words.is_empty()).then(|| words.join(" or "))
}

#[async_trait]
impl MemoryBackend for PgMemory {
    async fn remember(
        &self,
        text: &str,
        tags: &[String],
        key: Option<&str>,
        by: &Provenance,
    ) -> Result<Remembered, MemoryError> {
        let text = checked_text(text)?;
        let tags = normalize_tags(tags);
        let key = key.map(str::trim).filter(|k| !k.is_empty());
        // One statement: a key already saved is replaced, atomically, whoever saves it.
        let rows = self
            .query(
                "INSERT INTO improv_memories (stage, text, tags, key, actor, performance)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (stage, key) DO UPDATE SET text = EXCLUDED.text,
                     tags = EXCLUDED.tags, actor = EXCLUDED.actor,
                     performance = EXCLUDED.performance, updated_at = now()
                 RETURNING id, created_at <> updated_at",
                &[&self.stage, &text, &tags, &key, &by.actor, &by.performance],
            )
            .await?;
        let row = rows.first().ok_or(MemoryError::Interrupted(
            "the store returned no row for a saved memory".into(),
        ))?;
        Ok(Remembered {
            id: row.get(0),
            replaced: row.get(1),
        })
    }

    async fn recall(&self, query: &str, limit: usize) -> Result<Vec<Found>, MemoryError> {
        let Some(matcher) = websearch(query) else {
            let recent = self.recent(limit).await?;
            return Ok(recent
                .into_iter()
                .map(|entry| Found {
                    snippet: entry.text.clone(),
                    entry,
                })
                .collect());
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = self
            .query(
                &format!(
                    "SELECT {COLUMNS}, {}
                     FROM improv_memories, websearch_to_tsquery('english', $2) q
                     WHERE stage = $1 AND search @@ q
                     ORDER BY ts_rank_cd(search, q) DESC, id DESC LIMIT $3",
                    headline("english")
                ),
                &[&self.stage, &matcher, &limit],
            )
            .await?;
        if rows.is_empty() {
            rows = self
                .query(
                    &format!(
                        "SELECT {COLUMNS}, {}
                         FROM improv_memories, websearch_to_tsquery('simple', $2) q
                         WHERE stage = $1 AND numnode(websearch_to_tsquery('english', $2)) = 0
                             AND {STOP_WORDS_ONLY} @@ q
                         ORDER BY ts_rank_cd({STOP_WORDS_ONLY}, q) DESC, id DESC LIMIT $3",
                        headline("simple")
                    ),
                    &[&self.stage, &matcher, &limit],
                )
                .await?;
        }
        Ok(rows
            .iter()
            .map(|row| Found {
                entry: entry(row),
                snippet: row.get(8),
            })
            .collect())
    }

    async fn recent(&self, limit: usize) -> Result<Vec<Entry>, MemoryError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .query(
                &format!(
                    "SELECT {COLUMNS} FROM improv_memories WHERE stage = $1
                     ORDER BY updated_at DESC, id DESC LIMIT $2"
                ),
                &[&self.stage, &limit],
            )
            .await?;
        Ok(rows.iter().map(entry).collect())
    }

    async fn all(&self) -> Result<Vec<Entry>, MemoryError> {
        let rows = self
            .query(
                &format!("SELECT {COLUMNS} FROM improv_memories WHERE stage = $1 ORDER BY id"),
                &[&self.stage],
            )
            .await?;
        Ok(rows.iter().map(entry).collect())
    }

    async fn get(&self, id: i64) -> Result<Entry, MemoryError> {
        let sql = format!("SELECT {COLUMNS} FROM improv_memories WHERE stage = $1 AND id = $2");
        self.one(&sql, id, None).await
    }

    async fn edit(&self, id: i64, text: &str) -> Result<Entry, MemoryError> {
        let text = checked_text(text)?;
        let sql = format!(
            "UPDATE improv_memories SET text = $3, updated_at = now()
             WHERE stage = $1 AND id = $2 RETURNING {COLUMNS}"
        );
        self.one(&sql, id, Some(text)).await
    }

    async fn forget(&self, id: i64) -> Result<Entry, MemoryError> {
        let sql =
            format!("DELETE FROM improv_memories WHERE stage = $1 AND id = $2 RETURNING {COLUMNS}");
        self.one(&sql, id, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_is_its_words_joined_by_or() {
        assert_eq!(
            websearch("\"flaky\" -test OR (ci)"),
            Some("flaky or test or ci".into())
        );
        assert_eq!(websearch(" ()\"*: or "), None);
    }
}
