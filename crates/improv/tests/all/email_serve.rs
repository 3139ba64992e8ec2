//! An email door through the real `improv serve`, against real mail servers the test starts in
//! a temp folder (Dovecot for IMAP, aiosmtpd for SMTP; improv-channel's email_support): a mail
//! in is performed by the scripted model and answered over SMTP threaded under it; the thread's
//! next mail continues the same conversation; after the server is killed and started again on
//! the same store, nothing already answered is answered again and the thread still continues.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
#[path = "../../../improv-channel/tests/email_support/mod.rs"]
mod email_support;

use email_support::{Dovecot, PASSWORD, Smtp, USER, header, text};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long anything here may take: generous, for a slow shared machine.
const PROMPT: Duration = Duration::from_secs(90);
const FROM: &str = "bot@example.com";

struct Served {
    child: Child,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `improv serve` in `ws`, its stderr echoed; returns once it says where it serves.
fn serve(ws: &Path) -> Served {
    let child = common::improv_command()
        .current_dir(ws)
        .env_remove("IMPROV_STORE")
        .env("NO_COLOR", "1")
        .env("IMPROV_TEST_MAIL_USER", USER)
        .env("IMPROV_TEST_MAIL_PASSWORD", PASSWORD)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Killed when dropped, should it never say where it serves.
    let mut served = Served { child };
    let (tx, lines) = mpsc::channel();
    let pipe = served.child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            eprintln!("serve: {line}");
            let _ = tx.send(line);
        }
    });
    loop {
        let line = lines
            .recv_timeout(PROMPT)
            .expect("improv serve says where it serves");
        if line.contains("serving the stage view at http://") {
            return served;
        }
    }
}

/// Waits until the email door has recorded where it reads its INBOX from: mail appended from
/// then on is its to answer (mail older than the door is not).
fn opened(ws: &Path) {
    let db = ws.join(".improv").join("doors.db");
    let start = Instant::now();
    loop {
        let found =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|c| {
                    c.query_row(
                // The door `mail`'s position, kept under its stage (`mail@STAGE`).
                "SELECT count(*) FROM kv WHERE scope = 'email.position' AND key LIKE 'mail@%'",
                [],
                |row| row.get::<_, i64>(0),
            )
                });
        if found.is_ok_and(|n| n == 1) {
            return;
        }
        assert!(
            start.elapsed() < PROMPT,
            "the email door never opened its INBOX"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mail(id: &str, subject: &str, extra: &str, body: &str) -> String {
    format!(
        "From: Alice <alice@example.com>\nTo: {FROM}\nSubject: {subject}\nMessage-ID: <{id}>\n\
         Date: Sun, 29 Nov 2026 10:00:00 +0000\n{extra}\n{body}\n"
    )
}

#[test]
fn a_mail_is_answered_in_its_thread_by_improv_serve_and_never_twice_across_a_restart() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let root = tempfile::tempdir().unwrap();
    let dovecot = Dovecot::start(root.path());
    let smtp = Smtp::start(root.path());
    let ws = root.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let script = r#"[{"calls": [{"name": "reply", "arguments": {"text": "Deploying now."}}]}, {"say": "done"}]"#;
    std::fs::write(ws.join("script.json"), script).unwrap();
    std::fs::write(
        ws.join("stage.toml"),
        format!(
            "[stage]\nname = \"mail\"\nintent = \"Answer mail.\"\n\n[[actor]]\nname = \"lead\"\n\
             model = \"scripted/script.json\"\nprops = []\n\n[edges]\nsandbox = \"off\"\n\n\
             [[door]]\nname = \"mail\"\nchannel = \"email\"\nimap = \"imap://127.0.0.1:{}\"\n\
             smtp = \"smtp://127.0.0.1:{}\"\nuser_env = \"IMPROV_TEST_MAIL_USER\"\n\
             password_env = \"IMPROV_TEST_MAIL_PASSWORD\"\nfrom = \"{FROM}\"\n\
             allow = [\"alice@example.com\"]\ntls = \"none\"\n\
             sender_check = \"none\"\n",
            dovecot.port, smtp.port
        ),
    )
    .unwrap();

    let mut served = serve(&ws);
    opened(&ws);
    runtime.block_on(dovecot.append(&mail("m1@example.com", "deploy", "", "Deploy the site.")));
    let got = runtime.block_on(smtp.wait_received(1));
    let first = &got[0];
    let h = |raw: &str, name| header(raw, name).unwrap_or_default();
    assert_eq!(h(first, "X-Envelope-To"), "alice@example.com", "{first}");
    assert_eq!(h(first, "In-Reply-To"), "<m1@example.com>", "{first}");
    assert_eq!(h(first, "References"), "<m1@example.com>", "{first}");
    assert_eq!(h(first, "Subject"), "Re: deploy", "{first}");
    assert!(text(first).contains("Deploying now."), "{first}");
    let ours = h(first, "Message-ID");

    // The same thread's next mail continues the conversation: threaded under the whole chain.
    runtime.block_on(dovecot.append(&mail(
        "m2@example.com",
        "Re: deploy",
        &format!("In-Reply-To: {ours}\nReferences: <m1@example.com> {ours}\n"),
        "And the docs?",
    )));
    let got = runtime.block_on(smtp.wait_received(2));
    let second = &got[1];
    assert_eq!(h(second, "In-Reply-To"), "<m2@example.com>", "{second}");
    assert_eq!(
        h(second, "References"),
        format!("<m1@example.com> {ours} <m2@example.com>"),
        "{second}"
    );
    assert_eq!(h(second, "Subject"), "Re: deploy", "{second}");
    let ours2 = h(second, "Message-ID");

    // Killed without warning and started again on the same store: what was answered is not
    // answered again; a third mail of the thread is answered once, still in the thread.
    served.child.kill().unwrap();
    served.child.wait().unwrap();
    let _served = serve(&ws);
    runtime.block_on(dovecot.append(&mail(
        "m3@example.com",
        "Re: deploy",
        &format!(
            "In-Reply-To: {ours2}\nReferences: <m1@example.com> {ours} <m2@example.com> {ours2}\n"
        ),
        "One more thing.",
    )));
    let got = runtime.block_on(smtp.wait_received(3));
    let third = &got[2];
    assert_eq!(h(third, "In-Reply-To"), "<m3@example.com>", "{third}");
    assert!(
        h(third, "References").starts_with("<m1@example.com> "),
        "{third}"
    );
    // Let the restarted door catch up fully, then count: one reply per mail, no more.
    std::thread::sleep(Duration::from_secs(2));
    let got = smtp.received();
    let answered: Vec<String> = got.iter().map(|m| h(m, "In-Reply-To")).collect();
    assert_eq!(
        answered,
        ["<m1@example.com>", "<m2@example.com>", "<m3@example.com>"],
        "each mail answered once"
    );
    let performances: Vec<String> = {
        let db = rusqlite::Connection::open(ws.join(".improv").join("doors.db")).unwrap();
        let mut rows = db
            .prepare("SELECT DISTINCT performance FROM outbox WHERE door = 'mail'")
            .unwrap();
        rows.query_map([], |row| row.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(performances.len(), 1, "one conversation: {performances:?}");
}
