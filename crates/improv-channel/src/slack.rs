//! Slack: the Events API coming in (request signing with `X-Slack-Signature` v0 and
//! `X-Slack-Request-Timestamp` inside a replay window, the `url_verification` challenge,
//! `event_callback` messages) and `chat.postMessage` with `thread_ts` going out.

use crate::telegram::short;
use crate::{Body, Channel, ChannelError, Inbound, Sender, SignatureError};
use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use http::HeaderMap;
use improv_store::OutboxKey;
use serde::Deserialize;
use sha2::Sha256;
use std::time::Duration;

const PLATFORM: &str = "slack";

/// The public Web API; a door's `api_base` replaces it.
pub const DEFAULT_API_BASE: &str = "https://slack.com/api";

/// How far a request's timestamp may be from now, either way: Slack's recommended 5 minutes.
pub const REPLAY_WINDOW_S: i64 = 300;

/// Checks a request from Slack: the timestamp is within [`REPLAY_WINDOW_S`] of `now_s` (Unix
/// seconds) and `X-Slack-Signature` is `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}` under
/// the app's signing secret, compared in constant time.
pub fn verify(
    signing_secret: &[u8],
    headers: &HeaderMap,
    body: &[u8],
    now_s: i64,
) -> Result<(), SignatureError> {
    const TS: &str = "X-Slack-Request-Timestamp";
    const SIG: &str = "X-Slack-Signature";
    let ts = fresh_timestamp(headers, TS, now_s, REPLAY_WINDOW_S)?;
    let signature = header(headers, SIG)?
        .strip_prefix("v0=")
        .and_then(|h| hex::decode(h).ok())
        .ok_or(SignatureError::Malformed(SIG))?;
    let mut mac = mac(signing_secret);
    mac.update(format!("v0:{ts}:").as_bytes());
    mac.update(body);
    mac.verify_slice(&signature)
        .map_err(|_| SignatureError::Mismatch)
}

/// The `X-Slack-Signature` value for `body` sent at `timestamp`: what Slack computes (tests and
/// fakes sign with it).
pub fn sign(signing_secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = mac(signing_secret);
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap_or_else(|_| unreachable!())
}

/// The timestamp header `name`, refused unless it is within `window_s` of `now_s` either way.
/// Saturating: the timestamp is the sender's, read before the signature is checked.
pub(crate) fn fresh_timestamp<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
    now_s: i64,
    window_s: i64,
) -> Result<&'a str, SignatureError> {
    let ts = header(headers, name)?;
    let at: i64 = ts.parse().map_err(|_| SignatureError::Malformed(name))?;
    let age_s = now_s.saturating_sub(at);
    if age_s.unsigned_abs() > window_s.unsigned_abs() {
        return Err(SignatureError::Stale { age_s, window_s });
    }
    Ok(ts)
}

pub(crate) fn header<'a>(
    headers: &'a HeaderMap,
    name: &'static str,
) -> Result<&'a str, SignatureError> {
    headers
        .get(name)
        .ok_or(SignatureError::Missing(name))?
        .to_str()
        .map_err(|_| SignatureError::Malformed(name))
}

/// What an Events API request asks of us, once its signature holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// Answer with this challenge (`url_verification`, when the app's URL is set up).
    Challenge(String),
    /// A message to act on; `event_id` is Slack's id for the delivery, the same on its retries.
    Message { event_id: String, inbound: Inbound },
    /// Anything else (bot messages, edits, other events): acknowledged, ignored.
    Ignored,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Envelope {
    UrlVerification {
        challenge: String,
    },
    EventCallback {
        event_id: String,
        event: Event,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct Event {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    subtype: Option<String>,
    #[serde(default)]
    bot_id: Option<String>,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    text: String,
    #[serde(default)]
    ts: String,
    #[serde(default)]
    thread_ts: Option<String>,
}

/// Reads a signed Events API body. Only human messages (`message` or `app_mention` without a
/// subtype or bot id) become [`Incoming::Message`], so the bot never answers itself.
pub fn parse(body: &[u8]) -> Result<Incoming, ChannelError> {
    let envelope: Envelope = serde_json::from_slice(body)
        .map_err(|e| ChannelError::Setup(format!("a Slack event that does not parse: {e}")))?;
    Ok(match envelope {
        Envelope::UrlVerification { challenge } => Incoming::Challenge(challenge),
        Envelope::EventCallback { event_id, event } => {
            let human = matches!(event.kind.as_str(), "message" | "app_mention")
                && event.subtype.is_none()
                && event.bot_id.is_none();
            match event.user {
                Some(user) if human => Incoming::Message {
                    event_id,
                    inbound: Inbound {
                        platform: Channel::Slack,
                        conversation: event.channel,
                        // A message outside a thread starts one: replies go under it.
                        thread: Some(event.thread_ts.unwrap_or_else(|| event.ts.clone())),
                        message_id: event.ts,
                        sender_id: user,
                        sender_name: None,
                        text: event.text,
                    },
                },
                _ => Incoming::Ignored,
            }
        }
        Envelope::Other => Incoming::Ignored,
    })
}

/// A bot's Web API client.
pub struct Slack {
    http: reqwest::Client,
    /// The time limit of a send (and of a long poll beyond its own wait).
    timeout: Duration,
    base: String,
    token: String,
}

#[derive(Deserialize)]
struct Posted {
    ok: bool,
    #[serde(default)]
    ts: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

impl Slack {
    pub fn new(token: &str, api_base: Option<&str>) -> Result<Self, ChannelError> {
        Ok(Slack {
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

    /// `chat.postMessage` to `channel`, in the thread `thread_ts` when given; returns the
    /// message's `ts`, Slack's id for it.
    pub async fn post_message(
        &self,
        channel: &str,
        text: &str,
        thread_ts: Option<&str>,
    ) -> Result<String, ChannelError> {
        let mut body = serde_json::json!({ "channel": channel, "text": text });
        if let Some(ts) = thread_ts {
            body["thread_ts"] = ts.into();
        }
        let response = self
            .http
            .post(format!("{}/chat.postMessage", self.base))
            .bearer_auth(&self.token)
            .timeout(self.timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| ChannelError::from_reqwest(PLATFORM, e.without_url()))?;
        let status = response.status().as_u16();
        if status == 429 {
            let retry_after = response
                .headers()
                .get("Retry-After")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            return Err(ChannelError::RateLimited {
                platform: PLATFORM,
                retry_after: Duration::from_secs(retry_after),
            });
        }
        let text = response
            .text()
            .await
            .map_err(|e| ChannelError::from_reqwest(PLATFORM, e.without_url()))?;
        match serde_json::from_str::<Posted>(&text) {
            Ok(Posted {
                ok: true,
                ts: Some(ts),
                ..
            }) => Ok(ts),
            Ok(Posted { error, .. }) if status < 500 => Err(ChannelError::Refused {
                platform: PLATFORM,
                message: error.unwrap_or_else(|| "no error given".into()),
            }),
            _ => Err(ChannelError::from_status(PLATFORM, status, short(&text))),
        }
    }
}

#[async_trait]
impl Sender for Slack {
    fn platform(&self) -> Channel {
        Channel::Slack
    }

    async fn send(
        &self,
        conversation: &str,
        body: &Body,
        _key: &OutboxKey,
    ) -> Result<String, ChannelError> {
        self.post_message(conversation, &body.text, body.reply_to.as_deref())
            .await
    }
}
