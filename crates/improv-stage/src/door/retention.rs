//! `[doors]`: how long the store keeps the performances that doors started, for every door of
//! the stage (the sweep that deletes them is one store call across the stage's doors, and reads
//! no other stage's performances: stages sharing a store each keep theirs as their own `[doors]`
//! says). `improv-door`'s daemon reads it at each sweep, so a SIGHUP reload changes it without
//! restarting a door.

use crate::error::Problem;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use toml::Spanned;

/// The fewest newest performances each door keeps whatever their age: `improv-door`'s retake
/// window (`timed::RETAKE_WINDOW`, asserted there), since a retake asks whether each of the
/// firings it reads started its performance, and one deleted would read as never started.
pub const MIN_KEEP_LAST: usize = 20;

/// `keep_for` when `[doors]` gives none.
pub const DEFAULT_KEEP_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// The shortest `keep_for`: a chat's next message continues from the performances before it.
pub const MIN_KEEP_FOR: Duration = Duration::from_secs(24 * 3600);

/// `[doors]`, as the stage file writes it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDoors {
    /// Checked (a duration) by the caller, which reports mistakes at their line.
    pub(crate) keep_for: Option<Spanned<String>>,
    keep_last: Option<Spanned<i64>>,
}

/// `[doors]`: a finished performance a door of this stage started goes (with its events and
/// the blobs no other performance refers to) `keep_for` after it was last written, unless it is
/// among its door's `keep_last` newest. A performance a person started, and another stage's, is
/// never swept by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DoorRetention {
    /// `keep_for = "30d"` (at least a day).
    pub keep_for: Duration,
    /// `keep_last = 20` (at least [`MIN_KEEP_LAST`]).
    pub keep_last: usize,
}

impl Default for DoorRetention {
    fn default() -> Self {
        DoorRetention {
            keep_for: DEFAULT_KEEP_FOR,
            keep_last: MIN_KEEP_LAST,
        }
    }
}

impl RawDoors {
    /// The retention `[doors]` asks for; `keep_for` is the key's duration, already parsed (a
    /// mistake there is already a problem). A value below its floor is a problem at its line.
    pub(crate) fn build(
        &self,
        keep_for: Option<Duration>,
        problems: &mut Vec<Problem>,
    ) -> DoorRetention {
        let d = DoorRetention::default();
        let keep_for = match (keep_for, &self.keep_for) {
            (Some(k), Some(v)) if k < MIN_KEEP_FOR => {
                problems.push(
                    Problem::new("`keep_for` is shorter than a day", v.span(), "too short").help(
                        "door-made performances are kept at least a day (a chat continues from \
                         them): give e.g. \"1d\" or \"30d\"",
                    ),
                );
                d.keep_for
            }
            (Some(k), _) => k,
            (None, _) => d.keep_for,
        };
        let keep_last = match &self.keep_last {
            Some(v) => match usize::try_from(*v.get_ref()) {
                Ok(n) if n >= MIN_KEEP_LAST => n,
                _ => {
                    problems.push(
                        Problem::new(
                            format!("`keep_last` is below {MIN_KEEP_LAST}"),
                            v.span(),
                            "too few",
                        )
                        .help(format!(
                            "each door keeps at least its {MIN_KEEP_LAST} newest performances (a \
                             retake reads that many firings): give {MIN_KEEP_LAST} or more, or \
                             remove `keep_last`"
                        )),
                    );
                    d.keep_last
                }
            },
            None => d.keep_last,
        };
        DoorRetention {
            keep_for,
            keep_last,
        }
    }
}
