//! File checks read beneath their folders: the checked file beneath the workspace, the schema
//! beneath the stage folder. A symlink that leads outside, planted or swapped in while the judge
//! runs, is refused, and no outside text reaches a verdict (a schema violation quotes values, so
//! a verdict is a way out if the check follows the link).

#![allow(clippy::unwrap_used)] // tests may unwrap

use improv_feedback::{Judge, Verdict};
use improv_stage::{CheckOn, Stage};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "OUTSIDE-SECRET-9b37";

/// A stage folder `stage` (its workspace is `stage/ws`) and an `outside` folder holding the
/// secret as JSON and a schema that quotes it.
fn fixture() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let base = tempfile::tempdir().unwrap();
    let real = base.path().canonicalize().unwrap();
    let (stage, outside) = (real.join("stage"), real.join("outside"));
    std::fs::create_dir_all(stage.join("ws/d")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("data.json"), format!("\"{SECRET}\"")).unwrap();
    std::fs::write(
        outside.join("schema.json"),
        format!(r#"{{"const": "{SECRET}"}}"#),
    )
    .unwrap();
    std::fs::write(stage.join("number.schema.json"), r#"{"type": "number"}"#).unwrap();
    (base, stage, outside)
}

fn judge(stage_dir: &Path, checks: &str) -> Judge {
    let text = format!("[edges]\nworkspace = \"ws\"\n\n{checks}");
    let path = stage_dir.join("stage.toml");
    std::fs::write(&path, &text).unwrap();
    let stage = Stage::parse(&text, &path).unwrap();
    Judge::new(
        stage.feedback.checks.clone(),
        &stage.workspace(),
        &stage.dir,
    )
    .unwrap()
}

fn check(name: &str, body: &str) -> String {
    format!("[[feedback.check]]\nname = \"{name}\"\n{body}\n\n")
}

async fn done(judge: &Judge) -> Vec<Verdict> {
    judge
        .judge(CheckOn::Done, "brief", &CancellationToken::new())
        .await
}

#[tokio::test]
async fn checked_files_and_schemas_that_lead_outside_are_refused() {
    let (_base, stage, outside) = fixture();
    let ws = stage.join("ws");
    std::os::unix::fs::symlink(outside.join("data.json"), ws.join("data.json")).unwrap();
    std::os::unix::fs::symlink(&outside, ws.join("out")).unwrap();
    std::fs::write(ws.join("one.json"), "1").unwrap();
    std::os::unix::fs::symlink(outside.join("schema.json"), stage.join("leak.schema.json"))
        .unwrap();
    let judge = judge(
        &stage,
        &[
            check(
                "file",
                "file = \"data.json\"\nschema = \"number.schema.json\"",
            ),
            check("folder", "file = \"out/data.json\"\nmatches = \"SECRET\""),
            check(
                "schema",
                "file = \"one.json\"\nschema = \"leak.schema.json\"",
            ),
        ]
        .concat(),
    );
    let v = done(&judge).await;
    for verdict in &v {
        assert!(!verdict.passed, "{verdict:?}");
        assert!(!verdict.output.contains(SECRET), "{verdict:?}");
    }
    assert!(
        v[0].output
            .contains("`data.json` leads outside the workspace through a symlink"),
        "{}",
        v[0].output
    );
    assert!(
        v[1].output
            .contains("`out/data.json` leads outside the workspace through a symlink"),
        "{}",
        v[1].output
    );
    assert!(
        v[2].output
            .contains("leak.schema.json` leads outside the stage folder through a symlink"),
        "{}",
        v[2].output
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_swapped_for_a_symlink_never_brings_outside_text_into_a_verdict() {
    const TRIES: usize = 1000;
    let (_base, stage, outside) = fixture();
    let ws = stage.join("ws");
    std::fs::write(ws.join("d/data.json"), "\"inside\"").unwrap();
    let judge = judge(
        &stage,
        &check(
            "data",
            "file = \"d/data.json\"\nschema = \"number.schema.json\"",
        ),
    );
    std::os::unix::fs::symlink(&outside, ws.join("d.link")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, ws) = (stop.clone(), ws.clone());
        std::thread::spawn(move || {
            let (d, real, link) = (ws.join("d"), ws.join("d.real"), ws.join("d.link"));
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // The folder out, the symlink in; then back.
                let ok = std::fs::rename(&d, &real).is_ok()
                    && std::fs::rename(&link, &d).is_ok()
                    && std::fs::rename(&d, &link).is_ok()
                    && std::fs::rename(&real, &d).is_ok();
                swaps += u64::from(ok);
            }
            swaps
        })
    };
    let (mut inside, mut refused) = (0, 0);
    for _ in 0..TRIES {
        let v = done(&judge).await;
        let output = &v[0].output;
        assert!(
            !output.contains(SECRET),
            "outside text in a verdict: {output}"
        );
        inside += usize::from(output.contains("\"inside\" is not of type"));
        refused += usize::from(output.contains("leads outside the workspace"));
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    println!("{swaps} swaps, {TRIES} verdicts, {inside} on the inside file, {refused} refused");
    assert!(
        swaps > 0 && inside > 0 && refused > 0,
        "the race was really run"
    );
}
