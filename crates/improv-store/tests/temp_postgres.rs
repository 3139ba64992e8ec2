//! The throwaway server itself: it starts, makes databases, stops (cutting every connection) and
//! starts again with its data, as the store's restart tests and the worker's chaos test need.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_store::testing::TempPostgres;

#[test]
fn a_temp_server_stops_and_starts_again_with_its_data() {
    let pg = TempPostgres::start_new();
    let url = pg.create_database("one");
    assert!(url.starts_with("postgres://postgres@/one?host=/"), "{url}");
    pg.psql("one", "CREATE TABLE t (n int); INSERT INTO t VALUES (7)");
    pg.stop();
    let down = std::panic::catch_unwind(|| pg.psql("one", "SELECT 1"));
    assert!(down.is_err(), "psql reached a stopped server");
    pg.start();
    assert_eq!(pg.psql("one", "SELECT n FROM t").trim(), "7");
}
