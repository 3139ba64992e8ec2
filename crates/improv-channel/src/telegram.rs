//! The Telegram Bot API: `getUpdates` long polling with an offset (each update is confirmed by
//! asking for the ones after it) and `sendMessage` with `reply_to_message_id`. A 429 carries
//! `parameters.retry_after`, which the caller honours.

use crate::{Body, Channel, ChannelError, Inbound, Sender};
use async_trait::async_trait;
use improv_store::OutboxKey;
use serde::Deserialize;
use std::time::Duration;

const PLATFORM: &str = "telegram";

/// The public Bot API; a door's `api_base` replaces it (tests, a local Bot API server).
pub const DEFAULT_API_BASE: &str = "https://api.telegram.org";

/// A bot's client.
pub struct Telegram {
    http: reqwest::Client,
    /// The time limit of a send (and of a long poll beyond its own wait).
    timeout: Duration,
    /// `{api_base}/bot{token}`: the token is part of the URL, so errors never show it.
    base: String,
}

/// The Bot API's envelope: `{"ok": true, "result": …}` or `{"ok": false, "error_code": …}`.
#[derive(Deserialize)]
struct Envelope<T> {
    ok: bool,
    result: Option<T>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    parameters: Option<ResponseParameters>,
}

#[derive(Deserialize)]
struct ResponseParameters {
    retry_after: Option<u64>,
}

/// One update from `getUpdates`.
#[derive(Clone, Debug, Deserialize)]
pub struct Update {
    pub update_id: i64,
    #[serde(default)]
    pub message: Option<Message>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Message {
    pub message_id: i64,
    pub chat: Chat,
    #[serde(default)]
    pub from: Option<User>,
    #[serde(default)]
    pub text: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Chat {
    pub id: i64,
}

#[derive(Clone, Debug, Deserialize)]
pub struct User {
    pub id: i64,
    #[serde(default)]
    pub username: Option<String>,
}

impl Update {
    /// The text message this update carries, as an [`Inbound`]; `None` for anything else
    /// (edits, joins, stickers), which a door ignores.
    pub fn inbound(&self) -> Option<Inbound> {
        let m = self.message.as_ref()?;
        let from = m.from.as_ref()?;
        Some(Inbound {
            platform: Channel::Telegram,
            conversation: m.chat.id.to_string(),
            thread: None,
            message_id: m.message_id.to_string(),
            sender_id: from.id.to_string(),
            sender_name: from.username.as_ref().map(|u| format!("@{u}")),
            text: m.text.clone()?,
        })
    }
}

#[derive(Deserialize)]
struct Sent {
    message_id: i64,
}

impl Telegram {
    /// A client for the bot with `token`, at `api_base` (`None`: the public API).
    pub fn new(token: &str, api_base: Option<&str>) -> Result<Self, ChannelError> {
        let base = api_base.unwrap_or(DEFAULT_API_BASE).trim_end_matches('/');
        Ok(Telegram {
            http: crate::http_client()?,
            timeout: crate::DEFAULT_TIMEOUT,
            base: format!("{base}/bot{token}"),
        })
    }

    /// Updates after `offset` (the last seen `update_id` + 1), waiting up to `poll` for one.
    /// Asking with an offset confirms every update before it to Telegram.
    pub async fn get_updates(
        &self,
        offset: i64,
        poll: Duration,
    ) -> Result<Vec<Update>, ChannelError> {
        let body = serde_json::json!({
            "offset": offset,
            "timeout": poll.as_secs(),
            "allowed_updates": ["message"],
        });
        self.call("getUpdates", &body, poll + self.timeout).await
    }

    /// Sets the time limit of each call (a long poll gets its wait on top).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `text` to `chat_id`, as a reply to `reply_to` when given; returns the message id.
    pub async fn send_message(
        &self,
        chat_id: &str,
        text: &str,
        reply_to: Option<&str>,
    ) -> Result<String, ChannelError> {
        let mut body = serde_json::json!({ "chat_id": chat_id, "text": text });
        if let Some(id) = reply_to.and_then(|r| r.parse::<i64>().ok()) {
            body["reply_to_message_id"] = id.into();
            // A reply to a message deleted meanwhile is still sent, as a plain message.
            body["allow_sending_without_reply"] = true.into();
        }
        let sent: Sent = self.call("sendMessage", &body, self.timeout).await?;
        Ok(sent.message_id.to_string())
    }

    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        method: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<T, ChannelError> {
        let response = self
            .http
            .post(format!("{}/{method}", self.base))
            .timeout(timeout)
            .json(body)
            .send()
            .await
            .map_err(|e| ChannelError::from_reqwest(PLATFORM, e.without_url()))?;
        let status = response.status().as_u16();
        let text = response
            .text()
            .await
            .map_err(|e| ChannelError::from_reqwest(PLATFORM, e.without_url()))?;
        let envelope: Envelope<T> = match serde_json::from_str(&text) {
            Ok(e) => e,
            Err(_) if status >= 500 => {
                return Err(ChannelError::from_status(PLATFORM, status, short(&text)));
            }
            Err(e) => {
                return Err(ChannelError::Unknown {
                    platform: PLATFORM,
                    message: format!("{method}: HTTP {status}, an answer that does not parse: {e}"),
                });
            }
        };
        match envelope {
            Envelope {
                ok: true,
                result: Some(result),
                ..
            } => Ok(result),
            Envelope {
                parameters:
                    Some(ResponseParameters {
                        retry_after: Some(s),
                    }),
                ..
            } => Err(ChannelError::RateLimited {
                platform: PLATFORM,
                retry_after: Duration::from_secs(s),
            }),
            e => Err(ChannelError::from_status(
                PLATFORM,
                status,
                format!("{method}: {}", e.description),
            )),
        }
    }
}

/// At most 200 characters of a body, for an error message.
pub(crate) fn short(text: &str) -> String {
    text.chars().take(200).collect()
}

#[async_trait]
impl Sender for Telegram {
    fn platform(&self) -> Channel {
        Channel::Telegram
    }

    async fn send(
        &self,
        conversation: &str,
        body: &Body,
        _key: &OutboxKey,
    ) -> Result<String, ChannelError> {
        self.send_message(conversation, &body.text, body.reply_to.as_deref())
            .await
    }
}
