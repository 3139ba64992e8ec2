//! Many connections set up on a new file at the same moment (a worker's performances of a new
//! stage opening its log, or two processes starting): every one succeeds. Without the retry in
//! `prepare`, SQLite refuses some of them at once with "database is locked".
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Barrier};
use std::time::Duration;

#[test]
fn many_first_opens_at_once_all_succeed() {
    for round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let barrier = Arc::new(Barrier::new(32));
        let openers: Vec<_> = (0..32)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let conn = improv_sqlite::open(&path, Duration::from_secs(5))?;
                    conn.query_row("PRAGMA journal_mode", [], |r| r.get::<_, String>(0))
                })
            })
            .collect();
        for opener in openers {
            let mode = opener.join().unwrap();
            assert_eq!(mode.as_deref().ok(), Some("wal"), "round {round}: {mode:?}");
        }
    }
}
