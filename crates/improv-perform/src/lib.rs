//! Performing a stage: the cast inside its edges, the loop until the work converges, cues
//! between actors, the board and director notes. The CLI, the server and the MCP server all
//! perform through this crate, so a performance behaves the same wherever it starts.
//!
//! - [`production`]: one performance from casting to the last event; [`launch`] runs one in
//!   the background.
//! - [`cast`]: actors of the stage made into kernel actors, every prop inside the edges.
//! - [`cue`] and [`board`]: the props actors use to work together.
//! - [`control`]: the stage's control plane, the files actors may not change or see.
//! - [`inbox`]: director notes sent from another terminal.
//! - [`leased`]: a worker performing performances leased from a store.
//! - [`within_budget`]: a door's budget as the limits its firing's performance runs under.
//! - `agents`: AGENTS.md files of subfolders, passed along when an actor first works there.
//! - `feedback`: the stage's checks judging the work, attempt after attempt.
//! - [`trace`]: OpenTelemetry traces of performances, exported over OTLP when asked.

mod agents;
pub mod board;
mod budget;
pub mod cast;
pub mod control;
pub mod cue;
mod error;
mod feedback;
pub mod inbox;
pub mod leased;
pub mod production;
mod routines;
pub mod stages;
pub mod trace;
pub use routines::learn_routines;

pub use budget::within_budget;
pub use cast::PropSource;
pub use error::PerformError;
pub use inbox::send_note;
pub use production::{Journal, Launch, Production, Running, Summary, Watch, launch, state_dir};
