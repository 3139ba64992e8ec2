//! Guards: what a replayed step's result must look like for the routine to go on. Learned from
//! the converged performances (every one succeeded; the output's shape they agree on) and checked
//! after each replayed call; a result that fails its guard is a deviation, and the actor takes
//! over from there. A step whose outputs were entries of a collection the ledger has settled
//! also guards that the replay's output still fits that settled schema, judged by the ledger
//! itself through [`Settled`] (this crate validates nothing on its own).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The ledger's settled schemas, as guards consult them. The production implements it over the
/// stage's ledger, whose own validation decides.
pub trait Settled: Send + Sync {
    /// The collections with a settled schema.
    fn collections(&self) -> Vec<String>;
    /// Why `entry` breaks the settled schema of `collection`, or `None` when it fits.
    fn violation(&self, collection: &str, entry: &Value) -> Option<String>;
}

/// The entries an output holds: a JSON object, a JSON array of objects, or lines `#ID {…}` as
/// the ledger's `query` prop answers. `None` when it holds none.
pub fn entries(output: &str) -> Option<Vec<Value>> {
    match serde_json::from_str::<Value>(output.trim()) {
        Ok(v @ Value::Object(_)) => return Some(vec![v]),
        Ok(Value::Array(items)) if !items.is_empty() && items.iter().all(Value::is_object) => {
            return Some(items);
        }
        Ok(_) => return None,
        Err(_) => {}
    }
    let rows: Vec<Value> = output
        .lines()
        .filter(|l| l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter_map(|(_, json)| serde_json::from_str::<Value>(json).ok())
        .filter(Value::is_object)
        .collect();
    (!rows.is_empty()).then_some(rows)
}

/// The first settled collection every one of `outputs` holds entries of, each fitting it.
pub fn settled_shape<'a>(
    settled: &dyn Settled,
    outputs: impl IntoIterator<Item = &'a str> + Clone,
) -> Option<String> {
    let all: Option<Vec<Vec<Value>>> = outputs.into_iter().map(entries).collect();
    let all = all.filter(|a| !a.is_empty())?;
    settled.collections().into_iter().find(|c| {
        all.iter()
            .flatten()
            .all(|entry| settled.violation(c, entry).is_none())
    })
}

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
    /// The ledger collection whose settled schema every entry of its output must fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settled: Option<String>,
}

fn yes() -> bool {
    true
}

impl Default for Guard {
    fn default() -> Self {
        Guard {
            ok: true,
            output: Shape::Any,
            settled: None,
        }
    }
}

impl Guard {
    /// Why the result `(ok, output)` fails this guard, or `None` when it holds; `settled`
    /// judges the output's entries when the guard names a settled collection.
    pub fn deviation(
        &self,
        ok: bool,
        output: &str,
        settled: Option<&dyn Settled>,
    ) -> Option<String> {
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
        let collection = self.settled.as_deref()?;
        let Some(found) = entries(output) else {
            return Some(format!(
                "its output should be entries of the settled collection `{collection}` but was: {}",
                clip(output, 300)
            ));
        };
        let Some(settled) = settled else {
            return Some(format!(
                "its output cannot be checked against the settled schema of `{collection}`: the ledger is not open"
            ));
        };
        found
            .iter()
            .find_map(|entry| settled.violation(collection, entry))
            .map(|why| {
                format!("its output no longer fits the settled schema of `{collection}`: {why}")
            })
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
            settled: None,
        };
        assert!(g.deviation(true, "[1]", None).is_none());
        assert!(g.deviation(false, "[1]", None).unwrap().contains("failed"));
        assert!(g.deviation(true, "nope", None).unwrap().contains("JSON"));
    }
}
