//! Where each door stands, for `improv door status` and `GET /doors`: its kind, its next due
//! time, its backoff and its latest firings (failures and missed ones included).

use crate::error::DoorError;
use crate::schedule::Timing;
use crate::timed::{BACKOFF, Backoff, SINCE};
use improv_stage::Stage;
use improv_store::{Firing, Store, UnixMillis};
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
}

/// The status of every door of `stage`, with at most `limit` firings each.
pub async fn status(
    stage: &Stage,
    store: &dyn Store,
    now: UnixMillis,
    limit: usize,
) -> Result<Vec<DoorStatus>, DoorError> {
    let mut out = Vec::with_capacity(stage.doors.len());
    for door in &stage.doors {
        let firings = store.firings(&door.name, limit).await?;
        let since = store.get(SINCE, &door.name).await?.and_then(|v| v.as_i64());
        let cursor = firings.first().map(|f| f.due).or(since).unwrap_or(now);
        let next_due = Timing::of(door)?.and_then(|t| t.next_after(cursor));
        let backoff = store
            .get(BACKOFF, &door.name)
            .await?
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default();
        out.push(DoorStatus {
            name: door.name.clone(),
            kind: door.kind.word(),
            next_due,
            backoff,
            firings,
        });
    }
    Ok(out)
}
