//! The performance index in the store: `improv log --store URL` lists the performances every
//! worker on every machine performs or performed (state, outcome, intent, started, worker), and
//! `improv log --store URL ID` (or `improv show --store URL ID`) prints one's events as stored
//! so far. An id may be a unique prefix ([`crate::store::resolve`]).

use crate::view::{JsonLines, Terminal, stdout_error};
use anyhow::{Result, anyhow};
use improv_kernel::Observer;
use improv_store::{ListFilter, PerformanceRecord, State, UnixMillis};
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// `improv log --store URL`: the newest `limit` performances in the store.
pub async fn list(store: &str, limit: usize, json: bool) -> Result<ExitCode> {
    let store = crate::store::open(store)?;
    let records = store
        .list(&ListFilter {
            limit: limit.max(1),
            ..ListFilter::default()
        })
        .await?;
    let mut out = std::io::stdout().lock();
    if json {
        for r in &records {
            writeln!(out, "{}", serde_json::to_string(r)?).map_err(stdout_error)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if records.is_empty() {
        eprintln!(
            "no performances in the store {} yet: `improv run --detach` queues one",
            store.describe()
        );
        return Ok(ExitCode::SUCCESS);
    }
    writeln!(
        out,
        "{:<26}  {:<20}  {:<8}  {:<11}  {:<24}  INTENT",
        "ID", "STARTED", "STATE", "OUTCOME", "WORKER"
    )
    .map_err(stdout_error)?;
    for r in &records {
        writeln!(out, "{}", row(r)).map_err(stdout_error)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One performance as `improv log --store` lists it.
fn row(r: &PerformanceRecord) -> String {
    let intent: String = r
        .intent
        .replace(['\n', '\r'], " ")
        .chars()
        .take(60)
        .collect();
    format!(
        "{:<26}  {:<20}  {:<8}  {:<11}  {:<24}  {}",
        r.id,
        when(r.created_at),
        state_word(r.state),
        r.outcome.map_or("-", |o| o.as_str()),
        r.worker.as_deref().unwrap_or("-"),
        improv_edges::policy::printable(&intent)
    )
}

fn state_word(state: State) -> &'static str {
    match state {
        State::Queued => "queued",
        State::Leased => "leased",
        State::Finished => "finished",
    }
}

/// A store time as UTC, to the second.
fn when(at: UnixMillis) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(at).unwrap_or(0));
    humantime::format_rfc3339_seconds(at).to_string()
}

/// `improv log --store URL ID`: the performance's events stored so far, then how it stands.
pub async fn show(store: &str, id: &str, json: bool, verbose: bool) -> Result<ExitCode> {
    let store = crate::store::open(store)?;
    let id = crate::store::resolve(store.as_ref(), id).await?;
    let record = store.performance(&id).await?;
    let view: Arc<dyn Observer> = if json {
        Arc::new(JsonLines)
    } else {
        Arc::new(Terminal::new(verbose))
    };
    for event in store.events(&id, 0, 0).await? {
        view.observe(&event).map_err(|e| anyhow!("{e}"))?;
    }
    if !json {
        eprintln!("{}", standing(&record));
    }
    Ok(ExitCode::SUCCESS)
}

/// Where a performance stands, in one line for the terminal.
fn standing(r: &PerformanceRecord) -> String {
    match (r.state, r.outcome) {
        (State::Finished, outcome) => format!(
            "{} finished: {} ({})",
            r.id,
            outcome.map_or("unknown", |o| o.as_str()),
            r.reason
        ),
        (State::Leased, _) => format!(
            "{} is being performed by {} · watch it with: improv show --follow {}",
            r.id,
            r.worker.as_deref().unwrap_or("a worker"),
            r.id
        ),
        (State::Queued, _) => format!("{} is queued, waiting for a worker", r.id),
    }
}
