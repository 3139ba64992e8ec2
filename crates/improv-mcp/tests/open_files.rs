//! An MCP stdio server starts with the open-file limit improv started with, not the one a
//! long-running improv raised for itself. Its own test binary: it changes the process's limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_stage::McpServer;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn open_files() -> libc::rlimit {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    assert_eq!(got, 0);
    limit
}

#[tokio::test]
async fn an_mcp_stdio_server_starts_with_the_open_file_limit_improv_started_with() {
    // A soft limit below the hard one, whatever this machine's are, for `raise` to change.
    let hard = open_files().rlim_max;
    let started = 256.min(hard - 1);
    let lowered = libc::rlimit {
        rlim_cur: started,
        rlim_max: hard,
    };
    // SAFETY: setrlimit reads the struct we pass.
    let set = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) };
    assert_eq!(set, 0);
    improv_edges::open_files::raise().unwrap();
    assert_eq!(
        open_files().rlim_cur,
        hard,
        "raise leaves the soft limit at the hard one"
    );

    // A "server" that writes the soft limit it sees and exits: no MCP, so attach fails.
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("limit.sh");
    let seen = dir.path().join("seen");
    std::fs::write(&script, "#!/bin/sh\nulimit -Sn > \"$1\"\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = McpServer {
        name: "limit".into(),
        command: Some(script.to_str().unwrap().into()),
        args: vec![seen.to_str().unwrap().into()],
        env: Vec::new(),
        set_env: Default::default(),
        cwd: None,
        url: None,
        headers_from_env: Default::default(),
        timeout: Some(Duration::from_secs(30)),
        tools: None,
    };
    let attached = improv_mcp::attach(&[server], dir.path(), dir.path()).await;
    assert!(attached.is_err(), "the script is no MCP server");

    let seen = std::fs::read_to_string(&seen).expect("the server ran and wrote its limit");
    assert_eq!(
        seen.trim(),
        started.to_string(),
        "the server's soft open-file limit"
    );
    assert_eq!(
        open_files().rlim_cur,
        hard,
        "improv's own limit stays raised"
    );
}
