//! Streaming import through the real ledger: bad lines are kept in the rejects with their line
//! number and the lines around them recorded, a JSON array that breaks keeps the items before
//! it, CSV rows are typed, and a file larger than a batch is written in several batches with
//! progress reported as it goes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_ledger::{ImportProgress, Ledger, LedgerError, LedgerOptions, Provenance, Query};
use serde_json::json;

fn ledger(dir: &std::path::Path) -> Ledger {
    Ledger::open_in(dir.join(".improv"), LedgerOptions::default()).unwrap()
}

fn who() -> Provenance {
    Provenance::new("import", "director")
}

#[test]
fn bad_lines_name_their_line_and_lose_nothing_around_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let mut bytes = Vec::new();
    bytes.extend_from_slice(b"{\"n\": 1}\n\n{\"n\": 2}\r\n{broken\n");
    bytes.extend_from_slice(b"{\"n\": \"\xff\"}\n{\"n\": 5}\n[1]\n{\"n\": 7}");
    std::fs::write(&file, bytes).unwrap();
    let ledger = ledger(dir.path());
    let report = ledger.import("events", &file, &who()).unwrap();
    assert_eq!((report.recorded, report.rejected), (4, 3));
    let rejects = ledger.rejects("events", 10).unwrap();
    let reasons: Vec<&str> = rejects.iter().map(|r| r.reason.as_str()).collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("line 4: malformed JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with("line 5: not UTF-8")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with("line 7: ")),
        "{reasons:?}"
    );
    let ns: Vec<i64> = ledger
        .query("events", &Query::new().order_by("n").unwrap())
        .unwrap()
        .iter()
        .map(|e| e.value["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, vec![1, 2, 5, 7]);
}

#[test]
fn a_broken_json_array_keeps_the_items_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("items.json");
    std::fs::write(&file, "[\n{\"n\": 1},\n{\"n\": 2},\n{\"n\": oops}\n]").unwrap();
    let ledger = ledger(dir.path());
    let error = ledger.import("items", &file, &who()).unwrap_err();
    match &error {
        LedgerError::Import { line, .. } => assert_eq!(*line, 4, "{error}"),
        other => panic!("{other}"),
    }
    assert!(
        error.to_string().contains("items before it were recorded"),
        "{error}"
    );
    assert_eq!(ledger.query("items", &Query::new()).unwrap().len(), 2);
}

#[test]
fn csv_rows_are_typed_and_a_short_row_is_a_reject() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("people.csv");
    std::fs::write(
        &file,
        "name,age,member,note\nAda,36,true,\"likes, commas\"\nBob,41\nEve,29,false,\n",
    )
    .unwrap();
    let ledger = ledger(dir.path());
    let report = ledger.import("people", &file, &who()).unwrap();
    assert_eq!((report.recorded, report.rejected), (2, 1));
    let people = ledger
        .query("people", &Query::new().order_by("name").unwrap())
        .unwrap();
    assert_eq!(
        people[0].value,
        json!({"name": "Ada", "age": 36, "member": true, "note": "likes, commas"})
    );
    assert_eq!(
        people[1].value,
        json!({"name": "Eve", "age": 29, "member": false})
    );
    let rejects = ledger.rejects("people", 10).unwrap();
    assert!(
        rejects[0]
            .reason
            .starts_with("line 3: the row has 2 fields, the header 4"),
        "{}",
        rejects[0].reason
    );
}

#[test]
fn a_large_file_is_written_in_batches_with_progress() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.jsonl");
    let lines: Vec<String> = (0..12_000)
        .map(|i| format!("{{\"i\": {i}, \"tags\": {{\"t{}\": \"x\"}}}}", i % 500))
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let size = std::fs::metadata(&file).unwrap().len();
    let ledger = ledger(dir.path());
    let mut seen: Vec<ImportProgress> = Vec::new();
    let report = ledger
        .import_with_progress("big", &file, &who(), &mut |p| seen.push(p))
        .unwrap();
    assert_eq!(report.recorded, 12_000);
    assert!(seen.len() >= 3, "{} batches", seen.len());
    assert!(
        seen.windows(2)
            .all(|w| w[0].recorded < w[1].recorded && w[0].bytes <= w[1].bytes)
    );
    let last = seen.last().unwrap();
    assert_eq!(
        (last.bytes, last.total_bytes, last.recorded),
        (size, size, 12_000)
    );
    // Inferred while written: `tags` has 500 keys over 12,000 entries, so it is a map.
    let info = ledger.collection("big").unwrap();
    assert!(
        info.shape
            .at(&"tags".parse().unwrap())
            .unwrap()
            .object
            .as_ref()
            .unwrap()
            .map
            .is_some()
    );
}

/// `n` irregular JSON lines: fields that come and go, change kind and get renamed, one line in
/// a thousand broken; long enough for several batches.
fn irregular_lines(n: usize) -> String {
    let mut text = String::new();
    for i in 0..n {
        let mut entry = json!({"seq": i, "name": format!("item {i}"), "tags": ["a", "b"]});
        if i % 3 == 0 {
            entry["zip"] = if i % 2 == 0 {
                json!(1234)
            } else {
                json!("0123-4")
            };
        }
        if i % 7 == 0 {
            entry["user"] = json!({"id": i, "email": format!("u{i}@example.org")});
        }
        if i > n / 2 {
            entry["late"] = json!(true);
        }
        if i % 1000 == 999 {
            text.push_str("{broken\n");
            continue;
        }
        if i % 11 == 0 {
            // As another writer might have written it: keys out of order, one repeated, an
            // escape, an integer too wide for 64 bits.
            text.push_str(&format!(
                r#"{{"seq": {i}, "name": "it\"em", "b": 1, "a": 2, "a": "again", "big": 123456789012345678901234}}"#
            ));
            text.push('\n');
            continue;
        }
        text.push_str(&entry.to_string());
        text.push('\n');
    }
    text
}

#[test]
fn an_import_infers_the_same_shape_and_stability_as_recording_each_entry() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("irregular.jsonl");
    let text = irregular_lines(20_000);
    std::fs::write(&file, &text).unwrap();
    let ledger = ledger(dir.path());
    let mut batches = 0;
    let report = ledger
        .import_with_progress("imported", &file, &who(), &mut |_| batches += 1)
        .unwrap();
    assert!(
        batches >= 3,
        "{batches} batches: the file must span several"
    );
    let inputs = text.lines().map(improv_ledger::Input::from);
    let outcomes = ledger.record_batch("recorded", inputs, &who()).unwrap();
    let recorded = outcomes.iter().filter(|o| o.is_recorded()).count() as u64;
    assert_eq!((report.recorded, report.rejected), (recorded, 20));
    let imported = ledger.collection("imported").unwrap();
    let one_by_one = ledger.collection("recorded").unwrap();
    assert_eq!(imported.shape, one_by_one.shape);
    assert_eq!(imported.records, one_by_one.records);
    assert_eq!(imported.writes_since_change, one_by_one.writes_since_change);
    // The late field appeared halfway: the writes since then are the second half's.
    assert!(imported.writes_since_change < 10_000);
    // Stored byte for byte as recording each entry stores it (JSONB with keys in order, the
    // last of a repeated key kept, wide integers' text kept verbatim).
    let conn = rusqlite::Connection::open(ledger.path()).unwrap();
    let stored = |collection: &str| -> Vec<(Vec<u8>, Option<String>)> {
        let mut select = conn
            .prepare("SELECT body, raw FROM ledger_entries WHERE collection = ?1 ORDER BY id")
            .unwrap();
        select
            .query_map([collection], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let (imported, one_by_one) = (stored("imported"), stored("recorded"));
    assert_eq!(imported.len(), one_by_one.len());
    assert!(imported == one_by_one, "the stored entries differ");
    assert!(imported.iter().filter(|(_, raw)| raw.is_some()).count() > 1_000);
}

#[test]
fn entries_written_by_someone_else_during_an_import_stay_in_the_shape() {
    // The importing thread infers the shape; an entry recorded by another writer between two of
    // its batches must not be lost when the import stores the shape it inferred. Tried many
    // times, the other writer recording all along.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("irregular.jsonl");
    std::fs::write(&file, irregular_lines(12_000)).unwrap();
    for round in 0..5 {
        let collection = format!("shared{round}");
        let importer = ledger(dir.path());
        let other = ledger(dir.path());
        let done = std::sync::atomic::AtomicBool::new(false);
        let intruders = std::thread::scope(|scope| {
            let writer = scope.spawn(|| {
                let mut n = 0u64;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let entry = json!({"seq": -1, "intruder": n});
                    other.record(&collection, entry, &who()).unwrap();
                    n += 1;
                    // A pause between writes, so the importer's transactions are not starved
                    // of the lock on a loaded machine (SQLite's busy wait backs off).
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                n
            });
            importer.import(&collection, &file, &who()).unwrap();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            writer.join().unwrap()
        });
        let info = other.collection(&collection).unwrap();
        let object = info.shape.object.as_ref().unwrap();
        assert_eq!(info.records, 12_000 - 12 + intruders, "round {round}");
        assert_eq!(info.shape.count, info.records, "round {round}");
        let seen = object.fields.get("intruder").map_or(0, |f| f.count);
        assert_eq!(seen, intruders, "round {round}: the shape lost entries");
    }
}

fn has_entry_index(path: &std::path::Path) -> bool {
    let conn = rusqlite::Connection::open(path).unwrap();
    let found: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'ledger_entries_by_collection'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    found == 1
}

/// An import into an empty ledger builds the entries' index once at its end rather than row by
/// row: it is there after the import, after an import that failed half-way, and after a crash
/// that left it dropped (the next open builds it), with every entry committed before kept.
#[test]
fn the_index_deferred_by_an_import_is_always_built_again() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    std::fs::write(&file, irregular_lines(3_000)).unwrap();
    let ledger = ledger(dir.path());
    let path = ledger.path().to_path_buf();
    let recorded = ledger.import("events", &file, &who()).unwrap().recorded as usize;
    assert!(recorded > 2_900, "{recorded}");
    assert!(has_entry_index(&path));

    let broken = tempfile::tempdir().unwrap();
    let array = broken.path().join("items.json");
    std::fs::write(&array, "[{\"n\": 1}, {\"n\": 2}, {\"n\": ").unwrap();
    let fresh = self::ledger(broken.path());
    assert!(fresh.import("items", &array, &who()).is_err());
    assert_eq!(fresh.query("items", &Query::new()).unwrap().len(), 2);
    assert!(has_entry_index(fresh.path()));

    drop(ledger);
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("DROP INDEX ledger_entries_by_collection")
        .unwrap();
    let reopened = Ledger::open(&path).unwrap();
    assert!(has_entry_index(&path));
    assert_eq!(
        reopened.query("events", &Query::new()).unwrap().len(),
        recorded
    );
}

/// Lines are read where they lie in the read buffer; one that spans fills of it (here one far
/// longer than the buffer, and short ones around its edges) is put together whole, the line
/// numbers stay right, and a last line without a line break is read.
#[test]
fn lines_across_read_buffer_fills_are_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("long.jsonl");
    let long = "x".repeat(700_000);
    let mut text = String::new();
    for i in 0..30_000 {
        text.push_str(&format!(
            "{{\"n\": {i}, \"pad\": \"{}\"}}\n",
            "y".repeat(i % 23)
        ));
        if i == 10_000 {
            text.push_str(&format!("{{\"n\": -1, \"long\": \"{long}\"}}\n{{broken\n"));
        }
    }
    text.push_str("{\"n\": 30000}");
    std::fs::write(&file, &text).unwrap();
    let ledger = ledger(dir.path());
    let report = ledger.import("long", &file, &who()).unwrap();
    assert_eq!((report.recorded, report.rejected), (30_002, 1));
    let rejects = ledger.rejects("long", 10).unwrap();
    assert!(
        rejects[0].reason.starts_with("line 10003: "),
        "{}",
        rejects[0].reason
    );
    let entries = ledger
        .query("long", &Query::new().order_by("n").unwrap())
        .unwrap();
    assert_eq!(
        entries[0].value["long"].as_str().map(str::len),
        Some(700_000)
    );
    let ns: Vec<i64> = entries[1..]
        .iter()
        .map(|e| e.value["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, (0..=30_000).collect::<Vec<i64>>());
}
