//! The improv kernel: the performance loop, the typed events it emits and the traits that models,
//! props, hooks and observers implement. Everything else in improv plugs into these.
//!
//! Reading order: [`message`] (what a conversation is made of), [`model`] and [`prop`] (the two
//! things an actor uses), [`event`] (what the loop tells the world), [`budget`] and [`hook`] (what
//! runs between turns), and [`performance`] (the loop itself, one function: [`Performance::act`]).
//!
//! A whole performance, with the scripted model (it replays turns: no network) and one prop:
//!
//! ```
//! use async_trait::async_trait;
//! use improv_kernel::*;
//! use serde_json::{Value, json};
//! use std::sync::Arc;
//! use tokio_util::sync::CancellationToken;
//!
//! /// Says hello to whoever the model names.
//! struct Greet(ToolSpec);
//!
//! #[async_trait]
//! impl Prop for Greet {
//!     fn spec(&self) -> &ToolSpec {
//!         &self.0
//!     }
//!     fn access(&self, _: &Value) -> Access {
//!         Access::Read
//!     }
//!     async fn call(&self, args: Value, _: &PropContext) -> Result<String, PropError> {
//!         let name = args["name"].as_str().ok_or_else(|| PropError::new("`name` is missing"))?;
//!         Ok(format!("hello, {name}"))
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let greet = Greet(ToolSpec {
//!     name: "greet".into(),
//!     description: "Greet someone.".into(),
//!     parameters: json!({"type": "object", "properties": {"name": {"type": "string"}}}),
//! });
//! let model = Arc::new(ScriptedModel::new([
//!     ScriptedTurn::call("greet", json!({"name": "Ada"})),
//!     ScriptedTurn::say("I greeted Ada."),
//! ]));
//! let actor = Actor {
//!     name: "lead".into(),
//!     system: "You greet people.".into(),
//!     model,
//!     props: vec![Arc::new(greet)],
//!     max_output_tokens: None,
//! };
//! let tape = Arc::new(Tape::default());
//! let mut performance = Performance::builder(actor)
//!     .observer(tape.clone())
//!     .start("Greet Ada.")?;
//! let ended = performance.act(&CancellationToken::new()).await;
//! performance.finish(&ended)?;
//!
//! assert_eq!(ended.outcome, Outcome::Done);
//! let greeted = tape.kinds().into_iter().any(|kind| {
//!     matches!(kind, EventKind::ToolCallFinished { output, .. } if output == "hello, Ada")
//! });
//! assert!(greeted, "the prop's result is an event");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

#![warn(missing_docs)]

pub mod budget;
pub mod event;
pub mod hook;
pub mod loop_note;
pub mod message;
pub mod meter;
pub mod model;
pub mod performance;
pub mod prop;
pub mod resume;
pub mod scripted;
pub mod tape;

pub use budget::{Budget, BudgetKind, Spent};
pub use event::{Compaction, Event, EventKind, ObserveError, Observer, Outcome, Settling};
pub use hook::{Between, Control, Hook, NoteSender, Notes};
pub use message::{Message, Speaker, ToolCall, ToolSpec};
pub use meter::Meter;
pub use model::{Model, ModelError, ModelUpdate, Price, Reply, Request, StopReason, Usage};
pub use performance::{Actor, Ended, Performance, PerformanceBuilder};
pub use prop::{Access, EventSink, Prop, PropContext, PropError};
pub use scripted::{ScriptedModel, ScriptedTurn};
pub use tape::Tape;
