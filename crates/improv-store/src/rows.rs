//! What both backends share about rows: the names of states and outcomes as stored, the clock,
//! and the checks that decide whether a write is fenced out or breaks the journal.

use crate::{Lease, State, StoreError};
use improv_kernel::{Event, Outcome};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The name a state is stored under.
pub(crate) fn state_name(state: State) -> &'static str {
    match state {
        State::Queued => "queued",
        State::Leased => "leased",
        State::Finished => "finished",
    }
}

pub(crate) fn parse_state(store: &str, text: &str) -> Result<State, StoreError> {
    match text {
        "queued" => Ok(State::Queued),
        "leased" => Ok(State::Leased),
        "finished" => Ok(State::Finished),
        other => Err(corrupt(
            store,
            &format!("unknown performance state {other:?}"),
        )),
    }
}

pub(crate) fn parse_outcome(
    store: &str,
    text: Option<String>,
) -> Result<Option<Outcome>, StoreError> {
    text.map(|t| {
        serde_json::from_value(serde_json::Value::String(t.clone()))
            .map_err(|_| corrupt(store, &format!("unknown outcome {t:?}")))
    })
    .transpose()
}

/// A row the backend holds that this improv cannot read.
pub(crate) fn corrupt(store: &str, message: &str) -> StoreError {
    StoreError::Backend {
        store: store.to_string(),
        message: message.to_string(),
    }
}

/// Now, in the store's one notion of time.
pub(crate) fn now_millis() -> i64 {
    // Before 1970 only on a broken clock; 0 then keeps leases ordered rather than panicking.
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `now + ttl` in milliseconds, saturating.
pub(crate) fn expiry(now: i64, ttl: Duration) -> i64 {
    now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

/// The stored lease of a performance, as read inside the writing transaction.
pub(crate) struct Holder {
    pub state: State,
    pub worker: Option<String>,
    pub epoch: u64,
    pub last_seq: u64,
}

/// Refuses a write under `lease` unless it is the performance's current lease.
pub(crate) fn fence(lease: &Lease, holder: &Holder) -> Result<(), StoreError> {
    let current = holder.state == State::Leased
        && holder.epoch == lease.epoch
        && holder.worker.as_deref() == Some(lease.worker.as_str());
    if current {
        Ok(())
    } else {
        Err(StoreError::LeaseLost {
            performance: lease.performance.clone(),
            epoch: lease.epoch,
        })
    }
}

/// Refuses events whose seqs do not continue the journal after `last_seq` one by one.
pub(crate) fn check_seqs(
    performance: &str,
    last_seq: u64,
    events: &[Event],
) -> Result<(), StoreError> {
    let mut expected = last_seq;
    for event in events {
        if event.seq != expected + 1 {
            return Err(StoreError::SeqConflict {
                performance: performance.to_string(),
                expected_after: expected,
                got: event.seq,
            });
        }
        expected = event.seq;
    }
    Ok(())
}

/// A count or seq from the database, which stores them signed.
pub(crate) fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A seq or epoch as the database stores it.
pub(crate) fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// The stage column of a firing recorded before firings were keyed by stage (SQLite schema 11,
/// PostgreSQL 12): such a firing stays its door's under every stage (see [`crate::Firing`]).
pub(crate) const UNSTAGED: &str = "";

/// A limit as SQL takes it: 0 means none.
pub(crate) fn sql_limit(limit: usize) -> i64 {
    if limit == 0 {
        i64::MAX
    } else {
        i64::try_from(limit).unwrap_or(i64::MAX)
    }
}

/// What a waiter waits for on one performance; it also ends when the performance finishes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Awaited {
    /// An event after this seq.
    Events { after: u64 },
    /// A director note after this number.
    Notes { after: u64 },
    /// The answer to this approval.
    Answer { n: u64 },
    /// Any change from this [`Progress`](crate::Progress), its end included (a waiter that saw
    /// the end already waits out its timeout).
    Changed(crate::Progress),
}

/// The name an answer is stored under.
pub(crate) fn answer_name(answer: crate::Answer) -> &'static str {
    match answer {
        crate::Answer::Once => "once",
        crate::Answer::Performance => "performance",
        crate::Answer::Deny => "deny",
    }
}

pub(crate) fn parse_answer(
    store: &str,
    text: Option<String>,
) -> Result<Option<crate::Answer>, StoreError> {
    text.map(|t| match t.as_str() {
        "once" => Ok(crate::Answer::Once),
        "performance" => Ok(crate::Answer::Performance),
        "deny" => Ok(crate::Answer::Deny),
        other => Err(corrupt(
            store,
            &format!("unknown approval answer {other:?}"),
        )),
    })
    .transpose()
}

/// A performance's budget as stored: JSON in a nullable column, `None` for the stage's own.
pub(crate) fn budget_text(
    store: &str,
    budget: Option<&improv_kernel::Budget>,
) -> Result<Option<String>, StoreError> {
    budget
        .map(|b| {
            serde_json::to_string(b)
                .map_err(|e| corrupt(store, &format!("the budget cannot be stored: {e}")))
        })
        .transpose()
}

pub(crate) fn parse_budget(
    store: &str,
    text: Option<String>,
) -> Result<Option<improv_kernel::Budget>, StoreError> {
    text.map(|t| {
        serde_json::from_str(&t)
            .map_err(|e| corrupt(store, &format!("unreadable performance budget {t:?}: {e}")))
    })
    .transpose()
}

/// The reason a performance stopped while queued records: one wording for both backends.
pub(crate) const STOPPED_QUEUED: &str = "stopped by the director before a worker started it";

/// The reason of a performance whose stop was asked while its worker held it, and which came
/// back to the queue (its worker gone, or draining) before that worker ended it: the next
/// claim ends it, stopped, rather than opening it again.
pub(crate) const STOPPED_UNHELD: &str = "stopped by the director; its worker left it unfinished";

/// The note of an ask that a claim denied because the worker that asked lost its lease: one
/// wording for both backends. The new holder asks again if its turn still needs it.
pub(crate) const ASKER_LOST_LEASE: &str =
    "denied: the worker that asked lost its lease; the performance continues elsewhere";
