//! The one HTTP client every provider shares, and the retry loop around sending a request:
//! exponential backoff with full jitter on 429, 5xx and connect errors, honouring
//! `Retry-After`, and errors that say what to do.
//!
//! [`client_builder`] is where every HTTP client of improv starts (providers, channels, trace
//! export, MCP over HTTP, doctor): reqwest is built without a TLS crypto provider of its own, so
//! this is the one place that decides it (ring, which lettre and PostgreSQL already link; aws-lc
//! would need cmake and add ~2 MB) and the roots (the bundled Mozilla list, so a container
//! without a system store works).

use bytes::Bytes;
use improv_kernel::{ModelError, ModelUpdate};
use reqwest::header::HeaderMap;
use reqwest::{Client, Response, StatusCode};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

/// TLS could not be set up for an HTTP client.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS for HTTP clients: {0}")]
pub struct TlsSetupError(#[from] rustls::Error);

/// A reqwest builder with improv's TLS: rustls over ring, the bundled Mozilla roots, HTTP/2 and
/// HTTP/1.1 offered by ALPN. Ring also becomes the process's default rustls provider (once), so
/// a library that builds its own rustls config finds one.
pub fn client_builder() -> Result<reqwest::ClientBuilder, TlsSetupError> {
    builder_trusting(rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    })
}

/// [`client_builder`] with the given roots (tests trust their own CA with it).
fn builder_trusting(roots: rustls::RootCertStore) -> Result<reqwest::ClientBuilder, TlsSetupError> {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        // An error means another part of the program installed a provider first; it serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Client::builder().tls_backend_preconfigured(tls))
}

/// The shared client: one connection pool per process, `TCP_NODELAY`, a connect timeout and an
/// idle-read timeout long enough for a model that thinks before it speaks.
pub(crate) fn client() -> Result<&'static Client, ModelError> {
    static CLIENT: OnceLock<Result<Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            client_builder()
                .map_err(|e| e.to_string())?
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A local HTTPS server for 127.0.0.1 whose certificate a fresh CA signed; answers every
    /// request with `ok`. Returns its port and the CA's certificate.
    async fn https_server() -> (u16, CertificateDer<'static>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![server.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let reply =
                        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                    let _ = tls.write_all(reply.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (port, ca.der().clone())
    }

    #[tokio::test]
    async fn the_client_speaks_tls_over_ring_to_a_server_its_roots_trust() {
        let (port, ca) = https_server().await;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca).unwrap();
        let client = builder_trusting(roots).unwrap().build().unwrap();
        let reply = client
            .get(format!("https://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::OK);
        assert_eq!(reply.text().await.unwrap(), "ok");
    }

    #[tokio::test]
    async fn the_shared_builder_refuses_a_certificate_outside_the_bundled_roots() {
        let (port, _) = https_server().await;
        let client = client_builder().unwrap().build().unwrap();
        let refused = client
            .get(format!("https://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap_err();
        let chain = error_chain(&refused);
        assert!(chain.contains("UnknownIssuer"), "{chain}");
    }
}
