//! SIGTERM and a chat door's performances, through the real `improv serve`: a Discord
//! interaction whose performance is under way (its lead waiting on a slow mock model) when
//! SIGTERM arrives still ends `converged`/`done`, and its reply reaches the local fake of
//! Discord's REST API before the server exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use ed25519_dalek::{Signer, SigningKey};
use improv_mock::{MockResponse, MockServer, openai_chat};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
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

impl Served {
    fn exit_code(&mut self) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(start.elapsed() < PROMPT, "improv serve did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// An HTTP/1.1 POST to the server: the status (0 when the connection was reset) and the body.
fn post(host: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
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
    // A refusal may close the connection before the request is read (a reset): status 0.
    if s.read_to_string(&mut response).is_err() && response.len() < 12 {
        return (0, String::new());
    }
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `improv serve` in `ws`, its stderr echoed; returns once it says where it serves.
fn serve(ws: &Path, tmp: &Path, public_key: &str) -> Served {
    let mut child = common::improv_command()
        .current_dir(ws)
        .env_remove("IMPROV_STORE")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env("NO_COLOR", "1")
        .env("TMPDIR", tmp)
        .env("IMPROV_TEST_DISCORD_TOKEN", "bot-token")
        .env("IMPROV_TEST_DISCORD_KEY", public_key)
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
            // Echoed to the end, after the start line is found.
            let _ = tx.send(line);
        }
    });
    const AT: &str = "serving the stage view at http://";
    let line = loop {
        let line = lines
            .recv_timeout(PROMPT)
            .expect("improv serve says where it serves");
        if line.contains(AT) {
            break line;
        }
    };
    let host = line.split(AT).nth(1).unwrap().trim_end_matches('/');
    Served {
        child,
        host: host.to_string(),
    }
}

#[test]
fn sigterm_lets_a_chat_performance_under_way_finish_and_send_its_reply() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let created = || MockResponse::json(200, json!({ "id": "1500000000000000001" }));
    let discord = runtime
        .block_on(MockServer::start((0..4).map(|_| created()).collect()))
        .unwrap();
    // The lead's first request is answered slowly: SIGTERM arrives while it waits.
    let reply = openai_chat::tool_calls(&[("c1", "reply", r#"{"text": "Deployed."}"#)])
        .after(Duration::from_secs(3));
    let model = runtime
        .block_on(MockServer::start(vec![reply, openai_chat::text("done")]))
        .unwrap();
    let key = SigningKey::from_bytes(&[7u8; 32]);

    let root = tempfile::tempdir().unwrap();
    let (ws, tmp) = (root.path().join("ws"), root.path().join("tmp"));
    std::fs::create_dir(&ws).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    std::fs::write(
        ws.join("stage.toml"),
        format!(
            "[stage]\nname = \"team\"\nintent = \"Answer the team.\"\n\n[[actor]]\nname = \"lead\"\n\
             model = \"openai/gpt-5-mini\"\nbase_url = \"{}/v1\"\n\n[[door]]\nname = \"team\"\n\
             channel = \"discord\"\ntoken_env = \"IMPROV_TEST_DISCORD_TOKEN\"\n\
             secret_env = \"IMPROV_TEST_DISCORD_KEY\"\nallow = [\"2001\"]\napi_base = \"{}\"\n",
            model.url(),
            discord.url()
        ),
    )
    .unwrap();
    let mut served = serve(&ws, &tmp, &hex(&key.verifying_key().to_bytes()));

    let body = json!({
        "id": "1400000000000000001", "type": 2, "channel_id": "900",
        "member": { "user": { "id": "2001", "username": "alice" } },
        "data": { "name": "ask", "options": [{ "name": "text", "type": 3, "value": "deploy" }] },
    })
    .to_string();
    let signed = || {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string();
        let mut message = now.as_bytes().to_vec();
        message.extend_from_slice(body.as_bytes());
        let signature = hex(&key.sign(&message).to_bytes());
        post(
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
    let mut answer = (0, String::new());
    eventually(
        "the Discord door's listener to register its endpoint",
        || {
            answer = signed();
            !matches!(answer.0, 0 | 401)
        },
    );
    assert_eq!(answer.0, 200, "{answer:?}");
    // The performance is under way: its lead has asked the model, which answers in 3 s.
    eventually("the lead to ask the model", || !model.requests().is_empty());
    let pid = served.child.id() as i32;
    // SAFETY: sending a signal to our own child process.
    let sent = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(sent, 0);
    assert_eq!(served.exit_code(), Some(0));

    let posts: Vec<_> = discord
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/channels/900/messages")
        .collect();
    assert_eq!(posts.len(), 1, "the reply reached Discord once: {posts:?}");
    assert_eq!(posts[0].json().unwrap()["content"], "Deployed.");
    let out = common::improv_command()
        .current_dir(&ws)
        .env("NO_COLOR", "1")
        .args(["log", "--json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let logged: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(
        ["converged", "done"].contains(&logged[0]["status"].as_str().unwrap_or("")),
        "the performance under way finished: {logged:?}"
    );
}
