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
    /// The call only reads (the workspace, the web): it may run alongside other reads.
    Read,
    /// The call may change something (a file, a process, the ledger): it runs alone.
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
    /// The performance's budget: a call the prop makes on its behalf (a routine's step) is
    /// [`Meter::charge`](crate::Meter::charge)d first, so it counts as the actor's would.
    pub meter: crate::Meter,
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
            meter: crate::Meter::default(),
        }
    }
}

type EmitFn = dyn Fn(EventKind) -> Result<(), ObserveError> + Send + Sync;

/// Where a prop's own events go: its performance's stream, or nowhere.
#[derive(Clone, Default)]
pub struct EventSink(Option<Arc<EmitFn>>);

impl EventSink {
    /// A sink that hands each event to `emit` (the performance's stream).
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

/// A failed call: most often an error the model sees and can act on; sometimes one that must
/// end the turn, because going on would be wrong (the log that records the call failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropError {
    /// Goes back to the model as the call's result: a bad argument, a missing file, a failed
    /// command.
    #[error("{0}")]
    Respond(String),
    /// Ends the performance `failed` with this reason; the call (and any not yet run in the
    /// same reply) is answered so the conversation stays whole.
    #[error("{0}")]
    Fatal(String),
}

impl PropError {
    /// An error the model sees and can act on.
    pub fn new(message: impl Into<String>) -> Self {
        PropError::Respond(message.into())
    }

    /// An error that ends the performance as `failed`.
    pub fn fatal(message: impl Into<String>) -> Self {
        PropError::Fatal(message.into())
    }

    /// The text of the error, what the model or the director reads.
    pub fn message(&self) -> &str {
        match self {
            PropError::Respond(m) | PropError::Fatal(m) => m,
        }
    }

    /// The text of the error, taken out of it.
    pub fn into_message(self) -> String {
        match self {
            PropError::Respond(m) | PropError::Fatal(m) => m,
        }
    }

    /// Whether the error ends the performance ([`PropError::Fatal`]).
    pub fn is_fatal(&self) -> bool {
        matches!(self, PropError::Fatal(_))
    }

    /// The same kind of error with its message changed (redacted, prefixed).
    pub fn map(self, f: impl FnOnce(String) -> String) -> Self {
        match self {
            PropError::Respond(m) => PropError::Respond(f(m)),
            PropError::Fatal(m) => PropError::Fatal(f(m)),
        }
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

/// What a wrapper around a prop adds to its calls (the edges' policy, redaction, hints): it
/// sees each call and decides what runs and what comes back. [`Wrapped`] puts one around a
/// prop, and the prop's schema, access, time limit and repeatability show through unchanged.
#[async_trait]
pub trait Layer: Send + Sync {
    /// Runs a call of `inner`: refuse it, change what goes in or comes out, or pass it on
    /// with `inner.call(arguments, context)`.
    async fn call(
        &self,
        inner: &dyn Prop,
        arguments: serde_json::Value,
        context: &PropContext,
    ) -> Result<String, PropError>;
}

/// A shared layer is a layer: one watch, say, around every prop of a performance.
#[async_trait]
impl<L: Layer + ?Sized> Layer for Arc<L> {
    async fn call(
        &self,
        inner: &dyn Prop,
        arguments: serde_json::Value,
        context: &PropContext,
    ) -> Result<String, PropError> {
        self.as_ref().call(inner, arguments, context).await
    }
}

/// A prop inside a [`Layer`]: the one place a wrapper forwards what it does not change, so a
/// method added to [`Prop`] reaches every wrapped prop.
pub struct Wrapped<L> {
    inner: Arc<dyn Prop>,
    layer: L,
}

impl<L: Layer> Wrapped<L> {
    /// `inner` with `layer` around it.
    pub fn new(inner: Arc<dyn Prop>, layer: impl Into<L>) -> Self {
        Wrapped {
            inner,
            layer: layer.into(),
        }
    }

    /// The prop inside.
    pub fn inner(&self) -> &Arc<dyn Prop> {
        &self.inner
    }

    /// The layer around it.
    pub fn layer(&self) -> &L {
        &self.layer
    }
}

#[async_trait]
impl<L: Layer> Prop for Wrapped<L> {
    fn spec(&self) -> &ToolSpec {
        self.inner.spec()
    }

    fn access(&self, arguments: &serde_json::Value) -> Access {
        self.inner.access(arguments)
    }

    fn repeatable(&self, arguments: &serde_json::Value) -> bool {
        self.inner.repeatable(arguments)
    }

    fn timeout(&self) -> Option<Duration> {
        self.inner.timeout()
    }

    async fn call(
        &self,
        arguments: serde_json::Value,
        context: &PropContext,
    ) -> Result<String, PropError> {
        self.layer
            .call(self.inner.as_ref(), arguments, context)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A prop that differs from every default: a read that must not run twice, with a limit.
    struct Odd(ToolSpec);

    #[async_trait]
    impl Prop for Odd {
        fn spec(&self) -> &ToolSpec {
            &self.0
        }
        fn access(&self, _: &serde_json::Value) -> Access {
            Access::Read
        }
        fn repeatable(&self, _: &serde_json::Value) -> bool {
            false
        }
        fn timeout(&self) -> Option<Duration> {
            Some(Duration::from_secs(7))
        }
        async fn call(&self, _: serde_json::Value, _: &PropContext) -> Result<String, PropError> {
            Ok("inner".into())
        }
    }

    /// A layer that adds a word to every result.
    struct Loud;

    #[async_trait]
    impl Layer for Loud {
        async fn call(
            &self,
            inner: &dyn Prop,
            arguments: serde_json::Value,
            context: &PropContext,
        ) -> Result<String, PropError> {
            Ok(format!("{}!", inner.call(arguments, context).await?))
        }
    }

    #[tokio::test]
    async fn a_wrapped_prop_shows_everything_of_its_prop_but_what_its_layers_change() {
        let spec = ToolSpec {
            name: "odd".into(),
            description: String::new(),
            parameters: serde_json::json!({}),
        };
        let inner: Arc<dyn Prop> = Arc::new(Odd(spec));
        let once: Arc<dyn Prop> = Arc::new(Wrapped::<Loud>::new(inner, Loud));
        let twice = Wrapped::<Arc<Loud>>::new(once, Arc::new(Loud));
        let args = serde_json::json!({});
        assert_eq!(twice.spec().name, "odd");
        assert_eq!(twice.access(&args), Access::Read);
        assert!(!twice.repeatable(&args));
        assert_eq!(twice.timeout(), Some(Duration::from_secs(7)));
        let context = PropContext::new(std::path::PathBuf::from("/"), "a", "p");
        assert_eq!(twice.call(args, &context).await.unwrap(), "inner!!");
    }
}
