//! The mock server over a raw socket: keep-alive, recording, exhaustion and mid-stream cuts.
#![allow(clippy::unwrap_used)]

use improv_mock::{MockResponse, MockServer, anthropic, openai_chat, openai_responses};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one content-length response from the socket.
async fn read_response(sock: &mut TcpStream) -> (String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed early");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let head = text[..end].to_string();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap()
                .parse()
                .unwrap();
            if buf.len() >= end + 4 + len {
                return (head, text[end + 4..end + 4 + len].to_string());
            }
        }
    }
}

#[tokio::test]
async fn serves_in_order_on_one_connection_and_records_requests() {
    let server = MockServer::start(vec![
        MockResponse::json(200, serde_json::json!({"n": 1})).header("x-n", "1"),
        openai_chat::text("hi there"),
    ])
    .await
    .unwrap();
    let mut sock = TcpStream::connect(server.addr()).await.unwrap();
    sock.write_all(post("/v1/a", r#"{"q":1}"#).as_bytes())
        .await
        .unwrap();
    let (head, body) = read_response(&mut sock).await;
    assert!(head.starts_with("HTTP/1.1 200 OK"));
    assert!(head.contains("x-n: 1"));
    assert_eq!(body, r#"{"n":1}"#);
    sock.write_all(post("/v1/b", "{}").as_bytes())
        .await
        .unwrap();
    let (head, body) = read_response(&mut sock).await;
    assert!(head.contains("content-type: text/event-stream"));
    assert!(body.ends_with("data: [DONE]\n\n"));
    // The queue is empty now: a clear 500.
    sock.write_all(post("/v1/c", "{}").as_bytes())
        .await
        .unwrap();
    let (head, body) = read_response(&mut sock).await;
    assert!(head.starts_with("HTTP/1.1 500"));
    assert!(
        body.contains("no scripted response left for request 3 (POST /v1/c)"),
        "{body}"
    );

    let seen = server.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/v1/a");
    assert_eq!(seen[0].header("Content-Type"), Some("application/json"));
    assert_eq!(seen[0].json().unwrap()["q"], 1);
    assert!(seen[0].answered.unwrap() >= seen[0].arrived);
    assert!(seen[1].arrived >= seen[0].answered.unwrap());
}

#[tokio::test]
async fn a_cut_response_closes_the_connection_mid_body() {
    let server = MockServer::start(vec![MockResponse::raw_sse("data: {}\n\n").cut()])
        .await
        .unwrap();
    let mut sock = TcpStream::connect(server.addr()).await.unwrap();
    sock.write_all(post("/x", "").as_bytes()).await.unwrap();
    let mut all = Vec::new();
    sock.read_to_end(&mut all).await.unwrap();
    let text = String::from_utf8(all).unwrap();
    assert!(text.contains("transfer-encoding: chunked"));
    assert!(text.ends_with("data: {}\n\n\r\n"), "{text:?}");
}

#[test]
fn builders_follow_the_wire_formats() {
    let chat = openai_chat::frames(&improv_mock::Turn::calls(&[(
        "call_1",
        "read",
        r#"{"path":"a.txt"}"#,
    )]));
    let json: Vec<serde_json::Value> = chat
        .iter()
        .filter(|f| !f.contains("[DONE]"))
        .map(|f| serde_json::from_str(f.trim().strip_prefix("data: ").unwrap()).unwrap())
        .collect();
    let args: String = json
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, r#"{"path":"a.txt"}"#);
    assert!(
        json.iter()
            .filter(|c| c["choices"][0]["delta"]["tool_calls"].is_array())
            .count()
            > 2
    );
    assert_eq!(json.last().unwrap()["choices"], serde_json::json!([]));
    assert_eq!(json.last().unwrap()["usage"]["prompt_tokens"], 12);

    let a = anthropic::frames(&improv_mock::Turn::text("hello"));
    assert!(a[0].starts_with("event: message_start\ndata: {"));
    assert!(a.last().unwrap().starts_with("event: message_stop"));

    let r = openai_responses::frames(&improv_mock::Turn::text("hello").stop("max_output_tokens"));
    assert!(
        r.last()
            .unwrap()
            .contains("\"reason\":\"max_output_tokens\"")
    );
    assert!(r.last().unwrap().starts_with("event: response.incomplete"));
}
