//! The names the stage view answers to. A request whose `Host` is not one of them is refused
//! with 421 before anything else runs: a web page on another site that rebinds its DNS name to
//! 127.0.0.1 (DNS rebinding) reaches the port, but its requests carry its own name and never
//! get to the API, the page or the token check.
//!
//! Allowed: `127.0.0.1:PORT`, `localhost:PORT`, `[::1]:PORT`, the bound address, and the names
//! given with `--allow-host` (the public name behind `--behind-tls-proxy`); a name given without
//! a port is allowed on any port, or none.
//!
//! Except the probes, `/healthz` and `/readyz`: a load balancer or Kubernetes addresses the pod
//! by its IP, and they carry no data (`ok`, or which check failed), so a rebinding page learns
//! nothing from them.

use crate::error::ApiError;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::HOST;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::SocketAddr;
use std::sync::Arc;

/// The paths answered whatever the `Host`.
const PROBES: [&str; 2] = ["/healthz", "/readyz"];

/// The `Host` values a server accepts, lower-cased.
#[derive(Clone, Debug)]
pub struct AllowedHosts {
    /// `name:port` pairs that must match exactly.
    exact: Vec<String>,
    /// Names allowed with any port, or none.
    any_port: Vec<String>,
}

impl AllowedHosts {
    /// The names for a server bound at `bound`, plus `extra` (`NAME` or `NAME:PORT`).
    pub fn new(bound: SocketAddr, extra: &[String]) -> AllowedHosts {
        let port = bound.port();
        let mut exact: Vec<String> = ["127.0.0.1", "localhost", "[::1]"]
            .iter()
            .map(|h| format!("{h}:{port}"))
            .collect();
        exact.push(bound.to_string());
        let mut any_port = Vec::new();
        for name in extra {
            let name = name.trim().to_ascii_lowercase();
            match split(&name) {
                (_, Some(_)) => exact.push(name),
                (host, None) => any_port.push(host.to_string()),
            }
        }
        if port == 80 {
            // A browser leaves the default port out of `Host`.
            any_port.extend(["127.0.0.1", "localhost", "[::1]"].map(String::from));
        }
        AllowedHosts { exact, any_port }
    }

    /// Whether `host` (a `Host` header's value) names this server.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        if self.exact.contains(&host) {
            return true;
        }
        let (name, _) = split(&host);
        self.any_port.iter().any(|n| *n == name)
    }

    /// What a refused request is told.
    fn refusal(&self, host: Option<&str>) -> ApiError {
        let seen = host.map_or("no Host header".to_string(), |h| {
            format!("Host {}", h.chars().take(100).collect::<String>())
        });
        ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "wrong_host",
            format!(
                "this server does not answer to {seen}: it answers to {}; to reach it under another name (a proxy's public name), start it with --allow-host NAME",
                self.exact
                    .iter()
                    .chain(&self.any_port)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    }
}

/// `HOST[:PORT]` split into the host and the port, brackets of an IPv6 address kept.
fn split(host: &str) -> (&str, Option<&str>) {
    let colon = if host.starts_with('[') {
        host.find("]:").map(|i| i + 1)
    } else {
        host.rfind(':')
    };
    match colon {
        Some(i) => (&host[..i], Some(&host[i + 1..])),
        None => (host, None),
    }
}

/// The middleware: refuses a request whose `Host` (or, without one, its URI's authority) is not
/// allowed.
pub(crate) async fn check(
    State(allowed): State<Arc<AllowedHosts>>,
    request: Request,
    next: Next,
) -> Response {
    if PROBES.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    match host {
        Some(h) if allowed.allows(&h) => next.run(request).await,
        other => allowed.refusal(other.as_deref()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_names_and_given_names_only() {
        let a = AllowedHosts::new(
            "127.0.0.1:7878".parse().unwrap_or_else(|_| unreachable!()),
            &["improv.example.org".into(), "proxy.local:8443".into()],
        );
        for ok in [
            "127.0.0.1:7878",
            "LOCALHOST:7878",
            "[::1]:7878",
            "improv.example.org",
            "improv.example.org:443",
            "proxy.local:8443",
        ] {
            assert!(a.allows(ok), "{ok}");
        }
        for refused in [
            "evil.example",
            "evil.example:7878",
            "localhost",
            "127.0.0.1:7879",
            "proxy.local",
            "proxy.local:80",
            "localhost.evil.example:7878",
            "",
        ] {
            assert!(!a.allows(refused), "{refused}");
        }
    }
}
