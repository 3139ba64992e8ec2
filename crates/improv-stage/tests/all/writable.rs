//! `writable` under `[edges]`: the control files a stage opens to its actors. Plain paths inside
//! the workspace parse; `.improv`, the whole workspace and paths that leave it are refused with
//! the line and a hint.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_stage::{Stage, StageError};
use std::path::{Path, PathBuf};

fn parse(writable: &str) -> Result<Stage, StageError> {
    Stage::parse(
        &format!("[stage]\nname = \"w\"\n\n[edges]\nwritable = {writable}\n"),
        Path::new("/proj/stage.toml"),
    )
}

/// The problem's location and rendered text.
fn refused(writable: &str) -> (String, String) {
    let err = parse(writable).unwrap_err();
    let StageError::Invalid(inv) = &err else {
        panic!("expected an invalid stage, got {err:?}");
    };
    let mut out = String::new();
    miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        .with_width(400)
        .render_report(&mut out, &err)
        .unwrap();
    (inv.location.clone(), out)
}

#[test]
fn plain_paths_open_control_files() {
    let stage = parse(r#"["skills/", "./AGENTS.md", "tools/server.py"]"#).unwrap();
    assert_eq!(
        stage.edges.writable,
        [
            PathBuf::from("skills"),
            PathBuf::from("AGENTS.md"),
            PathBuf::from("tools/server.py")
        ]
    );
    assert!(parse("[]").unwrap().edges.writable.is_empty());
    assert!(
        Stage::parse("", Path::new("/proj/stage.toml"))
            .unwrap()
            .edges
            .writable
            .is_empty()
    );
}

#[test]
fn improvs_state_can_never_be_opened() {
    for w in [
        r#"[".improv"]"#,
        r#"["./.improv/notes"]"#,
        r#"[".improv/"]"#,
    ] {
        let (at, report) = refused(w);
        assert_eq!(at, "/proj/stage.toml:5:13", "{report}");
        assert!(report.contains("can never be opened"), "{report}");
        assert!(report.contains("help:"), "{report}");
    }
}

#[test]
fn the_whole_workspace_and_paths_outside_it_are_refused() {
    let (_, report) = refused(r#"["."]"#);
    assert!(report.contains("whole workspace"), "{report}");
    let (_, report) = refused(r#"["../other"]"#);
    assert!(report.contains("leaves the workspace"), "{report}");
    let (_, report) = refused(r#"["/etc/passwd"]"#);
    assert!(report.contains("absolute"), "{report}");
}
