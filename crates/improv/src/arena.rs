//! The allocator settings of a long-running `improv serve`: one glibc malloc arena whose free
//! pages are handed back every minute, and a soft limit on SQLite's heap.
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

/// How often a long-running `improv serve` hands glibc's free heap pages back to the system.
pub const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Starts a thread of its own that calls `malloc_trim(0)` every [`TRIM_EVERY`]. With one arena
/// the heap's free chunks stay resident between the long-lived blocks allocated after them
/// (SQLite's cached pages among the messages' short-lived buffers): the door bench's heap
/// segment held about twice the live heap heaptrack saw. glibc returns such memory itself only
/// from the top of the heap; `malloc_trim` also releases the free pages inside it.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim_periodically() {
    let spawned = std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(|| {
            loop {
                std::thread::sleep(TRIM_EVERY);
                // SAFETY: malloc_trim takes glibc's arena locks itself; any thread may call it.
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("free heap pages are not handed back to the system: {e}");
    }
}

/// Where the C library is not glibc, there is nothing to trim.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim_periodically() {}

/// The memory SQLite may keep, every connection of the process together, before it recycles
/// cached pages instead of allocating more. heaptrack over 12 minutes of the door bench found
/// the daemon's own live heap flat and SQLite's growing (0.44 MB at 2.5 min, 0.73 MB at 12 min)
/// in page-sized blocks: each connection (the doors' store, the event index) caches up to
/// SQLite's default 2 MB of pages as its files and their write-ahead logs grow, a bound reached
/// only after hours, so the resident set kept rising through the hour bench (+32.5% at 60 min,
/// anonymous memory 4.4 -> 8.3 MB). The daemon's working set is a few hundred KB; a page read
/// again comes from the OS's cache. With this limit and [`trim_periodically`], a 30-minute run
/// of the debug build kept its anonymous memory at 8.1-8.2 MB from minute 15 to 30 (7.9 at 10),
/// where the same build without them grew 8.4 -> 9.7 MB from minute 10 to 30.
pub const SQLITE_SOFT_HEAP: i64 = 1 << 20;

/// Sets SQLite's soft heap limit to [`SQLITE_SOFT_HEAP`] for this process.
pub fn sqlite_soft_heap() {
    // SAFETY: sqlite3_soft_heap_limit64 only stores a number under SQLite's own mutex; any
    // thread may call it at any time.
    unsafe {
        rusqlite::ffi::sqlite3_soft_heap_limit64(SQLITE_SOFT_HEAP);
    }
}
