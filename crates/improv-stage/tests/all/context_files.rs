//! `[context] files` are read beneath the stage folder: a file that leads outside it through a
//! symlink, even one swapped in while the prompt is built, never brings outside text into an
//! actor's system prompt.

#![allow(clippy::unwrap_used)] // tests may unwrap

use improv_stage::Stage;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

const SECRET: &str = "OUTSIDE-SECRET-e61f";

/// A stage folder whose context files are `files`, and an outside folder holding the secret.
fn fixture(files: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let base = tempfile::tempdir().unwrap();
    let real = base.path().canonicalize().unwrap();
    let (stage, outside) = (real.join("stage"), real.join("outside"));
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.md"), SECRET).unwrap();
    std::fs::write(
        stage.join("stage.toml"),
        format!("[context]\nfiles = {files}\n"),
    )
    .unwrap();
    (base, stage, outside)
}

#[test]
fn a_context_file_that_leads_outside_is_left_out_and_named() {
    let (_base, dir, outside) =
        fixture(r#"["AGENTS.md", "rel.md", "docs/GUIDE.md", "../outside/secret.md", "ok.md"]"#);
    std::os::unix::fs::symlink(outside.join("secret.md"), dir.join("AGENTS.md")).unwrap();
    std::os::unix::fs::symlink("../outside/secret.md", dir.join("rel.md")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("docs")).unwrap();
    std::fs::write(dir.join("real.md"), "Inside guidance.").unwrap();
    std::os::unix::fs::symlink("real.md", dir.join("ok.md")).unwrap();
    let stage = Stage::load(&dir).unwrap();
    let prompt = stage.system_prompt(stage.lead(), &dir);
    assert!(!prompt.contains(SECRET), "{prompt}");
    for name in ["AGENTS.md", "rel.md", "docs/GUIDE.md"] {
        assert!(
            prompt.contains(&format!(
                "[context file {name} is left out: it leads outside the stage folder through a symlink]"
            )),
            "{name}: {prompt}"
        );
    }
    assert!(
        prompt.contains(
            "[context file ../outside/secret.md is left out: it is outside the stage folder]"
        ),
        "{prompt}"
    );
    assert!(
        prompt.contains("# file: ok.md\nInside guidance.\n"),
        "{prompt}"
    );
}

#[test]
fn a_context_file_swapped_for_a_symlink_never_reaches_the_prompt() {
    const TRIES: usize = 2000;
    let (_base, dir, outside) = fixture(r#"["AGENTS.md"]"#);
    std::fs::write(dir.join("AGENTS.md"), "Inside rules.").unwrap();
    let stage = Stage::load(&dir).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, dir, secret) = (stop.clone(), dir.clone(), outside.join("secret.md"));
        std::thread::spawn(move || {
            let (file, temp) = (dir.join("AGENTS.md"), dir.join(".swap"));
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // Each rename replaces AGENTS.md at once: a symlink out, then a file again.
                let ok = std::os::unix::fs::symlink(&secret, &temp).is_ok()
                    && std::fs::rename(&temp, &file).is_ok()
                    && std::fs::write(&temp, "Inside rules.").is_ok()
                    && std::fs::rename(&temp, &file).is_ok();
                swaps += u64::from(ok);
            }
            swaps
        })
    };
    let (mut inside, mut refused) = (0, 0);
    for _ in 0..TRIES {
        let prompt = stage.system_prompt(stage.lead(), &dir);
        assert!(
            !prompt.contains(SECRET),
            "outside text in the prompt: {prompt}"
        );
        inside += usize::from(prompt.contains("Inside rules."));
        refused += usize::from(prompt.contains("is left out"));
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    println!("{swaps} swaps, {TRIES} prompts, {inside} with the file, {refused} refused");
    assert!(
        swaps > 0 && inside > 0 && refused > 0,
        "the race was really run"
    );
}
