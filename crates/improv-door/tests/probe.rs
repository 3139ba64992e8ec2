//! Probes before models, through the real launcher and an OpenAI-compatible mock that counts
//! requests: an idle probed door makes no model request however often it fires; a change
//! performs once, with what changed in the request.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestStage, context, store};
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
    let rows = store.firings("watch", 100).await.unwrap();
    assert_eq!(rows.len(), 50);
    assert!(rows[1].note.starts_with("fired"), "{:?}", rows[1]);
}
