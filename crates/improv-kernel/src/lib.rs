//! The improv kernel: the performance loop, the typed events it emits and the traits that models,
//! props, hooks and observers implement. Everything else in improv plugs into these.
//!
//! Reading order: [`message`] (what a conversation is made of), [`model`] and [`prop`] (the two
//! things an actor uses), [`event`] (what the loop tells the world), [`budget`] and [`hook`] (what
//! runs between turns), and [`performance`] (the loop itself, one function: [`Performance::act`]).

pub mod budget;
pub mod event;
pub mod hook;
pub mod message;
pub mod model;
pub mod performance;
pub mod prop;
pub mod resume;
pub mod scripted;
pub mod tape;

pub use budget::{Budget, BudgetKind, Spent};
pub use event::{Compaction, Event, EventKind, ObserveError, Observer, Outcome};
pub use hook::{Between, Control, Hook, NoteSender, Notes};
pub use message::{Message, ToolCall, ToolSpec};
pub use model::{Model, ModelError, ModelUpdate, Price, Reply, Request, StopReason, Usage};
pub use performance::{Actor, Ended, Performance, PerformanceBuilder};
pub use prop::{Access, EventSink, Prop, PropContext, PropError};
pub use scripted::{ScriptedModel, ScriptedTurn};
pub use tape::Tape;
