//! `improv-mock SCRIPT.json`: serves the responses of a JSON script on a local port, prints its
//! URL and runs until interrupted. A script is an array of responses, each one of
//! `{"json": {…}}`, `{"sse": ["…data…"]}`, `{"raw_sse": "…"}`, `{"body": "…"}` or a turn in a
//! wire format, `{"openai_chat" | "openai_responses" | "anthropic": {"text": "…", "calls":
//! [["id", "name", "{…}"]], "stop": "…"}}`, with optional `"status"`, `"headers"`, `"cut"` and
//! `"delay_ms"`.

use improv_mock::{MockResponse, MockServer, Turn, anthropic, openai_chat, openai_responses};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Deserialize, Default)]
struct TurnSpec {
    #[serde(default)]
    text: String,
    #[serde(default)]
    calls: Vec<(String, String, String)>,
    stop: Option<String>,
}

impl TurnSpec {
    fn turn(&self) -> Turn {
        let mut t = self
            .calls
            .iter()
            .fold(Turn::text(&self.text), |t, (id, name, args)| {
                t.call(id, name, args)
            });
        t.stop = self.stop.clone();
        t
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    status: Option<u16>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    json: Option<serde_json::Value>,
    sse: Option<Vec<String>>,
    raw_sse: Option<String>,
    body: Option<String>,
    openai_chat: Option<TurnSpec>,
    openai_responses: Option<TurnSpec>,
    anthropic: Option<TurnSpec>,
    #[serde(default)]
    cut: bool,
    #[serde(default)]
    delay_ms: u64,
}

impl Entry {
    fn response(self) -> MockResponse {
        let mut r = if let Some(v) = self.json {
            MockResponse::json(200, v)
        } else if let Some(events) = self.sse {
            let events: Vec<&str> = events.iter().map(String::as_str).collect();
            MockResponse::sse(&events)
        } else if let Some(raw) = self.raw_sse {
            MockResponse::raw_sse(&raw)
        } else if let Some(t) = self.openai_chat {
            openai_chat::response(&t.turn())
        } else if let Some(t) = self.openai_responses {
            openai_responses::response(&t.turn())
        } else if let Some(t) = self.anthropic {
            anthropic::response(&t.turn())
        } else {
            MockResponse::new(200, self.body.unwrap_or_default())
        };
        if let Some(status) = self.status {
            r.status = status;
        }
        for (k, v) in self.headers {
            r = r.header(&k, &v);
        }
        if self.cut {
            r = r.cut();
        }
        if self.delay_ms > 0 {
            r = r.after(Duration::from_millis(self.delay_ms));
        }
        r
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!(
            "usage: improv-mock SCRIPT.json   (a JSON array of responses; see the crate docs)"
        );
        return ExitCode::from(2);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("improv-mock: cannot read {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let entries: Vec<Entry> = match serde_json::from_str(&text) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("improv-mock: {path}:{}:{}: {e}", e.line(), e.column());
            return ExitCode::FAILURE;
        }
    };
    let server = match MockServer::start(entries.into_iter().map(Entry::response).collect()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("improv-mock: cannot listen on 127.0.0.1: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", server.url());
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
