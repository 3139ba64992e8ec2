//! Discord: the interactions endpoint coming in (an Ed25519 signature over timestamp and body
//! in `X-Signature-Ed25519` / `X-Signature-Timestamp`, PING answered with PONG, a slash
//! command's text as a message) and the REST "create message" going out, with a `nonce` and
//! `enforce_nonce` so that a resent message is the same message, not a second one. A command
//! that arrives while its door drains is answered "deferred" (type 5) and its reply later edits
//! that deferred answer through the interaction's token ([`Followup`]), which Discord honours for
//! [`FOLLOWUP_LIFETIME`].

use crate::slack::{fresh_timestamp, header};
use crate::telegram::short;
use crate::{Body, Channel, ChannelError, Inbound, Sender, SignatureError};
use async_trait::async_trait;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use http::HeaderMap;
use improv_store::OutboxKey;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::time::Duration;

const PLATFORM: &str = "discord";

/// The public REST API; a door's `api_base` replaces it.
pub const DEFAULT_API_BASE: &str = "https://discord.com/api/v10";

/// How far a request's timestamp may be from now: the same 5 minutes as Slack's.
pub const REPLAY_WINDOW_S: i64 = 300;

/// The application's public key (hex, from the developer portal) that interactions are signed
/// with.
#[derive(Clone, Debug)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    pub fn from_hex(hex_key: &str) -> Result<Self, ChannelError> {
        let bytes: [u8; 32] = hex::decode(hex_key.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                ChannelError::Setup(
                    "the Discord public key must be 64 hex digits (the application's \"Public Key\")"
                        .into(),
                )
            })?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|e| ChannelError::Setup(format!("the Discord public key is not valid: {e}")))
    }
}

/// Checks an interaction request: the timestamp is within [`REPLAY_WINDOW_S`] of `now_s` and the
/// Ed25519 signature covers timestamp + body under `key`.
pub fn verify(
    key: &PublicKey,
    headers: &HeaderMap,
    body: &[u8],
    now_s: i64,
) -> Result<(), SignatureError> {
    const TS: &str = "X-Signature-Timestamp";
    const SIG: &str = "X-Signature-Ed25519";
    let ts = fresh_timestamp(headers, TS, now_s, REPLAY_WINDOW_S)?;
    let signature: [u8; 64] = hex::decode(header(headers, SIG)?)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or(SignatureError::Malformed(SIG))?;
    let mut message = ts.as_bytes().to_vec();
    message.extend_from_slice(body);
    key.0
        .verify(&message, &Signature::from_bytes(&signature))
        .map_err(|_| SignatureError::Mismatch)
}

/// How long Discord accepts answers through an interaction's token.
pub const FOLLOWUP_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// What answers one interaction later: its application and token (the token is the
/// credential of `/webhooks/{application_id}/{token}`), and when it arrived (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Followup {
    pub application_id: String,
    pub token: String,
    pub at: u64,
    /// Set by the outbox on a resend after an edit whose answer was lost: that edit may have
    /// landed, so a token that no longer works does not send the reply to the channel (a
    /// second answer); the send is refused instead. Never stored.
    #[serde(skip)]
    pub may_have_landed: bool,
}

impl Followup {
    /// Whether Discord still takes answers through it at `now_s` (Unix seconds).
    pub fn usable_at(&self, now_s: u64) -> bool {
        now_s.saturating_sub(self.at) < FOLLOWUP_LIFETIME.as_secs()
    }
}

/// Whether a refused edit through an interaction's token means the token or its deferred
/// answer is gone (401: the token expired; 404: the message or webhook is unknown), as
/// [`ChannelError::Refused`] words the status.
pub(crate) fn token_gone(refused: &str) -> bool {
    refused.starts_with("HTTP 401") || refused.starts_with("HTTP 404")
}

/// What an interaction asks of us, once its signature holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// Discord checking the endpoint: answer [`pong`].
    Ping,
    /// A slash command whose options carry the text: answer [`acknowledge`], or [`deferred`]
    /// with its [`Followup`] kept (`None` when the interaction carried no token).
    Message(Inbound, Option<Box<Followup>>),
    /// Anything else (components, autocomplete): acknowledged, ignored.
    Ignored,
}

#[derive(Deserialize)]
struct Interaction {
    id: String,
    #[serde(rename = "type")]
    kind: u8,
    #[serde(default)]
    channel_id: Option<String>,
    #[serde(default)]
    member: Option<Member>,
    #[serde(default)]
    user: Option<User>,
    #[serde(default)]
    data: Option<CommandData>,
    #[serde(default)]
    application_id: Option<String>,
    #[serde(default)]
    token: Option<String>,
}

#[derive(Deserialize)]
struct Member {
    user: User,
}

#[derive(Deserialize)]
struct User {
    id: String,
    #[serde(default)]
    username: Option<String>,
}

#[derive(Deserialize)]
struct CommandData {
    #[serde(default)]
    options: Vec<CommandOption>,
}

#[derive(Deserialize)]
struct CommandOption {
    #[serde(default)]
    value: serde_json::Value,
}

/// Reads a signed interaction. A command (type 2) in a channel becomes a message whose text is
/// its string options joined; the sender is the member's user in a guild, the user in a DM.
/// `now_s` (Unix seconds) dates its [`Followup`].
pub fn parse(body: &[u8], now_s: u64) -> Result<Incoming, ChannelError> {
    let i: Interaction = serde_json::from_slice(body).map_err(|e| {
        ChannelError::Setup(format!("a Discord interaction that does not parse: {e}"))
    })?;
    const PING: u8 = 1;
    const APPLICATION_COMMAND: u8 = 2;
    match i.kind {
        PING => Ok(Incoming::Ping),
        APPLICATION_COMMAND => {
            let (Some(channel), Some(user)) = (i.channel_id, i.member.map(|m| m.user).or(i.user))
            else {
                return Ok(Incoming::Ignored);
            };
            let text = i
                .data
                .into_iter()
                .flat_map(|d| d.options)
                .filter_map(|o| o.value.as_str().map(str::to_string))
                .collect::<Vec<_>>()
                .join(" ");
            let followup = match (i.application_id, i.token) {
                (Some(application_id), Some(token)) => Some(Box::new(Followup {
                    application_id,
                    token,
                    at: now_s,
                    may_have_landed: false,
                })),
                _ => None,
            };
            let inbound = Inbound {
                platform: Channel::Discord,
                conversation: channel,
                thread: None,
                message_id: i.id,
                sender_id: user.id,
                sender_name: user.username,
                text,
            };
            Ok(Incoming::Message(inbound, followup))
        }
        _ => Ok(Incoming::Ignored),
    }
}

/// The answer to a PING.
pub fn pong() -> serde_json::Value {
    serde_json::json!({ "type": 1 })
}

/// The immediate answer to a command: a short message only its sender sees (the reply comes
/// later, through the outbox).
pub fn acknowledge(text: &str) -> serde_json::Value {
    const CHANNEL_MESSAGE_WITH_SOURCE: u8 = 4;
    const EPHEMERAL: u32 = 1 << 6;
    serde_json::json!({
        "type": CHANNEL_MESSAGE_WITH_SOURCE,
        "data": { "content": text, "flags": EPHEMERAL },
    })
}

/// The answer to a command taken while its door drains: "thinking", to be edited by its reply
/// through the token (DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE).
pub fn deferred() -> serde_json::Value {
    const DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE: u8 = 5;
    serde_json::json!({ "type": DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE })
}

/// The nonce of an outbox entry: at most 25 characters (Discord's limit), the same for every
/// attempt at one (performance, seq).
pub fn nonce(key: &OutboxKey) -> String {
    let digest = Sha256::digest(format!("{}/{}", key.performance, key.seq).as_bytes());
    hex::encode(digest)[..25].to_string()
}

/// A bot's REST client.
pub struct Discord {
    http: reqwest::Client,
    /// The time limit of a send (and of a long poll beyond its own wait).
    timeout: Duration,
    base: String,
    token: String,
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

#[derive(Deserialize)]
struct RateLimit {
    retry_after: f64,
}

impl Discord {
    pub fn new(token: &str, api_base: Option<&str>) -> Result<Self, ChannelError> {
        Ok(Discord {
            http: crate::http_client()?,
            timeout: crate::DEFAULT_TIMEOUT,
            base: api_base
                .unwrap_or(DEFAULT_API_BASE)
                .trim_end_matches('/')
                .to_string(),
            token: token.to_string(),
        })
    }

    /// Sets the time limit of each call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Creates a message in `channel_id` with `nonce` enforced: if this bot created a message
    /// with the same nonce in the last few minutes, Discord returns that one instead of
    /// creating another. Returns the message id.
    pub async fn create_message(
        &self,
        channel_id: &str,
        text: &str,
        reply_to: Option<&str>,
        nonce: &str,
    ) -> Result<String, ChannelError> {
        let mut body = serde_json::json!({
            "content": text,
            "nonce": nonce,
            "enforce_nonce": true,
        });
        if let Some(id) = reply_to {
            body["message_reference"] =
                serde_json::json!({ "message_id": id, "fail_if_not_exists": false });
        }
        let request = self
            .http
            .post(format!("{}/channels/{channel_id}/messages", self.base))
            .header("Authorization", format!("Bot {}", self.token))
            .json(&body);
        self.created(request).await
    }

    /// Edits the deferred answer of an interaction to `text` (`PATCH .../messages/@original`):
    /// the same edit made twice leaves one message, so a resend is harmless. The token is the
    /// credential; no bot token is sent.
    pub async fn edit_original(
        &self,
        followup: &Followup,
        text: &str,
    ) -> Result<String, ChannelError> {
        let url = format!(
            "{}/webhooks/{}/{}/messages/@original",
            self.base, followup.application_id, followup.token
        );
        let request = self
            .http
            .patch(url)
            .json(&serde_json::json!({ "content": text }));
        self.created(request).await
    }

    /// Sends `request` with the time limit; the id of the message it made or edited.
    async fn created(&self, request: reqwest::RequestBuilder) -> Result<String, ChannelError> {
        let response = request
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| ChannelError::from_reqwest(PLATFORM, e.without_url()))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| ChannelError::from_reqwest(PLATFORM, e.without_url()))?;
        if status == 429 {
            let wait = serde_json::from_str::<RateLimit>(&text).map_or(1.0, |r| r.retry_after);
            return Err(ChannelError::RateLimited {
                platform: PLATFORM,
                retry_after: Duration::from_secs_f64(wait.clamp(0.0, 3600.0)),
            });
        }
        if !(200..300).contains(&status) {
            return Err(ChannelError::from_status(PLATFORM, status, short(&text)));
        }
        serde_json::from_str::<Created>(&text)
            .map(|c| c.id)
            .map_err(|e| ChannelError::Unknown {
                platform: PLATFORM,
                message: format!("a created message that does not parse: {e}"),
            })
    }
}

#[async_trait]
impl Sender for Discord {
    fn platform(&self) -> Channel {
        Channel::Discord
    }

    async fn send(
        &self,
        conversation: &str,
        body: &Body,
        key: &OutboxKey,
    ) -> Result<String, ChannelError> {
        if let Some(followup) = &body.interaction {
            match self.edit_original(followup, &body.text).await {
                // The token expired (Discord takes answers through it for 15 minutes) or the
                // deferred answer is gone: the reply goes to the channel instead, with the
                // message's nonce, rather than being refused and lost.
                Err(ChannelError::Refused { message, .. })
                    if token_gone(&message) && !followup.may_have_landed =>
                {
                    tracing::warn!(
                        conversation,
                        "a Discord interaction's deferred answer no longer takes edits ({message}): the reply goes to the channel"
                    );
                }
                edited => return edited,
            }
        }
        self.create_message(
            conversation,
            &body.text,
            body.reply_to.as_deref(),
            &nonce(key),
        )
        .await
    }
}
