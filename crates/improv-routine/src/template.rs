//! Templates: text with named holes, `Write {file} containing {text}`. `{{` and `}}` stand for
//! literal braces. A template renders with values for its holes, and an intent template matches
//! an intent, binding its holes (a hole that appears twice must bind the same text twice).

use crate::RoutineError;
use std::collections::BTreeMap;

/// One piece of a template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Hole(String),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template(pub Vec<Piece>);

impl Template {
    /// Parses `text`; a `{` without its `}` or an empty or odd name is an error that says where.
    pub fn parse(text: &str) -> Result<Template, RoutineError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().is_some_and(|(_, n)| *n == '{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().is_some_and(|(_, n)| *n == '}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let rest = &text[at + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(RoutineError::Template(format!(
                            "`{text}`: the `{{` at byte {at} is never closed; write `{{{{` for a literal brace"
                        )));
                    };
                    let name = &rest[..end];
                    if !is_name(name) {
                        return Err(RoutineError::Template(format!(
                            "`{text}`: `{{{name}}}` is not a parameter name (letters, digits, `_`); write `{{{{` for a literal brace"
                        )));
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Hole(name.to_string()));
                    for _ in 0..=end {
                        chars.next();
                    }
                }
                '}' => {
                    return Err(RoutineError::Template(format!(
                        "`{text}`: the `}}` at byte {at} closes nothing; write `}}}}` for a literal brace"
                    )));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template(pieces))
    }

    /// The names of the holes, in order of first appearance.
    pub fn holes(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for p in &self.0 {
            if let Piece::Hole(n) = p
                && !names.contains(&n.as_str())
            {
                names.push(n);
            }
        }
        names
    }

    /// The text with every hole filled; a hole without a value is an error naming it.
    pub fn render(&self, values: &BTreeMap<String, String>) -> Result<String, RoutineError> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Hole(n) => match values.get(n) {
                    Some(v) => out.push_str(v),
                    None => return Err(RoutineError::MissingParameter(n.clone())),
                },
            }
        }
        Ok(out)
    }

    /// Binds the holes to the parts of `text` they stand for, when the template matches the
    /// whole of it (surrounding whitespace aside). Holes match lazily, at least one character.
    pub fn bind(&self, text: &str) -> Option<BTreeMap<String, String>> {
        let mut pattern = String::from("(?s)^");
        let mut order = Vec::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => pattern.push_str(&regex::escape(t)),
                Piece::Hole(n) => {
                    pattern.push_str("(.+?)");
                    order.push(n.as_str());
                }
            }
        }
        pattern.push('$');
        // The pattern is built from escaped text and fixed groups: it always compiles, and one
        // that does not (a size limit) simply matches nothing.
        let re = regex::Regex::new(&pattern).ok()?;
        let caps = re.captures(text.trim())?;
        let mut values = BTreeMap::new();
        for (i, name) in order.iter().enumerate() {
            let value = caps.get(i + 1)?.as_str().to_string();
            match values.get(*name) {
                Some(seen) if *seen != value => return None,
                _ => {
                    values.insert(name.to_string(), value);
                }
            }
        }
        Some(values)
    }
}

/// Escapes braces so literal text reads as itself in a template.
pub fn escape(text: &str) -> String {
    text.replace('{', "{{").replace('}', "}}")
}

/// Whether `name` can name a parameter.
pub fn is_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_and_renders_round_trip() {
        let t = Template::parse("Write {file} containing {text}").unwrap();
        let v = t.bind("Write notes.md containing hello world").unwrap();
        assert_eq!(v["file"], "notes.md");
        assert_eq!(v["text"], "hello world");
        assert_eq!(
            t.render(&v).unwrap(),
            "Write notes.md containing hello world"
        );
        assert!(t.bind("Delete notes.md").is_none());
    }

    #[test]
    fn literal_braces_and_repeated_holes() {
        let t = Template::parse("fn {name}() {{ {name} }}").unwrap();
        assert_eq!(t.holes(), vec!["name"]);
        assert_eq!(t.bind("fn go() { go }").unwrap()["name"], "go");
        assert!(t.bind("fn go() { stop }").is_none());
        assert!(Template::parse("a { b").is_err());
        assert!(Template::parse("a } b").is_err());
    }
}
