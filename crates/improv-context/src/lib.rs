//! Context engineering for improv: the [`Compactor`] hook keeps an actor's conversation inside
//! its model's context window.
//!
//! Between turns, when the next request would reach the threshold (the stage's
//! `context.compact_at`, or 80% of the model's context window when the model knows it), the
//! compactor first trims large old tool results to their head and tail, then, if that is not
//! enough, has the actor's own model summarize the older turns into one message. The system
//! prompt is never touched (it is not part of the conversation), so provider prompt caches keep
//! hitting it; the intent (the first director message) and the most recent turns are kept
//! verbatim; an assistant's tool calls and their results are kept or summarized together. Each
//! compaction is recorded as a `compacted` event with the tokens before and after.
//!
//! ```ignore
//! let compactor = improv_context::Compactor::new(stage.context.compact_at, 4);
//! Performance::builder(actor).hook(Arc::new(compactor))...
//! ```
//! Add it after the hooks that append messages (director notes), so what they add is counted.

mod compactor;
mod tokens;
mod trim;

pub use compactor::{
    Compactor, DEFAULT_KEEP_RECENT_TURNS, DEFAULT_TRIM_TO, SUMMARY_HEADER, UNCOMPACTED_WARNING_AT,
};
pub use tokens::{estimate, estimate_message};
pub use trim::{trim_fenced, trim_middle};
