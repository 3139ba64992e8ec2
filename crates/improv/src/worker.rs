//! `improv worker --store URL`: performs the performances queued in the store, any number of
//! workers on any number of machines ([`improv_perform::leased`]). SIGTERM, SIGINT or SIGHUP
//! drain it: no new claims, the running turns end, their performances go back to the queue; a
//! second signal exits at once.

use crate::shutdown::Shutdown;
use crate::store::StoreArgs;
use anyhow::{Context, Result};
use clap::Args;
use improv_perform::leased::{self, Outside, WorkerSettings};
use improv_perform::stages::Stages;
use improv_serve::ops::{MeteredStore, Metrics, Ops, OpsServer, Readiness};
use improv_store::Store;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// The longest an idle worker waits before looking for work again: a fallback only, since the
/// store wakes it when work is queued or a lease runs out.
const IDLE_POLL: Duration = Duration::from_secs(5);
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
    /// Serve /healthz, /readyz (the store answers) and Prometheus /metrics at ADDR, without a
    /// token: they hold counts only, no id, intent or store. Port 0 picks a free port.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// How long an `ask` decision waits in the store for `improv approve` before it is denied.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    ask_timeout: Duration,
    /// Perform only these stages' performances, each opened from here by its `[stage] name`,
    /// so those queued before a deploy moved the stage's folder still open: a folder holding
    /// stage.toml, or a stage file (repeat it, or IMPROV_STAGES=DIR:DIR; -s FILE counts too).
    /// A stage whose file gives no name is known by its path only. Stages sharing a store and
    /// a name are one stage (one trust domain). Without any, every performance is performed
    /// from the stage file it was queued with; in a fleet with --stages workers, such a worker
    /// fails a named performance whose stage it cannot find, so give every worker --stages.
    #[arg(
        long = "stages",
        value_name = "DIR",
        env = "IMPROV_STAGES",
        value_delimiter = ':'
    )]
    stages: Vec<PathBuf>,
}

/// Runs the worker until a signal drains it; `stage` is the global `--stage`, one more stage
/// to serve.
pub fn run(args: WorkerArgs, stage: Option<PathBuf>) -> Result<ExitCode> {
    let stages = stages(args.stages.iter().cloned().chain(stage).collect())?;
    // A descriptor or more for each performance it holds: thousands at a high concurrency.
    crate::limits::raise_open_files();
    // Multi-threaded: the journal waits for the store on the loop's thread while the store's
    // own tasks run on another.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let worked = rt.block_on(async {
        let shutdown = Shutdown::install()?;
        let mut store = crate::store::open(&args.store.store)?;
        if let Some(addr) = args.metrics {
            store = serve_ops(addr, store).await?;
        }
        let settings = WorkerSettings {
            name: name(),
            lease: args.lease,
            concurrency: args.concurrency,
            idle_poll: IDLE_POLL,
            // Cast as `improv run` casts: the stage's MCP servers attached the same way.
            outside: Outside::new(|stage| async move {
                crate::stagecraft::attach_mcp(&stage)
                    .await
                    .map_err(|e| format!("{e:#}"))
            }),
            ask_timeout: args.ask_timeout,
            // A PostgreSQL store holds the stages' memory too (`open` above parsed it).
            store: improv_store::StoreUrl::parse(&args.store.store).ok(),
            stages,
        };
        eprintln!(
            "improv worker {} · performing from {}",
            settings.name,
            store.describe()
        );
        leased::work(store, settings, shutdown.stopping()).await?;
        eprintln!("improv worker drained");
        Ok(ExitCode::SUCCESS)
    });
    // The spans of the performances it just drained are still on their way: bounded.
    improv_perform::trace::flush(improv_perform::trace::FLUSH_AT_EXIT);
    worked
}

/// Starts the operations listener at `addr`; returns the store to work with, which counts
/// what the worker does for `/metrics`.
async fn serve_ops(addr: SocketAddr, store: Arc<dyn Store>) -> Result<Arc<dyn Store>> {
    let metrics = Arc::new(Metrics::default());
    let ops = Arc::new(Ops {
        metrics: metrics.clone(),
        readiness: Readiness {
            stage: None,
            store: Some(store.clone()),
            ..Default::default()
        },
        running: None,
    });
    let server = OpsServer::bind(addr, ops)
        .await
        .with_context(|| format!("cannot serve --metrics at {addr}"))?;
    eprintln!(
        "improv worker · metrics at http://{}/metrics",
        server.addr()?
    );
    // Serves as long as the process: its runtime ends with the worker.
    tokio::spawn(server.run(std::future::pending()));
    Ok(Arc::new(MeteredStore::new(store, metrics)))
}

/// The stages to serve: any (none named), or those named, each said on stderr.
fn stages(paths: Vec<PathBuf>) -> Result<Stages> {
    if paths.is_empty() {
        return Ok(Stages::Any);
    }
    let stages = Stages::find(&paths)?;
    if let Stages::Named(served) = &stages {
        for one in served {
            let file = one.file.display();
            match &one.key.name {
                Some(name) => eprintln!("improv worker · serving stage `{name}` from {file}"),
                None => eprintln!(
                    "improv worker · serving the stage at {file}; warning: its file gives no \
                     `[stage] name`, so it is known by this path only, and what was queued \
                     from it is not found once a deploy moves its folder: give it a name"
                ),
            }
        }
    }
    Ok(stages)
}

/// This worker's name in the store: the host and the process id.
fn name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}-{}", std::process::id())
}
