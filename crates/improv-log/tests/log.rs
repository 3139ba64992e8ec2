//! Drives the event log against real files: a real SQLite index and real JSONL files in a temp
//! dir, a real crashed process, and a real full disk (`/dev/full`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_kernel::{Event, EventKind, Observer, Outcome, Spent, StopReason};
use improv_log::{EventLog, LogError, Status};
use std::io::Write;
use std::path::Path;

fn ev(seq: u64, kind: EventKind) -> Event {
    Event {
        seq,
        at: format!("2025-01-01T00:00:{:02}.000Z", seq % 60),
        actor: Some("lead".into()),
        kind,
    }
}

fn started(seq: u64, id: &str, resumed: bool) -> Event {
    ev(
        seq,
        EventKind::PerformanceStarted {
            performance: id.into(),
            stage: "fix-the-build".into(),
            intent: "make the tests pass".into(),
            model: "scripted/test".into(),
            resumed,
        },
    )
}

fn spent(turns: u32) -> Spent {
    Spent {
        turns,
        input_tokens: 100 * turns as u64,
        output_tokens: 10 * turns as u64,
        cost_usd: 0.01 * turns as f64,
        elapsed_ms: 1000 * turns as u64,
        ..Spent::default()
    }
}

/// A whole performance: started, a turn with a tool call, usage, finished.
fn performance(id: &str) -> Vec<Event> {
    vec![
        started(0, id, false),
        ev(
            1,
            EventKind::DirectorNote {
                text: "make the tests pass".into(),
            },
        ),
        ev(2, EventKind::TurnStarted { turn: 1 }),
        ev(
            3,
            EventKind::TextDelta {
                text: "Let me ".into(),
            },
        ),
        ev(
            4,
            EventKind::TextDelta {
                text: "look.".into(),
            },
        ),
        ev(
            5,
            EventKind::ModelReplied {
                text: "Let me look.".into(),
                tool_calls: vec![improv_kernel::ToolCall {
                    id: "c1".into(),
                    name: "read".into(),
                    arguments: r#"{"path":"src/lib.rs"}"#.into(),
                }],
                stop: StopReason::ToolUse,
            },
        ),
        ev(
            6,
            EventKind::Usage {
                input_tokens: 100,
                output_tokens: 10,
                cached_input_tokens: 0,
                cost_usd: 0.01,
                request_bytes: 512,
                spent: spent(1),
            },
        ),
        ev(
            7,
            EventKind::ToolCallStarted {
                call_id: "c1".into(),
                name: "read".into(),
                arguments: r#"{"path":"src/lib.rs"}"#.into(),
            },
        ),
        ev(
            8,
            EventKind::ToolCallFinished {
                call_id: "c1".into(),
                name: "read".into(),
                ok: true,
                output: "fn main() {}\n".into(),
                duration_ms: 1.5,
            },
        ),
        ev(
            9,
            EventKind::PerformanceFinished {
                outcome: Outcome::Done,
                reason: "the actor ended its turn".into(),
                budget: None,
                spent: spent(2),
            },
        ),
    ]
}

fn record(log: &EventLog, id: &str, events: &[Event]) {
    let rec = log.recorder(id).unwrap();
    for e in events {
        rec.observe(e).unwrap();
    }
}

fn without_deltas(events: Vec<Event>) -> Vec<Event> {
    events
        .into_iter()
        .filter(|e| !matches!(e.kind, EventKind::TextDelta { .. }))
        .collect()
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn a_performance_is_written_indexed_and_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join(".improv");
    let log = EventLog::open(&state).unwrap();
    assert!(state.join("improv.db").is_file());
    record(&log, "p-1", &performance("p-1"));

    let back = log.events("p-1").unwrap();
    assert_eq!(back, without_deltas(performance("p-1")));
    let text = std::fs::read_to_string(state.join("performances/p-1.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 8);
    assert!(!text.contains("text_delta"), "{text}");
    assert!(text.ends_with('\n'));

    let rows = log.list(10).unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.id, "p-1");
    assert_eq!(row.stage, "fix-the-build");
    assert_eq!(row.intent, "make the tests pass");
    assert_eq!(row.model, "scripted/test");
    assert_eq!(row.status, Status::Done);
    assert_eq!(row.reason, "the actor ended its turn");
    assert_eq!(row.turns, 2);
    assert_eq!(row.input_tokens, 200);
    assert_eq!(row.output_tokens, 20);
    assert!((row.cost_usd - 0.02).abs() < 1e-12);
    assert_eq!(row.elapsed_ms, 2000);
    assert_eq!(row.started_at, "2025-01-01T00:00:00.000Z");
    assert_eq!(row.finished_at.as_deref(), Some("2025-01-01T00:00:09.000Z"));
    assert_eq!(row.log_path, state.join("performances/p-1.jsonl"));

    // A second open of the same directory finds the same index and does not migrate twice.
    drop(log);
    let again = EventLog::open(&state).unwrap();
    assert_eq!(again.find("p-1").unwrap(), *row);
}

#[test]
fn usage_updates_the_row_while_running() {
    let tmp = tempfile::tempdir().unwrap();
    let log = EventLog::open(tmp.path()).unwrap();
    let events = performance("live");
    let rec = log.recorder("live").unwrap();
    for e in &events[..7] {
        rec.observe(e).unwrap();
    }
    let row = log.find("live").unwrap();
    // This process is the writer and is alive.
    assert_eq!(row.status, Status::Running);
    assert_eq!(row.turns, 1);
    assert_eq!(row.input_tokens, 100);
    assert_eq!(row.finished_at, None);
}

#[test]
fn list_is_newest_first_and_find_takes_unique_prefixes() {
    let tmp = tempfile::tempdir().unwrap();
    let log = EventLog::open(tmp.path()).unwrap();
    for (i, id) in ["abc-1", "abd-2", "xyz-3"].iter().enumerate() {
        let mut events = performance(id);
        for e in &mut events {
            e.at = format!("2025-01-0{}T00:00:{:02}.000Z", i + 1, e.seq);
        }
        record(&log, id, &events);
    }
    let ids: Vec<String> = log.list(10).unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["xyz-3", "abd-2", "abc-1"]);
    let ids: Vec<String> = log.list(2).unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, ["xyz-3", "abd-2"]);

    assert_eq!(log.find("abc-1").unwrap().id, "abc-1");
    assert_eq!(log.find("abd").unwrap().id, "abd-2");
    assert_eq!(log.find("x").unwrap().id, "xyz-3");

    match log.find("ab") {
        Err(LogError::Ambiguous { prefix, candidates }) => {
            assert_eq!(prefix, "ab");
            assert_eq!(candidates, ["abd-2", "abc-1"]);
        }
        other => panic!("expected ambiguous, got {other:?}"),
    }
    let msg = log.find("ab").unwrap_err().to_string();
    assert!(msg.contains("abd-2") && msg.contains("abc-1"), "{msg}");

    let err = log.find("nope").unwrap_err();
    assert!(matches!(err, LogError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("`nope`"), "{err}");
    // `%` and `_` are not wildcards.
    assert!(matches!(log.find("%"), Err(LogError::NotFound { .. })));
    assert!(matches!(log.find("ab_"), Err(LogError::NotFound { .. })));
    assert!(matches!(log.find(""), Err(LogError::NotFound { .. })));
}

#[test]
fn short_ids_are_the_shortest_unique_suffixes_and_find_resolves_them() {
    let tmp = tempfile::tempdir().unwrap();
    let log = EventLog::open(tmp.path()).unwrap();
    // Real ids share a long time prefix; two of these also share their last five digits, and
    // one starts with what another ends with.
    let ids = [
        "019ac3f0a1b2c3d4e5",
        "019ac3f0a1b2f3d4e5",
        "019ac3f0a1b2c0a7f1",
        "0a7f1c3f0a1b2aaaaa",
        "abcdef",
        "xbcdef",
    ];
    for id in ids {
        record(&log, id, &performance(id));
    }
    let short = log.short_ids(&ids).unwrap();
    // The last two have no unique form shorter than themselves.
    assert_eq!(
        short,
        ["c3d4e5", "f3d4e5", "c0a7f1", "aaaaa", "abcdef", "xbcdef"]
    );
    for (id, short) in ids.iter().zip(&short) {
        assert_eq!(&log.find(short).unwrap().id, id, "{short}");
    }
    // One digit fewer is ambiguous (the shared end), or starts another id.
    assert!(matches!(log.find("3d4e5"), Err(LogError::Ambiguous { .. })));
    assert!(matches!(log.find("0a7f1"), Err(LogError::Ambiguous { .. })));
    // Prefixes still resolve.
    assert_eq!(log.find("0a7f1c").unwrap().id, "0a7f1c3f0a1b2aaaaa");
}

#[test]
fn a_truncated_last_line_is_tolerated_and_repaired_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let log = EventLog::open(tmp.path()).unwrap();
    let events = performance("cut");
    record(&log, "cut", &events[..6]);
    let path = log.log_path("cut").unwrap();
    // A crash cut the next line short.
    let whole = serde_json::to_string(&events[6]).unwrap();
    append(&path, &whole.as_bytes()[..whole.len() / 2]);

    let back = log.events("cut").unwrap();
    assert_eq!(back, without_deltas(events[..6].to_vec()));

    // Resuming drops the cut line, so the appended events read back cleanly.
    let rec = log.recorder("cut").unwrap();
    rec.observe(&started(6, "cut", true)).unwrap();
    rec.observe(&events[9]).unwrap();
    let back = log.events("cut").unwrap();
    let mut expected = without_deltas(events[..6].to_vec());
    expected.push(started(6, "cut", true));
    expected.push(events[9].clone());
    assert_eq!(back, expected);
}

#[test]
fn a_whole_last_event_missing_its_newline_is_kept_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let log = EventLog::open(tmp.path()).unwrap();
    let events = performance("nl");
    record(&log, "nl", &events[..3]);
    let path = log.log_path("nl").unwrap();
    append(&path, serde_json::to_string(&events[5]).unwrap().as_bytes());
    assert_eq!(log.events("nl").unwrap().len(), 4);
    let rec = log.recorder("nl").unwrap();
    rec.observe(&events[9]).unwrap();
    let back = log.events("nl").unwrap();
    assert_eq!(back.len(), 5);
    assert_eq!(back[3], events[5]);
}

#[test]
fn a_corrupt_middle_line_is_reported_with_its_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let log = EventLog::open(tmp.path()).unwrap();
    let events = performance("bad");
    let path = log.log_path("bad").unwrap();
    record(&log, "bad", &events[..3]);
    append(&path, b"{\"seq\": 3, \"this is not\n");
    record(&log, "bad", &events[5..]);

    let err = log.events("bad").unwrap_err();
    match &err {
        LogError::Corrupt { path: p, line, .. } => {
            assert_eq!(p, &path);
            assert_eq!(*line, 4);
        }
        other => panic!("expected corrupt, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.starts_with(&format!("{}:4: ", path.display())), "{msg}");
}

/// `EventLog::replay` reads the log a line at a time; what it finds must be what replaying the
/// whole log finds: compactions applied, the unanswered call, the spending, the numbering, a
/// cut-short last line left out, and a damaged line an error naming it.
#[test]
fn a_replay_line_by_line_finds_what_the_whole_log_says() {
    let tmp = tempfile::tempdir().unwrap();
    let log = EventLog::open(tmp.path()).unwrap();
    let mut events = performance("r")[..9].to_vec();
    events.push(ev(
        9,
        EventKind::Compacted {
            messages: 2,
            trimmed: 0,
            tokens_before: 90,
            tokens_after: 30,
            edits: vec![improv_kernel::Compaction::Summarized {
                start: 0,
                end: 2,
                text: "the summary".into(),
            }],
        },
    ));
    events.push(ev(
        10,
        EventKind::ModelReplied {
            text: String::new(),
            tool_calls: vec![improv_kernel::ToolCall {
                id: "c2".into(),
                name: "read".into(),
                arguments: "{}".into(),
            }],
            stop: StopReason::ToolUse,
        },
    ));
    record(&log, "r", &events[..6]);
    let path = log.log_path("r").unwrap();
    // A blank line and a line ended the Windows way, as an edit of the file may leave them.
    append(&path, b"\n");
    let crlf = serde_json::to_string(&events[6]).unwrap();
    append(&path, format!("{crlf}\r\n").as_bytes());
    record(&log, "r", &events[7..]);
    let cut = serde_json::to_string(&performance("r")[9]).unwrap();
    append(&path, &cut.as_bytes()[..cut.len() / 2]);

    let past = log.replay("r").unwrap();
    assert_eq!(past.id.as_deref(), Some("r"));
    assert_eq!(past.next_seq, 11);
    assert_eq!(past.spent, spent(1));
    assert_eq!(past.conversation.len(), 3, "{:?}", past.conversation);
    assert_eq!(
        past.conversation[0],
        improv_kernel::Message::user("the summary")
    );
    assert_eq!(past.unanswered.len(), 1);
    assert_eq!(past.unanswered[0].id, "c2");
    // c1 started before the last reply, whose c2 never started: only the last reply counts.
    assert!(past.started.is_empty(), "{:?}", past.started);

    // Once a line follows it, the cut line is damage in the middle: the same error as the
    // whole read's, naming its line (the eleventh: the recorder writes no text deltas, and the
    // blank line counts).
    append(&path, b"\n");
    record(&log, "r", &performance("r")[9..]);
    for err in [log.replay("r").unwrap_err(), log.events("r").unwrap_err()] {
        match err {
            LogError::Corrupt { path: p, line, .. } => {
                assert_eq!(p, path);
                assert_eq!(line, 11);
            }
            other => panic!("expected corrupt, got {other:?}"),
        }
    }
}

#[test]
fn a_missing_log_names_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let log = EventLog::open(tmp.path()).unwrap();
    let err = log.events("ghost").unwrap_err();
    assert!(err.to_string().contains("ghost.jsonl"), "{err}");
}

#[test]
fn a_resumed_performance_appends_to_its_file_and_updates_its_row() {
    let tmp = tempfile::tempdir().unwrap();
    let log = EventLog::open(tmp.path()).unwrap();
    let mut first = performance("res");
    first[9] = ev(
        9,
        EventKind::PerformanceFinished {
            outcome: Outcome::Interrupted,
            reason: "the director interrupted".into(),
            budget: None,
            spent: spent(2),
        },
    );
    record(&log, "res", &first);
    let row = log.find("res").unwrap();
    assert_eq!(row.status, Status::Interrupted);
    assert_eq!(row.reason, "the director interrupted");

    let rec = log.recorder("res").unwrap();
    let resumed = started(10, "res", true);
    rec.observe(&resumed).unwrap();
    let row = log.find("res").unwrap();
    assert_eq!(row.status, Status::Running);
    assert_eq!(row.reason, "");
    assert_eq!(row.finished_at, None);
    assert_eq!(
        row.started_at, "2025-01-01T00:00:00.000Z",
        "keeps its first start"
    );
    assert_eq!(row.turns, 2, "keeps what it spent");

    let finished = ev(
        11,
        EventKind::PerformanceFinished {
            outcome: Outcome::Done,
            reason: "the actor ended its turn".into(),
            budget: None,
            spent: spent(3),
        },
    );
    rec.observe(&finished).unwrap();
    let row = log.find("res").unwrap();
    assert_eq!(row.status, Status::Done);
    assert_eq!(row.turns, 3);
    assert_eq!(row.finished_at.as_deref(), Some("2025-01-01T00:00:11.000Z"));
    assert_eq!(log.list(10).unwrap().len(), 1);

    let mut expected = without_deltas(first);
    expected.push(resumed);
    expected.push(finished);
    assert_eq!(log.events("res").unwrap(), expected);
}

/// Not a test on its own: the child process of `a_crashed_writer_reads_as_interrupted`, which
/// records the start of a performance and then aborts.
#[test]
#[ignore = "run by a_crashed_writer_reads_as_interrupted as a child process"]
fn crash_child() {
    let Some(dir) = std::env::var_os("IMPROV_LOG_CRASH_DIR") else {
        return;
    };
    let log = EventLog::open(Path::new(&dir)).unwrap();
    let events = performance("crashed");
    record(&log, "crashed", &events[..7]);
    std::process::abort();
}

#[test]
fn a_crashed_writer_reads_as_interrupted() {
    let tmp = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "crash_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("IMPROV_LOG_CRASH_DIR", tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child should have aborted");

    let log = EventLog::open(tmp.path()).unwrap();
    let row = log.find("crashed").unwrap();
    assert_eq!(row.status, Status::Interrupted);
    assert!(row.reason.contains("crash"), "{}", row.reason);
    assert_eq!(row.turns, 1);
    assert_eq!(log.list(1).unwrap()[0].status, Status::Interrupted);
    // Every event written before the crash is there.
    assert_eq!(
        log.events("crashed").unwrap(),
        without_deltas(performance("crashed")[..7].to_vec())
    );
}

/// Linux always has `/dev/full`; elsewhere the test is not compiled rather than passing silently.
#[cfg(target_os = "linux")]
#[test]
fn a_full_disk_fails_the_event_with_the_file_and_os_error() {
    assert!(
        Path::new("/dev/full").exists(),
        "/dev/full is missing: this test needs the Linux full-disk device"
    );
    let tmp = tempfile::tempdir().unwrap();
    let log = EventLog::open(tmp.path()).unwrap();
    let path = log.log_path("full").unwrap();
    std::os::unix::fs::symlink("/dev/full", &path).unwrap();
    let rec = log.recorder("full").unwrap();
    let err = rec.observe(&started(0, "full", false)).unwrap_err();
    assert!(err.0.contains(&path.display().to_string()), "{err}");
    assert!(err.0.contains("No space left on device"), "{err}");
}

#[test]
fn ids_that_are_not_file_names_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let log = EventLog::open(tmp.path()).unwrap();
    for id in ["", "../escape", "a/b", ".hidden"] {
        assert!(
            matches!(log.recorder(id), Err(LogError::InvalidId(_))),
            "{id}"
        );
    }
}

#[test]
fn an_index_from_a_newer_improv_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    drop(EventLog::open(tmp.path()).unwrap());
    let conn = rusqlite::Connection::open(tmp.path().join("improv.db")).unwrap();
    conn.execute("INSERT INTO schema_migrations (version) VALUES (99)", [])
        .unwrap();
    drop(conn);
    let err = EventLog::open(tmp.path()).unwrap_err();
    assert!(
        matches!(err, LogError::NewerSchema { found: 99, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade improv"), "{err}");
}

#[test]
fn one_performance_has_one_recorder_at_a_time() {
    let tmp = tempfile::tempdir().unwrap();
    let log = EventLog::open(tmp.path()).unwrap();
    let first = log.recorder("solo").unwrap();
    let err = log.recorder("solo").unwrap_err();
    assert!(matches!(err, LogError::Busy { .. }), "{err:?}");
    assert!(err.to_string().contains("`solo`"), "{err}");
    // Another performance is not held up, and the lock goes with the recorder.
    log.recorder("other").unwrap();
    drop(first);
    log.recorder("solo").unwrap();
}
