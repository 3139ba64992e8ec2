//! The open-file limit of a long-running `improv serve` or `improv worker`: raised to the hard
//! limit at start. A worker holds a socket per performance waiting on its model (and commands
//! their pipes), so thousands at once need thousands of descriptors; the soft limit is often
//! 1,024 where the hard one is far higher, and raising it is what a server is expected to do
//! (systemd's default soft limit of 1,024 exists for `select(2)`, which improv does not use).

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; call at the start of a long-running
/// command. A limit that cannot be read or raised is left as it is, with a warning.
pub fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0
        || limit.rlim_cur >= limit.rlim_max
    {
        return;
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        tracing::warn!(
            "could not raise the open-file limit from {} to {}: {}; raise it with `ulimit -n` \
             before starting improv",
            limit.rlim_cur,
            limit.rlim_max,
            std::io::Error::last_os_error()
        );
    }
}
