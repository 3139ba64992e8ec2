//! [`Tape`], an observer that keeps every event in memory: what a test reads back after a
//! performance, and what an embedder uses to inspect a run without the event log.

use crate::event::{Event, EventKind, ObserveError, Observer};
use std::sync::Mutex;

/// Keeps every event it observes, in order.
#[derive(Debug, Default)]
pub struct Tape(Mutex<Vec<Event>>);

impl Tape {
    /// A copy of the events so far.
    pub fn events(&self) -> Vec<Event> {
        self.lock().clone()
    }

    /// A copy of the kinds of the events so far (what most assertions look at).
    pub fn kinds(&self) -> Vec<EventKind> {
        self.lock().iter().map(|event| event.kind.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Event>> {
        // A poisoned lock means an observer panicked mid-push; the events are still whole.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Observer for Tape {
    fn observe(&self, event: &Event) -> Result<(), ObserveError> {
        self.lock().push(event.clone());
        Ok(())
    }
}
