//! What can go wrong in the store, and which failures are worth waiting out.

/// A store error. Messages name the store with its password hidden ([`crate::StoreUrl`]).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (refused, timed out, went away): workers wait and retry.
    #[error(
        "the store {store} cannot be reached: {message}; check that it is running and the URL is right"
    )]
    Unavailable { store: String, message: String },
    /// The URL or settings are wrong; retrying will not help.
    #[error("the store {store} is misconfigured: {message}")]
    Config { store: String, message: String },
    /// The database was migrated by a newer improv.
    #[error(
        "the store {store} has schema version {found}, newer than this improv knows ({known}); upgrade improv"
    )]
    NewerSchema {
        store: String,
        found: u32,
        known: u32,
    },
    /// The lease is no longer current: another worker claimed the performance, or it finished.
    #[error(
        "lost the lease on performance {performance} (epoch {epoch}); another worker has it now"
    )]
    LeaseLost { performance: String, epoch: u64 },
    /// An append did not continue the journal.
    #[error(
        "performance {performance}: event seq {got} does not follow the stored {expected_after}"
    )]
    SeqConflict {
        performance: String,
        expected_after: u64,
        got: u64,
    },
    #[error("no performance {id} in the store {store}")]
    NotFound { store: String, id: String },
    /// The performance ended: what was meant for it (a note, an answer) would reach no one.
    #[error("performance {id} has finished, so no actor would read this; start or resume another")]
    Finished { id: String },
    #[error("performance {id} is already in the store")]
    Exists { id: String },
    /// The database rolled the transaction back whole to settle a conflict with another one (a
    /// deadlock, a serialization failure): nothing of it was written, so it may be retried.
    #[error(
        "the store {store} rolled back a transaction that conflicted with another: {message}; nothing of it was written, retrying may succeed"
    )]
    Conflict { store: String, message: String },
    /// Anything else the backend reported.
    #[error("the store {store}: {message}")]
    Backend { store: String, message: String },
}

impl StoreError {
    /// Whether waiting and retrying may succeed (the database is restarting or unreachable, or
    /// it rolled back a transaction that conflicted with another).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable { .. } | StoreError::Conflict { .. }
        )
    }
}
