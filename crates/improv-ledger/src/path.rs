//! Field paths: the one syntax used to name a field in queries, shapes, proposals and messages.
//!
//! `name`, `address.city`, `tags[0]`, `tags[]` (every item of an array, used by shapes) and
//! `"key.with.dots".x` for keys that are not plain words. A path is parsed into [`Segment`]s and
//! only then turned into a SQLite JSON path; the SQL text never contains the path, it is always
//! bound as a parameter, and the parser refuses anything outside the syntax above.

use std::fmt;

/// Longest path accepted, in bytes; a longer one is almost certainly not a field name.
const MAX_PATH_BYTES: usize = 512;

/// One step of a [`FieldPath`].
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Segment {
    /// An object key.
    Key(String),
    /// One element of an array, by position.
    Index(usize),
    /// Every element of an array (`[]`): how shapes name an array's items.
    Items,
}

/// A parsed field path, such as `address.city` or `tags[]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FieldPath(pub Vec<Segment>);

/// Why a field path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid field path `{path}`: {reason}. Write fields as `a.b`, `a[0]`, or quote keys with dots: `\"a.b\".c`"
)]
pub struct PathError {
    pub path: String,
    pub reason: String,
}

impl FieldPath {
    /// The empty path: the entry itself.
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// This path with one more segment.
    pub fn child(&self, segment: Segment) -> Self {
        let mut segments = self.0.clone();
        segments.push(segment);
        FieldPath(segments)
    }

    /// This path with one more key.
    pub fn key(&self, key: &str) -> Self {
        self.child(Segment::Key(key.to_owned()))
    }

    /// Parses `a.b[0]."c.d"[]`.
    pub fn parse(text: &str) -> Result<Self, PathError> {
        let fail = |reason: &str| PathError {
            path: text.chars().take(80).collect(),
            reason: reason.to_owned(),
        };
        if text.len() > MAX_PATH_BYTES {
            return Err(fail("it is longer than 512 bytes"));
        }
        let text_trimmed = text.strip_prefix("$.").unwrap_or(text);
        let mut segments = Vec::new();
        let mut chars = text_trimmed.chars().peekable();
        let mut expect_key = true;
        while let Some(&c) = chars.peek() {
            match c {
                '.' => {
                    if expect_key {
                        return Err(fail("an empty key (two dots, or a leading dot)"));
                    }
                    chars.next();
                    expect_key = true;
                    if chars.peek().is_none() {
                        return Err(fail("it ends with a dot"));
                    }
                }
                '[' => {
                    chars.next();
                    let mut digits = String::new();
                    loop {
                        match chars.next() {
                            Some(']') => break,
                            Some(d) if d.is_ascii_digit() => digits.push(d),
                            _ => return Err(fail("`[` must be followed by digits and `]`")),
                        }
                    }
                    if digits.is_empty() {
                        segments.push(Segment::Items);
                    } else {
                        let index = digits
                            .parse::<usize>()
                            .map_err(|_| fail("the array index is too large"))?;
                        segments.push(Segment::Index(index));
                    }
                    expect_key = false;
                }
                '"' => {
                    if !expect_key {
                        return Err(fail("a quoted key must follow a dot"));
                    }
                    chars.next();
                    let mut key = String::new();
                    loop {
                        match chars.next() {
                            Some('"') => break,
                            Some('\\') => match chars.next() {
                                Some(escaped @ ('"' | '\\')) => key.push(escaped),
                                _ => return Err(fail("only \\\" and \\\\ may be escaped")),
                            },
                            Some(other) => key.push(other),
                            None => return Err(fail("a quoted key is not closed")),
                        }
                    }
                    segments.push(Segment::Key(key));
                    expect_key = false;
                }
                _ => {
                    if !expect_key {
                        return Err(fail("a key must follow a dot"));
                    }
                    let mut key = String::new();
                    while let Some(&k) = chars.peek() {
                        if is_word_char(k) {
                            key.push(k);
                            chars.next();
                        } else if matches!(k, '.' | '[') {
                            break;
                        } else {
                            return Err(fail(&format!("`{k}` is not allowed in an unquoted key")));
                        }
                    }
                    segments.push(Segment::Key(key));
                    expect_key = false;
                }
            }
        }
        if segments.is_empty() {
            return Err(fail("it is empty"));
        }
        Ok(FieldPath(segments))
    }

    /// The SQLite JSON path (`$."a"[0]`), for binding as a parameter of `json_extract`.
    ///
    /// Keys are always quoted, so dots and unicode in keys are safe; SQLite has no escape for a
    /// double quote inside a quoted key, so such keys are refused. [`Segment::Items`] has no
    /// SQLite equivalent and is refused too.
    pub fn to_sqlite(&self) -> Result<String, PathError> {
        let mut out = String::from("$");
        for segment in &self.0 {
            match segment {
                Segment::Key(key) => {
                    if key.contains('"') {
                        return Err(PathError {
                            path: self.to_string(),
                            reason: "keys containing a double quote cannot be queried".into(),
                        });
                    }
                    out.push_str(".\"");
                    out.push_str(key);
                    out.push('"');
                }
                Segment::Index(index) => {
                    out.push('[');
                    out.push_str(&index.to_string());
                    out.push(']');
                }
                Segment::Items => {
                    return Err(PathError {
                        path: self.to_string(),
                        reason:
                            "`[]` names every item; query one item with `[0]` or use `contains`"
                                .into(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// Whether the path goes through an array (so one entry may hold several values at it).
    pub fn crosses_array(&self) -> bool {
        self.0
            .iter()
            .any(|s| matches!(s, Segment::Items | Segment::Index(_)))
    }

    /// The path from a JSON pointer (`/a/0/b`), as validators report locations.
    pub fn from_pointer(pointer: &str) -> Self {
        let segments = pointer
            .split('/')
            .skip(1)
            .map(|raw| {
                let key = raw.replace("~1", "/").replace("~0", "~");
                match key.parse::<usize>() {
                    Ok(index) if !key.starts_with('0') || key == "0" => Segment::Index(index),
                    _ => Segment::Key(key),
                }
            })
            .collect();
        FieldPath(segments)
    }

    /// Whether this path names the same field as `other`, reading an index as "an item".
    pub fn matches_shape_path(&self, shape_path: &FieldPath) -> bool {
        self.0.len() == shape_path.0.len()
            && self.0.iter().zip(&shape_path.0).all(|(a, b)| match (a, b) {
                (Segment::Index(_) | Segment::Items, Segment::Index(_) | Segment::Items) => true,
                _ => a == b,
            })
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-' || c == '$' || c == '@'
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(entry)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    if !key.is_empty() && key.chars().all(is_word_char) {
                        f.write_str(key)?;
                    } else {
                        f.write_str("\"")?;
                        f.write_str(&key.replace('\\', "\\\\").replace('"', "\\\""))?;
                        f.write_str("\"")?;
                    }
                }
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Items => f.write_str("[]")?,
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for FieldPath {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FieldPath::parse(s)
    }
}

impl serde::Serialize for FieldPath {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for FieldPath {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        FieldPath::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_round_trip() {
        for text in [
            "a",
            "a.b",
            "tags[0]",
            "tags[]",
            "items[].price",
            "\"key.with.dots\".x",
            "名前.город",
            "e_mail",
            "\"with \\\"quote\\\"\"",
            "\"\"",
        ] {
            let path = FieldPath::parse(text).unwrap();
            assert_eq!(path.to_string(), text, "{text}");
            assert_eq!(FieldPath::parse(&path.to_string()).unwrap(), path);
        }
    }

    #[test]
    fn refuses_sql_and_junk() {
        for bad in [
            "",
            "a..b",
            ".a",
            "a.",
            "a' OR 1=1 --",
            "a); DROP TABLE x",
            "a[x]",
            "a[0",
            "\"open",
            "a\"b\"",
            "a b",
        ] {
            assert!(FieldPath::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn sqlite_paths_quote_every_key() {
        let path = FieldPath::parse("\"a.b\".c[2]").unwrap();
        assert_eq!(path.to_sqlite().unwrap(), "$.\"a.b\".\"c\"[2]");
        assert!(FieldPath::parse("tags[]").unwrap().to_sqlite().is_err());
        assert!(FieldPath::parse("\"q\\\"k\"").unwrap().to_sqlite().is_err());
    }

    #[test]
    fn json_pointers_become_paths() {
        assert_eq!(
            FieldPath::from_pointer("/a/0/b~1c").to_string(),
            "a[0].\"b/c\""
        );
        assert_eq!(FieldPath::from_pointer(""), FieldPath::root());
    }
}
