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

/// Run by `a_killed_test_leaves_no_server_behind` in a child process: starts a server, says
/// where, and waits to be killed.
#[test]
#[ignore = "a helper the kill test runs in a child process"]
fn child_holding_a_server() {
    if std::env::var_os("IMPROV_PG_CHILD").is_none() {
        return;
    }
    let pg = TempPostgres::start_new();
    println!("SOCKET {}", pg.socket_dir().display());
    std::thread::sleep(std::time::Duration::from_secs(600));
}

#[test]
fn a_killed_test_leaves_no_server_behind() {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        // A substring filter: the test's full name carries its module's path in the test binary.
        .args(["child_holding_a_server", "--ignored", "--nocapture"])
        .env("IMPROV_PG_CHILD", "1")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let dir = stdout
        .lines()
        .map(Result::unwrap)
        .find_map(|line| line.strip_prefix("SOCKET ").map(std::path::PathBuf::from))
        .expect("the child started a server");
    let pid_file = dir.join("data/postmaster.pid");
    assert!(pid_file.exists());
    child.kill().unwrap(); // SIGKILL: no destructor runs
    child.wait().unwrap();
    // The watchdog polls every second; give it far longer than that before calling it a leak.
    for _ in 0..300 {
        if !dir.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Leaked: stop the server ourselves so the failure leaves nothing running.
    if let Ok(text) = std::fs::read_to_string(&pid_file) {
        let pid = text.lines().next().unwrap_or_default().to_string();
        let _ = std::process::Command::new("kill")
            .args(["-QUIT", &pid])
            .status();
    }
    panic!(
        "the server of a killed test was left running in {}",
        dir.display()
    );
}
