//! A Discord door through the real `improv serve`: a signed interaction posted to
//! `POST /doors/NAME` is acknowledged, performed by the stage's scripted lead, and its `reply`
//! reaches the local fake of Discord's REST API once (with a nonce); a forged signature gets
//! 401 and performs nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use ed25519_dalek::{Signer, SigningKey};
use improv_mock::{MockResponse, MockServer};
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long anything here may take: generous, for a slow shared machine.
const PROMPT: Duration = Duration::from_secs(60);

struct Served {
    child: Child,
    host: String,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP/1.1 request to the server: the status and the body.
fn request(host: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.set_read_timeout(Some(PROMPT)).unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < PROMPT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_discord_door_answers_a_signed_interaction_through_improv_serve() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // Discord's "create message": every request answered with a created message.
    let created = || MockResponse::json(200, json!({ "id": "1500000000000000001" }));
    let discord = runtime
        .block_on(MockServer::start((0..4).map(|_| created()).collect()))
        .unwrap();
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let public: String = key
        .verifying_key()
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();

    let root = tempfile::tempdir().unwrap();
    let ws = root.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    std::fs::create_dir(root.path().join("tmp")).unwrap();
    let script = json!([
        { "calls": [{ "name": "reply", "arguments": { "text": "Deployed." } }] },
        { "say": "done" },
    ]);
    std::fs::write(ws.join("script.json"), script.to_string()).unwrap();
    std::fs::write(
        ws.join("stage.toml"),
        format!(
            "[stage]\nname = \"team\"\nintent = \"Answer the team.\"\n\n[[actor]]\nname = \"lead\"\n\
             model = \"scripted/script.json\"\n\n[[door]]\nname = \"team\"\nchannel = \"discord\"\n\
             token_env = \"IMPROV_TEST_DISCORD_TOKEN\"\nsecret_env = \"IMPROV_TEST_DISCORD_KEY\"\n\
             allow = [\"2001\"]\napi_base = \"{}\"\n",
            discord.url()
        ),
    )
    .unwrap();
    let mut child = common::improv_command()
        .current_dir(&ws)
        .env_remove("IMPROV_STORE")
        .env("NO_COLOR", "1")
        .env("TMPDIR", root.path().join("tmp"))
        .env("IMPROV_TEST_DISCORD_TOKEN", "bot-token")
        .env("IMPROV_TEST_DISCORD_KEY", &public)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let pipe = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            eprintln!("serve: {line}");
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut served = Served {
        child,
        host: String::new(),
    };
    const AT: &str = "serving the stage view at http://";
    let line = loop {
        let line = lines
            .recv_timeout(PROMPT)
            .expect("improv serve says where it serves");
        if line.contains(AT) {
            break line;
        }
    };
    served.host = line
        .split(AT)
        .nth(1)
        .unwrap()
        .trim_end_matches('/')
        .to_string();

    let body = json!({
        "id": "1400000000000000001", "type": 2, "channel_id": "900",
        "member": { "user": { "id": "2001", "username": "alice" } },
        "data": { "name": "ask", "options": [{ "name": "text", "type": 3, "value": "deploy" }] },
    })
    .to_string();
    let signed = |key: &SigningKey| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        let mut message = now.as_bytes().to_vec();
        message.extend_from_slice(body.as_bytes());
        let signature: String = key
            .sign(&message)
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        request(
            &served.host,
            "/doors/team",
            &[
                ("Content-Type", "application/json"),
                ("X-Signature-Timestamp", &now),
                ("X-Signature-Ed25519", &signature),
            ],
            body.as_bytes(),
        )
    };
    // A forged signature first: refused, whether or not the listener is up yet.
    let (status, _) = signed(&SigningKey::from_bytes(&[8u8; 32]));
    assert_eq!(status, 401, "a forged interaction is refused");
    let mut answer = (0, String::new());
    eventually(
        "the Discord door's listener to register its endpoint",
        || {
            answer = signed(&key);
            answer.0 != 401
        },
    );
    assert_eq!(answer.0, 200, "{answer:?}");
    let ack: serde_json::Value = serde_json::from_str(&answer.1).unwrap();
    assert_eq!(ack["type"], 4, "acknowledged at once: {ack}");

    let posts = || {
        discord
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == "/channels/900/messages")
            .collect::<Vec<_>>()
    };
    eventually("the reply to reach Discord", || !posts().is_empty());
    let sent = posts();
    assert_eq!(sent.len(), 1, "{sent:?}");
    let message = sent[0].json().unwrap();
    assert_eq!(message["content"], "Deployed.");
    assert_eq!(message["enforce_nonce"], true);
    assert_eq!(sent[0].header("authorization"), Some("Bot bot-token"));
    // The same interaction again (a retry) performs nothing more.
    assert_eq!(signed(&key).0, 200);
    let (status, _) = signed(&SigningKey::from_bytes(&[8u8; 32]));
    assert_eq!(status, 401);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(posts().len(), 1, "one reply in all");
}
