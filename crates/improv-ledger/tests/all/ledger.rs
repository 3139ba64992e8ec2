//! The ledger against real SQLite files in temporary directories: record, query, bad input,
//! stability, settling, proposals, context, import and export.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_ledger::{
    Decision, Input, LEDGER_FILE, Ledger, LedgerOptions, ManualClock, Op, Provenance, Query,
    RecordOutcome, Stability,
};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

fn who() -> Provenance {
    Provenance::new("perf-1", "lead")
}

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        time::OffsetDateTime::from_unix_timestamp(1_750_000_000).unwrap(),
    ))
}

fn open(dir: &tempfile::TempDir, clock: Arc<ManualClock>) -> Ledger {
    Ledger::open_in(
        dir.path().join(".improv"),
        LedgerOptions {
            stable_writes: 10,
            stable_after: Duration::from_secs(60),
            enum_min_records: 10,
            clock,
            ..LedgerOptions::default()
        },
    )
    .unwrap()
}

fn recorded(outcome: RecordOutcome) -> i64 {
    match outcome {
        RecordOutcome::Recorded { id, .. } => id,
        RecordOutcome::Rejected { reason, .. } => panic!("rejected: {reason}"),
    }
}

fn rejected(outcome: RecordOutcome) -> String {
    match outcome {
        RecordOutcome::Rejected { reason, .. } => reason,
        other => panic!("expected a reject, got {other:?}"),
    }
}

fn ids(entries: &[improv_ledger::Entry]) -> Vec<i64> {
    entries.iter().map(|e| e.id).collect()
}

fn leads(ledger: &Ledger) -> Vec<i64> {
    let rows = [
        json!({"name": "Ada", "score": 9, "tags": ["vip", "eu"], "city": "Oslo", "email": "ada@example.org"}),
        json!({"name": "Bob", "score": 3.5, "tags": ["eu"], "city": "Rome"}),
        json!({"name": "Cyd", "score": 7, "tags": [], "city": null}),
        json!({"name": "Dee", "score": "n/a", "tags": ["us"]}),
    ];
    rows.into_iter()
        .map(|r| recorded(ledger.record("leads", r, &who()).unwrap()))
        .collect()
}

#[test]
fn entries_keep_provenance_and_time() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir, clock());
    let id = recorded(
        ledger
            .record(
                "findings",
                json!({"title": "leak"}),
                &Provenance::new("perf-9", "scout"),
            )
            .unwrap(),
    );
    let entries = ledger.query("findings", &Query::new()).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].id, id);
    assert_eq!(entries[0].performance, "perf-9");
    assert_eq!(entries[0].actor, "scout");
    assert_eq!(entries[0].at, "2025-06-15T15:06:40Z");
    assert_eq!(entries[0].value, json!({"title": "leak"}));
    assert!(dir.path().join(".improv/ledger.db").exists());
}

#[test]
fn queries_filter_order_and_limit() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir, clock());
    let [ada, bob, cyd, dee] = leads(&ledger)[..] else {
        panic!()
    };
    let q = |query: Query| ids(&ledger.query("leads", &query).unwrap());
    assert_eq!(
        q(Query::new().filter("name", Op::Eq, json!("Bob")).unwrap()),
        vec![bob]
    );
    assert_eq!(
        q(Query::new().filter("score", Op::Eq, json!(9)).unwrap()),
        vec![ada]
    );
    // Comparisons only match values of the compared kind: "n/a" is not greater than 5.
    assert_eq!(
        q(Query::new().filter("score", Op::Gt, json!(5)).unwrap()),
        vec![ada, cyd]
    );
    assert_eq!(
        q(Query::new().filter("score", Op::Le, json!(3.5)).unwrap()),
        vec![bob]
    );
    assert_eq!(
        q(Query::new().filter("score", Op::Lt, json!(9)).unwrap()),
        vec![bob, cyd]
    );
    assert_eq!(
        q(Query::new().filter("score", Op::Ge, json!(9)).unwrap()),
        vec![ada]
    );
    assert_eq!(
        q(Query::new().filter("score", Op::Ne, json!(9)).unwrap()),
        vec![bob, cyd, dee]
    );
    assert_eq!(
        q(Query::new()
            .filter("tags", Op::Contains, json!("eu"))
            .unwrap()),
        vec![ada, bob]
    );
    assert_eq!(
        q(Query::new()
            .filter("name", Op::Contains, json!("y"))
            .unwrap()),
        vec![cyd]
    );
    assert_eq!(
        q(Query::new()
            .filter("email", Op::Exists, json!(true))
            .unwrap()),
        vec![ada]
    );
    assert_eq!(
        q(Query::new()
            .filter("city", Op::Exists, json!(false))
            .unwrap()),
        vec![dee]
    );
    assert_eq!(
        q(Query::new().filter("city", Op::Eq, Value::Null).unwrap()),
        vec![cyd]
    );
    assert_eq!(
        q(Query::new().filter("tags[0]", Op::Eq, json!("us")).unwrap()),
        vec![dee]
    );
    assert_eq!(
        q(Query::new().order_by("-name").unwrap().limit(2)),
        vec![dee, cyd]
    );
    assert_eq!(
        q(Query::new()
            .filter("score", Op::Gt, json!(0))
            .unwrap()
            .order_by("score")
            .unwrap()),
        vec![bob, cyd, ada]
    );
    // The prop's JSON form.
    let from_json = Query::from_json(
        Some(&json!({"city": "Oslo", "score": {">": 1, "<": 10}})),
        Some("-score"),
        Some(5),
    )
    .unwrap();
    assert_eq!(q(from_json), vec![ada]);
    assert!(
        ledger
            .query("nothing-here", &Query::new())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn queries_cannot_inject_sql() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir, clock());
    leads(&ledger);
    for field in [
        "name') OR 1=1 --",
        "name; DROP TABLE ledger_entries",
        "a\"b",
    ] {
        assert!(
            Query::new().filter(field, Op::Eq, json!(1)).is_err(),
            "{field} should be refused"
        );
    }
    // Values are bound, never spliced: this matches nothing and drops nothing.
    let evil = Query::new()
        .filter("name", Op::Eq, json!("x' OR '1'='1"))
        .unwrap();
    assert!(ledger.query("leads", &evil).unwrap().is_empty());
    assert!(ledger.query("leads'; --", &Query::new()).is_err());
    assert_eq!(ledger.query("leads", &Query::new()).unwrap().len(), 4);
}

#[test]
fn bad_input_is_rejected_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open_in(
        dir.path(),
        LedgerOptions {
            max_entry_bytes: 10_000,
            max_depth: 16,
            ..LedgerOptions::default()
        },
    )
    .unwrap();
    let c = "raw";
    let malformed = "{\"a\": 1,, }";
    let reason = rejected(ledger.record(c, malformed, &who()).unwrap());
    assert!(reason.starts_with("malformed JSON"), "{reason}");
    let deep_ok = format!("{}1{}", "{\"a\":".repeat(16), "}".repeat(16));
    recorded(ledger.record(c, deep_ok.as_str(), &who()).unwrap());
    let deep = format!("{}1{}", "{\"a\":".repeat(17), "}".repeat(17));
    let reason = rejected(ledger.record(c, deep.as_str(), &who()).unwrap());
    assert!(
        reason.contains("17 levels deep, over the limit of 16"),
        "{reason}"
    );
    let very_deep = format!("{{\"a\":{}{}}}", "[".repeat(3000), "]".repeat(3000));
    let reason = rejected(ledger.record(c, very_deep.as_str(), &who()).unwrap());
    assert!(reason.contains("deeper than 128"), "{reason}");
    let huge = json!({"blob": "x".repeat(20_000)});
    let reason = rejected(ledger.record(c, huge.clone(), &who()).unwrap());
    assert!(reason.contains("over the limit of 10000"), "{reason}");
    let reason = rejected(ledger.record(c, json!([1, 2]), &who()).unwrap());
    assert!(
        reason.contains("must be a JSON object, got array"),
        "{reason}"
    );
    let rejects = ledger.rejects(c, 10).unwrap();
    assert_eq!(rejects.len(), 5);
    // Nothing is lost: every refused entry is kept verbatim, newest first.
    assert_eq!(rejects[4].text, malformed);
    assert_eq!(rejects[3].text, deep);
    assert_eq!(rejects[2].text, very_deep);
    assert_eq!(rejects[1].text, huge.to_string());
    assert_eq!(rejects[0].actor, "lead");
    assert_eq!(ledger.collection(c).unwrap().rejects, 5);
    assert_eq!(ledger.collection(c).unwrap().records, 1);
}

#[test]
fn odd_but_valid_values_are_kept_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir, clock());
    let c = "odd";
    let big = r#"{"id": 123456789012345678901234567890, "n": -18446744073709551616}"#;
    recorded(ledger.record(c, big, &who()).unwrap());
    recorded(
        ledger
            .record(
                c,
                json!({"a.b": 1, "名前": "テスト", "emoji🙂": true}),
                &who(),
            )
            .unwrap(),
    );
    recorded(ledger.record(c, json!({"v": "NaN"}), &who()).unwrap());
    recorded(ledger.record(c, json!({"v": "Infinity"}), &who()).unwrap());
    recorded(ledger.record(c, json!({"v": 12}), &who()).unwrap());
    recorded(
        ledger
            .record(c, json!({"v": [1, "x", null]}), &who())
            .unwrap(),
    );
    let mut out = Vec::new();
    ledger.export_jsonl(c, &mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("123456789012345678901234567890"), "{text}");
    assert!(text.contains("-18446744073709551616"), "{text}");
    let shape = ledger.collection(c).unwrap().shape;
    let v = shape.at(&"v".parse().unwrap()).unwrap();
    assert_eq!(
        v.string.as_ref().unwrap().count,
        2,
        "NaN-like strings stay strings"
    );
    assert_eq!(v.integer.as_ref().unwrap().count, 1);
    assert_eq!(v.array.as_ref().unwrap().count, 1);
    assert_eq!(shape.at(&"id".parse().unwrap()).unwrap().label(), "number");
    let q = |field: &str, value: Value| {
        ids(&ledger
            .query(c, &Query::new().filter(field, Op::Eq, value).unwrap())
            .unwrap())
    };
    assert_eq!(q("\"a.b\"", json!(1)).len(), 1);
    assert_eq!(q("名前", json!("テスト")).len(), 1);
    assert_eq!(q("\"emoji🙂\"", json!(true)).len(), 1);
    assert_eq!(q("v", json!("NaN")).len(), 1);
}

#[test]
fn stability_moves_from_fluid_to_stable_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let ledger = open(&dir, clock.clone());
    let state = |ledger: &Ledger| ledger.collection("logs").unwrap().state;
    ledger
        .record("logs", json!({"level": "info", "n": 0}), &who())
        .unwrap();
    assert_eq!(state(&ledger), Stability::Fluid);
    for n in 1..=5 {
        ledger
            .record("logs", json!({"level": "info", "n": n}), &who())
            .unwrap();
    }
    assert_eq!(state(&ledger), Stability::Settling);
    for n in 6..=10 {
        ledger
            .record("logs", json!({"level": "warn", "n": n}), &who())
            .unwrap();
    }
    // Ten quiet writes, but not a quiet minute yet.
    assert_eq!(ledger.collection("logs").unwrap().writes_since_change, 10);
    assert_eq!(state(&ledger), Stability::Settling);
    clock.advance(Duration::from_secs(61));
    assert_eq!(state(&ledger), Stability::Stable);
    ledger
        .record(
            "logs",
            json!({"level": "info", "n": 11, "host": "a"}),
            &who(),
        )
        .unwrap();
    assert_eq!(
        state(&ledger),
        Stability::Fluid,
        "a new field is a structural change"
    );
    // The shape and the counters survive a reopen.
    drop(ledger);
    let again = open(&dir, clock);
    let info = again.collection("logs").unwrap();
    assert_eq!(info.records, 12);
    assert_eq!(info.writes_since_change, 0);
    assert_eq!(info.shape.object.as_ref().unwrap().fields["host"].count, 1);
}

fn settled_orders(ledger: &Ledger) {
    for i in 0..12 {
        let entry = json!({
            "id": format!("67e55044-10b1-426f-9247-bb680e5fe0{i:02}"),
            "customer": {"email": format!("c{i}@example.org"), "name": format!("C{i}")},
            "total": i * 10,
            "status": (["open", "paid"][i % 2]),
            "at": "2025-01-02T03:04:05Z",
            "lines": [{"sku": "A", "qty": 1}],
        });
        recorded(ledger.record("orders", entry, &who()).unwrap());
    }
}

#[test]
fn settling_writes_schema_view_and_enforces_it() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir, clock());
    settled_orders(&ledger);
    let settlement = ledger.settle("orders").unwrap();
    assert_eq!(settlement.version, 1);
    let file = dir.path().join(".improv/schemas/orders.schema.json");
    assert_eq!(settlement.schema_file, file);
    let on_disk: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(on_disk, settlement.schema);
    assert_eq!(
        on_disk["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    assert_eq!(on_disk["properties"]["total"]["type"], "integer");
    assert_eq!(
        on_disk["properties"]["status"]["enum"],
        json!(["open", "paid"])
    );
    assert_eq!(
        on_disk["properties"]["customer"]["properties"]["email"]["format"],
        "email"
    );
    assert!(
        settlement
            .postgres_ddl
            .contains("\"total\" BIGINT NOT NULL")
    );
    assert!(
        settlement
            .postgres_ddl
            .contains("\"at_2\" TIMESTAMPTZ NOT NULL")
    );

    // The typed view exists in the ledger's own SQLite file.
    let conn = rusqlite::Connection::open(dir.path().join(".improv/ledger.db")).unwrap();
    let (total, email, typ): (i64, String, String) = conn
        .query_row(
            "SELECT total, customer_email, typeof(total) FROM ledger_orders WHERE status = 'paid' ORDER BY total DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (total, email.as_str(), typ.as_str()),
        (110, "c11@example.org", "integer")
    );

    // Invalid writes are refused with the field and the expected type, and kept.
    let mut bad = json!({
        "id": "67e55044-10b1-426f-9247-bb680e5fe0aa",
        "customer": {"email": "x@example.org", "name": "X"},
        "total": "12 EUR", "status": "open", "at": "2025-01-02T03:04:05Z", "lines": []
    });
    let reason = rejected(ledger.record("orders", bad.clone(), &who()).unwrap());
    assert_eq!(
        reason,
        "field `total`: expected integer, got string \"12 EUR\""
    );
    bad["total"] = json!(12);
    bad["status"] = json!("lost");
    let reason = rejected(ledger.record("orders", bad.clone(), &who()).unwrap());
    assert!(
        reason.contains("field `status`: expected one of \"open\", \"paid\""),
        "{reason}"
    );
    bad["status"] = json!("open");
    bad["customer"].as_object_mut().unwrap().remove("name");
    let reason = rejected(ledger.record("orders", bad.clone(), &who()).unwrap());
    assert_eq!(
        reason,
        "field `customer.name` is missing; it is required (string)"
    );
    bad["customer"]["name"] = json!("X");
    bad["lines"] = json!([{"sku": 5, "qty": 1}]);
    let reason = rejected(ledger.record("orders", bad.clone(), &who()).unwrap());
    assert!(
        reason.starts_with("field `lines[0].sku`: expected string"),
        "{reason}"
    );
    bad["lines"] = json!([]);
    recorded(ledger.record("orders", bad, &who()).unwrap());
    assert_eq!(ledger.rejects("orders", 10).unwrap().len(), 4);
    assert!(matches!(
        ledger.settle("orders"),
        Err(improv_ledger::LedgerError::AlreadySettled { version: 1, .. })
    ));
}

#[test]
fn new_fields_become_proposals_that_evolve_accepts_or_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir, clock());
    settled_orders(&ledger);
    ledger.settle("orders").unwrap();
    let base = json!({
        "id": "67e55044-10b1-426f-9247-bb680e5fe0bb",
        "customer": {"email": "x@example.org", "name": "X"},
        "total": 5, "status": "paid", "at": "2025-01-02T03:04:05Z", "lines": []
    });
    let mut with_note = base.clone();
    with_note["note"] = json!("gift");
    with_note["customer"]["phone"] = json!("+47 1234");
    match ledger.record("orders", with_note, &who()).unwrap() {
        RecordOutcome::Recorded { proposed, .. } => {
            assert_eq!(proposed, vec!["customer.phone", "note"])
        }
        other => panic!("{other:?}"),
    }
    let mut with_coupon = base.clone();
    with_coupon["coupon"] = json!("X1");
    recorded(
        ledger
            .record("orders", with_coupon.clone(), &who())
            .unwrap(),
    );
    let pending: Vec<String> = ledger
        .proposals("orders")
        .unwrap()
        .into_iter()
        .filter(|p| p.status == "pending")
        .map(|p| p.field)
        .collect();
    assert_eq!(pending, vec!["coupon", "customer.phone", "note"]);

    let evolution = ledger.evolve("orders", "note", Decision::Accept).unwrap();
    assert_eq!(evolution.version, 2);
    assert_eq!(
        evolution.postgres_migration,
        "ALTER TABLE \"orders\" ADD COLUMN \"note\" TEXT;"
    );
    assert!(evolution.sqlite_migration.contains("AS \"note\""));
    let schema = ledger.schema("orders").unwrap().unwrap();
    assert_eq!(schema["properties"]["note"]["type"], "string");
    assert!(
        schema["properties"].get("coupon").is_none(),
        "still pending"
    );
    let on_disk: Value =
        serde_json::from_str(&std::fs::read_to_string(&evolution.schema_file).unwrap()).unwrap();
    assert_eq!(on_disk, schema);
    let conn = rusqlite::Connection::open(dir.path().join(".improv/ledger.db")).unwrap();
    let notes: i64 = conn
        .query_row(
            "SELECT count(*) FROM ledger_orders WHERE note = 'gift'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(notes, 1);

    let evolution = ledger.evolve("orders", "coupon", Decision::Reject).unwrap();
    assert!(!evolution.accepted);
    let reason = rejected(ledger.record("orders", with_coupon, &who()).unwrap());
    assert!(
        reason.contains("field `coupon` was rejected by the director"),
        "{reason}"
    );
    // A note now validates like any settled field.
    let mut bad_note = base.clone();
    bad_note["note"] = json!(3);
    let reason = rejected(ledger.record("orders", bad_note, &who()).unwrap());
    assert!(reason.contains("field `note`: expected string"), "{reason}");
    assert!(matches!(
        ledger.evolve("orders", "never-seen", Decision::Accept),
        Err(improv_ledger::LedgerError::NoProposal { .. })
    ));
}

#[test]
fn context_lists_settled_collections_compactly() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir, clock());
    settled_orders(&ledger);
    ledger.record("scratch", json!({"x": 1}), &who()).unwrap();
    assert_eq!(ledger.context_for(&["orders"]).unwrap(), "");
    ledger.settle("orders").unwrap();
    let text = ledger.context_for(&["orders", "scratch"]).unwrap();
    assert_eq!(text, ledger.context_for(&[]).unwrap());
    assert!(text.contains("orders: {at: string(date-time), customer: {email: string(email), name: string}, id: string(uuid), lines: {qty: integer, sku: string}[], status: \"open\"|\"paid\", total: integer}"), "{text}");
    assert!(!text.contains("scratch"));
    assert!(text.len() < 300, "{} bytes", text.len());
}

#[test]
fn rename_suspects_are_checked_against_entries() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir, clock());
    for i in 0..3 {
        ledger
            .record(
                "people",
                json!({"email": "a@b.co", "name": i, "fullName": "x"}),
                &who(),
            )
            .unwrap();
        ledger
            .record(
                "people",
                json!({"e_mail": "a@b.co", "name": i, "full_name": "y"}),
                &who(),
            )
            .unwrap();
        ledger
            .record(
                "people",
                json!({"name": i, "fullName": "x", "full_name": "y"}),
                &who(),
            )
            .unwrap();
    }
    let suspects = ledger.collection("people").unwrap().rename_suspects;
    let pairs: Vec<String> = suspects
        .iter()
        .map(|s| format!("{} {}", s.first, s.second))
        .collect();
    assert_eq!(pairs, vec!["e_mail email"]);
}

#[test]
fn import_and_export_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir, clock());
    let array = dir.path().join("items.json");
    std::fs::write(
        &array,
        r#"[{"a": 1, "b": "x,y"}, {"a": 2, "c": {"d": true}}, 3]"#,
    )
    .unwrap();
    let report = ledger.import("items", &array, &who()).unwrap();
    assert_eq!((report.recorded, report.rejected), (2, 1));
    assert!(
        ledger.rejects("items", 5).unwrap()[0]
            .reason
            .starts_with("item 3: an entry must be a JSON object")
    );
    let lines = dir.path().join("items.jsonl");
    std::fs::write(
        &lines,
        "{\"a\": 3}\n\n{oops\n{\"a\": 4, \"b\": \"q\\\"uote\"}\n",
    )
    .unwrap();
    let report = ledger.import("items", &lines, &who()).unwrap();
    assert_eq!((report.recorded, report.rejected), (2, 1));
    let reject = &ledger.rejects("items", 1).unwrap()[0];
    assert_eq!(reject.text, "{oops");
    assert!(
        reject.reason.starts_with("line 3: malformed JSON"),
        "{}",
        reject.reason
    );

    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, "[{\"a\": 1},\n {\"a\": ]").unwrap();
    let error = ledger
        .import("items", &broken, &who())
        .unwrap_err()
        .to_string();
    assert!(error.contains("broken.json: line 2, column"), "{error}");
    // The import streams: the item before the break was recorded, not lost.

    let mut jsonl = Vec::new();
    assert_eq!(ledger.export_jsonl("items", &mut jsonl).unwrap(), 5);
    let exported = dir.path().join("out.jsonl");
    std::fs::write(&exported, &jsonl).unwrap();
    let report = ledger.import("copy", &exported, &who()).unwrap();
    assert_eq!((report.recorded, report.rejected), (5, 0));
    let original: Vec<Value> = ledger
        .query("items", &Query::new())
        .unwrap()
        .into_iter()
        .map(|e| e.value)
        .collect();
    let copy: Vec<Value> = ledger
        .query("copy", &Query::new())
        .unwrap()
        .into_iter()
        .map(|e| e.value)
        .collect();
    assert_eq!(original, copy);

    let mut csv_bytes = Vec::new();
    assert_eq!(ledger.export_csv("items", &mut csv_bytes).unwrap(), 5);
    let mut reader = csv::Reader::from_reader(csv_bytes.as_slice());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        vec!["id", "performance", "actor", "at", "a", "b", "c"]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(&rows[0][5], "x,y");
    assert_eq!(&rows[1][6], "{\"d\":true}");
    assert_eq!(&rows[3][5], "q\"uote");
}

#[test]
fn two_handles_on_one_file_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let first = open(&dir, clock.clone());
    let second = open(&dir, clock);
    first.record("shared", json!({"a": 1}), &who()).unwrap();
    second.record("shared", json!({"b": "x"}), &who()).unwrap();
    first.record("shared", json!({"a": 2}), &who()).unwrap();
    let info = second.collection("shared").unwrap();
    assert_eq!(info.records, 3);
    let fields = &info.shape.object.as_ref().unwrap().fields;
    assert_eq!((fields["a"].count, fields["b"].count), (2, 1));
    second.settle("shared").unwrap();
    let reason = rejected(
        first
            .record("shared", json!({"a": "text"}), &who())
            .unwrap(),
    );
    assert!(reason.contains("field `a`"), "{reason}");
}

#[test]
fn auto_settle_settles_on_the_stable_write() {
    let dir = tempfile::tempdir().unwrap();
    let clock = clock();
    let ledger = Ledger::open_in(
        dir.path(),
        LedgerOptions {
            stable_writes: 3,
            stable_after: Duration::from_secs(5),
            auto_settle: true,
            clock: clock.clone(),
            ..LedgerOptions::default()
        },
    )
    .unwrap();
    for n in 0..4 {
        ledger.record("metrics", json!({"n": n}), &who()).unwrap();
    }
    assert_eq!(ledger.collection("metrics").unwrap().settled, None);
    clock.advance(Duration::from_secs(6));
    ledger.record("metrics", json!({"n": 9}), &who()).unwrap();
    assert_eq!(ledger.collection("metrics").unwrap().settled, Some(1));
    let reason = rejected(
        ledger
            .record("metrics", json!({"n": "nine"}), &who())
            .unwrap(),
    );
    assert_eq!(reason, "field `n`: expected integer, got string \"nine\"");
}

#[test]
fn batches_record_many_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = open(&dir, clock());
    let inputs: Vec<Input> = (0..500)
        .map(|i| {
            if i % 100 == 99 {
                Input::Text("not json".into())
            } else {
                Input::Value(json!({"i": i}))
            }
        })
        .collect();
    let outcomes = ledger.record_batch("bulk", inputs, &who()).unwrap();
    assert_eq!(outcomes.iter().filter(|o| o.is_recorded()).count(), 495);
    let info = ledger.collection("bulk").unwrap();
    assert_eq!((info.records, info.rejects), (495, 5));
    let integer = info
        .shape
        .at(&"i".parse().unwrap())
        .unwrap()
        .integer
        .clone()
        .unwrap();
    assert_eq!((integer.min, integer.max), (0, 498));
    assert!(ledger.record("bad name!", json!({}), &who()).is_err());

    // One transaction means all or nothing: a batch whose 251st insert fails leaves no entry.
    let db = rusqlite::Connection::open(dir.path().join(".improv").join(LEDGER_FILE)).unwrap();
    db.execute_batch(
        "CREATE TRIGGER fail_late BEFORE INSERT ON ledger_entries
         WHEN NEW.collection = 'atomic'
          AND (SELECT count(*) FROM ledger_entries WHERE collection = 'atomic') >= 250
         BEGIN SELECT RAISE(ABORT, 'the disk gave out'); END;",
    )
    .unwrap();
    let inputs = (0..500).map(|i| Input::Value(json!({"i": i})));
    let err = ledger.record_batch("atomic", inputs, &who()).unwrap_err();
    assert!(err.to_string().contains("the disk gave out"), "{err}");
    let kept: i64 = db
        .query_row(
            "SELECT count(*) FROM ledger_entries WHERE collection = 'atomic'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(kept, 0, "a failed batch left {kept} of its entries");
}

#[test]
fn columns_survive_evolution_and_an_accepted_rare_field_gets_one() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open_in(dir.path(), LedgerOptions::default()).unwrap();
    for i in 0..10 {
        let entry = if i % 2 == 0 {
            json!({"a": i, "b": "x"})
        } else {
            json!({"a": i})
        };
        ledger.record("t", entry, &who()).unwrap();
    }
    ledger.settle("t").unwrap();
    // `b` becomes rare (5 of 311 entries), `c` arrives once.
    for i in 0..300 {
        ledger.record("t", json!({"a": i}), &who()).unwrap();
    }
    ledger
        .record("t", json!({"a": 1, "c": "new"}), &who())
        .unwrap();
    let evolution = ledger.evolve("t", "c", Decision::Accept).unwrap();
    assert!(
        evolution.sqlite_migration.contains("AS \"b\"")
            && evolution.sqlite_migration.contains("AS \"c\""),
        "{}",
        evolution.sqlite_migration
    );
    assert!(
        evolution
            .postgres_migration
            .contains("ADD COLUMN \"c\" TEXT"),
        "{}",
        evolution.postgres_migration
    );
}

fn page_size(path: &std::path::Path) -> u32 {
    rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA page_size", [], |row| row.get(0))
        .unwrap()
}

/// A new ledger gets 64 KiB pages (fewer, larger writes for imports), a ledger made with another
/// page size keeps it and its entries, and the write-ahead log stays near SQLite's usual 4 MB
/// between checkpoints whatever the page size: at 1,000 pages of 64 KiB it would grow to 64 MB.
#[test]
fn pages_are_large_for_new_files_and_the_log_stays_small() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old.db");
    {
        let conn = rusqlite::Connection::open(&old).unwrap();
        conn.execute_batch("PRAGMA page_size = 4096; PRAGMA journal_mode = WAL;")
            .unwrap();
    }
    let ledger = Ledger::open(&old).unwrap();
    recorded(
        ledger
            .record("leads", json!({"name": "Ada"}), &who())
            .unwrap(),
    );
    drop(ledger);
    assert_eq!(page_size(&old), 4096);
    let ledger = Ledger::open(&old).unwrap();
    assert_eq!(ledger.query("leads", &Query::new()).unwrap().len(), 1);

    let new = dir.path().join("new.db");
    let ledger = Ledger::open(&new).unwrap();
    for i in 0..300 {
        recorded(
            ledger
                .record("leads", json!({"name": "Ada", "i": i}), &who())
                .unwrap(),
        );
    }
    let log = std::fs::metadata(dir.path().join("new.db-wal"))
        .unwrap()
        .len();
    assert!(log < 8 << 20, "the log grew to {log} bytes");
    drop(ledger);
    assert_eq!(page_size(&new), 64 << 10);
}
