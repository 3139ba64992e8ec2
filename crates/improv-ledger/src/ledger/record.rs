//! Recording: entries parsed, checked against the limits and the settled schema, stored as
//! JSONB (or kept in the rejects with the reason) and folded into the collection's shape, one
//! transaction per batch.

use super::settle::{new_fields, upsert_proposal};
use super::{
    Collection, Input, Ledger, LedgerError, Provenance, RecordOutcome, Result, Stability,
    check_collection_name, format_time, load_fresh, unix_ms,
};
use crate::path::FieldPath;
use crate::schema::{self, EnumRule};
use crate::shape::{Kind, Shape};
use crate::tape::{Tape, is_wide_float};
use rusqlite::{TransactionBehavior, params};
use serde_json::Value;

/// Deepest nesting serde_json parses; deeper text fails with its recursion-limit error.
const PARSE_DEPTH_LIMIT: usize = 128;

impl Ledger {
    /// Records one entry (JSON text or a value) into `collection`, creating the collection on its
    /// first entry. A refused entry is not an error: it is kept in the rejects and the outcome
    /// says why.
    pub fn record(
        &self,
        collection: &str,
        entry: impl Into<Input>,
        provenance: &Provenance,
    ) -> Result<RecordOutcome> {
        let mut outcomes =
            self.record_batch(collection, std::iter::once(entry.into()), provenance)?;
        Ok(outcomes.remove(0))
    }

    /// Records many entries in one transaction (much faster than one by one).
    pub fn record_batch(
        &self,
        collection: &str,
        entries: impl IntoIterator<Item = Input>,
        provenance: &Provenance,
    ) -> Result<Vec<RecordOutcome>> {
        let entries = entries.into_iter().map(|input| Prepared {
            checked: self.prepare(input),
            origin: None,
            changed: false,
        });
        Ok(self.write(collection, entries, None, provenance)?.outcomes)
    }

    /// The revision and shape an import's reading thread starts inferring from, or `None` when
    /// the collection is settled (its writes are checked, and only the writer can do that).
    pub(crate) fn inference_start(&self, collection: &str) -> Result<Option<(i64, Shape)>> {
        check_collection_name(collection)?;
        let mut guard = self.lock();
        let inner = &mut *guard;
        let state = load_fresh(&inner.conn, &mut inner.cache, collection)?;
        Ok(state
            .stored
            .settled
            .is_none()
            .then(|| (state.rev, state.stored.shape.clone())))
    }

    /// Records a batch in one transaction (how `record`, `record_batch` and imports write).
    /// With `inferred`, the shape was already inferred by the caller: it replaces the
    /// collection's if the collection is still at the revision it was inferred from and is not
    /// settled; otherwise every entry is checked and absorbed here as usual.
    pub(crate) fn write(
        &self,
        collection: &str,
        entries: impl IntoIterator<Item = Prepared>,
        inferred: Option<Inferred>,
        provenance: &Provenance,
    ) -> Result<Written> {
        check_collection_name(collection)?;
        let mut guard = self.lock();
        let inner = &mut *guard;
        let tx = inner
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let state = load_fresh(&tx, &mut inner.cache, collection)?;
        let rev = state.rev;
        let inferred = inferred
            .filter(|i| i.from_rev == rev && state.stored.settled.is_none())
            .map(|i| i.shape);
        let used_inferred = inferred.is_some();
        let mut outcomes = Vec::new();
        let result = (|| -> Result<()> {
            let mut insert_entry = tx.prepare_cached(
                "INSERT INTO ledger_entries (collection, body, raw, performance, actor, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            // The same for every entry of the batch: bound once (SQLite keeps bindings from one
            // execution to the next), the rest per entry.
            insert_entry.raw_bind_parameter(1, collection)?;
            insert_entry.raw_bind_parameter(4, &provenance.performance)?;
            insert_entry.raw_bind_parameter(5, &provenance.actor)?;
            let mut insert_reject = tx.prepare_cached(
                "INSERT INTO ledger_rejects (collection, text, reason, performance, actor, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            let mut stamp = Stamp::default();
            for Prepared {
                checked,
                origin,
                changed,
            } in entries
            {
                let now = self.now();
                let at = stamp.at(now);
                let checked = if used_inferred {
                    // The caller inferred its shape: nothing below needs the value.
                    checked.without_value()
                } else {
                    self.check_settled(&tx, state, checked)?
                };
                let outcome = match checked {
                    Checked::Refused { text, reason } => {
                        let reason = match &origin {
                            Some(origin) => format!("{origin}: {reason}"),
                            None => reason,
                        };
                        insert_reject.execute(params![
                            collection,
                            text,
                            reason,
                            provenance.performance,
                            provenance.actor,
                            at
                        ])?;
                        state.stored.rejects += 1;
                        RecordOutcome::Rejected {
                            reject_id: tx.last_insert_rowid(),
                            reason,
                        }
                    }
                    Checked::Accepted { value, body, raw } => {
                        let mut proposed = Vec::new();
                        insert_entry.raw_bind_parameter(2, &body)?;
                        insert_entry.raw_bind_parameter(3, &raw)?;
                        insert_entry.raw_bind_parameter(6, at)?;
                        insert_entry.raw_execute()?;
                        let id = tx.last_insert_rowid();
                        // A value is here exactly when the shape is not inferred by the caller.
                        let changed = match &value {
                            None => changed,
                            Some(value) => {
                                proposed = propose(&tx, state, collection, value, at)?;
                                state.stored.shape.absorb(value)
                            }
                        };
                        if changed {
                            state.stored.writes_since_change = 0;
                            state.stored.last_change_ms = unix_ms(now);
                        } else {
                            state.stored.writes_since_change += 1;
                        }
                        state.stored.records += 1;
                        RecordOutcome::Recorded { id, proposed }
                    }
                };
                outcomes.push(outcome);
            }
            if let Some(shape) = inferred {
                state.stored.shape = shape;
            }
            Ok(())
        })();
        let result = result.and_then(|()| {
            let text = serde_json::to_string(&state.stored)?;
            tx.execute(
                "INSERT INTO ledger_collections (name, rev, state) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET rev = excluded.rev, state = excluded.state",
                params![collection, rev + 1, text],
            )?;
            Ok(())
        });
        match result.and_then(|()| tx.commit().map_err(LedgerError::from)) {
            Ok(()) => {
                state.rev = rev + 1;
            }
            Err(error) => {
                // The cached state saw writes that were rolled back: read it again next time.
                inner.cache.remove(collection);
                return Err(error);
            }
        }
        if self.options.auto_settle
            && state.stored.settled.is_none()
            && self.stability(&state.stored) == Stability::Stable
        {
            drop(guard);
            self.settle(collection)?;
        }
        Ok(Written {
            outcomes,
            rev: rev + 1,
            used_inferred,
        })
    }

    /// Checks a prepared entry against the collection's settled schema, if it has one.
    fn check_settled(
        &self,
        conn: &rusqlite::Connection,
        state: &Collection,
        checked: Checked,
    ) -> Result<Checked> {
        let Checked::Accepted { value, body, raw } = checked else {
            return Ok(checked);
        };
        let value = match value {
            Some(value) => value,
            // Dropped by an import's reading thread that expected its inference to stand: read
            // it back from the JSONB (rare: only when another writer came in between).
            None => {
                let text: String = conn.query_row("SELECT json(?1)", [&body], |row| row.get(0))?;
                serde_json::from_str(&text)?
            }
        };
        Ok(match self.violations(state, &value) {
            Some(reason) => Checked::Refused {
                text: raw.unwrap_or_else(|| {
                    serde_json::to_string(&value).unwrap_or_else(|e| format!("(unprintable: {e})"))
                }),
                reason,
            },
            None => Checked::Accepted {
                value: Some(value),
                body,
                raw,
            },
        })
    }

    /// Parses and checks one entry against the limits (the settled schema is checked when it is
    /// written, by [`Self::check_settled`]).
    pub(crate) fn prepare(&self, input: Input) -> Checked {
        let (value, body, raw, size) = match input {
            Input::Unreadable { text, reason } => return Checked::Refused { text, reason },
            Input::Text(text) => {
                if let Some(reason) = self.size_refusal(text.len()) {
                    return Checked::Refused { text, reason };
                }
                let value: Value = match serde_json::from_str(&text) {
                    Ok(value) => value,
                    Err(error) => {
                        let reason = if error.to_string().contains("recursion limit") {
                            format!(
                                "the entry nests deeper than {PARSE_DEPTH_LIMIT} levels (limit {}); flatten it",
                                self.options.max_depth
                            )
                        } else {
                            format!("malformed JSON: {error}")
                        };
                        return Checked::Refused { text, reason };
                    }
                };
                // Not written back as text: stored as JSONB straight from the value.
                let raw = has_wide_number(&value).then(|| text.trim().to_owned());
                (value, None, raw, text.len())
            }
            Input::Value(value) => {
                let body = match serde_json::to_string(&value) {
                    Ok(body) => body,
                    Err(error) => {
                        return Checked::Refused {
                            text: format!("{value:?}"),
                            reason: format!("cannot store the entry: {error}"),
                        };
                    }
                };
                if let Some(reason) = self.size_refusal(body.len()) {
                    return Checked::Refused { text: body, reason };
                }
                let size = body.len();
                (value, Some(body), None, size)
            }
        };
        let refuse = |reason: String| Checked::Refused {
            text: raw.clone().or_else(|| body.clone()).unwrap_or_else(|| {
                serde_json::to_string(&value).unwrap_or_else(|e| format!("(unprintable: {e})"))
            }),
            reason,
        };
        if !value.is_object() {
            return refuse(format!(
                "an entry must be a JSON object, got {}; wrap it, e.g. {{\"value\": ...}}",
                Kind::of(&value).name()
            ));
        }
        if let Some(reason) = self.depth_refusal(depth(&value)) {
            return refuse(reason);
        }
        // JSONB is about as long as the compact text: one allocation, no regrowth.
        let mut body = Vec::with_capacity(size + size / 4 + 16);
        crate::jsonb::encode(&value, &mut body);
        Checked::Accepted {
            value: Some(value),
            body,
            raw,
        }
    }

    /// An import's fast path for one entry of JSON text: parsed once into `tape`, encoded as
    /// JSONB and absorbed into `shape` straight from it, with no `Value` built. Returns the
    /// checked entry and whether the shape changed, or `None`, leaving `shape` untouched, when
    /// the entry would be refused: the caller then goes through [`Self::prepare`], the one place
    /// that says why.
    pub(crate) fn prepare_inferring<'t>(
        &self,
        text: &'t [u8],
        tape: &mut Tape<'t>,
        shape: &mut Shape,
    ) -> Option<(Checked, bool)> {
        if self.size_refusal(text.len()).is_some() || tape.parse(text).is_err() {
            return None;
        }
        if !tape.is_object() || self.depth_refusal(tape.depth()).is_some() {
            return None;
        }
        let raw = tape.has_wide_number().then(|| {
            // Parsed from UTF-8 text: serde_json checked it.
            String::from_utf8_lossy(text).trim().to_owned()
        });
        let mut body = Vec::with_capacity(text.len() + text.len() / 4 + 16);
        crate::jsonb::encode_entry(tape.root(), text.len(), &mut body);
        let changed = shape.absorb_any(tape.root());
        let value = None;
        Some((Checked::Accepted { value, body, raw }, changed))
    }

    /// Why an entry of `len` bytes of JSON text is refused for its size, if it is.
    fn size_refusal(&self, len: usize) -> Option<String> {
        (len > self.options.max_entry_bytes).then(|| {
            format!(
                "the entry is {len} bytes, over the limit of {}; split it or store large content in a file and record its path",
                self.options.max_entry_bytes
            )
        })
    }

    /// Why an entry nesting `depth` levels is refused, if it is.
    fn depth_refusal(&self, depth: usize) -> Option<String> {
        (depth > self.options.max_depth).then(|| {
            format!(
                "the entry nests {depth} levels deep, over the limit of {}; flatten it",
                self.options.max_depth
            )
        })
    }

    /// The reasons `value` breaks the collection's settled schema, if it does.
    pub(super) fn violations(&self, state: &Collection, value: &Value) -> Option<String> {
        let settled = state.stored.settled.as_ref()?;
        let validator = state.validator.as_ref()?;
        let mut problems: Vec<String> = Vec::new();
        for error in validator.iter_errors(value) {
            let at = FieldPath::from_pointer(error.instance_path().as_str());
            let here = value.pointer(error.instance_path().as_str());
            let problem = match error.kind() {
                jsonschema::error::ValidationErrorKind::Type { .. } => {
                    let expected = settled
                        .shape
                        .at(&at)
                        .map(|s| schema_label(s, self.options.enum_rule()))
                        .unwrap_or_else(|| "another type".into());
                    format!(
                        "field `{at}`: expected {expected}, got {}",
                        here.map(preview).unwrap_or_default()
                    )
                }
                jsonschema::error::ValidationErrorKind::Required { property } => {
                    let name = property.as_str().unwrap_or_default();
                    let field = at.key(name);
                    let expected = settled
                        .shape
                        .at(&field)
                        .map(|s| schema_label(s, self.options.enum_rule()))
                        .unwrap_or_else(|| "a value".into());
                    format!("field `{field}` is missing; it is required ({expected})")
                }
                jsonschema::error::ValidationErrorKind::Enum { options } => {
                    let options: Vec<String> = options
                        .as_array()
                        .map(|o| o.iter().map(|v| v.to_string()).collect())
                        .unwrap_or_default();
                    format!(
                        "field `{at}`: expected one of {}, got {}",
                        options.join(", "),
                        here.map(preview).unwrap_or_default()
                    )
                }
                jsonschema::error::ValidationErrorKind::FalseSchema => format!(
                    "field `{at}` was rejected by the director for this collection; leave it out"
                ),
                _ => format!("field `{at}`: {}", truncate(&error.to_string(), 160)),
            };
            if !problems.contains(&problem) {
                problems.push(problem);
            }
            if problems.len() == 5 {
                problems.push("(more problems not shown)".into());
                break;
            }
        }
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

/// Proposals for the fields of `value` that the settled schema does not have yet; none when the
/// collection is not settled.
fn propose(
    conn: &rusqlite::Connection,
    state: &mut Collection,
    collection: &str,
    value: &Value,
    at: &str,
) -> Result<Vec<String>> {
    let Some(settled) = &state.stored.settled else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    new_fields(value, &settled.shape, &FieldPath::root(), &mut found);
    let mut proposed = Vec::new();
    for (path, field_value) in found {
        let field = path.to_string();
        upsert_proposal(conn, collection, &field, field_value, at)?;
        state.pending.insert(field.clone());
        proposed.push(field);
    }
    Ok(proposed)
}

/// An entry's time as stored, written once per millisecond rather than once per entry (a batch
/// writes thousands in one).
#[derive(Default)]
struct Stamp {
    ms: Option<i64>,
    text: String,
}

impl Stamp {
    fn at(&mut self, now: time::OffsetDateTime) -> &str {
        let ms = unix_ms(now);
        if self.ms != Some(ms) {
            self.ms = Some(ms);
            self.text = format_time(now);
        }
        &self.text
    }
}

/// Where an imported entry came from, put before a refusal's reason (`line 12: ...`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Origin {
    /// A line of a JSON lines or CSV file, from 1.
    Line(usize),
    /// An item of a JSON array, from 1.
    Item(usize),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Line(n) => write!(f, "line {n}"),
            Origin::Item(n) => write!(f, "item {n}"),
        }
    }
}

/// One entry as the writer receives it.
pub(crate) struct Prepared {
    pub(crate) checked: Checked,
    /// Where it came from in an imported file (`line 12`), put before a refusal's reason.
    pub(crate) origin: Option<Origin>,
    /// Whether absorbing it changed the shape, when the shape was inferred by the caller.
    pub(crate) changed: bool,
}

/// A batch's shape inferred by the caller (an import's reading thread) from the collection's
/// state at revision `from_rev`: the collection's shape after the batch.
pub(crate) struct Inferred {
    pub(crate) from_rev: i64,
    pub(crate) shape: Shape,
}

/// What a write did: each entry's outcome, the collection's revision after it, and whether the
/// caller's inferred shape was taken.
pub(crate) struct Written {
    pub(crate) outcomes: Vec<RecordOutcome>,
    pub(crate) rev: i64,
    pub(crate) used_inferred: bool,
}

impl Checked {
    fn without_value(self) -> Checked {
        match self {
            Checked::Accepted { body, raw, .. } => Checked::Accepted {
                value: None,
                body,
                raw,
            },
            refused => refused,
        }
    }
}

/// An entry parsed and checked against the limits.
pub(crate) enum Checked {
    Accepted {
        /// `None` once its shape has been inferred by the caller (see [`Inferred`]).
        value: Option<Value>,
        /// The value in SQLite's JSONB encoding.
        body: Vec<u8>,
        raw: Option<String>,
    },
    Refused {
        text: String,
        reason: String,
    },
}

/// Whether a value holds a number serde_json could only keep as a float although it was
/// written as an integer beyond 64 bits (so the text must be kept verbatim).
fn has_wide_number(value: &Value) -> bool {
    match value {
        Value::Number(n) => n
            .as_f64()
            .is_some_and(|f| !n.is_i64() && !n.is_u64() && is_wide_float(f)),
        Value::Array(items) => items.iter().any(has_wide_number),
        Value::Object(map) => map.values().any(has_wide_number),
        _ => false,
    }
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The type label of a settled field, for messages: `integer`, `string(email)`, `"a"|"b"`.
fn schema_label(shape: &Shape, rule: EnumRule) -> String {
    let label = schema::compact(shape, rule, 3);
    if label.starts_with('{') {
        "object".into()
    } else {
        label
    }
}

fn preview(value: &Value) -> String {
    let kind = Kind::of(value).name();
    match value {
        Value::Null => "null".into(),
        Value::Object(_) => "an object".into(),
        Value::Array(_) => "an array".into(),
        other => format!("{kind} {}", truncate(&other.to_string(), 40)),
    }
}

fn truncate(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        text.to_owned()
    } else {
        let cut: String = text.chars().take(max_chars).collect();
        format!("{cut}…")
    }
}
