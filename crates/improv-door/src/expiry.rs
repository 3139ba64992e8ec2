//! How long the store keeps the records a door writes per message or delivery (claims, thread
//! records, pairing codes), so that a door that runs for months keeps a bounded store: each
//! scope has an age after which its records go, and a count beyond which the oldest go first.
//! A periodic sweep ([`run`]) deletes them in batches, never the message path.

use crate::clock::Clock;
use improv_store::{Store, StoreError, Sweep, UnixMillis};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the sweep runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(600);

/// The most records one store call deletes, so a sweep never holds the store for long.
pub const BATCH: usize = 500;

/// How long the records of one store scope are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    pub scope: &'static str,
    /// Records last written longer ago than this go.
    pub keep_for: Duration,
    /// Beyond this many records, the oldest go first.
    pub max: usize,
}

impl Expiry {
    /// The store's sweep for this scope at `now`.
    fn sweep(&self, now: UnixMillis) -> Sweep {
        let age = i64::try_from(self.keep_for.as_millis()).unwrap_or(i64::MAX);
        Sweep {
            before: now.saturating_sub(age),
            keep: self.max,
            batch: BATCH,
        }
    }
}

/// Deletes, batch after batch, what `rules` expire at `now`; returns how many records went.
pub async fn sweep(
    store: &dyn Store,
    rules: &[Expiry],
    now: UnixMillis,
) -> Result<u64, StoreError> {
    let mut gone = 0;
    for rule in rules {
        let sweep = rule.sweep(now);
        loop {
            let n = store.sweep(rule.scope, &sweep).await?;
            gone += n;
            if n < BATCH as u64 {
                break;
            }
            // Let the store serve others between batches.
            tokio::task::yield_now().await;
        }
    }
    Ok(gone)
}

/// Sweeps `rules` every [`SWEEP_EVERY`] of `clock` until `cancel` fires; a failed sweep is
/// logged and tried at the next one.
pub async fn run(
    store: Arc<dyn Store>,
    rules: Vec<Expiry>,
    clock: Arc<dyn Clock>,
    cancel: CancellationToken,
) {
    let every = i64::try_from(SWEEP_EVERY.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = clock.sleep_until(clock.now().saturating_add(every)) => {}
        }
        match sweep(store.as_ref(), &rules, clock.now()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!("expired {n} door record(s) from the store"),
            Err(e) => tracing::warn!("door records could not be expired (tried again later): {e}"),
        }
    }
}
