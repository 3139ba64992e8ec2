//! Operations across the fleet and behind a load balancer: the probes answer whatever the
//! `Host` (a balancer addresses the pod by its IP) while the API still refuses a foreign name;
//! `/readyz` loads the stage file again only when it changed; `/metrics` shows the store's
//! performances by state and its live and expired leases, every worker's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common::{TestStage, serve};
use improv_serve::ops::{Metrics, NotReady, Ops, OpsServer, Readiness};
use improv_store::{NewPerformance, SqliteStore, Store};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probes_answer_whatever_the_host_and_the_api_does_not() {
    let stage = TestStage::new(json!([{"say": "hi"}]), "");
    let server = serve(&stage).await;
    let client = improv_models::client_builder().unwrap().build().unwrap();
    for probe in ["/healthz", "/readyz"] {
        let r = client
            .get(server.url(probe))
            .header("host", "10.1.2.3:8080")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{probe} for the pod's IP");
    }
    let api = client
        .get(server.url("/stage"))
        .header("host", "10.1.2.3:8080")
        .bearer_auth(&server.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        api.status(),
        421,
        "the API still answers only to its own names"
    );
}

#[tokio::test]
async fn readiness_loads_the_stage_file_again_only_when_it_changed() {
    let stage = TestStage::new(json!([{"say": "hi"}]), "");
    let path = stage.path().join("stage.toml");
    let good = std::fs::read_to_string(&path).unwrap();
    let readiness = Readiness {
        stage: Some(path.clone()),
        ..Default::default()
    };
    for _ in 0..20 {
        readiness.check().await.unwrap();
    }
    assert_eq!(readiness.seen.loads(), 1, "loaded at every probe");

    std::fs::write(&path, "[stage\nname = ").unwrap();
    for _ in 0..5 {
        assert_eq!(readiness.check().await, Err(NotReady::Stage));
    }
    assert_eq!(readiness.seen.loads(), 2);

    std::fs::write(&path, &good).unwrap();
    readiness.check().await.unwrap();
    assert_eq!(readiness.seen.loads(), 3);
}

fn new(n: u32) -> NewPerformance {
    NewPerformance {
        id: Some(format!("p{n}")),
        stage: "stage.toml".into(),
        stage_name: None,
        intent: "count".into(),
        model: None,
        origin: "test".into(),
        budget: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_stores_performances_by_state_and_its_leases() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("s.db")).unwrap());
    for n in 1..=4 {
        store.enqueue(&new(n)).await.unwrap();
    }
    // One held, one whose lease ran out at once, one finished, one still queued.
    store
        .claim("a", Duration::from_secs(3600))
        .await
        .unwrap()
        .unwrap();
    let (lease, _) = store
        .claim("c", Duration::from_secs(3600))
        .await
        .unwrap()
        .unwrap();
    store
        .finish(&lease, improv_kernel::Outcome::Done, "")
        .await
        .unwrap();
    // Last: a claim takes an expired lease before a queued performance.
    store.claim("b", Duration::ZERO).await.unwrap().unwrap();

    let ops = Arc::new(Ops {
        metrics: Arc::new(Metrics::default()),
        readiness: Readiness {
            store: Some(store),
            ..Default::default()
        },
        running: None,
    });
    let server = OpsServer::bind("127.0.0.1:0".parse().unwrap(), ops)
        .await
        .unwrap();
    let url = format!("http://{}/metrics", server.addr().unwrap());
    tokio::spawn(server.run(std::future::pending()));
    let text = improv_models::client_builder()
        .unwrap()
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let value = |metric: &str, state: &str| {
        scrape
            .samples
            .iter()
            .find(|s| s.metric == metric && s.labels.get("state") == Some(state))
            .map(|s| match s.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
                ref other => panic!("{metric} is not a gauge: {other:?}"),
            })
            .unwrap_or_else(|| panic!("no {metric}{{state={state}}} in\n{text}"))
    };
    assert_eq!(value("improv_store_performances", "queued"), 1.0);
    assert_eq!(value("improv_store_performances", "leased"), 2.0);
    assert_eq!(value("improv_store_performances", "finished"), 1.0);
    assert_eq!(value("improv_store_leases", "active"), 1.0);
    assert_eq!(value("improv_store_leases", "expired"), 1.0);
}
