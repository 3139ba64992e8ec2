//! The two memory backends side by side: the same suite runs against the stage's SQLite file and
//! against a real PostgreSQL server (`improv_store::testing::TempPostgres`, started in a temporary
//! folder; without the PostgreSQL binaries the test fails and says how to install them). Then
//! what only the shared store promises: two processes' pools (two workers) see one memory, and
//! stages are kept apart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_memory::{Memory, MemoryBackend, MemoryError, PgMemory, Provenance};
use improv_store::PgPool;
use improv_store::testing::TempPostgres;
use std::sync::Arc;

fn by(performance: &str) -> Provenance {
    Provenance::new("lead", performance)
}

fn tags(t: &[&str]) -> Vec<String> {
    t.iter().map(|s| s.to_string()).collect()
}

fn ids(found: &[improv_memory::Found]) -> Vec<i64> {
    found.iter().map(|f| f.entry.id).collect()
}

/// What every backend must do, asked through [`MemoryBackend`] only.
async fn conformance(memory: Arc<dyn MemoryBackend>) {
    let who = by("p1");
    let a = memory
        .remember(
            "The build needs libssl-dev installed.",
            &tags(&["build"]),
            None,
            &who,
        )
        .await
        .unwrap();
    let b = memory
        .remember(
            "Tests are slow; run them with --release to build faster.",
            &[],
            None,
            &who,
        )
        .await
        .unwrap();
    let c = memory
        .remember(
            "The deploy key lives in the vault.",
            &tags(&["deploy", "secrets"]),
            None,
            &who,
        )
        .await
        .unwrap();
    assert!(!a.replaced && a.id < b.id && b.id < c.id);

    // Stemming ("builds" finds "build"); matching more words ranks higher.
    let found = memory.recall("builds libssl", 10).await.unwrap();
    assert_eq!(ids(&found), vec![a.id, b.id]);
    assert_eq!(found[0].entry.tags, vec!["build"]);

    // Only stop words: still found, by the words as written (PostgreSQL's english config
    // drops them all).
    let mut stop_words = ids(&memory.recall("it the", 10).await.unwrap());
    stop_words.sort_unstable();
    assert_eq!(stop_words, vec![a.id, c.id]);
    assert_eq!(
        (
            found[0].entry.actor.as_str(),
            found[0].entry.performance.as_str()
        ),
        ("lead", "p1")
    );
    assert!(
        found[0].entry.created_at.ends_with('Z'),
        "{:?}",
        found[0].entry
    );
    // Tags are searched; any text is a query, never syntax.
    assert_eq!(
        ids(&memory.recall("secrets", 10).await.unwrap()),
        vec![c.id]
    );
    for hostile in [
        "\"vault",
        "vault -deploy",
        "vault OR",
        "(vault) & !key",
        "vault:*",
    ] {
        let found = memory.recall(hostile, 10).await.unwrap();
        assert!(
            found.iter().all(|f| f.entry.id == c.id),
            "{hostile}: {found:?}"
        );
    }
    // No words: the most recent first.
    assert_eq!(
        ids(&memory.recall("  ", 2).await.unwrap()),
        vec![c.id, b.id]
    );
    assert!(memory.recall("kubernetes", 10).await.unwrap().is_empty());

    // A long memory is found with a short snippet around the match.
    let long = format!(
        "{} the flaky test is tests/net.rs {}",
        "filler ".repeat(200),
        "more ".repeat(200)
    );
    let d = memory.remember(&long, &[], None, &who).await.unwrap();
    let found = memory.recall("flaky", 5).await.unwrap();
    assert_eq!(ids(&found), vec![d.id]);
    assert!(
        found[0].snippet.contains("flaky") && found[0].snippet.len() < 400,
        "{}",
        found[0].snippet
    );

    // A key replaces its memory; edits and forgets reach the index.
    let k1 = memory
        .remember("Use port 8080.", &[], Some("port"), &who)
        .await
        .unwrap();
    let k2 = memory
        .remember("Use port 9090.", &[], Some("port"), &by("p2"))
        .await
        .unwrap();
    assert_eq!((k2.id, k2.replaced), (k1.id, true));
    let now = memory.get(k1.id).await.unwrap();
    assert_eq!(
        (now.text.as_str(), now.performance.as_str()),
        ("Use port 9090.", "p2")
    );
    assert!(memory.recall("8080", 5).await.unwrap().is_empty());
    assert_eq!(ids(&memory.recall("port", 5).await.unwrap()), vec![k1.id]);
    let edited = memory.edit(k1.id, "Use port 7070.").await.unwrap();
    assert_eq!(edited.text, "Use port 7070.");
    assert_eq!(ids(&memory.recall("7070", 5).await.unwrap()), vec![k1.id]);
    assert_eq!(memory.forget(k1.id).await.unwrap().id, k1.id);
    assert!(memory.recall("7070", 5).await.unwrap().is_empty());
    assert!(matches!(
        memory.get(k1.id).await,
        Err(MemoryError::NotFound(_))
    ));
    assert!(matches!(
        memory.edit(k1.id, "x").await,
        Err(MemoryError::NotFound(_))
    ));
    assert!(matches!(
        memory.forget(k1.id).await,
        Err(MemoryError::NotFound(_))
    ));

    // Empty and oversized notes are refused.
    assert!(matches!(
        memory.remember("  ", &[], None, &who).await,
        Err(MemoryError::Empty)
    ));
    let huge = "x".repeat(improv_memory::MAX_TEXT + 1);
    assert!(matches!(
        memory.remember(&huge, &[], None, &who).await,
        Err(MemoryError::TooLong { .. })
    ));
    let all: Vec<i64> = memory.all().await.unwrap().iter().map(|e| e.id).collect();
    assert_eq!(all, vec![a.id, b.id, c.id, d.id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let memory = Memory::open_in(&dir.path().join(".improv")).unwrap();
    conformance(Arc::new(memory)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_backend_conforms_and_is_shared_by_workers() {
    let server = TempPostgres::start_new();
    let url = server.create_database("memory");
    conformance(Arc::new(PgMemory::new(
        PgPool::connect(&url).unwrap(),
        "demo",
    )))
    .await;

    // Searched through a GIN index on a stored tsvector.
    let index = server.psql(
        "memory",
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'improv_memories_search'",
    );
    assert!(index.contains("USING gin (search)"), "{index}");

    // Two workers: two pools of their own (as two machines), one memory.
    let worker_a = PgMemory::new(PgPool::connect(&url).unwrap(), "shop");
    let worker_b = PgMemory::new(PgPool::connect(&url).unwrap(), "shop");
    let saved = worker_a
        .remember(
            "The staging database is on port 6543.",
            &tags(&["db"]),
            None,
            &by("on-a"),
        )
        .await
        .unwrap();
    let found = worker_b.recall("staging port", 5).await.unwrap();
    assert_eq!(ids(&found), vec![saved.id]);
    assert_eq!(found[0].entry.performance, "on-a");

    // Another stage in the same database sees none of it.
    let other = PgMemory::new(PgPool::connect(&url).unwrap(), "other");
    assert!(other.recall("staging port", 5).await.unwrap().is_empty());
    assert!(matches!(
        other.get(saved.id).await,
        Err(MemoryError::NotFound(_))
    ));

    // Many writers on one key at once: one memory, replaced, never a duplicate-key error.
    let mut writers = Vec::new();
    for i in 0..16 {
        let memory = PgMemory::new(PgPool::connect(&url).unwrap(), "shop");
        writers.push(tokio::spawn(async move {
            memory
                .remember(
                    &format!("Deploy with tag v{i}."),
                    &[],
                    Some("deploy"),
                    &by("w"),
                )
                .await
        }));
    }
    let mut saved_ids = Vec::new();
    for writer in writers {
        saved_ids.push(writer.await.unwrap().unwrap().id);
    }
    saved_ids.dedup();
    assert_eq!(saved_ids.len(), 1, "{saved_ids:?}");
    assert_eq!(worker_b.recall("deploy", 5).await.unwrap().len(), 1);
}
