//! Test support: runs one unit test again in a child process of its own, for tests that change
//! what the whole process shares (its open-file limit, a probe's cached answer).

/// Returns `true` in the child, which then runs the test's body; in the parent, runs the test
/// binary again for exactly `name` with `marker` set in its environment, asserts that it passed,
/// and returns `false` (the parent's test is then done).
pub(crate) fn in_child(name: &str, marker: &str) -> bool {
    if std::env::var_os(marker).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new(exe)
        .args(["--exact", name, "--test-threads=1", "--nocapture"])
        .env(marker, "1")
        .output()
        .expect("run the test binary again");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the child failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    false
}
