//! The HTTP API: performances (start, list, get, stop, notes, approvals, events), the ledger,
//! the stage, and the routes' table. Every handler validates what it is given and answers a
//! clean 4xx when it is wrong; nothing a client sends can panic the server.

use crate::error::ApiError;
use crate::live::{Hub, Live};
use crate::perform::{self, Start};
use crate::stored;
use crate::stream;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::{Json, extract::Request};
use futures::StreamExt;
use improv_edges::Approval;
use improv_ledger::{Ledger, LedgerOptions};
use improv_log::EventLog;
use improv_stage::Stage;
use improv_store::Answer;
use improv_store::Store;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

/// What every handler shares.
#[derive(Clone)]
pub(crate) struct AppState {
    pub stage: Arc<Stage>,
    pub log: Arc<EventLog>,
    pub hub: Arc<Hub>,
    pub state_dir: PathBuf,
    pub max_running: usize,
    /// How long an `ask` of an MCP client's `perform` waits ([`crate::ServeArgs::ask_timeout`]).
    pub ask_timeout: std::time::Duration,
    /// The performance store (`--store`): what workers perform is listed, shown, streamed,
    /// noted and answered through it ([`stored`]).
    pub store: Option<Arc<dyn Store>>,
    /// Cancelled when the server stops: connections closing then are not clients leaving, so
    /// the stored performances they follow are not stopped (a worker performs them on).
    pub shutdown: tokio_util::sync::CancellationToken,
    /// The places of the stored performances followed for waiting clients (`--store`).
    pub following: stored::Following,
}

/// Where the stage is served as an MCP server (its errors are the MCP transport's own).
pub(crate) const MCP_PATH: &str = "/mcp";

/// Whether a request path is the MCP endpoint's.
pub(crate) fn is_mcp(path: &str) -> bool {
    path.strip_prefix(MCP_PATH)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The most performances `GET /performances` lists at once (the document says the same).
pub(crate) const LIST_LIMIT_MAX: u32 = 1000;
const LIST_LIMIT_DEFAULT: u32 = 50;

/// A query string whose rejections are [`ApiError`]s.
pub(crate) struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(value) = Query::<T>::from_request_parts(parts, state).await?;
        Ok(Params(value))
    }
}

/// A JSON object body whose rejections are [`ApiError`]s: not JSON 400, too large 413, no JSON
/// content type 415, not an object or the wrong shape 422 naming the field.
pub(crate) struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let RawBody(value) = RawBody::from_request(req, state).await?;
        shaped(value, StatusCode::UNPROCESSABLE_ENTITY).map(Body)
    }
}

/// Any JSON body, for a handler that looks at it before giving it a shape with [`shaped`].
pub(crate) struct RawBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let Json(value) = Json::<Value>::from_request(req, state).await?;
        Ok(RawBody(value))
    }
}

/// `value` as a `T`, or `status` saying which field is wrong. Only an object is taken: serde
/// would read a struct from an array too, which the document does not allow.
pub(crate) fn shaped<T: DeserializeOwned>(value: Value, status: StatusCode) -> Result<T, ApiError> {
    let refuse = |message: String| ApiError::new(status, "invalid_body", message);
    if !value.is_object() {
        let got = match value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::String(_) => "a string",
            Value::Array(_) => "an array",
            Value::Object(_) => "an object",
        };
        return Err(refuse(format!("the body must be a JSON object, not {got}")));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            refuse(format!(
                "the body is not what this endpoint takes: {}",
                e.inner()
            ))
        } else {
            refuse(format!(
                "the body is not what this endpoint takes: `{path}`: {}",
                e.inner()
            ))
            .with_param(path)
        }
    })
}

/// Ids name files in the log: the same safe alphabet, checked before anything is looked up.
pub(crate) fn check_id(id: &str) -> Result<(), ApiError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "`{}` is not a performance id: ids are 1 to 128 letters, digits, `-` or `_`",
            id.chars().take(140).collect::<String>().escape_debug()
        )))
    }
}

/// Runs blocking log work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await?
}

/// `GET /stage`: what the page needs to draw meters and lanes.
pub(crate) async fn get_stage(State(app): State<AppState>) -> Json<Value> {
    let s = &app.stage;
    Json(json!({
        "name": s.stage.name,
        "intent": s.stage.intent,
        "lead": s.lead().name,
        "actors": s.actors.iter().map(|a| json!({
            "name": a.name, "model": a.model, "props": a.props, "role": a.role,
        })).collect::<Vec<_>>(),
        "budget": {
            "max_turns": s.edges.max_turns,
            "max_input_tokens": s.edges.max_input_tokens,
            "max_output_tokens": s.edges.max_output_tokens,
            "max_cost_usd": s.edges.max_cost_usd,
            "max_tool_calls": s.edges.max_tool_calls,
            "timeout_ms": s.edges.timeout.map(|t| t.as_millis() as u64),
        },
        "feedback": {
            "max_attempts": s.feedback.max_attempts,
            "checks": s.feedback.checks.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        },
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartBody {
    #[serde(default)]
    intent: Option<String>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    resume: Option<String>,
}

/// `POST /performances`: starts one; 201 with its id.
pub(crate) async fn start(
    State(app): State<AppState>,
    Body(body): Body<StartBody>,
) -> Result<Response, ApiError> {
    if let Some(r) = &body.resume {
        check_id(r)?;
        // A whole id, as every route takes: the hub counts a resume by the id it is given, so a
        // prefix or an ending of a running one's id would get past it (the log finds either).
        if logged(&app, r).await?.is_none() {
            return Err(unknown(r));
        }
    }
    if let Some(m) = &body.model
        && (m.is_empty() || m.chars().count() > 200 || m.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(
            "`model` is provider/name, e.g. openai/gpt-5-mini",
        ));
    }
    let intent = match (body.intent, &body.resume) {
        (Some(i), _) if !i.trim().is_empty() => i,
        (_, Some(_)) => String::new(),
        _ => match app
            .stage
            .stage
            .intent
            .clone()
            .filter(|i| !i.trim().is_empty())
        {
            Some(i) => i,
            None => {
                return Err(ApiError::bad_request(format!(
                    "give an `intent`: the stage {} sets none",
                    app.stage.path.display()
                )));
            }
        },
    };
    // With a store the workers perform it; a resume continues this server's own log here.
    if let Some(store) = app.store.as_ref().filter(|_| body.resume.is_none()) {
        if let Some(model) = &body.model {
            stored::check_model(model)?;
        }
        let entrance = stored::Entrance::Api;
        let id = stored::enqueue(store.as_ref(), &app.stage, intent, body.model, entrance).await?;
        let links = json!({
            "id": id,
            "events": format!("/performances/{id}/events"),
            "queued": true,
        });
        return Ok((StatusCode::CREATED, Json(links)).into_response());
    }
    let place = perform::place(&app.hub, app.max_running, body.resume.as_deref())?;
    let outside = perform::outside(&app.stage, &place).await?;
    let (id, _) = perform::start(
        app.stage.clone(),
        place,
        Start {
            intent,
            model: body.model,
            resume: body.resume,
            outside,
            ask_timeout: None,
        },
    )?;
    let links = json!({
        "id": id,
        "events": format!("/performances/{id}/events"),
    });
    Ok((StatusCode::CREATED, Json(links)).into_response())
}

#[derive(Deserialize)]
pub(crate) struct ListQuery {
    limit: Option<u32>,
}

/// `GET /performances`: newest first, with the approvals each running one waits on.
pub(crate) async fn list(
    State(app): State<AppState>,
    Params(q): Params<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(LIST_LIMIT_DEFAULT);
    if !(1..=LIST_LIMIT_MAX).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "`limit` is 1 to {LIST_LIMIT_MAX}, not {limit}"
        ))
        .with_param("limit"));
    }
    let log = app.log.clone();
    let rows = blocking(move || Ok(log.list(limit as usize)?)).await?;
    let mut list: Vec<Value> = rows
        .into_iter()
        .map(|row| with_live(json!(row), app.hub.get(&row.id)))
        .collect();
    if let Some(store) = &app.store {
        list.extend(
            stored::list(
                store.as_ref(),
                &stored::stage_key(&app.stage),
                limit as usize,
            )
            .await?,
        );
        newest_first(&mut list, limit as usize);
    }
    Ok(Json(json!({ "performances": list })))
}

/// Orders the server's own performances and the store's by start, newest first, and keeps
/// `limit`. Both write `started_at` as RFC 3339 in UTC, which sorts as text.
fn newest_first(list: &mut Vec<Value>, limit: usize) {
    let started = |v: &Value| v["started_at"].as_str().unwrap_or_default().to_string();
    list.sort_by_key(|v| std::cmp::Reverse(started(v)));
    list.truncate(limit);
}

fn with_live(mut row: Value, live: Option<Arc<Live>>) -> Value {
    if let Some(obj) = row.as_object_mut() {
        obj.remove("log_path");
        let running = live.as_ref().is_some_and(|l| !l.is_ended());
        obj.insert("live".into(), json!(running));
        obj.insert(
            "approvals".into(),
            json!(live.map(|l| l.pending()).unwrap_or_default()),
        );
    }
    row
}

/// `GET /performances/{id}`.
pub(crate) async fn get(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    check_id(&id)?;
    let live = app.hub.get(&id);
    if live.is_none()
        && let Some(store) = &app.store
        && let Some(row) = stored::get(store.as_ref(), &stored::stage_key(&app.stage), &id).await?
    {
        return Ok(Json(row));
    }
    let row = logged(&app, &id).await?;
    match (row, live) {
        (Some(row), live) => Ok(Json(with_live(json!(row), live))),
        // Launched, its first event not yet indexed.
        (None, Some(live)) => Ok(Json(with_live(
            json!({"id": id, "status": "running"}),
            Some(live),
        ))),
        (None, None) => Err(unknown(&id)),
    }
}

/// The logged row of performance `id`, or none. The API takes whole ids only: a prefix or the
/// short ending the CLI takes is the client's mistake, answered with the ids it starts so the client can pick.
async fn logged(app: &AppState, id: &str) -> Result<Option<improv_log::PerformanceRow>, ApiError> {
    let log = app.log.clone();
    let key = id.to_string();
    blocking(move || match log.find(&key) {
        Ok(row) if row.id == key => Ok(Some(row)),
        Ok(row) => Err(prefix_of(&key, &[row.id])),
        Err(improv_log::LogError::NotFound { .. }) => Ok(None),
        Err(improv_log::LogError::Ambiguous { candidates, .. }) => {
            Err(prefix_of(&key, &candidates))
        }
        Err(e) => Err(e.into()),
    })
    .await
}

fn prefix_of(id: &str, candidates: &[String]) -> ApiError {
    ApiError::bad_request(format!(
        "`{id}` is not a whole performance id but part of {}; send the whole id (GET /performances lists them)",
        candidates.join(", ")
    ))
    .with_code("partial_id")
}

fn unknown(id: &str) -> ApiError {
    ApiError::not_found(format!(
        "no performance `{id}` on this stage; GET /performances lists them"
    ))
}

/// The running performance `id`, or why there is none: 404 unknown, 409 ended.
async fn running(app: &AppState, id: &str) -> Result<Arc<Live>, ApiError> {
    check_id(id)?;
    if let Some(live) = app.hub.get(id).filter(|l| !l.is_ended()) {
        return Ok(live);
    }
    if logged(app, id).await?.is_some() {
        Err(ApiError::conflict(format!(
            "performance `{id}` is not running in this server; resume it with POST /performances {{\"resume\": \"{id}\"}}"
        )))
    } else {
        Err(unknown(id))
    }
}

/// The store, when `id` is a performance of the served stage in the store and not one this
/// server runs (another stage's is unknown here: 404).
async fn in_store(app: &AppState, id: &str) -> Result<Option<Arc<dyn Store>>, ApiError> {
    check_id(id)?;
    let Some(store) = &app.store else {
        return Ok(None);
    };
    if app.hub.get(id).is_some() {
        return Ok(None);
    }
    let stage = stored::stage_key(&app.stage);
    match stored::record(store.as_ref(), &stage, id).await? {
        Some(_) => Ok(Some(store.clone())),
        None => Ok(None),
    }
}

/// `POST /performances/{id}/stop`: interrupts it (it can be resumed). One in the store is
/// stopped wherever it runs: a queued one ends `stopped` at once, a worker ends a leased one
/// `stopped` (409 once it ended).
pub(crate) async fn stop(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if let Some(store) = in_store(&app, &id).await? {
        let stopping = stored::stop(store.as_ref(), &id).await?;
        let stopped = stopping == improv_store::Stopping::Stopped;
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"id": id, "stopping": true, "stopped": stopped})),
        )
            .into_response());
    }
    let live = running(&app, &id).await?;
    if let Some(c) = live.control() {
        c.cancel.cancel();
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "stopping": true})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoteBody {
    text: String,
}

/// `POST /performances/{id}/notes`: a director note, delivered before the lead's next turn.
pub(crate) async fn note(
    State(app): State<AppState>,
    Path(id): Path<String>,
    Body(body): Body<NoteBody>,
) -> Result<Response, ApiError> {
    if body.text.trim().is_empty() {
        return Err(ApiError::bad_request("the note's `text` is empty"));
    }
    if let Some(store) = in_store(&app, &id).await? {
        let n = stored::note(store.as_ref(), &id, body.text.trim()).await?;
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"id": id, "queued": true, "note": n})),
        )
            .into_response());
    }
    let live = running(&app, &id).await?;
    let sent = live.control().is_some_and(|c| c.notes.send(body.text));
    if !sent {
        return Err(ApiError::conflict(format!(
            "performance `{id}` has ended; the note was not delivered"
        )));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "queued": true})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AnswerBody {
    /// `once`, `performance` or `deny`.
    answer: String,
    #[serde(default)]
    note: Option<String>,
}

/// `POST /performances/{id}/approvals/{approval}`: the director's answer to an `ask`.
pub(crate) async fn answer(
    State(app): State<AppState>,
    Path((id, approval)): Path<(String, String)>,
    Body(body): Body<AnswerBody>,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let approval: u64 = approval.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "`{}` is not an approval number; the stream's `approval` events carry them",
            approval.chars().take(40).collect::<String>().escape_debug()
        ))
    })?;
    let note = body.note.filter(|n| !n.trim().is_empty());
    let (decision, word) = match body.answer.as_str() {
        "once" => (Approval::Once, Answer::Once),
        "performance" => (Approval::ForPerformance, Answer::Performance),
        "deny" => (Approval::Deny { note: note.clone() }, Answer::Deny),
        other => {
            return Err(ApiError::bad_request(format!(
                "`answer` is `once`, `performance` or `deny`, not `{}`",
                other.chars().take(40).collect::<String>().escape_debug()
            )));
        }
    };
    if let Some(store) = in_store(&app, &id).await? {
        let counted = stored::answer(store.as_ref(), &id, approval, word, note.as_deref()).await?;
        if !counted {
            return Err(ApiError::conflict(format!(
                "approval {approval} of `{id}` was answered already; the first answer counts"
            )));
        }
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"id": id, "approval": approval, "answer": body.answer})),
        )
            .into_response());
    }
    let live = running(&app, &id).await?;
    if !live.answer(approval, decision) {
        return Err(ApiError::not_found(format!(
            "performance `{id}` has no approval {approval} waiting; it was answered or withdrawn"
        )));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "approval": approval, "answer": body.answer})),
    )
        .into_response())
}

/// `GET /performances/{id}/events`: Server-Sent Events, resumable with `Last-Event-ID`.
pub(crate) async fn events(
    State(app): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_id(&id)?;
    let after = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "`Last-Event-ID` is the `id` of the last event received, a number",
                    )
                })?,
        ),
    };
    let frames = match in_store(&app, &id).await? {
        Some(store) => stored::follow(store, id, after).boxed(),
        None => {
            let live = app.hub.get(&id);
            // Replayed from the log: it must exist there.
            if live.is_none() && logged(&app, &id).await?.is_none() {
                return Err(unknown(&id));
            }
            stream::follow(live, app.log.clone(), id, after).boxed()
        }
    };
    let frames = frames.map(|f| {
        let mut e = SseEvent::default().data(&*f.data);
        if let Some(seq) = f.seq {
            e = e.id(seq.to_string());
        }
        if let Some(name) = f.name {
            e = e.event(name);
        }
        Ok::<_, Infallible>(e)
    });
    Ok(Sse::new(frames)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn ledger(app: &AppState) -> Result<Ledger, ApiError> {
    let l = &app.stage.ledger;
    let mut options = LedgerOptions {
        auto_settle: l.auto_settle,
        ..Default::default()
    };
    if let Some(n) = l.stable_writes {
        options.stable_writes = n;
    }
    if let Some(t) = l.stable_after {
        options.stable_after = t;
    }
    Ok(Ledger::open_in(&app.state_dir, options)?)
}

fn describe(ledger: &Ledger, c: &improv_ledger::CollectionInfo) -> Value {
    let o = ledger.options();
    let mut v = json!(c);
    if let Some(obj) = v.as_object_mut() {
        obj.insert(
            "tree".into(),
            json!(c.shape.tree(o.enum_max_values, o.enum_min_records)),
        );
    }
    v
}

/// `GET /ledger`: every collection with its state and shape.
pub(crate) async fn ledger_list(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let ledger = ledger(&app)?;
        let list: Vec<Value> = ledger
            .collections()?
            .iter()
            .map(|c| describe(&ledger, c))
            .collect();
        Ok(Json(json!({"collections": list})))
    })
    .await
}

/// `GET /ledger/{collection}`: one collection, with its settled schema when it has one.
pub(crate) async fn ledger_get(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let ledger = ledger(&app)?;
        let info = ledger.collection(&name)?;
        let mut v = describe(&ledger, &info);
        if let Some(obj) = v.as_object_mut() {
            obj.insert("schema".into(), json!(ledger.schema(&name)?));
        }
        Ok(Json(v))
    })
    .await
}

/// `POST /ledger/{collection}/settle`: precipitates its schema.
pub(crate) async fn ledger_settle(
    State(app): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    blocking(move || {
        let ledger = ledger(&app)?;
        let mut settlement = json!(ledger.settle(&name)?);
        if let Some(obj) = settlement.as_object_mut() {
            // A path on the server's disk tells a client nothing it can use.
            obj.remove("schema_file");
        }
        Ok(Json(settlement))
    })
    .await
}
