//! Where messages come in: a Telegram long-polling loop (its offset kept in the store, so a
//! restart neither loses nor repeats an update), and the Slack Events API and Discord
//! interactions endpoints as framework-free handlers (`improv serve` mounts them): each checks
//! the request's signature before anything else, answers at once, and performs in the
//! background, each such performance held by the door's [`Intake`] so that a door that closes
//! (SIGTERM, a reload) takes no new message and waits for those under way. Telegram's and
//! email's messages are performed inline by their polling loop, which the daemon's drain awaits.

use crate::conversation::{ChatDoor, Deferral};
use crate::discord::{self, PublicKey};
use crate::telegram::Telegram;
use crate::{ChannelError, Inbound, slack};
use http::HeaderMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

const OFFSET_SCOPE: &str = "telegram.offset";

/// Polls Telegram for `door` until `cancel` fires, handling each message in order. Errors back
/// off (1 s doubling to a minute; a 429's `retry_after` as asked) and never end the loop.
pub async fn telegram(
    client: &Telegram,
    door: &ChatDoor,
    poll: Duration,
    cancel: CancellationToken,
) -> Result<(), ChannelError> {
    // The stage's own bot's offset (one kept before the stage was in the key is adopted).
    let stage = door.outbox.stage();
    let mut offset = improv_door::kept::get(door.store.as_ref(), OFFSET_SCOPE, stage, &door.door)
        .await?
        .and_then(|v| v.as_i64())
        .unwrap_or(0);
    let mut backoff = Duration::from_secs(1);
    loop {
        let updates = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            updates = client.get_updates(offset, poll) => updates,
        };
        let pause = match updates {
            Ok(updates) => {
                backoff = Duration::from_secs(1);
                for update in updates {
                    if let Some(inbound) = update.inbound() {
                        handle(door, &inbound).await;
                    }
                    offset = update.update_id + 1;
                    let value = offset.into();
                    improv_door::kept::put(
                        door.store.as_ref(),
                        OFFSET_SCOPE,
                        stage,
                        &door.door,
                        &value,
                        false,
                    )
                    .await?;
                }
                continue;
            }
            Err(ChannelError::RateLimited { retry_after, .. }) => retry_after,
            Err(e) => {
                tracing::warn!(door = %door.door, "telegram: {e}; polling again in {backoff:?}");
                let now = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(60));
                now
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// Handles one message, logging what could not be done (the loop goes on).
async fn handle(door: &ChatDoor, inbound: &Inbound) {
    if let Err(e) = door.handle(inbound).await {
        tracing::error!(door = %door.door, "a message from {} was not handled: {e}", inbound.sender_id);
    }
}

/// An HTTP answer, for whichever server mounts the handlers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Answer {
    fn json(value: serde_json::Value) -> Self {
        Answer {
            status: 200,
            content_type: "application/json",
            body: value.to_string(),
        }
    }
    /// The door is closing: the platform is asked to deliver the message again later (Slack
    /// retries a 5xx; the message was not claimed, so the retry is performed once the door is
    /// back).
    fn closing() -> Self {
        Answer::text(503, "this door is closing; deliver the message again later")
    }
    /// The answer to a request whose signature failed (401, as Discord requires): the caller
    /// showed no secret, so it is told nothing that tells this door from an unknown one. A
    /// server that mounts the handlers gives its own one answer to strangers in its place
    /// ([`Answer::is_stranger`]); the reason goes to the log.
    pub fn stranger() -> Self {
        Answer::text(401, improv_door::webhook::STRANGER_ANSWER)
    }
    /// Whether this is [`Answer::stranger`].
    pub fn is_stranger(&self) -> bool {
        *self == Answer::stranger()
    }
    fn text(status: u16, body: impl Into<String>) -> Self {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

/// A Slack Events API request, `now_s` in Unix seconds: refused (401) unless signed within the
/// replay window; the URL check answered with its challenge; a message performed in the
/// background (Slack wants an answer within 3 s, and retries otherwise).
pub fn slack(
    door: &Arc<ChatDoor>,
    intake: &Intake,
    signing_secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now_s: i64,
) -> Answer {
    if let Err(e) = slack::verify(signing_secret, headers, body, now_s) {
        tracing::warn!(door = %door.door, "a Slack request was refused: {e}");
        return Answer::stranger();
    }
    match slack::parse(body) {
        Ok(slack::Incoming::Challenge(challenge)) => Answer::text(200, challenge),
        Ok(slack::Incoming::Message { inbound, .. }) => {
            if !intake.perform(door, inbound) {
                return Answer::closing();
            }
            Answer::text(200, "")
        }
        Ok(slack::Incoming::Ignored) => Answer::text(200, ""),
        Err(e) => Answer::text(400, e.to_string()),
    }
}

/// A Discord interaction: refused (401, as Discord requires) unless signed within the replay
/// window; PING answered with PONG; a command acknowledged at once and performed in the
/// background. Discord never sends an interaction again, so one that arrives while the door is
/// closing is not turned away: it is answered "deferred" and kept for the next server
/// ([`ChatDoor::defer`]), which answers it through its token.
pub async fn discord(
    door: &Arc<ChatDoor>,
    intake: &Intake,
    key: &PublicKey,
    headers: &HeaderMap,
    body: &[u8],
    now_s: i64,
) -> Answer {
    if let Err(e) = discord::verify(key, headers, body, now_s) {
        tracing::warn!(door = %door.door, "a Discord interaction was refused: {e}");
        return Answer::stranger();
    }
    match discord::parse(body, u64::try_from(now_s).unwrap_or(0)) {
        Ok(discord::Incoming::Ping) => Answer::json(discord::pong()),
        Ok(discord::Incoming::Message(inbound, followup)) => {
            if intake.perform(door, inbound.clone()) {
                return Answer::json(discord::acknowledge(
                    "Received; the answer will follow here.",
                ));
            }
            let Some(followup) = followup else {
                tracing::warn!(door = %door.door, "a Discord command without a token arrived while the door closes; it is lost");
                return Answer::closing();
            };
            match door.defer(&inbound, &followup).await {
                Ok(Deferral::Kept | Deferral::Claimed) => Answer::json(discord::deferred()),
                Ok(Deferral::Limited) => Answer::json(discord::acknowledge(
                    "I am receiving too many messages right now, so this one was not handled. \
                     Please send it again in a little while.",
                )),
                Err(e) => {
                    tracing::error!(door = %door.door, "a Discord command arriving while the door closes could not be kept: {e}");
                    Answer::closing()
                }
            }
        }
        Ok(discord::Incoming::Ignored) => Answer::json(discord::acknowledge("Not understood.")),
        Err(e) => Answer::text(400, e.to_string()),
    }
}

/// The performances an HTTP door started in the background: taken while the door is open,
/// waited for when it closes ([`Intake::close`]).
#[derive(Clone, Debug, Default)]
pub struct Intake {
    tracker: TaskTracker,
    closing: CancellationToken,
}

impl Intake {
    pub fn new() -> Intake {
        Intake::default()
    }

    /// Performs `inbound` in the background, held until it ends; false (nothing started) once
    /// the door is closing.
    pub fn perform(&self, door: &Arc<ChatDoor>, inbound: Inbound) -> bool {
        // Held before the check: a close that comes after it waits for this message.
        let held = self.tracker.token();
        if self.closing.is_cancelled() {
            return false;
        }
        let door = door.clone();
        tokio::spawn(async move {
            handle(&door, &inbound).await;
            drop(held);
        });
        true
    }

    /// Takes no new message and waits for every performance under way to end.
    pub async fn close(&self, door: &str) {
        self.closing.cancel();
        self.tracker.close();
        if !self.tracker.is_empty() {
            tracing::info!(
                door,
                "waiting for {} message(s) under way",
                self.tracker.len()
            );
        }
        self.tracker.wait().await;
    }
}
