//! The stage door: what makes a stage live. Timed doors (`schedule`, `every`) fire on a
//! [`Clock`], each due time claimed once in the store so nothing fires twice or goes missing
//! unsaid; probes run first so an idle stage calls no model; webhook doors check GitHub-style
//! signatures and perform each delivery once; channel doors are [`Listener`]s that
//! `improv-channel` implements. The [`Daemon`] runs them all for `improv serve`.

pub mod clock;
pub mod context;
pub mod daemon;
mod error;
pub mod expiry;
pub mod fence;
pub mod kept;
pub mod launcher;
pub mod limit;
pub mod probe;
pub mod queued;
pub mod schedule;
pub mod status;
pub mod timed;
pub mod webhook;

pub use clock::{Clock, SimClock, SystemClock};
pub use context::{DoorContext, Finished, LaunchRequest, Launcher, Listener, Listeners, Started};
pub use daemon::{Change, Daemon};
pub use error::DoorError;
pub use launcher::PerformLauncher;
pub use limit::Limits;
pub use queued::QueueLauncher;
