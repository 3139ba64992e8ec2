//! Probes before models, through the real launcher and an OpenAI-compatible mock that counts
//! requests: an idle probed door makes no model request however often it fires; a change
//! performs once, with what changed in the request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{TestStage, context, store};
use improv_door::expiry::stage_key;
use improv_door::timed::Timed;
use improv_door::{PerformLauncher, SimClock};
use improv_mock::{MockServer, openai_chat};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn an_idle_probed_door_calls_no_model_and_a_change_calls_it_once() {
    let server = MockServer::start(vec![openai_chat::text("noted")])
        .await
        .unwrap();
    let t = TestStage::new(&format!(
        "[[actor]]\nname = \"lead\"\nmodel = \"openai/gpt-5-mini\"\nbase_url = \"{}/v1\"\n\
         props = [\"read\"]\n\n[[door]]\nname = \"watch\"\nevery = \"30m\"\n\
         probe = [\"cat inbox.txt\"]\nintent = \"Something changed: {{probe_diff}}\"\n",
        server.url()
    ));
    std::fs::write(t.path().join("inbox.txt"), "nothing yet\n").unwrap();
    let clock = Arc::new(SimClock::new(1_795_651_200_000 + 60_000));
    let store = store(&t.db()).await;
    let ctx = context(
        &t.stage,
        "watch",
        store.clone(),
        Arc::new(PerformLauncher),
        clock.clone(),
    );
    let mut timed = Timed::open(ctx).await.unwrap().unwrap();
    for _ in 0..48 {
        clock.advance(Duration::from_secs(1800));
        timed.tick().await.unwrap();
    }
    assert_eq!(
        server.requests().len(),
        0,
        "a day of an idle door: no model request"
    );
    std::fs::write(t.path().join("inbox.txt"), "a new letter\n").unwrap();
    clock.advance(Duration::from_secs(1800));
    timed.tick().await.unwrap();
    let requests = server.requests();
    assert_eq!(requests.len(), 1, "the change performs once");
    let body = String::from_utf8_lossy(&requests[0].body).into_owned();
    assert!(body.contains("a new letter"), "{body}");
    clock.advance(Duration::from_secs(1800));
    timed.tick().await.unwrap();
    assert_eq!(server.requests().len(), 1, "no change since: no request");
    let rows = store
        .firings(&stage_key(&t.stage), "watch", 100)
        .await
        .unwrap();
    assert_eq!(rows.len(), 50);
    assert!(rows[1].note.starts_with("fired"), "{:?}", rows[1]);
}

const CANARY: &str = "CANARY-7f3e9a1c-the-door-secret";

/// A probed door on a stage whose workspace holds a `.env` with a canary, the mock model behind
/// its lead; `edges` is put under `[edges]` (before the door). Ticks once to keep the probes'
/// baseline, changes `inbox.txt`, ticks again (a change performs); returns every byte that went
/// out: the model requests and the probes' outputs kept in the store, and the firings' notes.
async fn probe_env(edges: &str) -> (String, Vec<String>) {
    let server = MockServer::start(vec![openai_chat::text("noted")])
        .await
        .unwrap();
    let t = TestStage::new(&format!(
        "[[actor]]\nname = \"lead\"\nmodel = \"openai/gpt-5-mini\"\nbase_url = \"{}/v1\"\n\
         props = [\"read\"]\n\n{edges}\n\n[[door]]\nname = \"watch\"\nevery = \"30m\"\n\
         probe = [\"cat .env\", \"cat inbox.txt\"]\nintent = \"Something changed: {{probe_diff}}\"\n",
        server.url()
    ));
    std::fs::write(t.path().join(".env"), format!("API_KEY={CANARY}\n")).unwrap();
    std::fs::write(t.path().join("inbox.txt"), "nothing yet\n").unwrap();
    let clock = Arc::new(SimClock::new(1_795_651_200_000 + 60_000));
    let store = store(&t.db()).await;
    let ctx = context(
        &t.stage,
        "watch",
        store.clone(),
        Arc::new(PerformLauncher),
        clock.clone(),
    );
    let mut timed = Timed::open(ctx).await.unwrap().unwrap();
    for n in 0..2 {
        std::fs::write(t.path().join("inbox.txt"), format!("letter {n}\n")).unwrap();
        clock.advance(Duration::from_secs(1800));
        timed.tick().await.unwrap();
    }
    let mut out: String = server
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    let kept = store
        .get(
            improv_door::probe::SCOPE,
            &improv_door::kept::key(&stage_key(&t.stage), "watch"),
        )
        .await
        .unwrap();
    out.push_str(&kept.map(|v| v.to_string()).unwrap_or_default());
    let notes = store
        .firings(&stage_key(&t.stage), "watch", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.note)
        .collect();
    (out, notes)
}

/// Attack: a probe `cat .env` on a default stage. The sandbox covers `.env` for every command,
/// probes included: the canary reaches neither the store nor the model, whose request shows
/// the probe could not read it.
#[tokio::test]
async fn a_probe_cannot_read_env_and_its_canary_reaches_no_model() {
    let (out, notes) = probe_env("").await;
    assert!(!out.contains(CANARY), "the canary got out: {out}");
    assert!(
        out.contains("letter 1"),
        "the change performed: {out} {notes:?}"
    );
}

/// Attack: with the sandbox told to hide nothing, a `deny` command rule alone keeps a probe
/// from `.env`, exactly as it keeps an actor's `bash` call from it: the probe does not run, the
/// canary goes nowhere, and the door's status says why.
#[tokio::test]
async fn a_deny_rule_refuses_a_probe_as_it_refuses_an_actors_command() {
    let rule =
        "[edges]\nhidden = []\n\n[[edges.rule]]\ncommand = \"cat .env*\"\ndecision = \"deny\"";
    let (out, notes) = probe_env(rule).await;
    assert!(!out.contains(CANARY), "the canary got out: {out}");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("the probe `cat .env` is denied by the stage's edges")),
        "{notes:?}"
    );
}

/// An `ask` rule on a probe is refused: no director is at the terminal of a door's firing.
#[tokio::test]
async fn an_ask_rule_on_a_probe_is_refused_with_a_note() {
    let rule = "[edges]\nhidden = []\n\n[[edges.rule]]\ncommand = \"cat .env\"\ndecision = \"ask\"";
    let (out, notes) = probe_env(rule).await;
    assert!(!out.contains(CANARY), "the canary got out: {out}");
    assert!(
        notes
            .iter()
            .any(|n| n.contains("needs the director's approval")
                && n.contains("no director is at the terminal")),
        "{notes:?}"
    );
}
