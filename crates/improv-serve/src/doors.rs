//! The stage's doors on `improv serve`. `POST /doors/NAME` hands a webhook delivery to
//! `improv_door::webhook::deliver` (its signature is checked there, nowhere else) and a Slack or
//! Discord request to the endpoint its `improv-channel` listener registered (signature and
//! replay window checked there); any other name is 404. The platforms sign their requests
//! instead of sending the bearer token, so these routes take none; the body limit applies.
//! `GET /doors`, with the token, answers what `improv door status --json` prints.

use crate::BODY_LIMIT;
use crate::error::ApiError;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use improv_door::webhook::{self, Accepted, DELIVERY_HEADER, Delivery, SIGNATURE_HEADER};
use improv_door::{Clock, Daemon, DoorError, SystemClock};
use improv_stage::DoorKind;
use improv_store::Store;
use std::sync::Arc;

/// The doors' daemon a server answers for, and the store it keeps its firings in.
pub struct Doors {
    pub daemon: Arc<Daemon>,
    pub store: Arc<dyn Store>,
}

/// `POST /doors/{name}` without the token, `GET /doors` behind it.
pub(crate) fn routes(doors: Arc<Doors>, token: Arc<str>) -> Router {
    let open = Router::new()
        .route("/doors/{name}", post(knock))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(doors.clone());
    let status = Router::new()
        .route("/doors", get(status))
        .layer(axum::middleware::from_fn_with_state(
            token,
            crate::auth::require,
        ))
        .with_state(doors);
    open.merge(status)
}

/// A request to door `name`, handed to whoever checks its signature.
async fn knock(
    State(doors): State<Arc<Doors>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let no_door = || ApiError::not_found(format!("the stage has no open door `{name}`"));
    let Some(ctx) = doors.daemon.context(&name).await else {
        return no_door().into_response();
    };
    match &ctx.door.kind {
        DoorKind::Webhook { secret_env } => {
            let secret = std::env::var(secret_env).ok();
            let header = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
            let delivery = Delivery {
                body: &body,
                signature: header(SIGNATURE_HEADER),
                delivery_id: header(DELIVERY_HEADER),
            };
            accepted(webhook::deliver(&ctx, secret.as_deref(), delivery).await)
        }
        DoorKind::Channel(_) => match improv_channel::door::endpoint(&name) {
            Some(endpoint) => {
                let answer = endpoint.answer(&headers, &body);
                let status = StatusCode::from_u16(answer.status)
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (status, [(CONTENT_TYPE, answer.content_type)], answer.body).into_response()
            }
            None => no_door().into_response(),
        },
        DoorKind::Schedule { .. } | DoorKind::Every(_) => no_door().into_response(),
    }
}

/// The answer to a webhook delivery: 202 with the performance started, 200 for a redelivery,
/// the refusal's own status otherwise.
fn accepted(result: Result<Accepted, DoorError>) -> Response {
    match result {
        Ok(Accepted::Started { performance }) => (
            StatusCode::ACCEPTED,
            axum::Json(serde_json::json!({ "performance": performance })),
        )
            .into_response(),
        Ok(Accepted::Duplicate) => (
            StatusCode::OK,
            axum::Json(serde_json::json!({ "duplicate": true })),
        )
            .into_response(),
        Err(e) => match &e {
            DoorError::Refused { refusal, .. } => {
                let status =
                    StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
                ApiError::new(status, "refused", e.to_string()).into_response()
            }
            // The caller is not authenticated: what went wrong goes to the log, not to it.
            _ => {
                tracing::warn!("door delivery failed: {e}");
                ApiError::internal("the delivery could not be performed; see the server's log")
                    .into_response()
            }
        },
    }
}

/// Each door's kind, next due time, backoff and latest firings.
async fn status(State(doors): State<Arc<Doors>>) -> Result<Response, ApiError> {
    let stage = doors.daemon.stage().await;
    let status = improv_door::status::status(
        &stage,
        doors.store.as_ref(),
        SystemClock.now(),
        improv_door::status::LATEST,
    )
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(axum::Json(status).into_response())
}
