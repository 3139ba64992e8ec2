//! Chat channels for the stage door: messages from Telegram, Slack and Discord start
//! performances, and the actors' answers go back through an outbox that never sends one twice.
//!
//! Reading order: [`telegram`], [`slack`] and [`discord`] speak each platform's real wire format
//! on a plain HTTP client (each with an `api_base`, so tests point them at a local fake);
//! [`outbox`] puts every outbound message in the store before sending it and records the
//! platform's id after; [`reply`] is the actors' prop that answers through it; [`gate`] decides
//! who may come in (allow lists, pairing codes, rate limits); [`conversation`] turns a chat
//! thread into one conversation across performances.

pub mod conversation;
pub mod discord;
pub mod door;
pub mod email;
mod error;
pub mod gate;
pub mod listen;
pub mod outbox;
pub mod reply;
pub mod send;
pub mod slack;
pub mod telegram;

pub use error::{ChannelError, SignatureError};

use serde::{Deserialize, Serialize};

/// The chat platform of a door: the stage file's word for it (`channel = "telegram"`).
pub use improv_stage::door::Channel;

/// Whether `channel` de-duplicates a resent message by a key we choose. Only Discord does
/// (`nonce` with `enforce_nonce`); on the others the outbox sends at most once.
pub fn idempotent(channel: Channel) -> bool {
    matches!(channel, Channel::Discord)
}

/// A message that arrived from a chat: who wrote what, where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbound {
    pub platform: Channel,
    /// The conversation: a Telegram chat id, a Slack `channel` (with its thread, see
    /// [`Inbound::thread`]), a Discord channel id.
    pub conversation: String,
    /// The thread inside the conversation, where the platform has them (Slack `thread_ts`).
    pub thread: Option<String>,
    /// The platform's id of this message: what a reply refers to.
    pub message_id: String,
    /// The sender's stable id (Telegram user id, Slack user id, Discord user id).
    pub sender_id: String,
    /// The sender's handle, where there is one (Telegram `@username`).
    pub sender_name: Option<String>,
    pub text: String,
}

/// What a reply carries in the outbox (`OutboxMessage::body`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    pub text: String,
    /// The platform's id of the message answered (Telegram `reply_to_message_id`, Discord
    /// `message_reference`); for Slack the thread's `ts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Discord: the deferred answer this message replaces (its interaction's token), instead
    /// of a new message in the channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interaction: Option<discord::Followup>,
}

/// Sends one message on a platform; the outbox calls it.
#[async_trait::async_trait]
pub trait Sender: Send + Sync {
    fn platform(&self) -> Channel;

    /// Sends `body` to `conversation`; returns the platform's id of the message. `key` is the
    /// message's idempotency key, which platforms that offer one receive (Discord's nonce).
    async fn send(
        &self,
        conversation: &str,
        body: &Body,
        key: &improv_store::OutboxKey,
    ) -> Result<String, ChannelError>;
}

/// How long a platform call may take unless a client is told otherwise (`with_timeout`).
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The HTTP client every platform client uses: rustls; each request sets its own time limit.
pub(crate) fn http_client() -> Result<reqwest::Client, ChannelError> {
    improv_models::client_builder()
        .map_err(|e| ChannelError::Setup(e.to_string()))?
        .connect_timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|e| ChannelError::Setup(format!("cannot build the HTTP client: {e}")))
}
