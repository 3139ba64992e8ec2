//! The `/mcp` endpoint's `perform` with a store (`improv serve --store`): queued for the
//! workers as `POST /performances` does, and followed through the store (its progress, its
//! end), so the server does not perform it itself and a restart of the server loses nothing.

use crate::stored;
use futures::StreamExt;
use improv_kernel::Event;
use improv_stage::Stage;
use improv_store::Store;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

/// Performs the stage's MCP `perform` calls on the store's workers.
pub(crate) struct Queued {
    pub store: Arc<dyn Store>,
    pub stage: Arc<Stage>,
    /// Cancelled when the server stops: the calls it then cancels leave their performances to
    /// the workers (a restart of the server loses nothing).
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The server's places: each call holds one from before it queues until it returns.
    pub following: stored::Following,
    /// The places of the calls started and not yet followed to their end, by performance.
    pub held: Mutex<HashMap<String, OwnedSemaphorePermit>>,
}

impl Queued {
    fn held(&self) -> MutexGuard<'_, HashMap<String, OwnedSemaphorePermit>> {
        // A poisoned lock needs a panic while a place was moved in or out; the map is whole.
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl improv_mcp::Elsewhere for Queued {
    async fn start(&self, intent: &str, model: Option<String>) -> Result<String, String> {
        if let Some(model) = &model {
            stored::check_model(model).map_err(|e| e.message)?;
        }
        let place = self.following.hold().map_err(|e| e.message)?;
        let entrance = stored::Entrance::Mcp;
        let id = stored::enqueue(
            self.store.as_ref(),
            &self.stage,
            intent.into(),
            model,
            entrance,
        )
        .await
        .map_err(|e| e.to_string())?;
        self.held().insert(id.clone(), place);
        Ok(id)
    }

    async fn ended(
        &self,
        id: &str,
        progress: mpsc::UnboundedSender<String>,
    ) -> Result<Value, String> {
        // Held until this returns or is dropped (the call's session went away).
        let _place = self.held().remove(id);
        let mut frames = std::pin::pin!(stored::follow(self.store.clone(), id.to_string(), None));
        while let Some(frame) = frames.next().await {
            match frame.name {
                None => {
                    let message = serde_json::from_str::<Event>(&frame.data)
                        .ok()
                        .as_ref()
                        .and_then(improv_mcp::progress_message);
                    if let Some(message) = message {
                        // The receiver is gone once the call ended; progress is best effort.
                        let _ = progress.send(message);
                    }
                }
                Some("end") => {
                    return serde_json::from_str(&frame.data).map_err(|e| e.to_string());
                }
                Some("error") => {
                    let error: Value = serde_json::from_str(&frame.data).unwrap_or_default();
                    let message = error["error"]["message"].as_str().unwrap_or("unknown");
                    // The store stayed unavailable past the retries (or failed otherwise): the
                    // worker may still perform it, so another `perform` would be a duplicate.
                    return Err(format!(
                        "following performance {id} in the store failed: {message}; it may still be running (improv show {id}): do not perform it again"
                    ));
                }
                Some(_) => {}
            }
        }
        Err("its stream in the store ended before the performance did".into())
    }

    async fn stop(&self, id: &str) {
        if self.shutdown.is_cancelled() {
            return;
        }
        // Patiently, as a chat's stop is: during a store outage one try would be dropped and the
        // worker would perform to the end for a client that cancelled.
        if let Err(e) = stored::stop_patiently(self.store.as_ref(), id).await {
            tracing::warn!(
                id,
                "an MCP client cancelled `perform`, but stopping it failed: {e}"
            );
        }
    }
}
