//! Errors: [`ServeError`] for what stops the server from starting, [`ApiError`] for what a
//! request gets back (a status and a JSON body shaped like OpenAI's, so one client parses both),
//! and [`envelope`], which gives the same body to the errors axum answers on its own.

use axum::Json;
use axum::extract::Request;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to serve on {addr}: it is not a loopback address, and improv serve speaks plain HTTP, so the bearer token would cross the network in clear text. Bind 127.0.0.1 (the default) behind a TLS proxy, or pass --behind-tls-proxy when a TLS-terminating proxy already fronts this address"
    )]
    Insecure { addr: SocketAddr },
    #[error("cannot {action} the token file {}: {source}", path.display())]
    Token {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the token file {} is empty: write a token into it (any long random string), or delete it to have one generated",
        path.display()
    )]
    EmptyToken { path: PathBuf },
    #[error("cannot listen on {addr}: {source}; pick another address with --bind")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Log(#[from] improv_log::LogError),
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// An API error: the status and a message that says what to do.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// The request field at fault, as OpenAI's errors name it (`n`, `messages[0].role`).
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            param: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = code;
        self
    }

    /// Names the request field at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub(crate) fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token: send `Authorization: Bearer <token>` with the token from the server's token file (.improv/serve.token by default)",
        )
    }

    /// The refusal at `/mcp`. Not a 401: on a 401, MCP clients (the official SDKs) start an
    /// OAuth flow this server has no part in, and the user never sees why; a 403 without
    /// `WWW-Authenticate` is shown with this message.
    pub(crate) fn mcp_unauthorized() -> Self {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "unauthorized",
            "missing or wrong bearer token: this MCP server takes no OAuth; configure your MCP client to send the header `Authorization: Bearer <token>` with the token from the server's token file (.improv/serve.token by default)",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        let body = json!({"error": {
            "message": self.message, "type": kind, "param": self.param, "code": self.code,
        }});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The largest error body [`envelope`] reads to keep its text.
const PLAIN_ERROR_LIMIT: usize = 16 * 1024;

/// Gives every error the same JSON envelope. What the router and axum's extractors answer on
/// their own (an unknown route, a wrong method, a path that does not decode, a timeout) comes
/// as plain text or an empty body and is rewrapped here, its text kept as the message and its
/// headers (`Allow`, `Retry-After`) kept. JSON errors pass untouched, and so does `/mcp`, whose
/// errors belong to the MCP transport.
pub(crate) async fn envelope(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error())
        || is_json
        || crate::api::is_mcp(&path)
    {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, PLAIN_ERROR_LIMIT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let path = path.chars().take(200).collect::<String>();
    let (code, message) = match status {
        StatusCode::NOT_FOUND if text.is_empty() => (
            "no_route",
            format!("no route {method} {path}; GET /openapi.json lists the routes"),
        ),
        StatusCode::METHOD_NOT_ALLOWED => {
            let allow = parts
                .headers
                .get(ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("another method");
            (
                "method_not_allowed",
                format!("{path} does not take {method}; it takes {allow}"),
            )
        }
        _ => (
            plain_code(status),
            if text.is_empty() {
                status.canonical_reason().unwrap_or("error").to_string()
            } else {
                text
            },
        ),
    };
    let mut wrapped = ApiError::new(status, code, message).into_response();
    for (name, value) in &parts.headers {
        if name != CONTENT_TYPE && name != CONTENT_LENGTH {
            wrapped.headers_mut().insert(name.clone(), value.clone());
        }
    }
    wrapped
}

/// The `code` of an error that came without one.
fn plain_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "invalid_request",
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        let status = r.status();
        let message = match &r {
            JsonRejection::MissingJsonContentType(_) => {
                "send the body as JSON with `Content-Type: application/json`".to_string()
            }
            JsonRejection::BytesRejection(_) if status == StatusCode::PAYLOAD_TOO_LARGE => {
                "the body is too large for this endpoint; send less".to_string()
            }
            _ => format!(
                "the body is not the JSON this endpoint takes: {}",
                r.body_text()
            ),
        };
        let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "body_too_large"
        } else {
            "invalid_body"
        };
        ApiError::new(status, code, message)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(format!(
            "the query string is not what this endpoint takes: {}",
            r.body_text()
        ))
        .with_code("invalid_query")
    }
}

impl From<improv_log::LogError> for ApiError {
    fn from(e: improv_log::LogError) -> Self {
        use improv_log::LogError as L;
        match e {
            L::NotFound { .. } => ApiError::not_found(e.to_string()),
            L::InvalidId(_) | L::Ambiguous { .. } => ApiError::bad_request(e.to_string()),
            _ => ApiError::internal(e.to_string()),
        }
    }
}

impl From<improv_ledger::LedgerError> for ApiError {
    fn from(e: improv_ledger::LedgerError) -> Self {
        use improv_ledger::LedgerError as L;
        match e {
            L::UnknownCollection(_) => ApiError::not_found(e.to_string()),
            L::InvalidCollection(_) | L::Path(_) | L::Query(_) => {
                ApiError::bad_request(e.to_string())
            }
            L::AlreadySettled { .. } | L::NotSettled(_) | L::NoProposal { .. } => {
                ApiError::conflict(e.to_string())
            }
            _ => ApiError::internal(e.to_string()),
        }
    }
}

impl From<improv_store::StoreError> for ApiError {
    fn from(e: improv_store::StoreError) -> Self {
        use improv_store::StoreError as S;
        match e {
            S::NotFound { .. } => ApiError::not_found(e.to_string()),
            S::Finished { .. } => ApiError::conflict(e.to_string()),
            S::Unavailable { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                e.to_string(),
            ),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(format!("a background task failed: {e}"))
    }
}
