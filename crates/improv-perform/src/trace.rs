//! OpenTelemetry traces of performances: one span for the performance, one per turn, one per
//! model call and one per prop call, named and attributed after the OpenTelemetry GenAI semantic
//! conventions, exported over OTLP/HTTP (JSON) when `OTEL_EXPORTER_OTLP_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set, and not built at all otherwise.
//!
//! The spans are made from the performance's events by an [`Observer`], outside the kernel: the
//! loop does not know it is traced. The observer only hands finished spans to a bounded channel
//! (a full channel drops the span, logged once), so a turn never waits on export; one
//! background thread with its own small runtime batches them (512 spans, every second, and at
//! once when a performance ends) and posts them, so it outlives the runtime of whichever
//! command started it; a command about to exit [`flush`]es, waiting at most [`FLUSH_AT_EXIT`]. A cued actor's performance hangs under the `cue` call's span. An export that
//! fails is logged once and never ends a performance. Spans carry no prompt, reply, argument or
//! tool output: those may hold secrets.
//!
//! Written by hand rather than with `opentelemetry-otlp`: that stack (the SDK, its protobuf
//! types and prost, its own batch processor) is a large build on a 2-core CI for what is here
//! about 500 lines over the workspace's existing reqwest. OTLP/HTTP with JSON bodies is part of
//! the OTLP specification, and the OpenTelemetry Collector's OTLP receiver takes it on its HTTP
//! port (4318); `OTEL_EXPORTER_OTLP_PROTOCOL` is not read: the body is always JSON.

use improv_kernel::{Event, EventKind, ObserveError, Observer, Outcome, StopReason};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Spans waiting for export at most; beyond this, new spans are dropped rather than wait.
const QUEUE: usize = 4096;
/// Spans per export request at most.
const BATCH: usize = 512;
/// How long a span waits in a partial batch before it is sent.
const INTERVAL: Duration = Duration::from_secs(1);
/// How long one export request may take: a collector that accepts and never answers holds
/// the export thread this long per batch, and never a turn.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a command about to exit (`improv run`, `serve`, `worker`) waits at most for the
/// spans in flight to be posted ([`flush`]); a hung collector delays its exit by this, no more.
pub const FLUSH_AT_EXIT: Duration = Duration::from_secs(3);

/// Where and how to export, from the standard `OTEL_*` variables.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The full URL spans are posted to (`…/v1/traces`).
    pub endpoint: String,
    /// `service.name` of the resource.
    pub service: String,
    /// Extra request headers (an API key for a hosted collector).
    pub headers: Vec<(String, String)>,
}

impl Config {
    /// The configuration `var` describes, or `None` when no endpoint is set (or the SDK is
    /// disabled by `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Option<Config> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        if var("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.trim() == "none")
        {
            return None;
        }
        let endpoint = match var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(url) => url.trim().to_string(),
            None => {
                let base = var("OTEL_EXPORTER_OTLP_ENDPOINT")?;
                format!("{}/v1/traces", base.trim().trim_end_matches('/'))
            }
        };
        let mut headers = parse_headers(&var("OTEL_EXPORTER_OTLP_HEADERS").unwrap_or_default());
        headers.extend(parse_headers(
            &var("OTEL_EXPORTER_OTLP_TRACES_HEADERS").unwrap_or_default(),
        ));
        Some(Config {
            endpoint,
            service: var("OTEL_SERVICE_NAME").unwrap_or_else(|| "improv".into()),
            headers,
        })
    }
}

/// `key1=value1,key2=value2`, values percent-decoded, as the OTLP exporter spec writes them.
fn parse_headers(list: &str) -> Vec<(String, String)> {
    list.split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            let value = percent_encoding::percent_decode_str(value.trim()).decode_utf8_lossy();
            Some((key.trim().to_string(), value.into_owned()))
        })
        .filter(|(key, _)| !key.is_empty())
        .collect()
}

/// A span to hang others under: its trace id and its span id.
type Parent = ([u8; 16], [u8; 8]);

/// Where each cued sub-performance's span hangs, by its id: the trace and the span of the cue
/// call that started it. The cue logs the id before the sub-performance starts; its own tracer
/// takes the entry when it starts.
static CUED: LazyLock<Mutex<HashMap<String, Parent>>> = LazyLock::new(Mutex::default);

/// The process's exporter, started the first time a performance is traced.
static EXPORTER: OnceLock<Option<Exporter>> = OnceLock::new();

/// An observer that traces one performance, when this process exports traces (the
/// environment names an endpoint); `None` otherwise, and nothing is built or sent.
pub fn observer() -> Option<Arc<dyn Observer>> {
    let exporter = EXPORTER
        .get_or_init(|| {
            let config = Config::from_vars(|name| std::env::var(name).ok())?;
            Exporter::start(config)
                .inspect_err(|e| tracing::warn!("traces are not exported: {e}"))
                .ok()
        })
        .as_ref()?;
    Some(Arc::new(Tracer::new(exporter.clone())))
}

/// Sends what was traced so far and waits for it to be posted, at most `wait`: for a command
/// about to exit. Does nothing when traces are not exported.
pub fn flush(wait: Duration) {
    let Some(Some(exporter)) = EXPORTER.get() else {
        return;
    };
    flush_through(&exporter.tx, wait);
}

/// Queues a flush behind the spans already queued, waiting for room while the queue is full,
/// then waits for the export thread to post them; all within `wait`. Returns whether they were
/// posted. Polls rather than `blocking_send`, which panics inside the runtime the caller may be
/// in, and cannot be bounded in time.
fn flush_through(tx: &mpsc::Sender<Message>, wait: Duration) -> bool {
    const RETRY: Duration = Duration::from_millis(5);
    let deadline = std::time::Instant::now() + wait;
    let (done, posted) = std::sync::mpsc::channel();
    let mut message = Message::Flush(done);
    loop {
        match tx.try_send(message) {
            Ok(()) => break,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(back)) => {
                if std::time::Instant::now() >= deadline {
                    return false;
                }
                message = back;
                std::thread::sleep(RETRY);
            }
        }
    }
    let left = deadline.saturating_duration_since(std::time::Instant::now());
    posted.recv_timeout(left).is_ok()
}

/// What the observer tells the export thread.
enum Message {
    Span(Span),
    Flush(std::sync::mpsc::Sender<()>),
}

/// The sending side of the export thread; cheap to clone.
#[derive(Clone)]
struct Exporter {
    tx: mpsc::Sender<Message>,
    dropped: Arc<AtomicBool>,
}

impl Exporter {
    /// Starts the export thread for `config`.
    fn start(config: Config) -> std::io::Result<Exporter> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("improv-trace".into())
            .spawn(move || runtime.block_on(export(config, rx)))?;
        Ok(Exporter {
            tx,
            dropped: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Queues a finished span without waiting.
    fn send(&self, span: Span) {
        if self.tx.try_send(Message::Span(span)).is_err()
            && !self.dropped.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "trace export falls behind: spans are being dropped ({QUEUE} wait already)"
            );
        }
    }
}

/// The export thread: batches spans and posts them until every sender is gone.
async fn export(config: Config, mut rx: mpsc::Receiver<Message>) {
    let client = improv_models::client_builder()
        .map_err(|e| e.to_string())
        .and_then(|b| b.timeout(EXPORT_TIMEOUT).build().map_err(|e| e.to_string()));
    let client = match client {
        Ok(client) => client,
        Err(e) => {
            tracing::warn!("traces are not exported: no HTTP client: {e}");
            return;
        }
    };
    let post = Post {
        config,
        client,
        failed: false,
    };
    run_batches(post, &mut rx).await;
}

/// Posts batches to the collector; remembers whether a failure was already logged.
struct Post {
    config: Config,
    client: reqwest::Client,
    failed: bool,
}

async fn run_batches(mut post: Post, rx: &mut mpsc::Receiver<Message>) {
    let mut batch = Vec::new();
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tokio::select! {
            message = rx.recv() => match message {
                Some(Message::Span(span)) => {
                    // A performance's root span is its last: post them while the process lives.
                    let last = span.parent.is_none();
                    batch.push(span);
                    if last || batch.len() >= BATCH {
                        post.send(std::mem::take(&mut batch)).await;
                    }
                }
                Some(Message::Flush(done)) => {
                    post.send(std::mem::take(&mut batch)).await;
                    let _ = done.send(());
                }
                None => {
                    post.send(std::mem::take(&mut batch)).await;
                    return;
                }
            },
            _ = tick.tick() => post.send(std::mem::take(&mut batch)).await,
        }
    }
}

impl Post {
    /// Posts `spans` (none: nothing); a failure is logged the first time only.
    async fn send(&mut self, spans: Vec<Span>) {
        if spans.is_empty() {
            return;
        }
        let body = request_body(&self.config.service, &spans);
        let mut request = self.client.post(&self.config.endpoint).json(&body);
        for (key, value) in &self.config.headers {
            request = request.header(key, value);
        }
        let failure = match request.send().await {
            Ok(response) if response.status().is_success() => return,
            Ok(response) => format!("the collector answered {}", response.status()),
            Err(e) => {
                // reqwest's own message is generic ("error sending request"): the cause says why.
                let e = e.without_url();
                let mut text = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    text = format!("{text}: {c}");
                    cause = c.source();
                }
                text
            }
        };
        if !self.failed {
            self.failed = true;
            tracing::warn!(
                "traces could not be exported to {}: {failure}; check OTEL_EXPORTER_OTLP_ENDPOINT (further failures are not logged)",
                self.config.endpoint
            );
        }
    }
}

/// A value of a span attribute.
#[derive(Clone, Debug)]
enum Attr {
    Str(String),
    Int(i64),
}

/// A finished span, ready to export.
#[derive(Clone, Debug)]
struct Span {
    trace: [u8; 16],
    id: [u8; 8],
    parent: Option<[u8; 8]>,
    name: String,
    /// SpanKind as OTLP numbers it: 1 internal, 3 client.
    kind: u8,
    start: u64,
    end: u64,
    attrs: Vec<(&'static str, Attr)>,
    /// An error's description: status ERROR when set, UNSET otherwise.
    error: Option<String>,
}

impl Span {
    fn open(trace: [u8; 16], parent: Option<[u8; 8]>, name: String, kind: u8) -> Span {
        Span {
            trace,
            id: span_id(),
            parent,
            name,
            kind,
            start: now(),
            end: 0,
            attrs: Vec::new(),
            error: None,
        }
    }

    fn has(&self, key: &str) -> bool {
        self.attrs.iter().any(|(k, _)| *k == key)
    }

    fn str(&mut self, key: &'static str, value: impl Into<String>) {
        self.attrs.push((key, Attr::Str(value.into())));
    }

    fn int(&mut self, key: &'static str, value: u64) {
        self.attrs
            .push((key, Attr::Int(i64::try_from(value).unwrap_or(i64::MAX))));
    }

    /// Marks it failed: status ERROR, with `error.type` as the conventions ask.
    fn fail(&mut self, kind: &str, message: impl Into<String>) {
        self.str("error.type", kind);
        self.error = Some(message.into());
    }

    fn to_json(&self) -> Value {
        let attributes: Vec<Value> = self
            .attrs
            .iter()
            .map(|(key, value)| {
                let value = match value {
                    Attr::Str(s) => json!({ "stringValue": s }),
                    Attr::Int(i) => json!({ "intValue": i.to_string() }),
                };
                json!({ "key": key, "value": value })
            })
            .collect();
        let status = match &self.error {
            Some(message) => json!({ "code": 2, "message": message }),
            None => json!({ "code": 0 }),
        };
        json!({
            "traceId": hex(&self.trace),
            "spanId": hex(&self.id),
            "parentSpanId": self.parent.as_ref().map(|p| hex(p)).unwrap_or_default(),
            "name": self.name,
            "kind": self.kind,
            "startTimeUnixNano": self.start.to_string(),
            "endTimeUnixNano": self.end.to_string(),
            "attributes": attributes,
            "status": status,
        })
    }
}

/// An OTLP `ExportTraceServiceRequest` in its JSON encoding.
fn request_body(service: &str, spans: &[Span]) -> Value {
    json!({
        "resourceSpans": [{
            "resource": { "attributes": [
                { "key": "service.name", "value": { "stringValue": service } },
            ]},
            "scopeSpans": [{
                "scope": { "name": "improv", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans.iter().map(Span::to_json).collect::<Vec<_>>(),
            }],
        }],
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random span id; all zeros is invalid in OTLP, so it is never returned.
fn span_id() -> [u8; 8] {
    loop {
        let id: [u8; 8] = rand::random();
        if id != [0; 8] {
            return id;
        }
    }
}

fn trace_id() -> [u8; 16] {
    loop {
        let id: [u8; 16] = rand::random();
        if id != [0; 16] {
            return id;
        }
    }
}

/// Now, in nanoseconds since the Unix epoch.
fn now() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

const INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";

/// SpanKind numbers of OTLP.
const INTERNAL: u8 = 1;
const CLIENT: u8 = 3;

/// Traces one performance from its events.
struct Tracer {
    exporter: Exporter,
    state: Mutex<State>,
}

/// The spans still open, and what later spans need to know.
#[derive(Default)]
struct State {
    root: Option<Span>,
    /// `provider/model` as the performance names it.
    model: String,
    turn: Option<Span>,
    /// The model call of the current turn, sent once its reply and its usage are both known.
    chat: Option<Span>,
    tools: HashMap<String, Span>,
    /// The prop call opened last: a cue logged now is its call's.
    last_tool: Option<String>,
}

impl Tracer {
    fn new(exporter: Exporter) -> Tracer {
        Tracer {
            exporter,
            state: Mutex::new(State::default()),
        }
    }
}

impl Observer for Tracer {
    fn observe(&self, event: &Event) -> Result<(), ObserveError> {
        // Poisoning needs a panic while the lock is held; the state is still sound then.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for span in state.take(event) {
            self.exporter.send(span);
        }
        Ok(())
    }
}

impl State {
    /// Opens and closes spans for `event`; returns those finished.
    fn take(&mut self, event: &Event) -> Vec<Span> {
        let mut done = Vec::new();
        match &event.kind {
            EventKind::PerformanceStarted {
                performance,
                stage,
                model,
                resumed,
                ..
            } => {
                let actor = event.actor.clone().unwrap_or_default();
                // Poisoning needs a panic while the lock is held; the map is still sound then.
                let cued = CUED
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(performance);
                let (trace, parent) = match cued {
                    Some((trace, span)) => (trace, Some(span)),
                    None => (trace_id(), None),
                };
                let mut root = Span::open(trace, parent, format!("invoke_agent {actor}"), INTERNAL);
                root.str("gen_ai.operation.name", "invoke_agent");
                root.str("gen_ai.agent.name", actor.clone());
                root.str("improv.performance.id", performance.clone());
                root.str("improv.actor", actor);
                root.str("improv.stage", stage.clone());
                if *resumed {
                    root.str("improv.resumed", "true");
                }
                self.model = model.clone();
                self.root = Some(root);
            }
            EventKind::TurnStarted { turn } => {
                done.extend(self.chat.take());
                done.extend(self.end_turn(now()));
                let Some(root) = &self.root else {
                    return done;
                };
                let mut span = Span::open(root.trace, Some(root.id), "turn".into(), INTERNAL);
                span.int("improv.turn", u64::from(*turn));
                self.chat = Some(self.chat_span(&span));
                self.turn = Some(span);
            }
            // The kernel logs a call's usage just before its reply; either order is taken.
            EventKind::ModelReplied { stop, .. } => {
                if let Some(chat) = &mut self.chat {
                    chat.end = now();
                    chat.str("gen_ai.response.finish_reasons", finish_reason(stop));
                }
                done.extend(self.chat_if_complete());
            }
            EventKind::Usage {
                input_tokens,
                output_tokens,
                ..
            } => {
                // A usage outside a model call of the actor's (a compaction's summary) is not one.
                if let Some(chat) = self.chat.as_mut().filter(|c| !c.has(INPUT_TOKENS)) {
                    chat.int(INPUT_TOKENS, *input_tokens);
                    chat.int("gen_ai.usage.output_tokens", *output_tokens);
                }
                done.extend(self.chat_if_complete());
            }
            EventKind::ToolCallStarted { call_id, name, .. } => {
                done.extend(self.chat.take());
                let parent = self.turn.as_ref().or(self.root.as_ref());
                if let Some(parent) = parent {
                    let mut span = Span::open(
                        parent.trace,
                        Some(parent.id),
                        format!("execute_tool {name}"),
                        INTERNAL,
                    );
                    span.str("gen_ai.operation.name", "execute_tool");
                    span.str("gen_ai.tool.name", name.clone());
                    span.str("gen_ai.tool.call.id", call_id.clone());
                    self.tools.insert(call_id.clone(), span);
                    self.last_tool = Some(call_id.clone());
                }
            }
            EventKind::ToolCallFinished { call_id, ok, .. } => {
                if let Some(mut span) = self.tools.remove(call_id) {
                    span.end = now();
                    if !ok {
                        span.fail("tool_error", "the prop call failed");
                    }
                    done.push(span);
                }
            }
            EventKind::CueStarted { performance, .. } => {
                let call = self.last_tool.as_ref().and_then(|id| self.tools.get(id));
                if let Some(parent) = call.or(self.turn.as_ref()).or(self.root.as_ref()) {
                    let mut cued = CUED.lock().unwrap_or_else(|e| e.into_inner());
                    cued.insert(performance.clone(), (parent.trace, parent.id));
                }
            }
            // A cue whose sub-performance never started leaves no entry behind.
            EventKind::CueFinished { performance, .. } => {
                CUED.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(performance);
            }
            EventKind::PerformanceFinished { outcome, .. } => done.extend(self.finish(*outcome)),
            _ => {}
        }
        done
    }

    /// The model call, once both its reply and its usage are known.
    fn chat_if_complete(&mut self) -> Option<Span> {
        self.chat
            .take_if(|chat| chat.end != 0 && chat.has(INPUT_TOKENS))
    }

    /// The span of the model call a turn starts with.
    fn chat_span(&self, turn: &Span) -> Span {
        let (provider, model) = self
            .model
            .split_once('/')
            .unwrap_or(("", self.model.as_str()));
        let mut chat = Span::open(turn.trace, Some(turn.id), format!("chat {model}"), CLIENT);
        chat.str("gen_ai.operation.name", "chat");
        chat.str("gen_ai.provider.name", provider);
        chat.str("gen_ai.system", provider);
        chat.str("gen_ai.request.model", model);
        chat
    }

    fn end_turn(&mut self, end: u64) -> Option<Span> {
        let mut turn = self.turn.take()?;
        turn.end = end;
        Some(turn)
    }

    /// Ends every open span; a model call or prop call still open when the performance ended
    /// failed or was cut short, and says so.
    fn finish(&mut self, outcome: Outcome) -> Vec<Span> {
        let mut done = Vec::new();
        let end = now();
        if let Some(mut chat) = self.chat.take() {
            if chat.end == 0 {
                chat.end = end;
                chat.fail(
                    outcome.as_str(),
                    format!("no reply: the performance ended {}", outcome.as_str()),
                );
            }
            done.push(chat);
        }
        for (_, mut tool) in self.tools.drain() {
            tool.end = end;
            tool.fail(
                outcome.as_str(),
                format!("unfinished: the performance ended {}", outcome.as_str()),
            );
            done.push(tool);
        }
        done.extend(self.end_turn(end));
        if let Some(mut root) = self.root.take() {
            root.end = end;
            root.str("improv.outcome", outcome.as_str());
            if outcome == Outcome::Failed {
                root.fail("failed", "the performance failed");
            }
            done.push(root);
        }
        done
    }
}

/// The conventions' finish reason for why the model stopped.
fn finish_reason(stop: &StopReason) -> &'static str {
    match stop {
        StopReason::EndTurn => "stop",
        StopReason::ToolUse => "tool_calls",
        StopReason::MaxTokens => "length",
        StopReason::Refused => "content_filter",
    }
}

#[cfg(test)]
mod tests {
    /// A flush asked while the queue is full waits for room (the spans ahead of it are posted,
    /// then it is), rather than returning at once and leaving them unsent at exit.
    #[test]
    fn a_flush_waits_for_room_in_a_full_queue() {
        let (tx, mut rx) = super::mpsc::channel(1);
        let (filler, _) = std::sync::mpsc::channel();
        tx.try_send(super::Message::Flush(filler)).unwrap();
        let drain = std::thread::spawn(move || {
            // The flush below finds the queue full before this drains it.
            std::thread::sleep(std::time::Duration::from_millis(200));
            let mut seen = 0;
            while let Some(message) = rx.blocking_recv() {
                seen += 1;
                if let super::Message::Flush(done) = message {
                    let _ = done.send(());
                }
            }
            seen
        });
        let posted = super::flush_through(&tx, super::FLUSH_AT_EXIT * 10);
        drop(tx);
        assert!(posted, "the flush gave up on a full queue");
        assert_eq!(drain.join().unwrap(), 2);
    }

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Option<Config> {
        Config::from_vars(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        assert_eq!(config(&[]), None);
        let others = [
            ("OTEL_SERVICE_NAME", "svc"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=b"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", " "),
        ];
        assert_eq!(config(&others), None);
        let disabled = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "TRUE"),
        ];
        assert_eq!(config(&disabled), None);
        let none = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_TRACES_EXPORTER", "none"),
        ];
        assert_eq!(config(&none), None);
    }

    #[test]
    fn the_endpoint_service_and_headers_follow_the_otlp_variables() {
        let base = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]).unwrap();
        assert_eq!(base.endpoint, "http://c:4318/v1/traces");
        assert_eq!(base.service, "improv");
        let full = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9/x"),
            ("OTEL_SERVICE_NAME", "stage-a"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=a%3Db%20c, x-team = ops,broken",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-only=traces"),
        ])
        .unwrap();
        assert_eq!(full.endpoint, "http://t:9/x");
        assert_eq!(full.service, "stage-a");
        let headers: Vec<(&str, &str)> = full
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            headers,
            [
                ("api-key", "a=b c"),
                ("x-team", "ops"),
                ("x-only", "traces")
            ]
        );
    }

    fn event(kind: EventKind) -> Event {
        Event {
            seq: 0,
            at: String::new(),
            actor: Some("lead".into()),
            kind,
        }
    }

    #[test]
    fn a_model_call_cut_short_by_a_failure_ends_in_error_with_its_performance() {
        let mut state = State::default();
        let started = EventKind::PerformanceStarted {
            performance: "p1".into(),
            stage: "s".into(),
            intent: "secret intent".into(),
            model: "openai/gpt-x".into(),
            resumed: false,
        };
        assert!(state.take(&event(started)).is_empty());
        assert!(
            state
                .take(&event(EventKind::TurnStarted { turn: 1 }))
                .is_empty()
        );
        let finished = EventKind::PerformanceFinished {
            outcome: Outcome::Failed,
            reason: "the provider refused the key".into(),
            budget: None,
            spent: Default::default(),
        };
        let spans = state.take(&event(finished));
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["chat gpt-x", "turn", "invoke_agent lead"]);
        assert!(spans.iter().all(|s| s.end >= s.start && s.end > 0));
        assert!(spans[0].error.is_some() && spans[2].error.is_some());
        assert!(spans[1].error.is_none());
        let body = request_body("svc", &spans).to_string();
        assert!(!body.contains("secret intent") && !body.contains("refused the key"));
        assert!(body.contains(r#""key":"gen_ai.provider.name","value":{"stringValue":"openai"}"#));
    }
}
