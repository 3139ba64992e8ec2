//! The serving loop: accepts connections up to a limit and serves each with hyper's HTTP/1,
//! headers bounded in time. Written here rather than with `axum::serve`, which sets no header
//! timeout and no connection limit: a client that opens many connections and sends its
//! headers a byte at a time would otherwise hold every file descriptor and lock the director
//! out.
//!
//! - A request's headers must arrive within [`Limits::header_timeout`]; the same deadline
//!   closes a connection left idle between requests (hyper starts it when it waits for the
//!   next request).
//! - A request body that stalls for [`Limits::idle_timeout`] fails with 408.
//! - At most [`Limits::max_connections`] connections are served at once; beyond, a new one is
//!   answered 503 and closed at once (the page's event streams each hold one, so keep it
//!   generous).

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::RequestBodyTimeout;

/// How long and how many: `improv serve`'s `--header-timeout`, `--idle-timeout`,
/// `--max-connections`.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// The connections being served, to close when the server stops.
pub(crate) struct Connections {
    set: JoinSet<()>,
    stop: CancellationToken,
}

impl Connections {
    /// Asks each connection to finish the request it serves and close; after `grace`, drops
    /// those still open (an event stream a client keeps).
    pub(crate) async fn close(mut self, grace: Duration) {
        self.stop.cancel();
        let _ = tokio::time::timeout(grace, async {
            while self.set.join_next().await.is_some() {}
        })
        .await;
        self.set.abort_all();
    }
}

/// Accepts and serves connections until `shutdown` completes; the listener is closed then.
pub(crate) async fn accept_until(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Connections {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let stop = CancellationToken::new();
    let mut set = JoinSet::new();
    let refusal = refusal(limits.max_connections);
    let service = RequestBodyTimeout::new(router, limits.idle_timeout);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to close.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        while set.try_join_next().is_some() {}
        match permits.clone().try_acquire_owned() {
            Ok(permit) => {
                set.spawn(serve(stream, service.clone(), limits, stop.clone(), permit));
            }
            Err(_) => {
                // Never waits on the client: what the socket takes now, then closed.
                let _ = stream.try_write(&refusal);
            }
        }
    }
    Connections { set, stop }
}

/// One connection, until it closes, fails, times out or the server stops.
async fn serve(
    stream: TcpStream,
    service: RequestBodyTimeout<Router>,
    limits: Limits,
    stop: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stop.cancelled() => connection.as_mut().graceful_shutdown(),
    }
    let _ = connection.await;
}

/// The answer to a connection beyond the limit, in the API's error envelope.
fn refusal(max: usize) -> Vec<u8> {
    let body = serde_json::json!({"error": {
        "message": format!("the server holds {max} connections, the most it allows (--max-connections); close some (other tabs, clients) or retry shortly"),
        "type": "server_error", "param": null, "code": "too_many_connections",
    }})
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
