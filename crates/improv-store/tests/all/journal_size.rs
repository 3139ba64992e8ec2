//! Benchmark (run with `--ignored --nocapture`): the journal of a 100-call performance whose
//! conversation reaches ~200k tokens, on both backends, against the goal of 25 MB.
//!
//! Each call is a `turn_started`, a `model_replied` carrying the whole reply (~2,000 characters
//! of new text and a tool call), a `usage`, a `tool_call_started` and a `tool_call_finished`
//! whose output is ~6,000 characters of new text, except that every fourth call reads again a
//! file read before (same output); every 20 calls a compaction summarizes (new text) and trims
//! earlier outputs. The table shows what the events weigh as JSON, what the store holds (event
//! rows plus blobs, and the database on disk), and what a journal that records the whole
//! conversation with every model call would weigh, for comparison.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_kernel::{Compaction, Event, EventKind, Spent, StopReason, ToolCall};
use improv_store::testing::TempPostgres;
use improv_store::{NewPerformance, Store, StoreUrl};
use std::sync::Arc;
use std::time::Duration;

const CALLS: u64 = 100;
const REPLY_CHARS: usize = 2_000;
const OUTPUT_CHARS: usize = 6_000;
const GOAL_BYTES: u64 = 25_000_000;

/// Words that do not repeat in any pattern a store could exploit by accident.
struct Words(u64);

impl Words {
    fn text(&mut self, chars: usize) -> String {
        let mut out = String::with_capacity(chars + 16);
        while out.len() < chars {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = 2 + (self.0 >> 60) as usize;
            for i in 0..len {
                out.push(char::from(b'a' + ((self.0 >> ((i * 5) % 60)) % 26) as u8));
            }
            out.push(if (self.0 >> 40).is_multiple_of(9) {
                '\n'
            } else {
                ' '
            });
        }
        out
    }
}

fn event(seq: &mut u64, kind: EventKind) -> Event {
    *seq += 1;
    Event {
        seq: *seq,
        at: "2026-11-29T14:00:00.000Z".into(),
        actor: Some("lead".into()),
        kind,
    }
}

/// The performance's events, the size of its conversation (characters) at each model call, and
/// the bytes of the outputs that repeat an earlier one.
fn performance() -> (Vec<Event>, Vec<usize>, usize) {
    let mut words = Words(15);
    let mut seq = 0;
    let mut events = Vec::new();
    let mut outputs: Vec<String> = Vec::new();
    let mut conversation = 0usize;
    let mut requests = Vec::new();
    let mut repeated = 0;
    for call in 0..CALLS {
        requests.push(conversation);
        events.push(event(
            &mut seq,
            EventKind::TurnStarted {
                turn: call as u32 + 1,
            },
        ));
        let reply = words.text(REPLY_CHARS);
        conversation += reply.len();
        let call_id = format!("call-{call}");
        let arguments = format!("{{\"path\":\"src/file{call}.rs\"}}");
        events.push(event(
            &mut seq,
            EventKind::ModelReplied {
                text: reply,
                tool_calls: vec![ToolCall {
                    id: call_id.clone(),
                    name: "read".into(),
                    arguments: arguments.clone(),
                }],
                stop: StopReason::ToolUse,
            },
        ));
        events.push(event(
            &mut seq,
            EventKind::Usage {
                input_tokens: conversation as u64 / 4,
                output_tokens: 500,
                cached_input_tokens: 0,
                cost_usd: 0.01,
                request_bytes: conversation as u64,
                spent: Spent::default(),
            },
        ));
        events.push(event(
            &mut seq,
            EventKind::ToolCallStarted {
                call_id: call_id.clone(),
                name: "read".into(),
                arguments,
            },
        ));
        let output = if call % 4 == 3 {
            let again = outputs[(call / 2) as usize].clone();
            repeated += again.len();
            again
        } else {
            words.text(OUTPUT_CHARS)
        };
        conversation += output.len();
        outputs.push(output.clone());
        events.push(event(
            &mut seq,
            EventKind::ToolCallFinished {
                call_id,
                name: "read".into(),
                ok: true,
                output,
                duration_ms: 3.0,
            },
        ));
        if call % 20 == 19 {
            let edits = vec![
                Compaction::Summarized {
                    start: 1,
                    end: 10,
                    text: words.text(3_000),
                },
                Compaction::Trimmed {
                    call_id: format!("call-{}", call - 10),
                    content: "[trimmed]".into(),
                },
            ];
            events.push(event(
                &mut seq,
                EventKind::Compacted {
                    messages: 9,
                    trimmed: 1,
                    tokens_before: 0,
                    tokens_after: 0,
                    edits,
                },
            ));
        }
    }
    (events, requests, repeated)
}

/// Bytes of the store's event rows and blobs, and of its database on disk.
async fn stored(url: &StoreUrl, pg: Option<&TempPostgres>) -> (u64, u64) {
    match (url, pg) {
        (StoreUrl::Sqlite(path), _) => {
            let conn = rusqlite::Connection::open(path).unwrap();
            let rows: i64 = conn
                .query_row(
                    "SELECT (SELECT COALESCE(SUM(LENGTH(body) + COALESCE(LENGTH(blobs), 0)), 0) FROM events) \
                          + (SELECT COALESCE(SUM(LENGTH(body) + LENGTH(hash)), 0) FROM blobs)",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .unwrap();
            (rows as u64, std::fs::metadata(path).unwrap().len())
        }
        (StoreUrl::Postgres(_), Some(pg)) => {
            let out = pg.psql(
                "improv",
                "SELECT (SELECT SUM(octet_length(body) + COALESCE(octet_length(blobs), 0)) FROM events) \
                      + (SELECT COALESCE(SUM(octet_length(body) + octet_length(hash)), 0) FROM blobs), \
                        pg_total_relation_size('events') + pg_total_relation_size('blobs')",
            );
            let mut parts = out.trim().split('|').map(|n| n.parse::<u64>().unwrap());
            (parts.next().unwrap(), parts.next().unwrap())
        }
        _ => unreachable!(),
    }
}

async fn measure(name: &str, url: StoreUrl, pg: Option<&TempPostgres>) {
    let (events, requests, repeated) = performance();
    let store: Arc<dyn Store> = improv_store::open(&url).unwrap();
    let new = NewPerformance {
        id: Some("long".into()),
        stage: "s".into(),
        stage_name: None,
        intent: "i".into(),
        model: None,
        origin: "bench".into(),
        budget: None,
    };
    store.enqueue(&new).await.unwrap();
    let (lease, _) = store
        .claim("w", Duration::from_secs(600))
        .await
        .unwrap()
        .unwrap();
    for event in &events {
        store
            .append(&lease, std::slice::from_ref(event))
            .await
            .unwrap();
    }
    assert_eq!(
        store.events("long", 0, 0).await.unwrap(),
        events,
        "round trip"
    );
    let json: usize = events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap().len() + 1)
        .sum();
    let whole: usize = requests.iter().sum();
    let conversation = requests.last().unwrap() + REPLY_CHARS + OUTPUT_CHARS;
    let (rows, disk) = stored(&url, pg).await;
    let mb = |n: u64| n as f64 / 1e6;
    println!(
        "| {name:<10} | {:>6} | {:>8.0}k | {:>10.2} | {:>11.2} | {:>9.2} | {:>25.1} |",
        events.len(),
        conversation as f64 / 4.0 / 1000.0,
        mb(json as u64),
        mb(rows),
        mb(disk),
        mb(whole as u64),
    );
    assert!(
        disk <= GOAL_BYTES,
        "{name}: {disk} bytes on disk, goal {GOAL_BYTES}"
    );
    assert!(
        rows + (repeated as u64) / 2 < json as u64,
        "{name}: the {repeated} bytes of re-read outputs should be stored once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn journal_of_a_100_call_performance_at_200k_tokens() {
    println!(
        "\n| backend    | events | conv. tok | JSON (MB)  | stored (MB) | disk (MB) | whole conv. per call (MB) |"
    );
    println!(
        "|------------|--------|-----------|------------|-------------|-----------|---------------------------|"
    );
    let dir = tempfile::tempdir().unwrap();
    measure(
        "sqlite",
        StoreUrl::Sqlite(dir.path().join("store.db")),
        None,
    )
    .await;
    let pg = TempPostgres::start_new();
    let url = StoreUrl::parse(&pg.create_database("improv")).unwrap();
    measure("postgres", url, Some(&pg)).await;
}
