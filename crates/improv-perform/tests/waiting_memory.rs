//! What one performance holds while it waits (issue 15: 10,000 waiting in one worker within
//! 2 GB): the heap a `Production` keeps once opened, counted by a counting allocator, stays
//! under a bound. Its edges compiled the same default globs and secret patterns afresh for
//! every performance (about 240 KB each); they are compiled once per process now.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_perform::production::{Launch, Production};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};

/// Productions opened and held.
const HELD: isize = 20;
/// The most heap one production may keep, in bytes (about 110 KB measured).
const MAX_EACH: isize = 160 * 1024;

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call goes to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::SeqCst);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::SeqCst);
        // SAFETY: the caller's contract, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_production_holds_little_memory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stage.toml"),
        "[stage]\nname = \"waiting\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"scripted/script.json\"\n\n[edges]\nworkspace = \".\"\nsandbox = \"off\"\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("script.json"), r#"[{"say": "done"}]"#).unwrap();
    let path = dir.path().join("stage.toml");
    let open = |intent: String| {
        let stage = Arc::new(improv_stage::Stage::load(&path).unwrap());
        Production::open(stage, Launch::new(intent)).unwrap()
    };
    // The first pays for what a process compiles once.
    let _first = open("first".into());
    let before = LIVE.load(Ordering::SeqCst);
    let held: Vec<_> = (0..HELD).map(|i| open(format!("p{i}"))).collect();
    let each = (LIVE.load(Ordering::SeqCst) - before) / HELD;
    assert_eq!(held.len() as isize, HELD);
    assert!(
        each <= MAX_EACH,
        "each production keeps {each} bytes of heap (at most {MAX_EACH})"
    );
}
