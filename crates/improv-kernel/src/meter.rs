//! The meter: a performance's budget and what it has spent, shared with the props it calls, so
//! calls a prop makes on the performance's behalf (the steps of a `routine.NAME` prop) count
//! against the same budget as the actor's own calls and stop where they would.

use crate::budget::{Budget, Spent};
use crate::performance::Ended;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

/// The handle props get in [`PropContext::meter`](crate::PropContext::meter); a meter outside
/// any performance ([`Meter::default`]) limits nothing.
#[derive(Clone, Debug, Default)]
pub struct Meter(Option<Arc<Mutex<Metered>>>);

#[derive(Debug)]
struct Metered {
    budget: Budget,
    /// What the performance had spent when its current batch of calls began.
    spent: Spent,
    /// When that batch began: time spent since counts against the time budget.
    since: Instant,
    /// Calls props made on its behalf since.
    nested: u32,
}

impl Meter {
    pub(crate) fn new(budget: Budget) -> Meter {
        Meter(Some(Arc::new(Mutex::new(Metered {
            budget,
            spent: Spent::default(),
            since: Instant::now(),
            nested: 0,
        }))))
    }

    fn lock(&self) -> Option<MutexGuard<'_, Metered>> {
        // Poisoning needs a panic while the counts were copied; they are still whole.
        self.0
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// A batch of calls begins, the performance having spent `spent`.
    pub(crate) fn begin(&self, spent: Spent) {
        if let Some(mut m) = self.lock() {
            m.spent = spent;
            m.since = Instant::now();
            m.nested = 0;
        }
    }

    /// The calls props made on the performance's behalf since the batch began.
    pub(crate) fn nested(&self) -> u32 {
        self.lock().map_or(0, |m| m.nested)
    }

    /// Whether `spent` has reached a limit of `budget`: the end it makes, as between turns.
    pub(crate) fn check(budget: &Budget, spent: &Spent) -> Result<(), Ended> {
        match budget.exhausted(spent) {
            Some(ended) => Err(ended),
            None => Ok(()),
        }
    }

    /// A prop is about to make one call on the performance's behalf: counted, or refused with
    /// the end a spent budget makes (the call must not be made). Checked before the call, as
    /// the budget is before each model turn.
    pub fn charge(&self) -> Result<(), Ended> {
        let Some(mut m) = self.lock() else {
            return Ok(());
        };
        let mut now = m.spent;
        now.tool_calls += m.nested;
        now.elapsed_ms += m.since.elapsed().as_millis() as u64;
        Meter::check(&m.budget, &now)?;
        m.nested += 1;
        Ok(())
    }
}
