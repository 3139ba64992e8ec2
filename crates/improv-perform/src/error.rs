//! Why a stage could not be performed: typed, each message saying what to fix.

use improv_kernel::ObserveError;

#[derive(Debug, thiserror::Error)]
pub enum PerformError {
    /// The stage cannot be performed as written: no intent, a missing workspace, an unknown
    /// actor. The message names the stage file and what to change.
    #[error("{0}")]
    Stage(String),
    /// An actor could not be cast: its model, a prop or the sandbox could not be set up.
    #[error("{0}")]
    Cast(String),
    /// The event log could not be opened or written.
    #[error(transparent)]
    Log(#[from] improv_log::LogError),
    /// An observer (the log, a view) refused an event.
    #[error("the event log failed: {0}")]
    Observe(#[from] ObserveError),
    /// The store of a leased performance failed.
    #[error(transparent)]
    Store(#[from] improv_store::StoreError),
}

impl PerformError {
    /// A casting failure, with its whole chain of causes in one line.
    pub(crate) fn cast(e: anyhow::Error) -> Self {
        PerformError::Cast(format!("{e:#}"))
    }
}
