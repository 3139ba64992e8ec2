//! An improv from before firings had a stage, still running on a SQLite file a newer one
//! migrated, is told so by its firing's insert, instead of taking the row it could not write
//! as claimed by another and silently never firing its doors again.

use improv_store::{SqliteStore, Store};

#[tokio::test]
async fn an_older_improvs_firing_insert_on_a_migrated_file_fails_saying_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("store.db");
    let store = SqliteStore::open(&db).unwrap();
    store.migrate().await.unwrap();
    drop(store);
    let old = rusqlite::Connection::open(&db).unwrap();
    // The statement improv used to claim a due time before stages were in the key.
    let inserted = old.execute(
        "INSERT OR IGNORE INTO firings (door, due, performance, note) VALUES ('tick', 1, NULL, 'x')",
        [],
    );
    let error = inserted.expect_err("an old improv's claim must fail, not be ignored");
    let message = error.to_string();
    assert!(message.contains("upgraded by a newer improv"), "{message}");
    assert!(
        message.contains("restart them with the new version"),
        "{message}"
    );
    // A stage's own insert is untouched.
    let inserted = old.execute(
        "INSERT OR IGNORE INTO firings (stage, door, due, performance, note) \
         VALUES ('name:a', 'tick', 1, NULL, 'x')",
        [],
    );
    assert_eq!(inserted.unwrap(), 1);
}
