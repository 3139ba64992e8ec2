//! `improv door status`: each door of the stage, its next due time, its backoff and its latest
//! firings (performed, missed, failed), read from the store the daemon keeps them in;
//! `improv door pair CODE`: let in the sender a chat door gave that pairing code. [`store`] is
//! the one place that says which store the doors use, for these and for `improv serve`.

use crate::store::{STORE_ENV, open};
use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use improv_door::schedule::show;
use improv_door::{Clock, Launcher, QueueLauncher, SystemClock};
use improv_stage::Stage;
use improv_store::{Store, StoreUrl};
use std::process::ExitCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Subcommand)]
pub enum DoorCommand {
    /// Each door: its kind, next due time, backoff and latest firings.
    Status(StatusArgs),
    /// Let in the sender a chat door answered with pairing code CODE.
    Pair(PairArgs),
}

#[derive(Args)]
pub struct PairArgs {
    /// The code the sender was given (case does not matter).
    code: String,
    /// The store the doors' daemon uses: postgres://USER@HOST/DB or sqlite:PATH.
    #[arg(long, env = STORE_ENV, value_name = "URL", hide_env_values = true)]
    store: Option<String>,
}

/// The embedded store the doors use unless told otherwise, in the stage's `.improv/`.
pub const DOORS_DB: &str = "doors.db";

/// The store the doors keep their firings, deliveries and pairings in: `--store` (or
/// `IMPROV_STORE`) when given, else the embedded SQLite file `.improv/doors.db`.
pub fn store(stage: &Stage, flag: Option<String>) -> Result<Arc<dyn Store>> {
    if let Some(url) = flag.filter(|u| !u.trim().is_empty()) {
        return open(&url);
    }
    let dir = improv_perform::state_dir(stage);
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the state folder {}", dir.display()))?;
    Ok(improv_store::open(&StoreUrl::Sqlite(dir.join(DOORS_DB)))?)
}

/// The launcher the doors' firings go through: with a store named (`--store` or
/// `IMPROV_STORE`), shared by machines, each firing is enqueued there for the `improv worker`s
/// (`QueueLauncher`; the store's key on the id starts it once, whoever fires it); else `local`
/// performs it in this process. `stopping` ends the waits for queued firings when serve stops.
pub fn launcher(
    flag: Option<&str>,
    store: &Arc<dyn Store>,
    local: Arc<dyn Launcher>,
    stopping: CancellationToken,
) -> Arc<dyn Launcher> {
    if flag.is_some_and(|u| !u.trim().is_empty()) {
        Arc::new(QueueLauncher::new(store.clone(), stopping))
    } else {
        local
    }
}

#[derive(Args)]
pub struct StatusArgs {
    /// The store the doors' daemon uses: postgres://USER@HOST/DB or sqlite:PATH.
    #[arg(long, env = STORE_ENV, value_name = "URL", hide_env_values = true)]
    store: Option<String>,
    /// How many firings to show per door, newest first.
    #[arg(short = 'n', long, default_value_t = improv_door::status::LATEST)]
    limit: usize,
    /// JSON output, for scripts.
    #[arg(long)]
    json: bool,
}

/// `improv door …`
pub async fn run(stage: &Stage, command: DoorCommand) -> Result<ExitCode> {
    match command {
        DoorCommand::Status(args) => status(stage, args).await,
        DoorCommand::Pair(args) => {
            let store = store(stage, args.store)?;
            let key = improv_door::expiry::stage_key(stage);
            let paired = improv_channel::gate::pair(store.as_ref(), &key, &args.code).await?;
            let name = paired.sender_name.as_deref().unwrap_or(&paired.sender_id);
            eprintln!("{name} may now come in through door `{}`", paired.door);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `improv door status`
async fn status(stage: &Stage, args: StatusArgs) -> Result<ExitCode> {
    let store = store(stage, args.store)?;
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
        for n in &d.notices {
            println!("  notice {}: {}", show(n.at), n.text);
        }
    }
    Ok(ExitCode::SUCCESS)
}
