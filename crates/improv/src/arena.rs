//! The allocator settings of a long-running `improv serve`: one glibc malloc arena.
//!
//! glibc gives threads arenas of their own (up to eight per core), and memory freed in one is
//! kept there for that arena's next allocations. The door bench (`bench/doors/run.sh`) measured
//! what that costs a daemon whose tokio and blocking threads take turns: its live heap stayed
//! flat at about 2.4 MB (heaptrack, 9 minutes), while the anonymous memory of the process grew
//! about 60 KB a minute, arena after arena, with no end in sight (+11% in 45 minutes); with a
//! single arena the same run grew 2.2% in 25 minutes after warm-up. The daemon does little CPU work per message, so the lock a
//! single arena shares is not contended. Written here rather than switching the global
//! allocator, which would change every other command's memory too.

/// Limits glibc malloc to one arena; call before the runtime starts its threads. Does nothing
/// when `MALLOC_ARENA_MAX` is set (the operator's choice is kept).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn one_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; it is called before the runtime
        // starts other threads, and glibc takes its own lock for it in any case.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

/// Where the C library is not glibc, there is nothing to set.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn one_arena() {}
