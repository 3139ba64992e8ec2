//! Shape inference: what the values recorded at every field path look like, updated on every write.
//!
//! A [`Shape`] describes a multiset of JSON values at one position: how many there were, the union
//! of their kinds with a count per kind (null, boolean, integer, number, string, array with the
//! shape of its items, object with the shape of each field), and per kind the statistics the
//! ledger needs: numeric ranges, string formats, small sets of string values (enum candidates),
//! array lengths. A field's presence ratio is its count over its parent object's count.
//!
//! Shapes form a commutative monoid under [`Shape::merge`]: counts add, ranges take min and max,
//! maps take the union, and the enum candidate set overflows (to "too many") the same way whatever
//! the order. So shapes inferred on different performances or machines combine in any order and
//! grouping, which is what lets inference run incrementally and in parallel. This is the approach
//! of Baazizi, Ben Lahmar, Colazzo, Ghelli and Sartiani, "Schema inference for massive JSON
//! datasets", EDBT 2017 (types fused by an associative, commutative operator, in a map-reduce
//! pass), and of its parametric successor (Baazizi et al., "Parametric schema inference for
//! massive JSON datasets", VLDB Journal 2019), here with counts kept per kind, as in their
//! counting types, so presence and required fields can be told apart.
//!
//! ## Maps and records
//!
//! An object is either a *record* (a fixed set of named fields: `{name, email}`) or a *map* (keys
//! that are data, values of one shape: `dependencies`, `scripts`, counts per date). A map settled
//! as a record gives one optional property per key ever seen, thousands on real data, so the two
//! are told apart, in two steps that both keep the merge order-independent:
//!
//! - **Bounded representation.** Once the values at one position have shown more than
//!   [`MAP_KEY_LIMIT`] distinct keys, the position is held as a map ([`MapShape`]): the shapes of
//!   all its fields fused into one value shape, plus how many key occurrences there were and how
//!   many looked like data. The number of distinct keys of a multiset only grows as it grows, and
//!   collapsing commutes with merging (the fused value shape of a union is the merge of the fused
//!   value shapes), so the result is the same whatever order and grouping the values come in. The
//!   limit is DuckDB's `map_inference_threshold` (200): past it, DuckDB's JSON reader also infers
//!   `MAP` rather than `STRUCT`.
//! - **The settled decision** ([`ObjectShape::settles_as_map`], applied by
//!   [`Shape::settled_form`]) is a function of the merged shape alone, hence of the data and not
//!   of its order. With `K` distinct keys over `n` objects, the mean presence of a key is
//!   `occurrences / (K · n)`. A position with at least [`MAP_MIN_KEYS`] keys settles as a map when
//!   (a) the mean presence is at most [`MAP_MAX_MEAN_PRESENCE`]: DuckDB's
//!   `field_appearance_threshold` (0.1), the share under which its reader also takes an object for
//!   a map, with the merged value type (lint levels are `"warn"` or `{level, priority}`: still a
//!   map); or (a') its values have one kind (integers and other numbers count as one),
//!   there are more distinct keys than objects, and the mean presence is at most one half (a
//!   record's fields are fixed by whoever designed it, so its distinct keys stop growing long
//!   before they outnumber its objects; keys that outnumber the objects carrying them are
//!   still arriving, like data); or (b) at least half the key
//!   occurrences look like data (see [`key_looks_like_data`]: package names with a scope or a
//!   path, paths, numbers, dates, UUIDs, hex ids, URIs) and the mean presence is at most one half.
//!   Value homogeneity and a key space that varies from object to object are the two signals
//!   Spoth, Kennedy, Lu, Hammerschmidt and Liu use to tell collections from tuples ("Reducing
//!   ambiguity in JSON schema discovery", SIGMOD 2021); fewer than [`MAP_MIN_KEYS`] keys are too
//!   few to tell and stay a record.
//!
//! ## Sparse records
//!
//! A record can be sparse without being a map: the `payload` of GitHub events has a dozen and a
//! half named fields, but which of them an event carries depends on its `type` (a push has
//! `commits`, a pull request `pull_request`), so each field is in a fraction of the events. It
//! is a tagged union of records flattened into one object, and a column per field gives a
//! table of mostly empty cells (141 columns for seven event types), where a person would keep
//! the payload as one JSON document beside the envelope's columns, as BigQuery's `JSON` and
//! Snowflake's `VARIANT` columns hold semi-structured data. [`ObjectShape::is_sparse`] says so
//! with the statistic DuckDB's `field_appearance_threshold` uses, the mean presence of the
//! fields (`occurrences / (K · n)`, as for maps): a record of at least [`MAP_MIN_KEYS`] fields
//! whose typical field is missing from most of its objects (mean presence under
//! [`SPARSE_MAX_FILL`], one half) is sparse. DuckDB, whose rule is for maps, leaves it a
//! `STRUCT` with a member per field; here a sparse record keeps its fields, their union, in the
//! JSON Schema (each record still validates field by field) and is one JSON column in the DDL
//! (see [`crate::schema`]). Like the map decision it reads only the merged shape, so it does
//! not depend on the order the records came in.

use crate::path::{FieldPath, Segment};
use crate::tape::{Json, View};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// How many distinct string values a position tracks before it stops treating them as an enum.
pub const ENUM_TRACK_LIMIT: usize = 16;
/// Strings longer than this (in bytes) are never enum values.
pub const ENUM_VALUE_MAX_BYTES: usize = 48;
/// More distinct keys than this at one position and it is held as a map (see the module docs).
pub const MAP_KEY_LIMIT: usize = 200;
/// Fewer distinct keys than this and an object is a record, whatever its statistics.
pub const MAP_MIN_KEYS: usize = 8;
/// The mean presence of its keys at or under which an object is a map.
pub const MAP_MAX_MEAN_PRESENCE: f64 = 0.1;
/// The mean presence of its fields under which a record is sparse (kept whole as JSON in the DDL).
pub const SPARSE_MAX_FILL: f64 = 0.5;

/// The inferred shape of the values at one position. See the module docs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Shape {
    /// Values seen here.
    pub count: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub null: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boolean: Option<BoolShape>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integer: Option<IntegerShape>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<NumberShape>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub string: Option<StringShape>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub array: Option<Box<ArrayShape>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<ObjectShape>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoolShape {
    pub count: u64,
    pub trues: u64,
}

/// Integers (JSON numbers without a fraction or exponent that fit in 64 bits).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegerShape {
    pub count: u64,
    pub min: i128,
    pub max: i128,
}

/// Other numbers, including integers beyond 64 bits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NumberShape {
    pub count: u64,
    pub min: f64,
    pub max: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StringShape {
    pub count: u64,
    #[serde(default)]
    pub formats: Formats,
    /// Distinct values with their counts, while there are at most [`ENUM_TRACK_LIMIT`] of them,
    /// each at most [`ENUM_VALUE_MAX_BYTES`] long; `None` once either limit was passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<BTreeMap<String, u64>>,
}

/// How many strings matched each format.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Formats {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub date_time: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub date: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub email: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uri: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub uuid: u64,
}

/// A string format, named as JSON Schema names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    DateTime,
    Date,
    Email,
    Uri,
    Uuid,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::DateTime,
        Format::Date,
        Format::Email,
        Format::Uri,
        Format::Uuid,
    ];

    /// The JSON Schema `format` name.
    pub fn name(self) -> &'static str {
        match self {
            Format::DateTime => "date-time",
            Format::Date => "date",
            Format::Email => "email",
            Format::Uri => "uri",
            Format::Uuid => "uuid",
        }
    }

    /// The format `s` has, if any (at most one: they are mutually exclusive as detected here).
    pub fn detect(s: &str) -> Option<Format> {
        let bytes = s.as_bytes();
        // The shortest of each: `a@b.c`, `a://b`; dates and uuids are longer.
        if bytes.len() < 5 {
            return None;
        }
        match bytes.len() {
            36 if is_uuid(bytes) => return Some(Format::Uuid),
            10 if is_date(s) => return Some(Format::Date),
            _ => {}
        }
        if bytes.len() >= 20 && bytes.get(4) == Some(&b'-') && is_date_time(s) {
            return Some(Format::DateTime);
        }
        if bytes.contains(&b'@') && is_email(s) {
            return Some(Format::Email);
        }
        if is_uri(s) {
            return Some(Format::Uri);
        }
        None
    }
}

impl Formats {
    fn count_of(&self, format: Format) -> u64 {
        match format {
            Format::DateTime => self.date_time,
            Format::Date => self.date,
            Format::Email => self.email,
            Format::Uri => self.uri,
            Format::Uuid => self.uuid,
        }
    }

    fn add(&mut self, format: Format) {
        let slot = match format {
            Format::DateTime => &mut self.date_time,
            Format::Date => &mut self.date,
            Format::Email => &mut self.email,
            Format::Uri => &mut self.uri,
            Format::Uuid => &mut self.uuid,
        };
        *slot += 1;
    }

    fn merge(&mut self, other: &Formats) {
        self.date_time += other.date_time;
        self.date += other.date;
        self.email += other.email;
        self.uri += other.uri;
        self.uuid += other.uuid;
    }
}

/// `8-4-4-4-12` hex digits. The dashes are looked at first (they turn most other 36-byte strings
/// away), then each run of digits without a branch per byte: a check per byte that asked its
/// position was half of all format detection in an import.
fn is_uuid(b: &[u8]) -> bool {
    let hex = |run: &[u8]| run.iter().fold(true, |ok, c| ok & c.is_ascii_hexdigit());
    b.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && [&b[..8], &b[9..13], &b[14..18], &b[19..23], &b[24..]]
            .into_iter()
            .all(hex)
}

fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let (Ok(year), Ok(month), Ok(day)) = (
        s[0..4].parse::<i32>(),
        s[5..7].parse::<u8>(),
        s[8..10].parse::<u8>(),
    ) else {
        return false;
    };
    let Ok(month) = time::Month::try_from(month) else {
        return false;
    };
    // Year 0000 is no date to PostgreSQL (it has no year zero).
    year > 0
        && s[0..4].bytes().all(|c| c.is_ascii_digit())
        && time::Date::from_calendar_date(year, month, day).is_ok()
}

fn is_date_time(s: &str) -> bool {
    s.is_char_boundary(10)
        && is_date(&s[..10])
        && (is_plain_utc_time(&s.as_bytes()[10..])
            || time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .is_ok())
}

/// Whether `rest`, what follows a valid date, is `THH:MM:SSZ` with each part in range: the form
/// most timestamps take, which RFC 3339 accepts, told here without the `time` crate's general
/// parser, which every timestamp of an import went through. Any other form goes to that parser.
fn is_plain_utc_time(rest: &[u8]) -> bool {
    let &[b'T', h1, h2, b':', m1, m2, b':', s1, s2, b'Z'] = rest else {
        return false;
    };
    let two = |a: u8, b: u8| {
        (a.is_ascii_digit() && b.is_ascii_digit()).then(|| (a - b'0') * 10 + (b - b'0'))
    };
    matches!(
        (two(h1, h2), two(m1, m2), two(s1, s2)),
        (Some(0..=23), Some(0..=59), Some(0..=59))
    )
}

fn is_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && local.len() <= 64
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn is_uri(s: &str) -> bool {
    // `scheme://rest`: the scheme runs up to the first byte that cannot be in one, which must
    // start `://` (every string is checked: no substring search for `://` through the text).
    let b = s.as_bytes();
    let scheme = b
        .iter()
        .position(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')))
        .unwrap_or(b.len());
    b.first().is_some_and(u8::is_ascii_alphabetic)
        && b[scheme..].starts_with(b"://")
        && b.len() > scheme + 3
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArrayShape {
    /// Arrays seen here.
    pub count: u64,
    pub min_len: u64,
    pub max_len: u64,
    /// The shape of every item of every array seen here.
    pub items: Shape,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ObjectShape {
    /// Objects seen here.
    pub count: u64,
    /// Each key seen, with the shape of its values; a field's `count` is how many objects had it.
    /// Empty once the position is held as a map.
    pub fields: BTreeMap<String, Shape>,
    /// Set when this position is held as a map: its keys are data, its values fused into one
    /// shape. See the module docs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<Box<MapShape>>,
}

/// An object position held as a map: the values of every key fused into one shape.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MapShape {
    /// Key occurrences: the sum over objects of their number of keys (`values.count`).
    pub entries: u64,
    /// Key occurrences whose key looks like data (see [`key_looks_like_data`]).
    pub data_keys: u64,
    /// The shape of every value under every key.
    pub values: Shape,
}

impl MapShape {
    fn add_key(&mut self, key: &str, occurrences: u64) {
        self.entries += occurrences;
        if key_looks_like_data(key) {
            self.data_keys += occurrences;
        }
    }

    fn merge(&mut self, other: &MapShape) {
        self.entries += other.entries;
        self.data_keys += other.data_keys;
        self.values.merge(&other.values);
    }
}

impl ObjectShape {
    /// Holds this position as a map from now on (a no-op when it already is one).
    fn collapse(&mut self) {
        if self.map.is_some() {
            return;
        }
        let mut map = MapShape::default();
        for (key, field) in std::mem::take(&mut self.fields) {
            map.add_key(&key, field.count);
            map.values.merge(&field);
        }
        self.map = Some(Box::new(map));
    }

    /// Whether this position settles as a map rather than a record: held as one already, or the
    /// statistics of its keys say so (the rule and its sources are in the module docs).
    pub fn settles_as_map(&self) -> bool {
        if self.map.is_some() {
            return true;
        }
        let keys = self.fields.len();
        if keys < MAP_MIN_KEYS || self.count == 0 {
            return false;
        }
        let mut occurrences = 0u64;
        let mut data = 0u64;
        let mut kinds = BTreeSet::new();
        for (key, field) in &self.fields {
            occurrences += field.count;
            if key_looks_like_data(key) {
                data += field.count;
            }
            kinds.extend(field.non_null_kinds().into_iter().map(|k| match k {
                Kind::Integer => Kind::Number,
                other => other,
            }));
        }
        let mean_presence = occurrences as f64 / (keys as f64 * self.count as f64);
        let homogeneous = kinds.len() <= 1;
        mean_presence <= MAP_MAX_MEAN_PRESENCE
            || (homogeneous && keys as u64 > self.count && mean_presence <= 0.5)
            || (data * 2 >= occurrences && mean_presence <= 0.5)
    }

    /// Whether this record is sparse: it has at least [`MAP_MIN_KEYS`] fields and the mean
    /// presence of its fields is under [`SPARSE_MAX_FILL`] (see "Sparse records" in the module
    /// docs). A function of the merged shape alone, like [`Self::settles_as_map`].
    pub fn is_sparse(&self) -> bool {
        let keys = self.fields.len();
        if self.map.is_some() || keys < MAP_MIN_KEYS || self.count == 0 {
            return false;
        }
        let occurrences: u64 = self.fields.values().map(|f| f.count).sum();
        (occurrences as f64) < SPARSE_MAX_FILL * keys as f64 * self.count as f64
    }
}

/// Whether an object key looks like a value rather than a field name: it has a path or scope
/// separator (`/`, `@`, `:`), a space, starts with `.` or a digit (paths, versions, numbers,
/// dates), is a long hex id, or has a string format (UUID, date, email, URI).
pub fn key_looks_like_data(key: &str) -> bool {
    let hex_id = key.len() >= 8
        && key.bytes().all(|b| b.is_ascii_hexdigit())
        && key.bytes().any(|b| b.is_ascii_digit());
    key.is_empty()
        || key.starts_with(|c: char| c == '.' || c.is_ascii_digit())
        || key.contains(['/', '@', ':', ' '])
        || hex_id
        || Format::detect(key).is_some()
}

/// The kinds a JSON value can have, as shapes count them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Null,
    Boolean,
    Integer,
    Number,
    String,
    Array,
    Object,
}

impl Kind {
    /// The JSON Schema type name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Boolean => "boolean",
            Kind::Integer => "integer",
            Kind::Number => "number",
            Kind::String => "string",
            Kind::Array => "array",
            Kind::Object => "object",
        }
    }

    /// The kind of a value.
    pub fn of(value: &Value) -> Kind {
        match value {
            Value::Null => Kind::Null,
            Value::Bool(_) => Kind::Boolean,
            // Above i64::MAX is a Number: PostgreSQL's BIGINT cannot hold it (NUMERIC can).
            Value::Number(n) if n.is_i64() => Kind::Integer,
            Value::Number(_) => Kind::Number,
            Value::String(_) => Kind::String,
            Value::Array(_) => Kind::Array,
            Value::Object(_) => Kind::Object,
        }
    }
}

impl Shape {
    /// The shape of one value.
    pub fn of(value: &Value) -> Shape {
        let mut shape = Shape::default();
        shape.absorb(value);
        shape
    }

    /// Adds one value. Returns whether the structure changed: a kind or a field appeared here or
    /// below, or a field that every earlier object had was missing.
    ///
    /// Equivalent to `self.merge(&Shape::of(value))`, without building the intermediate shape.
    pub fn absorb(&mut self, value: &Value) -> bool {
        self.absorb_any(value)
    }

    /// [`Shape::absorb`] for a value read through [`Json`]: a `&Value` or an import's tape.
    pub(crate) fn absorb_any<'a>(&mut self, value: impl Json<'a>) -> bool {
        match value.view() {
            View::Null => self.absorb_null(),
            View::Bool(b) => self.absorb_bool(b),
            View::Integer(i) => self.absorb_integer(i),
            View::Number(f) => self.absorb_number(f),
            View::String(s) | View::Plain(s) => self.absorb_string(s),
            View::Array(len, items) => {
                let (array, mut changed) = self.array_slot(len as u64);
                for item in items {
                    changed |= array.items.absorb_any(item);
                }
                changed
            }
            View::Object(fields) => {
                self.count += 1;
                let mut changed = false;
                let object = self.object.get_or_insert_with(|| {
                    changed = true;
                    ObjectShape::default()
                });
                let before = object.count;
                object.count += 1;
                if let Some(held) = &mut object.map {
                    for (key, item) in fields {
                        held.add_key(key, 1);
                        changed |= held.values.absorb_any(item);
                    }
                    return changed;
                }
                // A field every earlier object had, missing here: required became optional.
                // Told during the one walk: a known field passed over, or left after the last
                // key, is missing here.
                let mut required_missing = false;
                // Both in key order: one walk through the known fields, not a search per key.
                let mut new = Vec::new();
                let mut known = object.fields.iter_mut().peekable();
                for (key, item) in fields {
                    while let Some((_, skipped)) = known.next_if(|(k, _)| k.as_str() < key) {
                        required_missing |= skipped.count == before;
                    }
                    match known.next_if(|(k, _)| k.as_str() == key) {
                        Some((_, field)) => changed |= field.absorb_any(item),
                        None => new.push((key, item)),
                    }
                }
                required_missing |= known.any(|(_, left)| left.count == before);
                for (key, item) in new {
                    changed = true;
                    let mut field = Shape::default();
                    field.absorb_any(item);
                    object.fields.insert(key.to_owned(), field);
                }
                if object.fields.len() > MAP_KEY_LIMIT {
                    object.collapse();
                    return true;
                }
                changed || (before > 0 && required_missing)
            }
        }
    }

    /// Adds one value from its JSON text, without building a `serde_json::Value`: the fast path
    /// for bulk inference. Gives the same shape as parsing and calling [`Shape::absorb`] (a key
    /// repeated inside one object, which a parsed value would keep only once, counts twice).
    /// On malformed text the shape may have absorbed part of the value.
    pub fn absorb_json(&mut self, text: &str) -> Result<(), serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        serde::de::DeserializeSeed::deserialize(Absorb(self), &mut deserializer)?;
        deserializer.end()
    }

    fn absorb_null(&mut self) -> bool {
        self.count += 1;
        self.null += 1;
        self.null == 1
    }

    fn absorb_bool(&mut self, b: bool) -> bool {
        self.count += 1;
        let mut changed = false;
        let shape = self.boolean.get_or_insert_with(|| {
            changed = true;
            BoolShape::default()
        });
        shape.count += 1;
        shape.trues += u64::from(b);
        changed
    }

    fn absorb_integer(&mut self, i: i128) -> bool {
        if i > i128::from(i64::MAX) {
            // A Number, as [`Kind::of`] says: no BIGINT column could hold it.
            return self.absorb_number(i as f64);
        }
        self.count += 1;
        match &mut self.integer {
            Some(shape) => {
                shape.count += 1;
                shape.min = shape.min.min(i);
                shape.max = shape.max.max(i);
                false
            }
            None => {
                self.integer = Some(IntegerShape {
                    count: 1,
                    min: i,
                    max: i,
                });
                true
            }
        }
    }

    fn absorb_number(&mut self, f: f64) -> bool {
        self.count += 1;
        match &mut self.number {
            Some(shape) => {
                shape.count += 1;
                shape.min = shape.min.min(f);
                shape.max = shape.max.max(f);
                false
            }
            None => {
                self.number = Some(NumberShape {
                    count: 1,
                    min: f,
                    max: f,
                });
                true
            }
        }
    }

    fn absorb_string(&mut self, s: &str) -> bool {
        self.count += 1;
        let mut changed = false;
        let shape = self.string.get_or_insert_with(|| {
            changed = true;
            StringShape {
                count: 0,
                formats: Formats::default(),
                values: Some(BTreeMap::new()),
            }
        });
        shape.count += 1;
        if let Some(format) = Format::detect(s) {
            shape.formats.add(format);
        }
        if let Some(values) = &mut shape.values {
            if s.len() > ENUM_VALUE_MAX_BYTES {
                shape.values = None;
            } else if let Some(n) = values.get_mut(s) {
                *n += 1;
            } else if values.len() < ENUM_TRACK_LIMIT {
                values.insert(s.to_owned(), 1);
            } else {
                shape.values = None;
            }
        }
        changed
    }

    /// Counts one array of `len` items here; the caller adds the items.
    fn array_slot(&mut self, len: u64) -> (&mut ArrayShape, bool) {
        self.count += 1;
        let mut changed = false;
        let array = self.array.get_or_insert_with(|| {
            changed = true;
            Box::new(ArrayShape {
                count: 0,
                min_len: len,
                max_len: len,
                items: Shape::default(),
            })
        });
        array.count += 1;
        array.min_len = array.min_len.min(len);
        array.max_len = array.max_len.max(len);
        (array, changed)
    }

    /// Combines two shapes: the shape of the union of their value multisets. Associative and
    /// commutative (see the module docs and the property tests).
    pub fn merge(&mut self, other: &Shape) {
        self.count += other.count;
        self.null += other.null;
        merge_option(&mut self.boolean, &other.boolean, |a, b| {
            a.count += b.count;
            a.trues += b.trues;
        });
        merge_option(&mut self.integer, &other.integer, |a, b| {
            a.count += b.count;
            a.min = a.min.min(b.min);
            a.max = a.max.max(b.max);
        });
        merge_option(&mut self.number, &other.number, |a, b| {
            a.count += b.count;
            a.min = a.min.min(b.min);
            a.max = a.max.max(b.max);
        });
        merge_option(&mut self.string, &other.string, |a, b| {
            a.count += b.count;
            a.formats.merge(&b.formats);
            a.values = match (a.values.take(), &b.values) {
                (Some(mut mine), Some(theirs)) => {
                    for (value, n) in theirs {
                        *mine.entry(value.clone()).or_insert(0) += n;
                    }
                    (mine.len() <= ENUM_TRACK_LIMIT).then_some(mine)
                }
                _ => None,
            };
        });
        merge_option(&mut self.array, &other.array, |a, b| {
            a.count += b.count;
            a.min_len = a.min_len.min(b.min_len);
            a.max_len = a.max_len.max(b.max_len);
            a.items.merge(&b.items);
        });
        merge_option(&mut self.object, &other.object, |a, b| {
            a.count += b.count;
            let keys = a.fields.len()
                + b.fields
                    .keys()
                    .filter(|k| !a.fields.contains_key(*k))
                    .count();
            if a.map.is_some() || b.map.is_some() || keys > MAP_KEY_LIMIT {
                a.collapse();
                let mut theirs = ObjectShape {
                    count: b.count,
                    fields: b.fields.clone(),
                    map: b.map.clone(),
                };
                theirs.collapse();
                if let (Some(mine), Some(theirs)) = (&mut a.map, &theirs.map) {
                    mine.merge(theirs);
                }
                return;
            }
            for (key, field) in &b.fields {
                match a.fields.get_mut(key) {
                    Some(mine) => mine.merge(field),
                    None => {
                        a.fields.insert(key.clone(), field.clone());
                    }
                }
            }
        });
    }

    /// The kinds seen here, in a fixed order.
    pub fn kinds(&self) -> Vec<Kind> {
        let mut kinds = Vec::new();
        if self.null > 0 {
            kinds.push(Kind::Null);
        }
        if self.boolean.is_some() {
            kinds.push(Kind::Boolean);
        }
        if self.integer.is_some() {
            kinds.push(Kind::Integer);
        }
        if self.number.is_some() {
            kinds.push(Kind::Number);
        }
        if self.string.is_some() {
            kinds.push(Kind::String);
        }
        if self.array.is_some() {
            kinds.push(Kind::Array);
        }
        if self.object.is_some() {
            kinds.push(Kind::Object);
        }
        kinds
    }

    /// The kinds other than null.
    pub fn non_null_kinds(&self) -> Vec<Kind> {
        self.kinds()
            .into_iter()
            .filter(|k| *k != Kind::Null)
            .collect()
    }

    /// How many values of a kind were seen.
    pub fn kind_count(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Null => self.null,
            Kind::Boolean => self.boolean.as_ref().map_or(0, |s| s.count),
            Kind::Integer => self.integer.as_ref().map_or(0, |s| s.count),
            Kind::Number => self.number.as_ref().map_or(0, |s| s.count),
            Kind::String => self.string.as_ref().map_or(0, |s| s.count),
            Kind::Array => self.array.as_ref().map_or(0, |s| s.count),
            Kind::Object => self.object.as_ref().map_or(0, |s| s.count),
        }
    }

    /// The format every string here has, if they all share one.
    pub fn string_format(&self) -> Option<Format> {
        let string = self.string.as_ref()?;
        Format::ALL
            .into_iter()
            .find(|f| string.count > 0 && string.formats.count_of(*f) == string.count)
    }

    /// The string values, when they look like an enum: every non-null value is a string without
    /// a format (emails and dates are not categories), there are at most `max_values` distinct
    /// ones (and at least two: a constant is not a category), at least `min_records` strings
    /// were seen, and some value repeats.
    pub fn string_enum(&self, max_values: usize, min_records: u64) -> Option<Vec<&str>> {
        let string = self.string.as_ref()?;
        let values = string.values.as_ref()?;
        let only_strings = self.non_null_kinds() == [Kind::String];
        (only_strings
            && self.string_format().is_none()
            && values.len() >= 2
            && values.len() <= max_values
            && string.count >= min_records
            && values.len() < string.count as usize)
            .then(|| values.keys().map(String::as_str).collect())
    }

    /// The shape at a path (`[]` and `[n]` both step into array items).
    pub fn at(&self, path: &FieldPath) -> Option<&Shape> {
        let mut shape = self;
        for segment in &path.0 {
            shape = match segment {
                Segment::Key(key) => {
                    let object = shape.object.as_ref()?;
                    match &object.map {
                        Some(map) => &map.values,
                        None => object.fields.get(key)?,
                    }
                }
                Segment::Index(_) | Segment::Items => &shape.array.as_ref()?.items,
            };
        }
        Some(shape)
    }

    /// Every field path below this shape (object keys and array items), depth first, with its
    /// shape and its presence ratio in its parent.
    pub fn fields(&self) -> Vec<FieldInfo<'_>> {
        let mut out = Vec::new();
        self.collect_fields(&FieldPath::root(), &mut out);
        out
    }

    fn collect_fields<'a>(&'a self, at: &FieldPath, out: &mut Vec<FieldInfo<'a>>) {
        if let Some(object) = &self.object {
            for (key, field) in &object.fields {
                let path = at.key(key);
                out.push(FieldInfo {
                    path: path.clone(),
                    shape: field,
                    presence: ratio(field.count, object.count),
                });
                field.collect_fields(&path, out);
            }
        }
        if let Some(array) = &self.array
            && array.items.count > 0
        {
            let path = at.child(Segment::Items);
            out.push(FieldInfo {
                path: path.clone(),
                shape: &array.items,
                presence: 1.0,
            });
            array.items.collect_fields(&path, out);
        }
    }

    /// This shape as it settles: every object position that [`ObjectShape::settles_as_map`]
    /// held as a map, so the schema, the DDL and the context text all see one decision.
    /// Idempotent, and a function of the shape alone (so of the data, not of its order).
    pub fn settled_form(&self) -> Shape {
        let mut shape = self.clone();
        shape.settle_maps();
        shape
    }

    fn settle_maps(&mut self) {
        if let Some(object) = &mut self.object {
            if object.settles_as_map() {
                object.collapse();
            }
            match &mut object.map {
                Some(map) => map.values.settle_maps(),
                None => object.fields.values_mut().for_each(Shape::settle_maps),
            }
        }
        if let Some(array) = &mut self.array {
            array.items.settle_maps();
        }
    }

    /// This shape without the fields at `paths` (used to leave pending proposals out of a
    /// settled schema).
    pub fn without(&self, paths: &[FieldPath]) -> Shape {
        let mut shape = self.clone();
        for path in paths {
            shape.remove(&path.0);
        }
        shape
    }

    fn remove(&mut self, segments: &[Segment]) {
        match segments {
            [] => {}
            [Segment::Key(key)] => {
                if let Some(object) = &mut self.object {
                    object.fields.remove(key);
                }
            }
            [Segment::Key(key), rest @ ..] => {
                if let Some(field) = self.object.as_mut().and_then(|o| o.fields.get_mut(key)) {
                    field.remove(rest);
                }
            }
            [Segment::Items | Segment::Index(_), rest @ ..] => {
                if let Some(array) = &mut self.array {
                    array.items.remove(rest);
                }
            }
        }
    }

    /// A short type label: `integer`, `string(email)`, `string|null`, `string[]`, `object`.
    pub fn label(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for kind in self.kinds() {
            let part = match kind {
                Kind::String => match self.string_format() {
                    Some(format) => format!("string({})", format.name()),
                    None => "string".to_owned(),
                },
                Kind::Array => match &self.array {
                    Some(array) if array.items.count > 0 => {
                        let items = array.items.label();
                        if items.contains('|') {
                            format!("({items})[]")
                        } else {
                            format!("{items}[]")
                        }
                    }
                    _ => "[]".to_owned(),
                },
                Kind::Object => match self.object.as_ref().and_then(|o| o.map.as_ref()) {
                    Some(map) if map.values.count > 0 => format!("{{[k]: {}}}", map.values.label()),
                    _ => "object".to_owned(),
                },
                other => other.name().to_owned(),
            };
            parts.push(part);
        }
        if parts.is_empty() {
            "nothing".to_owned()
        } else {
            parts.join("|")
        }
    }

    /// A readable tree, one field per line, for `improv ledger`; maps (see
    /// [`Shape::settled_form`]) are one line, `{[k]: T}`, not one line per key.
    pub fn tree(&self, enum_max: usize, enum_min_records: u64) -> String {
        let settled = self.settled_form();
        let fields = settled.fields();
        let width = fields
            .iter()
            .map(|f| 2 * (f.path.0.len() - 1) + last_name(&f.path).chars().count())
            .max()
            .unwrap_or(0)
            .min(40);
        let mut out = String::new();
        for field in &fields {
            let indent = "  ".repeat(field.path.0.len() - 1);
            let name = last_name(&field.path);
            let mut line = format!("{indent}{name}");
            let pad = width.saturating_sub(indent.len() + name.chars().count());
            line.push_str(&" ".repeat(pad + 2));
            line.push_str(&field.shape.label());
            let mut notes = Vec::new();
            if field.presence < 1.0 {
                notes.push(format!("optional {:.0}%", field.presence * 100.0));
            }
            let kinds = field.shape.kinds();
            if kinds.len() > 1 {
                let counts: Vec<String> = kinds
                    .iter()
                    .map(|k| format!("{} {}", k.name(), field.shape.kind_count(*k)))
                    .collect();
                notes.push(counts.join(", "));
            }
            if let Some(integer) = &field.shape.integer {
                notes.push(format!("{}..{}", integer.min, integer.max));
            } else if let Some(number) = &field.shape.number {
                notes.push(format!("{}..{}", number.min, number.max));
            }
            if let Some(values) = field.shape.string_enum(enum_max, enum_min_records) {
                notes.push(format!("one of {}", values.join(", ")));
            }
            if !notes.is_empty() {
                line.push_str("  (");
                line.push_str(&notes.join("; "));
                line.push(')');
            }
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

/// Folds a value into a shape while it is being parsed (see [`Shape::absorb_json`]).
struct Absorb<'a>(&'a mut Shape);

impl<'de> serde::de::DeserializeSeed<'de> for Absorb<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Absorb<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.absorb_null();
        Ok(())
    }

    fn visit_bool<E>(self, b: bool) -> Result<(), E> {
        self.0.absorb_bool(b);
        Ok(())
    }

    fn visit_i64<E>(self, i: i64) -> Result<(), E> {
        self.0.absorb_integer(i128::from(i));
        Ok(())
    }

    fn visit_u64<E>(self, u: u64) -> Result<(), E> {
        self.0.absorb_integer(i128::from(u));
        Ok(())
    }

    fn visit_f64<E>(self, f: f64) -> Result<(), E> {
        self.0.absorb_number(f);
        Ok(())
    }

    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        self.0.absorb_string(s);
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let shape = self.0;
        let mut len = 0u64;
        if let Some(array) = &mut shape.array {
            while seq.next_element_seed(Absorb(&mut array.items))?.is_some() {
                len += 1;
            }
            shape.count += 1;
            array.count += 1;
            array.min_len = array.min_len.min(len);
            array.max_len = array.max_len.max(len);
        } else {
            let mut items = Shape::default();
            while seq.next_element_seed(Absorb(&mut items))?.is_some() {
                len += 1;
            }
            shape.array_slot(len).0.items = items;
        }
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.0.count += 1;
        let object = self.0.object.get_or_insert_with(ObjectShape::default);
        object.count += 1;
        if let Some(held) = &mut object.map {
            while let Some(key) = map.next_key_seed(Key)? {
                held.add_key(&key, 1);
                map.next_value_seed(Absorb(&mut held.values))?;
            }
            return Ok(());
        }
        while let Some(key) = map.next_key_seed(Key)? {
            match object.fields.get_mut(key.as_ref()) {
                Some(field) => map.next_value_seed(Absorb(field))?,
                None => {
                    let mut field = Shape::default();
                    map.next_value_seed(Absorb(&mut field))?;
                    object.fields.insert(key.into_owned(), field);
                }
            }
        }
        if object.fields.len() > MAP_KEY_LIMIT {
            object.collapse();
        }
        Ok(())
    }
}

/// An object key, borrowed from the input when it has no escapes.
struct Key;

impl<'de> serde::de::DeserializeSeed<'de> for Key {
    type Value = std::borrow::Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Key {
    type Value = std::borrow::Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Borrowed(s))
    }

    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(std::borrow::Cow::Owned(s.to_owned()))
    }
}

fn last_name(path: &FieldPath) -> String {
    match path.0.last() {
        Some(Segment::Key(key)) => FieldPath(vec![Segment::Key(key.clone())]).to_string(),
        Some(Segment::Items) => "[]".to_owned(),
        Some(Segment::Index(i)) => format!("[{i}]"),
        None => String::new(),
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

fn merge_option<T: Clone>(
    mine: &mut Option<T>,
    theirs: &Option<T>,
    merge: impl FnOnce(&mut T, &T),
) {
    match (mine.as_mut(), theirs) {
        (Some(a), Some(b)) => merge(a, b),
        (None, Some(b)) => *mine = Some(b.clone()),
        (_, None) => {}
    }
}

/// One field of a shape, as [`Shape::fields`] lists them.
#[derive(Clone, Debug)]
pub struct FieldInfo<'a> {
    pub path: FieldPath,
    pub shape: &'a Shape,
    /// The share of parent objects that have this field (1.0 for array items).
    pub presence: f64,
}

/// Two fields of one object that look like one field under two names: their names are equal once
/// case, `_`, `-` and spaces are dropped, or differ by one edit (two for long names), and no
/// object has both (as far as the counts can tell: their counts fit side by side).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RenameSuspect {
    pub first: FieldPath,
    pub second: FieldPath,
    pub first_count: u64,
    pub second_count: u64,
}

/// The fields that look like renames of one another. See [`RenameSuspect`].
pub fn rename_suspects(shape: &Shape) -> Vec<RenameSuspect> {
    let mut out = Vec::new();
    collect_suspects(shape, &FieldPath::root(), &mut out);
    out
}

fn collect_suspects(shape: &Shape, at: &FieldPath, out: &mut Vec<RenameSuspect>) {
    // A map's keys are data: two similar package names are not one field under two names.
    if let Some(object) = &shape.object
        && object.settles_as_map()
    {
        if let Some(map) = &object.map {
            collect_suspects(&map.values, at, out);
        }
    } else if let Some(object) = &shape.object {
        let keys: Vec<(&String, &Shape, String)> = object
            .fields
            .iter()
            .map(|(k, s)| (k, s, normalise_name(k)))
            .collect();
        for (i, (a, sa, na)) in keys.iter().enumerate() {
            for (b, sb, nb) in &keys[i + 1..] {
                let similar = na == nb || {
                    let len = na.chars().count().min(nb.chars().count());
                    let distance = strsim::damerau_levenshtein(na, nb);
                    (len >= 5 && distance <= 1) || (len >= 9 && distance <= 2)
                };
                if similar && sa.count + sb.count <= object.count {
                    out.push(RenameSuspect {
                        first: at.key(a),
                        second: at.key(b),
                        first_count: sa.count,
                        second_count: sb.count,
                    });
                }
            }
        }
        for (key, field) in &object.fields {
            collect_suspects(field, &at.key(key), out);
        }
    }
    if let Some(array) = &shape.array {
        collect_suspects(&array.items, &at.child(Segment::Items), out);
    }
}

fn normalise_name(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '_' | '-' | ' ' | '.'))
        .flat_map(char::to_lowercase)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_kinds_presence_and_ranges() {
        let mut shape = Shape::default();
        for value in [
            json!({"name": "a", "score": 3, "tags": ["x"], "at": "2025-01-02T03:04:05Z"}),
            json!({"name": "b", "score": 9.5, "tags": [], "at": "2025-01-03T00:00:00+01:00"}),
            json!({"name": null, "score": -2}),
        ] {
            shape.absorb(&value);
        }
        let object = shape.object.as_ref().unwrap();
        assert_eq!(object.count, 3);
        let score = &object.fields["score"];
        assert_eq!(score.integer.as_ref().unwrap().min, -2);
        assert_eq!(score.integer.as_ref().unwrap().max, 3);
        assert_eq!(score.number.as_ref().unwrap().count, 1);
        assert_eq!(object.fields["name"].null, 1);
        assert_eq!(object.fields["tags"].count, 2);
        assert_eq!(
            shape
                .at(&FieldPath::parse("at").unwrap())
                .unwrap()
                .string_format(),
            Some(Format::DateTime)
        );
        assert_eq!(object.fields["tags"].label(), "string[]");
        assert_eq!(object.fields["name"].label(), "null|string");
    }

    #[test]
    fn detects_formats() {
        assert_eq!(Format::detect("2024-02-29"), Some(Format::Date));
        assert_eq!(Format::detect("2023-02-29"), None);
        assert_eq!(
            Format::detect("2024-02-29T10:00:00.5Z"),
            Some(Format::DateTime)
        );
        assert_eq!(Format::detect("ana@example.org"), Some(Format::Email));
        assert_eq!(Format::detect("ana at example"), None);
        assert_eq!(Format::detect("https://a.example/x?y"), Some(Format::Uri));
        assert_eq!(Format::detect("git+ssh://host/x"), Some(Format::Uri));
        for not_uri in [
            "https://",
            "1http://x",
            "a b://x",
            "see http://x",
            "://x",
            "x:/y",
        ] {
            assert_eq!(Format::detect(not_uri), None, "{not_uri}");
        }
        assert_eq!(
            Format::detect("67e55044-10b1-426f-9247-bb680e5fe0c8"),
            Some(Format::Uuid)
        );
        // The shortest of each is still told (strings shorter are not looked at).
        assert_eq!(Format::detect("a@b.c"), Some(Format::Email));
        assert_eq!(Format::detect("a://b"), Some(Format::Uri));
        // A uuid with any one character wrong is none: a dash for a digit, a digit for a dash,
        // a letter beyond f.
        let uuid = "67E55044-10b1-426f-9247-bb680e5fe0c8";
        for i in 0..uuid.len() {
            let mut wrong = uuid.as_bytes().to_vec();
            wrong[i] = if wrong[i] == b'-' { b'a' } else { b'-' };
            assert_eq!(
                Format::detect(std::str::from_utf8(&wrong).unwrap()),
                None,
                "{i}"
            );
            wrong[i] = b'g';
            assert_eq!(
                Format::detect(std::str::from_utf8(&wrong).unwrap()),
                None,
                "{i}"
            );
        }
        assert_eq!(Format::detect(uuid), Some(Format::Uuid));
        assert_eq!(Format::detect("NaN"), None);
        assert_eq!(Format::detect("2024-13-01"), None);
    }

    /// The shortcut for `…THH:MM:SSZ` says what the `time` crate's RFC 3339 parser says, on
    /// times in range, just out of range and in other forms.
    #[test]
    fn plain_utc_times_are_told_as_the_rfc3339_parser_tells_them() {
        let rfc3339 = &time::format_description::well_known::Rfc3339;
        let mut plain = 0;
        for h in ["00", "09", "23", "24", "29", "1a"] {
            for m in ["00", "59", "60", "99"] {
                for sec in ["00", "59", "60", "61", "9x"] {
                    for zone in ["Z", "z", "+01:00", ".5Z"] {
                        for t in ["T", "t", " "] {
                            let text = format!("2024-02-29{t}{h}:{m}:{sec}{zone}");
                            let parsed = time::OffsetDateTime::parse(&text, rfc3339).is_ok();
                            if is_plain_utc_time(&text.as_bytes()[10..]) {
                                plain += 1;
                                assert!(parsed, "{text} is taken but is not RFC 3339");
                            }
                            assert_eq!(
                                Format::detect(&text) == Some(Format::DateTime),
                                parsed,
                                "{text}"
                            );
                        }
                    }
                }
            }
        }
        assert_eq!(
            plain,
            3 * 2 * 2,
            "in-range THH:MM:SSZ is taken without the parser"
        );
    }

    #[test]
    fn structural_change_is_reported() {
        let mut shape = Shape::default();
        assert!(shape.absorb(&json!({"a": 1, "b": "x"})));
        assert!(!shape.absorb(&json!({"a": 2, "b": "y"})));
        assert!(shape.absorb(&json!({"a": 2})), "b became optional");
        assert!(!shape.absorb(&json!({"a": 2})));
        assert!(shape.absorb(&json!({"a": "two"})), "a new kind");
        assert!(shape.absorb(&json!({"a": 1, "c": [1]})), "a new field");
        assert!(
            shape.absorb(&json!({"a": 1, "c": [1.5]})),
            "a new item kind"
        );
        assert!(!shape.absorb(&json!({"a": 1, "c": [2, 3.5]})));
    }

    #[test]
    fn enums_overflow_and_long_values_are_not_enums() {
        let mut shape = Shape::default();
        for i in 0..30 {
            shape.absorb(&json!(["new", "won", "lost"][i % 3]));
        }
        assert_eq!(shape.string_enum(8, 20), Some(vec!["lost", "new", "won"]));
        assert_eq!(shape.string_enum(2, 20), None);
        assert_eq!(shape.string_enum(8, 40), None);
        for i in 0..ENUM_TRACK_LIMIT {
            shape.absorb(&json!(format!("v{i}")));
        }
        assert!(shape.string.as_ref().unwrap().values.is_none());
        let long = Shape::of(&json!("x".repeat(ENUM_VALUE_MAX_BYTES + 1)));
        assert!(long.string.as_ref().unwrap().values.is_none());
    }

    #[test]
    fn finds_rename_suspects() {
        let mut shape = Shape::default();
        for i in 0..4 {
            shape.absorb(&json!({"email": "a@b.co", "name": i}));
            shape.absorb(&json!({"e_mail": "a@b.co", "name": i}));
            shape.absorb(&json!({"customerName": "x", "customer_name_": "y", "name": i}));
        }
        let suspects = rename_suspects(&shape);
        let pairs: Vec<(String, String)> = suspects
            .iter()
            .map(|s| (s.first.to_string(), s.second.to_string()))
            .collect();
        // Counts alone cannot tell that customerName and customer_name_ share entries (4 + 4 of
        // 12 objects fit side by side); the ledger checks candidates against its entries.
        assert_eq!(
            pairs,
            vec![
                ("customerName".into(), "customer_name_".into()),
                ("e_mail".into(), "email".into())
            ]
        );
        let mut both = Shape::default();
        for _ in 0..3 {
            both.absorb(&json!({"email": "a@b.co", "e_mail": "a@b.co"}));
        }
        assert!(
            rename_suspects(&both).is_empty(),
            "present together: not a rename"
        );
    }

    #[test]
    fn maps_are_told_apart_from_records() {
        let mut shape = Shape::default();
        for i in 0..40 {
            shape.absorb(&json!({
                // A record of ten optional fields, each in half the entries: stays a record.
                "profile": (0..10).filter(|f| (i + f) % 2 == 0)
                    .map(|f| (format!("field{f}"), json!("x"))).collect::<serde_json::Map<_, _>>(),
                // Keys per entry out of many: a map (mean presence 0.05, one value kind).
                "scripts": {format!("task{}", i % 20): "run", format!("step{i}"): "go"},
                // Keys that look like data (scoped packages, paths): a map though values vary.
                "exports": {format!("./sub{}", i % 9): if i % 2 == 0 { json!("./x.js") } else { json!({"import": "./x.mjs"}) }},
                "small": {"a": 1, "b": format!("{i}")},
            }));
        }
        let settled = shape.settled_form();
        let is_map = |key: &str| {
            settled.object.as_ref().unwrap().fields[key]
                .object
                .as_ref()
                .unwrap()
                .map
                .is_some()
        };
        assert!(is_map("scripts"));
        assert!(is_map("exports"));
        assert!(!is_map("profile"));
        assert!(!is_map("small"));
        assert_eq!(settled.settled_form(), settled);
        let scripts = &settled.object.as_ref().unwrap().fields["scripts"];
        assert_eq!(scripts.label(), "{[k]: string}");
    }

    #[test]
    fn past_the_key_limit_a_position_is_held_as_a_map() {
        let mut shape = Shape::default();
        let mut halves = (Shape::default(), Shape::default());
        for i in 0..=MAP_KEY_LIMIT {
            let value = json!({"deps": {format!("@s/p{i}"): "1.0"}});
            shape.absorb(&value);
            if i % 2 == 0 {
                halves.0.absorb(&value);
            } else {
                halves.1.absorb(&value);
            }
        }
        let object = shape.object.as_ref().unwrap().fields["deps"]
            .object
            .as_ref()
            .unwrap();
        assert!(object.fields.is_empty());
        let map = object.map.as_ref().unwrap();
        assert_eq!(
            (map.entries, map.data_keys),
            (MAP_KEY_LIMIT as u64 + 1, MAP_KEY_LIMIT as u64 + 1)
        );
        assert!(
            halves.0.object.as_ref().unwrap().fields["deps"]
                .object
                .as_ref()
                .unwrap()
                .map
                .is_none()
        );
        halves.0.merge(&halves.1);
        assert_eq!(halves.0, shape);
        assert!(
            !shape.absorb(&json!({"deps": {"new-key": "2.0"}})),
            "a new key in a map is no new field"
        );
    }

    #[test]
    fn shapes_round_trip_through_json_with_wide_integers() {
        let shape = Shape::of(&json!({"big": u64::MAX, "small": i64::MIN, "f": 1.5}));
        let text = serde_json::to_string(&shape).unwrap();
        let back: Shape = serde_json::from_str(&text).unwrap();
        assert_eq!(back, shape);
    }
}
