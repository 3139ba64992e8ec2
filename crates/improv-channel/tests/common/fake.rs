//! Local fakes of the platforms' HTTP APIs, speaking their real wire formats: the Telegram Bot
//! API (`getUpdates` with offsets and long polling, `sendMessage`), Slack's
//! `chat.postMessage`, Discord's "create message" with `nonce` + `enforce_nonce` de-duplication
//! and the edit of an interaction's deferred answer (`PATCH /webhooks/{application}/{token}/
//! messages/@original`, recorded with that path as its conversation, one message per token).
//! Each records every message it accepted, checks the bot token, and can be told to fail the
//! next sends: a 5xx, a 429, or accepting a message and never answering (a lost response).

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Telegram,
    Slack,
    Discord,
}

/// What the next send request meets.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Answered with this status; nothing recorded.
    Status(u16),
    /// A 429 asking to wait this many seconds (Telegram: whole seconds).
    RateLimited(f64),
    /// Recorded (the platform has it), then never answered.
    AcceptThenHang,
}

/// A message the fake platform accepted.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub conversation: String,
    pub text: String,
    pub reply_to: Option<String>,
    pub nonce: Option<String>,
    pub id: String,
}

pub struct State {
    kind: Kind,
    token: String,
    sent: Mutex<Vec<Recorded>>,
    faults: Mutex<VecDeque<Fault>>,
    updates: Mutex<Vec<Value>>,
    changed: Notify,
    nonces: Mutex<HashMap<String, String>>,
    send_requests: Mutex<u64>,
    offsets: Mutex<Vec<i64>>,
    /// Discord: every interaction token has expired (edits answer 401).
    tokens_expired: Mutex<bool>,
}

pub struct Fake {
    pub base: String,
    pub state: Arc<State>,
}

impl Fake {
    pub async fn start(kind: Kind, token: &str) -> Fake {
        let state = Arc::new(State {
            kind,
            token: token.into(),
            sent: Mutex::default(),
            faults: Mutex::default(),
            updates: Mutex::default(),
            changed: Notify::new(),
            nonces: Mutex::default(),
            send_requests: Mutex::new(0),
            offsets: Mutex::default(),
            tokens_expired: Mutex::new(false),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback({
            let state = state.clone();
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move { state.handle(method, uri, headers, body).await }
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let base = match kind {
            Kind::Telegram | Kind::Slack => format!("http://{addr}"),
            Kind::Discord => format!("http://{addr}/api/v10"),
        };
        Fake { base, state }
    }

    /// Discord: from now on every interaction token has expired, as after 15 minutes.
    pub fn expire_tokens(&self) {
        *self.state.tokens_expired.lock().unwrap() = true;
    }

    pub fn fail_next(&self, fault: Fault) {
        self.state.faults.lock().unwrap().push_back(fault);
    }

    pub fn sent(&self) -> Vec<Recorded> {
        self.state.sent.lock().unwrap().clone()
    }

    /// Send requests received, answered or not.
    pub fn send_requests(&self) -> u64 {
        *self.state.send_requests.lock().unwrap()
    }

    /// Waits until `n` messages were accepted (10 s at most, then panics).
    pub async fn wait_sent(&self, n: usize) -> Vec<Recorded> {
        let wait = async {
            loop {
                let changed = self.state.changed.notified();
                let sent = self.sent();
                if sent.len() >= n {
                    return sent;
                }
                changed.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("the fake never got {n} messages: {:?}", self.sent()))
    }

    /// Telegram: queues an update for `getUpdates`.
    pub fn push_update(&self, update: Value) {
        self.state.updates.lock().unwrap().push(update);
        self.state.changed.notify_waiters();
    }

    /// Telegram: the offset of each `getUpdates` request, in order.
    pub fn offsets(&self) -> Vec<i64> {
        self.state.offsets.lock().unwrap().clone()
    }

    /// Telegram: updates not yet confirmed by an offset past them.
    pub fn unconfirmed_updates(&self) -> usize {
        self.state.updates.lock().unwrap().len()
    }
}

impl State {
    async fn handle(&self, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let path = uri.path().to_string();
        if self.kind == Kind::Discord && method == Method::PATCH {
            return self.discord_edit(&path, body).await;
        }
        if method != Method::POST {
            return StatusCode::METHOD_NOT_ALLOWED.into_response();
        }
        match self.kind {
            Kind::Telegram => self.telegram(&path, body).await,
            Kind::Slack => self.slack(&path, &headers, body).await,
            Kind::Discord => self.discord(&path, &headers, body).await,
        }
    }

    fn fault(&self) -> Option<Fault> {
        *self.send_requests.lock().unwrap() += 1;
        self.faults.lock().unwrap().pop_front()
    }

    fn record(&self, r: Recorded) {
        self.sent.lock().unwrap().push(r);
        self.changed.notify_waiters();
    }

    fn next_id(&self) -> u64 {
        self.sent.lock().unwrap().len() as u64 + 1000
    }

    async fn hang() -> Response {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        StatusCode::GATEWAY_TIMEOUT.into_response()
    }

    async fn telegram(&self, path: &str, body: Value) -> Response {
        let Some((token, method)) = path.strip_prefix("/bot").and_then(|p| p.split_once('/'))
        else {
            return StatusCode::NOT_FOUND.into_response();
        };
        if token != self.token {
            return tg_error(401, "Unauthorized", None);
        }
        match method {
            "getUpdates" => self.get_updates(body).await,
            "sendMessage" => {
                let fault = self.fault();
                match fault {
                    Some(Fault::Status(s)) => return tg_error(s, "Internal Server Error", None),
                    Some(Fault::RateLimited(s)) => {
                        return tg_error(429, "Too Many Requests", Some(s as u64));
                    }
                    _ => {}
                }
                let chat = body["chat_id"].to_string().trim_matches('"').to_string();
                let id = self.next_id();
                self.record(Recorded {
                    conversation: chat.clone(),
                    text: body["text"].as_str().unwrap_or_default().into(),
                    reply_to: body["reply_to_message_id"].as_i64().map(|i| i.to_string()),
                    nonce: None,
                    id: id.to_string(),
                });
                if matches!(fault, Some(Fault::AcceptThenHang)) {
                    return Self::hang().await;
                }
                axum::Json(json!({
                    "ok": true,
                    "result": { "message_id": id, "date": 0, "chat": { "id": chat.parse::<i64>().unwrap_or(0), "type": "private" }, "text": body["text"] }
                }))
                .into_response()
            }
            _ => tg_error(404, "Not Found: method not found", None),
        }
    }

    async fn get_updates(&self, body: Value) -> Response {
        let offset = body["offset"].as_i64().unwrap_or(0);
        self.offsets.lock().unwrap().push(offset);
        let wait = Duration::from_secs(body["timeout"].as_u64().unwrap_or(0));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.changed.notified();
            let ready: Vec<Value> = {
                let mut updates = self.updates.lock().unwrap();
                // Asking with an offset confirms every update before it: Telegram forgets them.
                updates.retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
                updates.clone()
            };
            if !ready.is_empty() || tokio::time::Instant::now() >= deadline {
                return axum::Json(json!({ "ok": true, "result": ready })).into_response();
            }
            let _ = tokio::time::timeout_at(deadline, changed).await;
        }
    }

    async fn slack(&self, path: &str, headers: &HeaderMap, body: Value) -> Response {
        if path != "/chat.postMessage" {
            return axum::Json(json!({ "ok": false, "error": "unknown_method" })).into_response();
        }
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Bearer {}", self.token)) {
            return axum::Json(json!({ "ok": false, "error": "invalid_auth" })).into_response();
        }
        let fault = self.fault();
        match fault {
            Some(Fault::Status(s)) => return StatusCode::from_u16(s).unwrap().into_response(),
            Some(Fault::RateLimited(s)) => {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("Retry-After", (s as u64).to_string())],
                    axum::Json(json!({ "ok": false, "error": "ratelimited" })),
                )
                    .into_response();
            }
            _ => {}
        }
        let ts = format!("1764400000.{:06}", self.next_id());
        let channel = body["channel"].as_str().unwrap_or_default().to_string();
        self.record(Recorded {
            conversation: channel.clone(),
            text: body["text"].as_str().unwrap_or_default().into(),
            reply_to: body["thread_ts"].as_str().map(str::to_string),
            nonce: None,
            id: ts.clone(),
        });
        if matches!(fault, Some(Fault::AcceptThenHang)) {
            return Self::hang().await;
        }
        axum::Json(json!({ "ok": true, "channel": channel, "ts": ts, "message": { "text": body["text"] } }))
            .into_response()
    }

    /// The edit of a deferred answer: the token is the credential (no bot token); the same
    /// message id for every edit through one token.
    async fn discord_edit(&self, path: &str, body: Value) -> Response {
        let Some(hook) = path
            .strip_prefix("/api/v10/webhooks/")
            .and_then(|p| p.strip_suffix("/messages/@original"))
            .filter(|p| p.split('/').count() == 2)
        else {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({ "message": "Unknown Webhook", "code": 10015 })),
            )
                .into_response();
        };
        // A token Discord no longer honours (older than 15 minutes): the fake knows one by
        // name, or every token once told they expired.
        if hook.contains("/expired") || *self.tokens_expired.lock().unwrap() {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({ "message": "Invalid Webhook Token", "code": 50027 })),
            )
                .into_response();
        }
        let fault = self.fault();
        if let Some(Fault::Status(s)) = fault {
            return StatusCode::from_u16(s).unwrap().into_response();
        }
        let id = self
            .nonces
            .lock()
            .unwrap()
            .entry(format!("webhook {hook}"))
            .or_insert_with(|| format!("14{:017}", self.next_id()))
            .clone();
        self.record(Recorded {
            conversation: format!("webhooks/{hook}/messages/@original"),
            text: body["content"].as_str().unwrap_or_default().into(),
            reply_to: None,
            nonce: None,
            id: id.clone(),
        });
        if matches!(fault, Some(Fault::AcceptThenHang)) {
            return Self::hang().await;
        }
        axum::Json(json!({ "id": id, "content": body["content"], "type": 20 })).into_response()
    }

    async fn discord(&self, path: &str, headers: &HeaderMap, body: Value) -> Response {
        let Some(channel) = path
            .strip_prefix("/api/v10/channels/")
            .and_then(|p| p.strip_suffix("/messages"))
        else {
            return (
                StatusCode::NOT_FOUND,
                axum::Json(json!({ "message": "404: Not Found", "code": 0 })),
            )
                .into_response();
        };
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Bot {}", self.token)) {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({ "message": "401: Unauthorized", "code": 0 })),
            )
                .into_response();
        }
        let fault = self.fault();
        match fault {
            Some(Fault::Status(s)) => return StatusCode::from_u16(s).unwrap().into_response(),
            Some(Fault::RateLimited(s)) => {
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    axum::Json(json!({ "message": "You are being rate limited.", "retry_after": s, "global": false })),
                )
                    .into_response();
            }
            _ => {}
        }
        let nonce = body["nonce"].as_str().map(str::to_string);
        let enforce = body["enforce_nonce"].as_bool() == Some(true);
        // enforce_nonce: a message this bot created with the same nonce is returned, not made again.
        let existing = match (&nonce, enforce) {
            (Some(n), true) => self.nonces.lock().unwrap().get(n).cloned(),
            _ => None,
        };
        let id = match existing {
            Some(id) => id,
            None => {
                let id = format!("13{:017}", self.next_id());
                if let (Some(n), true) = (&nonce, enforce) {
                    self.nonces.lock().unwrap().insert(n.clone(), id.clone());
                }
                self.record(Recorded {
                    conversation: channel.into(),
                    text: body["content"].as_str().unwrap_or_default().into(),
                    reply_to: body["message_reference"]["message_id"]
                        .as_str()
                        .map(str::to_string),
                    nonce: nonce.clone(),
                    id: id.clone(),
                });
                id
            }
        };
        if matches!(fault, Some(Fault::AcceptThenHang)) {
            return Self::hang().await;
        }
        axum::Json(json!({ "id": id, "channel_id": channel, "content": body["content"], "nonce": nonce, "type": 0 }))
            .into_response()
    }
}

fn tg_error(code: u16, description: &str, retry_after: Option<u64>) -> Response {
    let mut body = json!({ "ok": false, "error_code": code, "description": description });
    if let Some(s) = retry_after {
        body["parameters"] = json!({ "retry_after": s });
    }
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}
