//! [`StoreLayer`]: a layer that overrides nothing forwards each method to the inner store's
//! method of the same name, and one that overrides a method still forwards every other. The
//! inner store answers every call with an error naming the method called, so a default that
//! forwards to the wrong method (or not at all) shows as the wrong name.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use async_trait::async_trait;
use improv_kernel::{Event, Outcome};
use improv_store::{
    Answer, ApprovalAsk, ApprovalRecord, Counts, Firing, Lease, ListFilter, NewPerformance, Note,
    OutboxEntry, OutboxKey, OutboxMessage, PerformanceRecord, Progress, Serving, StageKey,
    Stopping, Store, StoreError, StoreLayer,
};
use serde_json::json;
use std::time::Duration;

/// Answers every call with [`StoreError::Backend`] whose message is the method's name.
struct Named;

fn called<T>(method: &str) -> Result<T, StoreError> {
    Err(StoreError::Backend {
        store: "named".into(),
        message: method.into(),
    })
}

#[async_trait]
impl Store for Named {
    fn describe(&self) -> String {
        "describe".into()
    }
    async fn migrate(&self) -> Result<u32, StoreError> {
        called("migrate")
    }
    async fn enqueue(&self, _: &NewPerformance) -> Result<String, StoreError> {
        called("enqueue")
    }
    async fn claim_among(
        &self,
        _: &str,
        _: Duration,
        _: &Serving,
    ) -> Result<Option<(Lease, PerformanceRecord)>, StoreError> {
        called("claim_among")
    }
    async fn renew(&self, _: &Lease, _: Duration) -> Result<Lease, StoreError> {
        called("renew")
    }
    async fn release(&self, _: &Lease) -> Result<(), StoreError> {
        called("release")
    }
    async fn finish(&self, _: &Lease, _: Outcome, _: &str) -> Result<(), StoreError> {
        called("finish")
    }
    async fn performance(&self, _: &str) -> Result<PerformanceRecord, StoreError> {
        called("performance")
    }
    async fn list(&self, _: &ListFilter) -> Result<Vec<PerformanceRecord>, StoreError> {
        called("list")
    }
    async fn append(&self, _: &Lease, _: &[Event]) -> Result<(), StoreError> {
        called("append")
    }
    async fn events(&self, _: &str, _: u64, _: usize) -> Result<Vec<Event>, StoreError> {
        called("events")
    }
    async fn wait_events(&self, _: &str, _: u64, _: Duration) -> Result<bool, StoreError> {
        called("wait_events")
    }
    async fn claim_firing(&self, _: &StageKey, _: &Firing) -> Result<bool, StoreError> {
        called("claim_firing")
    }
    async fn update_firing(&self, _: &StageKey, _: &Firing) -> Result<(), StoreError> {
        called("update_firing")
    }
    async fn firings(&self, _: &StageKey, _: &str, _: usize) -> Result<Vec<Firing>, StoreError> {
        called("firings")
    }
    async fn outbox_put(&self, _: &OutboxMessage) -> Result<OutboxEntry, StoreError> {
        called("outbox_put")
    }
    async fn outbox_pending(
        &self,
        _: &StageKey,
        _: &str,
        _: usize,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        called("outbox_pending")
    }
    async fn outbox_sent(&self, _: &OutboxKey, _: &str) -> Result<(), StoreError> {
        called("outbox_sent")
    }
    async fn get(&self, _: &str, _: &str) -> Result<Option<serde_json::Value>, StoreError> {
        called("get")
    }
    async fn put(
        &self,
        _: &str,
        _: &str,
        _: &serde_json::Value,
        _: bool,
    ) -> Result<bool, StoreError> {
        called("put")
    }
    async fn get_versioned(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Option<improv_store::Versioned>, StoreError> {
        called("get_versioned")
    }
    async fn put_if(
        &self,
        _: &str,
        _: &str,
        _: Option<i64>,
        _: &serde_json::Value,
    ) -> Result<bool, StoreError> {
        called("put_if")
    }
    async fn sweep(&self, _: &str, _: &improv_store::Sweep) -> Result<u64, StoreError> {
        called("sweep")
    }
    async fn sweep_outbox(&self, _: i64, _: usize) -> Result<u64, StoreError> {
        called("sweep_outbox")
    }
    async fn sweep_firings(
        &self,
        _: &StageKey,
        _: i64,
        _: usize,
        _: usize,
    ) -> Result<u64, StoreError> {
        called("sweep_firings")
    }
    async fn sweep_abandoned_firings(
        &self,
        _: &StageKey,
        _: i64,
        _: usize,
        _: usize,
    ) -> Result<u64, StoreError> {
        called("sweep_abandoned_firings")
    }
    async fn sweep_door_performances(
        &self,
        _: &StageKey,
        _: i64,
        _: usize,
        _: usize,
    ) -> Result<u64, StoreError> {
        called("sweep_door_performances")
    }
    async fn counts(&self) -> Result<Counts, StoreError> {
        called("counts")
    }
    async fn wait_for_work(&self, _: Duration) -> Result<(), StoreError> {
        called("wait_for_work")
    }
    async fn send_note(&self, _: &str, _: &str) -> Result<Note, StoreError> {
        called("send_note")
    }
    async fn notes(&self, _: &str, _: u64) -> Result<Vec<Note>, StoreError> {
        called("notes")
    }
    async fn wait_notes(&self, _: &str, _: u64, _: Duration) -> Result<bool, StoreError> {
        called("wait_notes")
    }
    async fn ask_approval(&self, _: &Lease, _: &ApprovalAsk) -> Result<u64, StoreError> {
        called("ask_approval")
    }
    async fn answer_approval(
        &self,
        _: &str,
        _: u64,
        _: Answer,
        _: Option<&str>,
    ) -> Result<bool, StoreError> {
        called("answer_approval")
    }
    async fn approvals(&self, _: &str) -> Result<Vec<ApprovalRecord>, StoreError> {
        called("approvals")
    }
    async fn wait_answer(&self, _: &str, _: u64, _: Duration) -> Result<bool, StoreError> {
        called("wait_answer")
    }
    async fn stop(&self, _: &str) -> Result<Stopping, StoreError> {
        called("stop")
    }
    async fn progress(&self, _: &str) -> Result<Progress, StoreError> {
        called("progress")
    }
    async fn wait_progress(
        &self,
        _: &str,
        _: &Progress,
        _: Duration,
    ) -> Result<Progress, StoreError> {
        called("wait_progress")
    }
    async fn stops_requested(&self, _: &str) -> Result<Vec<String>, StoreError> {
        called("stops_requested")
    }
    async fn wait_stop(&self, _: u64, _: Duration) -> Result<u64, StoreError> {
        called("wait_stop")
    }
}

/// Overrides nothing.
struct Through(Named);

impl StoreLayer for Through {
    fn inner(&self) -> &dyn Store {
        &self.0
    }
}

/// Overrides `append` only, as the slow store of a test would.
struct OwnAppend(Named);

#[async_trait]
impl StoreLayer for OwnAppend {
    fn inner(&self) -> &dyn Store {
        &self.0
    }
    async fn append(&self, _: &Lease, _: &[Event]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The method each call reached: the inner store's answer, or `ok` when the layer answered.
fn reached<T>(answer: Result<T, StoreError>) -> String {
    match answer {
        Ok(_) => "ok".into(),
        Err(StoreError::Backend { message, .. }) => message,
        Err(other) => panic!("unexpected error {other}"),
    }
}

/// Calls every method of `store` once; returns what each reached, in the trait's order.
async fn call_all(store: &dyn Store) -> Vec<String> {
    let lease = Lease {
        performance: "p".into(),
        worker: "w".into(),
        epoch: 1,
        expires_at: 0,
    };
    let firing = Firing {
        door: "d".into(),
        due: 0,
        performance: None,
        note: String::new(),
    };
    let key = OutboxKey {
        performance: "p".into(),
        seq: 1,
    };
    let message = OutboxMessage {
        key: key.clone(),
        stage: "name:s".into(),
        door: "d".into(),
        conversation: "c".into(),
        body: json!("hi"),
    };
    let new = NewPerformance {
        id: None,
        stage: "s".into(),
        stage_name: None,
        intent: "i".into(),
        model: None,
        origin: "test".into(),
        budget: None,
    };
    let ttl = Duration::from_secs(1);
    let stage = StageKey {
        name: "s".to_string().into(),
        path: "s".into(),
    };
    let ask = ApprovalAsk {
        actor: "a".into(),
        prop: "bash".into(),
        subject: "s".into(),
        rule: "r".into(),
    };
    vec![
        store.describe(),
        reached(store.migrate().await),
        reached(store.enqueue(&new).await),
        reached(store.claim_among("w", ttl, &Serving::Any).await),
        reached(store.renew(&lease, ttl).await),
        reached(store.release(&lease).await),
        reached(store.finish(&lease, Outcome::Done, "r").await),
        reached(store.performance("p").await),
        reached(store.list(&ListFilter::default()).await),
        reached(store.append(&lease, &[]).await),
        reached(store.events("p", 0, 0).await),
        reached(store.wait_events("p", 0, ttl).await),
        reached(store.claim_firing(&stage, &firing).await),
        reached(store.update_firing(&stage, &firing).await),
        reached(store.firings(&stage, "d", 1).await),
        reached(store.outbox_put(&message).await),
        reached(store.outbox_pending(&stage, "d", 1).await),
        reached(store.outbox_sent(&key, "x").await),
        reached(store.get("s", "k").await),
        reached(store.put("s", "k", &json!(1), false).await),
        reached(store.counts().await),
        reached(store.wait_for_work(ttl).await),
        reached(store.send_note("p", "n").await),
        reached(store.notes("p", 0).await),
        reached(store.wait_notes("p", 0, ttl).await),
        reached(store.ask_approval(&lease, &ask).await),
        reached(store.answer_approval("p", 1, Answer::Once, None).await),
        reached(store.approvals("p").await),
        reached(store.wait_answer("p", 1, ttl).await),
        reached(store.stop("p").await),
        reached(store.progress("p").await),
        reached(store.wait_progress("p", &Progress::default(), ttl).await),
        reached(store.stops_requested("w").await),
        reached(store.wait_stop(0, ttl).await),
        reached(store.sweep_door_performances(&stage, 0, 1, 1).await),
    ]
}

const METHODS: [&str; 35] = [
    "describe",
    "migrate",
    "enqueue",
    "claim_among",
    "renew",
    "release",
    "finish",
    "performance",
    "list",
    "append",
    "events",
    "wait_events",
    "claim_firing",
    "update_firing",
    "firings",
    "outbox_put",
    "outbox_pending",
    "outbox_sent",
    "get",
    "put",
    "counts",
    "wait_for_work",
    "send_note",
    "notes",
    "wait_notes",
    "ask_approval",
    "answer_approval",
    "approvals",
    "wait_answer",
    "stop",
    "progress",
    "wait_progress",
    "stops_requested",
    "wait_stop",
    "sweep_door_performances",
];

#[tokio::test]
async fn a_layer_that_overrides_nothing_forwards_each_method_to_itself() {
    assert_eq!(call_all(&Named).await, METHODS, "the inner store itself");
    assert_eq!(call_all(&Through(Named)).await, METHODS);
}

#[tokio::test]
async fn a_layer_that_overrides_one_method_still_forwards_the_rest() {
    let expected: Vec<&str> = METHODS
        .iter()
        .map(|m| if *m == "append" { "ok" } else { m })
        .collect();
    assert_eq!(call_all(&OwnAppend(Named)).await, expected);
}
