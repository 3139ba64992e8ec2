//! The stage view under a hostile client, against the real server on 127.0.0.1: slow headers
//! (slowloris) are cut off by the header timeout and cannot lock the director out, connections
//! beyond the limit are refused at once, a stalled request body fails, and a request for
//! another host name (DNS rebinding) is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{Running, TestStage, serve_with};
use improv_serve::ServeArgs;
use serde_json::json;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The bound on every wait in these tests: far above the timeouts they configure.
const BOUND: Duration = Duration::from_secs(20);

/// A server for these tests: its address and token, held running by `_server`.
struct Served {
    addr: SocketAddr,
    token: String,
    _server: Running,
    _stage: TestStage,
}

async fn serve(configure: impl FnOnce(&mut ServeArgs)) -> Served {
    let stage = TestStage::new(json!([]), "");
    let server = serve_with(&stage, configure).await;
    Served {
        addr: server.addr,
        token: server.token.clone(),
        _server: server,
        _stage: stage,
    }
}

/// Sends `request` as is and reads the response until the server closes or `BOUND` passes.
fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(BOUND)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn get(served: &Served, host: &str, path: &str) -> String {
    exchange(
        served.addr,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            served.token
        ),
    )
}

/// A slowloris client: connects and sends a request's headers a byte at a time, never ending
/// them. Returns a handle telling when the server closed it.
fn slow_client(addr: SocketAddr, closed: Arc<AtomicUsize>) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        let Ok(mut s) = TcpStream::connect(addr) else {
            closed.fetch_add(1, Ordering::SeqCst);
            return true;
        };
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let headers = b"GET /stage HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";
        let start = Instant::now();
        let mut sent = 0;
        let mut buf = [0u8; 512];
        while start.elapsed() < BOUND {
            let byte = headers.get(sent).copied().unwrap_or(b'a');
            if s.write_all(&[byte]).is_err() {
                break;
            }
            sent += 1;
            match s.read(&mut buf) {
                // Closed (or answered, then closed: a refusal beyond the limit).
                Ok(_) => break,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        let cut = start.elapsed() < BOUND;
        if cut {
            closed.fetch_add(1, Ordering::SeqCst);
        }
        cut
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_and_the_director_still_gets_in() {
    let served = serve(|a| {
        a.max_connections = 8;
        a.header_timeout = Duration::from_millis(800);
    })
    .await;
    let closed = Arc::new(AtomicUsize::new(0));
    let attackers: Vec<_> = (0..16)
        .map(|_| slow_client(served.addr, closed.clone()))
        .collect();
    // The director retries as a browser would; it gets in once the slow ones are cut off.
    let (addr, token) = (served.addr, served.token.clone());
    let director = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        let mut tries = 0;
        while start.elapsed() < BOUND {
            tries += 1;
            let r = exchange(
                addr,
                &format!(
                    "GET /stage HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
                ),
            );
            if r.starts_with("HTTP/1.1 200") {
                return (true, tries);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (false, tries)
    })
    .await
    .unwrap();
    let cut: Vec<bool> = attackers.into_iter().map(|a| a.join().unwrap()).collect();
    assert!(
        director.0,
        "the director never got in ({} tries)",
        director.1
    );
    assert!(
        cut.iter().all(|c| *c),
        "{} of 16 slow connections were never closed",
        cut.iter().filter(|c| !**c).count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_the_limit_is_refused_at_once() {
    let served = serve(|a| {
        a.max_connections = 4;
        a.header_timeout = Duration::from_secs(120);
    })
    .await;
    // Four connections hold the four places, their headers never finished; the kernel hands
    // them to the server in the order they connected.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(served.addr).unwrap();
        s.write_all(b"GET /stage HTTP/1.1\r\nHo").unwrap();
        held.push(s);
    }
    let refused = exchange(served.addr, "");
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused:?}");
    assert!(refused.contains("too_many_connections"), "{refused}");
    // Once they go, the director gets in (the server notices each close at once).
    drop(held);
    let start = Instant::now();
    loop {
        let r = get(&served, &served.addr.to_string(), "/stage");
        if r.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            start.elapsed() < BOUND,
            "still refused after the close: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_fails() {
    let served = serve(|a| {
        a.idle_timeout = Duration::from_millis(500);
    })
    .await;
    let (addr, token) = (served.addr, served.token.clone());
    let response = tokio::task::spawn_blocking(move || {
        exchange(
            addr,
            &format!(
                "POST /performances HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"intent\":"
            ),
        )
    })
    .await
    .unwrap();
    let status: u16 = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(
        (400..500).contains(&status),
        "a body that stalls is refused, not waited on: {response:?}"
    );
    assert!(response.contains("\"error\""), "{response}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_another_host_is_refused() {
    let served = serve(|a| a.allow_hosts = vec!["improv.example.org".into()]).await;
    let port = served.addr.port();
    let at = |host: String| {
        let served = &served;
        let r = get(served, &host, "/stage");
        r.lines().next().unwrap_or("").to_string()
    };
    for evil in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        "127.0.0.1".to_string(),
    ] {
        let status = at(evil.clone());
        assert!(status.starts_with("HTTP/1.1 421"), "{evil}: {status}");
    }
    let refused = get(&served, "evil.example", "/");
    assert!(refused.contains("\"wrong_host\""), "{refused}");
    assert!(refused.contains("--allow-host"), "{refused}");
    for good in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "improv.example.org".to_string(),
    ] {
        let status = at(good.clone());
        assert!(status.starts_with("HTTP/1.1 200"), "{good}: {status}");
    }
}
