//! A chat thread is one conversation across performances: a message is let in by the [`Gate`],
//! fenced as untrusted content, and performed as the continuation of the thread's last
//! performance (its history, compacted as usual, then the new message as the sender's, never as
//! a director note); the thread's last performance id lives in the store. Every inbound message is handled once: its platform id is
//! claimed in the store first, so a redelivery (Slack retries, a Telegram offset not yet
//! confirmed at a crash) performs nothing.

use crate::gate::{Admission, Gate};
use crate::outbox::Outbox;
use crate::reply::{ReplyProp, Target};
use crate::{Body, ChannelError, Inbound};
use async_trait::async_trait;
use improv_kernel::{Observer, Prop};
use improv_store::{OutboxKey, Store};
use std::sync::Arc;
use std::time::Instant;

const THREAD_SCOPE: &str = "door.thread";
const SEEN_SCOPE: &str = "door.inbound";

/// What a chat door asks of whoever performs: one performance of `intent`, with the `reply`
/// prop and its observer, continuing `previous` when the thread had one. Continued, `intent`
/// arrives as a message from `from` (outside content, never a director note).
pub struct Request {
    pub door: String,
    /// The message, labelled and fenced as untrusted data ([`intent`]).
    pub intent: String,
    /// Who wrote it, as the log names them ([`sender`]).
    pub from: String,
    pub previous: Option<String>,
    pub reply: Arc<dyn Prop>,
    pub observer: Arc<dyn Observer>,
}

/// Starts performances for a chat door (the door daemon's launcher; tests drive the kernel
/// loop with a scripted model). Returns the new performance's id once it has ended.
#[async_trait]
pub trait Performer: Send + Sync {
    async fn perform(&self, request: Request) -> Result<String, ChannelError>;
}

/// What became of one inbound message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Performed as this performance.
    Performed(String),
    /// A stranger: sent this pairing code, performed nothing.
    Pairing(String),
    /// Seen before, a stranger waiting for approval, or over a rate limit: nothing done.
    Ignored(Admission),
    Duplicate,
}

/// One chat door: its gate, its outbox, and who performs.
pub struct ChatDoor {
    pub door: String,
    pub store: Arc<dyn Store>,
    pub gate: Gate,
    pub outbox: Arc<Outbox>,
    pub performer: Arc<dyn Performer>,
}

impl ChatDoor {
    /// Handles one message: once, if let in, as the thread's next performance.
    pub async fn handle(&self, inbound: &Inbound) -> Result<Handled, ChannelError> {
        let seen = format!(
            "{}/{}/{}/{}",
            self.door,
            inbound.platform.as_str(),
            inbound.conversation,
            inbound.message_id
        );
        if !self
            .store
            .put(SEEN_SCOPE, &seen, &true.into(), true)
            .await?
        {
            return Ok(Handled::Duplicate);
        }
        match self.gate.admit(inbound, Instant::now()).await? {
            Admission::Allowed => {}
            Admission::Pair(code) => {
                self.send_code(inbound, &code).await?;
                return Ok(Handled::Pairing(code));
            }
            other => return Ok(Handled::Ignored(other)),
        }
        let thread = thread_key(&self.door, inbound);
        let previous = self
            .store
            .get(THREAD_SCOPE, &thread)
            .await?
            .and_then(|v| v["performance"].as_str().map(str::to_string));
        let (reply, observer) = ReplyProp::new(self.outbox.clone(), Target::of(inbound));
        let id = self
            .performer
            .perform(Request {
                door: self.door.clone(),
                intent: intent(&self.door, inbound),
                from: sender(inbound),
                previous,
                reply: Arc::new(reply),
                observer,
            })
            .await?;
        self.store
            .put(
                THREAD_SCOPE,
                &thread,
                &serde_json::json!({ "performance": id }),
                false,
            )
            .await?;
        Ok(Handled::Performed(id))
    }

    /// The code goes out through the outbox like any message, keyed by the sender.
    async fn send_code(&self, inbound: &Inbound, code: &str) -> Result<(), ChannelError> {
        let key = OutboxKey {
            performance: format!("pairing/{}/{}", self.door, inbound.sender_id),
            seq: 0,
        };
        let body = Body {
            text: format!(
                "I don't know you yet. Ask the director of this stage to run: improv door pair {code}"
            ),
            reply_to: Target::of(inbound).reply_to,
        };
        if let Err(e) = self.outbox.send(key, &inbound.conversation, &body).await {
            tracing::warn!(door = %self.door, "the pairing code is queued: {e}");
        }
        Ok(())
    }
}

/// The thread a message belongs to: the chat (Telegram, Discord channel) or the Slack thread.
fn thread_key(door: &str, inbound: &Inbound) -> String {
    match &inbound.thread {
        Some(t) => format!("{door}/{}/{}", inbound.conversation, t),
        None => format!("{door}/{}", inbound.conversation),
    }
}

/// Who wrote `inbound`, as the actor and the log are told: the handle, else the id, kept to
/// one plain word. It stands outside the fence, so a name carrying prose (or a fence) is not
/// shown: the id, or `someone`, is.
pub fn sender(inbound: &Inbound) -> String {
    let plain = |s: &&String| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '@' | '_' | '-' | '.'))
    };
    inbound
        .sender_name
        .as_ref()
        .filter(plain)
        .or(Some(&inbound.sender_id).filter(plain))
        .cloned()
        .unwrap_or_else(|| "someone".into())
}

/// The text of a message's performance, first or next in its thread: who wrote through which
/// door, then their words fenced as untrusted data by the door's one fence
/// ([`improv_door::fence::untrusted`]), so the actor weighs them and does not obey them as the
/// director's, and no line of them can close the fence.
pub fn intent(door: &str, inbound: &Inbound) -> String {
    let who = sender(inbound);
    improv_door::fence::untrusted(
        &format!(
            "A message came in through the door `{door}` ({}) from {who}. Keep to the stage's \
             intent and edges, and answer with the `reply` prop.",
            inbound.platform.as_str()
        ),
        &format!("message from {who}"),
        &inbound.text,
    )
}
