//! A chat thread is one conversation across performances: a message is let in by the [`Gate`],
//! fenced as untrusted content, and performed as the continuation of the thread's last
//! performance (its history, compacted as usual, then the new message as the sender's, never as
//! a director note); the thread's last performance id lives in the store. Every inbound message is handled once: its platform id is
//! claimed in the store first, so a redelivery (Slack retries, a Telegram offset not yet
//! confirmed at a crash) performs nothing.
//!
//! The claim has a state, `claimed` → `started` → `done` ([`Claim`]), and a claimed message is
//! kept in the door's pending list until its performance starts, so a message accepted by a
//! process that died before performing it is not lost: a door's listener, once up and then every
//! minute, retakes the claims that never started ([`ChatDoor::retake`]), each once and taken over
//! just before it is performed, a thread's in order, a few threads at a time. A message whose performance had
//! started is not retaken (its performance may have replied already; it was logged and ends
//! `interrupted`). The window left: a death between the claim and its pending entry (two
//! writes) loses that message. The pending list is one store value that processes on one store
//! change by compare-and-set ([`Store::put_if`]), so two servers never lose each other's entries.
//!
//! Claims and thread records expire ([`EXPIRY`], swept by the door's listener): a claim after
//! 48 hours, longer than any platform redelivers (Telegram keeps an unconfirmed update 24 hours,
//! Slack retries within minutes, Discord never resends); a thread after 30 days without a
//! message, its next message starting a new conversation. A message claimed and left pending
//! longer than 48 hours is not retaken.
//!
//! A Discord command that arrives while its door drains is claimed and left pending the same
//! way ([`ChatDoor::defer`]), with its interaction's token, and answered "deferred": Discord
//! never resends it, so the next server (after a restart, or the door's next listener after a
//! reload) retakes it, and its first reply edits the deferred answer through the token. A token
//! older than Discord's 15 minutes by then is logged and put in the door's status, and the reply
//! goes to the channel as a new message instead.
//!
//! A door's records are its stage's ([`improv_door::kept::key`]: claims, the pending list,
//! threads, the keys of its notices and pairing code in the outbox, its status notices), so two
//! stages sharing a store, each with a chat door of one name, never continue each other's
//! threads or claim each other's messages. What was kept before the stage was in the key is
//! adopted by the first stage whose door reads it (a thread; the pending list is merged into
//! the stage's own, which may have begun already, before the door's first look), and a message
//! claimed before is a duplicate to every stage, so none is lost or performed twice.

use crate::discord::Followup;
use crate::gate::{Admission, Gate};
use crate::outbox::{Delivery, Outbox};
use crate::reply::{Deferred, ReplyProp, Target};
use crate::send::SendProp;
use crate::{Body, Channel, ChannelError, Inbound};
use async_trait::async_trait;
use futures::StreamExt;
use improv_door::expiry::Expiry;
use improv_door::kept;
use improv_kernel::{Observer, Outcome, Prop};
use improv_store::{OutboxKey, StageKey, Store};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

const THREAD_SCOPE: &str = "door.thread";
const SEEN_SCOPE: &str = "door.inbound";
/// Per door: the messages claimed and not yet started, `{seen key: {inbound, at}}`.
const PENDING_SCOPE: &str = "door.pending";
/// Which claims a process retook after a restart, each written once: the retake's fence.
const RETAKE_SCOPE: &str = "door.retake";
/// The Discord interaction of a deferred message, under its seen key.
const FOLLOWUP_SCOPE: &str = "door.followup";

/// How old a claim that never started must be before the listener retakes it: a claim younger
/// than this may still be on its way to its start in another process.
pub const RETAKE_GRACE: Duration = Duration::from_secs(10);

/// How many retaken messages are performed at once (a door's `max_running` may lower it).
pub const RETAKE_AT_ONCE: usize = 4;

/// The version of a value the store wrote only if absent.
const FIRST_VERSION: i64 = 1;

/// How long the store keeps a chat door's records (the module's doc says why these ages); the
/// counts bound a flood: past them the oldest go first.
pub const EXPIRY: [Expiry; 4] = [
    Expiry {
        scope: SEEN_SCOPE,
        keep_for: Duration::from_secs(48 * 3600),
        max: 500_000,
    },
    Expiry {
        scope: FOLLOWUP_SCOPE,
        keep_for: Duration::from_secs(48 * 3600),
        max: 500_000,
    },
    Expiry {
        scope: RETAKE_SCOPE,
        keep_for: Duration::from_secs(48 * 3600),
        max: 500_000,
    },
    Expiry {
        scope: THREAD_SCOPE,
        keep_for: Duration::from_secs(30 * 24 * 3600),
        max: 100_000,
    },
];

/// Where a claimed message stands, as the store keeps it under its seen key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Claim {
    /// Accepted; nothing performed yet.
    Claimed,
    /// Its performance began (or it was turned away): never retaken.
    Started,
    /// Handled to the end.
    Done,
}

impl Claim {
    fn value(self) -> serde_json::Value {
        serde_json::json!({ "state": self })
    }

    /// The state a stored claim is in (an older `true` claim counts as done).
    fn of(value: &serde_json::Value) -> Claim {
        serde_json::from_value(value["state"].clone()).unwrap_or(Claim::Done)
    }
}

/// A door's pending list: `{seen key: {inbound, at, seq}}`.
type PendingList = serde_json::Map<String, serde_json::Value>;

/// Where a pending entry stands in the order messages were put on the list, whatever the
/// servers' clocks say (a list shared by servers whose clocks differ, or a clock stepped back):
/// entries listed before the sequence was kept (no `seq`) come first, by time; not the order of
/// their keys as text ("10" before "9").
fn listed_order(entry: &serde_json::Value) -> (bool, u64) {
    match entry["seq"].as_u64().unwrap_or(0) {
        0 => (false, entry["at"].as_u64().unwrap_or(0)),
        seq => (true, seq),
    }
}

/// Puts the entries of `before` that `list` lacks ahead of `list`'s own (they were accepted
/// before the upgrade), numbering all in that order; returns whether any was added.
fn merge_before(list: &mut PendingList, before: &PendingList) -> bool {
    let sorted = |entries: &PendingList| {
        let mut entries: Vec<(String, serde_json::Value)> = entries
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        entries.sort_by(|a, b| (listed_order(&a.1), &a.0).cmp(&(listed_order(&b.1), &b.0)));
        entries
    };
    let mut added: Vec<_> = sorted(before);
    added.retain(|(seen, _)| !list.contains_key(seen));
    if added.is_empty() {
        return false;
    }
    let mut merged = PendingList::new();
    for (seq, (seen, mut entry)) in added.into_iter().chain(sorted(list)).enumerate() {
        if let Some(entry) = entry.as_object_mut() {
            entry.insert("seq".into(), serde_json::json!(seq + 1));
        }
        merged.insert(seen, entry);
    }
    *list = merged;
    true
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a chat door asks of whoever performs: one performance of `intent`, with the `reply`
/// prop and its observer, continuing `previous` when the thread had one. Continued, `intent`
/// arrives as a message from `from` (outside content, never a director note).
pub struct Request {
    pub door: String,
    /// The message, labelled and fenced as untrusted data ([`intent`]).
    pub intent: String,
    /// Who wrote it, as the log names them ([`sender`]).
    pub from: String,
    pub previous: Option<String>,
    pub reply: Arc<dyn Prop>,
    /// The `send` prop, where the door allows other chats (`send = [...]`).
    pub send: Option<Arc<dyn Prop>>,
    pub observer: Arc<dyn Observer>,
}

/// Starts performances for a chat door (the door daemon's launcher; tests drive the kernel
/// loop with a scripted model). Returns once the performance has ended, with how; an error
/// means nothing was performed, so the message may be tried again.
#[async_trait]
pub trait Performer: Send + Sync {
    async fn perform(&self, request: Request) -> Result<Performed, ChannelError>;
}

/// A performance a message started, once it has ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Performed {
    pub id: String,
    pub outcome: Outcome,
}

/// How many times a message's performance is tried before its sender is told it failed: a
/// start that fails (the stage cannot be cast, the log cannot be opened) performed nothing, so
/// it is tried again after the outbox's first wait, doubling.
pub const START_ATTEMPTS: u32 = 3;

/// What [`ChatDoor::defer`] did with a command that arrived while its door drained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deferral {
    /// Kept for the next server: answer "deferred".
    Kept,
    /// Claimed already (Discord sent it twice, or another server took it).
    Claimed,
    /// Over the door's rate or its sender's: not kept; tell the sender to send it again.
    Limited,
}

/// What became of one inbound message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Performed as this performance.
    Performed(String),
    /// Its performance ended badly (`performance`), or could not start in [`START_ATTEMPTS`]
    /// tries (`None`): the sender was told so, once, through the outbox.
    Failed {
        performance: Option<String>,
    },
    /// A stranger: sent this pairing code, performed nothing.
    Pairing(String),
    /// A stranger waiting for approval, or over a limit (told once): nothing performed.
    Ignored(Admission),
    Duplicate,
}

/// What a retake found when it went to take over a pending message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TakeOver {
    /// Taken: this process holds its claim at this version.
    Taken(i64),
    /// No longer waiting (performed, or started meanwhile): nothing to do for it.
    NotClaimed,
    /// Another process retakes it (its retake record was there first, or its claim changed
    /// hands meanwhile).
    HeldElsewhere,
}

/// One chat door: its gate, its outbox, and who performs.
pub struct ChatDoor {
    pub door: String,
    pub store: Arc<dyn Store>,
    pub gate: Gate,
    pub outbox: Arc<Outbox>,
    pub performer: Arc<dyn Performer>,
}

impl ChatDoor {
    /// Handles one message: once, if let in, as the thread's next performance.
    pub async fn handle(&self, inbound: &Inbound) -> Result<Handled, ChannelError> {
        let seen = self.seen(inbound);
        if self.claimed_before_stages(inbound).await?
            || !self
                .store
                .put_if(SEEN_SCOPE, &seen, None, &Claim::Claimed.value())
                .await?
        {
            return Ok(Handled::Duplicate);
        }
        self.pend(&seen, Some(inbound)).await?;
        // A value written only if absent is at its first version.
        self.claimed(&seen, inbound, FIRST_VERSION).await
    }

    /// Takes a Discord command that arrived while the door drains, for the next server to
    /// perform: claimed and left pending like any message (retaken after [`RETAKE_GRACE`] by the
    /// door's next listener), with its interaction kept so that its reply edits the deferred
    /// answer. Within the door's limits only ([`Gate::may_defer`]): each one kept grows the
    /// door's pending list.
    pub async fn defer(
        &self,
        inbound: &Inbound,
        followup: &Followup,
    ) -> Result<Deferral, ChannelError> {
        if !self.gate.may_defer(inbound, Instant::now()) {
            tracing::info!(door = %self.door, sender = %inbound.sender_id, "a Discord command arriving while the door drains is over the door's limits: not kept; raise rate or sender_rate if this is regular traffic");
            return Ok(Deferral::Limited);
        }
        let seen = self.seen(inbound);
        if self.claimed_before_stages(inbound).await?
            || !self
                .store
                .put_if(SEEN_SCOPE, &seen, None, &Claim::Claimed.value())
                .await?
        {
            return Ok(Deferral::Claimed);
        }
        let value = serde_json::to_value(followup)
            .map_err(|e| ChannelError::Setup(format!("an interaction that cannot be kept: {e}")))?;
        self.store.put(FOLLOWUP_SCOPE, &seen, &value, false).await?;
        self.pend(&seen, Some(inbound)).await?;
        tracing::info!(door = %self.door, "a Discord command arrived while the door drains: answered deferred, kept for the next server ({seen})");
        Ok(Deferral::Kept)
    }

    /// Where `inbound`'s answers go: [`Target::of`], with the interaction its first reply edits
    /// when it was deferred ([`ChatDoor::defer`]) and the token is still good; a token past
    /// Discord's limit is reported (log and door status) and the reply goes to the channel.
    async fn target(&self, seen: &str, inbound: &Inbound) -> Result<Target, ChannelError> {
        let mut target = Target::of(inbound);
        if inbound.platform != Channel::Discord {
            return Ok(target);
        }
        let Some(value) = self.store.get(FOLLOWUP_SCOPE, seen).await? else {
            return Ok(target);
        };
        let followup = match serde_json::from_value::<Followup>(value) {
            Ok(followup) => followup,
            Err(e) => {
                tracing::error!(door = %self.door, "a deferred interaction ({seen}) cannot be read back ({e}); its reply goes to the channel");
                return Ok(target);
            }
        };
        let now = unix_now();
        if followup.usable_at(now) {
            target.interaction = Deferred::new(Some(followup));
            return Ok(target);
        }
        let text = format!(
            "a Discord command from {} taken while the door drained was performed {} min after it \
             arrived, past the 15 minutes Discord keeps its interaction: its deferred answer \
             stays unanswered and the reply goes to the channel as a new message ({seen})",
            inbound.sender_id,
            now.saturating_sub(followup.at) / 60
        );
        tracing::warn!(door = %self.door, "{text}");
        let now_ms = i64::try_from(now.saturating_mul(1000)).unwrap_or(i64::MAX);
        if let Err(e) = improv_door::status::notice(
            self.store.as_ref(),
            self.stage(),
            &self.door,
            now_ms,
            &text,
        )
        .await
        {
            tracing::warn!(door = %self.door, "the notice could not be kept in the door's status: {e}");
        }
        Ok(target)
    }

    /// [`ChatDoor::retake_until`] for a caller that never stops it midway.
    pub async fn retake(&self, grace: Duration) -> Result<Vec<Handled>, ChannelError> {
        self.retake_until(grace, &CancellationToken::new()).await
    }

    /// Performs the claims of this door that never started and are older than `grace` (a
    /// process died between accepting them and performing them, or a Discord command was
    /// deferred while a door drained), each once. Each is taken over just before it is
    /// performed, so a process that dies midway leaves the rest pending for the next one; no
    /// more are taken than the gate has free places (the rest wait for the next look rather
    /// than be turned away as busy); a thread's messages run in the order they came, threads
    /// side by side, up to [`RETAKE_AT_ONCE`] (and the door's `max_running`). Once `cancel`
    /// fires nothing more is taken: the ones under way run to their end, the rest stay pending.
    /// Returns what became of each one performed.
    pub async fn retake_until(
        &self,
        grace: Duration,
        cancel: &CancellationToken,
    ) -> Result<Vec<Handled>, ChannelError> {
        let mut due = self.due(grace).await?;
        due.truncate(self.gate.free());
        let at_once = RETAKE_AT_ONCE.min(self.gate.max_running().max(1) as usize);
        let results: Vec<_> = futures::stream::iter(by_thread(&self.door, due))
            .map(|thread| self.retake_thread(thread, cancel))
            .buffer_unordered(at_once)
            .collect()
            .await;
        // Each retaken message runs to its end: one that fails does not cut the others short.
        let mut handled = Vec::new();
        for (seen, result) in results.into_iter().flatten() {
            match result {
                Ok(h) => handled.push(h),
                Err(e) => {
                    tracing::error!(door = %self.door, "a retaken message ({seen}) was not handled: {e}")
                }
            }
        }
        Ok(handled)
    }

    /// Takes over and performs one thread's due messages in turn, until `cancel` fires or one
    /// cannot be taken over (another process holds it, or the store failed: the rest stay
    /// pending).
    async fn retake_thread(
        &self,
        thread: Vec<(String, Inbound)>,
        cancel: &CancellationToken,
    ) -> Vec<(String, Result<Handled, ChannelError>)> {
        let mut results = Vec::new();
        for (seen, inbound) in thread {
            if cancel.is_cancelled() {
                break;
            }
            let version = match self.take_over(&seen).await {
                Ok(TakeOver::Taken(version)) => version,
                Ok(TakeOver::NotClaimed) => continue,
                // The thread's next message needs this one's context: it waits for the next
                // look rather than run before this one ends.
                Ok(TakeOver::HeldElsewhere) => break,
                Err(e) => {
                    results.push((seen, Err(e)));
                    break;
                }
            };
            tracing::info!(door = %self.door, "retaking a message accepted but never performed ({seen})");
            let handled = self.claimed(&seen, &inbound, version).await;
            results.push((seen, handled));
        }
        results
    }

    /// The pending messages of this door older than `grace`, oldest first; one that cannot be
    /// read back is taken off the list (logged).
    async fn due(&self, grace: Duration) -> Result<Vec<(String, Inbound)>, ChannelError> {
        self.adopt_pending().await?;
        let pending = self.store.get(PENDING_SCOPE, &self.pending_key()).await?;
        let Some(pending) = pending.as_ref().and_then(|v| v.as_object()) else {
            return Ok(Vec::new());
        };
        let due = unix_now().saturating_sub(grace.as_secs());
        let mut found = Vec::new();
        for (seen, entry) in pending {
            if entry["at"].as_u64().is_none_or(|at| at > due) {
                continue;
            }
            let order = listed_order(entry);
            match serde_json::from_value::<Inbound>(entry["inbound"].clone()) {
                Ok(inbound) => found.push((order, seen.clone(), inbound)),
                Err(e) => {
                    tracing::error!(door = %self.door, "a pending message ({seen}) cannot be read back: {e}");
                    self.pend(seen, None).await?;
                }
            }
        }
        found.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        Ok(found
            .into_iter()
            .map(|(_, seen, inbound)| (seen, inbound))
            .collect())
    }

    /// Takes over `seen`'s claim if it never started: off the pending list, its one-time
    /// retake record written, and its claim moved to a version this process holds.
    async fn take_over(&self, seen: &str) -> Result<TakeOver, ChannelError> {
        // Off the list first: whatever happens next, it is retaken once.
        self.pend(seen, None).await?;
        let Some(state) = self.store.get_versioned(SEEN_SCOPE, seen).await? else {
            return Ok(TakeOver::NotClaimed);
        };
        if Claim::of(&state.value) != Claim::Claimed {
            return Ok(TakeOver::NotClaimed);
        }
        // Two servers restarting on one store both find it pending: one retakes it.
        let first = serde_json::json!({ "at": unix_now() });
        if !self.store.put(RETAKE_SCOPE, seen, &first, true).await? {
            return Ok(TakeOver::HeldElsewhere);
        }
        // The claim changes hands: the handler that took it first (stuck in this process
        // since before a reload, or in a process still alive) can no longer start it.
        let taken_over = self
            .store
            .put_if(
                SEEN_SCOPE,
                seen,
                Some(state.version),
                &Claim::Claimed.value(),
            )
            .await?;
        Ok(if taken_over {
            TakeOver::Taken(state.version + 1)
        } else {
            TakeOver::HeldElsewhere
        })
    }

    /// The store's key for `inbound`'s claim: the stage's ([`kept::key`]).
    fn seen(&self, inbound: &Inbound) -> String {
        kept::key(self.stage(), &self.seen_before_stages(inbound))
    }

    /// `inbound`'s claim's key before the stage was in it.
    fn seen_before_stages(&self, inbound: &Inbound) -> String {
        format!(
            "{}/{}/{}/{}",
            self.door,
            inbound.platform.as_str(),
            inbound.conversation,
            inbound.message_id
        )
    }

    /// Whether `inbound` was claimed before claims had a stage (a redelivery across the
    /// upgrade): a duplicate, whichever stage's door reads it.
    async fn claimed_before_stages(&self, inbound: &Inbound) -> Result<bool, ChannelError> {
        let bare = self.seen_before_stages(inbound);
        Ok(self.store.get(SEEN_SCOPE, &bare).await?.is_some())
    }

    /// The stage this door is of: what its records are kept under.
    fn stage(&self) -> &StageKey {
        self.outbox.stage()
    }

    /// The store's key of the door's pending list.
    fn pending_key(&self) -> String {
        kept::key(self.stage(), &self.door)
    }

    /// Adds `seen` to the door's pending list (with `inbound`), or takes it off (`None`), once
    /// the list kept before the stage was in its key is merged in ([`Self::adopt_pending`]).
    async fn pend(&self, seen: &str, inbound: Option<&Inbound>) -> Result<(), ChannelError> {
        self.adopt_pending().await?;
        self.change_pending(|list| match inbound {
            Some(inbound) => {
                // After every entry listed: the order of the list, whatever the clock.
                let seq = list.values().filter_map(|e| e["seq"].as_u64()).max();
                let seq = seq.unwrap_or(0) + 1;
                let entry = serde_json::json!({ "inbound": inbound, "at": unix_now(), "seq": seq });
                list.insert(seen.to_string(), entry);
                true
            }
            None => list.remove(seen).is_some(),
        })
        .await
    }

    /// Changes the stage's pending list with `change` (which says whether it changed it): read,
    /// changed and written back only if no one wrote it since, else read again.
    async fn change_pending(
        &self,
        mut change: impl FnMut(&mut PendingList) -> bool,
    ) -> Result<(), ChannelError> {
        loop {
            let read = self
                .store
                .get_versioned(PENDING_SCOPE, &self.pending_key())
                .await?;
            let version = read.as_ref().map(|r| r.version);
            let mut list = match read.map(|r| r.value) {
                Some(serde_json::Value::Object(list)) => list,
                _ => PendingList::new(),
            };
            if !change(&mut list) {
                return Ok(());
            }
            let list = serde_json::Value::Object(list);
            if self
                .store
                .put_if(PENDING_SCOPE, &self.pending_key(), version, &list)
                .await?
            {
                return Ok(());
            }
        }
    }

    /// Merges the pending list kept under the door's bare name before stages were in the key
    /// (its entries name their claims, kept under bare keys too) into the stage's own, ahead of
    /// the stage's entries. The bare list is first replaced by a marker naming the stage and
    /// holding the entries ([`kept::ADOPTED`], [`kept::ADOPTED_VALUE`]), written only over the
    /// version read: of two stages upgraded at once (each with a chat door of this name) one
    /// adopts, and only it merges; the other never lists, so never retakes through its own bot,
    /// a message sent to the first. Every server of the adopting stage merges from the marker
    /// (one that lost the race to it, or one killed between the marker and the merge), then
    /// takes the entries out of it. Merged, not copied as [`kept::get`] copies: the stage's own
    /// list exists as soon as one message was handled, and a copy only-if-absent would then drop
    /// the old entries, whose claims make every redelivery a duplicate (never performed).
    /// Merging twice adds nothing the second time.
    async fn adopt_pending(&self) -> Result<(), ChannelError> {
        loop {
            let Some(before) = self.store.get_versioned(PENDING_SCOPE, &self.door).await? else {
                return Ok(());
            };
            let (marker, version) = if before.value.get(kept::ADOPTED).is_some() {
                (before.value, before.version)
            } else {
                let marker = serde_json::json!({
                    kept::ADOPTED: self.stage().id(),
                    kept::ADOPTED_VALUE: before.value,
                });
                if !self
                    .store
                    .put_if(PENDING_SCOPE, &self.door, Some(before.version), &marker)
                    .await?
                {
                    // Another server marked it first: read which stage it names.
                    continue;
                }
                tracing::info!(door = %self.door, "stage {} took the pending messages kept before stages were in the key", self.stage().id());
                // A value written over version n is at version n + 1.
                (marker, before.version + 1)
            };
            return self.merge_adopted(&marker, version).await;
        }
    }

    /// Merges the entries `marker` (at `version`, under the door's bare name) holds into the
    /// stage's own list when it names this stage, then takes them out of it (only over that
    /// version) so that no later look merges them again.
    async fn merge_adopted(
        &self,
        marker: &serde_json::Value,
        version: i64,
    ) -> Result<(), ChannelError> {
        if marker[kept::ADOPTED].as_str() != Some(self.stage().id().as_str()) {
            return Ok(());
        }
        let Some(entries) = marker[kept::ADOPTED_VALUE].as_object() else {
            return Ok(());
        };
        self.change_pending(|list| merge_before(list, entries))
            .await?;
        let merged = serde_json::json!({ kept::ADOPTED: self.stage().id() });
        self.store
            .put_if(PENDING_SCOPE, &self.door, Some(version), &merged)
            .await?;
        Ok(())
    }

    /// Moves `seen`'s claim to `state`.
    async fn mark(&self, seen: &str, state: Claim) -> Result<(), ChannelError> {
        self.store
            .put(SEEN_SCOPE, seen, &state.value(), false)
            .await?;
        Ok(())
    }

    /// A claimed message, held at version `held` of its claim: let in or turned away,
    /// performed, and its claim marked done.
    async fn claimed(
        &self,
        seen: &str,
        inbound: &Inbound,
        held: i64,
    ) -> Result<Handled, ChannelError> {
        let target = self.target(seen, inbound).await?;
        let handled = self.admitted(seen, inbound, held, &target).await?;
        if handled == Handled::Duplicate {
            return Ok(handled);
        }
        self.close_deferred(inbound, &target, &handled).await;
        self.mark(seen, Claim::Done).await?;
        self.pend(seen, None).await?;
        Ok(handled)
    }

    /// The gate's answer to a claimed message, and its performance when let in.
    async fn admitted(
        &self,
        seen: &str,
        inbound: &Inbound,
        held: i64,
        target: &Target,
    ) -> Result<Handled, ChannelError> {
        match self.gate.admit(inbound, Instant::now()).await? {
            Admission::Allowed => {}
            Admission::Pair(code) => {
                self.send_code(inbound, target, &code).await?;
                return Ok(Handled::Pairing(code));
            }
            refused @ (Admission::Limited | Admission::Busy) => {
                return self.refuse(inbound, target, refused).await;
            }
            other => return Ok(Handled::Ignored(other)),
        }
        let Some(_running) = self.gate.start(inbound) else {
            return self.refuse(inbound, target, Admission::Busy).await;
        };
        let thread = thread_key(&self.door, inbound);
        // The stage's own thread, or one kept before the stage was in the key, adopted.
        let previous = kept::get(self.store.as_ref(), THREAD_SCOPE, self.stage(), &thread)
            .await?
            .and_then(|v| v["performance"].as_str().map(str::to_string));
        // Started only by whoever still holds the claim: a retake took it from a handler
        // that was slow to get here, and that handler performs nothing.
        if !self
            .store
            .put_if(SEEN_SCOPE, seen, Some(held), &Claim::Started.value())
            .await?
        {
            tracing::info!(door = %self.door, "a message was retaken while its handler was starting it ({seen}); performed by the retake only");
            return Ok(Handled::Duplicate);
        }
        self.pend(seen, None).await?;
        let performed = match self.perform(inbound, target, previous).await {
            Ok(performed) => performed,
            Err(e) => {
                tracing::error!(door = %self.door, "a message from {} could not be performed: {e}", inbound.sender_id);
                // Nothing replied: the notice may answer a deferred interaction.
                self.tell_failed(inbound, target).await;
                return Ok(Handled::Failed { performance: None });
            }
        };
        let value = serde_json::json!({ "performance": performed.id });
        kept::put(
            self.store.as_ref(),
            THREAD_SCOPE,
            self.stage(),
            &thread,
            &value,
            false,
        )
        .await?;
        if matches!(performed.outcome, Outcome::Done | Outcome::Converged) {
            return Ok(Handled::Performed(performed.id));
        }
        tracing::warn!(door = %self.door, performance = %performed.id, "a message's performance ended {}", performed.outcome.as_str());
        // A deferred answer its reply did not take (it never replied) is edited by the notice.
        self.tell_failed(inbound, target).await;
        Ok(Handled::Failed {
            performance: Some(performed.id),
        })
    }

    /// A message a limit turned away: nothing performed, and its sender told politely, once
    /// until a message of theirs is performed again ([`Gate::tell_once`]).
    async fn refuse(
        &self,
        inbound: &Inbound,
        target: &Target,
        why: Admission,
    ) -> Result<Handled, ChannelError> {
        // The director sees every message a limit turned away: a limit set too low for the
        // traffic otherwise reads as messages lost (nothing performed, nothing logged).
        tracing::info!(door = %self.door, sender = %inbound.sender_id, "a message was turned away by the door's limits ({why:?}); raise rate, sender_rate or max_running if this is regular traffic");
        if self.gate.tell_once(inbound).await? {
            let text = match why {
                Admission::Busy => {
                    "I am busy with other messages right now, so this one was not handled. \
                     Please send it again in a little while."
                }
                _ => {
                    "You are sending messages faster than I can take them, so this one was \
                     not handled. Please wait a little and send it again."
                }
            };
            self.notify(inbound, target, "limited", text).await;
        }
        Ok(Handled::Ignored(why))
    }

    /// Performs `inbound`, trying a start that fails again ([`START_ATTEMPTS`]).
    async fn perform(
        &self,
        inbound: &Inbound,
        target: &Target,
        previous: Option<String>,
    ) -> Result<Performed, ChannelError> {
        let retry = self.outbox.retry();
        let mut wait = retry.first;
        let mut attempt = 1;
        loop {
            let (reply, observer) = ReplyProp::new(self.outbox.clone(), target.clone());
            let targets = self.outbox.targets();
            let send = (!targets.is_empty()).then(|| {
                let send = SendProp::new(self.outbox.clone(), targets.to_vec(), observer.clone());
                Arc::new(send) as Arc<dyn Prop>
            });
            let request = Request {
                door: self.door.clone(),
                intent: intent(&self.door, inbound),
                from: sender(inbound),
                previous: previous.clone(),
                reply: Arc::new(reply),
                send,
                observer,
            };
            match self.performer.perform(request).await {
                Err(e) if attempt < START_ATTEMPTS => {
                    tracing::warn!(door = %self.door, "a performance did not start ({e}); trying again in {wait:?}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(retry.max);
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// Tells the sender their message came to nothing, once per message: a failure is never
    /// silent on the platform, and never repeated.
    async fn tell_failed(&self, inbound: &Inbound, target: &Target) {
        self.notify(
            inbound,
            target,
            "failed",
            "Sorry, something went wrong and your message was not handled. You can send it again \
             later.",
        )
        .await;
    }

    /// Answers `inbound` with `text` through the outbox, keyed by `what` and the message, so
    /// one message gets each notice once however often it is handled.
    async fn notify(&self, inbound: &Inbound, target: &Target, what: &str, text: &str) {
        let interaction = target.interaction.take();
        self.notify_with(inbound, target, what, text, interaction)
            .await;
    }

    /// [`ChatDoor::notify`], editing `interaction` (a deferred answer) when there is one. A
    /// notice refused for good gives the interaction back, so the closing word
    /// ([`ChatDoor::close_deferred`]) still answers it, as a refused reply does.
    async fn notify_with(
        &self,
        inbound: &Inbound,
        target: &Target,
        what: &str,
        text: &str,
        interaction: Option<Followup>,
    ) {
        let message = format!(
            "{what}/{}/{}/{}/{}",
            self.door,
            inbound.platform.as_str(),
            inbound.conversation,
            inbound.message_id
        );
        // The stage's: another stage's door of this name notifies the same message on its own.
        let key = OutboxKey {
            performance: kept::key(self.stage(), &message),
            seq: 0,
        };
        let body = Body {
            text: text.into(),
            reply_to: target.reply_to.clone(),
            interaction,
        };
        match self.outbox.send(key, &target.conversation, &body).await {
            Ok(Delivery::Refused(reason)) => {
                tracing::warn!(door = %self.door, "the {what} notice was refused: {reason}");
                target.interaction.put_back(body.interaction);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(door = %self.door, "the {what} notice is queued: {e}"),
        }
    }

    /// Edits a deferred ("thinking") answer that nothing answered (no reply, no notice: a
    /// sender awaiting pairing, a limit already told, a performance that ended without
    /// replying) with a short word on what became of the message, once (keyed by the message),
    /// so Discord does not show "thinking" until it gives up.
    async fn close_deferred(&self, inbound: &Inbound, target: &Target, handled: &Handled) {
        let Some(interaction) = target.interaction.take() else {
            return;
        };
        let text = match handled {
            Handled::Performed(_) => "Done; there was nothing to reply.",
            Handled::Pairing(_) | Handled::Ignored(Admission::Pair(_) | Admission::Waiting) => {
                "I don't know you yet, so this was not handled. Ask the director of this stage \
                 to run: improv door pair CODE (the code I sent you)."
            }
            Handled::Ignored(_) => {
                "I am too busy to take this one right now, so it was not handled. Please send it \
                 again in a little while."
            }
            Handled::Failed { .. } | Handled::Duplicate => {
                "Sorry, something went wrong and your message was not handled. You can send it \
                 again later."
            }
        };
        self.notify_with(inbound, target, "deferred", text, Some(interaction))
            .await;
    }

    /// The code goes out through the outbox like any message, keyed by the sender.
    async fn send_code(
        &self,
        inbound: &Inbound,
        target: &Target,
        code: &str,
    ) -> Result<(), ChannelError> {
        let pairing = format!("pairing/{}/{}", self.door, inbound.sender_id);
        let key = OutboxKey {
            performance: kept::key(self.stage(), &pairing),
            seq: 0,
        };
        let body = Body {
            text: format!(
                "I don't know you yet. Ask the director of this stage to run: improv door pair {code}"
            ),
            reply_to: target.reply_to.clone(),
            interaction: target.interaction.take(),
        };
        match self.outbox.send(key, &target.conversation, &body).await {
            // The deferred answer is still to be edited (the closing word says to pair).
            Ok(Delivery::Refused(reason)) => {
                tracing::warn!(door = %self.door, "the pairing code was refused: {reason}");
                target.interaction.put_back(body.interaction);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(door = %self.door, "the pairing code is queued: {e}"),
        }
        Ok(())
    }
}

/// `due` grouped by thread, each group in its order, the groups in the order of their first.
fn by_thread(door: &str, due: Vec<(String, Inbound)>) -> Vec<Vec<(String, Inbound)>> {
    let mut groups: Vec<Vec<(String, Inbound)>> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for (seen, inbound) in due {
        let key = thread_key(door, &inbound);
        let at = *index.entry(key).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[at].push((seen, inbound));
    }
    groups
}

/// The thread a message belongs to: the chat (Telegram, Discord channel) or the Slack thread.
fn thread_key(door: &str, inbound: &Inbound) -> String {
    match &inbound.thread {
        Some(t) => format!("{door}/{}/{}", inbound.conversation, t),
        None => format!("{door}/{}", inbound.conversation),
    }
}

/// Who wrote `inbound`, as the actor and the log are told: the handle, else the id, kept to
/// one plain word. It stands outside the fence, so a name carrying prose (or a fence) is not
/// shown: the id, or `someone`, is.
pub fn sender(inbound: &Inbound) -> String {
    let plain = |s: &&String| {
        !s.is_empty()
            && s.len() <= 64
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '@' | '_' | '-' | '.'))
    };
    inbound
        .sender_name
        .as_ref()
        .filter(plain)
        .or(Some(&inbound.sender_id).filter(plain))
        .cloned()
        .unwrap_or_else(|| "someone".into())
}

/// The text of a message's performance, first or next in its thread: who wrote through which
/// door, then their words fenced as untrusted data by the door's one fence
/// ([`improv_door::fence::untrusted`]), so the actor weighs them and does not obey them as the
/// director's, and no line of them can close the fence.
pub fn intent(door: &str, inbound: &Inbound) -> String {
    let who = sender(inbound);
    improv_door::fence::untrusted(
        &format!(
            "A message came in through the door `{door}` ({}) from {who}. Keep to the stage's \
             intent and edges, and answer with the `reply` prop.",
            inbound.platform.as_str()
        ),
        &format!("message from {who}"),
        &inbound.text,
    )
}
