//! The daemon's launcher: performs a firing in this process with `improv_perform::launch`, on
//! the stage as loaded but with the door's budget in place of the stage's, unattended (`ask`
//! rules are denied with a reason: nobody is at the terminal of a scheduled run).

use crate::context::{Finished, LaunchRequest, Launcher, Started};
use crate::error::DoorError;
use async_trait::async_trait;
use futures::FutureExt;
use improv_stage::Stage;
use std::sync::Arc;

/// Performs firings in-process.
#[derive(Clone, Copy, Debug, Default)]
pub struct PerformLauncher;

/// Where the ids of started door performances are marked, one empty file each.
fn started_dir(stage: &Stage) -> std::path::PathBuf {
    improv_perform::state_dir(stage)
        .join("doors")
        .join("started")
}

/// Marks `request`'s id started, or says it was: the file is created exclusively, so of two
/// daemons starting the same id one fails. No await comes between this and the start.
fn mark_started(stage: &Stage, request: &LaunchRequest) -> Result<(), DoorError> {
    let failed = |e: std::io::Error| DoorError::Launch {
        door: request.door.clone(),
        message: format!("cannot mark the performance started: {e}"),
    };
    if request.id.is_empty() || !request.id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(DoorError::Launch {
            door: request.door.clone(),
            message: format!("`{}` is not a performance id", request.id),
        });
    }
    let dir = started_dir(stage);
    std::fs::create_dir_all(&dir).map_err(failed)?;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dir.join(&request.id))
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(DoorError::AlreadyStarted {
            door: request.door.clone(),
            id: request.id.clone(),
        }),
        Err(e) => Err(failed(e)),
    }
}

/// `stage` with a door's budget as its `[edges]` limits (chat doors in `improv-channel` call it
/// too; a worker performing a queued firing calls the same function in `improv-perform`).
pub use improv_perform::within_budget;

#[async_trait]
impl Launcher for PerformLauncher {
    async fn start(&self, stage: Arc<Stage>, request: LaunchRequest) -> Result<Started, DoorError> {
        let door = request.door.clone();
        let failed = move |message: String| DoorError::Launch {
            door: door.clone(),
            message,
        };
        mark_started(&stage, &request)?;
        let stage = Arc::new(within_budget(&stage, &request.budget));
        let mut launch = improv_perform::Launch::new(request.intent.clone());
        launch.id = Some(request.id.clone());
        let running = improv_perform::launch(stage, launch).map_err(|e| failed(e.to_string()))?;
        let performance = running.id.clone();
        let done = running
            .done
            .map(move |joined| match joined {
                Ok(Ok(summary)) => Ok(Finished {
                    outcome: summary.outcome,
                    reason: summary.reason,
                    answer: summary.answer,
                }),
                Ok(Err(e)) => Err(failed(e.to_string())),
                Err(e) => Err(failed(format!("the performance's task ended: {e}"))),
            })
            .boxed();
        Ok(Started { performance, done })
    }

    async fn started(&self, stage: &Stage, id: &str) -> Result<bool, DoorError> {
        Ok(started_dir(stage).join(id).exists())
    }
}
