//! Turns a tool call's JSON arguments into a prop's typed arguments, with errors that name the
//! argument and the type the model should have sent.

use improv_kernel::PropError;
use serde::de::DeserializeOwned;

/// Deserializes `arguments` into `T` (a struct with `deny_unknown_fields`). On failure the message
/// says which prop, which argument and what was expected, in words rather than Rust types.
pub fn parse<T: DeserializeOwned>(
    prop: &str,
    arguments: serde_json::Value,
) -> Result<T, PropError> {
    serde_path_to_error::deserialize(arguments).map_err(|e| {
        let path = e.path().to_string();
        let message = plain_types(&e.into_inner().to_string());
        if path == "." || path.is_empty() {
            PropError::new(format!(
                "{prop}: {message}; fix the arguments and call again"
            ))
        } else {
            PropError::new(format!(
                "{prop}: argument `{path}`: {message}; fix it and call again"
            ))
        }
    })
}

/// Serde names Rust types (`expected u64`); the model needs JSON ones.
fn plain_types(message: &str) -> String {
    const WORDS: [(&str, &str); 5] = [
        ("expected usize", "expected a non-negative integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected u32", "expected a non-negative integer"),
        ("expected f64", "expected a number"),
        ("expected a borrowed string", "expected a string"),
    ];
    let mut out = message.to_string();
    for (rust, json) in WORDS {
        if out.contains(rust) {
            out = out.replace(rust, json);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Args {
        path: String,
        limit: Option<usize>,
        all: Option<bool>,
    }

    #[test]
    fn errors_name_the_argument_and_the_expected_type() {
        let e = parse::<Args>("read", json!({"path": "a", "limit": "ten"})).unwrap_err();
        assert!(e.message().contains("argument `limit`"), "{e}");
        assert!(
            e.message().contains("expected a non-negative integer"),
            "{e}"
        );
        let e = parse::<Args>("edit", json!({"path": "a", "all": "yes"})).unwrap_err();
        assert!(
            e.message().contains("`all`") && e.message().contains("expected a boolean"),
            "{e}"
        );
        let e = parse::<Args>("read", json!({"path": 3})).unwrap_err();
        assert!(
            e.message().contains("`path`") && e.message().contains("expected a string"),
            "{e}"
        );
    }

    #[test]
    fn missing_and_unknown_arguments_are_named() {
        let e = parse::<Args>("read", json!({})).unwrap_err();
        assert!(e.message().contains("missing field `path`"), "{e}");
        let e = parse::<Args>("read", json!({"path": "a", "file": "b"})).unwrap_err();
        assert!(e.message().contains("unknown field `file`"), "{e}");
        assert!(e.message().contains("`limit`"), "lists the known ones: {e}");
    }
}
