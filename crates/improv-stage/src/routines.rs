//! `[routines]`: whether converged practice is learned into routines after each converged
//! performance, whether the learner's proposals are approved without the director, and whether
//! an intent that an approved routine matches is performed by replaying it, without a model.

use serde::{Deserialize, Serialize};

/// `[routines]`, as the stage file writes it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoutines {
    auto_approve: Option<bool>,
    learn: Option<bool>,
    replay: Option<bool>,
}

impl RawRoutines {
    pub(crate) fn build(&self) -> RoutinesConfig {
        let d = RoutinesConfig::default();
        RoutinesConfig {
            auto_approve: self.auto_approve.unwrap_or(d.auto_approve),
            learn: self.learn.unwrap_or(d.learn),
            replay: self.replay.unwrap_or(d.replay),
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
}

impl Default for RoutinesConfig {
    fn default() -> Self {
        RoutinesConfig {
            auto_approve: false,
            learn: true,
            replay: true,
        }
    }
}
