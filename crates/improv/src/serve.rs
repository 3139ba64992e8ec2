//! `improv serve`: the stage view, and the stage's doors when it has any. With `[[door]]`s the
//! door daemon runs beside the server on the doors' store ([`crate::door::store`]): SIGTERM (or
//! Ctrl-C) drains it, then stops the server; SIGHUP reloads the stage file and says which doors
//! changed. Without doors SIGHUP stops the server, as it stops every other command. A webhook's
//! performance runs in a task of its own, which the daemon's drain does not wait for, so the
//! launcher here keeps count of them and a stopping server lets them finish ([`Tracked`]).
//! Under systemd (`Type=notify`) each of these steps is told to the service manager
//! ([`crate::notify`]).

use crate::door;
use crate::notify::{self, Phase};
use crate::perform::load_stage;
use crate::shutdown::Shutdown;
use crate::store::STORE_ENV;
use anyhow::Result;
use async_trait::async_trait;
use clap::Args;
use improv_door::{
    Daemon, DoorError, LaunchRequest, Launcher, PerformLauncher, Started, SystemClock,
};
use improv_serve::doors::Doors;
use improv_stage::Stage;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

#[derive(Args)]
pub struct ServeCommand {
    #[command(flatten)]
    serve: improv_serve::ServeArgs,
    /// The performance store the workers perform from, shared by machines: the API lists,
    /// shows, streams, notes and answers their performances through it, /metrics counts it,
    /// and the doors keep their firings in it and queue what they start there (default: the
    /// doors' firings in .improv/doors.db, every performance in this process).
    #[arg(long, env = STORE_ENV, value_name = "URL", hide_env_values = true)]
    store: Option<String>,
}

/// `improv serve`: binds, says where and with which token, serves until Ctrl-C, SIGTERM or
/// (without doors) SIGHUP, then stops the running performances and waits for each to log its
/// end.
pub fn run(stage_path: Option<PathBuf>, args: ServeCommand) -> Result<ExitCode> {
    let stage = Arc::new(load_stage(stage_path.as_deref(), true)?);
    crate::arena::one_arena();
    crate::arena::sqlite_soft_heap();
    crate::arena::trim_periodically();
    crate::limits::raise_open_files();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served = rt.block_on(serve(stage_path, stage, args));
    // The spans of the performances it just stopped are still on their way: bounded.
    improv_perform::trace::flush(improv_perform::trace::FLUSH_AT_EXIT);
    served
}

async fn serve(
    stage_path: Option<PathBuf>,
    stage: Arc<Stage>,
    args: ServeCommand,
) -> Result<ExitCode> {
    let (shutdown, reloads) = if stage.doors.is_empty() {
        (Shutdown::install()?, None)
    } else {
        let (shutdown, reloads) = Shutdown::install_reloading()?;
        (shutdown, Some(reloads))
    };
    let stopping = shutdown.stopping();
    let tracked = Arc::new(Tracked::new());
    let store = match args.store.as_deref().filter(|u| !u.trim().is_empty()) {
        Some(url) => Some(crate::store::open(url)?),
        None => None,
    };
    let doors = match reloads {
        Some(reloads) => {
            let stopping = stopping.clone();
            let doors = open_doors(
                stage_path,
                &stage,
                store.clone(),
                reloads,
                &tracked,
                stopping,
            );
            Some(doors.await?)
        }
        None => None,
    };
    if let Some(store) = &store {
        eprintln!(
            "improv serve: performances of the store {} are served too",
            store.describe()
        );
    }
    let backing = improv_serve::Backing {
        doors: doors.clone(),
        store,
    };
    let server = improv_serve::bind_with(stage.clone(), &args.serve, backing).await?;
    eprintln!(
        "improv · stage {} · serving the stage view at {}",
        stage.stage.name,
        server.url()
    );
    if server.token_created() {
        eprintln!(
            "bearer token (shown once; kept in {}): {}",
            server.token_file().display(),
            server.token()
        );
        eprintln!("open {}#token={}", server.url(), server.token());
    } else {
        eprintln!("bearer token: in {}", server.token_file().display());
    }
    notify::tell(
        Phase::Ready,
        &format!(
            "serving {} at {}; {}",
            stage.stage.name,
            server.url(),
            door_count(&stage)
        ),
    );
    let daemon = doors.map(|d| d.daemon.clone());
    // Fed only while the doors' daemon answers: a wedged one is restarted by systemd.
    let watched = daemon.clone();
    notify::keep_watchdog(move || {
        let daemon = watched.clone();
        async move {
            match daemon {
                Some(daemon) => daemon.alive().await,
                None => true,
            }
        }
    });
    server
        .run(async move {
            stopping.cancelled().await;
            notify::tell(
                Phase::Stopping,
                "draining the doors and the performances under way",
            );
            if let Some(daemon) = daemon {
                // A chat door's endpoint stays up, deferring Discord commands, while other
                // doors drain and this server still accepts.
                improv_channel::door::drain_begins();
                daemon.drain().await;
                eprintln!("improv serve: the doors are drained");
            }
        })
        .await?;
    tracked.finished().await;
    Ok(ExitCode::SUCCESS)
}

/// Starts the door daemon on the doors' store (`shared`, the performance store, or the stage
/// folder's), with a chat listener for channel doors, and reloads it on each SIGHUP. With a
/// shared store the doors queue what they start there for the workers.
async fn open_doors(
    stage_path: Option<PathBuf>,
    stage: &Arc<Stage>,
    shared: Option<Arc<dyn improv_store::Store>>,
    mut reloads: mpsc::UnboundedReceiver<()>,
    tracked: &Arc<Tracked>,
    stopping: tokio_util::sync::CancellationToken,
) -> Result<Arc<Doors>> {
    // door::launcher queues on a store that was named, and performs here otherwise.
    let named = shared.as_ref().map(|store| store.describe());
    let store = match shared {
        Some(store) => store,
        None => door::store(stage, None)?,
    };
    let launcher = door::launcher(named.as_deref(), &store, tracked.clone(), stopping);
    let daemon = Daemon::new(
        stage.clone(),
        store.clone(),
        launcher,
        Arc::new(SystemClock),
        Some(improv_channel::door::listeners()),
    );
    daemon.start().await;
    if let Some(warning) = improv_door::daemon::unnamed_on_a_shared_store(stage, named.is_some()) {
        tracing::warn!("{warning}");
    }
    eprintln!(
        "improv serve: {} door(s) open ({}); firings kept in {}",
        stage.doors.len(),
        names(stage),
        store.describe()
    );
    let reloading = daemon.clone();
    tokio::spawn(async move {
        while reloads.recv().await.is_some() {
            reload(&reloading, stage_path.as_deref()).await;
        }
    });
    Ok(Arc::new(Doors { daemon, store }))
}

/// Reads the stage file again and hands it to the daemon, saying what changed; a stage file
/// that does not load leaves the doors as they were.
async fn reload(daemon: &Daemon, stage_path: Option<&Path>) {
    notify::tell(Phase::Reloading, "reloading the stage file");
    let said = reload_doors(daemon, stage_path).await;
    notify::tell(Phase::Ready, &format!("SIGHUP: {said}"));
}

/// [`reload`]'s work: what it says on stderr, and the same in one line for the service manager.
async fn reload_doors(daemon: &Daemon, stage_path: Option<&Path>) -> String {
    let stage = match load_stage(stage_path, true) {
        Ok(stage) => Arc::new(stage),
        Err(e) => {
            eprintln!(
                "improv serve: SIGHUP: the stage file was not reloaded, the doors run as before: {e:#}"
            );
            return "the stage file was not reloaded (see the log); the doors run as before".into();
        }
    };
    let changes = daemon.reload(stage).await;
    if changes.is_empty() {
        eprintln!("improv serve: SIGHUP: stage file reloaded; no door changed");
        return "stage file reloaded; no door changed".into();
    }
    let changes: Vec<String> = changes.iter().map(ToString::to_string).collect();
    for change in &changes {
        eprintln!("improv serve: SIGHUP: {change}");
    }
    changes.join("; ")
}

/// How many doors are open, for the service manager's status line.
fn door_count(stage: &Stage) -> String {
    match stage.doors.len() {
        0 => "no doors".into(),
        1 => "1 door open".into(),
        n => format!("{n} doors open"),
    }
}

/// The doors' names, for the start line.
fn names(stage: &Stage) -> String {
    let names: Vec<&str> = stage.doors.iter().map(|d| d.name.as_str()).collect();
    names.join(", ")
}

/// The daemon's launcher: performs in-process as [`PerformLauncher`] does, and holds a token
/// for each performance until it ends, so that [`Tracked::finished`] can wait for them all.
struct Tracked {
    /// Cloned into each performance; dropped by `finished`, after which the channel closes
    /// once the last performance's clone is dropped.
    token: Mutex<Option<mpsc::Sender<()>>>,
    closed: tokio::sync::Mutex<mpsc::Receiver<()>>,
}

impl Tracked {
    fn new() -> Tracked {
        let (tx, rx) = mpsc::channel(1);
        Tracked {
            token: Mutex::new(Some(tx)),
            closed: tokio::sync::Mutex::new(rx),
        }
    }

    /// Waits until every performance started through it has ended (call once nothing can
    /// start any more: the server has stopped accepting).
    async fn finished(&self) {
        let token = self.token.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(token) = token else { return };
        if token.strong_count() > 1 {
            eprintln!("improv serve: waiting for the doors' performances under way to finish");
        }
        drop(token);
        // Nothing is ever sent: recv answers None once every clone is dropped.
        while self.closed.lock().await.recv().await.is_some() {}
    }
}

#[async_trait]
impl Launcher for Tracked {
    async fn start(&self, stage: Arc<Stage>, request: LaunchRequest) -> Result<Started, DoorError> {
        let token = self.token.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let started = PerformLauncher.start(stage, request).await?;
        let done = started.done;
        Ok(Started {
            performance: started.performance,
            done: Box::pin(async move {
                let finished = done.await;
                drop(token);
                finished
            }),
        })
    }

    async fn started(&self, stage: &Stage, id: &str) -> Result<bool, DoorError> {
        PerformLauncher.started(stage, id).await
    }
}
