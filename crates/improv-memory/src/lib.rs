//! Memory across performances: what an actor `remember`s in one performance of a stage, an
//! actor can `recall` in a later one. Memories live in the stage's own SQLite file
//! (`.improv/memory.db`), searched with FTS5 and ranked by bm25, or, when the performance is
//! performed from a PostgreSQL store, in that database's `improv_memories` table ([`PgMemory`],
//! PostgreSQL full-text search), shared by every worker; both behind [`MemoryBackend`]. Each
//! memory records the actor and performance that saved it. The director lists and edits them with `improv memory`.
//!
//! ```ignore
//! let memory = Arc::new(improv_memory::Memory::open_in(&state_dir)?);
//! props.extend(improv_memory::props(memory));          // `remember` and `recall`
//! // and for `improv memory`:
//! Command::Memory { command, json } => improv_memory::cli::run(command, &state_dir, json)?,
//! ```

mod backend;
pub mod cli;
mod pg;
mod props;
mod store;

pub use backend::MemoryBackend;
pub use pg::PgMemory;
pub use props::props;
pub use store::{Entry, Found, MAX_TEXT, MEMORY_FILE, Memory, MemoryError, Provenance, Remembered};
