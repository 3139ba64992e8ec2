//! One JSON entry parsed once into a flat tape (a node per value, containers followed by their
//! contents, strings borrowed from the input where they have no escapes), and the [`Json`] view
//! that lets the JSONB encoder and shape inference read a tape or a `serde_json::Value` through
//! one code path each. An import parses every line this way: building a `Value` tree (a heap
//! node per value, a B-tree per object) was most of the reading thread's time, and the tape
//! needs only the one vector it reuses from line to line.
//!
//! Each object's fields are put in the order a `Value` holds them, sorted by key with the last of
//! a repeated key kept (serde_json's map without `preserve_order`), so what is stored and inferred
//! from a tape is byte for byte what the `Value` path gives; a test checks both on arbitrary JSON.
//! Written here rather than taken from a crate: simd-json's and sonic-rs's tapes keep the input's
//! key order and every duplicate, and their values are a new dependency for one loop; serde_json
//! already parses, so this is a serde visitor that writes nodes.

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use std::borrow::Cow;

/// A JSON value as the JSONB encoder and shape inference read it.
pub(crate) enum View<'a, I, F> {
    Null,
    Bool(bool),
    /// A number without fraction or exponent that fits in 64 bits.
    Integer(i128),
    /// Any other number (serde_json holds them as `f64`).
    Number(f64),
    String(&'a str),
    /// A string parsed from JSON text that held no escape: it has nothing JSON text escapes
    /// (a quote or backslash would have been one, and serde_json refuses raw control
    /// characters), so the encoder need not look.
    Plain(&'a str),
    /// Its length and its items.
    Array(usize, I),
    /// Its fields, sorted by key, each key once.
    Object(F),
}

/// Something readable as a JSON value: a `&Value` or a position on a [`Tape`]. An object's
/// fields come in key order, each key once (shape inference relies on it).
pub(crate) trait Json<'a>: Copy {
    type Items: Iterator<Item = Self>;
    type Fields: Iterator<Item = (&'a str, Self)>;
    fn view(self) -> View<'a, Self::Items, Self::Fields>;
}

type ValueFields<'a> =
    std::iter::Map<serde_json::map::Iter<'a>, fn((&'a String, &'a Value)) -> (&'a str, &'a Value)>;

fn field_of<'a>((key, value): (&'a String, &'a Value)) -> (&'a str, &'a Value) {
    (key.as_str(), value)
}

impl<'a> Json<'a> for &'a Value {
    type Items = std::slice::Iter<'a, Value>;
    type Fields = ValueFields<'a>;

    fn view(self) -> View<'a, Self::Items, Self::Fields> {
        match self {
            Value::Null => View::Null,
            Value::Bool(b) => View::Bool(*b),
            Value::Number(n) => match n
                .as_i64()
                .map(i128::from)
                .or_else(|| n.as_u64().map(i128::from))
            {
                Some(i) => View::Integer(i),
                // Without arbitrary precision, serde_json holds every other number as an f64.
                None => View::Number(n.as_f64().unwrap_or(0.0)),
            },
            Value::String(s) => View::String(s),
            Value::Array(items) => View::Array(items.len(), items.iter()),
            Value::Object(map) => View::Object(map.iter().map(field_of as fn(_) -> _)),
        }
    }
}

/// One node of a tape.
#[derive(Debug, PartialEq)]
enum Node<'a> {
    Null,
    Bool(bool),
    Integer(i128),
    Number(f64),
    /// A string value, or an object's key (each key comes right before its value).
    String(Cow<'a, str>),
    /// `len` items; `span` nodes from this one to the end of its last item.
    Array {
        len: usize,
        span: usize,
    },
    /// `len` fields (key and value nodes, in the input's order); `span` as for arrays; the
    /// fields in key order are `Tape::order[order..order + len]` (see `Tape::order_fields`).
    Object {
        len: usize,
        span: usize,
        order: usize,
    },
}

impl Node<'_> {
    fn span(&self) -> usize {
        match self {
            Node::Array { span, .. } | Node::Object { span, .. } => *span,
            _ => 1,
        }
    }
}

/// A parsed entry: reused from line to line (its vectors keep their capacity).
#[derive(Default)]
pub(crate) struct Tape<'a> {
    nodes: Vec<Node<'a>>,
    /// Nesting of the deepest container, counted as the ledger counts it (a scalar is 0, an
    /// object of scalars 1).
    depth: usize,
    /// Whether a number was written as an integer too wide for 64 bits (see [`is_wide_float`]).
    wide: bool,
    /// Every object's fields in key order, each object's a run: the index of each key node.
    order: Vec<usize>,
    /// Scratch space for ordering one object's fields: a key's first 8 bytes (big-endian, so
    /// that comparing them compares the keys' starts), and its key node.
    fields: Vec<(u64, usize)>,
}

/// Whether a float parsed from JSON was written as an integer beyond 64 bits, so that its text
/// must be kept verbatim beside the value (serde_json can hold it only as the nearest float).
pub(crate) fn is_wide_float(f: f64) -> bool {
    f.fract() == 0.0 && f.abs() >= 9.2e18
}

impl<'a> Tape<'a> {
    /// Parses `text` (one JSON value, whitespace around it allowed) into this tape, replacing
    /// what it held. On error the tape's content is unspecified.
    pub(crate) fn parse(&mut self, text: &'a [u8]) -> Result<(), serde_json::Error> {
        self.nodes.clear();
        self.order.clear();
        self.depth = 0;
        self.wide = false;
        // Checked as UTF-8 once, in one pass over the line: parsing bytes would check each
        // string on its own (a call per string, most of them short), text not at all.
        let text = std::str::from_utf8(text).map_err(|error| {
            <serde_json::Error as serde::de::Error>::custom(format!("not UTF-8 text ({error})"))
        })?;
        let mut deserializer = serde_json::Deserializer::from_str(text);
        Build {
            tape: self,
            level: 1,
        }
        .deserialize(&mut deserializer)?;
        deserializer.end()
    }

    /// This tape emptied, for text of another lifetime (the next line), keeping its memory:
    /// an empty vector's buffer is reused in place when collected into one of the same layout.
    pub(crate) fn recycle<'b>(mut self) -> Tape<'b> {
        self.nodes.clear();
        self.order.clear();
        Tape {
            nodes: self.nodes.into_iter().map(|_| Node::Null).collect(),
            depth: 0,
            wide: false,
            order: self.order,
            fields: self.fields,
        }
    }

    /// The parsed value.
    pub(crate) fn root(&self) -> At<'_, 'a> {
        At {
            nodes: &self.nodes,
            order: &self.order,
            i: 0,
        }
    }

    pub(crate) fn depth(&self) -> usize {
        self.depth
    }

    pub(crate) fn has_wide_number(&self) -> bool {
        self.wide
    }

    pub(crate) fn is_object(&self) -> bool {
        matches!(self.nodes.first(), Some(Node::Object { .. }))
    }

    /// Lists the fields of the object whose node is at `start` in key order, the last of a
    /// repeated key kept, as serde_json's map holds them; returns where the list starts in
    /// `order` and how many fields it has. The nodes stay where they are: only this list of
    /// key positions is sorted.
    fn order_fields(&mut self, start: usize) -> (usize, usize) {
        fn key<'n>(nodes: &'n [Node<'_>], i: usize) -> &'n [u8] {
            match &nodes[i] {
                Node::String(key) => key.as_bytes(),
                // Invariant: `Build` writes a key node before every field's value.
                _ => b"",
            }
        }
        let nodes = &self.nodes;
        self.fields.clear();
        let mut i = start + 1;
        while i < nodes.len() {
            let mut prefix = [0u8; 8];
            let k = key(nodes, i);
            let n = k.len().min(8);
            prefix[..n].copy_from_slice(&k[..n]);
            self.fields.push((u64::from_be_bytes(prefix), i));
            i += 1 + nodes[i + 1].span();
        }
        let compare = |a: &(u64, usize), b: &(u64, usize)| {
            a.0.cmp(&b.0)
                .then_with(|| key(nodes, a.1).cmp(key(nodes, b.1)))
        };
        let ordered = self
            .fields
            .windows(2)
            .all(|w| compare(&w[0], &w[1]).is_lt());
        if !ordered {
            // Stable: of a repeated key, the last written stays last, and is the one kept.
            self.fields.sort_by(compare);
            self.fields.dedup_by(|later, earlier| {
                let same = compare(later, earlier).is_eq();
                if same {
                    *earlier = *later;
                }
                same
            });
        }
        let from = self.order.len();
        self.order.extend(self.fields.iter().map(|(_, i)| *i));
        (from, self.fields.len())
    }
}

/// A position on a tape: one value there.
#[derive(Clone, Copy)]
pub(crate) struct At<'t, 'a> {
    nodes: &'t [Node<'a>],
    order: &'t [usize],
    i: usize,
}

/// The items of an array, or the fields of an object, on a tape.
pub(crate) struct Children<'t, 'a> {
    nodes: &'t [Node<'a>],
    order: &'t [usize],
    next: usize,
    left: usize,
}

impl<'t, 'a> Iterator for Children<'t, 'a> {
    type Item = At<'t, 'a>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let at = At {
            nodes: self.nodes,
            order: self.order,
            i: self.next,
        };
        self.next += self.nodes[self.next].span();
        Some(at)
    }
}

/// The fields of an object on a tape, in key order: each key node, then its value.
pub(crate) struct Fields<'t, 'a> {
    nodes: &'t [Node<'a>],
    order: &'t [usize],
    keys: std::slice::Iter<'t, usize>,
}

impl<'t, 'a> Iterator for Fields<'t, 'a> {
    type Item = (&'t str, At<'t, 'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let &i = self.keys.next()?;
        let key = match &self.nodes[i] {
            Node::String(key) => key.as_ref(),
            // Invariant: `Build` writes a key node before every field's value.
            _ => "",
        };
        let value = At {
            nodes: self.nodes,
            order: self.order,
            i: i + 1,
        };
        Some((key, value))
    }
}

impl<'t, 'a> Json<'t> for At<'t, 'a> {
    type Items = Children<'t, 'a>;
    type Fields = Fields<'t, 'a>;

    fn view(self) -> View<'t, Self::Items, Self::Fields> {
        let children = |left| Children {
            nodes: self.nodes,
            order: self.order,
            next: self.i + 1,
            left,
        };
        match &self.nodes[self.i] {
            Node::Null => View::Null,
            Node::Bool(b) => View::Bool(*b),
            Node::Integer(i) => View::Integer(*i),
            Node::Number(f) => View::Number(*f),
            Node::String(Cow::Borrowed(s)) => View::Plain(s),
            Node::String(Cow::Owned(s)) => View::String(s),
            Node::Array { len, .. } => View::Array(*len, children(*len)),
            Node::Object { len, order, .. } => View::Object(Fields {
                nodes: self.nodes,
                order: self.order,
                keys: self.order[*order..*order + *len].iter(),
            }),
        }
    }
}

/// Writes the nodes of one value as serde_json parses it.
struct Build<'t, 'a> {
    tape: &'t mut Tape<'a>,
    /// The depth a container here would have.
    level: usize,
}

impl<'de> DeserializeSeed<'de> for Build<'_, 'de> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Build<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.tape.nodes.push(Node::Null);
        Ok(())
    }

    fn visit_bool<E>(self, b: bool) -> Result<(), E> {
        self.tape.nodes.push(Node::Bool(b));
        Ok(())
    }

    fn visit_i64<E>(self, i: i64) -> Result<(), E> {
        self.tape.nodes.push(Node::Integer(i128::from(i)));
        Ok(())
    }

    fn visit_u64<E>(self, u: u64) -> Result<(), E> {
        self.tape.nodes.push(Node::Integer(i128::from(u)));
        Ok(())
    }

    fn visit_f64<E>(self, f: f64) -> Result<(), E> {
        self.tape.wide |= is_wide_float(f);
        self.tape.nodes.push(Node::Number(f));
        Ok(())
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<(), E> {
        self.tape.nodes.push(Node::String(Cow::Borrowed(s)));
        Ok(())
    }

    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        self.tape.nodes.push(Node::String(Cow::Owned(s.to_owned())));
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let tape = self.tape;
        tape.depth = tape.depth.max(self.level);
        let start = tape.nodes.len();
        tape.nodes.push(Node::Array { len: 0, span: 0 });
        let mut len = 0;
        while seq
            .next_element_seed(Build {
                tape: &mut *tape,
                level: self.level + 1,
            })?
            .is_some()
        {
            len += 1;
        }
        let span = tape.nodes.len() - start;
        tape.nodes[start] = Node::Array { len, span };
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let tape = self.tape;
        tape.depth = tape.depth.max(self.level);
        let start = tape.nodes.len();
        tape.nodes.push(Node::Object {
            len: 0,
            span: 0,
            order: 0,
        });
        while map.next_key_seed(Key(&mut *tape))?.is_some() {
            map.next_value_seed(Build {
                tape: &mut *tape,
                level: self.level + 1,
            })?;
        }
        let (order, len) = tape.order_fields(start);
        let span = tape.nodes.len() - start;
        tape.nodes[start] = Node::Object { len, span, order };
        Ok(())
    }
}

/// Writes an object's key node.
struct Key<'t, 'a>(&'t mut Tape<'a>);

impl<'de> DeserializeSeed<'de> for Key<'_, 'de> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(Build {
            tape: self.0,
            level: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shape::Shape;
    use proptest::prelude::*;

    /// What the ledger made of `text` before tapes: a `Value`, its JSONB, its shape.
    fn through_value(text: &str) -> (Vec<u8>, Shape) {
        let value: Value = serde_json::from_str(text).unwrap();
        let mut body = Vec::new();
        crate::jsonb::encode(&value, &mut body);
        (body, Shape::of(&value))
    }

    fn through_tape(text: &str) -> (Vec<u8>, Shape, Tape<'_>) {
        let mut tape = Tape::default();
        tape.parse(text.as_bytes()).unwrap();
        let mut body = Vec::new();
        crate::jsonb::encode_entry(tape.root(), text.len(), &mut body);
        let mut shape = Shape::default();
        shape.absorb_any(tape.root());
        (body, shape, tape)
    }

    #[test]
    fn a_tape_gives_the_values_jsonb_and_shape() {
        for text in [
            r#"{"b": 1, "a": [true, null, {"z": "x", "y": 2.5}], "c": {}}"#,
            r#"{"k": 1, "k": "last wins", "j": [], "k": 3}"#,
            r#"{"esc": "a\"b\\c\nd\u0001", "uni": "é日本\u2028", "big": 123456789012345678901234}"#,
            r#"{"n": -0, "f": 1e300, "i": -9223372036854775808, "u": 18446744073709551615}"#,
            r#"  {"deep": [[[{"a": [1]}]]]}  "#,
        ] {
            let (body, shape, _) = through_tape(text);
            assert_eq!((body, shape), through_value(text), "{text}");
        }
        let (_, _, tape) = through_tape(r#"{"a": [[{"b": 1}]], "c": 1}"#);
        assert_eq!(tape.depth(), 4);
        assert!(tape.is_object() && !tape.has_wide_number());
        let (_, _, tape) = through_tape(r#"{"id": 123456789012345678901234}"#);
        assert!(tape.has_wide_number());
        let mut tape = Tape::default();
        assert!(tape.parse(br#"{"a": 1} x"#).is_err());
        assert!(tape.parse(b"{\"a\": \"\xff\"}").is_err());
    }

    /// JSON text with keys in any order and sometimes repeated, escapes and numbers of every
    /// width, as a writer other than serde_json might produce.
    fn arb_text() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("é".to_owned()),
            any::<String>()
        ];
        let leaf = prop_oneof![
            Just("null".to_owned()),
            any::<bool>().prop_map(|b| b.to_string()),
            any::<i64>().prop_map(|i| i.to_string()),
            any::<u64>().prop_map(|u| u.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| f.to_string()),
            Just("123456789012345678901234".to_owned()),
            any::<String>().prop_map(|s| Value::String(s).to_string()),
        ];
        leaf.prop_recursive(4, 64, 8, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                prop::collection::vec((key.clone(), inner), 0..6).prop_map(|fields| {
                    let fields: Vec<String> = fields
                        .into_iter()
                        .map(|(k, v)| format!("{}: {v}", Value::String(k)))
                        .collect();
                    format!("{{{}}}", fields.join(", "))
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn a_tape_gives_the_values_jsonb_and_shape_on_any_text(text in arb_text()) {
            let (body, shape, _) = through_tape(&text);
            let (value_body, value_shape) = through_value(&text);
            prop_assert_eq!(body, value_body);
            prop_assert_eq!(shape, value_shape);
        }
    }
}
