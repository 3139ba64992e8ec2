//! Who may come in through a chat door: the door's `allow` list and the senders the director
//! paired; a stranger gets a one-time pairing code (`improv door pair CODE`) and no performance;
//! per-door and per-sender rate limits (token buckets) and `max_running` bound what anyone can
//! make the stage do, as the stage file's `rate`, `sender_rate` and `max_running` set them.
//!
//! Pairings, codes and a sender's code are the door's stage's ([`improv_door::kept::key`]), so
//! two stages sharing a store, each with a chat door of one name, never let in each other's
//! paired senders or take each other's codes. A pairing approved before the stage was in the key
//! is adopted by the first stage whose door reads it ([`improv_door::kept::get`]); a code minted
//! before is paired by the first stage's director who gives it (it names no stage).

use crate::{ChannelError, Inbound};
use improv_door::kept;
use improv_store::{StageKey, Store};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Store scopes: senders the director paired, per door; codes by value; a sender's code.
const PAIRED_SCOPE: &str = "door.paired";
const CODE_SCOPE: &str = "door.pairing_code";
const SENDER_CODE_SCOPE: &str = "door.pairing_sender";

/// Pairing codes are kept 30 days: a code the director has not used by then is forgotten (the
/// stranger gets a new one at their next message); an approved pairing is kept for good.
/// Strangers cannot grow them past the count: the oldest go first.
pub const EXPIRY: [improv_door::expiry::Expiry; 2] = [
    improv_door::expiry::Expiry {
        scope: CODE_SCOPE,
        keep_for: Duration::from_secs(30 * 24 * 3600),
        max: 100_000,
    },
    improv_door::expiry::Expiry {
        scope: SENDER_CODE_SCOPE,
        keep_for: Duration::from_secs(30 * 24 * 3600),
        max: 100_000,
    },
];

/// A token bucket's shape: `burst` messages at once, then one every `every`.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub burst: u32,
    pub every: Duration,
}

impl From<improv_stage::Rate> for Rate {
    /// `rate = "30/min"`: 30 at once, then one every 2 s.
    fn from(r: improv_stage::Rate) -> Self {
        Rate {
            burst: r.count,
            every: r.refill(),
        }
    }
}

/// The limits of one door.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Everyone together, strangers included: bounds the pairing codes a flood can mint too.
    pub door: Rate,
    pub sender: Rate,
    /// How many of the door's performances may run at once.
    pub max_running: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            door: Rate {
                burst: 30,
                every: Duration::from_secs(2),
            },
            sender: Rate {
                burst: 5,
                every: Duration::from_secs(10),
            },
            max_running: 4,
        }
    }
}

impl Limits {
    /// The limits the stage file gives `door` (`rate`, `sender_rate`, `max_running`), the
    /// defaults where it gives none.
    pub fn of(door: &improv_stage::Door) -> Self {
        let d = Limits::default();
        let sender_rate = match &door.kind {
            improv_stage::DoorKind::Channel(c) => c.sender_rate,
            _ => None,
        };
        Limits {
            door: door.rate.map_or(d.door, Rate::from),
            sender: sender_rate.map_or(d.sender, Rate::from),
            max_running: door.max_running.unwrap_or(d.max_running),
        }
    }
}

/// What to do with a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Perform it.
    Allowed,
    /// A stranger's first message: send them this code to give the director.
    Pair(String),
    /// A stranger who already has a code: nothing is sent, nothing performed.
    Waiting,
    /// Over a rate limit: nothing performed (the sender is told once, see [`Gate::tell_once`]).
    Limited,
    /// As many of the door's performances as `max_running` allows are running: nothing
    /// started (the sender is told once).
    Busy,
}

/// A place among the door's running performances, held until the performance ends.
pub type Running = tokio::sync::OwnedSemaphorePermit;

/// A door's gate.
pub struct Gate {
    stage: StageKey,
    door: String,
    allow: Vec<String>,
    store: Arc<dyn Store>,
    limits: Limits,
    buckets: Mutex<Buckets>,
    running: Arc<tokio::sync::Semaphore>,
    /// Known senders told they were over a limit since they were last let in.
    told: Mutex<HashSet<String>>,
}

impl Gate {
    pub fn new(
        stage: StageKey,
        door: &str,
        allow: &[String],
        store: Arc<dyn Store>,
        limits: Limits,
    ) -> Self {
        Gate {
            stage,
            door: door.to_string(),
            allow: allow.to_vec(),
            store,
            limits,
            buckets: Mutex::new(Buckets::default()),
            running: Arc::new(tokio::sync::Semaphore::new(limits.max_running as usize)),
            told: Mutex::default(),
        }
    }

    /// How many of the door's performances may run at once (`max_running`).
    pub fn max_running(&self) -> u32 {
        self.limits.max_running
    }

    /// How many more of the door's performances may start now.
    pub fn free(&self) -> usize {
        self.running.available_permits()
    }

    /// A place for one more performance of `inbound`'s, or `None` while `max_running` of
    /// them run. Once it starts, its sender may be told of a limit again.
    pub fn start(&self, inbound: &Inbound) -> Option<Running> {
        let running = self.running.clone().try_acquire_owned().ok()?;
        self.told
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&inbound.sender_id);
        Some(running)
    }

    /// Whether to tell `inbound`'s sender that a limit turned their message away: only a
    /// known sender (a flood of strangers gets no answers), and once until a message of theirs
    /// starts a performance again, so a sender over a limit is not answered message for message.
    pub async fn tell_once(&self, inbound: &Inbound) -> Result<bool, ChannelError> {
        if !self.known(inbound).await? {
            return Ok(false);
        }
        let mut told = self.told.lock().unwrap_or_else(|e| e.into_inner());
        if told.len() >= Buckets::MAX {
            told.clear();
        }
        Ok(told.insert(inbound.sender_id.clone()))
    }

    /// Whether `inbound` may be kept for the next server while the door drains
    /// ([`crate::conversation::ChatDoor::defer`]): within the door's rate and its sender's, as
    /// a message let in would be, so a flood of commands during a drain stays as bounded as one
    /// while the door is open. Spends both limits; nothing is minted or read from the store.
    pub fn may_defer(&self, inbound: &Inbound, now: Instant) -> bool {
        self.take(None, now) && self.take(Some(&inbound.sender_id), now)
    }

    /// Decides on `inbound`, arrived at `now`.
    pub async fn admit(&self, inbound: &Inbound, now: Instant) -> Result<Admission, ChannelError> {
        if !self.take(None, now) {
            return Ok(Admission::Limited);
        }
        if !self.known(inbound).await? {
            return self.stranger(inbound).await;
        }
        Ok(if self.take(Some(&inbound.sender_id), now) {
            Admission::Allowed
        } else {
            Admission::Limited
        })
    }

    /// On the `allow` list (a user id, or `@username` in any case), or paired. Read only: it
    /// spends no limit and mints no code.
    pub async fn known(&self, inbound: &Inbound) -> Result<bool, ChannelError> {
        let listed = self.allow.iter().any(|a| {
            *a == inbound.sender_id
                || inbound
                    .sender_name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(a))
        });
        if listed {
            return Ok(true);
        }
        let sender = sender_key(&self.door, &inbound.sender_id);
        let paired = kept::get(self.store.as_ref(), PAIRED_SCOPE, &self.stage, &sender).await?;
        Ok(paired.is_some())
    }

    /// A stranger's first message mints their code; later ones get nothing.
    async fn stranger(&self, inbound: &Inbound) -> Result<Admission, ChannelError> {
        let code = new_code();
        let sender = kept::key(&self.stage, &sender_key(&self.door, &inbound.sender_id));
        let first = self
            .store
            .put(SENDER_CODE_SCOPE, &sender, &code.clone().into(), true)
            .await?;
        if !first {
            return Ok(Admission::Waiting);
        }
        let record = serde_json::json!({
            "door": self.door,
            "sender_id": inbound.sender_id,
            "sender_name": inbound.sender_name,
            "platform": inbound.platform,
            "approved": false,
        });
        let key = kept::key(&self.stage, &code);
        if !self.store.put(CODE_SCOPE, &key, &record, true).await? {
            return Err(ChannelError::Setup(format!(
                "pairing code {code} collided with an existing one; the sender will get a new one next time"
            )));
        }
        Ok(Admission::Pair(code))
    }

    fn take(&self, sender: Option<&str>, now: Instant) -> bool {
        let rate = if sender.is_some() {
            self.limits.sender
        } else {
            self.limits.door
        };
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        buckets.take(sender.unwrap_or(""), rate, now)
    }
}

/// Token buckets by sender (`""`: the door). At most [`Buckets::MAX`] are kept: full ones are
/// forgotten first, since a full bucket is what a new one would be.
#[derive(Default)]
struct Buckets(HashMap<String, Bucket>);

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Buckets {
    const MAX: usize = 10_000;

    fn take(&mut self, who: &str, rate: Rate, now: Instant) -> bool {
        if self.0.len() >= Self::MAX {
            self.0
                .retain(|_, b| level(b, rate, now) < f64::from(rate.burst));
        }
        let bucket = self.0.entry(who.to_string()).or_insert(Bucket {
            tokens: f64::from(rate.burst),
            at: now,
        });
        bucket.tokens = level(bucket, rate, now);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

fn level(b: &Bucket, rate: Rate, now: Instant) -> f64 {
    let refill =
        now.saturating_duration_since(b.at).as_secs_f64() / rate.every.as_secs_f64().max(1e-3);
    (b.tokens + refill).min(f64::from(rate.burst))
}

fn sender_key(door: &str, sender_id: &str) -> String {
    format!("{door}/{sender_id}")
}

/// Ten characters from an alphabet without look-alikes (no 0/O, 1/I/L): 50 bits, easy to type.
fn new_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
    (0..10)
        .map(|_| char::from(ALPHABET[rand::random_range(0..ALPHABET.len())]))
        .collect()
}

/// A pairing the director approved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paired {
    pub door: String,
    pub sender_id: String,
    pub sender_name: Option<String>,
}

/// Why `improv door pair CODE` did nothing.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error(
        "no pairing code {0}; check it against the message the sender got (codes are case-insensitive)"
    )]
    Unknown(String),
    #[error("pairing code {0} was already used; each code pairs once")]
    Used(String),
    #[error(transparent)]
    Store(#[from] improv_store::StoreError),
}

/// Approves a pairing code of `stage`'s: its sender may come in through its door from now on.
/// Each code works once; another stage's code is unknown here. This is what `improv door pair
/// CODE` runs in the stage's folder.
pub async fn pair(store: &dyn Store, stage: &StageKey, code: &str) -> Result<Paired, PairError> {
    let code = code.trim().to_ascii_uppercase();
    // Minted before codes had a stage: under the code alone, the first stage to pair it takes it.
    let mut key = kept::key(stage, &code);
    let mut found = store.get(CODE_SCOPE, &key).await?;
    if found.is_none() {
        found = store.get(CODE_SCOPE, &code).await?;
        key.clone_from(&code);
    }
    let Some(mut record) = found else {
        return Err(PairError::Unknown(code));
    };
    if record["approved"].as_bool() == Some(true) {
        return Err(PairError::Used(code));
    }
    let text = |k: &str| record[k].as_str().map(str::to_string);
    let paired = Paired {
        door: text("door").unwrap_or_default(),
        sender_id: text("sender_id").unwrap_or_default(),
        sender_name: text("sender_name"),
    };
    let value = serde_json::json!({ "code": code, "sender_name": paired.sender_name });
    let sender = sender_key(&paired.door, &paired.sender_id);
    kept::put(store, PAIRED_SCOPE, stage, &sender, &value, false).await?;
    record["approved"] = true.into();
    store.put(CODE_SCOPE, &key, &record, false).await?;
    Ok(paired)
}
