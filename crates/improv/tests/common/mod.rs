//! What every CLI test shares: the `improv` binary run away from the developer's own data, so a
//! machine with skills installed under `~/.local/share` sees the same results as a bare one.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// An empty data home for every run of the binary in this test process; kept for its lifetime.
pub fn data_home() -> &'static Path {
    static DATA: OnceLock<tempfile::TempDir> = OnceLock::new();
    DATA.get_or_init(|| tempfile::tempdir().expect("a temp dir for XDG_DATA_HOME"))
        .path()
}

/// The `improv` binary with `XDG_DATA_HOME` pointing at an empty temp folder. A test that wants
/// installed skills sets its own `XDG_DATA_HOME` after this. The embedded models stay where the
/// quick start put them: the model store is named explicitly (`IMPROV_MODELS` as this process
/// sees it, else the user's data folder), since it would otherwise move with `XDG_DATA_HOME`.
pub fn improv_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_improv"));
    c.env("XDG_DATA_HOME", data_home());
    #[cfg(feature = "embedded")]
    c.env("IMPROV_MODELS", improv_local::store::store_dir());
    c
}
