//! The launcher for a shared store: a firing is enqueued in the store (`Store::enqueue`, under
//! the id its firing names) for an `improv worker` on any machine to claim and perform, rather
//! than performed here behind a marker file only this machine sees. The store's key on the
//! id is the start-once fence: a second enqueue of the same id is refused, and `started` asks
//! the store. A firing's end is read back from the store; when the server stops first, its
//! performance stays queued or leased for the workers and the firing says so.
//!
//! Each firing carries its own budget (`[door.edges]` over the stage's `[edges]`) in the store
//! with the performance, and the worker that claims it performs under that budget.

use crate::context::{Finished, LaunchRequest, Launcher, Started};
use crate::error::DoorError;
use async_trait::async_trait;
use futures::FutureExt;
use improv_stage::Stage;
use improv_store::{NewPerformance, State, Store, StoreError};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long one wait for a queued performance's news lasts before its state is read again.
const WAIT: Duration = Duration::from_secs(5);

/// Enqueues firings in a shared store for the workers.
pub struct QueueLauncher {
    store: Arc<dyn Store>,
    /// Fires when the server stops: the firings under way stop waiting for their workers.
    stopping: CancellationToken,
}

impl QueueLauncher {
    pub fn new(store: Arc<dyn Store>, stopping: CancellationToken) -> QueueLauncher {
        QueueLauncher { store, stopping }
    }
}

#[async_trait]
impl Launcher for QueueLauncher {
    async fn start(&self, stage: Arc<Stage>, request: LaunchRequest) -> Result<Started, DoorError> {
        let door = request.door.clone();
        let failed = move |message: String| DoorError::Launch {
            door: door.clone(),
            message,
        };
        // Workers open the stage file themselves, from wherever they run.
        let path = stage.path.canonicalize().map_err(|e| {
            failed(format!(
                "the stage file {} cannot be named to the workers: {e}",
                stage.path.display()
            ))
        })?;
        let new = NewPerformance {
            id: Some(request.id.clone()),
            stage: path.display().to_string(),
            stage_name: stage.stage.identity().map(Into::into),
            intent: request.intent,
            model: None,
            origin: request.origin,
            budget: Some(request.budget),
        };
        if let Err(e) = self.store.enqueue(&new).await {
            return Err(match self.store.performance(&request.id).await {
                Ok(_) => DoorError::AlreadyStarted {
                    door: request.door,
                    id: request.id,
                },
                Err(_) => DoorError::from(e),
            });
        }
        let (store, stopping, id) = (self.store.clone(), self.stopping.clone(), request.id);
        let performance = id.clone();
        let done =
            async move { wait(store.as_ref(), &id, &stopping).await.map_err(failed) }.boxed();
        Ok(Started { performance, done })
    }

    async fn started(&self, _stage: &Stage, id: &str) -> Result<bool, DoorError> {
        match self.store.performance(id).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// Waits until performance `id` is finished in the store, or `stopping` fires.
async fn wait(
    store: &dyn Store,
    id: &str,
    stopping: &CancellationToken,
) -> Result<Finished, String> {
    loop {
        let record = store.performance(id).await.map_err(|e| e.to_string())?;
        if record.state == State::Finished {
            return Ok(Finished {
                outcome: record.outcome.unwrap_or(improv_kernel::Outcome::Failed),
                reason: record.reason,
                answer: String::new(),
            });
        }
        tokio::select! {
            () = stopping.cancelled() => {
                return Err(format!(
                    "queued for the store's workers as performance {id}; improv serve stopped \
                     before it ended (see `improv show --store URL {id}`)"
                ));
            }
            woke = store.wait_events(id, record.last_seq, WAIT) => {
                woke.map_err(|e| e.to_string())?;
            }
        }
    }
}
