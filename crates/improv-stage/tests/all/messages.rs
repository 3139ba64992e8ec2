//! Stage-file errors in the words of the file's author: TOML types, not Rust's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_stage::Stage;
use std::path::Path;

fn error(text: &str) -> String {
    Stage::parse(text, Path::new("stage.toml"))
        .err()
        .unwrap()
        .to_string()
}

#[test]
fn numbers_are_described_in_words_not_rust_types() {
    let negative = error("[edges]\nmax_turns = -1\n");
    assert!(
        negative.ends_with("invalid value: integer `-1`, expected a whole number ≥ 0"),
        "{negative}"
    );
    let text = error("[edges]\nmax_turns = \"ten\"\n");
    assert!(
        text.ends_with("invalid type: string \"ten\", expected a whole number ≥ 0"),
        "{text}"
    );
    let cost = error("[edges]\nmax_cost_usd = \"two\"\n");
    assert!(cost.ends_with("expected a number"), "{cost}");
    for message in [negative, text, cost] {
        assert!(
            !message.contains("u32") && !message.contains("f64"),
            "{message}"
        );
    }
}
