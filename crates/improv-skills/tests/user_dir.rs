//! The user's skills folder follows XDG_DATA_HOME, then HOME. This file is its own test process,
//! so setting the environment here cannot race other tests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use std::path::PathBuf;

#[test]
fn the_user_dir_follows_xdg_data_home_then_home() {
    let xdg = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    // SAFETY: the only test in this process; nothing else reads the environment concurrently.
    unsafe {
        std::env::set_var("HOME", home.path());
        std::env::set_var("XDG_DATA_HOME", xdg.path());
    }
    assert_eq!(
        improv_skills::user_dir(),
        Some(xdg.path().join("improv/skills"))
    );
    // SAFETY: as above.
    unsafe {
        std::env::remove_var("XDG_DATA_HOME");
    }
    assert_eq!(
        improv_skills::user_dir(),
        Some(PathBuf::from(home.path()).join(".local/share/improv/skills"))
    );
}
