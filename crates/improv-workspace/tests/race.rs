//! Both ways of opening beneath the root (`openat2`, and the walk that stands in for it on older
//! kernels) against a thread that exchanges `ws/d` between a real folder and a symlink to an
//! outside folder as fast as it can: reads, listings and writes under `d` never reach outside.

#![allow(clippy::unwrap_used)] // tests may unwrap

use improv_workspace::{Method, Scope, Workspace};
use rustix::fs::{CWD, RenameFlags};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const SECRET: &str = "OUTSIDE-SECRET-c470";
const TRIES: usize = 3000;

fn race(method: Method) {
    let base = tempfile::tempdir().unwrap();
    let base = base.path().canonicalize().unwrap();
    let (root, outside) = (base.join("ws"), base.join("outside"));
    std::fs::create_dir_all(root.join("d")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(root.join("d/secret.txt"), "inside").unwrap();
    std::fs::write(outside.join("secret.txt"), SECRET).unwrap();
    std::fs::write(outside.join("outside-only.txt"), "").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("swap")).unwrap();
    let ws = Workspace::with_method(&root, Scope::Workspace, method).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = Arc::new(AtomicU64::new(0));
    let swapper = {
        let (stop, swaps, root) = (stop.clone(), swaps.clone(), root.clone());
        std::thread::spawn(move || {
            let (d, swap) = (root.join("d"), root.join("swap"));
            while !stop.load(Ordering::Relaxed) {
                if rustix::fs::renameat_with(CWD, &d, CWD, &swap, RenameFlags::EXCHANGE).is_ok() {
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
                // Let the reader run in either state, not only while a rename holds the folder.
                std::thread::yield_now();
            }
        })
    };
    let (mut inside, mut refused) = (0, 0);
    // At least TRIES, and on until both states were met (bounded).
    let mut i = 0;
    while i < TRIES || (inside == 0 || refused == 0) && i < 50 * TRIES {
        i += 1;
        match ws.read_to_string("d/secret.txt", 100) {
            Ok(text) => {
                assert_eq!(text, "inside", "{method:?}: read outside");
                inside += 1;
            }
            Err(_) => refused += 1,
        }
        if let Ok(entries) = ws.read_dir("d") {
            assert!(
                entries.iter().all(|e| e.name != "outside-only.txt"),
                "{method:?}: listed outside"
            );
        }
        let _ = ws.write("d/out.txt", format!("{i}").as_bytes());
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    let mut names: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    println!(
        "{method:?}: {} swaps, {i} tries, {inside} read inside, {refused} refused",
        swaps.load(Ordering::Relaxed)
    );
    assert_eq!(
        names,
        ["outside-only.txt", "secret.txt"],
        "{method:?}: wrote outside"
    );
    assert!(
        inside > 0 && refused > 0,
        "{method:?}: the race was really run"
    );
}

#[test]
fn openat2_holds_against_a_swapping_folder() {
    race(Method::Openat2);
}

#[test]
fn the_walk_holds_against_a_swapping_folder() {
    race(Method::Walk);
}
