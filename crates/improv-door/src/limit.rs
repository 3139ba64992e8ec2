//! A door's limits on what comes in: `rate` (a token bucket: `count` at once, then one more each
//! `per / count`) and `max_running` (performances of the door at once). Over either, nothing is
//! started and the caller is told when to try again. These bound a flood and a captured signed
//! body re-sent with fresh delivery ids (GitHub's HMAC covers the body only).
//!
//! The bucket is written here rather than taken from a crate: it is a dozen lines over the
//! stage's own [`Rate`], and the retry time it answers is the one thing a rate-limiting crate
//! would add to it.

use improv_stage::{Door, Rate};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A webhook door's rate when its `rate` is not written.
pub const DEFAULT_RATE: Rate = Rate {
    count: 30,
    per: Duration::from_secs(60),
};
/// A webhook door's `max_running` when not written.
pub const DEFAULT_MAX_RUNNING: u32 = 4;
/// When to try again after `max_running` was reached: a performance's end is not known ahead.
pub const BUSY_RETRY: Duration = Duration::from_secs(10);

/// One door's limits, shared by every delivery to it.
pub struct Limits {
    rate: Rate,
    bucket: Mutex<Bucket>,
    running: Arc<Semaphore>,
}

struct Bucket {
    tokens: f64,
    at: Option<Instant>,
}

/// Held while an admitted performance runs; dropping it frees its place under `max_running`.
pub struct Permit {
    _held: OwnedSemaphorePermit,
}

impl Limits {
    /// The limits `door` declares, the defaults where it declares none.
    pub fn of(door: &Door) -> Limits {
        Limits::new(
            door.rate.unwrap_or(DEFAULT_RATE),
            door.max_running.unwrap_or(DEFAULT_MAX_RUNNING),
        )
    }

    pub fn new(rate: Rate, max_running: u32) -> Limits {
        Limits {
            rate,
            bucket: Mutex::new(Bucket {
                tokens: f64::from(rate.count),
                at: None,
            }),
            running: Arc::new(Semaphore::new(max_running as usize)),
        }
    }

    /// Lets one more in at `now`, or says how long until one would be: `max_running` first (a
    /// refused delivery spends no token), then the rate.
    pub fn admit(&self, now: Instant) -> Result<Permit, Duration> {
        let permit = self
            .running
            .clone()
            .try_acquire_owned()
            .map_err(|_| BUSY_RETRY)?;
        // A poisoned lock means another delivery panicked mid-update: the count is still a
        // number, so the bucket carries on with it.
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let capacity = f64::from(self.rate.count);
        let refill = self.rate.refill().as_secs_f64();
        if let Some(at) = b.at {
            let gained = now.saturating_duration_since(at).as_secs_f64() / refill;
            b.tokens = (b.tokens + gained).min(capacity);
        }
        b.at = Some(now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(Permit { _held: permit });
        }
        let wait = (1.0 - b.tokens) * refill;
        Err(Duration::from_secs_f64(wait).max(Duration::from_secs(1)))
    }
}
