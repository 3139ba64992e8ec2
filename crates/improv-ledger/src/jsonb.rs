//! An entry's value in SQLite's JSONB encoding, byte for byte what SQLite's `jsonb()` makes of the
//! value's compact JSON text, written straight from the value so that storing an entry neither
//! serializes it to text nor has SQLite parse that text again (together a sixth of an import's
//! time). Hand-written: no crate writes SQLite's JSONB; the format is SQLite's documented one
//! (a header byte: type in the low 4 bits, payload size in the high 4 or in 1, 2 or 4 bytes
//! after it, always the smallest, as SQLite writes it). A test checks it against SQLite.

use crate::tape::{Json, View};
use serde_json::Value;
use std::fmt::Write;

/// JSONB node types used for standard JSON.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Node {
    Null = 0,
    True = 1,
    False = 2,
    Int = 3,
    Float = 5,
    /// A string with nothing escaped.
    Text = 7,
    /// A string holding JSON escapes, kept escaped.
    TextJ = 8,
    Array = 11,
    Object = 12,
}

/// `value` (a `&Value` or a parsed tape, see [`crate::tape`]) as JSONB, appended to `out`.
pub(crate) fn encode<'a>(value: impl Json<'a>, out: &mut Vec<u8>) {
    encode_node(value, GUESS, out);
}

/// [`encode`] for an entry parsed from `text_len` bytes of JSON text. Its payload is about that
/// long, so the room kept for its header is the size that length takes: a typical entry of a
/// few hundred bytes has a 3-byte header, and guessing 2 moved every entry's bytes by one.
pub(crate) fn encode_entry<'a>(value: impl Json<'a>, text_len: usize, out: &mut Vec<u8>) {
    encode_node(value, header(Node::Object, text_len).1, out);
}

/// The header size room is kept for before a nested container's items: 2 bytes, for payloads of
/// 12 to 255 bytes, the usual size of a record.
const GUESS: usize = 2;

fn encode_node<'a>(value: impl Json<'a>, guess: usize, out: &mut Vec<u8>) {
    match value.view() {
        View::Null => out.push(Node::Null as u8),
        View::Bool(true) => out.push(Node::True as u8),
        View::Bool(false) => out.push(Node::False as u8),
        View::Integer(i) => {
            // Written on the stack by itoa (a third of the time `core::fmt` took here), then
            // put behind its header: no move of the bytes written. Every integer here fits in
            // an i64 or a u64, whose formatting is quicker than an i128's.
            let mut digits = itoa::Buffer::new();
            let text = match (i64::try_from(i), u64::try_from(i)) {
                (Ok(i), _) => digits.format(i),
                (_, Ok(u)) => digits.format(u),
                _ => digits.format(i),
            };
            leaf(out, Node::Int, text.as_bytes());
        }
        View::Number(f) => {
            // As serde_json writes the number: the text SQLite's jsonb() would have parsed.
            let Some(number) = serde_json::Number::from_f64(f) else {
                // Parsed JSON holds no infinity or NaN; were one here, null is what serde_json
                // writes for it.
                out.push(Node::Null as u8);
                return;
            };
            let mut text = Digits::default();
            let _ = write!(text, "{number}");
            let text = text.as_bytes();
            let node = if text.iter().any(|b| matches!(b, b'.' | b'e' | b'E')) {
                Node::Float
            } else {
                Node::Int
            };
            leaf(out, node, text);
        }
        View::String(s) => string(s, out),
        View::Plain(s) => leaf(out, Node::Text, s.as_bytes()),
        View::Array(_, items) => container(out, Node::Array, guess, |out| {
            for item in items {
                encode_node(item, GUESS, out);
            }
        }),
        View::Object(fields) => container(out, Node::Object, guess, |out| {
            for (key, item) in fields {
                string(key, out);
                encode_node(item, GUESS, out);
            }
        }),
    }
}

/// A string as JSON text would carry it: escaped (as serde_json escapes) only where needed.
fn string(s: &str, out: &mut Vec<u8>) {
    if needs_escape(s.as_bytes()) {
        let quoted = Value::String(s.to_owned()).to_string();
        leaf(out, Node::TextJ, &quoted.as_bytes()[1..quoted.len() - 1]);
    } else {
        leaf(out, Node::Text, s.as_bytes());
    }
}

/// Whether a string holds a byte JSON text must escape: 16 bytes at a time without a branch per
/// byte, which the compiler turns into vector compares (a short-circuiting `any` went byte by
/// byte, and most strings have nothing to escape).
fn needs_escape(bytes: &[u8]) -> bool {
    let special = |b: u8| (b < 0x20) | (b == b'"') | (b == b'\\');
    let mut chunks = bytes.chunks_exact(16);
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |found, &b| found | special(b)) {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| special(b))
}

fn leaf(out: &mut Vec<u8>, node: Node, payload: &[u8]) {
    let (header, len) = header(node, payload.len());
    out.extend_from_slice(&header[..len]);
    out.extend_from_slice(payload);
}

/// Writes a container's items, then puts its header in front of them. Room for a header of
/// `guess` bytes is kept before the items, so the items move only when their header turns out
/// to be another size.
fn container(out: &mut Vec<u8>, node: Node, guess: usize, items: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; 5][..guess]);
    items(out);
    let (header, len) = header(node, out.len() - start - guess);
    // The items move by one memmove when the header is not the guessed size (a splice would
    // copy them byte by byte).
    let end = out.len();
    if len > guess {
        out.resize(end + len - guess, 0);
        out.copy_within(start + guess..end, start + len);
    } else if len < guess {
        out.copy_within(start + guess..end, start + len);
        out.truncate(end - (guess - len));
    }
    out[start..start + len].copy_from_slice(&header[..len]);
}

/// A number's text, written on the stack: the longest (an i128, or a float as serde_json writes
/// it) is 40 bytes.
struct Digits {
    bytes: [u8; 48],
    len: usize,
}

impl Default for Digits {
    fn default() -> Self {
        Digits {
            bytes: [0; 48],
            len: 0,
        }
    }
}

impl Digits {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl std::fmt::Write for Digits {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let room = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        room.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The smallest header for a node of `size` payload bytes, and its length.
fn header(node: Node, size: usize) -> ([u8; 5], usize) {
    let node = node as u8;
    // The 4-byte form holds any entry the ledger accepts (entries are capped far below 4 GB);
    // truncation is impossible here, not silently tolerated.
    let size = u32::try_from(size).unwrap_or(u32::MAX);
    match size {
        0..=11 => ([node | ((size as u8) << 4), 0, 0, 0, 0], 1),
        12..=0xff => ([node | 0xc0, size as u8, 0, 0, 0], 2),
        0x100..=0xffff => {
            let [a, b] = (size as u16).to_be_bytes();
            ([node | 0xd0, a, b, 0, 0], 3)
        }
        _ => {
            let [a, b, c, d] = size.to_be_bytes();
            ([node | 0xe0, a, b, c, d], 5)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn sqlite_jsonb(conn: &rusqlite::Connection, value: &Value) -> Vec<u8> {
        conn.query_row("SELECT jsonb(?1)", [value.to_string()], |row| row.get(0))
            .expect("SQLite reads serde_json's text")
    }

    fn ours(value: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode(value, &mut out);
        out
    }

    #[test]
    fn matches_sqlite_on_every_kind_and_size() {
        let conn = rusqlite::Connection::open_in_memory().expect("in-memory SQLite");
        let long = "x".repeat(300);
        let longer = "y".repeat(70_000);
        for value in [
            json!(null),
            json!({"a": true, "b": false, "n": null}),
            json!({"i": 0, "neg": -17, "big": u64::MAX, "f": 1.5, "e": 1e300, "tiny": -2.5e-9}),
            json!({"s": "", "esc": "a\"b\\c\nd\te\u{1}f", "uni": "é日本\u{2028}", "slash": "a/b"}),
            json!({"nested": {"arr": [1, [2, [3, {}]], []], "o": {"k": "v"}}}),
            json!({"eleven": "12345678901", "twelve": "123456789012", "long": long}),
            json!({"longer": longer, "items": (0..5000).collect::<Vec<_>>()}),
        ] {
            let expected = sqlite_jsonb(&conn, &value);
            assert_eq!(ours(&value), expected, "{value}");
            // Whatever size of header the entry's text length makes it guess.
            for text_len in [0, 11, 200, 300, 70_000, 1 << 24] {
                let mut out = Vec::new();
                encode_entry(&value, text_len, &mut out);
                assert_eq!(out, expected, "{value} guessed from {text_len} bytes");
            }
        }
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<u64>().prop_map(|u| json!(u)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn matches_sqlite_on_any_value(value in arb_value()) {
            let conn = rusqlite::Connection::open_in_memory().expect("in-memory SQLite");
            prop_assert_eq!(ours(&value), sqlite_jsonb(&conn, &value));
        }
    }
}
