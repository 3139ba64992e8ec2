//! The SQLite index of performances (`.improv/improv.db`): its schema and migrations, the
//! connection settings, and the rows `list` and `find` return.

use crate::error::LogError;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Each migration moves the schema one version up; the index records which it has applied.
/// Append new ones; never edit an applied one.
const MIGRATIONS: &[&str] = &[
    // 1: the performances table.
    "CREATE TABLE performances (
        id TEXT PRIMARY KEY NOT NULL,
        stage TEXT NOT NULL,
        intent TEXT NOT NULL,
        model TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        turns INTEGER NOT NULL DEFAULT 0,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL NOT NULL DEFAULT 0,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        elapsed_ms INTEGER NOT NULL DEFAULT 0,
        log_path TEXT NOT NULL,
        pid INTEGER
    );
    CREATE INDEX performances_started_at ON performances (started_at);",
];

/// How long a writer waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens the index at `path` with the log's settings (WAL, synchronous=NORMAL, a busy timeout)
/// and brings its schema up to date.
pub(crate) fn connect(path: &Path) -> Result<Connection, LogError> {
    let db = |source| LogError::Db {
        path: path.to_path_buf(),
        source,
    };
    let mut conn = improv_sqlite::open(path, BUSY_TIMEOUT).map_err(db)?;
    migrate(&mut conn, path)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), LogError> {
    let db = |source| LogError::Db {
        path: path.to_path_buf(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version INTEGER PRIMARY KEY NOT NULL,
            applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
        );",
    )
    .map_err(db)?;
    let current: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |r| r.get(0),
        )
        .map_err(db)?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(LogError::NewerSchema {
            path: path.to_path_buf(),
            found: current,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql).map_err(db)?;
        tx.execute(
            "INSERT INTO schema_migrations (version) VALUES (?1)",
            params![i as i64 + 1],
        )
        .map_err(db)?;
    }
    tx.commit().map_err(db)
}

/// Where a performance stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Its writer is alive and performing.
    Running,
    Done,
    /// Every feedback check passed.
    Converged,
    /// The checks still failed when the attempts or a budget ran out.
    Exhausted,
    Stopped,
    /// The director interrupted it, or its writer died without finishing (a crash); it can be
    /// resumed either way.
    Interrupted,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Done => "done",
            Status::Converged => "converged",
            Status::Exhausted => "exhausted",
            Status::Stopped => "stopped",
            Status::Interrupted => "interrupted",
            Status::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Status> {
        Some(match s {
            "running" => Status::Running,
            "done" => Status::Done,
            "converged" => Status::Converged,
            "exhausted" => Status::Exhausted,
            "stopped" => Status::Stopped,
            "interrupted" => Status::Interrupted,
            "failed" => Status::Failed,
            _ => return None,
        })
    }
}

impl From<improv_kernel::Outcome> for Status {
    fn from(o: improv_kernel::Outcome) -> Status {
        match o {
            improv_kernel::Outcome::Done => Status::Done,
            improv_kernel::Outcome::Converged => Status::Converged,
            improv_kernel::Outcome::Exhausted => Status::Exhausted,
            improv_kernel::Outcome::Stopped => Status::Stopped,
            improv_kernel::Outcome::Interrupted => Status::Interrupted,
            improv_kernel::Outcome::Failed => Status::Failed,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One performance, as the index knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PerformanceRow {
    pub id: String,
    pub stage: String,
    pub intent: String,
    pub model: String,
    /// `running` only while its writer is alive; a dead writer's row reads `interrupted`.
    pub status: Status,
    /// Why it ended; empty while running.
    pub reason: String,
    pub turns: u32,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_usd: f64,
    /// RFC 3339, UTC, from the first `performance_started` event.
    pub started_at: String,
    /// RFC 3339, UTC, from the last `performance_finished` event.
    pub finished_at: Option<String>,
    /// Wall time across resumptions.
    pub elapsed_ms: u64,
    /// The performance's JSONL file.
    pub log_path: PathBuf,
}

pub(crate) const ROW_COLUMNS: &str = "id, stage, intent, model, status, reason, turns, \
     input_tokens, output_tokens, cost_usd, started_at, finished_at, elapsed_ms, log_path, pid";

/// Reads a row selected with [`ROW_COLUMNS`], reporting a live-less `running` as `interrupted`.
pub(crate) fn row(r: &Row<'_>) -> rusqlite::Result<PerformanceRow> {
    let status_text: String = r.get(4)?;
    let pid: Option<i64> = r.get(14)?;
    let mut status = Status::parse(&status_text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            4,
            rusqlite::types::Type::Text,
            format!("unknown performance status `{status_text}`").into(),
        )
    })?;
    if status == Status::Running && !pid.is_some_and(alive) {
        status = Status::Interrupted;
    }
    let mut reason: String = r.get(5)?;
    if status == Status::Interrupted && status_text == "running" {
        reason = "its process ended without finishing it (a crash); it can be resumed".into();
    }
    Ok(PerformanceRow {
        id: r.get(0)?,
        stage: r.get(1)?,
        intent: r.get(2)?,
        model: r.get(3)?,
        status,
        reason,
        turns: r.get(6)?,
        input_tokens: r.get::<_, i64>(7)?.max(0) as u64,
        output_tokens: r.get::<_, i64>(8)?.max(0) as u64,
        cost_usd: r.get(9)?,
        started_at: r.get(10)?,
        finished_at: r.get(11)?,
        elapsed_ms: r.get::<_, i64>(12)?.max(0) as u64,
        log_path: PathBuf::from(r.get::<_, String>(13)?),
    })
}

/// Whether a process with this id exists. A process we may not signal (EPERM) still exists.
pub(crate) fn alive(pid: i64) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 sends nothing; kill only checks that the process exists and may be
    // signalled. It touches no memory of ours.
    let r = unsafe { libc::kill(pid, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// One row by its exact id.
pub(crate) fn get(conn: &Connection, id: &str) -> rusqlite::Result<Option<PerformanceRow>> {
    conn.prepare_cached(&format!(
        "SELECT {ROW_COLUMNS} FROM performances WHERE id = ?1"
    ))?
    .query_row(params![id], row)
    .optional()
}
