//! `rate`, `max_running` and `sender_rate` on `[[door]]`: the limits that bound a flood or a
//! replayed delivery, parsed into typed values, and every mistake said with a hint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_stage::{DoorKind, Invalid, Rate, Stage, StageError};
use std::path::Path;
use std::time::Duration;

fn invalid(text: &str) -> Box<Invalid> {
    match Stage::parse(text, Path::new("stage.toml")) {
        Err(StageError::Invalid(i)) => i,
        other => panic!("expected an invalid stage, got {other:?}"),
    }
}

#[test]
fn rates_are_written_as_users_expect() {
    let per = |s: u64| Duration::from_secs(s);
    for (text, count, period) in [
        ("30/min", 30, per(60)),
        ("10/s", 10, per(1)),
        ("100/h", 100, per(3600)),
        ("500/day", 500, per(86_400)),
        ("5/10s", 5, per(10)),
        (" 2 / minute ", 2, per(60)),
    ] {
        let rate: Rate = text.parse().unwrap();
        assert_eq!((rate.count, rate.per), (count, period), "{text}");
    }
    assert_eq!("30/min".parse::<Rate>().unwrap().refill(), per(2));
    for bad in ["30", "0/min", "x/min", "3/fortnight", "3/0s"] {
        assert!(bad.parse::<Rate>().is_err(), "{bad}");
    }
}

#[test]
fn webhook_and_channel_doors_take_limits() {
    let stage = Stage::parse(
        r#"
[[door]]
name = "github"
webhook = "/doors/github"
secret_env = "S"
rate = "30/min"
max_running = 4

[[door]]
name = "chat"
channel = "slack"
rate = "60/min"
max_running = 2
sender_rate = "10/min"

[[door]]
name = "bare"
webhook = "/doors/bare"
secret_env = "S"
"#,
        Path::new("stage.toml"),
    )
    .unwrap();
    let d = &stage.doors;
    assert_eq!(
        d[0].rate.map(|r| (r.count, r.per)),
        Some((30, Duration::from_secs(60)))
    );
    assert_eq!(d[0].max_running, Some(4));
    assert_eq!(d[1].rate.map(|r| r.count), Some(60));
    assert_eq!(d[1].max_running, Some(2));
    let DoorKind::Channel(chat) = &d[1].kind else {
        panic!("{:?}", d[1].kind)
    };
    assert_eq!(chat.sender_rate.map(|r| r.count), Some(10));
    assert_eq!((d[2].rate, d[2].max_running), (None, None));
}

#[test]
fn limit_mistakes_are_said_with_a_place_and_a_hint() {
    let hook = "[[door]]\nname = \"a\"\nwebhook = \"/doors/a\"\nsecret_env = \"S\"\n";
    let timed = "[[door]]\nname = \"a\"\nintent = \"y\"\nevery = \"1h\"\n";
    let cases: &[(String, &str, &str)] = &[
        (
            format!("{hook}rate = \"30\"\n"),
            "`rate` is not a rate",
            "30/min",
        ),
        (
            format!("{hook}rate = \"3/fortnight\"\n"),
            "not a rate",
            "COUNT/DURATION",
        ),
        (
            format!("{hook}max_running = 0\n"),
            "lets nothing run",
            "at once",
        ),
        (
            format!("{hook}sender_rate = \"1/min\"\n"),
            "`sender_rate` has no meaning on webhook door `a`",
            "`channel` door",
        ),
        (
            format!("{timed}rate = \"1/min\"\n"),
            "`rate` has no meaning on every door `a`",
            "own pace",
        ),
        (
            format!("{timed}max_running = 2\n"),
            "`max_running` has no meaning on every door `a`",
            "one firing at a time",
        ),
    ];
    for (text, message, hint) in cases {
        let i = invalid(text);
        assert!(i.message.contains(message), "{text}: {}", i.message);
        assert!(i.location.starts_with("stage.toml:"), "{}", i.location);
        let report = format!("{:?}", miette::Report::new(*i));
        assert!(report.contains(hint), "{text}: {report}");
    }
}

/// A limit of zero would make a door that refuses everything forever (a semaphore with no
/// permits, a bucket that never fills): the parser refuses it at its line, on every door kind
/// that takes limits.
#[test]
fn zero_limits_are_refused_at_their_line() {
    let hook = "[[door]]\nname = \"a\"\nwebhook = \"/doors/a\"\nsecret_env = \"S\"\n";
    let chat = "[[door]]\nname = \"c\"\nchannel = \"slack\"\n";
    let cases = [
        (format!("{hook}max_running = 0\n"), "lets nothing run", 5),
        (
            format!("{hook}rate = \"0/min\"\n"),
            "a rate of 0 lets nothing in",
            5,
        ),
        (format!("{chat}max_running = 0\n"), "lets nothing run", 4),
        (
            format!("{chat}rate = \"0/s\"\n"),
            "a rate of 0 lets nothing in",
            4,
        ),
        (
            format!("{chat}sender_rate = \"0/h\"\n"),
            "a rate of 0 lets nothing in",
            4,
        ),
    ];
    for (text, message, line) in cases {
        let i = invalid(&text);
        assert!(i.message.contains(message), "{text}: {}", i.message);
        assert!(
            i.location.starts_with(&format!("stage.toml:{line}:")),
            "{text}: {}",
            i.location
        );
    }
}

#[test]
fn the_init_template_documents_the_limit_keys() {
    let template = improv_stage::init_template();
    for key in ["rate =", "max_running =", "sender_rate ="] {
        assert!(
            template.contains(key),
            "the template does not document {key}"
        );
    }
}
