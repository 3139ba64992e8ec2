//! `improv worker --store URL`: performs the performances queued in the store, any number of
//! workers on any number of machines ([`improv_perform::leased`]). SIGTERM, SIGINT or SIGHUP
//! drain it: no new claims, the running turns end, their performances go back to the queue; a
//! second signal exits at once.

use crate::shutdown::Shutdown;
use crate::store::StoreArgs;
use anyhow::Result;
use clap::Args;
use improv_perform::leased::{self, WorkerSettings};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// How long a lease lasts unless renewed (renewed every third of it); a dead worker's
    /// performances move on after about this long.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    lease: Duration,
    /// Performances performed at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

/// Runs the worker until a signal drains it.
pub fn run(args: WorkerArgs) -> Result<ExitCode> {
    // Multi-threaded: the journal waits for the store on the loop's thread while the store's
    // own tasks run on another.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let shutdown = Shutdown::install()?;
        let store = crate::store::open(&args.store.store)?;
        let settings = WorkerSettings {
            name: name(),
            lease: args.lease,
            concurrency: args.concurrency,
            idle_poll: Duration::from_millis(250),
        };
        eprintln!(
            "improv worker {} · performing from {}",
            settings.name,
            store.describe()
        );
        leased::work(store, settings, shutdown.stopping()).await?;
        eprintln!("improv worker drained");
        Ok(ExitCode::SUCCESS)
    })
}

/// This worker's name in the store: the host and the process id.
fn name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}-{}", std::process::id())
}
