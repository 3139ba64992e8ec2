//! Errors: [`ServeError`] for what stops the server from starting, [`ApiError`] for what a
//! request gets back (a status and a JSON body shaped like OpenAI's, so one client parses both).

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
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
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
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
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = if self.status.is_server_error() {
            "server_error"
        } else {
            "invalid_request_error"
        };
        let body = json!({"error": {"message": self.message, "type": kind, "code": self.code}});
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
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

impl From<improv_log::LogError> for ApiError {
    fn from(e: improv_log::LogError) -> Self {
        match e {
            improv_log::LogError::NotFound { .. } => ApiError::not_found(e.to_string()),
            improv_log::LogError::InvalidId(_) => ApiError::bad_request(e.to_string()),
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

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(format!("a background task failed: {e}"))
    }
}
