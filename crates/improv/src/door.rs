//! `improv door status`: each door of the stage, its next due time, its backoff and its latest
//! firings (performed, missed, failed), read from the store the daemon keeps them in.

use crate::store::{STORE_ENV, named, open};
use anyhow::Result;
use clap::{Args, Subcommand};
use improv_door::schedule::show;
use improv_door::{Clock, SystemClock};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum DoorCommand {
    /// Each door: its kind, next due time, backoff and latest firings.
    Status(StatusArgs),
}

#[derive(Args)]
pub struct StatusArgs {
    /// The store the doors' daemon uses: postgres://USER@HOST/DB or sqlite:PATH.
    #[arg(long, env = STORE_ENV, value_name = "URL", hide_env_values = true)]
    store: Option<String>,
    /// How many firings to show per door, newest first.
    #[arg(short = 'n', long, default_value_t = 5)]
    limit: usize,
    /// JSON output, for scripts.
    #[arg(long)]
    json: bool,
}

/// `improv door …`
pub async fn run(stage: &improv_stage::Stage, command: DoorCommand) -> Result<ExitCode> {
    let DoorCommand::Status(args) = command;
    let store = open(&named(args.store)?)?;
    let doors =
        improv_door::status::status(stage, store.as_ref(), SystemClock.now(), args.limit).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doors)?);
        return Ok(ExitCode::SUCCESS);
    }
    if doors.is_empty() {
        println!("the stage has no [[door]]; `improv init` shows how to write one");
    }
    for d in &doors {
        let next = d.next_due.map_or_else(|| "—".to_string(), show);
        println!("{} ({}): next due {next}", d.name, d.kind);
        if d.backoff.failures > 0 {
            println!(
                "  backing off: {} failures in a row, until {}",
                d.backoff.failures,
                show(d.backoff.until)
            );
        }
        for f in &d.firings {
            let performance = f.performance.as_deref().unwrap_or("-");
            println!("  {}  {performance}  {}", show(f.due), f.note);
        }
    }
    Ok(ExitCode::SUCCESS)
}
