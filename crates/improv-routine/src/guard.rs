//! Guards: what a replayed step's result must look like for the routine to go on. Learned from
//! the converged performances (every one succeeded; the output's shape they agree on) and checked
//! after each replayed call; a result that fails its guard is a deviation, and the actor takes
//! over from there.

use serde::{Deserialize, Serialize};

/// The shape of a call's output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Anything.
    #[default]
    Any,
    /// Nothing but whitespace.
    Empty,
    /// Some text.
    NonEmpty,
    /// A JSON document.
    Json,
}

impl Shape {
    /// The shape of one output.
    pub fn of(output: &str) -> Shape {
        if output.trim().is_empty() {
            Shape::Empty
        } else if serde_json::from_str::<serde_json::Value>(output).is_ok() {
            Shape::Json
        } else {
            Shape::NonEmpty
        }
    }

    /// The shape every one of `outputs` has; [`Shape::Any`] when they disagree (a JSON output
    /// is also some text).
    pub fn common<'a>(outputs: impl IntoIterator<Item = &'a str>) -> Shape {
        let mut common: Option<Shape> = None;
        for o in outputs {
            let s = Shape::of(o);
            common = Some(match common {
                None => s,
                Some(c) if c == s => c,
                Some(Shape::Json | Shape::NonEmpty) if s != Shape::Empty => Shape::NonEmpty,
                Some(_) => Shape::Any,
            });
        }
        common.unwrap_or_default()
    }

    fn holds(self, output: &str) -> bool {
        match self {
            Shape::Any => true,
            Shape::Empty => output.trim().is_empty(),
            Shape::NonEmpty => !output.trim().is_empty(),
            Shape::Json => serde_json::from_str::<serde_json::Value>(output).is_ok(),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Shape::Any => "any",
            Shape::Empty => "empty",
            Shape::NonEmpty => "non-empty text",
            Shape::Json => "JSON",
        }
    }
}

/// What a step's result must be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    /// The call succeeded: the prop returned no error, a command exited 0.
    #[serde(default = "yes")]
    pub ok: bool,
    /// The shape of its output.
    #[serde(default)]
    pub output: Shape,
}

fn yes() -> bool {
    true
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            ok: true,
            output: Shape::Any,
        }
    }
}

impl Guard {
    /// Why the result `(ok, output)` fails this guard, or `None` when it holds.
    pub fn deviation(&self, ok: bool, output: &str) -> Option<String> {
        if self.ok && !ok {
            return Some(format!("it failed: {}", clip(output, 300)));
        }
        if !self.output.holds(output) {
            return Some(format!(
                "its output should be {} but was: {}",
                self.output.as_str(),
                clip(output, 300)
            ));
        }
        None
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub(crate) fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_deviations() {
        assert_eq!(Shape::common(["", " "]), Shape::Empty);
        assert_eq!(Shape::common(["{}", "text"]), Shape::NonEmpty);
        assert_eq!(Shape::common(["", "text"]), Shape::Any);
        let g = Guard {
            ok: true,
            output: Shape::Json,
        };
        assert!(g.deviation(true, "[1]").is_none());
        assert!(g.deviation(false, "[1]").unwrap().contains("failed"));
        assert!(g.deviation(true, "nope").unwrap().contains("JSON"));
    }
}
