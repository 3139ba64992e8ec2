//! An email as the door reads it (`mail-parser`): who sent it, its ids, its subject and text;
//! mail that must not be answered (our own, automatic, failing DMARC) is set aside with a reason.
//! Also the thread records, each stage's own: each message id seen or sent maps to its
//! thread's root, its subject and its references, so a reply threads (`In-Reply-To`,
//! `References`, `Re:`) and a message whose client dropped `References` still finds its
//! conversation. They expire: [`expire`] deletes a door's records unused for its `thread_days`
//! (default 180), swept by the listener.

use crate::ChannelError;
use improv_door::expiry::BATCH;
use improv_door::kept;
use improv_stage::door::SenderCheck;
use improv_store::{StageKey, Store, Sweep, UnixMillis, Versioned};
use mail_parser::{HeaderValue, MessageParser};
use serde::{Deserialize, Serialize};

/// The most text of a message the actor is given; the rest is cut, and said to be.
pub const MAX_TEXT_CHARS: usize = 32 * 1024;
/// The most ids of `References` kept (the first, the root, and the latest ones).
const MAX_REFERENCES: usize = 20;
const THREAD_SCOPE: &str = "email.thread";

/// A message that may be answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mail {
    /// `Message-ID` without its angle brackets.
    pub message_id: String,
    /// `In-Reply-To` and `References`, oldest first, without brackets.
    pub in_reply_to: Vec<String>,
    pub references: Vec<String>,
    /// The sender's bare address (`From:`), as written.
    pub from: String,
    pub subject: String,
    /// The text body (HTML converted when there is no text part), at most [`MAX_TEXT_CHARS`].
    pub text: String,
}

/// Why a message is not answered.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Skip {
    #[error("it does not parse as an email")]
    Unreadable,
    #[error("it has no plain sender address in From:")]
    NoSender,
    #[error("it is from this door's own address (a loop)")]
    Ours,
    /// RFC 3834: an auto-reply, a bounce, a mailing list; answering could loop with it.
    #[error("it is automatic mail ({0})")]
    Automatic(String),
    /// The receiving server found the sender forged.
    #[error("the receiving server says its sender failed DMARC")]
    Forged,
    /// The door's `sender_check` does not believe From: (see [`super::auth`]).
    #[error("its sender is not verified: {0}")]
    Unverified(#[from] super::auth::Unverified),
}

/// Reads `raw`; `own` is the door's address, `fallback_id` the id used when the message has
/// no usable `Message-ID` (it must be stable: it keys the message's "seen" claim), `check` how
/// its sender is known to be who From: says.
pub fn read(raw: &[u8], own: &str, fallback_id: &str, check: &SenderCheck) -> Result<Mail, Skip> {
    let message = MessageParser::default()
        .parse(raw)
        .ok_or(Skip::Unreadable)?;
    let from = message
        .from()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .filter(|a| plain_address(a))
        .ok_or(Skip::NoSender)?
        .to_string();
    if from.eq_ignore_ascii_case(own) {
        return Err(Skip::Ours);
    }
    if let Some(reason) = automatic(&message) {
        return Err(Skip::Automatic(reason));
    }
    let dmarc_failed = message
        .header_values("Authentication-Results")
        .filter_map(HeaderValue::as_text)
        .any(|v| v.to_ascii_lowercase().contains("dmarc=fail"));
    if dmarc_failed {
        return Err(Skip::Forged);
    }
    let results = message
        .header_values("Authentication-Results")
        .filter_map(HeaderValue::as_text);
    super::auth::verify(check, &from, results)?;
    let mut text: String = message
        .body_text(0)
        .unwrap_or_default()
        .chars()
        .take(MAX_TEXT_CHARS + 1)
        .collect();
    if text.chars().count() > MAX_TEXT_CHARS {
        text = text.chars().take(MAX_TEXT_CHARS).collect();
        text.push_str("\n[the rest of the message was cut]");
    }
    Ok(Mail {
        message_id: message
            .message_id()
            .filter(|id| plain_id(id))
            .unwrap_or(fallback_id)
            .to_string(),
        in_reply_to: ids(message.in_reply_to()),
        references: ids(message.references()),
        from,
        subject: message.subject().unwrap_or_default().trim().to_string(),
        text,
    })
}

/// RFC 3834's `Auto-Submitted` other than `no`, or `Precedence: bulk | list | junk`.
fn automatic(message: &mail_parser::Message) -> Option<String> {
    let raw = |name| {
        message
            .header_raw(name)
            .map(|v| v.trim().to_ascii_lowercase())
    };
    if let Some(v) = raw("Auto-Submitted").filter(|v| v != "no") {
        return Some(format!("Auto-Submitted: {v}"));
    }
    raw("Precedence")
        .filter(|v| matches!(v.as_str(), "bulk" | "list" | "junk"))
        .map(|v| format!("Precedence: {v}"))
}

fn ids(value: &HeaderValue) -> Vec<String> {
    value
        .as_text_list()
        .unwrap_or_default()
        .iter()
        .filter(|id| plain_id(id))
        .map(|id| id.to_string())
        .collect()
}

/// A message id we repeat in a header and use in a store key: printable ASCII, no brackets or
/// spaces, bounded.
fn plain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 250
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'<' | b'>' | b'"' | b'\\'))
}

/// `local@domain` in plain ASCII: it becomes the envelope recipient of replies and the sender's
/// id, so nothing quoted, no spaces, no second `@`.
pub fn plain_address(address: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+');
    address.len() <= 254
        && address.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.is_empty()
                && local.chars().all(ok)
                && domain.chars().all(ok)
        })
}

/// What the door keeps about a message of a thread, seen or sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Threaded {
    /// The thread's first message: the conversation's key.
    pub root: String,
    pub subject: String,
    /// Its `References` (oldest first), for a reply to extend.
    pub references: Vec<String>,
}

/// The thread records of one stage's door with one correspondent: keyed by stage, door,
/// correspondent and message id, so that a message id another sender used (or claimed first,
/// knowing it) never leads this correspondent's mail into a thread that is not theirs, and two
/// stages' doors of one name mailed by one person never thread into each other's
/// conversations. Inbound mail is recorded only once its sender is let in (see `imap`), so a
/// stranger's mail adds no record.
pub struct Threads<'a> {
    pub store: &'a dyn Store,
    pub stage: &'a StageKey,
    pub door: &'a str,
    /// The correspondent's address in lower case: the sender of inbound mail, the recipient of
    /// a reply.
    pub correspondent: &'a str,
}

impl Threads<'_> {
    /// The thread record of `message_id`: the stage's own, or else one kept before the stage
    /// was in the key, which the stage adopts ([`Self::adopt`]) so that a thread under way at
    /// the upgrade goes on: first under the door's scope, keyed correspondent/message-id, or
    /// before records moved to a scope per door, under `email.thread` keyed
    /// door/correspondent/message-id. [`expire`] sweeps what stays behind. An id that makes the
    /// bare key read as a stage's own ([`is_stage_key`]) has no record before the upgrade.
    pub async fn get(&self, message_id: &str) -> Result<Option<Threaded>, ChannelError> {
        let bare = self.bare_key(message_id);
        let own = self.own_key(message_id);
        if let Some(value) = self.store.get(&scope(self.door), &own).await? {
            return Ok(serde_json::from_value(value).ok());
        }
        if is_stage_key(&bare) {
            return Ok(None);
        }
        let legacy = format!("{}/{bare}", self.door);
        for (scope, key) in [(scope(self.door), bare), (THREAD_SCOPE.to_string(), legacy)] {
            if let Some(before) = self.store.get_versioned(&scope, &key).await? {
                return self.adopt(message_id, &scope, &key, before).await;
            }
        }
        Ok(None)
    }

    /// Takes `before`, kept under `old_key` in `old_scope` before the stage was in the key, as the
    /// stage's record of `message_id`. In its place goes a marker naming the stage and holding
    /// the record ([`kept::ADOPTED`], [`kept::ADOPTED_VALUE`]), written only over the version
    /// read: of two stages reading it at once, one goes on with the thread and the other's
    /// door of that name starts its own; every server of the first copies the record from the
    /// marker. One that does not read as a record is none.
    async fn adopt(
        &self,
        message_id: &str,
        old_scope: &str,
        old_key: &str,
        before: Versioned,
    ) -> Result<Option<Threaded>, ChannelError> {
        let value = if before.value.get(kept::ADOPTED).is_some() {
            kept::adopted_by(&before.value, self.stage)
        } else if serde_json::from_value::<Threaded>(before.value.clone()).is_err() {
            None
        } else {
            let marker = serde_json::json!({ kept::ADOPTED: self.stage.id(), kept::ADOPTED_VALUE: before.value });
            if self
                .store
                .put_if(old_scope, old_key, Some(before.version), &marker)
                .await?
            {
                Some(before.value)
            } else {
                // Another reader marked it first: it holds the record if it is of this stage.
                let now = self.store.get(old_scope, old_key).await?;
                now.and_then(|marker| kept::adopted_by(&marker, self.stage))
            }
        };
        let Some(value) = value else {
            return Ok(None);
        };
        // Only if absent, so a record the stage wrote meanwhile stays.
        let own = self.own_key(message_id);
        self.store
            .put(&scope(self.door), &own, &value, true)
            .await?;
        let kept = self.store.get(&scope(self.door), &own).await?;
        Ok(kept.and_then(|value| serde_json::from_value(value).ok()))
    }

    pub async fn put(&self, message_id: &str, threaded: &Threaded) -> Result<(), ChannelError> {
        let value = serde_json::to_value(threaded).map_err(|e| {
            ChannelError::Setup(format!("a thread record that cannot be stored: {e}"))
        })?;
        self.store
            .put(&scope(self.door), &self.own_key(message_id), &value, false)
            .await?;
        Ok(())
    }

    /// Records `mail` under its id and returns its thread: the known thread of the message it
    /// answers (or of any it references), else the root its `References` name, else itself.
    /// A mail whose client dropped `References` gets its parent's, extended (RFC 5322 §3.6.4).
    pub async fn record(&self, mail: &Mail) -> Result<Threaded, ChannelError> {
        if let Some(known) = self.get(&mail.message_id).await? {
            return Ok(known);
        }
        let mut parent = None;
        for id in &mail.in_reply_to {
            if let Some(t) = self.get(id).await? {
                parent = Some((id.clone(), t));
                break;
            }
        }
        let mut root = parent.as_ref().map(|(_, t)| t.root.clone());
        if root.is_none() {
            for id in mail.references.iter().rev() {
                if let Some(t) = self.get(id).await? {
                    root = Some(t.root);
                    break;
                }
            }
        }
        let root = root
            .or_else(|| mail.references.first().cloned())
            .or_else(|| mail.in_reply_to.first().cloned())
            .unwrap_or_else(|| mail.message_id.clone());
        let references = match parent {
            _ if !mail.references.is_empty() => mail.references.clone(),
            Some((id, mut p)) => {
                p.references.push(id);
                p.references
            }
            None => mail.in_reply_to.clone(),
        };
        let threaded = Threaded {
            root,
            subject: mail.subject.clone(),
            references: bounded(references),
        };
        self.put(&mail.message_id, &threaded).await?;
        Ok(threaded)
    }

    /// The key of `message_id`'s record in the door's scope before the stage was in it.
    fn bare_key(&self, message_id: &str) -> String {
        format!("{}/{message_id}", self.correspondent)
    }

    /// The stage's key of `message_id`'s record in the door's scope ([`kept::key`]).
    fn own_key(&self, message_id: &str) -> String {
        kept::key(self.stage, &self.bare_key(message_id))
    }
}

/// Whether `key` reads as a stage's own key ([`kept::key`]: `…@name:NAME` or `…@path:PATH`):
/// correspondents and message ids hold `@`, so a message id such as `m@name:b` (sent by a
/// correspondent in `In-Reply-To`) would make a bare key that is another stage's own record.
fn is_stage_key(key: &str) -> bool {
    key.contains("@name:") || key.contains("@path:")
}

/// The store scope of door `door`'s thread records: one per door, so each door's `thread_days`
/// sweeps its own records only.
fn scope(door: &str) -> String {
    format!("{THREAD_SCOPE}/{door}")
}

/// Deletes door `door`'s thread records last written more than `days` days before `now`, in
/// batches; returns how many went. A thread in use stays: each mail and each reply writes a
/// record, and a mail finds its thread through the latest ids it names. Records left in the
/// scope all doors shared before (see [`Threads::get`]) go by the same measure: every door's
/// sweep clears that scope's old ones, whichever door wrote them.
pub async fn expire(
    store: &dyn Store,
    door: &str,
    days: u32,
    now: UnixMillis,
) -> Result<u64, ChannelError> {
    const DAY_MS: i64 = 24 * 60 * 60 * 1000;
    let sweep = Sweep {
        before: now.saturating_sub(i64::from(days) * DAY_MS),
        keep: 0,
        batch: BATCH,
    };
    let mut gone = 0;
    for scope in [scope(door), THREAD_SCOPE.to_string()] {
        loop {
            let n = store.sweep(&scope, &sweep).await?;
            gone += n;
            if n < BATCH as u64 {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
    Ok(gone)
}

/// The first reference (the root) and the latest ones, as RFC 5322 suggests trimming.
pub fn bounded(mut references: Vec<String>) -> Vec<String> {
    if references.len() > MAX_REFERENCES {
        let tail = references.split_off(references.len() - (MAX_REFERENCES - 1));
        references.truncate(1);
        references.extend(tail);
    }
    references
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(headers: &str) -> Result<Mail, Skip> {
        let raw = format!("{headers}\r\n\r\nHello.\r\n");
        read(
            raw.as_bytes(),
            "bot@example.com",
            "fallback@imap",
            &SenderCheck::None,
        )
    }

    #[test]
    fn ids_subject_and_sender_are_read() {
        let m = mail(
            "From: Alice <Alice@Example.com>\r\nSubject: Re: plan\r\nMessage-ID: <b@x>\r\n\
             In-Reply-To: <a@x>\r\nReferences: <r@x> <a@x>",
        )
        .unwrap();
        assert_eq!(m.from, "Alice@Example.com");
        assert_eq!(m.message_id, "b@x");
        assert_eq!(m.in_reply_to, vec!["a@x"]);
        assert_eq!(m.references, vec!["r@x", "a@x"]);
        assert_eq!(m.subject, "Re: plan");
        assert_eq!(m.text.trim(), "Hello.");
    }

    #[test]
    fn mail_that_must_not_be_answered_is_set_aside() {
        let cases = [
            ("From: bot@example.com", Skip::Ours),
            ("From: \"x y\"@example.com", Skip::NoSender),
            ("Subject: no sender", Skip::NoSender),
            (
                "From: a@x.org\r\nAuto-Submitted: auto-replied",
                Skip::Automatic("Auto-Submitted: auto-replied".into()),
            ),
            (
                "From: a@x.org\r\nPrecedence: bulk",
                Skip::Automatic("Precedence: bulk".into()),
            ),
            (
                "From: a@x.org\r\nAuthentication-Results: mx.example.com; spf=pass; dmarc=fail (p=none)",
                Skip::Forged,
            ),
        ];
        for (headers, skip) in cases {
            assert_eq!(mail(headers), Err(skip), "{headers}");
        }
        assert!(mail("From: a@x.org\r\nAuto-Submitted: no").is_ok());
    }

    #[test]
    fn an_id_that_could_inject_a_header_is_replaced_by_the_fallback() {
        let m = mail("From: a@x.org\r\nMessage-ID: <a b\"c@x>").unwrap();
        assert_eq!(m.message_id, "fallback@imap");
    }

    #[test]
    fn a_long_body_is_cut_and_says_so() {
        let raw = format!(
            "From: a@x.org\r\n\r\n{}\r\n",
            "x".repeat(MAX_TEXT_CHARS + 10)
        );
        let m = read(
            raw.as_bytes(),
            "bot@example.com",
            "f@imap",
            &SenderCheck::None,
        )
        .unwrap();
        assert!(m.text.ends_with("[the rest of the message was cut]"));
        assert!(m.text.len() < MAX_TEXT_CHARS + 100);
    }

    #[test]
    fn references_keep_the_root_and_the_latest() {
        let refs: Vec<String> = (0..30).map(|i| format!("{i}@x")).collect();
        let kept = bounded(refs);
        assert_eq!(kept.len(), MAX_REFERENCES);
        assert_eq!(kept[0], "0@x");
        assert_eq!(kept.last().unwrap(), "29@x");
    }
}
