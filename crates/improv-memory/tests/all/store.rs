//! The memory store on a real SQLite file: saving, searching, editing, forgetting, and two
//! writers at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_memory::{MAX_TEXT, Memory, MemoryError, Provenance};
use std::sync::Arc;

fn by() -> Provenance {
    Provenance::new("lead", "p1")
}

fn tags(t: &[&str]) -> Vec<String> {
    t.iter().map(|s| s.to_string()).collect()
}

#[test]
fn memories_are_found_by_their_words_best_first() {
    let dir = tempfile::tempdir().unwrap();
    let memory = Memory::open_in(&dir.path().join(".improv")).unwrap();
    assert!(dir.path().join(".improv/memory.db").is_file());

    let a = memory
        .remember(
            "The build needs libssl-dev installed.",
            &tags(&["build"]),
            None,
            &by(),
        )
        .unwrap();
    let b = memory
        .remember(
            "Tests are slow; run them with --release to build faster.",
            &[],
            None,
            &by(),
        )
        .unwrap();
    let c = memory
        .remember(
            "The deploy key lives in the vault.",
            &tags(&["deploy", "secrets"]),
            None,
            &by(),
        )
        .unwrap();
    assert!(!a.replaced && a.id < b.id && b.id < c.id);

    // Stemming: "builds" finds "build"; both words match a before b.
    let found = memory.recall("builds libssl", 10).unwrap();
    let ids: Vec<i64> = found.iter().map(|f| f.entry.id).collect();
    assert_eq!(ids, vec![a.id, b.id]);
    assert_eq!(found[0].entry.tags, vec!["build"]);
    assert_eq!(found[0].entry.actor, "lead");
    assert_eq!(found[0].entry.performance, "p1");

    // Tags are searched too.
    let found = memory.recall("secrets", 10).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].entry.id, c.id);

    // No words: the most recent first.
    let recent = memory.recall("  ", 2).unwrap();
    let ids: Vec<i64> = recent.iter().map(|f| f.entry.id).collect();
    assert_eq!(ids, vec![c.id, b.id]);
    assert!(memory.recall("kubernetes", 10).unwrap().is_empty());
}

#[test]
fn user_text_is_never_read_as_query_syntax() {
    let dir = tempfile::tempdir().unwrap();
    let memory = Memory::open_in(dir.path()).unwrap();
    memory
        .remember("foo and bar are friends", &[], None, &by())
        .unwrap();
    for query in [
        "foo\"bar",
        "AND(",
        "NEAR(",
        "\"",
        "*",
        "foo*",
        "-bar",
        "text:foo",
        "OR",
        "NOT foo",
        "(((",
        "^foo",
        "foo AND",
        "{text}",
        "'",
        "a + b",
        "ünïcödé ✓",
    ] {
        let found = memory.recall(query, 5);
        assert!(found.is_ok(), "{query:?}: {:?}", found.err());
    }
    assert_eq!(memory.recall("foo\"bar", 5).unwrap().len(), 1);
    assert_eq!(
        memory.recall("AND(", 5).unwrap().len(),
        1,
        "`and` is a word here"
    );
}

#[test]
fn a_long_memory_is_found_with_a_short_snippet() {
    let dir = tempfile::tempdir().unwrap();
    let memory = Memory::open_in(dir.path()).unwrap();
    let text = format!(
        "{} the flaky test is auth_retry {}",
        "filler ".repeat(200),
        "padding ".repeat(200)
    );
    memory.remember(&text, &[], None, &by()).unwrap();
    let found = memory.recall("flaky", 1).unwrap();
    assert_eq!(found.len(), 1);
    assert!(found[0].snippet.contains("flaky"), "{}", found[0].snippet);
    assert!(found[0].snippet.len() < 300, "{}", found[0].snippet.len());
    assert_eq!(found[0].entry.text, text.trim());
}

#[test]
fn a_key_replaces_its_memory_and_edits_and_forgets_reach_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let memory = Memory::open_in(dir.path()).unwrap();
    let first = memory
        .remember("port is 8080", &[], Some("port"), &by())
        .unwrap();
    let second = memory
        .remember(
            "port is 9090",
            &[],
            Some("port"),
            &Provenance::new("ops", "p2"),
        )
        .unwrap();
    assert_eq!(second.id, first.id);
    assert!(second.replaced);
    let entry = memory.get(first.id).unwrap();
    assert_eq!(
        (
            entry.text.as_str(),
            entry.actor.as_str(),
            entry.key.as_deref()
        ),
        ("port is 9090", "ops", Some("port"))
    );
    assert!(memory.recall("8080", 5).unwrap().is_empty());
    assert_eq!(memory.all().unwrap().len(), 1);

    let edited = memory.edit(first.id, "port is 7070").unwrap();
    assert_eq!(edited.text, "port is 7070");
    assert!(memory.recall("9090", 5).unwrap().is_empty());
    assert_eq!(memory.recall("7070", 5).unwrap().len(), 1);

    let gone = memory.forget(first.id).unwrap();
    assert_eq!(gone.text, "port is 7070");
    assert!(memory.recall("7070", 5).unwrap().is_empty());
    assert!(matches!(memory.forget(first.id), Err(MemoryError::NotFound(id)) if id == first.id));
    assert!(matches!(
        memory.edit(99, "x"),
        Err(MemoryError::NotFound(99))
    ));

    // A forgotten id is never handed out again.
    let next = memory.remember("new", &[], None, &by()).unwrap();
    assert!(next.id > first.id);
}

#[test]
fn empty_and_oversized_memories_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let memory = Memory::open_in(dir.path()).unwrap();
    assert!(matches!(
        memory.remember("  \n", &[], None, &by()),
        Err(MemoryError::Empty)
    ));
    let long = "x".repeat(MAX_TEXT + 1);
    let err = memory.remember(&long, &[], None, &by()).unwrap_err();
    assert!(err.to_string().contains("keep it under"), "{err}");
}

#[test]
fn memories_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let id = Memory::open_in(dir.path())
        .unwrap()
        .remember("persisted", &[], None, &by())
        .unwrap()
        .id;
    let memory = Memory::open_in(dir.path()).unwrap();
    assert_eq!(memory.recall("persisted", 5).unwrap()[0].entry.id, id);
}

#[test]
fn two_performances_write_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let path = path.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                // Each writer has its own connection, as two processes would.
                let memory = Memory::open_in(&path).unwrap();
                barrier.wait();
                for i in 0..50 {
                    memory
                        .remember(
                            &format!("writer{w} note{i}"),
                            &[],
                            None,
                            &Provenance::new("lead", format!("p{w}")),
                        )
                        .unwrap();
                    if i % 10 == 0 {
                        memory
                            .remember(
                                &format!("writer{w} shared"),
                                &[],
                                Some("shared"),
                                &Provenance::new("lead", format!("p{w}")),
                            )
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let memory = Memory::open_in(&path).unwrap();
    assert_eq!(memory.all().unwrap().len(), 4 * 50 + 1);
    let n = memory.recall("writer2", 100).unwrap().len();
    assert!(n == 50 || n == 51, "{n}");
    assert_eq!(memory.recall("shared", 100).unwrap().len(), 1);
}
