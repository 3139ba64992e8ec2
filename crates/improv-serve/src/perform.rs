//! Starting performances for the server: each one takes one of its `--max-performances`
//! places first ([`place`]: refused when none is free or the server is stopping), then is
//! watched by a [`LiveObserver`], its `ask` rules answered through the API by a
//! [`WebApprover`], and registered in the [`Hub`] while it runs.

use crate::error::ApiError;
use crate::live::{Control, End, Hub, Live, LiveObserver, Place, Refused, WebApprover};
use axum::http::StatusCode;
use improv_kernel::Outcome;
use improv_perform::{Launch, PerformError};
use improv_stage::Stage;
use std::sync::Arc;

/// What to perform.
pub(crate) struct Start {
    pub intent: String,
    pub model: Option<String>,
    pub resume: Option<String>,
    /// The stage's MCP servers, attached for this performance ([`outside`]).
    pub outside: Option<Arc<dyn improv_perform::PropSource>>,
    /// How long an `ask` decision waits for the director before it is denied;
    /// `None`: until answered or stopped (a page or an API client is the director).
    pub ask_timeout: Option<std::time::Duration>,
}

/// Attaches the stage's MCP servers for the performance about to start in `place`; a server
/// that cannot be reached is a 502 naming it, and a server that stops meanwhile a 503 (the
/// stop does not wait for the attachment, up to a minute per server).
pub(crate) async fn outside(
    stage: &Stage,
    place: &Place,
) -> Result<Option<Arc<dyn improv_perform::PropSource>>, ApiError> {
    let attached = place
        .unless_closed(improv_mcp::outside(stage))
        .await
        .ok_or_else(stopping)?;
    attached.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            "mcp_unavailable",
            format!("the stage's MCP servers could not be attached: {e}"),
        )
    })
}

/// The 429 of a server that holds `max_running` performances already, run here or followed
/// for a waiting client ([`crate::stored::Following`]).
pub(crate) fn too_many(max_running: usize) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_performances",
        format!(
            "{max_running} performances are running, the most this server allows (--max-performances); wait for one to end or stop one"
        ),
    )
}

/// The 503 of a server that is stopping: it starts nothing more.
pub(crate) fn stopping() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "this server is stopping and starts no more performances; retry once it is back",
    )
}

/// Takes one of the server's `max_running` places for a performance about to [`start`] (to
/// resume `resume` when given): the 429 of a full server, the 503 of a stopping one, the 409
/// of a resume of a performance that runs here or that another start resumes. Taken before
/// anything is attached or launched, and given back when dropped unfilled.
pub(crate) fn place(
    hub: &Arc<Hub>,
    max_running: usize,
    resume: Option<&str>,
) -> Result<Place, ApiError> {
    hub.reserve(max_running, resume)
        .map_err(|refused| match refused {
            Refused::Full => too_many(max_running),
            Refused::Closed => stopping(),
            Refused::Busy => {
                let id = resume.unwrap_or_default();
                ApiError::conflict(format!(
                    "performance `{id}` is running in this server, or being resumed; stop it (POST /performances/{id}/stop) and wait for its end before resuming it"
                ))
            }
        })
}

/// Launches a performance of `stage` in `place` and returns its id and its [`Live`]. A task
/// removes it from the hub once it has ended.
pub(crate) fn start(
    stage: Arc<Stage>,
    place: Place,
    start: Start,
) -> Result<(String, Arc<Live>), ApiError> {
    let hub = place.hub().clone();
    let live = Live::new();
    let mut launch = Launch::new(start.intent);
    launch.model = start.model;
    launch.resume = start.resume;
    launch.outside = start.outside;
    launch.approver = Arc::new(WebApprover {
        live: live.clone(),
        timeout: start.ask_timeout,
    });
    launch.observers = vec![Arc::new(LiveObserver(live.clone())), hub.metrics.observer()];
    let running = improv_perform::launch(stage, launch).map_err(launch_error)?;
    let id = running.id.clone();
    live.set_control(Control {
        notes: running.notes,
        cancel: running.cancel,
    });
    place.fill(id.clone(), live.clone());
    let watched = live.clone();
    let done = running.done;
    let key = id.clone();
    tokio::spawn(async move {
        let end = match done.await {
            Ok(Ok(s)) => End {
                id: s.id,
                outcome: s.outcome,
                reason: s.reason,
                attempts: s.attempts,
                spent: s.spent,
                answer: s.answer,
            },
            Ok(Err(e)) => failed(&key, &watched, e.to_string()),
            Err(e) => failed(
                &key,
                &watched,
                format!("the performance's task failed: {e}"),
            ),
        };
        watched.finish(end);
        hub.remove(&key);
    });
    Ok((id, live))
}

fn failed(id: &str, live: &Live, reason: String) -> End {
    End {
        id: id.to_string(),
        outcome: Outcome::Failed,
        reason,
        attempts: 0,
        spent: Default::default(),
        answer: live.answer_text(),
    }
}

fn launch_error(e: PerformError) -> ApiError {
    match e {
        PerformError::Stage(_) | PerformError::Cast(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "cannot_perform",
            e.to_string(),
        ),
        PerformError::Log(e) => e.into(),
        other => ApiError::internal(other.to_string()),
    }
}
