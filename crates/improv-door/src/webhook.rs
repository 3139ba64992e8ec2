//! Webhook deliveries: GitHub's signature (`X-Hub-Signature-256: sha256=HEX`, HMAC-SHA256 of
//! the raw body under the door's secret, compared in constant time by the `hmac` crate), a body
//! size limit, and the delivery id (`X-GitHub-Delivery`) as the idempotency key, so that a
//! redelivery never performs twice. The payload reaches the intent fenced as untrusted content.

use crate::context::DoorContext;
use crate::error::DoorError;
use hmac::{Hmac, KeyInit, Mac};
use improv_store::Firing;
use sha2::Sha256;

/// The most bytes a delivery may have (GitHub's own limit is 25 MB; a door's intent needs far
/// less, and every byte of it is paid each turn).
pub const MAX_BODY: usize = 256 * 1024;

/// The header with the body's signature.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
/// The header with the delivery's id.
pub const DELIVERY_HEADER: &str = "x-github-delivery";

/// The most bytes of the payload put in the intent.
const MAX_PAYLOAD_IN_INTENT: usize = 16 * 1024;

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
}

impl Refusal {
    /// The HTTP status that says it.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Unsigned | Refusal::BadSignature => 401,
            Refusal::TooLarge { .. } => 413,
            Refusal::NoDeliveryId => 400,
            Refusal::NoSecret { .. } => 503,
            Refusal::NoSuchDoor(_) => 404,
        }
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

/// The store scope of delivery ids seen.
const DELIVERIES: &str = "door.delivery";

/// Checks a delivery to `ctx`'s webhook door and starts its performance once per delivery id.
/// `secret` is the door's secret, read from its `secret_env` by the caller.
pub async fn deliver(
    ctx: &DoorContext,
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
    if delivery.body.len() > MAX_BODY {
        return Err(refuse(Refusal::TooLarge {
            size: delivery.body.len(),
        }));
    }
    verify(secret.as_bytes(), delivery.body, delivery.signature).map_err(refuse)?;
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
    let now = ctx.clock.now();
    let key = format!("{}/{id}", ctx.door.name);
    let first = ctx
        .store
        .put(DELIVERIES, &key, &serde_json::json!({ "at": now }), true)
        .await?;
    if !first {
        return Ok(Accepted::Duplicate);
    }
    let request = ctx.request(intent(ctx, id, delivery.body));
    let performance = request.id.clone();
    record(ctx, now, &performance, id).await?;
    let started = ctx.launcher.start(ctx.stage.clone(), request).await?;
    let door = ctx.clone();
    let due = now;
    let label = id.to_string();
    tokio::spawn(async move {
        let note = match started.done.await {
            Ok(f) => format!("fired (delivery {label}): {}", f.outcome.as_str()),
            Err(e) => format!("failed: {e}"),
        };
        let firing = Firing {
            door: door.door.name.clone(),
            due,
            performance: Some(started.performance),
            note,
        };
        if let Err(e) = door.store.update_firing(&firing).await {
            tracing::warn!("door `{}`: cannot record the firing: {e}", firing.door);
        }
    });
    Ok(Accepted::Started { performance })
}

/// Records the delivery as a firing (for `improv door status`), at the first free millisecond.
async fn record(ctx: &DoorContext, now: i64, performance: &str, id: &str) -> Result<(), DoorError> {
    for due in now..now + 1000 {
        let firing = Firing {
            door: ctx.door.name.clone(),
            due,
            performance: Some(performance.to_string()),
            note: format!("performing (delivery {id})"),
        };
        if ctx.store.claim_firing(&firing).await? {
            return Ok(());
        }
    }
    Ok(())
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
