//! What can go wrong at the stage door, said so that the director knows what to do.

use improv_store::StoreError;

/// A door error.
#[derive(Debug, thiserror::Error)]
pub enum DoorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The door's schedule cannot be computed (a time zone gap, a pattern that never matches).
    #[error("door `{door}`: {message}; check `schedule` and `timezone` in the stage file")]
    Schedule { door: String, message: String },
    /// A probe could not be run (not that it failed: a failing probe's output is its result).
    #[error("door `{door}`: the probe `{command}` could not run: {message}")]
    Probe {
        door: String,
        command: String,
        message: String,
    },
    /// A probe the stage's command rules do not allow: none of the door's probes ran.
    #[error("door `{door}`: {}", probe_refused(command, *decision, rule))]
    ProbeRefused {
        door: String,
        command: String,
        decision: improv_edges::Decision,
        rule: String,
    },
    /// The performance could not be started or did not end.
    #[error("door `{door}`: the performance could not be performed: {message}")]
    Launch { door: String, message: String },
    /// A webhook delivery was refused (see [`crate::webhook::Refusal`]).
    #[error("door `{door}`: {refusal}")]
    Refused {
        door: String,
        refusal: crate::webhook::Refusal,
    },
    /// The performance of this id was started already (by another daemon that took the same
    /// firing): it is not started twice.
    #[error("door `{door}`: performance {id} was started already")]
    AlreadyStarted { door: String, id: String },
    /// A listener (a channel) stopped with an error.
    #[error("door `{door}`: {message}")]
    Listener { door: String, message: String },
}

fn probe_refused(command: &str, decision: improv_edges::Decision, rule: &str) -> String {
    match decision {
        improv_edges::Decision::Ask => format!(
            "the probe `{command}` needs the director's approval ({rule}), and no director is \
             at the terminal of a door's firing, so it was refused; allow it with an \
             [[edges.rule]] or take it out of `probe`"
        ),
        _ => format!(
            "the probe `{command}` is denied by the stage's edges ({rule}); take it out of \
             `probe` or change the rule"
        ),
    }
}
