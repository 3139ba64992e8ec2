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
    /// `tls`: encryption required (the default), or `"none"` for a loopback server.
    pub tls: MailTls,
    /// `ca_file`: a PEM file of the certificate authorities the servers' certificates must be
    /// signed by, instead of the public web roots (a private CA). As written: relative to the
    /// stage's folder.
    pub ca_file: Option<String>,
    /// `sender_check` and `authserv_id`: how a mail's sender is known to be who From: says.
    pub sender_check: SenderCheck,
    /// `thread_days`: a thread record not used for this many days is forgotten (a later mail of
    /// that thread starts a new conversation). Default [`DEFAULT_THREAD_DAYS`].
    pub thread_days: u32,
}

/// How long a thread record lives unless `thread_days` says otherwise: half a year, longer than
/// most conversations pause, short enough that the records do not pile up.
pub const DEFAULT_THREAD_DAYS: u32 = 180;

/// Whether an email door's connections must be encrypted (`tls`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub enum MailTls {
    /// `imaps`/`smtps` from the first byte, else STARTTLS that must succeed.
    #[default]
    Required,
    /// `tls = "none"`: plain text, the login included; only to a loopback host, where the
    /// traffic never leaves the machine.
    None,
}

/// How an email door knows who wrote a mail (`sender_check`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum SenderCheck {
    /// The default (`"aligned"`): an `Authentication-Results` header added by the door's own
    /// receiving server (`authserv_id`) must show `dkim=pass` or `spf=pass` for a domain aligned
    /// with the From: domain; headers of other servers are ignored. Per domain, not per
    /// mailbox: whoever can send as any address of that domain passes.
    Aligned { authserv_id: String },
    /// `sender_check = "none"`: From: as written, which anyone can forge.
    None,
}

/// The email keys as written.
struct Keys<'a> {
    imap: Option<&'a Spanned<String>>,
    smtp: Option<&'a Spanned<String>>,
    user_env: Option<&'a Spanned<String>>,
    password_env: Option<&'a Spanned<String>>,
    from: Option<&'a Spanned<String>>,
    tls: Option<&'a Spanned<String>>,
    ca_file: Option<&'a Spanned<String>>,
    sender_check: Option<&'a Spanned<String>>,
    authserv_id: Option<&'a Spanned<String>>,
    thread_days: Option<&'a Spanned<u32>>,
}

impl Keys<'_> {
    /// Each key and where it is written.
    fn all(&self) -> [(&'static str, Option<Range<usize>>); 10] {
        let at = |v: Option<&Spanned<String>>| v.map(|v| v.span());
        [
            ("imap", at(self.imap)),
            ("smtp", at(self.smtp)),
            ("user_env", at(self.user_env)),
            ("password_env", at(self.password_env)),
            ("from", at(self.from)),
            ("tls", at(self.tls)),
            ("ca_file", at(self.ca_file)),
            ("sender_check", at(self.sender_check)),
            ("authserv_id", at(self.authserv_id)),
            ("thread_days", self.thread_days.map(|v| v.span())),
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
        for (key, span) in keys.all() {
            if let Some(span) = span {
                problems.push(
                    Problem::new(
                        format!(
                            "`{key}` has no meaning on {} door `{name}`",
                            channel.get_ref().as_str()
                        ),
                        span,
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
    let tls = tls(&keys, [imap.as_ref(), smtp.as_ref()], problems);
    let sender_check = sender_check(&keys, name, channel, problems);
    let thread_days = match keys.thread_days {
        Some(v) if *v.get_ref() == 0 => {
            problems.push(
                Problem::new("`thread_days` is 0", v.span(), "must be at least 1")
                    .help("write how many days an unused thread is remembered, such as `thread_days = 180`"),
            );
            None
        }
        Some(v) => Some(*v.get_ref()),
        None => Some(DEFAULT_THREAD_DAYS),
    };
    if problems.len() > before {
        return None;
    }
    Some(EmailDoor {
        imap: imap?,
        smtp: smtp?,
        user_env: user_env?.into_inner(),
        password_env: password_env?.into_inner(),
        from: from?,
        tls: tls?,
        ca_file: keys.ca_file.map(|v| v.get_ref().trim().to_string()),
        sender_check: sender_check?,
        thread_days: thread_days?,
    })
}

/// `tls`: `"required"` (the default) or `"none"`, which only a loopback server may have.
fn tls(
    keys: &Keys,
    servers: [Option<&MailServer>; 2],
    problems: &mut Vec<Problem>,
) -> Option<MailTls> {
    let Some(v) = keys.tls else {
        return Some(MailTls::Required);
    };
    let tls = match v.get_ref().trim() {
        "required" => MailTls::Required,
        "none" => MailTls::None,
        other => {
            problems.push(
                Problem::new(format!("`tls` \"{other}\" is not known"), v.span(), "not a TLS setting")
                    .help("write `tls = \"required\"` (the default) or `tls = \"none\"` for a server on this machine"),
            );
            return None;
        }
    };
    let remote = servers
        .into_iter()
        .flatten()
        .find(|s| s.implicit_tls || !loopback(&s.host));
    if let (MailTls::None, Some(server)) = (tls, remote) {
        problems.push(
            Problem::new(
                format!("`tls = \"none\"` cannot reach `{}`", server.host),
                v.span(),
                "plain text only to this machine",
            )
            .help("the login and the mail would cross the network readable: remove `tls = \"none\"`, or name a loopback server (`imap://127.0.0.1:PORT`)"),
        );
        return None;
    }
    Some(tls)
}

/// A host that is this machine: traffic to it never leaves it.
pub fn loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `sender_check`: `"aligned"` (the default), which needs `authserv_id`, or `"none"`.
fn sender_check(
    keys: &Keys,
    name: &str,
    channel: &Spanned<Channel>,
    problems: &mut Vec<Problem>,
) -> Option<SenderCheck> {
    let word = keys.sender_check.map(|v| (v.get_ref().trim(), v.span()));
    match word {
        None | Some(("aligned", _)) => match keys.authserv_id {
            Some(id) if !id.get_ref().trim().is_empty() => Some(SenderCheck::Aligned {
                authserv_id: id.get_ref().trim().to_ascii_lowercase(),
            }),
            _ => {
                problems.push(
                    Problem::new(
                        format!("email door `{name}` has no `authserv_id`"),
                        keys.authserv_id.map_or(channel.span(), |v| v.span()),
                        "who checks the senders?",
                    )
                    .help("add `authserv_id = \"mx.example.com\"`: the name your receiving server writes first in its Authentication-Results headers; a sender is let in only when that server found From: authentic (DKIM or SPF, aligned). `sender_check = \"none\"` trusts From: as written, which anyone can forge"),
                );
                None
            }
        },
        Some(("none", _)) => {
            if let Some(id) = keys.authserv_id {
                problems.push(
                    Problem::new(
                        "`authserv_id` with `sender_check = \"none\"`",
                        id.span(),
                        "not used",
                    )
                    .help("remove one: `authserv_id` is read only when senders are checked"),
                );
                return None;
            }
            Some(SenderCheck::None)
        }
        Some((other, span)) => {
            problems.push(
                Problem::new(format!("`sender_check` \"{other}\" is not known"), span, "not a sender check")
                    .help("write `sender_check = \"aligned\"` (the default, with `authserv_id`) or `\"none\"`"),
            );
            None
        }
    }
}

/// The email keys written on a door that is not a channel: reported (a channel door's are
/// checked by [`settings`]).
pub(super) fn misplaced(d: &RawDoor, kind: &DoorKind, name: &str, problems: &mut Vec<Problem>) {
    if matches!(kind, DoorKind::Channel(_)) {
        return;
    }
    for (key, span) in d.email_keys().all() {
        if let Some(span) = span {
            problems.push(
                Problem::new(
                    format!("`{key}` has no meaning on {} door `{name}`", kind.word()),
                    span,
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
            tls: self.tls.as_ref(),
            ca_file: self.ca_file.as_ref(),
            sender_check: self.sender_check.as_ref(),
            authserv_id: self.authserv_id.as_ref(),
            thread_days: self.thread_days.as_ref(),
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
