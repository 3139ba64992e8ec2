//! Routines: behaviour that settles like data. What converged (every check passed) more than
//! once, the same way, is abstracted into a skeleton and proposed as a routine, a file the
//! director reads and approves; approved, it replays without a model, guarded step by step, and
//! hands back to the actors the moment reality differs.
//!
//! - [`practice`]: what a performance did, read back from its log, and whether it may teach.
//! - [`learn`]: practice into skeletons, proposals, provenance and stability
//!   (fluid → settling → stable).
//! - [`index`]: each converged performance's practice kept by shape, so learning after one
//!   reads its shape's practices, not every log.
//! - [`routine`]: the `routines/NAME.toml` files and the repertoire of a stage.
//! - [`template`]: `{parameter}` holes in intents and arguments.
//! - [`guard`]: what each replayed step's result must look like.
//! - [`prop`]: an approved routine offered to actors as the prop `routine.NAME`.
//! - [`skill`]: a routine exported as an Agent Skill (`SKILL.md`).

mod file;
pub mod guard;
pub mod index;
pub mod learn;
pub mod practice;
pub mod prop;
pub mod routine;
pub mod skill;
pub mod template;

pub use guard::{Guard, Settled, Shape};
pub use index::{Index, learn_after};
pub use learn::{Learned, learn};
pub use practice::{Practice, Unfit};
pub use prop::RoutineProp;
pub use routine::{Added, Call, Repertoire, Routine, Stability, Status};

use std::path::PathBuf;

/// What can go wrong with routines.
#[derive(Debug, thiserror::Error)]
pub enum RoutineError {
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    Io { path: PathBuf, message: String },
    #[error("no routine named `{name}` in {}; `improv routines list` shows them", dir.display())]
    NotFound { name: String, dir: PathBuf },
    #[error(
        "`{name}` cannot be the name of a routine file in {}: {reason}; name the routine with \
         letters, digits, `-` and `_` (its `name` and its file, `NAME.toml`)",
        dir.display()
    )]
    BadName {
        name: String,
        dir: PathBuf,
        reason: &'static str,
    },
    #[error(
        "`{name}` could mean several routines in {}: {} (a file `{name}.toml`, or routines \
         named `{name}` inside their files); name one by its file, as listed (`STEM.toml`), \
         or rename one inside its file",
        dir.display(),
        files.join(", ")
    )]
    Ambiguous {
        name: String,
        dir: PathBuf,
        files: Vec<String>,
    },
    #[error("bad template {0}")]
    Template(String),
    #[error("no value for the parameter `{0}`")]
    MissingParameter(String),
    #[error("cannot write the routine: {0}")]
    Write(String),
    #[error("cannot read the event log: {0}")]
    Log(#[from] improv_log::LogError),
}

/// The current UTC time, as the records write it.
pub fn now() -> String {
    improv_kernel::performance::now_rfc3339()
}

/// The current time, as a routine's disuse is measured against it
/// ([`Repertoire::retire_unused`] takes it as a parameter, so tests pass their own).
pub fn now_at() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// Learns from every converged performance in the stage's log (`state_dir`, the stage's
/// `.improv/`) into the routines beside the stage (`stage_dir/routines/`); `settled` is the
/// stage ledger's settled schemas, when it has a ledger.
pub fn learn_from_log(
    stage_dir: &std::path::Path,
    state_dir: &std::path::Path,
    auto_approve: bool,
    settled: Option<&dyn Settled>,
) -> Result<Learned, RoutineError> {
    let log = improv_log::EventLog::open(state_dir)?;
    let practices = practice::from_log(&log)?;
    let mut repertoire = Repertoire::open(stage_dir)?;
    learn::learn(&mut repertoire, &practices, auto_approve, settled)
}
