//! The `reply` prop: how an actor answers the person who wrote, in their conversation. Each
//! call goes through the [`Outbox`], keyed by the seq of the call's own `tool_call_started`
//! event, which [`CallSeqs`] (an observer of the same performance) notes as the loop emits it:
//! a prop is not told its event's seq, and this keeps the kernel unchanged. `reply` is
//! `Access::Write`, so the loop runs it alone, right after its own event.

use crate::discord::Followup;
use crate::outbox::{Delivery, Outbox};
use crate::{Body, Channel, Inbound};
use async_trait::async_trait;
use improv_kernel::{
    Event, EventKind, ObserveError, Observer, Prop, PropContext, PropError, ToolSpec,
};
use improv_store::OutboxKey;
use std::sync::{Arc, Mutex};

/// The prop's name, as actors call it.
pub const NAME: &str = "reply";

/// Notes the seq of each `tool_call_started` of `reply` or `send` in the performance it
/// observes.
#[derive(Default)]
pub struct CallSeqs {
    last: Mutex<Option<u64>>,
}

impl CallSeqs {
    pub(crate) fn take(&self) -> Option<u64> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Observer for CallSeqs {
    fn observe(&self, event: &Event) -> Result<(), ObserveError> {
        // Both are writes: each runs alone, right after its own event.
        if let EventKind::ToolCallStarted { name, .. } = &event.kind
            && (name == NAME || name == crate::send::NAME)
        {
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(event.seq);
        }
        Ok(())
    }
}

/// Where replies of one performance go: the conversation of the message that started it.
#[derive(Clone, Debug)]
pub struct Target {
    pub conversation: String,
    /// What each reply refers to (see [`Target::of`]).
    pub reply_to: Option<String>,
    /// Discord: the deferred answer the first answer to the message edits (a command taken
    /// while the door drained); later ones are new messages in the channel.
    pub interaction: Deferred,
}

/// Discord: the deferred ("thinking") answer of a command taken while its door drained. It is
/// shared by everything that may answer the message (its performance's replies, the door's
/// notices) and taken by the first, so it is edited once, and whoever comes last can tell it
/// was left unanswered ([`Deferred::take`] still gives it).
#[derive(Clone, Debug, Default)]
pub struct Deferred(Arc<Mutex<Option<Followup>>>);

impl Deferred {
    pub fn new(followup: Option<Followup>) -> Self {
        Deferred(Arc::new(Mutex::new(followup)))
    }

    /// The interaction, for the answer that will edit it; `None` once an answer took it (or
    /// when nothing was deferred).
    pub fn take(&self) -> Option<Followup> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Gives back what an answer took and could not deliver (refused for good), so a later
    /// answer, or the door's closing notice, can still edit it; kept only while none was taken
    /// since.
    pub fn put_back(&self, followup: Option<Followup>) {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_none() {
            *held = followup;
        }
    }
}

impl Target {
    /// Replies to `inbound`: on Telegram a reply to the message, on Slack in its thread, on
    /// Discord (where the message was a command, not a message) plainly in the channel.
    pub fn of(inbound: &Inbound) -> Self {
        let reply_to = match inbound.platform {
            Channel::Telegram | Channel::Email => Some(inbound.message_id.clone()),
            Channel::Slack => inbound.thread.clone(),
            Channel::Discord => None,
        };
        Target {
            conversation: inbound.conversation.clone(),
            reply_to,
            interaction: Deferred::default(),
        }
    }
}

/// The `reply` prop of one performance.
pub struct ReplyProp {
    spec: ToolSpec,
    outbox: Arc<Outbox>,
    target: Target,
    seqs: Arc<CallSeqs>,
}

impl ReplyProp {
    /// The prop, and the observer the performance must carry for it.
    pub fn new(outbox: Arc<Outbox>, target: Target) -> (Self, Arc<CallSeqs>) {
        let seqs = Arc::new(CallSeqs::default());
        let prop = ReplyProp {
            spec: ToolSpec {
                name: NAME.into(),
                description: "Answer the person who wrote, in their conversation.".into(),
                parameters: serde_json::json!({
                    "type": "object",
                    "properties": { "text": { "type": "string" } },
                    "required": ["text"],
                }),
            },
            outbox,
            target,
            seqs: seqs.clone(),
        };
        (prop, seqs)
    }
}

#[async_trait]
impl Prop for ReplyProp {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(
        &self,
        arguments: serde_json::Value,
        context: &PropContext,
    ) -> Result<String, PropError> {
        let text = arguments
            .get("text")
            .and_then(|t| t.as_str())
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| PropError::new("`text` must be the reply, a non-empty string"))?;
        let seq = self.seqs.take().ok_or_else(|| {
            PropError::new("only the lead actor can reply; tell the lead what to say")
        })?;
        let key = OutboxKey {
            performance: context.performance.to_string(),
            seq,
        };
        let body = Body {
            text: text.to_string(),
            reply_to: self.target.reply_to.clone(),
            interaction: self.target.interaction.take(),
        };
        match self
            .outbox
            .send(key, &self.target.conversation, &body)
            .await
        {
            Ok(Delivery::Sent(_) | Delivery::AlreadySent(_)) => Ok("sent".into()),
            Ok(Delivery::Unconfirmed) => {
                Ok("sent; the platform did not confirm it, so do not send it again".into())
            }
            Ok(Delivery::Refused(reason)) => {
                // Nothing answered the deferred interaction: it stays for whoever answers next.
                self.target.interaction.put_back(body.interaction);
                Err(PropError::new(format!("not sent: {reason}")))
            }
            Err(e) => {
                tracing::warn!("reply queued: {e}");
                Ok("queued: the platform is not answering; it will be sent when it is, do not send it again".into())
            }
        }
    }
}
