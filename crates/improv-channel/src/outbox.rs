//! The outbox: every outbound message is put in the store under its idempotency key
//! (performance, seq of the event that asked for it) before it is sent, and the platform's id is
//! recorded after; a retry task sends what is still pending, with backoff.
//!
//! No message is sent twice. Where the platform de-duplicates by a key we choose (Discord's
//! `nonce` with `enforce_nonce`) a message whose fate is unknown is simply sent again with the
//! same nonce: exactly once. Telegram and Slack offer no such key, so there the outbox sends
//! **at most once**: each attempt is claimed in the store (`put` with `only_if_absent`) before
//! the request leaves, and an attempt found claimed but never recorded (a crash between send and
//! record, or a request whose answer never came) is recorded as [`UNCONFIRMED`] and not resent.
//! The narrow window: a crash after the platform accepted a message and before its id was
//! recorded loses the id (the message did arrive); a crash after the claim and before the
//! request left loses the message. Only an answer that says "not done" (HTTP 5xx, 429, a
//! connection that never opened) releases the attempt for a retry.
//!
//! A Discord reply that edits a deferred answer through its interaction's token is resent the
//! same way (an edit made twice leaves one message), but the token works for 15 minutes only,
//! after which a reply goes to the channel instead. So each edit is noted before it is sent as
//! one that may land, until Discord says it was not done; a resend that finds the token gone
//! after such an edit posts nothing and is recorded [`UNCONFIRMED`] (any other refusal is
//! [`REFUSED`], as for a first try). The note is written by compare-and-set and marked with the
//! delivery that wrote it, so two deliveries of one edit at once (two servers, or an old and a
//! new door during a reload) cannot reset each other's note: a delivery told "not done" puts the
//! note back only while it is still its own. What remains: Discord cannot be asked whether an
//! edit landed, so when an edit whose answer was lost did not land and the token has expired
//! since, that reply is lost rather than sent twice.

use crate::{Body, ChannelError, Sender};
use improv_store::{OutboxKey, OutboxMessage, StageKey, Store};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

/// The id recorded for a message that may have arrived but whose answer never came back, on a
/// platform without an idempotency key: never sent again.
pub const UNCONFIRMED: &str = "unconfirmed";
/// The id recorded for a message the platform refused (an unknown chat, a revoked token): never
/// sent again; the reason is in the log.
pub const REFUSED: &str = "refused";

/// Store scopes: attempts claimed per (key, attempt number), and the definite failures so far.
const ATTEMPT_SCOPE: &str = "outbox.attempt";
const FAILED_SCOPE: &str = "outbox.failed";
/// Discord: whether an edit of a deferred answer may have landed (`{"landed": true}` from just
/// before it is sent until Discord says it was not done), per outbox key.
const EDIT_SCOPE: &str = "outbox.edit";

/// How long the store keeps the records of edits that may have landed: longer than the outbox
/// takes to resolve a pending edit unless Discord is unreachable for two days.
pub const EXPIRY: [improv_door::expiry::Expiry; 1] = [improv_door::expiry::Expiry {
    scope: EDIT_SCOPE,
    keep_for: Duration::from_secs(48 * 3600),
    max: 500_000,
}];

/// How the retry task waits.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// The first wait after a failure; doubled after each one, up to `max`.
    pub first: Duration,
    pub max: Duration,
    /// How often pending messages are looked for when nothing wakes the task (messages put by
    /// another process).
    pub idle: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            first: Duration::from_secs(1),
            max: Duration::from_secs(300),
            idle: Duration::from_secs(30),
        }
    }
}

/// What became of a message handed to the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Sent now; the platform's id.
    Sent(String),
    /// It had been sent before (a retry of the same key); the recorded id.
    AlreadySent(String),
    /// The platform may have it but never said so; not sent again ([`UNCONFIRMED`]).
    Unconfirmed,
    /// The platform refused it for good ([`REFUSED`]).
    Refused(String),
}

/// One stage's door's outbox and its sender: it sends only that stage's messages, so stages
/// sharing a store each send their own through their door of one name.
pub struct Outbox {
    store: Arc<dyn Store>,
    stage: StageKey,
    door: String,
    sender: Arc<dyn Sender>,
    /// One delivery at a time in this process, so the first send and the retry task never
    /// race for the same message.
    one: Mutex<()>,
    wake: Notify,
    retry: Retry,
    /// Chats besides a thread's own that actors may post to (`send`).
    targets: Vec<String>,
}

impl Outbox {
    pub fn new(
        store: Arc<dyn Store>,
        stage: StageKey,
        door: &str,
        sender: Arc<dyn Sender>,
        retry: Retry,
    ) -> Self {
        Outbox {
            store,
            stage,
            door: door.to_string(),
            sender,
            one: Mutex::new(()),
            wake: Notify::new(),
            retry,
            targets: Vec::new(),
        }
    }

    /// The chats, besides a thread's own, that the door's actors may post to with the `send`
    /// prop (the stage file's `send`).
    pub fn with_targets(mut self, targets: Vec<String>) -> Self {
        self.targets = targets;
        self
    }

    /// See [`Outbox::with_targets`].
    pub fn targets(&self) -> &[String] {
        &self.targets
    }

    pub fn door(&self) -> &str {
        &self.door
    }

    /// The stage whose door this outbox sends for: what the door's records are kept under.
    pub fn stage(&self) -> &StageKey {
        &self.stage
    }

    /// How this outbox waits between tries (the door's other retries wait the same).
    pub fn retry(&self) -> Retry {
        self.retry
    }

    /// Puts the message in the outbox, then tries to send it once. An error means it is in the
    /// outbox, pending: the retry task ([`Outbox::run`]) sends it later.
    pub async fn send(
        &self,
        key: OutboxKey,
        conversation: &str,
        body: &Body,
    ) -> Result<Delivery, ChannelError> {
        let message = OutboxMessage {
            key,
            stage: self.stage.id(),
            door: self.door.clone(),
            conversation: conversation.to_string(),
            body: serde_json::to_value(body)
                .map_err(|e| ChannelError::Setup(format!("a reply that cannot be stored: {e}")))?,
        };
        self.store.outbox_put(&message).await?;
        let result = self.deliver(&message).await;
        if result.is_err() {
            self.wake.notify_one();
        }
        result
    }

    /// Sends one stored message unless it was sent (or its fate is unknown).
    async fn deliver(&self, message: &OutboxMessage) -> Result<Delivery, ChannelError> {
        let _one = self.one.lock().await;
        // `outbox_put` of a key already there returns the stored entry: its state now.
        let entry = self.store.outbox_put(message).await?;
        let key = &entry.message.key;
        if let Some(id) = entry.sent_id {
            return Ok(Delivery::AlreadySent(id));
        }
        let mut body: Body = serde_json::from_value(entry.message.body.clone()).map_err(|e| {
            ChannelError::Setup(format!(
                "outbox entry {key:?} has a body that does not read: {e}"
            ))
        })?;
        let noted = match &mut body.interaction {
            Some(interaction) => {
                let noted = self.note_edit(key).await?;
                interaction.may_have_landed = noted.landed_before;
                Some(noted)
            }
            None => None,
        };
        let landed_before = noted.as_ref().map(|n| n.landed_before);
        let idempotent = crate::idempotent(self.sender.platform());
        let attempt = if idempotent {
            0
        } else {
            match self.claim_attempt(key).await? {
                Some(n) => n,
                None => return self.record(key, UNCONFIRMED, Delivery::Unconfirmed).await,
            }
        };
        match self
            .sender
            .send(&entry.message.conversation, &body, key)
            .await
        {
            Ok(id) => {
                self.store.outbox_sent(key, &id).await?;
                Ok(Delivery::Sent(id))
            }
            Err(e @ (ChannelError::NotSent { .. } | ChannelError::RateLimited { .. })) => {
                if !idempotent {
                    self.release_attempt(key, attempt).await?;
                }
                if let Some(noted) = &noted {
                    self.unnote_edit(key, noted).await?;
                }
                Err(e)
            }
            // An earlier edit's answer was lost and Discord no longer takes this one (its
            // token expired): the edit may well have landed, and Discord cannot be asked, so
            // nothing goes to the channel (it would be a second answer).
            Err(ChannelError::Refused { message, .. })
                if landed_before == Some(true) && crate::discord::token_gone(&message) =>
            {
                tracing::warn!(door = %self.door, ?key, "{message}: an earlier edit of this deferred answer may have landed; not sent to the channel, recorded as unconfirmed");
                self.record(key, UNCONFIRMED, Delivery::Unconfirmed).await
            }
            Err(e @ ChannelError::Unknown { .. }) if idempotent => Err(e),
            Err(ChannelError::Unknown { message, .. }) => {
                tracing::warn!(door = %self.door, ?key, "{message}: not resent, recorded as unconfirmed");
                self.record(key, UNCONFIRMED, Delivery::Unconfirmed).await
            }
            Err(e) => {
                tracing::error!(door = %self.door, ?key, "{e}: the message is dropped");
                self.record(key, REFUSED, Delivery::Refused(e.to_string()))
                    .await
            }
        }
    }

    async fn record(
        &self,
        key: &OutboxKey,
        id: &str,
        delivery: Delivery,
    ) -> Result<Delivery, ChannelError> {
        self.store.outbox_sent(key, id).await?;
        Ok(delivery)
    }

    /// Claims the next attempt at `key` for this process: the number of the attempt, or `None`
    /// when that attempt was claimed before and never released (its answer is unknown).
    async fn claim_attempt(&self, key: &OutboxKey) -> Result<Option<u64>, ChannelError> {
        let id = key_name(key);
        let failed = self
            .store
            .get(FAILED_SCOPE, &id)
            .await?
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        let claimed = self
            .store
            .put(
                ATTEMPT_SCOPE,
                &format!("{id}#{failed}"),
                &serde_json::json!({ "door": self.door }),
                true,
            )
            .await?;
        Ok(claimed.then_some(failed))
    }

    /// Notes, just before an edit of `key`'s deferred answer is sent, that it may land; returns
    /// whether an earlier one may have landed (sent and its answer never came, or the process
    /// died while it was under way). Compare-and-set: a write lost to another delivery's is
    /// read again, so every delivery sees the notes before its own.
    async fn note_edit(&self, key: &OutboxKey) -> Result<EditNote, ChannelError> {
        let name = key_name(key);
        let by = format!("{:016x}", rand::random::<u64>());
        let value = serde_json::json!({ "door": self.door, "landed": true, "by": by });
        // Each lost race is another delivery's note written: this ends once they stop.
        loop {
            let current = self.store.get_versioned(EDIT_SCOPE, &name).await?;
            let landed_before = current
                .as_ref()
                .is_some_and(|v| v.value["landed"].as_bool() == Some(true));
            let version = current.map(|v| v.version);
            if self
                .store
                .put_if(EDIT_SCOPE, &name, version, &value)
                .await?
            {
                return Ok(EditNote { landed_before, by });
            }
        }
    }

    /// Discord said the edit `noted` was about was not done: the note goes back to what it was
    /// before, but only while it is still that edit's own. Another delivery's note written since
    /// stays (its edit may land); a write racing this one wins.
    async fn unnote_edit(&self, key: &OutboxKey, noted: &EditNote) -> Result<(), ChannelError> {
        let name = key_name(key);
        let Some(current) = self.store.get_versioned(EDIT_SCOPE, &name).await? else {
            return Ok(());
        };
        if current.value["by"].as_str() != Some(noted.by.as_str()) {
            return Ok(());
        }
        let value = serde_json::json!({ "door": self.door, "landed": noted.landed_before });
        self.store
            .put_if(EDIT_SCOPE, &name, Some(current.version), &value)
            .await?;
        Ok(())
    }

    /// The platform said attempt `n` was not done: the next one may go.
    async fn release_attempt(&self, key: &OutboxKey, n: u64) -> Result<(), ChannelError> {
        self.store
            .put(FAILED_SCOPE, &key_name(key), &(n + 1).into(), false)
            .await?;
        Ok(())
    }

    /// The retry task: sends what is pending for this door, waiting `Retry::first` after a
    /// failure (doubling, capped), or what the platform asked after a 429; wakes when a first
    /// send failed and every `Retry::idle`. Returns when `cancel` fires.
    pub async fn run(&self, cancel: CancellationToken) {
        let mut wait = self.retry.first;
        loop {
            let pause = match self.flush().await {
                Ok(()) => {
                    wait = self.retry.first;
                    self.retry.idle
                }
                Err(ChannelError::RateLimited { retry_after, .. }) => retry_after,
                Err(e) => {
                    tracing::warn!(door = %self.door, "outbox: {e}; next try in {wait:?}");
                    let now = wait;
                    wait = (wait * 2).min(self.retry.max);
                    now
                }
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// Sends every pending message once; the first failure stops the pass (the platform is
    /// likely down for the rest too).
    pub async fn flush(&self) -> Result<(), ChannelError> {
        const BATCH: usize = 32;
        loop {
            let pending = self
                .store
                .outbox_pending(&self.stage, &self.door, BATCH)
                .await?;
            let n = pending.len();
            for entry in pending {
                self.deliver(&entry.message).await?;
            }
            if n < BATCH {
                return Ok(());
            }
        }
    }
}

/// One delivery's note that its edit may land ([`Outbox::note_edit`]).
struct EditNote {
    /// Whether an earlier edit of the same answer may have landed.
    landed_before: bool,
    /// Marks the note as this delivery's.
    by: String,
}

fn key_name(key: &OutboxKey) -> String {
    format!("{}/{}", key.performance, key.seq)
}
