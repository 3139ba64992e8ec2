//! Which store a URL names, and how to show it without its password; and the parameters of a
//! PostgreSQL URL that improv reads itself rather than tokio-postgres (`sslmode` beyond
//! `require`, `sslrootcert`, `statement_timeout`).

use crate::StoreError;
use std::path::PathBuf;
use std::time::Duration;

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

/// How a PostgreSQL connection is secured: libpq's `sslmode` values (see `postgres/tls.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// TLS whenever the server offers it (the default, as in libpq).
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    const ALL: [SslMode; 5] = [
        SslMode::Disable,
        SslMode::Prefer,
        SslMode::Require,
        SslMode::VerifyCa,
        SslMode::VerifyFull,
    ];

    /// Its name in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// How long one statement may run when the URL does not say (`?statement_timeout=`).
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// What improv itself reads from a PostgreSQL URL's query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PgParams {
    pub ssl: SslMode,
    /// `sslrootcert=PATH`: the CA certificates (PEM) the server's certificate must chain to.
    pub root_cert: Option<PathBuf>,
    /// `statement_timeout=` (milliseconds, or `5s`, `500ms`…; 0 for none).
    pub statement_timeout: Duration,
}

/// Splits `url` into the URL tokio-postgres parses (without improv's parameters) and
/// improv's parameters. The error says which parameter is wrong and what it takes.
pub(crate) fn split_pg_params(url: &str) -> Result<(String, PgParams), String> {
    let mut params = PgParams {
        ssl: SslMode::Prefer,
        root_cert: None,
        statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
    };
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), params));
    };
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = decode(value);
        match key {
            "sslmode" => {
                params.ssl = SslMode::ALL
                    .into_iter()
                    .find(|m| m.as_str() == value)
                    .ok_or_else(|| {
                        format!(
                            "sslmode={value} is not one of disable, prefer, require, verify-ca, \
                             verify-full"
                        )
                    })?;
            }
            "sslrootcert" => params.root_cert = Some(PathBuf::from(value)),
            "statement_timeout" => params.statement_timeout = parse_timeout(&value)?,
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, params))
}

/// PostgreSQL's own form (a number of milliseconds) or a duration with its unit (`30s`).
fn parse_timeout(value: &str) -> Result<Duration, String> {
    if let Ok(millis) = value.parse::<u64>() {
        return Ok(Duration::from_millis(millis));
    }
    humantime::parse_duration(value).map_err(|_| {
        format!("statement_timeout={value} is not a duration; use milliseconds or e.g. 30s")
    })
}

/// Percent-decodes a query value (`%2F` in a path); a malformed escape stays as written.
fn decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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

    #[test]
    fn improvs_own_parameters_are_taken_out_of_a_postgres_url() {
        let (rest, params) = split_pg_params(
            "postgres://u@h/d?sslmode=verify-full&host=/tmp&sslrootcert=%2Fca.pem\
             &statement_timeout=5s",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u@h/d?host=/tmp");
        assert_eq!(params.ssl, SslMode::VerifyFull);
        assert_eq!(params.root_cert, Some(PathBuf::from("/ca.pem")));
        assert_eq!(params.statement_timeout, Duration::from_secs(5));
        let (rest, params) = split_pg_params("postgres://u@h/d?statement_timeout=250").unwrap();
        assert_eq!(rest, "postgres://u@h/d");
        assert_eq!(params.ssl, SslMode::Prefer);
        assert_eq!(params.statement_timeout, Duration::from_millis(250));
        let error = split_pg_params("postgres://u@h/d?sslmode=allow").unwrap_err();
        assert!(error.contains("sslmode=allow is not one of"), "{error}");
        assert!(split_pg_params("postgres://u@h/d?statement_timeout=soon").is_err());
    }
}
