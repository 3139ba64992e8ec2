//! Where each door stands, for `improv door status` and `GET /doors`: its kind, its next due
//! time, its backoff and its latest firings (failures and missed ones included): the stage's
//! own, never those of another stage's door of the same name in a shared store.

use crate::error::DoorError;
use crate::kept;
use crate::schedule::Timing;
use crate::timed::{BACKOFF, Backoff, SINCE};
use improv_stage::Stage;
use improv_store::{Firing, StageKey, Store, UnixMillis};
use serde::Serialize;

/// How many firings per door `improv door status` and `GET /doors` show unless told otherwise.
pub const LATEST: usize = 5;

/// One door's state.
#[derive(Clone, Debug, Serialize)]
pub struct DoorStatus {
    pub name: String,
    pub kind: &'static str,
    /// The next due time after the last one handled (timed doors).
    pub next_due: Option<UnixMillis>,
    /// Failures in a row and the time before which no firing performs.
    pub backoff: Backoff,
    /// The latest firings, most recent first.
    pub firings: Vec<Firing>,
    /// What the door could not do as asked, most recent last ([`notice`]).
    pub notices: Vec<Notice>,
}

/// Something a door could not do as asked, for the director to see.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Notice {
    pub at: UnixMillis,
    pub text: String,
}

/// Where the notices live, one list per door.
const NOTICES: &str = "door.notices";

/// How many notices a door keeps: the newest.
pub const NOTICES_KEPT: usize = 20;

/// Adds a notice to `stage`'s door `door`'s list (the oldest past [`NOTICES_KEPT`] dropped), by
/// compare-and-set so two servers lose none of each other's; another stage's door of that name
/// keeps its own ([`kept::key`]).
pub async fn notice(
    store: &dyn Store,
    stage: &StageKey,
    door: &str,
    now: UnixMillis,
    text: &str,
) -> Result<(), DoorError> {
    let key = kept::key(stage, door);
    loop {
        let read = store.get_versioned(NOTICES, &key).await?;
        let version = read.as_ref().map(|r| r.version);
        let mut list: Vec<Notice> = read
            .and_then(|r| serde_json::from_value(r.value).ok())
            .unwrap_or_default();
        list.push(Notice {
            at: now,
            text: text.into(),
        });
        let surplus = list.len().saturating_sub(NOTICES_KEPT);
        list.drain(..surplus);
        // A list of integers and strings always serialises.
        let value = serde_json::to_value(&list).unwrap_or_default();
        if store.put_if(NOTICES, &key, version, &value).await? {
            return Ok(());
        }
    }
}

/// The status of every door of `stage`, with at most `limit` firings each, under its key as
/// worked out now (a command run on its own; a daemon passes its own to [`status_of`]).
pub async fn status(
    stage: &Stage,
    store: &dyn Store,
    now: UnixMillis,
    limit: usize,
) -> Result<Vec<DoorStatus>, DoorError> {
    status_of(stage, &crate::expiry::stage_key(stage), store, now, limit).await
}

/// The status of every door of `stage`, known by `key`, with at most `limit` firings each.
/// It only reads: a value kept before stages were in the key is shown, not adopted
/// ([`kept::peek`]).
pub async fn status_of(
    stage: &Stage,
    key: &StageKey,
    store: &dyn Store,
    now: UnixMillis,
    limit: usize,
) -> Result<Vec<DoorStatus>, DoorError> {
    let mut out = Vec::with_capacity(stage.doors.len());
    for door in &stage.doors {
        let firings = store.firings(key, &door.name, limit).await?;
        let since = kept::peek(store, SINCE, key, &door.name).await?;
        let since = since.and_then(|v| v.as_i64());
        let cursor = firings.first().map(|f| f.due).or(since).unwrap_or(now);
        let next_due = Timing::of(door)?.and_then(|t| t.next_after(cursor));
        let backoff = kept::peek(store, BACKOFF, key, &door.name)
            .await?
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        let notices = store
            .get(NOTICES, &kept::key(key, &door.name))
            .await?
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        out.push(DoorStatus {
            name: door.name.clone(),
            kind: door.kind.word(),
            next_due,
            backoff,
            firings,
            notices,
        });
    }
    Ok(out)
}
