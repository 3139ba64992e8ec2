//! The `send` prop: how an actor posts to another chat than the thread's own, on the door's
//! platform, only to the chats the stage file allows (`send = [...]`). Each call goes through
//! the door's [`Outbox`] keyed like a reply, by the seq of its own `tool_call_started` event
//! (noted by the performance's [`CallSeqs`]), so a resend never makes a second message.

use crate::Body;
use crate::outbox::{Delivery, Outbox};
use crate::reply::CallSeqs;
use async_trait::async_trait;
use improv_kernel::{Prop, PropContext, PropError, ToolSpec};
use improv_store::OutboxKey;
use std::sync::Arc;

/// The prop's name, as actors call it.
pub const NAME: &str = "send";

/// The `send` prop of one performance.
pub struct SendProp {
    spec: ToolSpec,
    outbox: Arc<Outbox>,
    targets: Vec<String>,
    seqs: Arc<CallSeqs>,
}

impl SendProp {
    /// The prop for `targets` (the door's `send` list), keyed by `seqs`, the observer the
    /// performance carries for its `reply` prop.
    pub fn new(outbox: Arc<Outbox>, targets: Vec<String>, seqs: Arc<CallSeqs>) -> Self {
        SendProp {
            spec: ToolSpec {
                name: NAME.into(),
                description: "Post a message to another chat.".into(),
                parameters: serde_json::json!({
                    "type": "object",
                    "properties": {
                        "to": { "type": "string", "enum": targets },
                        "text": { "type": "string" },
                    },
                    "required": ["to", "text"],
                }),
            },
            outbox,
            targets,
            seqs,
        }
    }
}

#[async_trait]
impl Prop for SendProp {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(
        &self,
        arguments: serde_json::Value,
        context: &PropContext,
    ) -> Result<String, PropError> {
        let to = arguments.get("to").and_then(|t| t.as_str()).unwrap_or("");
        if !self.targets.iter().any(|t| t == to) {
            return Err(PropError::new(format!(
                "`to` must be one of the chats this door may post to: {}",
                self.targets.join(", ")
            )));
        }
        let text = arguments
            .get("text")
            .and_then(|t| t.as_str())
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| PropError::new("`text` must be the message, a non-empty string"))?;
        let seq = self.seqs.take().ok_or_else(|| {
            PropError::new("only the lead actor can send; tell the lead what to send")
        })?;
        let key = OutboxKey {
            performance: context.performance.to_string(),
            seq,
        };
        let body = Body {
            text: text.to_string(),
            reply_to: None,
            interaction: None,
        };
        match self.outbox.send(key, to, &body).await {
            Ok(Delivery::Sent(_) | Delivery::AlreadySent(_)) => Ok("sent".into()),
            Ok(Delivery::Unconfirmed) => {
                Ok("sent; the platform did not confirm it, so do not send it again".into())
            }
            Ok(Delivery::Refused(reason)) => Err(PropError::new(format!("not sent: {reason}"))),
            Err(e) => {
                tracing::warn!("send queued: {e}");
                Ok("queued: the platform is not answering; it will be sent when it is, do not send it again".into())
            }
        }
    }
}
