//! The clock the scheduler reads and sleeps on: the system's, or a simulated one that a test
//! moves by hand, so 72 hours of schedule run in a second.

use async_trait::async_trait;
use improv_store::UnixMillis;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// A source of time for the door scheduler.
#[async_trait]
pub trait Clock: Send + Sync + 'static {
    /// Now, in milliseconds since the Unix epoch (UTC).
    fn now(&self) -> UnixMillis;
    /// Returns once [`Clock::now`] is at or past `at`.
    async fn sleep_until(&self, at: UnixMillis);
}

/// The machine's clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> UnixMillis {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
    }

    async fn sleep_until(&self, at: UnixMillis) {
        // Sleep in slices of at most a minute, so a wall-clock jump (suspend, NTP) is noticed.
        loop {
            let left = at.saturating_sub(self.now());
            if left <= 0 {
                return;
            }
            let slice = Duration::from_millis(left.min(60_000) as u64);
            tokio::time::sleep(slice).await;
        }
    }
}

/// A clock that moves only when told ([`SimClock::advance`], [`SimClock::set`]).
#[derive(Debug)]
pub struct SimClock {
    now: AtomicI64,
    moved: watch::Sender<UnixMillis>,
}

impl SimClock {
    pub fn new(start: UnixMillis) -> Self {
        SimClock {
            now: AtomicI64::new(start),
            moved: watch::channel(start).0,
        }
    }

    /// Moves the clock to `to` (never backwards) and wakes the sleepers it passed.
    pub fn set(&self, to: UnixMillis) {
        let now = self.now.fetch_max(to, Ordering::SeqCst).max(to);
        self.moved.send_replace(now);
    }

    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.set(self.now().saturating_add(by));
    }
}

#[async_trait]
impl Clock for SimClock {
    fn now(&self) -> UnixMillis {
        self.now.load(Ordering::SeqCst)
    }

    async fn sleep_until(&self, at: UnixMillis) {
        let mut moved = self.moved.subscribe();
        // The sender lives as long as `self`, which outlives this borrow: wait_for cannot fail
        // for a closed channel here, and if it did the loop below would still end on `now`.
        let _ = moved.wait_for(|now| *now >= at).await;
    }
}
