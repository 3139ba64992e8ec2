//! The keys of an email door (`channel = "email"`): its IMAP and SMTP servers, the mailbox's
//! login, the address replies come from. Checked here so the channel parses nothing: every
//! missing or misplaced key is said at its line.
//!
//! `imap`/`smtp` are `scheme://host:port` and nothing more, so they are split by hand rather than
//! with a URL crate the stage does not otherwise need: a path, a user or a query is refused.

use super::{DoorKind, RawDoor};
use crate::Channel;
use crate::error::Problem;
use serde::Serialize;
use std::ops::Range;
use toml::Spanned;

/// A mail server as the stage names it: `imap://host:port`, `imaps://host:port`,
/// `smtp://host:port` or `smtps://host:port`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MailServer {
    pub host: String,
    pub port: u16,
    /// `imaps`/`smtps`: TLS from the first byte. Otherwise the channel upgrades with STARTTLS,
    /// and only a loopback host may stay in plain text.
    pub implicit_tls: bool,
}

/// An email door's settings (see [`ChannelDoor::email`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EmailDoor {
    /// Where messages come in: the mailbox's INBOX.
    pub imap: MailServer,
    /// Where replies go out.
    pub smtp: MailServer,
    /// The environment variables holding the mailbox's login (IMAP, and SMTP where it asks).
    pub user_env: String,
    pub password_env: String,
    /// The address replies come from (`bot@example.com`).
    pub from: String,
}

/// The email keys as written.
struct Keys<'a> {
    imap: Option<&'a Spanned<String>>,
    smtp: Option<&'a Spanned<String>>,
    user_env: Option<&'a Spanned<String>>,
    password_env: Option<&'a Spanned<String>>,
    from: Option<&'a Spanned<String>>,
}

impl Keys<'_> {
    fn all(&self) -> [(&'static str, Option<&Spanned<String>>); 5] {
        [
            ("imap", self.imap),
            ("smtp", self.smtp),
            ("user_env", self.user_env),
            ("password_env", self.password_env),
            ("from", self.from),
        ]
    }
}

/// The settings of a channel door: `Some` for a well-formed email door, `None` for any other
/// channel (whose email keys are reported) or an email door with a problem (reported).
pub(super) fn settings(
    d: &RawDoor,
    name: &str,
    channel: &Spanned<Channel>,
    problems: &mut Vec<Problem>,
) -> Option<EmailDoor> {
    let keys = d.email_keys();
    if *channel.get_ref() != Channel::Email {
        for (key, v) in keys.all() {
            if let Some(v) = v {
                problems.push(
                    Problem::new(
                        format!(
                            "`{key}` has no meaning on {} door `{name}`",
                            channel.get_ref().as_str()
                        ),
                        v.span(),
                        "not for this channel",
                    )
                    .help(format!(
                        "remove `{key}`; it belongs to a `channel = \"email\"` door"
                    )),
                );
            }
        }
        return None;
    }
    for (key, span, instead) in d.chat_keys() {
        if let Some(span) = span {
            problems.push(
                Problem::new(
                    format!("`{key}` has no meaning on email door `{name}`"),
                    span,
                    "not for email",
                )
                .help(instead),
            );
        }
    }
    let before = problems.len();
    let mut required = |key: &str, v: Option<&Spanned<String>>, help: &str| match v {
        Some(v) if !v.get_ref().trim().is_empty() => Some(v.clone()),
        _ => {
            problems.push(
                Problem::new(
                    format!("email door `{name}` has no `{key}`"),
                    v.map_or(channel.span(), |v| v.span()),
                    "this email door",
                )
                .help(help.to_string()),
            );
            None
        }
    };
    let imap = required(
        "imap",
        keys.imap,
        "add `imap = \"imaps://mail.example.com:993\"`: the server whose INBOX is read",
    );
    let smtp = required(
        "smtp",
        keys.smtp,
        "add `smtp = \"smtps://mail.example.com:465\"`: the server replies are sent through",
    );
    let user_env = required(
        "user_env",
        keys.user_env,
        "add `user_env = \"VAR\"`: the environment variable holding the mailbox's user name",
    );
    let password_env = required(
        "password_env",
        keys.password_env,
        "add `password_env = \"VAR\"`: the environment variable holding the mailbox's password",
    );
    let from = required(
        "from",
        keys.from,
        "add `from = \"bot@example.com\"`: the address replies come from",
    );
    let imap = imap.and_then(|v| server(&v, Protocol::Imap, problems));
    let smtp = smtp.and_then(|v| server(&v, Protocol::Smtp, problems));
    let from = from.and_then(|v| address(&v, problems));
    if problems.len() > before {
        return None;
    }
    Some(EmailDoor {
        imap: imap?,
        smtp: smtp?,
        user_env: user_env?.into_inner(),
        password_env: password_env?.into_inner(),
        from: from?,
    })
}

/// The email keys written on a door that is not a channel: reported (a channel door's are
/// checked by [`settings`]).
pub(super) fn misplaced(d: &RawDoor, kind: &DoorKind, name: &str, problems: &mut Vec<Problem>) {
    if matches!(kind, DoorKind::Channel(_)) {
        return;
    }
    for (key, v) in d.email_keys().all() {
        if let Some(v) = v {
            problems.push(
                Problem::new(
                    format!("`{key}` has no meaning on {} door `{name}`", kind.word()),
                    v.span(),
                    "not for this kind of door",
                )
                .help(format!(
                    "remove `{key}`; it belongs to a `channel = \"email\"` door"
                )),
            );
        }
    }
}

#[derive(Clone, Copy)]
enum Protocol {
    Imap,
    Smtp,
}

impl Protocol {
    fn key(self) -> &'static str {
        match self {
            Protocol::Imap => "imap",
            Protocol::Smtp => "smtp",
        }
    }
    /// The default ports: plain (STARTTLS) and implicit TLS (RFC 8314's submission port).
    fn ports(self) -> (u16, u16) {
        match self {
            Protocol::Imap => (143, 993),
            Protocol::Smtp => (587, 465),
        }
    }
}

/// `scheme://host[:port]`, checked.
fn server(
    v: &Spanned<String>,
    protocol: Protocol,
    problems: &mut Vec<Problem>,
) -> Option<MailServer> {
    let key = protocol.key();
    let text = v.get_ref().trim();
    let parsed = split(text, key);
    if parsed.is_none() {
        problems.push(
            Problem::new(
                format!("`{key}` \"{text}\" is not an {key} server address"),
                v.span(),
                "not scheme://host:port",
            )
            .help(format!(
                "write `{key} = \"{key}s://mail.example.com\"` (TLS), or `{key}://127.0.0.1:PORT` for a \
                 server on this machine; a port is optional, nothing may follow it"
            )),
        );
    }
    let (implicit_tls, host, port) = parsed?;
    let (plain, tls) = protocol.ports();
    Some(MailServer {
        host: host.to_string(),
        port: port.unwrap_or(if implicit_tls { tls } else { plain }),
        implicit_tls,
    })
}

/// `(implicit TLS, host, port)` of `scheme://host[:port][/]` whose scheme is `key` or `{key}s`.
fn split<'a>(text: &'a str, key: &str) -> Option<(bool, &'a str, Option<u16>)> {
    let (scheme, rest) = text.split_once("://")?;
    let implicit_tls = match scheme.to_ascii_lowercase() {
        s if s == key => false,
        s if s == format!("{key}s") => true,
        _ => return None,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = match rest.strip_prefix('[') {
        // [::1]:143
        Some(v6) => {
            let (host, after) = v6.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        },
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':');
    if host.is_empty() || !host.chars().all(plain) {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0)?),
        None => None,
    };
    Some((implicit_tls, host, port))
}

/// `from`: one plain address (`local@domain`), the envelope sender and the `From:` header.
fn address(v: &Spanned<String>, problems: &mut Vec<Problem>) -> Option<String> {
    let text = v.get_ref().trim();
    let odd = |c: char| c.is_whitespace() || matches!(c, '<' | '>' | ',' | '"' | '@');
    let ok = text.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty() && !domain.is_empty() && !local.contains(odd) && !domain.contains(odd)
    });
    if !ok {
        problems.push(
            Problem::new(
                format!("`from` \"{text}\" is not an email address"),
                v.span(),
                "not local@domain",
            )
            .help("write the bare address replies come from, such as `from = \"bot@example.com\"`"),
        );
        return None;
    }
    Some(text.to_string())
}

/// A chat key an email door has no use for: its name, where it is written, what to write instead.
type Misfit = (&'static str, Option<Range<usize>>, &'static str);

impl RawDoor {
    fn email_keys(&self) -> Keys<'_> {
        Keys {
            imap: self.imap.as_ref(),
            smtp: self.smtp.as_ref(),
            user_env: self.user_env.as_ref(),
            password_env: self.password_env.as_ref(),
            from: self.from.as_ref(),
        }
    }

    fn chat_keys(&self) -> [Misfit; 3] {
        [
            (
                "token_env",
                self.token_env.as_ref().map(|v| v.span()),
                "the mailbox's login is `user_env` and `password_env`",
            ),
            (
                "secret_env",
                self.secret_env.as_ref().map(|v| v.span()),
                "mail is not signed by a platform; remove it",
            ),
            (
                "api_base",
                self.api_base.as_ref().map(|v| v.span()),
                "the servers are `imap` and `smtp`",
            ),
        ]
    }
}
