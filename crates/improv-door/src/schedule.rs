//! When a timed door is due: a cron pattern in a time zone (`croner`, `chrono-tz`) or a period
//! counted from the Unix epoch. Due times are a pure function of the door, so every daemon,
//! before and after a restart, names the same firing by the same (door, due) key.

use crate::error::DoorError;
use chrono::{DateTime, Local, TimeZone, Utc};
use improv_stage::{Door, DoorKind};
use improv_store::UnixMillis;
use std::str::FromStr;

/// The most due times one look back returns; a longer downtime is summarised, not listed.
pub const MAX_DUES: usize = 1000;

/// A timed door's due times.
#[derive(Clone, Debug)]
pub enum Timing {
    Cron {
        cron: Box<croner::Cron>,
        zone: Zone,
    },
    /// Due at every multiple of this many milliseconds since the epoch.
    Every(i64),
}

/// The time zone a cron pattern is read in.
#[derive(Clone, Copy, Debug)]
pub enum Zone {
    Named(chrono_tz::Tz),
    /// The machine's.
    Local,
}

impl Timing {
    /// The timing of `door`; `None` for a door that is not timed (a webhook, a channel).
    pub fn of(door: &Door) -> Result<Option<Timing>, DoorError> {
        let problem = |message: String| DoorError::Schedule {
            door: door.name.clone(),
            message,
        };
        match &door.kind {
            DoorKind::Schedule { cron, timezone } => {
                let cron = croner::Cron::from_str(cron).map_err(|e| problem(e.to_string()))?;
                let zone = match timezone {
                    Some(tz) => Zone::Named(
                        tz.parse()
                            .map_err(|_| problem(format!("unknown time zone {tz}")))?,
                    ),
                    None => Zone::Local,
                };
                Ok(Some(Timing::Cron {
                    cron: Box::new(cron),
                    zone,
                }))
            }
            DoorKind::Every(period) => {
                let ms = i64::try_from(period.as_millis()).unwrap_or(i64::MAX).max(1);
                Ok(Some(Timing::Every(ms)))
            }
            DoorKind::Webhook { .. } | DoorKind::Channel(_) => Ok(None),
        }
    }

    /// The first due time strictly after `t`; `None` when there is none (a pattern that never
    /// matches again).
    pub fn next_after(&self, t: UnixMillis) -> Option<UnixMillis> {
        match self {
            Timing::Every(p) => t.div_euclid(*p).checked_add(1)?.checked_mul(*p),
            Timing::Cron { cron, zone } => {
                let utc = Utc.timestamp_millis_opt(t).single()?;
                match zone {
                    Zone::Named(tz) => next(cron, &utc.with_timezone(tz)),
                    Zone::Local => next(cron, &utc.with_timezone(&Local)),
                }
            }
        }
    }

    /// The due times in `(after, upto]`, oldest first, at most [`MAX_DUES`] (the latest ones
    /// when there are more), and how many were left out.
    pub fn dues(&self, after: UnixMillis, upto: UnixMillis) -> (Vec<UnixMillis>, u64) {
        if let Timing::Every(p) = self {
            // Counted, not walked: a long downtime under a short period costs nothing.
            let Some(first) = self.next_after(after).filter(|f| *f <= upto) else {
                return (Vec::new(), 0);
            };
            let count = (upto - first) / p + 1;
            let kept = count.min(MAX_DUES as i64);
            let start = first + (count - kept) * p;
            let dues = (0..kept).map(|i| start + i * p).collect();
            return (dues, (count - kept) as u64);
        }
        let mut dues = std::collections::VecDeque::new();
        let mut left_out = 0u64;
        let mut t = after;
        while let Some(due) = self.next_after(t).filter(|d| *d <= upto) {
            if dues.len() == MAX_DUES {
                dues.pop_front();
                left_out += 1;
            }
            dues.push_back(due);
            t = due;
        }
        (dues.into(), left_out)
    }
}

fn next<Z: TimeZone>(cron: &croner::Cron, from: &DateTime<Z>) -> Option<UnixMillis> {
    cron.find_next_occurrence(from, false)
        .ok()
        .map(|d| d.timestamp_millis())
}

/// A time for people: RFC 3339 in UTC, to the second.
pub fn show(t: UnixMillis) -> String {
    Utc.timestamp_millis_opt(t)
        .single()
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| t.to_string())
}
