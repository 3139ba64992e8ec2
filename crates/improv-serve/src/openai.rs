//! The OpenAI-compatible endpoint: `POST /v1/chat/completions`, streaming and not, where
//! `model` names the stage. Any OpenAI client or chat UI can talk to a stage; each request is a
//! logged performance whose intent is the conversation. `GET /v1/models` lists the stage.

use crate::api::{AppState, Body};
use crate::error::ApiError;
use crate::live::{End, Frame};
use crate::perform::{self, Start};
use crate::stream;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use improv_kernel::{Event, EventKind, Outcome};
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio_util::sync::{CancellationToken, DropGuard};

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
        )),
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

/// `GET /v1/models`: the stage, as the one model this server serves.
pub(crate) async fn models(State(app): State<AppState>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": app.stage.stage.name, "object": "model", "created": 0, "owned_by": "improv"}],
    }))
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

/// `POST /v1/chat/completions`.
pub(crate) async fn completions(
    State(app): State<AppState>,
    Body(request): Body<ChatRequest>,
) -> Result<Response, ApiError> {
    if request.model != app.stage.stage.name {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!(
                "this server serves the stage `{}`; send it as `model` (GET /v1/models lists it)",
                app.stage.stage.name
            ),
        ));
    }
    let intent = intent(&request.messages)?;
    let outside = perform::outside(&app.stage).await?;
    let (id, live) = perform::start(
        app.stage.clone(),
        app.hub.clone(),
        app.max_running,
        Start {
            intent,
            model: None,
            resume: None,
            outside,
        },
    )?;
    // A client that goes away stops its performance (logged as interrupted).
    let guard = live
        .control()
        .map(|c| c.cancel.clone())
        .unwrap_or_else(CancellationToken::new)
        .drop_guard();
    let chat_id = format!("chatcmpl-{id}");
    let created = now();
    let model = app.stage.stage.name.clone();
    let header = HeaderValue::from_str(&id).ok();
    let mut response = if request.stream {
        let include_usage = request.stream_options.is_some_and(|o| o.include_usage);
        let frames = stream::follow(Some(live), app.log.clone(), id, None);
        let chunks = Chunks {
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
        let end = live.ended().await;
        drop(guard.disarm());
        if end.outcome == Outcome::Failed {
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "performance_failed",
                format!("performance {} failed: {}", end.id, end.reason),
            ));
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

/// Turns a performance's frames into `chat.completion.chunk`s.
struct Chunks {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    /// Cancels the performance if the client leaves before the end.
    guard: Option<DropGuard>,
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
                drop(g.disarm());
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

#[derive(Deserialize)]
struct EndFrame {
    outcome: Outcome,
    reason: String,
    spent: improv_kernel::Spent,
}
