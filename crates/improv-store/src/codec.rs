//! How an event is written to a journal row: its JSON with every long string (a tool's output,
//! the model's text, a summary) cut out into a blob keyed by its SHA-256, so a value that recurs
//! (the same file read again, a trimmed output kept by a compaction) is stored once and the
//! journal grows with what is new. Both backends use this one encoding.
//!
//! The row keeps the event's JSON with each cut string left empty, and a list of
//! (JSON pointer, hash) pairs saying where each blob goes back: no marker inside the JSON, so any
//! event, whatever its strings hold, round-trips exactly.

use improv_kernel::Event;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// Strings at least this long (bytes) are stored as blobs.
pub(crate) const BLOB_MIN: usize = 1024;

/// An event as stored: its JSON with holes, where the holes' strings go, and the strings.
pub(crate) struct Encoded {
    pub seq: u64,
    pub body: String,
    /// JSON `[[pointer, hash], …]`; `None` when no string was cut out.
    pub refs: Option<String>,
    /// (hash, text) of every string cut out.
    pub blobs: Vec<(String, String)>,
}

/// Encodes one event for its journal row.
pub(crate) fn encode(event: &Event) -> Result<Encoded, serde_json::Error> {
    let mut value = serde_json::to_value(event)?;
    let mut refs = Vec::new();
    let mut blobs = Vec::new();
    cut(&mut value, &mut String::new(), &mut refs, &mut blobs);
    Ok(Encoded {
        seq: event.seq,
        body: serde_json::to_string(&value)?,
        refs: if refs.is_empty() {
            None
        } else {
            Some(serde_json::to_string(&refs)?)
        },
        blobs,
    })
}

/// Replaces long strings under `value` by empty ones, recording where they were.
fn cut(
    value: &mut Value,
    pointer: &mut String,
    refs: &mut Vec<(String, String)>,
    blobs: &mut Vec<(String, String)>,
) {
    match value {
        Value::String(text) if text.len() >= BLOB_MIN => {
            let text = std::mem::take(text);
            let hash = hash(&text);
            refs.push((pointer.clone(), hash.clone()));
            blobs.push((hash, text));
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = pointer.len();
                pointer.push_str(&format!("/{i}"));
                cut(item, pointer, refs, blobs);
                pointer.truncate(len);
            }
        }
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                let len = pointer.len();
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
                cut(item, pointer, refs, blobs);
                pointer.truncate(len);
            }
        }
        _ => {}
    }
}

/// The SHA-256 of a text, in lowercase hex: a blob's key.
pub(crate) fn hash(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The hashes a row refers to, to fetch their blobs.
pub(crate) fn ref_hashes(refs: Option<&str>) -> Result<Vec<String>, serde_json::Error> {
    let Some(refs) = refs else {
        return Ok(Vec::new());
    };
    let pairs: Vec<(String, String)> = serde_json::from_str(refs)?;
    Ok(pairs.into_iter().map(|(_, hash)| hash).collect())
}

/// A row that cannot be turned back into its event.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("event JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("blob {0} is missing")]
    MissingBlob(String),
    #[error("blob pointer {0} names no value in the event")]
    BadPointer(String),
}

/// Rebuilds an event from its row and the blobs it refers to.
pub(crate) fn decode(
    body: &str,
    refs: Option<&str>,
    blobs: &HashMap<String, String>,
) -> Result<Event, DecodeError> {
    let mut value: Value = serde_json::from_str(body)?;
    if let Some(refs) = refs {
        let pairs: Vec<(String, String)> = serde_json::from_str(refs)?;
        for (pointer, hash) in pairs {
            let text = blobs
                .get(&hash)
                .ok_or_else(|| DecodeError::MissingBlob(hash.clone()))?;
            let slot = value
                .pointer_mut(&pointer)
                .ok_or_else(|| DecodeError::BadPointer(pointer.clone()))?;
            *slot = Value::String(text.clone());
        }
    }
    Ok(serde_json::from_value(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use improv_kernel::EventKind;

    fn event(output: String) -> Event {
        Event {
            seq: 3,
            at: "2026-11-29T13:00:00.000Z".into(),
            actor: Some("lead".into()),
            kind: EventKind::ToolCallFinished {
                call_id: "c/1~x".into(),
                name: "read".into(),
                ok: true,
                output,
                duration_ms: 1.5,
            },
        }
    }

    #[test]
    fn long_strings_become_blobs_and_come_back() {
        let long = "é/~\u{0}".repeat(400);
        let original = event(long.clone());
        let encoded = encode(&original).unwrap();
        assert_eq!(encoded.blobs, vec![(hash(&long), long.clone())]);
        assert!(encoded.body.len() < 300, "{}", encoded.body);
        let blobs: HashMap<_, _> = encoded.blobs.into_iter().collect();
        let back = decode(&encoded.body, encoded.refs.as_deref(), &blobs).unwrap();
        assert_eq!(back, original);
        let short = event("short".into());
        let encoded = encode(&short).unwrap();
        assert!(encoded.refs.is_none() && encoded.blobs.is_empty());
        assert_eq!(decode(&encoded.body, None, &HashMap::new()).unwrap(), short);
    }

    #[test]
    fn a_missing_blob_is_an_error_not_an_empty_string() {
        let encoded = encode(&event("x".repeat(BLOB_MIN))).unwrap();
        let err = decode(&encoded.body, encoded.refs.as_deref(), &HashMap::new()).unwrap_err();
        assert!(matches!(err, DecodeError::MissingBlob(_)), "{err}");
    }
}
