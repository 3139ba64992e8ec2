//! Webhook deliveries: GitHub's signature (`X-Hub-Signature-256: sha256=HEX`, HMAC-SHA256 of
//! the raw body under the door's secret, compared in constant time by the `hmac` crate), a body
//! size limit, and the delivery id (`X-GitHub-Delivery`) as the idempotency key, so that a
//! redelivery never performs twice, while a delivery whose performance failed to start is
//! given back for the redelivery to start. GitHub's HMAC covers the body only: a captured body
//! re-sent with fresh delivery ids is refused when its payload carries its own event id, and is
//! bounded by the door's [`Limits`] otherwise. The payload reaches the intent fenced as
//! untrusted content.
//!
//! A claim goes `claimed` → `started` (or `failed_to_start`, given back). A claim still
//! `claimed` after [`CLAIM_TIMEOUT_MS`] was left by a server killed before the start, and a
//! redelivery takes it again, under the performance id the claim named, so the launcher's
//! start-once fence refuses it if the dead server had started it after all.

use crate::context::DoorContext;
use crate::error::DoorError;
use crate::limit::{Limits, Permit};
use hmac::{Hmac, KeyInit, Mac};
use improv_store::{Firing, StageKey, Store, StoreError};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The most bytes a delivery may have (GitHub's own limit is 25 MB; a door's intent needs far
/// less, and every byte of it is paid each turn).
pub const MAX_BODY: usize = 256 * 1024;

/// The header with the body's signature.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// The header with the delivery's id.
pub const DELIVERY_HEADER: &str = "x-github-delivery";

/// How long a delivery may stay claimed without its performance starting before a redelivery
/// takes it again. A start takes well under a second; a minute leaves room for a slow store.
pub const CLAIM_TIMEOUT_MS: i64 = 60_000;

/// The most bytes of the payload put in the intent.
const MAX_PAYLOAD_IN_INTENT: usize = 16 * 1024;

/// What a stranger is told whatever went wrong before the signature was checked: an unknown
/// door, a door that takes no webhook, a missing secret, a missing or wrong signature all read
/// the same, so that no one learns which doors exist or how they are set up.
pub const STRANGER_ANSWER: &str = "signature check failed";

/// Why a delivery was refused; each maps to one HTTP status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the delivery has no {SIGNATURE_HEADER} header; sign it with the door's secret")]
    Unsigned,
    #[error("the delivery's signature does not match the body under the door's secret")]
    BadSignature,
    #[error("the delivery has {size} bytes, more than the {MAX_BODY} a door accepts")]
    TooLarge { size: usize },
    #[error("the delivery has no {DELIVERY_HEADER} header (its idempotency key)")]
    NoDeliveryId,
    #[error("the door's secret variable {var} is not set; set it where `improv serve` runs")]
    NoSecret { var: String },
    #[error("there is no webhook door named `{0}`")]
    NoSuchDoor(String),
    /// Over the door's `rate` or `max_running`: nothing started; try again after this.
    #[error(
        "the door is over its `rate` or `max_running`; nothing was started, try again in {}s",
        retry_after.as_secs()
    )]
    Limited { retry_after: std::time::Duration },
    /// The payload's own id (its `key` field) was performed already under another delivery id:
    /// a captured body re-sent.
    #[error("the payload's own `{key}` was performed already under another delivery")]
    Replayed { key: &'static str },
}

impl Refusal {
    /// The HTTP status that says it.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::TooLarge { .. } => 413,
            Refusal::NoDeliveryId => 400,
            Refusal::Limited { .. } => 429,
            Refusal::Replayed { .. } => 409,
            _ if self.to_stranger() => 401,
            _ => 400,
        }
    }

    /// Whether the caller has not shown it knows the door's secret, and so is told only
    /// [`STRANGER_ANSWER`] (the director finds the reason in the log).
    pub fn to_stranger(&self) -> bool {
        matches!(
            self,
            Refusal::Unsigned
                | Refusal::BadSignature
                | Refusal::NoSecret { .. }
                | Refusal::NoSuchDoor(_)
        )
    }
}

/// Checks `signature` (the header's value, `sha256=HEX`) against `body` under `secret`.
pub fn verify(secret: &[u8], body: &[u8], signature: Option<&str>) -> Result<(), Refusal> {
    let signature = signature.ok_or(Refusal::Unsigned)?;
    let hex_sig = signature
        .trim()
        .strip_prefix("sha256=")
        .ok_or(Refusal::BadSignature)?;
    let expected = hex::decode(hex_sig).map_err(|_| Refusal::BadSignature)?;
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).map_err(|_| Refusal::BadSignature)?;
    mac.update(body);
    // verify_slice compares in constant time.
    mac.verify_slice(&expected)
        .map_err(|_| Refusal::BadSignature)
}

/// The signature header value for `body` under `secret` (for senders and tests).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes a key of any length: new_from_slice cannot fail for it.
    let mut mac = match <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// One delivery as it arrived.
#[derive(Clone, Debug)]
pub struct Delivery<'a> {
    pub body: &'a [u8],
    pub signature: Option<&'a str>,
    pub delivery_id: Option<&'a str>,
}

/// What became of an accepted delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// A performance was started for it.
    Started { performance: String },
    /// The same delivery id was accepted before: nothing is performed again.
    Duplicate,
}

/// The store scope of delivery ids seen (`DOOR/ID@STAGE`, [`crate::kept::key`]: a stage's own).
const DELIVERIES: &str = "door.delivery";
/// The store scope of payloads' own ids seen (`DOOR/VALUE@STAGE`): one stage's event is not
/// another's, though both doors have one name and the same sender posts it to both.
const PAYLOAD_IDS: &str = "door.payload_id";
/// How long delivery claims are kept: GitHub lets a delivery be redelivered for 3 days, so a
/// claim outlives that window by days; beyond 200,000 (over two a second for a day) the oldest
/// go first.
pub const EXPIRY: [crate::expiry::Expiry; 2] = [
    crate::expiry::Expiry {
        scope: DELIVERIES,
        keep_for: std::time::Duration::from_secs(7 * 24 * 3600),
        max: 200_000,
    },
    crate::expiry::Expiry {
        scope: PAYLOAD_IDS,
        keep_for: std::time::Duration::from_secs(7 * 24 * 3600),
        max: 200_000,
    },
];
/// The payload fields that carry a platform's own id of the event, when it puts one in the body
/// (Slack's `event_id`); GitHub puts its delivery id in a header only. A plain `id` is not one:
/// many senders use it for the resource the event is about (`{"id":42,"status":"started"}`
/// then `"finished"`), and taking it as the event's id would refuse the second event.
const PAYLOAD_ID_KEYS: [&str; 2] = ["delivery_id", "event_id"];

/// Checks a delivery to `ctx`'s webhook door and starts its performance once per delivery id,
/// within `limits`. `secret` is the door's secret, read from its `secret_env` by the caller.
/// The signature is checked before anything else is looked at, so a caller without the
/// secret learns nothing but [`STRANGER_ANSWER`]. A delivery whose performance fails to start
/// is given back: the platform's redelivery of it starts it.
pub async fn deliver(
    ctx: &DoorContext,
    limits: &Limits,
    secret: Option<&str>,
    delivery: Delivery<'_>,
) -> Result<Accepted, DoorError> {
    let refuse = |refusal| DoorError::Refused {
        door: ctx.door.name.clone(),
        refusal,
    };
    let secret = match (&ctx.door.kind, secret) {
        (improv_stage::DoorKind::Webhook { .. }, Some(s)) if !s.is_empty() => s,
        (improv_stage::DoorKind::Webhook { secret_env }, _) => {
            return Err(refuse(Refusal::NoSecret {
                var: secret_env.clone(),
            }));
        }
        _ => return Err(refuse(Refusal::NoSuchDoor(ctx.door.name.clone()))),
    };
    verify(secret.as_bytes(), delivery.body, delivery.signature).map_err(refuse)?;
    if delivery.body.len() > MAX_BODY {
        return Err(refuse(Refusal::TooLarge {
            size: delivery.body.len(),
        }));
    }
    let id = delivery
        .delivery_id
        .map(str::trim)
        // GitHub sends a UUID; anything but a short token of letters, digits and dashes is
        // refused, since the id is shown to the actor outside the fenced payload.
        .filter(|id| {
            !id.is_empty()
                && id.len() <= 64
                && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        .ok_or_else(|| refuse(Refusal::NoDeliveryId))?;
    let store = ctx.store.as_ref();
    let door = &ctx.door.name;
    let stage = &ctx.stage_key;
    let name = format!("{door}/{id}");
    let key = Claim::adopt(store, DELIVERIES, stage, &name).await?;
    // A redelivery of what was performed is answered as such, not counted against the limits.
    let now = ctx.clock.now();
    if Claim::held(store, DELIVERIES, &key, now).await? {
        return Ok(Accepted::Duplicate);
    }
    let permit = limits
        .admit(std::time::Instant::now())
        .map_err(|retry_after| refuse(Refusal::Limited { retry_after }))?;
    let mut request = ctx.request(intent(ctx, id, delivery.body));
    let Some(claim) = Claim::take(store, DELIVERIES, stage, name, now, &request.id).await? else {
        return Ok(Accepted::Duplicate);
    };
    request.id = claim.performance.clone();
    if claim.stale && ctx.launcher.started(&ctx.stage, &request.id).await? {
        // The dead server had started it after all: performed.
        settle(store, &[claim], ClaimState::Started, now).await;
        return Ok(Accepted::Duplicate);
    }
    let mut claims = vec![claim];
    if let Some((key, value)) = payload_id(delivery.body) {
        let seen = format!("{door}/{value}");
        let taken = match Claim::adopt(store, PAYLOAD_IDS, stage, &seen).await {
            Ok(_) => Claim::take(store, PAYLOAD_IDS, stage, seen, now, &request.id).await,
            Err(e) => Err(e),
        };
        match taken {
            Ok(Some(c)) => {
                // A dead server's payload claim, retaken: its performance may have started
                // (under another delivery id), so it is checked as the delivery claim is.
                let performed = match c.stale {
                    true => ctx.launcher.started(&ctx.stage, &c.performance).await,
                    false => Ok(false),
                };
                claims.push(c);
                match performed {
                    Ok(false) => {}
                    Ok(true) => {
                        settle(store, &claims, ClaimState::Started, now).await;
                        return Ok(Accepted::Duplicate);
                    }
                    Err(e) => {
                        give_back(store, claims, now).await;
                        return Err(e);
                    }
                }
            }
            Ok(None) => {
                give_back(store, claims, now).await;
                return Err(refuse(Refusal::Replayed { key }));
            }
            Err(e) => {
                give_back(store, claims, now).await;
                return Err(e.into());
            }
        }
    }
    match start(ctx, request, id, now, permit).await {
        Ok(performance) => {
            settle(store, &claims, ClaimState::Started, now).await;
            Ok(Accepted::Started { performance })
        }
        Err(e) => {
            give_back(store, claims, now).await;
            Err(e)
        }
    }
}

/// The payload's own id of the event, hashed (it is a store key, never shown): its field name
/// and the hash; `None` when the body is no JSON object or carries none.
fn payload_id(body: &[u8]) -> Option<(&'static str, String)> {
    use sha2::Digest;
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body).ok()?;
    PAYLOAD_ID_KEYS.into_iter().find_map(|key| {
        let value = object.get(key)?;
        let text = match value {
            serde_json::Value::String(s) if !s.is_empty() => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return None,
        };
        Some((key, hex::encode(Sha256::digest(text.as_bytes()))))
    })
}

/// Whether a delivery (or payload id) is being or was performed, or its start failed and it
/// was given back for a redelivery to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ClaimState {
    Claimed,
    FailedToStart,
    /// Its performance started: never taken again.
    Started,
}

/// A claim as stored. Older records (`{"at": …}` alone) read as claimed.
#[derive(Serialize, Deserialize)]
struct ClaimRecord {
    #[serde(default = "claimed")]
    state: ClaimState,
    #[serde(default)]
    attempt: u64,
    at: i64,
    /// The performance the claim starts (absent in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    performance: Option<String>,
}

impl ClaimRecord {
    /// Whether a redelivery may take it: its start failed, or it has been claimed for
    /// [`CLAIM_TIMEOUT_MS`] without starting (its server died).
    fn open(&self, now: i64) -> bool {
        match self.state {
            ClaimState::FailedToStart => true,
            // An older record names no performance: a redelivery could not be fenced
            // against its start, so it stays held.
            ClaimState::Claimed => {
                self.performance.is_some() && now.saturating_sub(self.at) >= CLAIM_TIMEOUT_MS
            }
            ClaimState::Started => false,
        }
    }
}

fn claimed() -> ClaimState {
    ClaimState::Claimed
}

/// One delivery claimed for performing. Attempts are numbered and each is taken with an
/// only-if-absent write of its own, so that a claim given back after a failed start is taken
/// again by exactly one redelivery, however many race for it.
struct Claim {
    scope: &'static str,
    key: String,
    attempt: u64,
    /// The performance this claim starts: the one a dead server's claim named, when retaken.
    performance: String,
    /// Taken over from a server that died before it was started.
    stale: bool,
}

impl Claim {
    /// `stage`'s key for `name` (`DOOR/ID`) in `scope`. A claim recorded under `name` alone,
    /// before stages were in the key, is copied to it first (unless the stage has its own), so
    /// a redelivery after an upgrade reads what was claimed before: performed, given back, or
    /// left by a dead server under the performance it named.
    async fn adopt(
        store: &dyn Store,
        scope: &str,
        stage: &StageKey,
        name: &str,
    ) -> Result<String, StoreError> {
        let key = crate::kept::key(stage, name);
        if let Some(before) = store.get(scope, name).await? {
            store.put(scope, &key, &before, true).await?;
        }
        Ok(key)
    }

    /// Whether `key` is held or was performed (and not given back): a read, taking nothing.
    async fn held(store: &dyn Store, scope: &str, key: &str, now: i64) -> Result<bool, StoreError> {
        let Some(held) = store.get(scope, key).await? else {
            return Ok(false);
        };
        Ok(serde_json::from_value::<ClaimRecord>(held).map_or(true, |r| !r.open(now)))
    }

    /// Takes `stage`'s `name` in `scope`: `None` when it is held or was performed.
    async fn take(
        store: &dyn Store,
        scope: &'static str,
        stage: &StageKey,
        name: String,
        now: i64,
        performance: &str,
    ) -> Result<Option<Claim>, StoreError> {
        let key = crate::kept::key(stage, &name);
        let record = |attempt, performance: &str| ClaimRecord {
            state: ClaimState::Claimed,
            attempt,
            at: now,
            performance: Some(performance.to_string()),
        };
        if store
            .put(scope, &key, &json(&record(0, performance)), true)
            .await?
        {
            return Ok(Some(Claim {
                scope,
                key,
                attempt: 0,
                performance: performance.to_string(),
                stale: false,
            }));
        }
        let Some(held) = store.get(scope, &key).await? else {
            return Ok(None);
        };
        let held: ClaimRecord = match serde_json::from_value(held) {
            Ok(r) => r,
            Err(_) => return Ok(None),
        };
        if !held.open(now) {
            return Ok(None);
        }
        let stale = held.state == ClaimState::Claimed;
        // A dead server's claim is retaken under the performance it named.
        let performance = match (&held.performance, stale) {
            (Some(named), true) => named.clone(),
            _ => performance.to_string(),
        };
        let attempt = held.attempt + 1;
        let turn = crate::kept::key(stage, &format!("{name}#{attempt}"));
        if !store
            .put(scope, &turn, &serde_json::json!(now), true)
            .await?
        {
            return Ok(None);
        }
        store
            .put(scope, &key, &json(&record(attempt, &performance)), false)
            .await?;
        Ok(Some(Claim {
            scope,
            key,
            attempt,
            performance,
            stale,
        }))
    }
}

/// Gives `claims` back after a failed start, so that a redelivery takes them again.
async fn give_back(store: &dyn Store, claims: Vec<Claim>, now: i64) {
    settle(store, &claims, ClaimState::FailedToStart, now).await;
}

/// Records that `claims` reached `state`: started (never taken again), or failed to start
/// (given back).
async fn settle(store: &dyn Store, claims: &[Claim], state: ClaimState, now: i64) {
    for c in claims {
        let record = ClaimRecord {
            state,
            attempt: c.attempt,
            at: now,
            performance: Some(c.performance.clone()),
        };
        if let Err(e) = store.put(c.scope, &c.key, &json(&record), false).await {
            tracing::error!(
                "webhook delivery {} could not be marked {state:?}: {e}; a redelivery may read \
                 it wrongly",
                c.key
            );
        }
    }
}

fn json(record: &ClaimRecord) -> serde_json::Value {
    // A struct of a string enum and two integers always serializes.
    serde_json::to_value(record).unwrap_or_default()
}

/// Starts the performance of delivery `id`, records it as a firing and, once it ends, records
/// how; `permit` holds its place under `max_running` until then.
async fn start(
    ctx: &DoorContext,
    request: crate::context::LaunchRequest,
    id: &str,
    now: i64,
    permit: Permit,
) -> Result<String, DoorError> {
    let performance = request.id.clone();
    let due = record(ctx, now, &performance, id).await?;
    let started = match ctx.launcher.start(ctx.stage.clone(), request).await {
        Ok(started) => started,
        Err(e) => {
            note(
                ctx,
                due,
                None,
                format!("failed to start (delivery {id}): {e}"),
            )
            .await;
            return Err(e);
        }
    };
    let door = ctx.clone();
    let label = id.to_string();
    tokio::spawn(async move {
        let _permit = permit;
        let note_text = match started.done.await {
            Ok(f) => format!("fired (delivery {label}): {}", f.outcome.as_str()),
            Err(e) => format!("failed: {e}"),
        };
        note(&door, due, Some(started.performance), note_text).await;
    });
    Ok(performance)
}

/// Sets the note of the delivery's firing (for `improv door status`).
async fn note(ctx: &DoorContext, due: Option<i64>, performance: Option<String>, text: String) {
    let Some(due) = due else { return };
    let firing = Firing {
        door: ctx.door.name.clone(),
        due,
        performance,
        note: text,
    };
    if let Err(e) = ctx.store.update_firing(&ctx.stage_key, &firing).await {
        tracing::warn!("door `{}`: cannot record the firing: {e}", firing.door);
    }
}

/// Records the delivery as a firing (for `improv door status`), at the first free millisecond;
/// the due time it took.
async fn record(
    ctx: &DoorContext,
    now: i64,
    performance: &str,
    id: &str,
) -> Result<Option<i64>, DoorError> {
    let stage = &ctx.stage_key;
    for due in now..now + 1000 {
        let firing = Firing {
            door: ctx.door.name.clone(),
            due,
            performance: Some(performance.to_string()),
            note: format!("performing (delivery {id})"),
        };
        if ctx.store.claim_firing(stage, &firing).await? {
            return Ok(Some(due));
        }
    }
    Ok(None)
}

/// The door's intent with the payload fenced after it as untrusted content.
fn intent(ctx: &DoorContext, id: &str, body: &[u8]) -> String {
    let base = ctx
        .door
        .intent
        .clone()
        .or_else(|| ctx.stage.stage.intent.clone())
        .unwrap_or_else(|| "A webhook delivery arrived; decide whether it needs action.".into());
    let text = String::from_utf8_lossy(body);
    let mut payload: String = text.chars().take(MAX_PAYLOAD_IN_INTENT).collect();
    if payload.len() < text.len() {
        payload.push_str("\n[… cut]");
    }
    crate::fence::untrusted(&base, &format!("webhook delivery {id}"), &payload)
}
