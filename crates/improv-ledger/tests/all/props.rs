//! The `record` and `query` props, called as the kernel calls them, on a real ledger file.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_kernel::{Access, PropContext};
use improv_ledger::{Ledger, Provenance, props};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;

fn context(dir: &Path) -> PropContext {
    PropContext::new(dir, "scout", "perf-7")
}

#[tokio::test]
async fn record_then_query_through_the_props() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open_in(dir.path(), Default::default()).unwrap());
    let props = props(ledger.clone());
    let (record, query) = (&props[0], &props[1]);
    assert_eq!(record.spec().name, "record");
    assert_eq!(query.spec().name, "query");
    assert_eq!(query.access(&json!({})), Access::Read);
    assert_eq!(record.access(&json!({})), Access::Write);
    let ctx = context(dir.path());

    for (name, severity) in [("leak", 3), ("typo", 1), ("crash", 5)] {
        let reply = record
            .call(
                json!({"collection": "findings", "entry": {"title": name, "severity": severity}}),
                &ctx,
            )
            .await
            .unwrap();
        assert!(reply.starts_with("recorded #"), "{reply}");
    }
    // Models sometimes send the entry as a JSON string; it is parsed.
    record
        .call(
            json!({"collection": "findings", "entry": "{\"title\": \"slow\", \"severity\": 2}"}),
            &ctx,
        )
        .await
        .unwrap();
    let entries = ledger.query("findings", &Default::default()).unwrap();
    assert_eq!(entries.len(), 4);
    assert_eq!(
        (entries[0].performance.as_str(), entries[0].actor.as_str()),
        ("perf-7", "scout")
    );

    let reply = query
        .call(json!({"collection": "findings", "where": {"severity": {">=": 3}}, "order_by": "-severity"}), &ctx)
        .await
        .unwrap();
    let lines: Vec<&str> = reply.lines().collect();
    assert_eq!(lines.len(), 2, "{reply}");
    assert!(
        lines[0].contains("\"crash\"") && lines[1].contains("\"leak\""),
        "{reply}"
    );

    let reply = query
        .call(json!({"collection": "findings", "limit": 1}), &ctx)
        .await
        .unwrap();
    assert!(reply.contains("(limit 1 reached"), "{reply}");
    let reply = query
        .call(json!({"collection": "nope"}), &ctx)
        .await
        .unwrap();
    assert_eq!(
        reply,
        "no entries: there is no collection nope; collections: findings"
    );
    let error = query
        .call(json!({"collection": "findings", "where": {"a b": 1}}), &ctx)
        .await
        .unwrap_err();
    assert!(
        error.message().contains("invalid field path `a b`"),
        "{error}"
    );
    let error = record.call(json!({"entry": {}}), &ctx).await.unwrap_err();
    assert!(
        error.message().contains("`collection` is required"),
        "{error}"
    );
}

#[tokio::test]
async fn a_rejected_record_tells_the_actor_what_to_fix() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Ledger::open_in(dir.path(), Default::default()).unwrap());
    let who = Provenance::new("p", "a");
    for i in 0..3 {
        ledger
            .record(
                "prices",
                json!({"sku": format!("s{i}"), "price": 1.5}),
                &who,
            )
            .unwrap();
    }
    ledger.settle("prices").unwrap();
    let props = improv_ledger::props(ledger.clone());
    let ctx = context(dir.path());
    let error = props[0]
        .call(
            json!({"collection": "prices", "entry": {"sku": "s9", "price": "12 EUR"}}),
            &ctx,
        )
        .await
        .unwrap_err();
    assert_eq!(
        error.message(),
        "rejected: field `price`: expected number, got string \"12 EUR\". The entry is kept in the rejects of prices; fix it and record it again."
    );
    let reply = props[0]
        .call(
            json!({"collection": "prices", "entry": {"sku": "s9", "price": 12, "currency": "EUR"}}),
            &ctx,
        )
        .await
        .unwrap();
    assert!(
        reply.contains("new fields currency are not in its settled schema"),
        "{reply}"
    );
    assert_eq!(
        ledger.rejects("prices", 5).unwrap()[0].performance,
        "perf-7"
    );
}

#[tokio::test]
async fn query_gives_the_whole_schema_a_summary_leaves_out() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(
        Ledger::open_in(
            dir.path(),
            improv_ledger::LedgerOptions {
                context_budget_bytes: 120,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let query = props(ledger.clone()).remove(1);
    let ctx = context(dir.path());
    let who = Provenance::new("perf-7", "scout");
    for i in 0..5 {
        let entry = json!({
            "title": format!("t{i}"), "severity": i,
            "where": {"file": "a.rs", "line": i, "column": 3, "function": "main"},
            "reporter": {"name": "scout", "team": "red", "email": "s@example.org"},
        });
        ledger.record("findings", entry, &who).unwrap();
    }
    let reply = query
        .call(json!({"collection": "findings", "schema": true}), &ctx)
        .await
        .unwrap();
    assert!(reply.contains("is not settled yet"), "{reply}");
    ledger.settle("findings").unwrap();
    let context = ledger.context_for(&[]).unwrap();
    assert!(
        context.contains("summarised") && !context.contains("function"),
        "{context}"
    );
    let reply = query
        .call(json!({"collection": "findings", "schema": true}), &ctx)
        .await
        .unwrap();
    let schema: serde_json::Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(
        schema["properties"]["where"]["properties"]["function"]["type"],
        "string"
    );
}
