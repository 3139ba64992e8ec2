//! A statement the server cannot finish does not hold its caller: every pooled session carries
//! `statement_timeout` (`?statement_timeout=` in the URL, 30 s by default), so the call fails
//! `Unavailable` (transient: the worker waits and retries) instead of blocking. Real PostgreSQL,
//! with another session holding the lock every claim and list needs, and with the store's
//! sessions stopped (SIGSTOP), which the server's own timeout cannot end.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_store::testing::TempPostgres;
use improv_store::{ListFilter, PgStore, Store, StoreUrl};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A psql session that takes `performances` exclusively and keeps it for a minute.
fn hold_the_table(pg: &TempPostgres, db: &str) -> Child {
    Command::new(pg.bin_dir().join("psql"))
        .args(["-X", "-q", "-d", &pg.url(db), "-c"])
        .arg("BEGIN; LOCK TABLE performances IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60); COMMIT")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start psql")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_the_server_cannot_finish_fails_unavailable_instead_of_blocking() {
    let pg = TempPostgres::start_new();
    let url = pg.create_database("timeouts");
    let store = PgStore::connect(&format!("{url}&statement_timeout=300ms")).unwrap();
    store.migrate().await.unwrap();

    let mut holder = hold_the_table(&pg, "timeouts");
    let granted = "SELECT count(*) FROM pg_locks WHERE granted AND mode = 'AccessExclusiveLock' \
                   AND relation = 'performances'::regclass";
    while pg.psql("timeouts", granted).trim() != "1" {
        assert!(holder.try_wait().unwrap().is_none(), "psql ended early");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Bounded far above the statement timeout: without it the call would wait out the lock.
    let answer =
        tokio::time::timeout(Duration::from_secs(20), store.list(&ListFilter::default())).await;
    // The server keeps a sleeping session's lock after its client goes: end the session.
    pg.psql(
        "timeouts",
        &granted.replace("count(*)", "pg_terminate_backend(pid)"),
    );
    holder.wait().unwrap();
    let error = answer
        .expect("the call blocked behind the lock: no statement timeout")
        .expect_err("the table was locked");
    assert!(error.is_transient(), "not retried: {error}");
    assert!(error.to_string().contains("statement timeout"), "{error}");

    // Once the lock is gone the same store answers again.
    store.list(&ListFilter::default()).await.unwrap();
}

fn signal_all(pids: &[String], signal: &str) {
    for pid in pids {
        let status = Command::new("kill").args([signal, pid]).status().unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }
}

/// A server that stopped answering never sends the statement timeout's cancellation: the
/// client's own bound ends the call `Unavailable`, and the store answers again once the server
/// does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stopped_answering_does_not_hold_a_call() {
    let pg = TempPostgres::start_new();
    let url = pg.create_database("stopped");
    let store =
        improv_store::open(&StoreUrl::parse(&format!("{url}&statement_timeout=300ms")).unwrap())
            .unwrap();
    store.migrate().await.unwrap();
    store.list(&ListFilter::default()).await.unwrap();

    // Every session of the store's (its pooled connection) stops, as a hung host would.
    let pids: Vec<String> = pg
        .psql(
            "postgres",
            "SELECT pid FROM pg_stat_activity WHERE datname = 'stopped'",
        )
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    assert!(!pids.is_empty(), "the store holds no session");
    signal_all(&pids, "-STOP");
    let answer =
        tokio::time::timeout(Duration::from_secs(30), store.list(&ListFilter::default())).await;
    signal_all(&pids, "-CONT");
    let error = answer
        .expect("the call waited on a stopped server: no client-side bound")
        .expect_err("the server was stopped");
    assert!(error.is_transient(), "not retried: {error}");
    assert!(error.to_string().contains("no answer within"), "{error}");

    // Back: the store answers again (the stuck connection drains or is replaced).
    let mut answered = false;
    for _ in 0..20 {
        if store.list(&ListFilter::default()).await.is_ok() {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(answered, "the store never answered again");
}

/// The key-value calls a door makes (compare-and-set, the sweep) are bounded like the rest: a
/// stopped server (its sessions and the postmaster, so no fresh connection answers either)
/// fails each `Unavailable` instead of holding the door.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_value_calls_are_bounded_too() {
    let pg = TempPostgres::start_new();
    let url = pg.create_database("kv");
    let store =
        improv_store::open(&StoreUrl::parse(&format!("{url}&statement_timeout=300ms")).unwrap())
            .unwrap();
    store.migrate().await.unwrap();
    store.get_versioned("s", "k").await.unwrap();
    let data = pg.psql("kv", "SHOW data_directory");
    let postmaster =
        std::fs::read_to_string(std::path::Path::new(data.trim()).join("postmaster.pid")).unwrap();
    let mut pids: Vec<String> = pg
        .psql(
            "postgres",
            "SELECT pid FROM pg_stat_activity WHERE datname = 'kv'",
        )
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect();
    pids.push(postmaster.lines().next().unwrap().trim().to_string());
    signal_all(&pids, "-STOP");
    let sweep = improv_store::Sweep {
        before: 0,
        keep: 1,
        batch: 0,
    };
    let value = serde_json::json!(1);
    let within = Duration::from_secs(30);
    let answers = [
        tokio::time::timeout(within, async {
            store.get_versioned("s", "k").await.map(|_| ())
        })
        .await,
        tokio::time::timeout(within, async {
            store.put_if("s", "k", Some(1), &value).await.map(|_| ())
        })
        .await,
        tokio::time::timeout(within, async { store.sweep("s", &sweep).await.map(|_| ()) }).await,
    ];
    signal_all(&pids, "-CONT");
    for (call, answer) in ["get_versioned", "put_if", "sweep"]
        .into_iter()
        .zip(answers)
    {
        let error = answer
            .unwrap_or_else(|_| panic!("{call} waited on a stopped server: no client-side bound"))
            .expect_err("the server was stopped");
        assert!(error.is_transient(), "{call} not retried: {error}");
        assert!(
            error.to_string().contains("no answer within"),
            "{call}: {error}"
        );
    }
}
