//! The bearer token: read from the token file, or generated into it on first start (mode 0600),
//! and checked on every API request in constant time.

use crate::error::{ApiError, ServeError};
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// The token file's name inside the stage's state directory, which actors cannot reach; every
/// performance of the stage redacts the token it holds.
pub const TOKEN_FILE: &str = improv_perform::control::SERVE_TOKEN_FILE;

/// The server's token, and whether this start created it.
#[derive(Clone, Debug)]
pub struct Token {
    pub value: Arc<str>,
    pub created: bool,
}

/// Reads the token at `path`, or writes a new random one there when the file does not exist.
pub fn load_or_create(path: &Path) -> Result<Token, ServeError> {
    let err = |action, source| ServeError::Token {
        action,
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let value = text.trim();
            if value.is_empty() {
                return Err(ServeError::EmptyToken {
                    path: path.to_path_buf(),
                });
            }
            Ok(Token {
                value: value.into(),
                created: false,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| err("create the folder of", e))?;
            }
            let bytes: [u8; 32] = rand::random();
            let value: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).map_err(|e| err("create", e))?;
            file.write_all(format!("{value}\n").as_bytes())
                .map_err(|e| err("write", e))?;
            Ok(Token {
                value: value.into(),
                created: true,
            })
        }
        Err(e) => Err(err("read", e)),
    }
}

/// Compares without stopping at the first difference, so timing tells nothing about the token.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses a request without `Authorization: Bearer <token>`.
pub(crate) async fn require(
    State(token): State<Arc<str>>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    match given {
        Some(given) if same(given.as_bytes(), token.as_bytes()) => Ok(next.run(request).await),
        _ if crate::api::is_mcp(request.uri().path()) => Err(ApiError::mcp_unauthorized()),
        _ => Err(ApiError::unauthorized()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_token_is_created_once_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/serve.token");
        let first = load_or_create(&path).unwrap();
        assert!(first.created);
        assert_eq!(first.value.len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let second = load_or_create(&path).unwrap();
        assert!(!second.created);
        assert_eq!(first.value, second.value);
    }

    #[test]
    fn an_empty_token_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t");
        std::fs::write(&path, "  \n").unwrap();
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(
            e.contains("is empty") && e.contains(&path.display().to_string()),
            "{e}"
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"abc", b"ab"));
    }
}
