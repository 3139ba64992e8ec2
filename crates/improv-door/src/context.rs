//! What a door source is given to work with ([`DoorContext`]) and the two seams between the
//! door and the rest of improv: a [`Launcher`] starts a performance for a firing, a [`Listener`]
//! is a long-running source of firings (a chat channel) that the daemon runs beside the clock.

use crate::clock::Clock;
use crate::error::DoorError;
use async_trait::async_trait;
use futures::future::BoxFuture;
use improv_kernel::{Budget, Outcome};
use improv_stage::{Door, Stage};
use improv_store::{StageKey, Store};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// One performance a door asks for. Each is a fresh performance: a fresh context, the door's
/// own budget.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchRequest {
    /// The door that fired.
    pub door: String,
    /// What to perform, with any untrusted content (a webhook payload, a message) fenced.
    pub intent: String,
    /// What started it, as the store records it: `door:NAME`.
    pub origin: String,
    /// The door's `[door.edges]` over the stage's `[edges]`.
    pub budget: Budget,
    /// The id the performance must take (so the firing can name it before it starts).
    pub id: String,
}

/// How a performance a door started ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    pub outcome: Outcome,
    pub reason: String,
    /// The lead's last words (what a channel replies with).
    pub answer: String,
}

/// A performance started by a door: its id now, its end later.
pub struct Started {
    pub performance: String,
    pub done: BoxFuture<'static, Result<Finished, DoorError>>,
}

/// Starts performances for doors. The daemon's launcher performs the stage in-process
/// (`improv_perform`); tests count or script it.
///
/// `start` is the fence that keeps a firing from performing twice: it starts each
/// [`LaunchRequest::id`] at most once, recording the start and starting without waiting in
/// between, and answers [`DoorError::AlreadyStarted`] for an id it started before.
#[async_trait]
pub trait Launcher: Send + Sync + 'static {
    async fn start(&self, stage: Arc<Stage>, request: LaunchRequest) -> Result<Started, DoorError>;

    /// Whether performance `id` was ever started: a firing claimed for `id` by a daemon that
    /// died before starting it is performed again only when this says no.
    async fn started(&self, stage: &Stage, id: &str) -> Result<bool, DoorError>;
}

/// Everything a door source needs: the stage as loaded and its key, the door it serves, the
/// store (firings, small values under a scope), the launcher and the clock.
#[derive(Clone)]
pub struct DoorContext {
    pub stage: Arc<Stage>,
    /// The stage's key in the store ([`crate::expiry::stage_key`]): what its door's firings and
    /// kept values are recorded under. Worked out once, when the daemon loaded the stage (or
    /// reloaded it), never per firing or delivery: the canonical path of an unnamed stage
    /// changes when a symlink on the way is switched (a `current` release link), and a key
    /// that changed mid-run would perform a redelivered webhook again and leave a firing
    /// noted under the old key "performing" for good.
    pub stage_key: StageKey,
    pub door: Arc<Door>,
    pub store: Arc<dyn Store>,
    pub launcher: Arc<dyn Launcher>,
    pub clock: Arc<dyn Clock>,
}

impl DoorContext {
    /// The stage's key in the store, as worked out when the stage was loaded (the field
    /// [`DoorContext::stage_key`]; never worked out again here).
    pub fn stage_key(&self) -> StageKey {
        self.stage_key.clone()
    }

    /// A request to perform `intent` through this door with its budget and a fresh id.
    pub fn request(&self, intent: String) -> LaunchRequest {
        LaunchRequest {
            door: self.door.name.clone(),
            intent,
            origin: format!("door:{}", self.door.name),
            budget: self.door.budget.over(self.stage.budget()),
            id: improv_kernel::performance::new_id(),
        }
    }
}

/// A long-running source of firings, such as a chat channel: the daemon runs one per door of
/// its kind until `cancel` fires (SIGTERM, a reload that changed or removed the door), and
/// restarts it with a backoff when it returns an error.
#[async_trait]
pub trait Listener: Send + Sync + 'static {
    async fn run(&self, ctx: DoorContext, cancel: CancellationToken) -> Result<(), DoorError>;
}

/// Makes the listener of a door the daemon does not run itself (a channel door); `None` when
/// it knows no such door.
pub type Listeners = Arc<dyn Fn(&Door) -> Option<Arc<dyn Listener>> + Send + Sync>;
