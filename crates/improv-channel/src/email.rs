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
//! upgraded with STARTTLS, which must succeed. Plain text, the login included, only when the door
//! says `tls = "none"`, which the stage allows only for a loopback host: the mailbox's password
//! and the mail would otherwise cross the network in the clear, while loopback traffic never
//! leaves the machine (a local relay or bridge). Certificates are checked against the public web
//! roots, or, with `ca_file`, against that file's certificate authorities only (a private CA), so
//! no one has to turn verification off; a failed check names the host and `ca_file`.
//!
//! **Who wrote.** From: can be forged, so by default (`sender_check = "aligned"`) a mail counts
//! only when the door's own receiving server (`authserv_id`) says in `Authentication-Results`
//! that DKIM or SPF passed for a domain aligned with From:'s ([`auth`]); others are not
//! answered at all, not even with a pairing code, so a forged From: cannot make the door write
//! to a third party. `sender_check = "none"` trusts From: as written. Mail marked `dmarc=fail`
//! is never answered, nor is automatic mail (RFC 3834) or our own.

pub mod auth;
pub mod imap;
pub mod message;
pub mod smtp;

use crate::ChannelError;
use async_trait::async_trait;
use improv_door::{DoorContext, DoorError, Listener};
use improv_stage::DoorKind;
use improv_stage::door::{self, EmailDoor, MailServer, MailTls};
use lettre::transport::smtp::client::{Certificate, CertificateStore, TlsParameters};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
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
    /// The one decision: TLS, unless the door asked for none (`tls = "none"`) and the server is
    /// a loopback one (the stage refuses the rest; checked again here, as it guards a password).
    pub fn of(server: &MailServer, tls: MailTls) -> Security {
        if server.implicit_tls {
            Security::Tls
        } else if tls == MailTls::None && door::loopback(&server.host) {
            Security::Plain
        } else {
            Security::StartTls
        }
    }
}

/// The certificate authorities a door's servers must be signed by: the door's `ca_file` only,
/// else the public web roots.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    /// The `ca_file` and its certificates.
    private: Option<(PathBuf, Vec<CertificateDer<'static>>)>,
}

impl Trust {
    /// The trust of door `door`: its `ca_file` read (a path as the listener resolved it).
    pub fn of(door: &str, email: &EmailDoor) -> Result<Trust, ChannelError> {
        let Some(file) = &email.ca_file else {
            return Ok(Trust::default());
        };
        let path = PathBuf::from(file);
        let unusable = |why: String| {
            ChannelError::Setup(format!(
                "door `{door}`: `ca_file` {}: {why}; set it to a PEM file holding the \
                 certificate of the authority that signed the mail servers' certificates",
                path.display()
            ))
        };
        let certs = CertificateDer::pem_file_iter(&path)
            .map_err(|e| unusable(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| unusable(e.to_string()))?;
        if certs.is_empty() {
            return Err(unusable("it holds no certificate".into()));
        }
        Ok(Trust {
            private: Some((path, certs)),
        })
    }

    /// The TLS client settings for IMAP (rustls).
    pub(crate) fn rustls(&self) -> Result<Arc<rustls::ClientConfig>, ChannelError> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.private {
            Some((_, certs)) => {
                let (_, ignored) = roots.add_parsable_certificates(certs.iter().cloned());
                if ignored > 0 {
                    tracing::warn!("{ignored} certificates of `ca_file` are not CA certificates");
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ChannelError::Setup(format!("TLS cannot be set up: {e}")))?;
        Ok(Arc::new(
            builder.with_root_certificates(roots).with_no_client_auth(),
        ))
    }

    /// The TLS settings for SMTP (lettre over rustls) with server name `host`.
    pub(crate) fn smtp(&self, host: &str) -> Result<TlsParameters, lettre::transport::smtp::Error> {
        let builder = TlsParameters::builder(host.to_string());
        let builder = match &self.private {
            Some((_, certs)) => certs
                .iter()
                .try_fold(builder.certificate_store(CertificateStore::None), |b, c| {
                    Certificate::from_der(c.to_vec()).map(|c| b.add_root_certificate(c))
                })?,
            None => builder.certificate_store(CertificateStore::WebpkiRoots),
        };
        builder.build_rustls()
    }

    /// What to say when the TLS session with `host` failed: the certificate may not be signed by
    /// an authority this door trusts.
    pub(crate) fn hint(&self, door: &str, host: &str) -> String {
        match &self.private {
            Some((path, _)) => format!(
                "the certificate of `{host}` must be signed by the authority in door `{door}`'s \
                 `ca_file` ({})",
                path.display()
            ),
            None => format!(
                "the certificate of `{host}` must be signed by a public certificate authority; \
                 for a private one, set `ca_file` on door `{door}` to its certificate (PEM)"
            ),
        }
    }
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

/// Whether `e` (or an error it wraps) is rustls refusing the server: its certificate, or the
/// handshake.
pub(crate) fn tls_refused(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|inner| inner as &(dyn std::error::Error + 'static));
        if e.is::<rustls::Error>() || inner.is_some_and(|i| i.is::<rustls::Error>()) {
            return true;
        }
        next = e.source();
    }
    false
}

/// Runs one email door until cancelled: its outbox's retry task, and its INBOX.
pub struct EmailListener;

#[async_trait]
impl Listener for EmailListener {
    async fn run(&self, ctx: DoorContext, cancel: CancellationToken) -> Result<(), DoorError> {
        let name = ctx.door.name.clone();
        // The daemon watches `cancel` to start this door again after an error: only this run's
        // own tasks are stopped when it ends.
        let cancel = cancel.child_token();
        // This run's tasks stop however it ends, even if its future is dropped midway.
        let _stop_tasks = cancel.clone().drop_guard();
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
        // `ca_file` is relative to the stage's folder.
        let mut email = email.clone();
        email.ca_file = email
            .ca_file
            .map(|f| ctx.stage.dir.join(f).to_string_lossy().into_owned());
        let email = &email;
        let smtp = smtp::Smtp::new(
            &name,
            &ctx.stage_key(),
            email,
            Some(login.clone()),
            ctx.store.clone(),
        )
        .map_err(failed)?;
        // Every step that can fail comes before the tasks below are spawned: a return after
        // them would leave them running, four more at each restart of the door.
        let inbox = imap::Inbox::new(&name, email, login).map_err(failed)?;
        let door = crate::door::chat_door(&ctx, config, Arc::new(smtp));
        let retry = tokio::spawn({
            let (outbox, cancel) = (door.outbox.clone(), cancel.clone());
            async move { outbox.run(cancel).await }
        });
        let retaking = crate::door::retake(door.clone(), crate::door::RETAKE_EVERY, cancel.clone());
        let sweeping = tokio::spawn(improv_door::expiry::run(
            ctx.store.clone(),
            crate::door::expiry(),
            ctx.clock.clone(),
            cancel.clone(),
        ));
        let expiring = tokio::spawn(expire_threads(
            ctx.clone(),
            email.thread_days,
            cancel.clone(),
        ));
        let result = imap::listen(&inbox, &door, cancel.clone()).await;
        cancel.cancel();
        let _ = retaking.await;
        let _ = sweeping.await;
        let _ = expiring.await;
        let _ = retry.await;
        result.map_err(failed)
    }
}

/// Every [`SWEEP_EVERY`](improv_door::expiry::SWEEP_EVERY) of the door's clock, deletes its
/// thread records unused for `days` ([`message::expire`]) until `cancel` fires.
async fn expire_threads(ctx: DoorContext, days: u32, cancel: CancellationToken) {
    let every = i64::try_from(improv_door::expiry::SWEEP_EVERY.as_millis()).unwrap_or(i64::MAX);
    let door = &ctx.door.name;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = ctx.clock.sleep_until(ctx.clock.now().saturating_add(every)) => {}
        }
        match message::expire(ctx.store.as_ref(), door, days, ctx.clock.now()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(door = %door, "expired {n} email thread record(s)"),
            Err(e) => {
                tracing::warn!(door = %door, "email thread records could not be expired (tried again later): {e}")
            }
        }
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
    fn plain_text_only_when_asked_for_and_only_to_a_loopback_host() {
        let none = |host, implicit| Security::of(&server(host, implicit), MailTls::None);
        assert_eq!(none("127.0.0.1", false), Security::Plain);
        assert_eq!(none("::1", false), Security::Plain);
        assert_eq!(none("LocalHost", false), Security::Plain);
        assert_eq!(none("127.0.0.1", true), Security::Tls);
        assert_eq!(none("mail.example.com", false), Security::StartTls);
        assert_eq!(none("10.0.0.1", false), Security::StartTls);
        assert_eq!(none("localhost.example.com", false), Security::StartTls);
        assert_eq!(none("mail.example.com", true), Security::Tls);
        // Not asked for: STARTTLS even to this machine.
        let required = |host| Security::of(&server(host, false), MailTls::Required);
        assert_eq!(required("127.0.0.1"), Security::StartTls);
        assert_eq!(required("localhost"), Security::StartTls);
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
