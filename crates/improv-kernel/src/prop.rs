//! The [`Prop`] trait: a capability an actor can use through a tool call.

use crate::event::{EventKind, ObserveError};
use crate::message::ToolSpec;
use async_trait::async_trait;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Whether a call may overlap with others. Reads run concurrently with the reads next to them;
/// writes run alone, in the order the model asked for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// What a prop knows about the performance calling it.
#[derive(Clone, Debug)]
pub struct PropContext {
    /// The workspace root, canonical. Props resolve every path inside it.
    pub workspace: Arc<Path>,
    /// The actor making the call.
    pub actor: Arc<str>,
    /// The performance it belongs to: what props that keep records (the ledger) note down.
    pub performance: Arc<str>,
    /// Cancelled when the performance stops; long-running props must stop with it.
    pub cancel: CancellationToken,
    /// Adds events to the performance's stream while the call runs (a cue announcing the
    /// sub-performance it started); they are numbered in order with the loop's own.
    pub events: EventSink,
}

impl PropContext {
    /// A context outside any performance (tests, tools run by hand): events go nowhere.
    pub fn new(workspace: impl Into<Arc<Path>>, actor: &str, performance: &str) -> Self {
        PropContext {
            workspace: workspace.into(),
            actor: actor.into(),
            performance: performance.into(),
            cancel: CancellationToken::new(),
            events: EventSink::default(),
        }
    }
}

type EmitFn = dyn Fn(EventKind) -> Result<(), ObserveError> + Send + Sync;

/// Where a prop's own events go: its performance's stream, or nowhere.
#[derive(Clone, Default)]
pub struct EventSink(Option<Arc<EmitFn>>);

impl EventSink {
    pub fn new(
        emit: impl Fn(EventKind) -> Result<(), ObserveError> + Send + Sync + 'static,
    ) -> Self {
        EventSink(Some(Arc::new(emit)))
    }

    /// Emits `kind`; an error means the log failed and the performance is about to stop.
    pub fn emit(&self, kind: EventKind) -> Result<(), ObserveError> {
        match &self.0 {
            Some(emit) => emit(kind),
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for EventSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "EventSink(stream)"
        } else {
            "EventSink(none)"
        })
    }
}

/// A tool error the model sees and can act on: a bad argument, a missing file, a failed command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PropError(pub String);

impl PropError {
    pub fn new(message: impl Into<String>) -> Self {
        PropError(message.into())
    }
}

/// A capability offered to actors: files, shell, search, another actor, an MCP server's tool.
#[async_trait]
pub trait Prop: Send + Sync {
    /// The schema the model sees.
    fn spec(&self) -> &ToolSpec;

    /// Whether this call only reads. Defaults to [`Access::Write`], the safe choice.
    fn access(&self, _arguments: &serde_json::Value) -> Access {
        Access::Write
    }

    /// Whether this call may run again when a performance resumes after it started and no
    /// result was recorded (its worker died mid-call). Defaults to reads: running one twice
    /// changes nothing. Any other call is answered as interrupted instead.
    fn repeatable(&self, arguments: &serde_json::Value) -> bool {
        self.access(arguments) == Access::Read
    }

    /// Its own time limit, when it differs from the performance's tool timeout.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// Runs the call. The result text goes back to the model as is.
    async fn call(
        &self,
        arguments: serde_json::Value,
        context: &PropContext,
    ) -> Result<String, PropError>;
}
