//! `channel = "email"`: an email door's servers, login and address parsed into typed settings,
//! plain text refused nowhere here (the channel decides TLS from the host), and every missing or
//! misplaced key said at its line with a hint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_stage::door::{EmailDoor, MailServer, MailTls, SenderCheck};
use improv_stage::{DoorKind, Invalid, Stage, StageError};
use std::path::Path;

const EMAIL: &str = r#"
[[door]]
name = "mail"
channel = "email"
imap = "imaps://mail.example.com"
smtp = "smtp://127.0.0.1:2525"
user_env = "MAIL_USER"
password_env = "MAIL_PASSWORD"
from = "bot@example.com"
allow = ["alice@example.com"]
authserv_id = "MX.example.com"
"#;

fn invalid(text: &str) -> Box<Invalid> {
    match Stage::parse(text, Path::new("stage.toml")) {
        Err(StageError::Invalid(i)) => i,
        other => panic!("expected an invalid stage, got {other:?}"),
    }
}

#[test]
fn an_email_door_parses_into_its_servers_login_and_address() {
    let stage = Stage::parse(EMAIL, Path::new("stage.toml")).unwrap();
    let DoorKind::Channel(door) = &stage.doors[0].kind else {
        panic!("{:?}", stage.doors[0].kind)
    };
    assert_eq!(door.allow, vec!["alice@example.com".to_string()]);
    assert_eq!(
        door.email,
        Some(Box::new(EmailDoor {
            imap: MailServer {
                host: "mail.example.com".into(),
                port: 993,
                implicit_tls: true,
            },
            smtp: MailServer {
                host: "127.0.0.1".into(),
                port: 2525,
                implicit_tls: false,
            },
            user_env: "MAIL_USER".into(),
            password_env: "MAIL_PASSWORD".into(),
            from: "bot@example.com".into(),
            tls: MailTls::Required,
            ca_file: None,
            sender_check: SenderCheck::Aligned {
                authserv_id: "mx.example.com".into()
            },
            thread_days: 180,
        }))
    );
}

#[test]
fn default_ports_and_ipv6_hosts() {
    let text = EMAIL
        .replace("imaps://mail.example.com", "imap://[::1]")
        .replace("smtp://127.0.0.1:2525", "smtps://mail.example.com/");
    let stage = Stage::parse(&text, Path::new("stage.toml")).unwrap();
    let DoorKind::Channel(door) = &stage.doors[0].kind else {
        panic!()
    };
    let email = door.email.as_ref().unwrap();
    assert_eq!((email.imap.host.as_str(), email.imap.port), ("::1", 143));
    assert_eq!((email.smtp.port, email.smtp.implicit_tls), (465, true));
}

#[test]
fn email_mistakes_are_said_with_a_place_and_a_hint() {
    let cases: &[(String, &str, &str)] = &[
        (
            EMAIL.replace("imap = \"imaps://mail.example.com\"\n", ""),
            "email door `mail` has no `imap`",
            "imaps://mail.example.com:993",
        ),
        (
            EMAIL.replace("password_env = \"MAIL_PASSWORD\"\n", ""),
            "has no `password_env`",
            "environment variable",
        ),
        (
            EMAIL.replace("from = \"bot@example.com\"\n", ""),
            "has no `from`",
            "address replies come from",
        ),
        (
            EMAIL.replace("imaps://mail.example.com", "http://mail.example.com"),
            "is not an imap server address",
            "imaps://mail.example.com",
        ),
        (
            EMAIL.replace("127.0.0.1:2525", "127.0.0.1:2525/path?x=1"),
            "is not an smtp server address",
            "nothing may follow it",
        ),
        (
            EMAIL.replace("127.0.0.1:2525", "user@127.0.0.1:2525"),
            "is not an smtp server address",
            "scheme://host:port",
        ),
        (
            EMAIL.replace("127.0.0.1:2525", "127.0.0.1:0"),
            "is not an smtp server address",
            "scheme://host:port",
        ),
        (
            EMAIL.replace("bot@example.com", "Bot <bot@example.com>"),
            "is not an email address",
            "bare address",
        ),
        (
            format!("{EMAIL}token_env = \"T\"\n"),
            "`token_env` has no meaning on email door `mail`",
            "`user_env` and `password_env`",
        ),
        (
            "[[door]]\nname = \"t\"\nchannel = \"telegram\"\ntoken_env = \"T\"\nimap = \"imap://127.0.0.1\"\n"
                .to_string(),
            "`imap` has no meaning on telegram door `t`",
            "`channel = \"email\"` door",
        ),
        (
            "[[door]]\nname = \"w\"\nwebhook = \"/doors/w\"\nsecret_env = \"S\"\nfrom = \"a@b.c\"\n"
                .to_string(),
            "`from` has no meaning on webhook door `w`",
            "`channel = \"email\"` door",
        ),
        (
            EMAIL.replace("authserv_id = \"MX.example.com\"\n", ""),
            "email door `mail` has no `authserv_id`",
            "sender_check = \"none\"",
        ),
        (
            format!("{EMAIL}sender_check = \"none\"\n"),
            "`authserv_id` with `sender_check = \"none\"`",
            "remove one",
        ),
        (
            format!("{EMAIL}sender_check = \"maybe\"\n"),
            "`sender_check` \"maybe\" is not known",
            "\"aligned\"",
        ),
        (
            format!("{EMAIL}tls = \"none\"\n"),
            "`tls = \"none\"` cannot reach `mail.example.com`",
            "loopback server",
        ),
        (
            format!("{EMAIL}tls = \"off\"\n"),
            "`tls` \"off\" is not known",
            "tls = \"none\"",
        ),
        (
            format!("{EMAIL}thread_days = 0\n"),
            "`thread_days` is 0",
            "thread_days = 180",
        ),
        (
            "[[door]]\nname = \"w\"\nwebhook = \"/doors/w\"\nsecret_env = \"S\"\nca_file = \"ca.pem\"\n"
                .to_string(),
            "`ca_file` has no meaning on webhook door `w`",
            "`channel = \"email\"` door",
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

/// `tls = "none"` is for loopback servers only; with them, it is what the door gets, and the
/// other keys are read as written.
#[test]
fn plain_text_is_asked_for_by_name_and_only_for_this_machine() {
    let text = EMAIL.replace("imaps://mail.example.com", "imap://localhost:1143")
        + "tls = \"none\"\nca_file = \"ca.pem\"\nthread_days = 7\n";
    let stage = Stage::parse(&text, Path::new("stage.toml")).unwrap();
    let DoorKind::Channel(door) = &stage.doors[0].kind else {
        panic!()
    };
    let email = door.email.as_ref().unwrap();
    assert_eq!(email.tls, MailTls::None);
    assert_eq!(email.ca_file.as_deref(), Some("ca.pem"));
    assert_eq!(email.thread_days, 7);
    let smtps = text.replace("smtp://127.0.0.1:2525", "smtps://127.0.0.1:2525");
    assert!(invalid(&smtps).message.contains("cannot reach `127.0.0.1`"));
}

#[test]
fn the_init_template_documents_the_email_keys() {
    let template = improv_stage::init_template();
    for key in [
        "channel = \"email\"",
        "imap =",
        "smtp =",
        "user_env =",
        "password_env =",
        "from =",
        "authserv_id =",
        "sender_check",
        "ca_file",
        "tls =",
        "thread_days",
    ] {
        assert!(
            template.contains(key),
            "the template does not document {key}"
        );
    }
}
