//! Replies out by SMTP (`lettre`'s connection, driven step by step). Each reply's `Message-ID`
//! is made from its outbox key, so a retry sends the same message, and the thread records give
//! it `In-Reply-To`, `References` and `Re:` so the sender's client threads it.
//!
//! SMTP offers no idempotency key, so the outbox sends at most once, and what a failure means
//! depends on when it came: before `MAIL FROM` the server saw nothing of the message, so it is
//! retried (a refused login too: the password may be fixed); a refusal of the envelope or of
//! the data (5xx) is final, a 4xx is retried; but a connection lost after the data was sent and
//! before the server's answer leaves it unknown whether the server took the message (RFC 1047),
//! so it is recorded unconfirmed and never resent.

use super::message::{self, Threaded, Threads};
use super::{Login, Security, Trust};
use crate::{Body, Channel, ChannelError, Sender};
use async_trait::async_trait;
use improv_stage::door::{EmailDoor, MailServer};
use improv_store::{OutboxKey, StageKey, Store};
use lettre::Address;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::AsyncSmtpConnection;
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailBodyParameter, MailParameter};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

const PLATFORM: &str = "smtp";
/// RFC 3834: our replies are automatic, so vacation responders and other bots leave them be.
const AUTO_SUBMITTED: HeaderName = HeaderName::new_from_ascii_str("Auto-Submitted");

/// Where an SMTP failure came, which decides what the outbox may do (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Connecting, TLS, EHLO, AUTH: nothing of the message was sent.
    Session,
    /// MAIL FROM, RCPT TO, DATA: the message's text was not sent.
    Envelope,
    /// The text and its final dot were sent; the answer is the server's decision.
    Text,
}

/// An email door's SMTP client.
pub struct Smtp {
    door: String,
    /// The stage the door is of: its thread records are kept under it.
    stage: StageKey,
    server: MailServer,
    security: Security,
    trust: Trust,
    login: Option<Login>,
    from: Address,
    store: Arc<dyn Store>,
    timeout: Duration,
}

impl Smtp {
    /// The client for `stage`'s door `door`; `login` is used where the server offers AUTH.
    pub fn new(
        door: &str,
        stage: &StageKey,
        email: &EmailDoor,
        login: Option<Login>,
        store: Arc<dyn Store>,
    ) -> Result<Self, ChannelError> {
        let from: Address = email.from.parse().map_err(|e| {
            ChannelError::Setup(format!(
                "door `{door}`: `from` \"{}\" is not an address: {e}",
                email.from
            ))
        })?;
        Ok(Smtp {
            door: door.to_string(),
            stage: stage.clone(),
            server: email.smtp.clone(),
            security: Security::of(&email.smtp, email.tls),
            trust: Trust::of(door, email)?,
            login,
            from,
            store,
            timeout: crate::DEFAULT_TIMEOUT,
        })
    }

    /// Sets the time limit of connecting and of each SMTP step.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The `Message-ID` (without brackets) of the message sent under `key`: the same for every
    /// attempt, unique to the door and the key.
    pub fn message_id(&self, key: &OutboxKey) -> String {
        let digest = Sha256::new()
            .chain_update(self.door.as_bytes())
            .chain_update([0])
            .chain_update(key.performance.as_bytes())
            .chain_update([0])
            .chain_update(key.seq.to_be_bytes())
            .finalize();
        format!(
            "improv.{}@{}",
            hex::encode(&digest[..16]),
            self.from.domain()
        )
    }

    /// The reply to `to`, threaded under the message it answers; its id recorded in the thread.
    async fn compose(
        &self,
        to: &str,
        body: &Body,
        key: &OutboxKey,
    ) -> Result<(Message, Address, String), ChannelError> {
        let refused = |message: String| ChannelError::Refused {
            platform: PLATFORM,
            message,
        };
        if !message::plain_address(to) {
            return Err(refused(format!("`{to}` is not a plain email address")));
        }
        let to: Address = to
            .parse()
            .map_err(|e| refused(format!("`{to}` is not an email address: {e}")))?;
        let id = self.message_id(key);
        let correspondent = to.to_string().to_ascii_lowercase();
        let threads = Threads {
            store: self.store.as_ref(),
            stage: &self.stage,
            door: &self.door,
            correspondent: &correspondent,
        };
        let answered = match &body.reply_to {
            // A mail with no record (a stranger's: never recorded) is answered under it alone.
            Some(reply_to) => Some((
                reply_to,
                threads.get(reply_to).await?.unwrap_or_else(|| Threaded {
                    root: reply_to.clone(),
                    subject: format!("From {}", self.door),
                    references: Vec::new(),
                }),
            )),
            None => None,
        };
        let mut builder = Message::builder()
            .from(Mailbox::new(None, self.from.clone()))
            .to(Mailbox::new(None, to.clone()))
            .message_id(Some(format!("<{id}>")))
            .date_now()
            .raw_header(HeaderValue::new(AUTO_SUBMITTED, "auto-replied".into()));
        let threaded = match answered {
            Some((reply_to, original)) => {
                let mut references = original.references;
                references.push(reply_to.clone());
                let references = message::bounded(references);
                builder = builder
                    .in_reply_to(format!("<{reply_to}>"))
                    .references(bracketed(&references));
                Threaded {
                    root: original.root,
                    subject: reply_subject(&original.subject),
                    references,
                }
            }
            None => Threaded {
                root: id.clone(),
                subject: format!("From {}", self.door),
                references: Vec::new(),
            },
        };
        let message = builder
            .subject(threaded.subject.clone())
            .body(body.text.clone())
            .map_err(|e| refused(format!("the reply cannot be written as an email: {e}")))?;
        threads.put(&id, &threaded).await?;
        Ok((message, to, id))
    }

    /// Sends `message` to `to` on a connection of its own.
    async fn transmit(&self, message: &Message, to: Address) -> Result<(), ChannelError> {
        let host = self.server.host.as_str();
        let hello = ClientId::Domain(self.from.domain().to_string());
        let tls = || self.trust.smtp(host).map_err(|e| sorted(e, Step::Session));
        // A failed handshake says which host and what to set.
        let handshake = |e: lettre::transport::smtp::Error| {
            let hint = self.trust.hint(&self.door, host);
            ChannelError::NotSent {
                platform: PLATFORM,
                message: format!("TLS with {host}:{}: {e}; {hint}", self.server.port),
            }
        };
        let session = |e: lettre::transport::smtp::Error| match super::tls_refused(&e) {
            true => handshake(e),
            false => sorted(e, Step::Session),
        };
        let implicit = match self.security {
            Security::Tls => Some(tls()?),
            Security::StartTls | Security::Plain => None,
        };
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (host, self.server.port),
            Some(self.timeout),
            &hello,
            implicit,
            None,
        )
        .await
        .map_err(session)?;
        if self.security == Security::StartTls {
            conn.starttls(tls()?, &hello).await.map_err(session)?;
        }
        let offers_auth = conn.server_info().supports_auth_mechanism(Mechanism::Plain)
            || conn.server_info().supports_auth_mechanism(Mechanism::Login);
        if let (Some(login), true) = (&self.login, offers_auth) {
            let credentials = Credentials::new(login.user.clone(), login.password.clone());
            conn.auth(&[Mechanism::Plain, Mechanism::Login], &credentials)
                .await
                .map_err(|e| sorted(e, Step::Session))?;
        }
        let text = message.formatted();
        let mut parameters = Vec::new();
        if !text.is_ascii() && conn.server_info().supports_feature(Extension::EightBitMime) {
            parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
        }
        let envelope = |e| sorted(e, Step::Envelope);
        conn.command(Mail::new(Some(self.from.clone()), parameters))
            .await
            .map_err(envelope)?;
        conn.command(Rcpt::new(to, Vec::new()))
            .await
            .map_err(envelope)?;
        conn.command(Data).await.map_err(envelope)?;
        conn.message(&text)
            .await
            .map_err(|e| sorted(e, Step::Text))?;
        // The message is taken; a failed goodbye changes nothing.
        let _ = conn.quit().await;
        Ok(())
    }
}

/// `<a> <b>`: ids as a header carries them.
fn bracketed(ids: &[String]) -> String {
    ids.iter()
        .map(|id| format!("<{id}>"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `Re: subject`, once.
fn reply_subject(subject: &str) -> String {
    let subject = subject.trim();
    if subject.is_empty() {
        "Re: your message".into()
    } else if subject
        .get(..3)
        .is_some_and(|p| p.eq_ignore_ascii_case("re:"))
    {
        subject.to_string()
    } else {
        format!("Re: {subject}")
    }
}

/// What an SMTP failure at `step` lets the outbox do (the module doc says why).
fn sorted(e: lettre::transport::smtp::Error, step: Step) -> ChannelError {
    let message = format!("{e} (during {step:?})");
    match step {
        Step::Session => ChannelError::NotSent {
            platform: PLATFORM,
            message,
        },
        _ if e.is_permanent() => ChannelError::Refused {
            platform: PLATFORM,
            message,
        },
        Step::Envelope => ChannelError::NotSent {
            platform: PLATFORM,
            message,
        },
        Step::Text if e.is_transient() => ChannelError::NotSent {
            platform: PLATFORM,
            message,
        },
        Step::Text => ChannelError::Unknown {
            platform: PLATFORM,
            message,
        },
    }
}

#[async_trait]
impl Sender for Smtp {
    fn platform(&self) -> Channel {
        Channel::Email
    }

    /// Sends `body` to the address `conversation`; returns its `Message-ID`.
    async fn send(
        &self,
        conversation: &str,
        body: &Body,
        key: &OutboxKey,
    ) -> Result<String, ChannelError> {
        let (message, to, id) = self.compose(conversation, body, key).await?;
        self.transmit(&message, to).await?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_is_answered_with_one_re() {
        assert_eq!(reply_subject("plan"), "Re: plan");
        assert_eq!(reply_subject("RE: plan"), "RE: plan");
        assert_eq!(reply_subject("  "), "Re: your message");
        assert_eq!(reply_subject("ré"), "Re: ré");
        assert_eq!(reply_subject("a€"), "Re: a€");
    }
}
