//! The OpenAI-compatible endpoint: `POST /v1/chat/completions`, streaming and not, where
//! `model` names the stage. Any OpenAI client or chat UI can talk to a stage; each request is a
//! logged performance whose intent is the conversation; with a store (`improv serve --store`)
//! it is queued there, a worker performs it, and the answer is read from the store. `GET
//! /v1/models` lists the stage and `GET /v1/models/{id}` retrieves it.
//!
//! Errors are OpenAI's: 400 with `param` naming the field for a body of the wrong shape and for
//! the parameters a stage cannot honour (`tools`, `n` above 1, a `response_format` other than
//! text), which are refused rather than silently ignored. A failed performance answers 502 with
//! `x-should-retry: false`: the official SDKs retry a 5xx by default, and each retry would start
//! another performance.

use crate::api::{AppState, RawBody, shaped};
use crate::error::ApiError;
use crate::live::{End, Frame, Live};
use crate::perform::{self, Start};
use crate::{stored, stream};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use futures::stream::BoxStream;
use improv_kernel::{Event, EventKind, Outcome};
use improv_store::Store;
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

#[derive(Deserialize)]
pub(crate) struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
}

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

/// A message's content: a string, or parts of which the text ones are read.
#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

impl Content {
    fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter(|p| p.kind == "text")
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

/// The intent of a chat: a lone user message as it is; a longer conversation as a transcript
/// that ends with the message to answer.
fn intent(messages: &[ChatMessage]) -> Result<String, ApiError> {
    let texts: Vec<(&str, String)> = messages
        .iter()
        .map(|m| {
            (
                m.role.as_str(),
                m.content.as_ref().map(Content::text).unwrap_or_default(),
            )
        })
        .filter(|(_, t)| !t.trim().is_empty())
        .collect();
    match texts.last() {
        None => Err(ApiError::bad_request(
            "`messages` holds no text: send at least one user message",
        )
        .with_param("messages")),
        Some(_) if texts.len() == 1 => Ok(texts[0].1.clone()),
        Some(_) => Ok(texts
            .iter()
            .map(|(role, text)| format!("{role}: {text}"))
            .collect::<Vec<_>>()
            .join("\n\n")),
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The stage, as the model object OpenAI clients read.
fn model(app: &AppState) -> Value {
    json!({"id": app.stage.stage.name, "object": "model", "created": 0, "owned_by": "improv"})
}

/// `GET /v1/models`: the stage, as the one model this server serves.
pub(crate) async fn models(State(app): State<AppState>) -> Json<Value> {
    Json(json!({"object": "list", "data": [model(&app)]}))
}

/// `GET /v1/models/{id}`: the stage when `id` names it (`client.models.retrieve`).
pub(crate) async fn model_get(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_model(&app, &id)?;
    Ok(Json(model(&app)))
}

/// 404 unless `name` is the served stage's name.
fn check_model(app: &AppState, name: &str) -> Result<(), ApiError> {
    if name == app.stage.stage.name {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "model_not_found",
        format!(
            "this server serves the stage `{}`; send it as `model` (GET /v1/models lists it)",
            app.stage.stage.name
        ),
    )
    .with_param("model"))
}

/// Tells OpenAI's SDKs not to retry: the request started a performance, and a retry would start
/// another.
const SHOULD_RETRY: HeaderName = HeaderName::from_static("x-should-retry");

/// Request fields that change what the answer has to be and that a stage cannot honour: the
/// first one present is refused by name rather than ignored. Their neutral values (`n: 1`,
/// `tools: []`, `response_format: {"type": "text"}`, `tool_choice: "none"`) pass.
fn unsupported(raw: &Value) -> Option<ApiError> {
    let neutral = |field: &str, v: &Value| match field {
        "n" => v.is_null() || v.as_u64() == Some(1),
        "tools" | "functions" => v.is_null() || v.as_array().is_some_and(Vec::is_empty),
        "tool_choice" | "function_call" => v.is_null() || v == "none" || v == "auto",
        "response_format" => v.is_null() || v["type"] == "text",
        "logprobs" => v.is_null() || v == false,
        _ => true,
    };
    let why = |field: &str| match field {
        "n" => "`n` must be 1: each request is one performance with one answer",
        "tools" | "functions" | "tool_choice" | "function_call" => {
            "the stage's actors call their own props; this endpoint cannot call tools given in the request: leave them out"
        }
        "response_format" => {
            "the answer is the lead's text; structured output is not supported: leave `response_format` out or set it to {\"type\": \"text\"}"
        }
        _ => "log probabilities are not reported: leave `logprobs` out",
    };
    let obj = raw.as_object()?;
    [
        "n",
        "tools",
        "functions",
        "tool_choice",
        "function_call",
        "response_format",
        "logprobs",
    ]
    .into_iter()
    .find(|field| obj.get(*field).is_some_and(|v| !neutral(field, v)))
    .map(|field| {
        ApiError::bad_request(format!("`{field}` is not supported: {}", why(field)))
            .with_code("unsupported_parameter")
            .with_param(field)
    })
}

/// The request from its JSON, or OpenAI's 400 (not 422) naming the field at fault.
fn parse(raw: Value) -> Result<ChatRequest, ApiError> {
    if let Some(e) = unsupported(&raw) {
        return Err(e);
    }
    shaped(raw, StatusCode::BAD_REQUEST)
}

fn finish_reason(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Stopped | Outcome::Exhausted => "length",
        _ => "stop",
    }
}

fn usage(end: &End) -> Value {
    json!({
        "prompt_tokens": end.spent.input_tokens,
        "completion_tokens": end.spent.output_tokens,
        "total_tokens": end.spent.input_tokens + end.spent.output_tokens,
    })
}

/// Where a chat's performance runs: in this server, or (`--store`) on whichever worker claims
/// it, followed through the store, holding one of the server's places while followed
/// ([`stored::Following`]). Either way the client is answered the same.
enum Performing {
    Here(Arc<Live>),
    Stored(Arc<dyn Store>, Arc<OwnedSemaphorePermit>),
}

impl Performing {
    /// Starts the chat's performance; returns its id and where it runs.
    async fn start(app: &AppState, intent: String) -> Result<(String, Performing), ApiError> {
        if let Some(store) = &app.store {
            let place = Arc::new(app.following.hold()?);
            let entrance = stored::Entrance::Chat;
            let id = stored::enqueue(store.as_ref(), &app.stage, intent, None, entrance).await?;
            return Ok((id, Performing::Stored(store.clone(), place)));
        }
        let place = perform::place(&app.hub, app.max_running, None)?;
        let outside = perform::outside(&app.stage, &place).await?;
        let (id, live) = perform::start(
            app.stage.clone(),
            place,
            Start {
                intent,
                model: None,
                resume: None,
                outside,
                ask_timeout: None,
            },
        )?;
        Ok((id, Performing::Here(live)))
    }

    /// What stops the performance when the client goes away before its end: this server
    /// cancels its own (logged as interrupted); a stored one is stopped through the store,
    /// which the worker holding it obeys, unless the server is `shutdown`: its connections
    /// close then, though no client left, and the worker's performance goes on.
    fn on_leave(&self, id: &str, shutdown: &CancellationToken) -> OnLeave {
        match self {
            Performing::Here(live) => {
                let cancel = live
                    .control()
                    .map(|c| c.cancel.clone())
                    .unwrap_or_else(CancellationToken::new);
                OnLeave(Some(Box::new(move || cancel.cancel())))
            }
            Performing::Stored(store, _) => {
                let (store, id) = (store.clone(), id.to_string());
                let shutdown = shutdown.clone();
                OnLeave(Some(Box::new(move || {
                    if !shutdown.is_cancelled() {
                        stop_stored(store, id);
                    }
                })))
            }
        }
    }

    fn frames(&self, app: &AppState, id: String) -> BoxStream<'static, Frame> {
        match self {
            Performing::Here(live) => {
                stream::follow(Some(live.clone()), app.log.clone(), id, None).boxed()
            }
            Performing::Stored(store, place) => {
                // The stream keeps the place until the client has the end or leaves.
                let place = place.clone();
                stored::follow(store.clone(), id, None)
                    .map(move |frame| {
                        let _held = &place;
                        frame
                    })
                    .boxed()
            }
        }
    }

    async fn ended(&self, id: &str) -> Result<Arc<End>, ApiError> {
        match self {
            Performing::Here(live) => Ok(live.ended().await),
            Performing::Stored(store, _) => Ok(Arc::new(stored::ended(store.as_ref(), id).await?)),
        }
    }
}

/// Asks the store to stop stored performance `id`, from a drop (no caller to tell).
fn stop_stored(store: Arc<dyn Store>, id: String) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(
            id,
            "a chat client left, but its performance could not be stopped: no runtime"
        );
        return;
    };
    runtime.spawn(async move {
        if let Err(e) = stored::stop_patiently(store.as_ref(), &id).await {
            tracing::warn!(
                id,
                "a chat client left, but stopping its performance failed: {e}"
            );
        }
    });
}

/// Stops a chat's performance when dropped before [`OnLeave::disarm`]: the client went away.
struct OnLeave(Option<Box<dyn FnOnce() + Send>>);

impl OnLeave {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for OnLeave {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            stop();
        }
    }
}

/// `POST /v1/chat/completions`.
pub(crate) async fn completions(
    State(app): State<AppState>,
    RawBody(raw): RawBody,
) -> Result<Response, ApiError> {
    let request = parse(raw)?;
    check_model(&app, &request.model)?;
    let intent = intent(&request.messages)?;
    let (id, performing) = Performing::start(&app, intent).await?;
    // A client that goes away stops its performance.
    let guard = performing.on_leave(&id, &app.shutdown);
    let chat_id = format!("chatcmpl-{id}");
    let created = now();
    let model = app.stage.stage.name.clone();
    let header = HeaderValue::from_str(&id).ok();
    let mut response = if request.stream {
        let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
        let frames = performing.frames(&app, id.clone());
        let chunks = Chunks {
            performance: id.clone(),
            id: chat_id,
            created,
            model,
            include_usage,
            guard: Some(guard),
            text_since_turn: false,
            separate: false,
        };
        let body = frames
            .scan(chunks, |c, frame| {
                futures::future::ready(Some(c.map(&frame)))
            })
            .flat_map(futures::stream::iter)
            .map(Ok::<_, Infallible>);
        Sse::new(body)
            .keep_alive(KeepAlive::default())
            .into_response()
    } else {
        let end = match performing.ended(&id).await {
            Ok(end) => end,
            Err(e) => {
                // The performance may well go on (the store lost, not the client).
                guard.disarm();
                return Ok(not_followed(e, &id, header));
            }
        };
        guard.disarm();
        if end.outcome == Outcome::Failed {
            let mut response = ApiError::new(
                StatusCode::BAD_GATEWAY,
                "performance_failed",
                format!(
                    "performance {} failed: {}; it is logged (improv show {})",
                    end.id, end.reason, end.id
                ),
            )
            .into_response();
            response
                .headers_mut()
                .insert(SHOULD_RETRY, HeaderValue::from_static("false"));
            if let Some(h) = header {
                response.headers_mut().insert("x-improv-performance", h);
            }
            return Ok(response);
        }
        Json(json!({
            "id": chat_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": end.answer},
                "finish_reason": finish_reason(end.outcome),
            }],
            "usage": usage(&end),
        }))
        .into_response()
    };
    if let Some(h) = header {
        response.headers_mut().insert("x-improv-performance", h);
    }
    Ok(response)
}

/// The answer when the performance could not be followed to its end (the store failed for
/// longer than a restart takes): says it may still be running, and that a retry would start
/// another (the official SDKs retry a 5xx by default).
fn not_followed(e: ApiError, id: &str, header: Option<HeaderValue>) -> Response {
    let mut e = e;
    e.message = still_running(id, &e.message);
    let mut response = e.into_response();
    response
        .headers_mut()
        .insert(SHOULD_RETRY, HeaderValue::from_static("false"));
    if let Some(h) = header {
        response.headers_mut().insert("x-improv-performance", h);
    }
    response
}

/// What a client is told when following performance `id` failed with `why`.
fn still_running(id: &str, why: &str) -> String {
    format!(
        "following performance {id} failed: {why}; it may still be running (improv show {id}), so do not retry"
    )
}

/// Turns a performance's frames into `chat.completion.chunk`s.
struct Chunks {
    /// The performance's id, which errors name.
    performance: String,
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    /// Stops the performance if the client leaves before the end.
    guard: Option<OnLeave>,
    text_since_turn: bool,
    separate: bool,
}

impl Chunks {
    fn chunk(&self, delta: Value, finish: Option<&str>) -> SseEvent {
        SseEvent::default().data(
            json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            })
            .to_string(),
        )
    }

    fn map(&mut self, frame: &Frame) -> Vec<SseEvent> {
        if frame.is_end() {
            if let Some(g) = self.guard.take() {
                g.disarm();
            }
            let Ok(end) = serde_json::from_str::<EndFrame>(&frame.data) else {
                return vec![SseEvent::default().data("[DONE]")];
            };
            let mut out = Vec::new();
            if end.outcome == Outcome::Failed {
                out.push(SseEvent::default().data(
                    json!({"error": {"message": format!("the performance failed: {}", end.reason), "type": "server_error"}})
                        .to_string(),
                ));
            } else {
                out.push(self.chunk(json!({}), Some(finish_reason(end.outcome))));
            }
            if self.include_usage {
                out.push(
                    SseEvent::default().data(
                        json!({
                            "id": self.id,
                            "object": "chat.completion.chunk",
                            "created": self.created,
                            "model": self.model,
                            "choices": [],
                            "usage": {
                                "prompt_tokens": end.spent.input_tokens,
                                "completion_tokens": end.spent.output_tokens,
                                "total_tokens": end.spent.input_tokens + end.spent.output_tokens,
                            },
                        })
                        .to_string(),
                    ),
                );
            }
            out.push(SseEvent::default().data("[DONE]"));
            return out;
        }
        if frame.name == Some("error") {
            return self.not_followed(frame);
        }
        if frame.name.is_some() {
            return Vec::new();
        }
        let Ok(event) = serde_json::from_str::<Event>(&frame.data) else {
            return Vec::new();
        };
        match event.kind {
            EventKind::PerformanceStarted { .. } => {
                vec![self.chunk(json!({"role": "assistant", "content": ""}), None)]
            }
            EventKind::TurnStarted { .. } => {
                self.separate = self.text_since_turn;
                self.text_since_turn = false;
                Vec::new()
            }
            EventKind::TextDelta { text } if !text.is_empty() => {
                let text = if std::mem::take(&mut self.separate) {
                    format!("\n\n{text}")
                } else {
                    text
                };
                self.text_since_turn = true;
                vec![self.chunk(json!({"content": text}), None)]
            }
            _ => Vec::new(),
        }
    }
}

impl Chunks {
    /// The stream's last chunks when following the performance failed (an `error` frame): the
    /// client is told, and the performance is left running (the client did not leave).
    fn not_followed(&mut self, frame: &Frame) -> Vec<SseEvent> {
        if let Some(g) = self.guard.take() {
            g.disarm();
        }
        let error: Value = serde_json::from_str(&frame.data).unwrap_or_default();
        let why = error["error"]["message"].as_str().unwrap_or("unknown");
        vec![
            SseEvent::default().data(
                json!({"error": {"message": still_running(&self.performance, why), "type": "server_error"}})
                    .to_string(),
            ),
            SseEvent::default().data("[DONE]"),
        ]
    }
}

#[derive(Deserialize)]
struct EndFrame {
    outcome: Outcome,
    reason: String,
    spent: improv_kernel::Spent,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn a_stream_that_cannot_follow_tells_the_client_and_leaves_the_performance_running() {
        let stopped = Arc::new(AtomicBool::new(false));
        let stop = stopped.clone();
        let mut chunks = Chunks {
            performance: "p1".into(),
            id: "chatcmpl-p1".into(),
            created: 0,
            model: "stage".into(),
            include_usage: false,
            guard: Some(OnLeave(Some(Box::new(move || {
                stop.store(true, Ordering::SeqCst)
            })))),
            text_since_turn: false,
            separate: false,
        };
        let out = chunks.map(&Frame::error("the store is unavailable"));
        drop(chunks);
        let told = format!("{out:?}");
        assert_eq!(out.len(), 2, "{told}");
        assert!(
            told.contains("performance p1") && told.contains("may still be running"),
            "{told}"
        );
        assert!(told.contains("[DONE]"), "{told}");
        assert!(
            !stopped.load(Ordering::SeqCst),
            "the client did not leave: nothing is stopped"
        );
    }
}
