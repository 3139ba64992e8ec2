//! The stage's doors on `improv serve`. `POST /doors/NAME` hands a webhook delivery to
//! `improv_door::webhook::deliver` (its signature is checked there, nowhere else) and a Slack or
//! Discord request to the endpoint its `improv-channel` listener registered (signature and
//! replay window checked there). The platforms sign their requests instead of sending the
//! bearer token, so these routes take none; the body limit applies. A caller who has not shown
//! a door's secret gets one answer (401 "signature check failed") whether the door is unknown,
//! takes no deliveries, lacks its secret or the signature is wrong, a webhook's or a chat
//! door's: no one learns which doors exist; the reason goes to the log for the director.
//! `GET /doors`, with the token, answers what `improv door status --json` prints.

use crate::BODY_LIMIT;
use crate::error::ApiError;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::header::{CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
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

/// A request to door `name`, handed to whoever checks its signature. A caller who has not
/// shown the door's secret gets one answer whatever the door ([`stranger`]).
async fn knock(
    State(doors): State<Arc<Doors>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // A Slack or Discord door's endpoint answers while its listener runs, through a drain too
    // (a Discord command that comes then is deferred for the next server, not lost): it does
    // not wait for the daemon's state, which a drain holds.
    if let Some(endpoint) = improv_channel::door::endpoint(&name) {
        let answer = endpoint.answer(&headers, &body).await;
        if answer.is_stranger() {
            return stranger();
        }
        let status =
            StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (status, [(CONTENT_TYPE, answer.content_type)], answer.body).into_response();
    }
    let Some((ctx, limits)) = doors.daemon.open_door(&name).await else {
        tracing::info!("a delivery to door `{name}`, which the stage does not have open");
        return stranger();
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
            accepted(webhook::deliver(&ctx, &limits, secret.as_deref(), delivery).await)
        }
        DoorKind::Channel(_) => {
            tracing::info!("a request to chat door `{name}`, whose listener is not up");
            stranger()
        }
        DoorKind::Schedule { .. } | DoorKind::Every(_) => {
            tracing::info!("a delivery to door `{name}`, which takes no webhook");
            stranger()
        }
    }
}

/// The one answer to a caller who has not shown a door's secret: the same status and body for
/// an unknown door, a door that takes no deliveries, a missing secret and a bad signature.
fn stranger() -> Response {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "refused",
        webhook::STRANGER_ANSWER,
    )
    .into_response()
}

/// The answer to a webhook delivery: 202 with the performance started, 200 for a redelivery,
/// the refusal's own status otherwise (429 with `Retry-After` over the door's limits).
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
        Err(DoorError::Refused { refusal, door }) => {
            if refusal.to_stranger() {
                // The director's reason (a missing secret's variable, a forged signature) goes
                // to the log; the caller is told nothing that tells doors apart.
                tracing::warn!("door `{door}`: {refusal}");
                return stranger();
            }
            let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::BAD_REQUEST);
            let message = format!("door `{door}`: {refusal}");
            let mut response = ApiError::new(status, "refused", message).into_response();
            if let webhook::Refusal::Limited { retry_after } = refusal {
                response
                    .headers_mut()
                    .insert(RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
            }
            response
        }
        // The caller showed the secret, but what failed is the server's business: it goes to
        // the log. The delivery was given back, so the platform's redelivery performs it.
        Err(e) => {
            tracing::warn!("door delivery failed: {e}");
            ApiError::internal("the delivery could not be performed; see the server's log")
                .into_response()
        }
    }
}

/// Each door's kind, next due time, backoff and latest firings.
async fn status(State(doors): State<Arc<Doors>>) -> Result<Response, ApiError> {
    let (stage, key) = doors.daemon.stage_and_key().await;
    let status = improv_door::status::status_of(
        &stage,
        &key,
        doors.store.as_ref(),
        SystemClock.now(),
        improv_door::status::LATEST,
    )
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(axum::Json(status).into_response())
}
