//! One truth about a collection and about a query: a settled collection reads as settled
//! wherever its state is shown (the info the API sends, the CLI's line), and a query with an
//! unknown operator or a limit below 1 is refused with a message instead of answering `[]` or
//! everything.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_ledger::{Ledger, LedgerOptions, Provenance, Query, Stability};
use serde_json::json;

fn who() -> Provenance {
    Provenance::new("perf-1", "lead")
}

fn ledger(dir: &tempfile::TempDir) -> Ledger {
    Ledger::open_in(dir.path().join(".improv"), LedgerOptions::default()).unwrap()
}

#[test]
fn a_settled_collection_is_settled_in_its_state_not_fluid() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger(&dir);
    ledger
        .record("leads", json!({"name": "Ada"}), &who())
        .unwrap();
    let before = ledger.collection("leads").unwrap();
    assert_eq!(before.state, Stability::Fluid);
    assert_eq!(before.state_label(), "fluid");

    ledger.settle("leads").unwrap();
    // A write right after settling: the stability counters say fluid, the state says settled.
    ledger
        .record("leads", json!({"name": "Bob"}), &who())
        .unwrap();
    let after = ledger.collection("leads").unwrap();
    assert_eq!(after.settled, Some(1));
    assert_eq!(after.state, Stability::Settled);
    assert_eq!(after.state_label(), "settled v1");
    let sent = serde_json::to_value(&after).unwrap();
    assert_eq!(sent["state"], "settled");
    assert_eq!(sent["settled"], 1);
}

#[test]
fn an_unknown_operator_is_refused_not_matched_as_equality() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = ledger(&dir);
    ledger
        .record("leads", json!({"name": "Ada", "score": 9}), &who())
        .unwrap();
    for filter in [
        json!({"score": {"~~": 3}}),
        json!({"score": {">": 3, "bigger": 4}}),
        json!({"score": {}}),
    ] {
        let e = Query::from_json(Some(&filter), None, None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`where` on `score`") && e.contains("contains exists"),
            "{filter}: {e}"
        );
    }
    // Known operators still work, and an object value is matched with an explicit `=`.
    let q = Query::from_json(Some(&json!({"score": {">": 3}})), None, None).unwrap();
    assert_eq!(ledger.query("leads", &q).unwrap().len(), 1);
    let q = Query::from_json(Some(&json!({"name": {"=": {"a": 1}}})), None, None).unwrap();
    assert!(ledger.query("leads", &q).unwrap().is_empty());
}

#[test]
fn a_limit_below_one_or_not_a_whole_number_is_refused() {
    for bad in [json!(-1), json!(0), json!(2.5), json!("10"), json!(true)] {
        let e = Query::limit_from_json(Some(&bad)).unwrap_err().to_string();
        assert!(e.contains("`limit` is a whole number ≥ 1"), "{bad}: {e}");
    }
    assert_eq!(Query::limit_from_json(None).unwrap(), None);
    assert_eq!(Query::limit_from_json(Some(&json!(null))).unwrap(), None);
    assert_eq!(Query::limit_from_json(Some(&json!(5))).unwrap(), Some(5));
}
