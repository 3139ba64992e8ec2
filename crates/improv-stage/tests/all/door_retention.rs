//! `[doors]`: how long door-made performances are kept (`keep_for`, `keep_last`), read with
//! their defaults, and a value below its floor refused at its line with what to do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_stage::{DoorRetention, Invalid, Stage, StageError};
use std::path::Path;
use std::time::Duration;

fn invalid(text: &str) -> Box<Invalid> {
    match Stage::parse(text, Path::new("stage.toml")) {
        Err(StageError::Invalid(i)) => i,
        other => panic!("expected an invalid stage, got {other:?}"),
    }
}

#[test]
fn door_retention_is_a_setting_with_defaults() {
    let stage = Stage::parse("", Path::new("stage.toml")).unwrap();
    let default = DoorRetention {
        keep_for: Duration::from_secs(30 * 24 * 3600),
        keep_last: 20,
    };
    assert_eq!(stage.door_retention, default);
    let text = "[doors]\nkeep_for = \"1d\"\nkeep_last = 50\n";
    let stage = Stage::parse(text, Path::new("stage.toml")).unwrap();
    let asked = DoorRetention {
        keep_for: Duration::from_secs(24 * 3600),
        keep_last: 50,
    };
    assert_eq!(stage.door_retention, asked);
}

#[test]
fn door_retention_below_its_floor_is_refused_at_its_line() {
    let cases = [
        ("keep_for = \"2h\"", "shorter than a day", "at least a day"),
        ("keep_for = \"soon\"", "not a duration", "1h30m"),
        (
            "keep_last = 5",
            "`keep_last` is below 20",
            "give 20 or more",
        ),
        (
            "keep_last = -1",
            "`keep_last` is below 20",
            "give 20 or more",
        ),
    ];
    for (line, message, hint) in cases {
        let text = format!("[stage]\nname = \"s\"\n\n[doors]\n{line}\n");
        let i = invalid(&text);
        assert!(i.message.contains(message), "{line}: {}", i.message);
        assert!(
            i.location.starts_with("stage.toml:5:"),
            "{line}: {}",
            i.location
        );
        let report = format!("{:?}", miette::Report::new(*i));
        assert!(report.contains(hint), "{line}: {report}");
    }
    let unknown = invalid("[doors]\nkeep = 3\n");
    assert!(
        unknown.location.starts_with("stage.toml:2:"),
        "{}",
        unknown.location
    );
}
