//! The door daemon's side of a chat door: [`listeners`] hands `improv-door`'s daemon a
//! [`Listener`] for each channel door. Telegram is polled; Slack and Discord send their
//! messages to `improv serve`, which finds the door's [`Endpoint`] by name ([`endpoint`]) while
//! its listener runs. Each message is performed in this process with `improv_perform` — not
//! through the context's `Launcher`, which cannot yet hand a performance the `reply` prop, its
//! observer or the thread to resume (see /work/notes/channel-needs.md) — with the door's budget.

use crate::conversation::{ChatDoor, Performed, Performer, RETAKE_GRACE, Request};
use crate::discord::{Discord, PublicKey};
use crate::gate::{Gate, Limits};
use crate::listen::{self, Answer, Intake};
use crate::outbox::{Outbox, Retry};
use crate::slack::Slack;
use crate::telegram::Telegram;
use crate::{ChannelError, Sender};
use async_trait::async_trait;
use http::HeaderMap;
use improv_door::launcher::within_budget;
use improv_door::{DoorContext, DoorError, Listener, Listeners};
use improv_kernel::Prop;
use improv_perform::{Launch, Production, PropSource};
use improv_stage::door::{Channel, ChannelDoor};
use improv_stage::{Door, DoorKind};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a Telegram long poll waits for an update.
const POLL: Duration = Duration::from_secs(25);

/// The listeners of the channel doors: email's ([`crate::email`]) and the chats'.
pub fn listeners() -> Listeners {
    Arc::new(|door: &Door| match &door.kind {
        DoorKind::Channel(c) if c.channel == Channel::Email => {
            Some(Arc::new(crate::email::EmailListener) as Arc<dyn Listener>)
        }
        DoorKind::Channel(_) => Some(Arc::new(ChannelListener) as Arc<dyn Listener>),
        _ => None,
    })
}

/// Runs one channel door until cancelled: its outbox's retry task, and its way in.
pub struct ChannelListener;

#[async_trait]
impl Listener for ChannelListener {
    async fn run(&self, ctx: DoorContext, cancel: CancellationToken) -> Result<(), DoorError> {
        let name = ctx.door.name.clone();
        // The daemon watches `cancel` to start this door again after an error: only this run's
        // own tasks are stopped when it ends.
        let cancel = cancel.child_token();
        let failed = |e: ChannelError| DoorError::Listener {
            door: name.clone(),
            message: e.to_string(),
        };
        let DoorKind::Channel(config) = &ctx.door.kind else {
            return Err(failed(ChannelError::Setup("not a channel door".into())));
        };
        let token = env(&name, "token_env", config.token_env.as_deref()).map_err(failed)?;
        let api = config.api_base.as_deref();
        let (sender, way_in): (Arc<dyn Sender>, WayIn) = match config.channel {
            Channel::Telegram => {
                let client = Arc::new(Telegram::new(&token, api).map_err(failed)?);
                (client.clone(), WayIn::Poll(client))
            }
            Channel::Slack => {
                let secret =
                    env(&name, "secret_env", config.secret_env.as_deref()).map_err(failed)?;
                let client = Slack::new(&token, api).map_err(failed)?;
                (
                    Arc::new(client),
                    WayIn::Http(Verifier::Slack(secret.into_bytes())),
                )
            }
            Channel::Discord => {
                let key = env(&name, "secret_env", config.secret_env.as_deref()).map_err(failed)?;
                let key = PublicKey::from_hex(&key).map_err(failed)?;
                let client = Discord::new(&token, api).map_err(failed)?;
                (Arc::new(client), WayIn::Http(Verifier::Discord(key)))
            }
            Channel::Email => {
                return Err(failed(ChannelError::Setup(
                    "email doors are not available yet; use telegram, slack or discord".into(),
                )));
            }
        };
        let door = chat_door(&ctx, config, sender);
        let retry = tokio::spawn({
            let (outbox, cancel) = (door.outbox.clone(), cancel.clone());
            async move { outbox.run(cancel).await }
        });
        let retaking = retake(door.clone(), RETAKE_EVERY, cancel.clone());
        let sweeping = tokio::spawn(improv_door::expiry::run(
            ctx.store.clone(),
            expiry(),
            ctx.clock.clone(),
            cancel.clone(),
        ));
        let result = match way_in {
            WayIn::Poll(client) => listen::telegram(&client, &door, POLL, cancel.clone()).await,
            WayIn::Http(verifier) => {
                let intake = Intake::new();
                let endpoint = Arc::new(Endpoint {
                    door: door.clone(),
                    verifier,
                    intake: intake.clone(),
                });
                registry().insert(name.clone(), endpoint.clone());
                cancel.cancelled().await;
                // Still answering while the messages under way finish: a Discord command that
                // comes meanwhile is deferred for the next server, not lost.
                intake.close(&name).await;
                registry().retire(&name, &endpoint);
                Ok(())
            }
        };
        cancel.cancel();
        let _ = retaking.await;
        let _ = sweeping.await;
        let _ = retry.await;
        result.map_err(failed)
    }
}

/// How often a running door looks again for messages to retake: a Discord command deferred
/// while another listener of the door drained (a reload) or while another server drained is
/// answered within about this long even when no listener restarts.
pub const RETAKE_EVERY: Duration = Duration::from_secs(60);

/// Once the door has been up for [`RETAKE_GRACE`], and then every `every`, performs the
/// messages a process that died (or a draining one that deferred them) had accepted and never
/// performed ([`ChatDoor::retake`]); a door closed before then retakes nothing (its next start
/// will). Once `cancel` fires no more are taken (the rest stay pending for the next server);
/// await the handle before the door is gone: the ones taken are performed to their end.
pub fn retake(door: Arc<ChatDoor>, every: Duration, cancel: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut wait = RETAKE_GRACE;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            if let Err(e) = door.retake_until(RETAKE_GRACE, &cancel).await {
                tracing::error!(door = %door.door, "the messages accepted and never performed were not retaken: {e}");
            }
            wait = every;
        }
    })
}

/// What a chat door's listener expires from the store: its claims and threads, and pairing codes.
pub fn expiry() -> Vec<improv_door::expiry::Expiry> {
    crate::conversation::EXPIRY
        .into_iter()
        .chain(crate::gate::EXPIRY)
        .chain(crate::outbox::EXPIRY)
        .collect()
}

enum WayIn {
    Poll(Arc<Telegram>),
    Http(Verifier),
}

pub(crate) fn chat_door(
    ctx: &DoorContext,
    config: &ChannelDoor,
    sender: Arc<dyn Sender>,
) -> Arc<ChatDoor> {
    let name = &ctx.door.name;
    Arc::new(ChatDoor {
        door: name.clone(),
        store: ctx.store.clone(),
        gate: Gate::new(
            ctx.stage_key(),
            name,
            &config.allow,
            ctx.store.clone(),
            Limits::of(&ctx.door),
        ),
        outbox: Arc::new(
            Outbox::new(
                ctx.store.clone(),
                ctx.stage_key(),
                name,
                sender,
                Retry::default(),
            )
            .with_targets(config.send.clone()),
        ),
        performer: performer(ctx),
    })
}

/// Who performs a door's messages: on the door's stage, in this process, with its budget.
pub fn performer(ctx: &DoorContext) -> Arc<dyn Performer> {
    Arc::new(StagePerformer { ctx: ctx.clone() })
}

/// The value of the environment variable a door's `key` names.
pub(crate) fn env(door: &str, key: &str, var: Option<&str>) -> Result<String, ChannelError> {
    let var = var.ok_or_else(|| {
        ChannelError::Setup(format!(
            "door `{door}` needs `{key}`: the environment variable that holds it"
        ))
    })?;
    std::env::var(var).map_err(|_| {
        ChannelError::Setup(format!(
            "door `{door}`: the environment variable {var} (`{key}`) is not set"
        ))
    })
}

/// How a door's HTTP requests are signed.
enum Verifier {
    Slack(Vec<u8>),
    Discord(PublicKey),
}

/// A Slack or Discord door's way in, for `improv serve` to hand requests to.
pub struct Endpoint {
    door: Arc<ChatDoor>,
    verifier: Verifier,
    /// The messages performed in the background, which the door waits for when it closes.
    intake: Intake,
}

impl Endpoint {
    /// Answers a request to the door: its signature checked against now.
    pub async fn answer(&self, headers: &HeaderMap, body: &[u8]) -> Answer {
        let now_s = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        match &self.verifier {
            Verifier::Slack(secret) => {
                listen::slack(&self.door, &self.intake, secret, headers, body, now_s)
            }
            Verifier::Discord(key) => {
                listen::discord(&self.door, &self.intake, key, headers, body, now_s).await
            }
        }
    }
}

/// The endpoints of the Slack and Discord doors whose listeners run in this process, and
/// whether the process drains ([`drain_begins`]).
#[derive(Default)]
struct Registered {
    endpoints: HashMap<String, Arc<Endpoint>>,
    draining: bool,
}

type Registry = Mutex<Registered>;

struct Endpoints(&'static Registry);

impl Endpoints {
    fn lock(&self) -> std::sync::MutexGuard<'_, Registered> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn insert(&self, door: String, endpoint: Arc<Endpoint>) {
        self.lock().endpoints.insert(door, endpoint);
    }
    /// Door `door`'s listener has ended and its intake is closed. While the process drains, its
    /// endpoint stays registered: the server still accepts requests until every door is
    /// drained (another door's long firing), and a Discord command that comes meanwhile is
    /// deferred for the next server rather than refused (401) and lost, since Discord never
    /// resends it. Otherwise (a reload) the endpoint goes, unless a newer listener replaced it.
    fn retire(&self, door: &str, endpoint: &Arc<Endpoint>) {
        let mut registered = self.lock();
        if registered.draining {
            return;
        }
        if registered
            .endpoints
            .get(door)
            .is_some_and(|e| Arc::ptr_eq(e, endpoint))
        {
            registered.endpoints.remove(door);
        }
    }
}

fn registry() -> Endpoints {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    Endpoints(REGISTRY.get_or_init(Registry::default))
}

/// The endpoint of door `name`, while its listener runs, and once the process drains until it
/// exits (`improv serve` routes `POST /doors/NAME` of a Slack or Discord door here).
pub fn endpoint(name: &str) -> Option<Arc<Endpoint>> {
    registry().lock().endpoints.get(name).cloned()
}

/// Tells this process's chat doors that it drains (SIGTERM): from now on a Slack or Discord
/// door whose listener ends keeps its endpoint, closed, until the process exits. A Discord
/// command that reaches it is answered "deferred" and kept for the next server; a Slack event
/// is answered 503, which Slack retries. Call it before the doors' daemon drains.
pub fn drain_begins() {
    registry().lock().draining = true;
}

/// Performs a message on the door's stage with the door's budget, unattended (`ask` rules are
/// denied with a reason: the sender is not the director), with the `reply` prop; a thread's next
/// message resumes its last performance and arrives as the sender's, fenced (`hear`), never as
/// a director note.
struct StagePerformer {
    ctx: DoorContext,
}

#[async_trait]
impl Performer for StagePerformer {
    async fn perform(&self, request: Request) -> Result<Performed, ChannelError> {
        let failed = |e: improv_perform::PerformError| {
            ChannelError::Setup(format!(
                "door `{}`: the performance failed: {e}",
                request.door
            ))
        };
        let fresh = self.ctx.request(request.intent.clone());
        let stage = Arc::new(within_budget(&self.ctx.stage, &fresh.budget));
        let resumed = match &request.previous {
            Some(previous) => {
                let mut launch = launch(&request);
                launch.resume = Some(previous.clone());
                Production::open(stage.clone(), launch)
                    .and_then(|(mut p, _)| p.hear(&request.from, &request.intent).map(|()| p))
                    .inspect_err(|e| {
                        tracing::warn!(door = %request.door, "the thread's performance {previous} cannot be continued ({e}); starting afresh");
                    })
                    .ok()
            }
            None => None,
        };
        let mut production = match resumed {
            Some(p) => p,
            None => {
                let mut launch = launch(&request);
                launch.id = Some(fresh.id);
                Production::open(stage, launch).map_err(failed)?.0
            }
        };
        let ended = production.perform(&CancellationToken::new()).await;
        let id = production.id().to_string();
        // It ran: an error now must not make the message perform again.
        if let Err(e) = production.finish(&ended) {
            tracing::warn!(door = %request.door, "performance {id} ended, but finishing it failed: {e}");
        }
        Ok(Performed {
            id,
            outcome: ended.outcome,
        })
    }
}

/// A launch of `request`'s message with the `reply` prop and its observer.
fn launch(request: &Request) -> Launch {
    let mut launch = Launch::new(request.intent.clone());
    launch.observers = vec![request.observer.clone()];
    let props = std::iter::once(request.reply.clone())
        .chain(request.send.clone())
        .collect();
    launch.outside = Some(Arc::new(Chat(props)));
    launch
}

/// Gives the lead the `reply` prop (and `send`, where allowed), whatever props it named.
struct Chat(Vec<Arc<dyn Prop>>);

impl PropSource for Chat {
    fn props(&self, _wanted: &[String]) -> Vec<Arc<dyn Prop>> {
        self.0.clone()
    }
}
