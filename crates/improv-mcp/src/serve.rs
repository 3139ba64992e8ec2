//! improv as an MCP server: a stage offered to any MCP client (Claude Desktop, Codex, Cursor,
//! another improv) as tools and resources.
//!
//! - `perform`: intent in; the performance's outcome, reason and the lead's answer out (and the
//!   whole summary as structured content). While it runs, the client receives a progress
//!   notification per turn and per prop call, when it asked for progress. Cancelling the request
//!   interrupts the performance (it can be resumed). A host can perform it elsewhere
//!   ([`Elsewhere`]): `improv serve` among its own performances, or queued for its workers.
//! - `ledger_query`: reads a ledger collection, as the actors' `query` prop does.
//! - resources `improv://schema/COLLECTION`: the ledger's settled schemas (JSON Schema).

use crate::McpError;
use improv_kernel::{Event, EventKind, ObserveError, Observer};
use improv_ledger::{Ledger, Query};
use improv_perform::{Launch, launch, state_dir};
use improv_stage::Stage;
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ProgressNotificationParam, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult,
    Resource, ResourceContents, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, ServiceExt};
use serde_json::{Value, json};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The scheme of the settled-schema resources.
pub const SCHEMA_URI: &str = "improv://schema/";

/// Serves `stage` over stdin/stdout until the client disconnects.
pub async fn serve_stdio(stage: Arc<Stage>) -> Result<(), McpError> {
    serve_stdio_until(stage, std::future::pending()).await
}

/// Serves `stage` over stdin/stdout until the client disconnects or `stop` completes (the
/// director's Ctrl-C, SIGTERM or SIGHUP); either way the performances still running are
/// interrupted and each has logged its end before this returns.
pub async fn serve_stdio_until(
    stage: Arc<Stage>,
    stop: impl Future<Output = ()>,
) -> Result<(), McpError> {
    let server = StageServer::new(stage);
    let inflight = server.inflight.clone();
    tokio::pin!(stop);
    let running = tokio::select! {
        running = server.serve(rmcp::transport::stdio()) => running
            .map_err(|e| McpError::Serve(format!("the MCP handshake failed: {e}")))?,
        _ = &mut stop => return Ok(()),
    };
    let cancel = running.cancellation_token();
    let waiting = running.waiting();
    tokio::pin!(waiting);
    let quit = tokio::select! {
        quit = &mut waiting => quit,
        _ = &mut stop => {
            inflight.stop().await;
            cancel.cancel();
            waiting.await
        }
    };
    inflight.stop().await;
    quit.map_err(|e| McpError::Serve(format!("the server stopped abnormally: {e}")))?;
    Ok(())
}

/// The performances a [`StageServer`] (and its clones) started and that still run:
/// [`Inflight::stop`] interrupts them and waits until each has logged its end.
#[derive(Clone)]
pub struct Inflight {
    stop: CancellationToken,
    running: Arc<watch::Sender<usize>>,
}

impl Default for Inflight {
    fn default() -> Self {
        Inflight {
            stop: CancellationToken::new(),
            running: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl Inflight {
    /// Interrupts every running performance (and those started later) and waits for their end.
    pub async fn stop(&self) {
        self.stop.cancel();
        let mut running = self.running.subscribe();
        // The sender lives in `self`, so the channel cannot close while this waits.
        let _ = running.wait_for(|n| *n == 0).await;
    }

    fn enter(&self) -> InflightGuard {
        self.running.send_modify(|n| *n += 1);
        InflightGuard(self.running.clone())
    }
}

/// One running performance, counted until dropped.
struct InflightGuard(Arc<watch::Sender<usize>>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Where `perform` performs when not by the handler itself: a server with a performance store
/// (`improv serve --store`) queues it for its workers and follows it there; `improv serve`
/// without one performs it among its own performances, under its bound.
#[async_trait::async_trait]
pub trait Elsewhere: Send + Sync {
    /// Starts performing `intent` (`model` for every actor when given); returns its id.
    async fn start(&self, intent: &str, model: Option<String>) -> Result<String, String>;

    /// Waits until performance `id` ended, sending a message per turn and per prop call to
    /// `progress`; returns its summary as JSON (`id`, `outcome`, `reason`, `answer`, ...).
    async fn ended(
        &self,
        id: &str,
        progress: mpsc::UnboundedSender<String>,
    ) -> Result<Value, String>;

    /// Asks performance `id` to stop: its client cancelled the call.
    async fn stop(&self, id: &str);
}

/// A stage as an MCP server's handler; [`serve_stdio`] runs it, and any rmcp transport can.
#[derive(Clone)]
pub struct StageServer {
    stage: Arc<Stage>,
    inflight: Inflight,
    /// Where `perform` performs, when not here.
    elsewhere: Option<Arc<dyn Elsewhere>>,
}

impl StageServer {
    pub fn new(stage: Arc<Stage>) -> Self {
        Self::with_inflight(stage, Inflight::default())
    }

    /// A server whose performances `inflight` can stop: a host serving many sessions shares one.
    pub fn with_inflight(stage: Arc<Stage>, inflight: Inflight) -> Self {
        StageServer {
            stage,
            inflight,
            elsewhere: None,
        }
    }

    /// The same server, performing `perform`'s performances through `elsewhere`.
    pub fn performing_elsewhere(mut self, elsewhere: Arc<dyn Elsewhere>) -> Self {
        self.elsewhere = Some(elsewhere);
        self
    }

    fn ledger(&self) -> Result<Ledger, ErrorData> {
        let dir = state_dir(&self.stage);
        Ledger::open_in(&dir, improv_perform::cast::ledger_options(&self.stage)).map_err(|e| {
            ErrorData::internal_error(
                format!("cannot open the ledger in {}: {e}", dir.display()),
                None,
            )
        })
    }

    fn tools() -> Vec<Tool> {
        let object = |v: Value| match v {
            Value::Object(map) => Arc::new(map),
            // Both schemas below are object literals.
            _ => Arc::new(JsonObject::new()),
        };
        vec![
            Tool::new(
                "perform",
                "Perform this improv stage: its actors work on the intent until done. Returns the outcome and the lead's answer.",
                object(json!({
                    "type": "object",
                    "properties": {
                        "intent": {"type": "string", "description": "What to achieve."},
                        "model": {"type": "string", "description": "provider/model for every actor, overriding the stage."}
                    },
                    "required": ["intent"]
                })),
            ),
            Tool::new(
                "ledger_query",
                "Read entries of a collection in this stage's ledger.",
                object(json!({
                    "type": "object",
                    "properties": {
                        "collection": {"type": "string"},
                        "where": {"type": "object", "description": "{f: v} or {f: {op: v}}, op: = != < > <= >= contains exists"},
                        "order_by": {"type": "string", "description": "f or -f"},
                        "limit": {"type": "integer"}
                    },
                    "required": ["collection"]
                })),
            ),
        ]
    }

    async fn perform(
        &self,
        args: &JsonObject,
        progress: Option<rmcp::model::ProgressToken>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        // Wrong arguments are the calling model's to fix: a tool error it reads, not a
        // JSON-RPC error its client may hide from it.
        let Some(intent) = args
            .get("intent")
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
        else {
            return Ok(tool_error(
                "`perform` needs `intent`: a non-empty string saying what to achieve, e.g. {\"intent\": \"Summarize README.md\"}",
            ));
        };
        let model = match args.get("model") {
            None | Some(Value::Null) => None,
            Some(Value::String(m)) if !m.trim().is_empty() => Some(m.clone()),
            Some(_) => {
                return Ok(tool_error(
                    "`model` is provider/name as a string, e.g. \"openai/gpt-5-mini\"; leave it out to use the stage's",
                ));
            }
        };
        if let Some(elsewhere) = &self.elsewhere {
            return Ok(
                perform_elsewhere(elsewhere.as_ref(), intent, model, progress, context).await,
            );
        }
        let _counted = self.inflight.enter();
        let mut start = Launch::new(intent);
        start.model = model;
        let (tx, rx) = mpsc::unbounded_channel();
        if progress.is_some() {
            start.observers.push(Arc::new(Progress { tx }));
        }
        start.outside = match crate::outside(&self.stage).await {
            Ok(o) => o,
            Err(e) => {
                return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                    "the stage's MCP servers could not be attached: {e}"
                ))]));
            }
        };
        let running = match launch(self.stage.clone(), start) {
            Ok(r) => r,
            Err(e) => {
                return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                    "the stage could not be performed: {e}"
                ))]));
            }
        };
        let forward = progress.map(|token| forward_progress(&context, token, rx));
        let mut done = running.done;
        let joined = tokio::select! {
            r = &mut done => r,
            _ = context.ct.cancelled() => {
                running.cancel.cancel();
                done.await
            }
            _ = self.inflight.stop.cancelled() => {
                running.cancel.cancel();
                done.await
            }
        };
        if let Some(f) = forward {
            f.abort();
        }
        let summary = match joined {
            Ok(Ok(summary)) => summary,
            Ok(Err(e)) => {
                return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                    "performance {} failed: {e}",
                    running.id
                ))]));
            }
            Err(e) => {
                return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                    "performance {} stopped abnormally: {e}",
                    running.id
                ))]));
            }
        };
        Ok(summarized(
            serde_json::to_value(&summary).unwrap_or_default(),
        ))
    }

    fn ledger_query(&self, args: &JsonObject) -> Result<CallToolResult, ErrorData> {
        let Some(collection) = args.get("collection").and_then(Value::as_str) else {
            return Ok(tool_error(
                "`ledger_query` needs `collection`: the name of the collection to read",
            ));
        };
        let order_by = match args.get("order_by") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.as_str()),
            Some(_) => return Ok(tool_error("`order_by` is a field name, e.g. \"-score\"")),
        };
        let ledger = self.ledger()?;
        let found = Query::limit_from_json(args.get("limit"))
            .and_then(|limit| Query::from_json(args.get("where"), order_by, limit))
            .and_then(|q| ledger.query(collection, &q));
        Ok(match found {
            Ok(entries) => CallToolResult::structured(json!({ "entries": entries })),
            Err(e) => CallToolResult::error(vec![ContentBlock::text(e.to_string())]),
        })
    }
}

impl ServerHandler for StageServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new(
            format!("improv:{}", self.stage.stage.name),
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(format!(
            "The improv stage `{}`. Call `perform` with an intent to have its actors do the work.",
            self.stage.stage.name
        ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(Self::tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        use rmcp::model::RequestParamsMeta;
        let progress = request
            .progress_token()
            .or_else(|| context.meta.get_progress_token());
        let args = request.arguments.clone().unwrap_or_default();
        let result = match request.name.as_ref() {
            "perform" => self.perform(&args, progress, context).await,
            "ledger_query" => self.ledger_query(&args),
            other => Err(ErrorData::invalid_params(
                format!("no tool `{other}`; the tools are perform and ledger_query"),
                None,
            )),
        };
        logged("tools/call", result).map(Into::into)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        logged("resources/list", self.resources())
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        logged("resources/read", self.schema_resource(&request)).map(Into::into)
    }
}

impl StageServer {
    fn resources(&self) -> Result<ListResourcesResult, ErrorData> {
        let ledger = self.ledger()?;
        let collections = ledger
            .collections()
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let resources = collections
            .into_iter()
            .filter_map(|c| {
                let version = c.settled?;
                let mut r = Resource::new(format!("{SCHEMA_URI}{}", c.name), c.name.clone());
                r.description = Some(format!(
                    "The settled schema of ledger collection `{}` (version {version}).",
                    c.name
                ));
                r.mime_type = Some("application/schema+json".into());
                Some(r)
            })
            .collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    fn schema_resource(
        &self,
        request: &ReadResourceRequestParams,
    ) -> Result<ReadResourceResult, ErrorData> {
        let not_found =
            || ErrorData::resource_not_found(format!("no settled schema at {}", request.uri), None);
        let collection = request.uri.strip_prefix(SCHEMA_URI).ok_or_else(not_found)?;
        let schema = self
            .ledger()?
            .schema(collection)
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?
            .ok_or_else(not_found)?;
        let text = serde_json::to_string_pretty(&schema).unwrap_or_default();
        let contents = ResourceContents::TextResourceContents {
            uri: request.uri.clone(),
            mime_type: Some("application/schema+json".into()),
            text,
            meta: None,
        };
        Ok(ReadResourceResult::new(vec![contents]))
    }
}

/// Logs an error answer once, at the level its cause deserves: an internal error is ours (a
/// ledger that cannot be opened) and logged as an error; anything else (an unknown tool, bad
/// arguments, a missing resource) is the client's mistake, which the answer already explains
/// to it, so the operator sees it only at debug level.
fn logged<T>(method: &str, answer: Result<T, ErrorData>) -> Result<T, ErrorData> {
    if let Err(e) = &answer {
        if e.code == rmcp::model::ErrorCode::INTERNAL_ERROR {
            tracing::error!(method, code = e.code.0, "{}", e.message);
        } else {
            tracing::debug!(
                method,
                code = e.code.0,
                "the client's request was refused: {}",
                e.message
            );
        }
    }
    answer
}

/// Sends the messages `rx` receives to the client as progress notifications for `token`.
fn forward_progress(
    context: &RequestContext<RoleServer>,
    token: rmcp::model::ProgressToken,
    mut rx: mpsc::UnboundedReceiver<String>,
) -> tokio::task::JoinHandle<()> {
    let peer = context.peer.clone();
    tokio::spawn(async move {
        let mut n = 0.0;
        while let Some(message) = rx.recv().await {
            n += 1.0;
            let mut p = ProgressNotificationParam::new(token.clone(), n);
            p.message = Some(message);
            if peer.notify_progress(p).await.is_err() {
                break;
            }
        }
    })
}

/// `perform`'s result from a performance's summary (`id`, `outcome`, `reason`, `answer`): the
/// outcome, reason and answer as text, the whole summary as structured content.
fn summarized(structured: Value) -> CallToolResult {
    let field = |name: &str| structured[name].as_str().unwrap_or("?").to_string();
    let outcome = field("outcome");
    let text = format!(
        "{outcome} ({}), performance {}\n\n{}",
        field("reason"),
        field("id"),
        structured["answer"].as_str().unwrap_or_default()
    );
    let mut result = CallToolResult::structured(structured);
    result.content = vec![ContentBlock::text(text)];
    result.is_error = Some(outcome == "failed");
    result
}

/// `perform` through [`Elsewhere`]: cancelling the call stops the performance there; this
/// server shutting down does not (it goes on where it runs, and stays in its store).
async fn perform_elsewhere(
    elsewhere: &dyn Elsewhere,
    intent: &str,
    model: Option<String>,
    progress: Option<rmcp::model::ProgressToken>,
    context: RequestContext<RoleServer>,
) -> CallToolResult {
    let id = match elsewhere.start(intent, model).await {
        Ok(id) => id,
        Err(e) => return tool_error(&format!("the stage could not be performed: {e}")),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let forward = progress.map(|token| forward_progress(&context, token, rx));
    let ended = elsewhere.ended(&id, tx);
    tokio::pin!(ended);
    // `ended` first: its first poll takes over what `start` holds for the call (a server's
    // place), so a call dropped while it stops still gives that back.
    let ended = tokio::select! {
        biased;
        r = &mut ended => r,
        _ = context.ct.cancelled() => {
            elsewhere.stop(&id).await;
            ended.await
        }
    };
    if let Some(f) = forward {
        f.abort();
    }
    match ended {
        Ok(summary) => summarized(summary),
        Err(e) => tool_error(&format!("performance {id} failed: {e}")),
    }
}

/// A tool result that tells the calling model what was wrong with its call.
fn tool_error(message: &str) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

/// Turns a performance's events into progress messages for the client.
struct Progress {
    tx: mpsc::UnboundedSender<String>,
}

impl Observer for Progress {
    fn observe(&self, event: &Event) -> Result<(), ObserveError> {
        if let Some(message) = progress_message(event) {
            // The receiver is gone once the request ended; progress is best effort.
            let _ = self.tx.send(message);
        }
        Ok(())
    }
}

/// The progress message `perform` sends its client for `event`: one per turn and per prop
/// call, none for anything else.
pub fn progress_message(event: &Event) -> Option<String> {
    let actor = event.actor.as_deref().unwrap_or("stage");
    match &event.kind {
        EventKind::TurnStarted { turn } => Some(format!("{actor}: turn {turn}")),
        EventKind::ToolCallStarted { name, .. } => Some(format!("{actor}: {name}")),
        _ => None,
    }
}
