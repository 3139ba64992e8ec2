//! The PostgreSQL schema, one migration per version, applied in order under an advisory lock
//! and recorded in `schema_migrations`; a database already at a newer version is refused.

use super::Namer;
use crate::StoreError;
use crate::rows::now_millis;

/// Entry `i` brings the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE performances (
    id TEXT PRIMARY KEY, stage TEXT NOT NULL, intent TEXT NOT NULL, model TEXT,
    origin TEXT NOT NULL, state TEXT NOT NULL, outcome TEXT, reason TEXT NOT NULL DEFAULT '',
    worker TEXT, epoch BIGINT NOT NULL DEFAULT 0, lease_expires BIGINT NOT NULL DEFAULT 0,
    last_seq BIGINT NOT NULL DEFAULT 0, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL);
CREATE INDEX performances_claimable ON performances (created_at, id) WHERE state <> 'finished';
CREATE INDEX performances_by_time ON performances (created_at DESC, id DESC);
CREATE TABLE events (
    performance TEXT NOT NULL, seq BIGINT NOT NULL, body TEXT NOT NULL, blobs TEXT,
    PRIMARY KEY (performance, seq));
CREATE TABLE blobs (hash TEXT PRIMARY KEY, body BYTEA NOT NULL);
CREATE TABLE firings (
    door TEXT NOT NULL, due BIGINT NOT NULL, performance TEXT, note TEXT NOT NULL,
    PRIMARY KEY (door, due));
CREATE TABLE outbox (
    performance TEXT NOT NULL, seq BIGINT NOT NULL, door TEXT NOT NULL,
    conversation TEXT NOT NULL, body TEXT NOT NULL, sent_id TEXT,
    attempts INTEGER NOT NULL DEFAULT 0, created_at BIGINT NOT NULL,
    PRIMARY KEY (performance, seq));
CREATE INDEX outbox_pending ON outbox (door, created_at) WHERE sent_id IS NULL;
CREATE TABLE kv (scope TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (scope, key));
",
    "
CREATE TABLE notes (
    performance TEXT NOT NULL, n BIGINT NOT NULL, text TEXT NOT NULL,
    created_at BIGINT NOT NULL, PRIMARY KEY (performance, n));
",
    "
CREATE TABLE approvals (
    performance TEXT NOT NULL, n BIGINT NOT NULL, actor TEXT NOT NULL, prop TEXT NOT NULL,
    subject TEXT NOT NULL, rule TEXT NOT NULL, answer TEXT, note TEXT,
    created_at BIGINT NOT NULL, answered_at BIGINT, PRIMARY KEY (performance, n));
",
    "
ALTER TABLE performances ADD COLUMN budget TEXT;
",
    // A value's version (compare-and-set) and when it was last written (expiry); values
    // written before this version count as written now, so no thread under way is forgotten.
    "
ALTER TABLE kv ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE kv ADD COLUMN updated_at BIGINT NOT NULL DEFAULT 0;
UPDATE kv SET updated_at = (extract(epoch FROM now()) * 1000)::BIGINT;
CREATE INDEX kv_by_age ON kv (scope, updated_at);
",
    // A writer that predates version 5 names no updated_at: its values count as written now
    // (the sweep also takes a 0 left meanwhile as now).
    "
ALTER TABLE kv ALTER COLUMN updated_at SET DEFAULT (extract(epoch FROM now()) * 1000)::BIGINT;
",
    // The director asked a performance to stop (`Store::stop`); its worker ends it.
    "
ALTER TABLE performances ADD COLUMN stop_requested BOOLEAN NOT NULL DEFAULT false;
",
    // A sweep of sent outbox rows that finds none old enough reads no row (it scanned them).
    "
CREATE INDEX outbox_sent ON outbox (created_at) WHERE sent_id IS NOT NULL;
",
    // Door-made performances expire (`Store::sweep_door_performances`): each door's newest are
    // found on (origin, created_at) (text_pattern_ops: `LIKE 'door:%'` reads a range of it
    // whatever the database's collation), and a blob goes once no performance refers to it.
    "
CREATE INDEX performances_by_origin ON performances (origin text_pattern_ops, created_at, id);
CREATE TABLE blob_refs (performance TEXT NOT NULL, hash TEXT NOT NULL,
    PRIMARY KEY (performance, hash));
CREATE INDEX blob_refs_by_hash ON blob_refs (hash);
INSERT INTO blob_refs (performance, hash)
    SELECT DISTINCT e.performance, r ->> 1 FROM events e, jsonb_array_elements(e.blobs::jsonb) r
    WHERE e.blobs IS NOT NULL;
",
    // A claim ends the claimable ones whose stop was asked: it reads these few, not every
    // unfinished performance.
    "
CREATE INDEX performances_stopping ON performances (id) WHERE stop_requested AND state <> 'finished';
",
    // A stage's identity (its `[stage] name`) beside the path it was queued from: a worker
    // serving named stages claims on (stage_name, created_at) among the unfinished ones.
    "
ALTER TABLE performances ADD COLUMN stage_name TEXT;
CREATE INDEX performances_by_stage ON performances (stage_name, created_at, id)
    WHERE state <> 'finished';
",
    // A firing is its stage's (`StageKey::id`), keyed by (stage, door, due): stages sharing
    // the database each fire their own doors of one name. Firings recorded before get the
    // stage '' (`rows::UNSTAGED`) and stay their door's under every stage (see `Firing`).
    "
ALTER TABLE firings ADD COLUMN stage TEXT NOT NULL DEFAULT '';
ALTER TABLE firings DROP CONSTRAINT firings_pkey;
ALTER TABLE firings ADD PRIMARY KEY (stage, door, due);
ALTER TABLE firings ALTER COLUMN stage DROP DEFAULT;
",
    // An outbound message is its stage's (`StageKey::id`): stages sharing the database each
    // send only their own through their door of one name. Messages put before (or by an improv
    // from before, hence the default) have the stage '' and go to their performance's stage
    // (`Store::outbox_pending`).
    "
ALTER TABLE outbox ADD COLUMN stage TEXT NOT NULL DEFAULT '';
DROP INDEX outbox_pending;
CREATE INDEX outbox_pending ON outbox (stage, door, created_at) WHERE sent_id IS NULL;
",
];

/// A number of our own for `pg_advisory_xact_lock`: "improv" in ASCII.
const LOCK: i64 = 0x0000_696d_7072_6f76;

/// Applies the migrations the database lacks; returns the version now applied.
pub(super) async fn migrate(
    namer: &Namer,
    client: &mut deadpool_postgres::Client,
) -> Result<u32, StoreError> {
    let err = |e: tokio_postgres::Error| namer.error(&e);
    let tx = client.transaction().await.map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
        .await
        .map_err(err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)",
    )
    .await
    .map_err(err)?;
    let row = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .map_err(err)?;
    let found = u32::try_from(row.get::<_, i32>(0)).unwrap_or(0);
    let known = u32::try_from(MIGRATIONS.len()).unwrap_or(u32::MAX);
    if found > known {
        return Err(StoreError::NewerSchema {
            store: namer.name.clone(),
            found,
            known,
        });
    }
    for (version, sql) in (1i32..).zip(MIGRATIONS).skip(found as usize) {
        tx.batch_execute(sql).await.map_err(err)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)",
            &[&version, &now_millis()],
        )
        .await
        .map_err(err)?;
    }
    tx.commit().await.map_err(err)?;
    Ok(known)
}
