//! Which store a URL names, and how to show it without its password.

use crate::StoreError;
use std::path::PathBuf;

/// A store's address: `postgres://user:pass@host/db` (or `postgresql://`), or `sqlite:PATH` /
/// a plain path for the embedded backend.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Postgres(String),
    Sqlite(PathBuf),
}

impl StoreUrl {
    /// Parses a `--store` / `IMPROV_STORE` value.
    pub fn parse(text: &str) -> Result<StoreUrl, StoreError> {
        let text = text.trim();
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(text.to_string()));
        }
        if let Some(path) = text.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if !path.is_empty() {
                return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
            }
        }
        if !text.is_empty() && !text.contains("://") {
            return Ok(StoreUrl::Sqlite(PathBuf::from(text)));
        }
        Err(StoreError::Config {
            store: redact(text),
            message: "use postgres://USER@HOST/DB or sqlite:PATH".into(),
        })
    }

    /// The URL with any password replaced by `***`: the only form that reaches a message.
    pub fn redacted(&self) -> String {
        match self {
            StoreUrl::Postgres(url) => redact(url),
            StoreUrl::Sqlite(path) => format!("sqlite:{}", path.display()),
        }
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Hides the password of `scheme://user:password@host…` and of a `password=` parameter.
fn redact(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..].find(['/', '?']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@') {
            let userinfo = &out[rest..rest + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest + colon + 1..rest + at, "***");
            }
        }
    }
    if let Some(start) = out.find("password=") {
        let value = start + "password=".len();
        let end = out[value..].find('&').map_or(out.len(), |i| value + i);
        out.replace_range(value..end, "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows() {
        let url =
            StoreUrl::parse("postgres://improv:s3cret@db:5432/improv?sslmode=disable").unwrap();
        assert_eq!(
            url.redacted(),
            "postgres://improv:***@db:5432/improv?sslmode=disable"
        );
        let url = StoreUrl::parse("postgresql://u@h/d?password=s3cret&x=1").unwrap();
        assert_eq!(url.redacted(), "postgresql://u@h/d?password=***&x=1");
        assert!(!format!("{url:?} {url}").contains("s3cret"));
    }

    #[test]
    fn paths_and_sqlite_urls_name_the_embedded_store() {
        assert_eq!(
            StoreUrl::parse("sqlite:/tmp/s.db").unwrap(),
            StoreUrl::Sqlite("/tmp/s.db".into())
        );
        assert_eq!(
            StoreUrl::parse("state/store.db").unwrap(),
            StoreUrl::Sqlite("state/store.db".into())
        );
        assert!(StoreUrl::parse("mysql://x").is_err());
    }
}
