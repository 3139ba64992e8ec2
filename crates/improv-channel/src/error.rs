//! What can go wrong talking to a chat platform, sorted by what the outbox may do next.

use std::time::Duration;

/// A failure of a platform call. The outbox retries [`ChannelError::NotSent`] and
/// [`ChannelError::RateLimited`], never resends an [`ChannelError::Unknown`] on a platform
/// without an idempotency key, and gives up on [`ChannelError::Refused`].
#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    /// The platform said the request did not succeed and may succeed later (5xx), or the
    /// connection failed before the request was sent.
    #[error("{platform} did not take the request: {message}; it will be retried")]
    NotSent {
        platform: &'static str,
        message: String,
    },
    /// The platform asked us to wait (HTTP 429, Telegram `retry_after`, Slack `Retry-After`).
    #[error("{platform} is rate limiting: retry after {retry_after:?}")]
    RateLimited {
        platform: &'static str,
        retry_after: Duration,
    },
    /// The request was sent but no answer came back (a timeout, a dropped connection): the
    /// platform may or may not have acted on it.
    #[error("{platform} gave no answer ({message}); the message may or may not have arrived")]
    Unknown {
        platform: &'static str,
        message: String,
    },
    /// The platform refused the request (a bad token, an unknown chat): retrying cannot help.
    #[error("{platform} refused the request: {message}; check the door's token and the chat id")]
    Refused {
        platform: &'static str,
        message: String,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] improv_store::StoreError),
    /// The channel is set up wrongly (a key that does not parse, a missing token).
    #[error("{0}")]
    Setup(String),
}

impl ChannelError {
    /// Sorts a reqwest failure: a connection that never opened sent nothing; anything later
    /// (a timeout while waiting for the answer, a reset) may have been acted on.
    pub(crate) fn from_reqwest(platform: &'static str, e: reqwest::Error) -> Self {
        if e.is_connect() || e.is_builder() {
            ChannelError::NotSent {
                platform,
                message: e.to_string(),
            }
        } else {
            ChannelError::Unknown {
                platform,
                message: e.to_string(),
            }
        }
    }

    /// Sorts an HTTP status that is not a success.
    pub(crate) fn from_status(platform: &'static str, status: u16, message: String) -> Self {
        if status >= 500 {
            ChannelError::NotSent { platform, message }
        } else {
            ChannelError::Refused {
                platform,
                message: format!("HTTP {status}: {message}"),
            }
        }
    }
}

/// Why an inbound request's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the request has no {0} header")]
    Missing(&'static str),
    #[error("the {0} header is malformed")]
    Malformed(&'static str),
    #[error(
        "the request's timestamp is {age_s}s away from now, outside the {window_s}s window (a replay?)"
    )]
    Stale { age_s: i64, window_s: i64 },
    #[error("the signature does not match the body")]
    Mismatch,
}
