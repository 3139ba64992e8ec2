//! The one HTTP client every provider shares, and the retry loop around sending a request:
//! exponential backoff with full jitter on 429, 5xx and connect errors, honouring
//! `Retry-After`, and errors that say what to do.

use bytes::Bytes;
use improv_kernel::{ModelError, ModelUpdate};
use reqwest::header::HeaderMap;
use reqwest::{Client, Response, StatusCode};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// The shared client: one connection pool per process, `TCP_NODELAY`, a connect timeout and an
/// idle-read timeout long enough for a model that thinks before it speaks.
pub(crate) fn client() -> Result<&'static Client, ModelError> {
    static CLIENT: OnceLock<Result<Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            Client::builder()
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_secs(10))
                .read_timeout(Duration::from_secs(600))
                .pool_idle_timeout(Duration::from_secs(90))
                .tcp_keepalive(Duration::from_secs(30))
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| ModelError::Connect(format!("cannot build the HTTP client: {e}")))
}

/// How a provider retries transient failures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (so `max_retries + 1` attempts in all).
    pub max_retries: u32,
    /// The backoff ceiling of the first retry; it doubles with each retry.
    pub base_delay: Duration,
    /// The largest backoff, and the longest `Retry-After` honoured.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (1-based): the server's `Retry-After` when it
    /// gave one, else a uniformly random delay up to `base * 2^(attempt-1)` (full jitter).
    fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(d) = retry_after {
            return d.min(self.max_delay);
        }
        let ceiling = self
            .base_delay
            .saturating_mul(1u32 << (attempt - 1).min(20))
            .min(self.max_delay);
        Duration::from_secs_f64(rand::random_range(0.0..=ceiling.as_secs_f64()))
    }
}

/// What the error messages of one endpoint need to say.
pub(crate) struct Target<'a> {
    /// The provider as a user knows it: "OpenAI", "Anthropic", "OpenAI-compatible server".
    pub provider: &'a str,
    /// `provider/model`, as written in the stage file.
    pub model: &'a str,
    pub url: &'a str,
    /// The environment variable the key comes from.
    pub key_env: &'a str,
}

/// Statuses worth another try: rate limits, overload and gateway failures.
fn retryable(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504 | 529)
}

/// `Retry-After` in seconds or as an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// The server's own message from an error body (`{"error": {"message": …}}` for OpenAI and
/// Anthropic alike), or the body itself, shortened.
pub(crate) fn server_message(body: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let message = parsed.as_ref().and_then(|v| {
        v.pointer("/error/message")
            .or_else(|| v.get("message"))
            .or_else(|| v.get("error").filter(|e| e.is_string()))
            .and_then(|m| m.as_str())
            .map(str::to_string)
    });
    let text = message.unwrap_or_else(|| body.trim().to_string());
    if text.is_empty() {
        return "no message".into();
    }
    shorten(&text, 500)
}

pub(crate) fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The error for a final, non-success status.
fn status_error(target: &Target<'_>, status: StatusCode, body: &str, attempts: u32) -> ModelError {
    let code = status.as_u16();
    let message = server_message(body);
    let Target {
        provider,
        model,
        url,
        key_env,
    } = target;
    match code {
        401 | 403 => ModelError::Auth(format!(
            "{provider} rejected the API key (HTTP {code}: {message}). Set {key_env} to a valid \
             key, or set api_key_env in the actor's stage entry."
        )),
        404 => ModelError::NotFound(format!(
            "{provider} has no model or endpoint for `{model}` at {url} (HTTP 404: {message}). \
             Check the model name in the stage file, and base_url if you set one."
        )),
        _ if retryable(status) => ModelError::Unavailable(format!(
            "{provider} is unavailable for `{model}` (HTTP {code}: {message}) after {attempts} \
             attempts. Try again later, or raise max_retries in the actor's stage entry."
        )),
        400..=499 => ModelError::Invalid(format!(
            "{provider} refused the request for `{model}` as invalid (HTTP {code}: {message})."
        )),
        _ => ModelError::Unavailable(format!(
            "{provider} failed for `{model}` (HTTP {code}: {message})."
        )),
    }
}

/// Posts `body` to `target.url` with `headers`, retrying transient failures before any byte of
/// the reply was read, and reports each retry through `update`. Returns the successful response,
/// its body not yet read.
pub(crate) async fn post(
    target: &Target<'_>,
    headers: HeaderMap,
    body: Bytes,
    policy: &RetryPolicy,
    update: &mut (dyn for<'u> FnMut(ModelUpdate<'u>) + Send),
) -> Result<Response, ModelError> {
    let client = client()?;
    let mut attempt = 0u32;
    loop {
        let sent = client
            .post(target.url)
            .headers(headers.clone())
            .body(body.clone())
            .send()
            .await;
        let (reason, after) = match sent {
            Ok(response) if response.status().is_success() => return Ok(response),
            Ok(response) => {
                let status = response.status();
                let after = retry_after(response.headers());
                let text = response.text().await.unwrap_or_default();
                if !retryable(status) || attempt >= policy.max_retries {
                    return Err(status_error(target, status, &text, attempt + 1));
                }
                let reason = format!("HTTP {}: {}", status.as_u16(), server_message(&text));
                (reason, after)
            }
            Err(e) => {
                let failure = ModelError::Connect(format!(
                    "cannot reach {} at {} for `{}`: {}. Check that the server runs and that \
                     base_url is right.",
                    target.provider,
                    target.url,
                    target.model,
                    error_chain(&e)
                ));
                if !(e.is_connect() || e.is_timeout()) || attempt >= policy.max_retries {
                    return Err(failure);
                }
                (error_chain(&e), None)
            }
        };
        attempt += 1;
        let delay = policy.delay(attempt, after);
        tracing::debug!(provider = target.provider, attempt, ?delay, %reason, "retrying model call");
        update(ModelUpdate::Retry {
            attempt,
            delay,
            reason: &reason,
        });
        tokio::time::sleep(delay).await;
    }
}

/// An error with its sources, which is where reqwest keeps the useful part.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
