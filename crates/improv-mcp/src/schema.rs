//! Trimming MCP tool schemas before they reach a model: every byte of a prop's spec is sent on
//! every turn, and MCP servers write schemas for humans and validators (titles, `$schema`,
//! `additionalProperties: false`, paragraphs of prose). What the model needs stays: types, names,
//! `required`, enums, defaults, and a short description.

use serde_json::{Map, Value};

/// The longest description kept for a tool, in characters; longer ones are cut at a sentence.
pub const TOOL_DESCRIPTION_MAX: usize = 240;
/// The longest description kept for one argument.
pub const ARGUMENT_DESCRIPTION_MAX: usize = 120;

/// Keys that never help a model call a tool.
const NOISE: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentMediaType",
    "contentEncoding",
];

/// A tool's input schema without the noise. Keys under `properties` are argument names and are
/// kept whatever they are called.
pub fn trim_schema(schema: &Value) -> Value {
    trim(schema, false)
}

fn trim(value: &Value, is_property_map: bool) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::with_capacity(map.len());
            for (key, v) in map {
                if is_property_map {
                    // The keys here are argument names; each value is a schema.
                    out.insert(key.clone(), trim(v, false));
                    continue;
                }
                if NOISE.contains(&key.as_str()) {
                    continue;
                }
                match (key.as_str(), v) {
                    // The model sends objects as told; `false` here only guards validators.
                    ("additionalProperties", Value::Bool(false)) => {}
                    ("required", Value::Array(a)) if a.is_empty() => {}
                    ("description", Value::String(s)) => {
                        let short = shorten(s, ARGUMENT_DESCRIPTION_MAX);
                        if !short.is_empty() {
                            out.insert(key.clone(), Value::String(short));
                        }
                    }
                    ("properties" | "$defs" | "definitions" | "patternProperties", _) => {
                        out.insert(key.clone(), trim(v, true));
                    }
                    _ => {
                        out.insert(key.clone(), trim(v, false));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| trim(v, false)).collect()),
        other => other.clone(),
    }
}

/// A description cut to its first paragraph and then to whole sentences within `max`
/// characters (or, when even the first sentence is longer, to `max` characters and an
/// ellipsis). Whitespace runs become one space.
pub fn shorten(text: &str, max: usize) -> String {
    let first = text.trim().split("\n\n").next().unwrap_or_default();
    let flat: String = first.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        return flat;
    }
    // Whole sentences while they fit.
    let mut end = 0;
    for (i, c) in flat.char_indices() {
        if i >= max {
            break;
        }
        if matches!(c, '.' | '!' | '?') && flat[i + c.len_utf8()..].starts_with(' ') {
            end = i + c.len_utf8();
        }
    }
    if end > 0 {
        return flat[..end].to_string();
    }
    let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    format!("{}…", cut.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn noise_goes_and_argument_names_stay() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "title": "Args",
            "additionalProperties": false,
            "properties": {
                "title": {"type": "string", "title": "Title", "description": "The title.\n\nMore prose nobody needs."},
                "n": {"type": "integer", "default": 3, "examples": [1, 2]}
            },
            "required": ["title"]
        });
        assert_eq!(
            trim_schema(&schema),
            json!({
                "type": "object",
                "properties": {
                    "title": {"type": "string", "description": "The title."},
                    "n": {"type": "integer", "default": 3}
                },
                "required": ["title"]
            })
        );
    }

    #[test]
    fn additional_properties_with_a_schema_is_kept() {
        let schema =
            json!({"type": "object", "additionalProperties": {"type": "string"}, "required": []});
        assert_eq!(
            trim_schema(&schema),
            json!({"type": "object", "additionalProperties": {"type": "string"}})
        );
    }

    #[test]
    fn long_descriptions_are_cut_at_a_sentence() {
        let text = "Reads a file. It does many things that are described at great length here, more than anyone would read in a tool list.";
        assert_eq!(shorten(text, 40), "Reads a file.");
        let one = "a".repeat(50);
        let cut = shorten(&one, 10);
        assert_eq!(cut.chars().count(), 10);
        assert!(cut.ends_with('…'));
        assert_eq!(shorten("  short\n text ", 40), "short text");
    }
}
