//! A local mock model server for tests and benchmarks: HTTP/1.1 on raw tokio sockets, so a test
//! can serve recorded-shape SSE streams, malformed chunks and connections cut mid-stream.
//!
//! Responses are served in the order they were queued; every request is recorded with the
//! instant it arrived and the instant its response was written. Each response is written with
//! one write call on a `TCP_NODELAY` socket, so timings measure the client, not delayed ACKs.
//!
//! The [`openai_chat`], [`openai_responses`] and [`anthropic`] modules build streams in the real
//! wire formats from a provider-neutral [`Turn`].

pub mod anthropic;
pub mod fixtures;
pub mod openai_chat;
pub mod openai_responses;
mod turn;

pub use turn::{Call, Turn};

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// One scripted HTTP response.
#[derive(Clone, Debug, PartialEq)]
pub struct MockResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Close the connection after the body, without finishing the HTTP message: the body is sent
    /// chunked and the last chunk never comes, so the client sees a stream cut mid-way.
    pub disconnect: bool,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
}

impl MockResponse {
    /// A response with this status and body, and no headers yet.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        MockResponse {
            status,
            headers: Vec::new(),
            body: body.into(),
            disconnect: false,
            delay: None,
        }
    }

    /// A JSON response.
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        MockResponse::new(status, body.to_string()).header("content-type", "application/json")
    }

    /// A `text/event-stream` response whose body is one `data: …` frame per event.
    pub fn sse(events: &[&str]) -> Self {
        let body: String = events.iter().map(|e| format!("data: {e}\n\n")).collect();
        MockResponse::raw_sse(&body)
    }

    /// A `text/event-stream` response with this body, verbatim.
    pub fn raw_sse(body: &str) -> Self {
        MockResponse::new(200, body)
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Cuts the connection after the body, mid-message (see [`MockResponse::disconnect`]).
    pub fn cut(mut self) -> Self {
        self.disconnect = true;
        self
    }

    /// Answers after this delay.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// The whole response as bytes, so that it goes out in one write.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 256);
        out.extend_from_slice(
            format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status)).as_bytes(),
        );
        for (k, v) in &self.headers {
            out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
        if self.disconnect {
            out.extend_from_slice(b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n");
            if !self.body.is_empty() {
                out.extend_from_slice(format!("{:x}\r\n", self.body.len()).as_bytes());
                out.extend_from_slice(&self.body);
                out.extend_from_slice(b"\r\n");
            }
            // No terminating `0\r\n\r\n`: the message is cut.
        } else {
            out.extend_from_slice(
                format!("content-length: {}\r\n\r\n", self.body.len()).as_bytes(),
            );
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        529 => "Overloaded",
        _ => "Status",
    }
}

/// A request the server received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Header names in lower case, in the order they came.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// When its first byte was read.
    pub arrived: Instant,
    /// When the write of its response finished (`None` while it is being answered).
    pub answered: Option<Instant>,
}

impl Recorded {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<MockResponse>>,
    log: Mutex<Vec<Recorded>>,
}

/// The server's state stays usable even if a test panicked while holding a lock.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A mock HTTP/1.1 server on `127.0.0.1` at a random port. It stops when dropped.
pub struct MockServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl MockServer {
    /// Starts a server that answers with `responses` in order; when they run out, it answers
    /// 500 with a JSON error that says so.
    pub async fn start(responses: Vec<MockResponse>) -> io::Result<MockServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(responses.into()),
            log: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(MockServer {
            addr,
            shared,
            accept,
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.log).clone()
    }

    /// Queues another response.
    pub fn push(&self, response: MockResponse) {
        lock(&self.shared.queue).push_back(response);
    }

    /// Responses not yet served.
    pub fn remaining(&self) -> usize {
        lock(&self.shared.queue).len()
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection task.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((socket, _)) = accepted {
                    connections.spawn(serve(socket, shared.clone()));
                }
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// A parsed request head: method, path, headers, head length in bytes.
type Head = (String, String, Vec<(String, String)>, usize);

fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => {
            let headers = req
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect();
            Ok(Some((
                req.method.unwrap_or_default().to_string(),
                req.path.unwrap_or_default().to_string(),
                headers,
                len,
            )))
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Reads more bytes into `buf`; false when the peer closed the connection.
async fn fill(socket: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    let n = socket.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

async fn serve(mut socket: TcpStream, shared: Arc<Shared>) -> io::Result<()> {
    socket.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        if buf.is_empty() && !fill(&mut socket, &mut buf).await? {
            return Ok(());
        }
        let arrived = Instant::now();
        let (method, path, headers, head_len) = loop {
            match parse_head(&buf) {
                Ok(Some(head)) => break head,
                Ok(None) => {
                    if !fill(&mut socket, &mut buf).await? {
                        return Ok(());
                    }
                }
                Err(e) => {
                    let bad = MockResponse::json(
                        400,
                        serde_json::json!({"error": {"message": format!("improv-mock: malformed request head: {e}")}}),
                    );
                    socket.write_all(&bad.encode()).await?;
                    return Ok(());
                }
            }
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let bad = MockResponse::json(
                501,
                serde_json::json!({"error": {"message": "improv-mock: chunked request bodies are not supported; send Content-Length"}}),
            );
            socket.write_all(&bad.encode()).await?;
            return Ok(());
        }
        let content_length: usize = header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_len + content_length {
            if !fill(&mut socket, &mut buf).await? {
                return Ok(());
            }
        }
        let body = buf[head_len..head_len + content_length].to_vec();
        buf.drain(..head_len + content_length);
        let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));

        let index = {
            let mut log = lock(&shared.log);
            log.push(Recorded {
                method: method.clone(),
                path: path.clone(),
                headers,
                body,
                arrived,
                answered: None,
            });
            log.len()
        };
        let response = lock(&shared.queue).pop_front().unwrap_or_else(|| {
            MockResponse::json(
                500,
                serde_json::json!({"error": {
                    "type": "mock_exhausted",
                    "message": format!("improv-mock: no scripted response left for request {index} ({method} {path}); queue more with MockServer::push"),
                }}),
            )
        });
        if let Some(delay) = response.delay {
            tokio::time::sleep(delay).await;
        }
        socket.write_all(&response.encode()).await?;
        if let Some(r) = lock(&shared.log).get_mut(index - 1) {
            r.answered = Some(Instant::now());
        }
        if response.disconnect || close {
            let _ = socket.shutdown().await;
            return Ok(());
        }
    }
}

/// Splits `s` into pieces of about `size` bytes, on character boundaries.
pub(crate) fn pieces(s: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < s.len() {
        let mut end = (start + size.max(1)).min(s.len());
        while !s.is_char_boundary(end) {
            end += 1;
        }
        out.push(&s[start..end]);
        start = end;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pieces_keep_characters_whole() {
        assert_eq!(pieces("abcdé", 2), vec!["ab", "cd", "é"]);
        assert_eq!(pieces("", 3), Vec::<&str>::new());
    }

    #[test]
    fn a_cut_response_never_finishes_its_chunked_body() {
        let bytes = MockResponse::raw_sse("data: x\n\n").cut().encode();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("transfer-encoding: chunked"));
        assert!(text.ends_with("data: x\n\n\r\n"));
        assert!(!text.contains("0\r\n\r\n"));
    }
}
