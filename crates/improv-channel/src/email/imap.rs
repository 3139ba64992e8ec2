//! The INBOX, watched (`async-imap`): each mail that arrives after the door opened is read and
//! handed to the door as a message of its thread. Where the INBOX has been read up to (its
//! `UIDVALIDITY` and next UID) is kept in the store after each mail, so a restart neither
//! repeats nor skips one; the door's "seen" claim on the `Message-ID` covers a crash between
//! handling a mail and recording it. The server is asked to IDLE (RFC 2177), re-issued before
//! its 29 minutes run out; a server without IDLE is polled.

use super::message::{self, Mail, Threads};
use super::{Login, Security, Trust};
use crate::conversation::ChatDoor;
use crate::{Channel, ChannelError, Inbound};
use async_imap::types::Fetch;
use async_imap::{Client, Session};
use futures::TryStreamExt;
use improv_door::kept;
use improv_stage::door::{EmailDoor, MailServer, SenderCheck};
use improv_store::{StageKey, Store};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_util::sync::CancellationToken;

const PLATFORM: &str = "imap";
const POSITION_SCOPE: &str = "email.position";
/// A mail larger than this is not read (and not answered); the log says so.
pub const MAX_MESSAGE_BYTES: u32 = 1 << 20;
/// IDLE is re-issued this often: servers may end an IDLE after 30 minutes (RFC 2177).
const IDLE_RENEW: Duration = Duration::from_secs(25 * 60);
/// How often a server without IDLE is asked for new mail.
const POLL: Duration = Duration::from_secs(60);
/// The longest wait between reconnections after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A connection, plain or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Io for T {}
type Connection = Session<Box<dyn Io>>;

/// Where a door has read its INBOX up to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub uid_validity: u32,
    /// The first UID not yet handled.
    pub next_uid: u32,
}

/// Where `stage`'s door `door` has read up to; `None` before its first connection. Another
/// stage's door of that name reads its own mailbox, so keeps its own ([`kept::key`]); one kept
/// before the stage was in the key is adopted by the first stage that reads it.
pub async fn position(
    store: &dyn Store,
    stage: &StageKey,
    door: &str,
) -> Result<Option<Position>, ChannelError> {
    let value = kept::get(store, POSITION_SCOPE, stage, door).await?;
    Ok(value.and_then(|v| serde_json::from_value(v).ok()))
}

async fn save(
    store: &dyn Store,
    stage: &StageKey,
    door: &str,
    position: Position,
) -> Result<(), ChannelError> {
    let value = serde_json::json!(position);
    kept::put(store, POSITION_SCOPE, stage, door, &value, false).await?;
    Ok(())
}

/// One door's INBOX.
pub struct Inbox {
    door: String,
    server: MailServer,
    security: Security,
    trust: Trust,
    login: Login,
    /// The door's own address: mail from it is never answered.
    own: String,
    /// How a sender is known to be who From: says.
    check: SenderCheck,
    timeout: Duration,
}

impl Inbox {
    /// The INBOX of door `door`; fails when its `ca_file` cannot be read.
    pub fn new(door: &str, email: &EmailDoor, login: Login) -> Result<Self, ChannelError> {
        Ok(Inbox {
            door: door.to_string(),
            server: email.imap.clone(),
            security: Security::of(&email.imap, email.tls),
            trust: Trust::of(door, email)?,
            login,
            own: email.from.clone(),
            check: email.sender_check.clone(),
            timeout: crate::DEFAULT_TIMEOUT,
        })
    }

    /// Sets the time limit of connecting and of each IMAP command.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// `what` within the time limit.
    async fn within<T, E: std::fmt::Display>(
        &self,
        what: &str,
        f: impl Future<Output = Result<T, E>>,
    ) -> Result<T, ChannelError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(failed(what, e)),
            Err(_) => Err(failed(what, format!("no answer within {:?}", self.timeout))),
        }
    }

    /// A logged-in session, over TLS unless the server is a loopback one asked for in plain.
    async fn open(&self) -> Result<Connection, ChannelError> {
        let address = (self.server.host.as_str(), self.server.port);
        let tcp = self.within("connect", TcpStream::connect(address)).await?;
        let stream: Box<dyn Io> = match self.security {
            Security::Tls => self.tls(Box::new(tcp)).await?,
            Security::StartTls | Security::Plain => Box::new(tcp),
        };
        let mut client = Client::new(stream);
        self.within("the greeting", client.read_response())
            .await?
            .ok_or_else(|| failed("the greeting", "the server closed the connection"))?;
        if self.security == Security::StartTls {
            self.within(
                "STARTTLS",
                client.run_command_and_check_ok("STARTTLS", None),
            )
            .await?;
            client = Client::new(self.tls(client.into_inner()).await?);
        }
        let login = client.login(&self.login.user, &self.login.password);
        match tokio::time::timeout(self.timeout, login).await {
            Ok(Ok(session)) => Ok(session),
            Ok(Err((e, _))) => Err(ChannelError::Setup(format!(
                "door `{}`: the IMAP server refused the login of `{}` ({e}); check the \
                 variables `user_env` and `password_env` name",
                self.door, self.login.user
            ))),
            Err(_) => Err(failed("LOGIN", "no answer")),
        }
    }

    async fn tls(&self, stream: Box<dyn Io>) -> Result<Box<dyn Io>, ChannelError> {
        let name = ServerName::try_from(self.server.host.clone())
            .map_err(|e| failed("TLS", format!("`{}`: {e}", self.server.host)))?;
        let connector = tokio_rustls::TlsConnector::from(self.trust.rustls()?);
        let what = format!("TLS with {}:{}", self.server.host, self.server.port);
        match tokio::time::timeout(self.timeout, connector.connect(name, stream)).await {
            Ok(Ok(tls)) => Ok(Box::new(tls)),
            Ok(Err(e)) if super::tls_refused(&e) => {
                let hint = self.trust.hint(&self.door, &self.server.host);
                Err(failed(&what, format!("{e}; {hint}")))
            }
            Ok(Err(e)) => Err(failed(&what, e)),
            Err(_) => Err(failed(
                &what,
                format!("no answer within {:?}", self.timeout),
            )),
        }
    }

    /// Connects, logs in and logs out: whether the door can read its INBOX, said as the door's
    /// own connection would fail.
    pub async fn probe(&self) -> Result<(), ChannelError> {
        let mut session = self.open().await?;
        self.within("LOGOUT", session.logout()).await
    }

    /// One connection's life: open, catch up, wait for mail, again, until an error or `cancel`.
    async fn watch(
        &self,
        door: &ChatDoor,
        cancel: &CancellationToken,
        backoff: &mut Duration,
    ) -> Result<(), ChannelError> {
        let mut session = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            session = self.open() => session?,
        };
        let mailbox = self.within("SELECT INBOX", session.select("INBOX")).await?;
        let capabilities = self.within("CAPABILITY", session.capabilities()).await?;
        let idle = capabilities.has_str("IDLE");
        *backoff = Duration::from_secs(1);
        let validity = mailbox.uid_validity.unwrap_or(0);
        let uid_next = match mailbox.uid_next {
            Some(n) => n,
            None => self.uid_next(&mut session).await?,
        };
        let stage = door.outbox.stage();
        let mut next = self
            .start(door.store.as_ref(), stage, validity, uid_next)
            .await?;
        loop {
            next = self.take_new(&mut session, door, validity, next).await?;
            if cancel.is_cancelled() {
                return Ok(());
            }
            if idle {
                match self.idle(session, cancel).await? {
                    Some(s) => session = s,
                    None => return Ok(()),
                }
            } else {
                tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    () = tokio::time::sleep(POLL) => {}
                }
                self.within("NOOP", session.noop()).await?;
            }
        }
    }

    /// The next UID of a server that did not say it on SELECT: the highest one's successor.
    async fn uid_next(&self, session: &mut Connection) -> Result<u32, ChannelError> {
        let all = self.within("UID SEARCH", session.uid_search("ALL")).await?;
        Ok(all.into_iter().max().map_or(1, |uid| uid + 1))
    }

    /// Where to read from: the stored position, or, on a first connection (or a mailbox whose
    /// UIDs were renumbered), the mail arriving from now on; a door does not answer old mail.
    async fn start(
        &self,
        store: &dyn Store,
        stage: &StageKey,
        validity: u32,
        uid_next: u32,
    ) -> Result<u32, ChannelError> {
        match position(store, stage, &self.door).await? {
            Some(p) if p.uid_validity == validity => Ok(p.next_uid),
            other => {
                if other.is_some() {
                    tracing::warn!(door = %self.door, "the INBOX's UIDVALIDITY changed: mail is read from now on; mail that arrived meanwhile is not answered");
                }
                let position = Position {
                    uid_validity: validity,
                    next_uid: uid_next,
                };
                save(store, stage, &self.door, position).await?;
                Ok(uid_next)
            }
        }
    }

    /// Handles each mail from UID `next` on, in order, recording the position after each;
    /// returns the next UID to read.
    async fn take_new(
        &self,
        session: &mut Connection,
        door: &ChatDoor,
        validity: u32,
        mut next: u32,
    ) -> Result<u32, ChannelError> {
        let listed = self
            .within(
                "UID FETCH",
                fetch(session, &format!("{next}:*"), "(UID RFC822.SIZE)"),
            )
            .await?;
        // `n:*` names the last mail even when its UID is below n.
        let mut new: Vec<(u32, u32)> = listed
            .iter()
            .filter_map(|f| Some((f.uid?, f.size.unwrap_or(0))))
            .filter(|(uid, _)| *uid >= next)
            .collect();
        new.sort_unstable();
        for (uid, size) in new {
            if size > MAX_MESSAGE_BYTES {
                tracing::warn!(door = %self.door, uid, size, "a mail over {MAX_MESSAGE_BYTES} bytes is not read");
            } else {
                let fetched = self
                    .within("UID FETCH", fetch(session, &uid.to_string(), "BODY.PEEK[]"))
                    .await?;
                let raw = fetched.iter().find_map(|f| f.body()).unwrap_or_default();
                self.hand_over(door, validity, uid, raw).await;
            }
            next = uid + 1;
            let position = Position {
                uid_validity: validity,
                next_uid: next,
            };
            save(
                door.store.as_ref(),
                door.outbox.stage(),
                &self.door,
                position,
            )
            .await?;
        }
        Ok(next)
    }

    /// Reads one mail and hands it to the door; what cannot be done is logged (the INBOX goes on).
    async fn hand_over(&self, door: &ChatDoor, validity: u32, uid: u32, raw: &[u8]) {
        let fallback = format!("uid.{validity}.{uid}@{}.imap.invalid", self.door);
        let mail = match message::read(raw, &self.own, &fallback, &self.check) {
            Ok(mail) => mail,
            Err(skip) => {
                tracing::info!(door = %self.door, uid, "a mail is not answered: {skip}");
                return;
            }
        };
        if let Err(e) = self.thread_and_handle(door, mail).await {
            tracing::error!(door = %self.door, uid, "a mail was not handled: {e}");
        }
    }

    /// Finds `mail`'s thread and hands it to the door. The thread is recorded only when the
    /// door's gate knows the sender: a stranger's mail (answered with a pairing code, never
    /// performed) adds no record, so strangers cannot grow the store or claim message ids.
    /// A sender paired between this check and the gate's own starts a thread of its own.
    async fn thread_and_handle(&self, door: &ChatDoor, mail: Mail) -> Result<(), ChannelError> {
        let own_id = mail.message_id.clone();
        let sender = inbound(mail.clone(), own_id.clone());
        let root = if door.gate.known(&sender).await? {
            let threads = Threads {
                store: door.store.as_ref(),
                stage: door.outbox.stage(),
                door: &self.door,
                correspondent: &sender.sender_id,
            };
            threads.record(&mail).await?.root
        } else {
            own_id
        };
        door.handle(&inbound(mail, root)).await.map(|_| ())
    }

    /// Waits in IDLE for new mail (or the renewal time); `None` when cancelled.
    async fn idle(
        &self,
        session: Connection,
        cancel: &CancellationToken,
    ) -> Result<Option<Connection>, ChannelError> {
        let mut handle = session.idle();
        self.within("IDLE", handle.init()).await?;
        let cancelled = {
            let (wait, _stop) = handle.wait_with_timeout(IDLE_RENEW);
            tokio::select! {
                () = cancel.cancelled() => true,
                response = wait => {
                    response.map_err(|e| failed("IDLE", e))?;
                    false
                }
            }
        };
        if cancelled {
            return Ok(None);
        }
        Ok(Some(self.within("DONE", handle.done()).await?))
    }
}

/// A mail as a door message: its conversation is the sender's address in lower case (one
/// sender writing `Alice@` and `alice@` is one conversation), its thread the root.
fn inbound(mail: Mail, root: String) -> Inbound {
    let address = mail.from.to_ascii_lowercase();
    Inbound {
        platform: Channel::Email,
        conversation: address.clone(),
        thread: Some(root),
        message_id: mail.message_id,
        sender_id: address,
        sender_name: Some(mail.from),
        text: format!("Subject: {}\n\n{}", mail.subject, mail.text),
    }
}

async fn fetch(
    session: &mut Connection,
    set: &str,
    query: &str,
) -> Result<Vec<Fetch>, async_imap::error::Error> {
    session.uid_fetch(set, query).await?.try_collect().await
}

fn failed(what: &str, e: impl std::fmt::Display) -> ChannelError {
    ChannelError::NotSent {
        platform: PLATFORM,
        message: format!("{what}: {e}"),
    }
}

/// Watches the door's INBOX until `cancel` fires. Failures (the server down, a refused login)
/// are logged and the connection is made again, waiting 1 s doubling to a minute; they never
/// end the loop.
pub async fn listen(
    inbox: &Inbox,
    door: &ChatDoor,
    cancel: CancellationToken,
) -> Result<(), ChannelError> {
    let mut backoff = Duration::from_secs(1);
    loop {
        match inbox.watch(door, &cancel, &mut backoff).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::warn!(door = %inbox.door, "email: {e}; connecting again in {backoff:?}")
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
