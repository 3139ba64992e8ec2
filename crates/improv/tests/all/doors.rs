//! `improv serve` with a webhook door, through the real binary on a temp stage with a scripted
//! lead: a signed delivery performs once, its redelivery not again, a forged one is refused by
//! improv-door's signature check (401, nothing performed); SIGHUP after editing the stage file
//! opens the new door and says so; SIGTERM drains the doors and exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the server may take for anything here: generous, for a slow shared machine.
const PROMPT: Duration = Duration::from_secs(60);
const SECRET: &str = "the-door-secret";
const SECRET_ENV: &str = "IMPROV_TEST_HOOK_SECRET";

const STAGE: &str = "[stage]\nname = \"doors\"\nintent = \"Wait.\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"scripted/script.json\"\n\n[[door]]\nname = \"github\"\nwebhook = \"/doors/github\"\nsecret_env = \"IMPROV_TEST_HOOK_SECRET\"\nintent = \"Look at the delivery.\"\n";
const SECOND_DOOR: &str = "\n[[door]]\nname = \"second\"\nwebhook = \"/doors/second\"\nsecret_env = \"IMPROV_TEST_HOOK_SECRET\"\n";

/// A temp stage (ws/) and a private TMPDIR, removed with it.
struct Fixture {
    root: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::with_script(serde_json::json!([{"say": "Done."}]))
    }

    /// A stage whose lead plays `script` at each performance.
    fn with_script(script: Value) -> Fixture {
        let fixture = Fixture {
            root: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir(fixture.workspace()).unwrap();
        std::fs::create_dir(fixture.root.path().join("tmp")).unwrap();
        std::fs::write(fixture.workspace().join("script.json"), script.to_string()).unwrap();
        std::fs::write(fixture.stage_file(), STAGE).unwrap();
        fixture
    }

    fn workspace(&self) -> PathBuf {
        self.root.path().join("ws")
    }

    fn stage_file(&self) -> PathBuf {
        self.workspace().join("stage.toml")
    }

    fn improv(&self) -> std::process::Command {
        let mut c = common::improv_command();
        c.current_dir(self.workspace())
            .env_remove("OPENAI_API_KEY")
            .env_remove("ANTHROPIC_API_KEY")
            .env_remove("IMPROV_STORE")
            .env("NO_COLOR", "1")
            .env("TMPDIR", self.root.path().join("tmp"))
            .env(SECRET_ENV, SECRET)
            .stdin(Stdio::null());
        c
    }

    /// The performances `improv log --json` lists.
    fn performances(&self) -> Vec<Value> {
        let out = self.improv().args(["log", "--json"]).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// A running `improv serve`: its stderr line by line, its address and token.
struct Served {
    child: Child,
    stderr: mpsc::Receiver<String>,
    host: String,
    token: String,
}

impl Served {
    fn start(fixture: &Fixture) -> Served {
        Served::start_with(fixture.improv())
    }

    /// `improv serve` run by `command` (the binary, in the stage's folder, its environment set).
    fn start_with(mut command: std::process::Command) -> Served {
        let mut child = command
            .args(["serve", "--bind", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, stderr) = mpsc::channel();
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
            stderr,
            host: String::new(),
            token: String::new(),
        };
        let at = served.line_with("serving the stage view at ");
        served.host = at
            .split("serving the stage view at http://")
            .nth(1)
            .unwrap()
            .trim_end_matches('/')
            .to_string();
        let token = served.line_with("bearer token (shown once; kept in ");
        served.token = token.split("): ").nth(1).unwrap().to_string();
        served
    }

    /// The first line from now on that contains `text` (bounded).
    fn line_with(&self, text: &str) -> String {
        let deadline = Instant::now() + PROMPT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.contains(text) => return line,
                Ok(_) => {}
                Err(e) => panic!("no line with `{text}` from improv serve: {e}"),
            }
        }
    }

    /// An HTTP/1.1 request; the status and the body.
    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        let response = self.raw(method, path, headers, body);
        let status = response[9..12].parse().unwrap();
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    /// An HTTP/1.1 request; the whole response, head and body.
    fn raw(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> String {
        let mut s = std::net::TcpStream::connect(&self.host).unwrap();
        s.set_read_timeout(Some(PROMPT)).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.host,
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
        response
    }

    /// A delivery to door `door`, signed under `secret`.
    fn deliver(&self, door: &str, id: &str, secret: &str, body: &[u8]) -> (u16, String) {
        let response = self.deliver_raw(door, id, secret, body);
        let status = response[9..12].parse().unwrap();
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        (status, body)
    }

    /// A delivery to door `door`, signed under `secret`: the whole response.
    fn deliver_raw(&self, door: &str, id: &str, secret: &str, body: &[u8]) -> String {
        let signature = improv_door::webhook::sign(secret.as_bytes(), body);
        self.raw(
            "POST",
            &format!("/doors/{door}"),
            &[
                ("Content-Type", "application/json"),
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", id),
                ("X-Hub-Signature-256", &signature),
            ],
            body,
        )
    }

    /// `GET /doors` with the token.
    fn doors(&self) -> Value {
        let auth = format!("Bearer {}", self.token);
        let (status, body) = self.request("GET", "/doors", &[("Authorization", &auth)], b"");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Waits (bounded) for the server to exit; its exit code.
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

    fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, sig) }, 0);
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) until `check` holds.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < PROMPT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The firings `GET /doors` shows for door `name`.
fn firings(doors: &Value, name: &str) -> Vec<Value> {
    doors
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("no door `{name}` in {doors}"))["firings"]
        .as_array()
        .unwrap()
        .clone()
}

fn finished(fixture: &Fixture) -> bool {
    let all = fixture.performances();
    !all.is_empty() && all.iter().all(|p| p["status"] != "running")
}

#[test]
fn a_webhook_door_performs_each_signed_delivery_once_and_reloads_and_drains() {
    let fixture = Fixture::new();
    let served = Served::start(&fixture);
    let body = br#"{"ref": "refs/heads/main", "after": "abc123"}"#;

    // No token needed: the platform signs instead. A signed delivery starts one performance.
    let (status, answer) = served.deliver("github", "delivery-1", SECRET, body);
    assert_eq!(status, 202, "{answer}");
    let performance: Value = serde_json::from_str(&answer).unwrap();
    let id = performance["performance"].as_str().unwrap().to_string();
    eventually("the delivery's performance to finish", || {
        finished(&fixture)
    });
    let logged = fixture.performances();
    assert_eq!(
        logged.len(),
        1,
        "one performance for one delivery: {logged:?}"
    );
    assert!(id.starts_with(logged[0]["id"].as_str().unwrap()) || logged[0]["id"] == id.as_str());

    // The same delivery again: answered, not performed.
    let (status, answer) = served.deliver("github", "delivery-1", SECRET, body);
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("duplicate"), "{answer}");

    // A forged delivery (another secret): refused by improv-door's check, nothing performed.
    let (status, answer) = served.deliver("github", "delivery-2", "not-the-secret", body);
    assert_eq!(status, 401, "a forged delivery must be refused: {answer}");
    assert!(
        answer.contains(improv_door::webhook::STRANGER_ANSWER),
        "the refusal is improv-door's: {answer}"
    );
    let (status, answer) = served.request(
        "POST",
        "/doors/github",
        &[("X-GitHub-Delivery", "delivery-3")],
        body,
    );
    assert_eq!(
        status, 401,
        "an unsigned delivery must be refused: {answer}"
    );
    let (status, _) = served.deliver("nowhere", "delivery-4", SECRET, body);
    assert_eq!(status, 401);
    assert_eq!(
        fixture.performances().len(),
        1,
        "refused deliveries perform nothing"
    );
    assert_eq!(firings(&served.doors(), "github").len(), 1);
    // `improv door status` reads the same store the server keeps the firings in.
    let out = fixture
        .improv()
        .args(["door", "status", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(firings(&status, "github").len(), 1, "{status}");

    // GET /doors takes the token.
    let (status, _) = served.request("GET", "/doors", &[], b"");
    assert_eq!(status, 401);

    // SIGHUP after adding a door: it is opened, and said.
    let mut stage = std::fs::read_to_string(fixture.stage_file()).unwrap();
    stage.push_str(SECOND_DOOR);
    std::fs::write(fixture.stage_file(), stage).unwrap();
    served.signal(libc::SIGHUP);
    served.line_with("door `second` added");
    let (status, answer) = served.deliver("second", "delivery-5", SECRET, body);
    assert_eq!(status, 202, "the added door is open: {answer}");
    eventually("the second door's performance to finish", || {
        fixture.performances().len() == 2 && finished(&fixture)
    });
    assert_eq!(served.doors().as_array().unwrap().len(), 2);

    // SIGTERM drains the doors and stops cleanly.
    served.signal(libc::SIGTERM);
    served.line_with("the doors are drained");
    let mut served = served;
    assert_eq!(
        served.exit_code(),
        Some(0),
        "SIGTERM stops improv serve cleanly"
    );
}

/// SIGTERM while a delivery's performance runs: the server stops taking requests, the
/// performance finishes (its log says how it ended, not `running`), then improv exits 0.
#[test]
fn sigterm_lets_a_webhook_performance_under_way_finish() {
    let fixture = Fixture::with_script(serde_json::json!([
        {"say": "Working.", "calls": [{"name": "bash", "arguments": {"command": "sleep 2"}}]},
        {"say": "Done."}
    ]));
    let mut served = Served::start(&fixture);
    let (status, answer) = served.deliver("github", "delivery-1", SECRET, b"{}");
    assert_eq!(status, 202, "{answer}");
    served.signal(libc::SIGTERM);
    assert_eq!(served.exit_code(), Some(0));
    let logged = fixture.performances();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(
        logged[0]["status"], "done",
        "the performance under way finished: {logged:?}"
    );
}

/// `improv door pair CODE` lets in the stranger a chat door's gate gave that code, on the store
/// `improv serve` keeps the doors in (`.improv/doors.db`); an unknown or used code does nothing.
#[test]
fn door_pair_lets_in_the_sender_a_chat_door_gave_a_code() {
    use improv_channel::Inbound;
    use improv_channel::gate::{Admission, Gate, Limits};
    let fixture = Fixture::new();
    let state = fixture.workspace().join(".improv");
    std::fs::create_dir_all(&state).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let url = improv_store::StoreUrl::Sqlite(state.join("doors.db"));
    let store = improv_store::open(&url).unwrap();
    // The stage's own key, as the stage's door and `improv door pair` in its folder have it.
    let stage = improv_stage::Stage::load(&fixture.stage_file()).unwrap();
    let key = improv_door::expiry::stage_key(&stage);
    let gate = Gate::new(key, "chat", &[], store, Limits::default());
    let message = |id: &str| Inbound {
        platform: improv_stage::door::Channel::Telegram,
        conversation: "42".into(),
        thread: None,
        message_id: id.into(),
        sender_id: "1001".into(),
        sender_name: Some("@mallory".into()),
        text: "hello".into(),
    };
    let admit = |m: &Inbound| {
        rt.block_on(gate.admit(m, std::time::Instant::now()))
            .unwrap()
    };
    let Admission::Pair(code) = admit(&message("1")) else {
        panic!("a stranger gets a pairing code");
    };
    let pair = |code: &str| {
        fixture
            .improv()
            .args(["door", "pair", code])
            .output()
            .unwrap()
    };

    let out = pair("NOSUCHCODE");
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no pairing code"),
        "{out:?}"
    );
    assert_eq!(
        admit(&message("2")),
        Admission::Waiting,
        "not let in by a wrong code"
    );

    let out = pair(&code.to_lowercase());
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("may now come in through door `chat`"),
        "{out:?}"
    );
    assert_eq!(admit(&message("3")), Admission::Allowed);

    let out = pair(&code);
    assert!(!out.status.success(), "a code pairs once: {out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already used"),
        "{out:?}"
    );
}

/// A Slack door on `improv serve`: `POST /doors/NAME` reaches the endpoint its listener
/// registered, which checks Slack's signature (a forged request gets 401) and answers the URL
/// check with its challenge; no bearer token is involved.
#[test]
fn a_slack_door_is_answered_through_its_channel_endpoint() {
    let fixture = Fixture::new();
    let mut stage = std::fs::read_to_string(fixture.stage_file()).unwrap();
    // The URL check calls no Slack API: the port is never dialled.
    stage.push_str(
        "\n[[door]]\nname = \"team\"\nchannel = \"slack\"\ntoken_env = \"IMPROV_TEST_SLACK_TOKEN\"\nsecret_env = \"IMPROV_TEST_SLACK_SECRET\"\napi_base = \"http://127.0.0.1:9\"\n",
    );
    std::fs::write(fixture.stage_file(), stage).unwrap();
    let mut command = fixture.improv();
    command
        .env("IMPROV_TEST_SLACK_TOKEN", "xoxb-test")
        .env("IMPROV_TEST_SLACK_SECRET", "slack-signing-secret");
    let served = Served::start_with(command);
    let body = br#"{"type": "url_verification", "challenge": "the-challenge"}"#;
    let signed = |secret: &[u8]| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let signature = improv_channel::slack::sign(secret, now, body);
        served.request(
            "POST",
            "/doors/team",
            &[
                ("Content-Type", "application/json"),
                ("X-Slack-Request-Timestamp", &now.to_string()),
                ("X-Slack-Signature", &signature),
            ],
            body,
        )
    };
    let mut answer = (0, String::new());
    // Until its listener is up, the door answers as an unknown one would.
    eventually("the Slack door's listener to register its endpoint", || {
        answer = signed(b"slack-signing-secret");
        answer.0 != 401
    });
    assert_eq!(answer, (200, "the-challenge".to_string()));
    let (status, text) = signed(b"guessed");
    assert_eq!(status, 401, "a forged Slack request is refused: {text}");
}

/// A chat door whose signature check fails answers as an unknown door does, byte for byte
/// (but the date): an unsigned POST to a Slack door, a Discord door and a name the stage does
/// not have cannot be told apart, so no one learns which chat doors exist.
#[test]
fn chat_doors_answer_strangers_as_unknown_doors_do() {
    use ed25519_dalek::{Signer, SigningKey};
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let public: String = key
        .verifying_key()
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let fixture = Fixture::new();
    let mut stage = std::fs::read_to_string(fixture.stage_file()).unwrap();
    // Nothing here calls a platform's API: the port is never dialled.
    stage.push_str(
        "\n[[door]]\nname = \"team\"\nchannel = \"slack\"\ntoken_env = \"IMPROV_TEST_SLACK_TOKEN\"\n\
         secret_env = \"IMPROV_TEST_SLACK_SECRET\"\napi_base = \"http://127.0.0.1:9\"\n\
         \n[[door]]\nname = \"guild\"\nchannel = \"discord\"\ntoken_env = \"IMPROV_TEST_DISCORD_TOKEN\"\n\
         secret_env = \"IMPROV_TEST_DISCORD_KEY\"\napi_base = \"http://127.0.0.1:9\"\n",
    );
    std::fs::write(fixture.stage_file(), stage).unwrap();
    let mut command = fixture.improv();
    command
        .env("IMPROV_TEST_SLACK_TOKEN", "xoxb-test")
        .env("IMPROV_TEST_SLACK_SECRET", "slack-signing-secret")
        .env("IMPROV_TEST_DISCORD_TOKEN", "discord-test")
        .env("IMPROV_TEST_DISCORD_KEY", &public);
    let served = Served::start_with(command);
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    };
    let challenge = br#"{"type": "url_verification", "challenge": "c"}"#;
    let ping = br#"{"id": "1", "type": 1}"#;
    // Until their listeners are up, the doors answer as unknown ones would.
    eventually("both chat doors' listeners to register", || {
        let t = now();
        let slack = improv_channel::slack::sign(b"slack-signing-secret", t, challenge);
        let t = t.to_string();
        let slack = served.request(
            "POST",
            "/doors/team",
            &[
                ("X-Slack-Request-Timestamp", &t),
                ("X-Slack-Signature", &slack),
            ],
            challenge,
        );
        let mut message = t.as_bytes().to_vec();
        message.extend_from_slice(ping);
        let signature: String = key
            .sign(&message)
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let discord = served.request(
            "POST",
            "/doors/guild",
            &[
                ("X-Signature-Timestamp", &t),
                ("X-Signature-Ed25519", &signature),
            ],
            ping,
        );
        slack.0 == 200 && discord.0 == 200
    });
    let body = br#"{"type": "event_callback", "event": {"type": "message", "text": "hi"}}"#;
    let answer = |door: &str| {
        let response = served.raw(
            "POST",
            &format!("/doors/{door}"),
            &[("Content-Type", "application/json")],
            body,
        );
        // The only line that may differ is the date the server stamps.
        response
            .lines()
            .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let unknown = answer("nowhere");
    assert!(unknown.starts_with("HTTP/1.1 401"), "{unknown}");
    assert!(unknown.contains("signature check failed"), "{unknown}");
    assert_eq!(answer("team"), unknown, "the Slack door is told apart");
    assert_eq!(answer("guild"), unknown, "the Discord door is told apart");
}

/// Strangers get one answer whatever the door: an unknown door, a timed door, a webhook door
/// whose secret is not set, a forged and an unsigned delivery all answer the same 401 and body,
/// none naming the secret's variable, which the server logs for the director. Over the door's
/// `rate`, a signed delivery gets 429 with `Retry-After` and starts nothing.
#[test]
fn strangers_get_one_answer_whatever_the_door_and_a_flood_gets_429() {
    const UNSET: &str = "IMPROV_TEST_UNSET_HOOK_SECRET";
    let fixture = Fixture::new();
    let mut stage = std::fs::read_to_string(fixture.stage_file()).unwrap();
    stage.push_str("rate = \"2/h\"\n");
    stage.push_str(&format!(
        "\n[[door]]\nname = \"unset\"\nwebhook = \"/doors/unset\"\nsecret_env = \"{UNSET}\"\n\
         \n[[door]]\nname = \"tick\"\nevery = \"1h\"\nintent = \"Tick.\"\n"
    ));
    std::fs::write(fixture.stage_file(), stage).unwrap();
    let mut command = fixture.improv();
    command.env_remove(UNSET);
    let served = Served::start_with(command);
    let body = br#"{"zen": "Keep it logically awesome."}"#;
    let answers = [
        (
            "an unknown door",
            served.deliver("nowhere", "d1", SECRET, body),
        ),
        ("a timed door", served.deliver("tick", "d2", SECRET, body)),
        (
            "a door without its secret",
            served.deliver("unset", "d3", SECRET, body),
        ),
        (
            "a forged delivery",
            served.deliver("github", "d4", "guessed", body),
        ),
        (
            "an unsigned delivery",
            served.request(
                "POST",
                "/doors/github",
                &[("X-GitHub-Delivery", "d5")],
                body,
            ),
        ),
    ];
    let (first_what, first) = &answers[0];
    assert_eq!(first.0, 401, "{first_what}: {first:?}");
    assert!(first.1.contains("signature check failed"), "{first:?}");
    for (what, answer) in &answers {
        assert_eq!(answer, first, "{what} is told what {first_what} is");
        assert!(!answer.1.contains(UNSET), "{what}: {answer:?}");
    }
    served.line_with(UNSET);
    assert!(fixture.performances().is_empty(), "nothing was performed");

    // The door takes 2 an hour: a captured body re-sent with fresh ids starts no more.
    for id in ["r1", "r2"] {
        let (status, answer) = served.deliver("github", id, SECRET, body);
        assert_eq!(status, 202, "{answer}");
    }
    let response = served.deliver_raw("github", "r3", SECRET, body);
    assert!(response.starts_with("HTTP/1.1 429"), "{response}");
    let retry: u64 = response
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after: ")
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no Retry-After: {response}"))
        .trim()
        .parse()
        .unwrap();
    assert!((1..=1800).contains(&retry), "{retry}");
    eventually("the two performances to finish", || {
        fixture.performances().len() == 2 && finished(&fixture)
    });
    assert_eq!(fixture.performances().len(), 2, "the third started nothing");
}
