//! `[[door]]`: the ways into a live stage, parsed into typed doors, and every mistake said with
//! its place in the file and a hint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_stage::{CatchUp, Channel, DoorKind, Invalid, Stage, StageError};
use std::path::Path;
use std::time::Duration;

const DOORS: &str = r#"
[[door]]
name = "morning"
schedule = "0 8 * * MON-FRI"
timezone = "Europe/Paris"
intent = "Summarise what changed."
catch_up = "all"

[[door]]
name = "watch"
every = "30m"
probe = ["git rev-parse HEAD", "ls inbox/"]
intent = "Something changed: {probe_diff}."
[door.edges]
max_turns = 4
timeout = "5m"

[[door]]
name = "github"
webhook = "/doors/github"
secret_env = "GITHUB_WEBHOOK_SECRET"

[[door]]
name = "chat"
channel = "telegram"
token_env = "TELEGRAM_BOT_TOKEN"
allow = ["@alice"]
api_base = "http://127.0.0.1:9/"
"#;

fn invalid(text: &str) -> Box<Invalid> {
    match Stage::parse(text, Path::new("stage.toml")) {
        Err(StageError::Invalid(i)) => i,
        other => panic!("expected an invalid stage, got {other:?}"),
    }
}

#[test]
fn every_kind_of_door_parses_into_typed_fields() {
    let stage = Stage::parse(DOORS, Path::new("stage.toml")).unwrap();
    let d = &stage.doors;
    assert_eq!(d.len(), 4);
    assert_eq!(
        d[0].kind,
        DoorKind::Schedule {
            cron: "0 8 * * MON-FRI".into(),
            timezone: Some("Europe/Paris".into())
        }
    );
    assert_eq!(d[0].catch_up, CatchUp::All);
    assert_eq!(d[1].kind, DoorKind::Every(Duration::from_secs(1800)));
    assert_eq!(d[1].catch_up, CatchUp::Latest, "latest is the default");
    assert_eq!(d[1].probes.len(), 2);
    assert_eq!(d[1].budget.max_turns, Some(4));
    assert_eq!(d[1].budget.timeout, Some(Duration::from_secs(300)));
    let budget = d[1].budget.over(stage.budget());
    assert_eq!(budget.max_turns, Some(4));
    assert_eq!(
        d[2].kind,
        DoorKind::Webhook {
            secret_env: "GITHUB_WEBHOOK_SECRET".into()
        }
    );
    let DoorKind::Channel(chat) = &d[3].kind else {
        panic!("{:?}", d[3].kind)
    };
    assert_eq!(chat.channel, Channel::Telegram);
    assert_eq!(chat.token_env.as_deref(), Some("TELEGRAM_BOT_TOKEN"));
    assert_eq!(chat.allow, vec!["@alice".to_string()]);
    assert_eq!(chat.api_base.as_deref(), Some("http://127.0.0.1:9/"));
}

#[test]
fn an_unknown_key_points_at_its_line_with_the_valid_keys() {
    let i = invalid(
        "[[door]]\nname = \"x\"\nevery = \"1h\"\nintent = \"y\"\nshedule = \"* * * * *\"\n",
    );
    assert!(i.location.ends_with("stage.toml:5:1"), "{}", i.location);
    assert!(i.message.contains("unknown key `shedule`"), "{}", i.message);
    let report = format!("{:?}", miette::Report::new(*i));
    assert!(report.contains("did you mean `schedule`?"), "{report}");
}

#[test]
fn mistakes_are_said_with_a_place_and_a_hint() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[[door]]\nname = \"a\"\nintent = \"y\"\n",
            "says nothing about what opens it",
            "exactly one of",
        ),
        (
            "[[door]]\nname = \"a\"\nintent = \"y\"\nevery = \"1h\"\nschedule = \"0 * * * *\"\n",
            "more than one way in",
            "exactly one of",
        ),
        (
            "[[door]]\nname = \"a\"\nintent = \"y\"\nschedule = \"61 * * * *\"\n",
            "not a cron expression",
            "five fields",
        ),
        (
            "[[door]]\nname = \"a\"\nintent = \"y\"\nschedule = \"0 * * * *\"\ntimezone = \"Mars/Olympus\"\n",
            "not a known time zone",
            "IANA",
        ),
        (
            "[[door]]\nname = \"a\"\nwebhook = \"/doors/a\"\n",
            "has no `secret_env`",
            "X-Hub-Signature-256",
        ),
        (
            "[[door]]\nname = \"a\"\nwebhook = \"/hooks/a\"\nsecret_env = \"S\"\n",
            "webhook is `/hooks/a`",
            "/doors/a",
        ),
        (
            "[[door]]\nname = \"a\"\nevery = \"1h\"\n",
            "has no `intent`",
            "intent =",
        ),
        (
            "[[door]]\nname = \"a\"\nintent = \"y\"\nevery = \"1h\"\ntoken_env = \"T\"\n",
            "`token_env` has no meaning on every door `a`",
            "`channel` door",
        ),
        (
            "[[door]]\nname = \"a b\"\nintent = \"y\"\nevery = \"1h\"\n",
            "not a plain name",
            "letters, digits",
        ),
        (
            "[[door]]\nname = \"a\"\nintent = \"y\"\nevery = \"1h\"\n[[door]]\nname = \"a\"\nintent = \"y\"\nevery = \"2h\"\n",
            "two doors are named `a`",
            "its own name",
        ),
        (
            "[[door]]\nname = \"a\"\nintent = \"y\"\nevery = \"1h\"\n[door.edges]\nmax_turns = 0\n",
            "allows nothing",
            "positive limit",
        ),
        (
            "[[door]]\nname = \"a\"\nchannel = \"irc\"\n",
            "unknown value `irc`",
            "telegram",
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

#[test]
fn a_stage_intent_stands_in_for_a_timed_doors() {
    let stage = Stage::parse(
        "[stage]\nintent = \"tidy\"\n[[door]]\nname = \"a\"\nevery = \"1h\"\n",
        Path::new("stage.toml"),
    )
    .unwrap();
    assert_eq!(stage.doors[0].intent, None);
}

#[test]
fn the_init_template_documents_every_door_key() {
    let template = improv_stage::init_template();
    for key in [
        "[[door]]",
        "schedule =",
        "timezone =",
        "every =",
        "catch_up =",
        "probe =",
        "{probe_diff}",
        "[door.edges]",
        "webhook =",
        "secret_env =",
        "channel =",
        "token_env =",
        "allow =",
    ] {
        assert!(
            template.contains(key),
            "the template does not document {key}"
        );
    }
}
