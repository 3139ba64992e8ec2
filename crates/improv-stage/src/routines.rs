//! `[routines]`: whether converged practice is learned into routines after each converged
//! performance, whether the learner's proposals are approved without the director, and whether
//! an intent that an approved routine matches is performed by replaying it, without a model,
//! and how long an approved routine may go unused before it is retired.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use toml::Spanned;

/// `[routines]`, as the stage file writes it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoutines {
    auto_approve: Option<bool>,
    learn: Option<bool>,
    replay: Option<bool>,
    /// Checked (a duration, not zero) by the caller, which reports mistakes at their line.
    pub(crate) retire_after: Option<Spanned<String>>,
    retire_unused: Option<u32>,
}

impl RawRoutines {
    /// `retire_after` is the key's duration, already checked.
    pub(crate) fn build(&self, retire_after: Option<Duration>) -> RoutinesConfig {
        let d = RoutinesConfig::default();
        RoutinesConfig {
            auto_approve: self.auto_approve.unwrap_or(d.auto_approve),
            learn: self.learn.unwrap_or(d.learn),
            replay: self.replay.unwrap_or(d.replay),
            retire_after,
            retire_unused: self.retire_unused.filter(|n| *n > 0),
        }
    }
}

/// `[routines]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RoutinesConfig {
    /// Proposed routines are approved at once (default: the director approves each).
    pub auto_approve: bool,
    /// After each converged performance, the stage's converged logs are learned from
    /// (default: yes).
    pub learn: bool,
    /// An intent an approved routine matches is performed by replaying it (default: yes).
    pub replay: bool,
    /// An approved routine unused this long (since its last use, or since it was approved) is
    /// retired, and says so (`retire_after = "30d"`; default: never).
    pub retire_after: Option<Duration>,
    /// An approved routine whose intent matched this many performances in a row that it did not
    /// serve (another was chosen, it could not be replayed, its replay deviated or failed the
    /// checks) is retired, and says so (`retire_unused = 5`; default, or 0: never).
    pub retire_unused: Option<u32>,
}

impl Default for RoutinesConfig {
    fn default() -> Self {
        RoutinesConfig {
            auto_approve: false,
            learn: true,
            replay: true,
            retire_after: None,
            retire_unused: None,
        }
    }
}
