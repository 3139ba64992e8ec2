//! `improv log` and `improv show`: looking back at past performances. Both write to stdout
//! through fallible writes, so a reader that closes the pipe early (`| head`) ends the command
//! quietly instead of a panic (see `view::ClosedStdout`).

use crate::perform::{load_stage, state_dir};
use crate::view::{Terminal, stdout_error};
use anyhow::Result;
use improv_kernel::Observer;
use improv_log::EventLog;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

fn open(stage: Option<PathBuf>) -> Result<EventLog> {
    let stage = load_stage(stage.as_deref(), true)?;
    Ok(EventLog::open(&state_dir(&stage))?)
}

pub fn list(stage: Option<PathBuf>, limit: usize, json: bool) -> Result<ExitCode> {
    let log = open(stage)?;
    let rows = log.list(limit)?;
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let short = log.short_ids(&ids)?;
    let mut out = std::io::stdout().lock();
    if json {
        for (r, short) in rows.iter().zip(&short) {
            writeln!(
                out,
                "{}",
                serde_json::json!({
                    "id": r.id, "short_id": short, "stage": r.stage, "intent": r.intent,
                    "model": r.model, "status": r.status.as_str(), "reason": r.reason,
                    "turns": r.turns, "input_tokens": r.input_tokens,
                    "output_tokens": r.output_tokens, "cost_usd": r.cost_usd,
                    "started_at": r.started_at, "finished_at": r.finished_at,
                    "elapsed_ms": r.elapsed_ms,
                })
            )
            .map_err(stdout_error)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        eprintln!("no performances yet: `improv run` starts one");
        return Ok(ExitCode::SUCCESS);
    }
    // The short form is what `improv show`, `note` and `run --resume` take; it grows when the
    // log holds ids that would make a shorter one ambiguous.
    let width = short.iter().map(String::len).max().unwrap_or(2).max(2);
    writeln!(
        out,
        "{:<width$}  {:<19}  {:<11}  {:>5}  {:>13}  {:>8}  {:>7}  INTENT",
        "ID", "STARTED", "STATUS", "TURNS", "TOKENS IN/OUT", "COST", "TIME"
    )
    .map_err(stdout_error)?;
    for (r, short) in rows.iter().zip(&short) {
        let intent = if r.intent.is_empty() {
            "(interactive)".to_string()
        } else {
            r.intent.replace('\n', " ").chars().take(60).collect()
        };
        let started: String = r.started_at.replace('T', " ").chars().take(19).collect();
        writeln!(
            out,
            "{:<width$}  {:<19}  {:<11}  {:>5}  {:>13}  {:>8}  {:>7}  {}",
            short,
            started,
            r.status.as_str(),
            r.turns,
            format!("{}/{}", r.input_tokens, r.output_tokens),
            format!("${:.4}", r.cost_usd),
            format!("{:.1}s", r.elapsed_ms as f64 / 1000.0),
            intent
        )
        .map_err(stdout_error)?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn show(stage: Option<PathBuf>, id: &str, json: bool, verbose: bool) -> Result<ExitCode> {
    let log = open(stage)?;
    let row = log.find(id)?;
    let events = log.events(&row.id)?;
    if json {
        let mut out = std::io::stdout().lock();
        for e in &events {
            writeln!(out, "{}", serde_json::to_string(e)?).map_err(stdout_error)?;
        }
    } else {
        let view = Terminal::new(verbose);
        for e in &events {
            view.observe(e)?;
        }
        if row.status == improv_log::Status::Interrupted
            && !events
                .iter()
                .any(|e| e.kind.name() == "performance_finished")
        {
            eprintln!(
                "■ interrupted (the process ended mid-performance) · continue with: improv run --resume {}",
                row.id
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
