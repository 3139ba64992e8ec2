//! Email doors (`channel = "email"`): mail that reaches the door's INBOX (IMAP, watched with
//! IDLE) is a door message; the actor's answers go out by SMTP through the outbox, threaded
//! (`In-Reply-To`, `References`, `Re:`), so a mail thread is one conversation across
//! performances. Senders are let in by the door's `allow` list (addresses, any case) or paired
//! like a chat's; a stranger's first mail is answered with a pairing code and nothing else.
//!
//! Reading order: [`message`] reads a mail and keeps the thread records; [`imap`] watches the
//! INBOX and hands each new mail to the door; [`smtp`] sends a reply, its `Message-ID` made from
//! the outbox key, so a retry is the same message. The crates: `async-imap`, `lettre` (SMTP)
//! and `mail-parser`, over rustls with the public web roots.
//!
//! **TLS.** `imaps://` and `smtps://` are TLS from the first byte; `imap://` and `smtp://` are
//! upgraded with STARTTLS, which must succeed, except on a loopback host. Plain text is allowed
//! only there because the mailbox's password and the mail would otherwise cross the network in
//! the clear, while loopback traffic never leaves the machine (a local relay or bridge, the
//! tests' servers).
//!
//! **Who wrote.** The allow list trusts the `From:` address as the receiving server delivered
//! it, which a sender can forge: use a mailbox whose server checks SPF/DKIM/DMARC. Mail that
//! server marked `dmarc=fail` is never answered, nor is automatic mail (RFC 3834) or our own.

pub mod imap;
pub mod message;
pub mod smtp;

use crate::ChannelError;
use async_trait::async_trait;
use improv_door::{DoorContext, DoorError, Listener};
use improv_stage::DoorKind;
use improv_stage::door::MailServer;
use std::net::IpAddr;
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

/// How a connection to a mail server is protected (see the module's **TLS**).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// Plain text: only to a loopback host.
    Plain,
    /// Plain, then STARTTLS, which must succeed.
    StartTls,
    /// TLS from the first byte.
    Tls,
}

impl Security {
    /// The one decision: TLS unless the stage asked for the plain scheme of a loopback host.
    pub fn of(server: &MailServer) -> Security {
        if server.implicit_tls {
            Security::Tls
        } else if loopback(&server.host) {
            Security::Plain
        } else {
            Security::StartTls
        }
    }
}

fn loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The mailbox's login, from the door's `user_env` and `password_env`.
#[derive(Clone)]
pub struct Login {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// The TLS client settings for IMAP: rustls with the public web roots (lettre builds the same
/// for SMTP).
pub(crate) fn tls_config() -> Result<Arc<rustls::ClientConfig>, ChannelError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ChannelError::Setup(format!("TLS cannot be set up: {e}")))?;
    Ok(Arc::new(
        builder.with_root_certificates(roots).with_no_client_auth(),
    ))
}

/// Runs one email door until cancelled: its outbox's retry task, and its INBOX.
pub struct EmailListener;

#[async_trait]
impl Listener for EmailListener {
    async fn run(&self, ctx: DoorContext, cancel: CancellationToken) -> Result<(), DoorError> {
        let name = ctx.door.name.clone();
        let failed = |e: ChannelError| DoorError::Listener {
            door: name.clone(),
            message: e.to_string(),
        };
        let DoorKind::Channel(config) = &ctx.door.kind else {
            return Err(failed(ChannelError::Setup("not a channel door".into())));
        };
        let Some(email) = config.email.as_deref() else {
            return Err(failed(ChannelError::Setup(format!(
                "door `{name}` is not an email door"
            ))));
        };
        let login = Login {
            user: crate::door::env(&name, "user_env", Some(&email.user_env)).map_err(failed)?,
            password: crate::door::env(&name, "password_env", Some(&email.password_env))
                .map_err(failed)?,
        };
        let smtp = smtp::Smtp::new(&name, email, Some(login.clone()), ctx.store.clone())
            .map_err(failed)?;
        let door = crate::door::chat_door(&ctx, config, Arc::new(smtp));
        let retry = tokio::spawn({
            let (outbox, cancel) = (door.outbox.clone(), cancel.clone());
            async move { outbox.run(cancel).await }
        });
        let retaking = crate::door::retake(door.clone(), cancel.clone());
        let inbox = imap::Inbox::new(&name, email, login);
        let result = imap::listen(&inbox, &door, cancel.clone()).await;
        cancel.cancel();
        let _ = retaking.await;
        let _ = retry.await;
        result.map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(host: &str, implicit_tls: bool) -> MailServer {
        MailServer {
            host: host.into(),
            port: 1,
            implicit_tls,
        }
    }

    #[test]
    fn plain_text_only_to_a_loopback_host() {
        assert_eq!(Security::of(&server("127.0.0.1", false)), Security::Plain);
        assert_eq!(Security::of(&server("::1", false)), Security::Plain);
        assert_eq!(Security::of(&server("LocalHost", false)), Security::Plain);
        assert_eq!(Security::of(&server("127.0.0.1", true)), Security::Tls);
        assert_eq!(
            Security::of(&server("mail.example.com", false)),
            Security::StartTls
        );
        assert_eq!(Security::of(&server("10.0.0.1", false)), Security::StartTls);
        assert_eq!(
            Security::of(&server("localhost.example.com", false)),
            Security::StartTls
        );
        assert_eq!(
            Security::of(&server("mail.example.com", true)),
            Security::Tls
        );
    }

    #[test]
    fn a_login_never_shows_its_password() {
        let login = Login {
            user: "bot".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{login:?}").contains("hunter2"));
    }
}
