//! The open-file limit of a long-running `improv serve` or `improv worker`: raised to the hard
//! limit at start. A worker holds a socket per performance waiting on its model (and commands
//! their pipes), so thousands at once need thousands of descriptors; the soft limit is often
//! 1,024 where the hard one is far higher, and raising it is what a server is expected to do
//! (systemd's default soft limit of 1,024 exists for `select(2)`, which improv does not use).
//! The programs improv starts get the original back ([`improv_edges::open_files`]).

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; call at the start of a long-running
/// command. A limit that cannot be raised is left as it is, with a warning.
pub fn raise_open_files() {
    if let Err(e) = improv_edges::open_files::raise() {
        tracing::warn!("{e}");
    }
}
