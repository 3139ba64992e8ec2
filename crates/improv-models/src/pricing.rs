//! What models cost: a built-in table of list prices for common models (USD per million tokens)
//! that a stage file can extend or override.

use improv_kernel::Price;
use std::collections::BTreeMap;

/// One row of the built-in table: the model name, its prices and its context window.
struct Known {
    model: &'static str,
    input: f64,
    cached_input: f64,
    output: f64,
    context_window: u64,
}

const fn known(
    model: &'static str,
    input: f64,
    cached_input: f64,
    output: f64,
    context_window: u64,
) -> Known {
    Known {
        model,
        input,
        cached_input,
        output,
        context_window,
    }
}

/// List prices in USD per million tokens (input, cached input, output), checked against the
/// providers' published price pages on 2026-03-21. Anthropic's "cached input" is its
/// cache-hit price; its cache writes (1.25× input) are counted at the input price.
const BUILTIN: &[Known] = &[
    // OpenAI
    known("gpt-5", 1.25, 0.125, 10.0, 400_000),
    known("gpt-5-mini", 0.25, 0.025, 2.0, 400_000),
    known("gpt-5-nano", 0.05, 0.005, 0.40, 400_000),
    known("gpt-5.1", 1.25, 0.125, 10.0, 400_000),
    known("gpt-4.1", 2.0, 0.50, 8.0, 1_047_576),
    known("gpt-4.1-mini", 0.40, 0.10, 1.60, 1_047_576),
    known("gpt-4.1-nano", 0.10, 0.025, 0.40, 1_047_576),
    known("gpt-4o", 2.50, 1.25, 10.0, 128_000),
    known("gpt-4o-mini", 0.15, 0.075, 0.60, 128_000),
    known("o3", 2.0, 0.50, 8.0, 200_000),
    known("o4-mini", 1.10, 0.275, 4.40, 200_000),
    // Anthropic
    known("claude-sonnet-4-5", 3.0, 0.30, 15.0, 200_000),
    known("claude-sonnet-4", 3.0, 0.30, 15.0, 200_000),
    known("claude-opus-4-1", 15.0, 1.50, 75.0, 200_000),
    known("claude-opus-4-5", 5.0, 0.50, 25.0, 200_000),
    known("claude-haiku-4-5", 1.0, 0.10, 5.0, 200_000),
    known("claude-3-5-haiku", 0.80, 0.08, 4.0, 200_000),
    known("claude-3-7-sonnet", 3.0, 0.30, 15.0, 200_000),
];

/// Providers whose model names the built-in table describes. Other providers (a compatible
/// server, a local Ollama) are priced only by the stage file.
const PRICED_PROVIDERS: &[&str] = &["openai", "openai-responses", "anthropic"];

/// The price table a stage uses: the stage file's own prices over the built-in ones.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prices {
    /// Keys are `provider/model` or a bare model name; `provider/model` wins.
    pub overrides: BTreeMap<String, Price>,
}

impl Prices {
    /// The built-in table with the stage file's prices over it.
    pub fn new(overrides: BTreeMap<String, Price>) -> Self {
        Prices { overrides }
    }

    /// The price of `model` at `provider`: the stage file's `provider/model`, then its bare
    /// `model`, then the built-in table (for OpenAI and Anthropic only), where a dated or
    /// versioned name (`claude-sonnet-4-5-20250929`, `gpt-4o-2024-08-06`) finds its family.
    pub fn lookup(&self, provider: &str, model: &str) -> Option<Price> {
        self.overrides
            .get(&format!("{provider}/{model}"))
            .or_else(|| self.overrides.get(model))
            .copied()
            .or_else(|| {
                PRICED_PROVIDERS
                    .contains(&provider)
                    .then(|| builtin(model))
                    .flatten()
                    .map(|k| Price {
                        input: k.input,
                        output: k.output,
                        cached_input: Some(k.cached_input),
                    })
            })
    }

    /// The context window of a model in the built-in table.
    pub fn context_window(&self, provider: &str, model: &str) -> Option<u64> {
        PRICED_PROVIDERS
            .contains(&provider)
            .then(|| builtin(model))
            .flatten()
            .map(|k| k.context_window)
    }

    /// What `usage` cost with `model` at `provider`, zero when the price is unknown.
    pub fn cost(&self, provider: &str, model: &str, usage: &improv_kernel::Usage) -> f64 {
        self.lookup(provider, model)
            .map(|p| p.cost(usage))
            .unwrap_or(0.0)
    }
}

/// The built-in row for `model`: an exact name, or the longest name it extends with a date or
/// version suffix (`-2025…`, `-latest`), so that `gpt-5-pro` does not pass for `gpt-5`.
fn builtin(model: &str) -> Option<&'static Known> {
    let model = model.to_ascii_lowercase();
    BUILTIN
        .iter()
        .filter(|k| {
            model == k.model
                || model.strip_prefix(k.model).is_some_and(|rest| {
                    rest == "-latest"
                        || rest
                            .strip_prefix('-')
                            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
                })
        })
        .max_by_key(|k| k.model.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use improv_kernel::Usage;

    #[test]
    fn dated_names_find_their_family_but_other_variants_do_not() {
        let p = Prices::default();
        assert_eq!(
            p.lookup("anthropic", "claude-sonnet-4-5-20250929")
                .unwrap()
                .input,
            3.0
        );
        assert_eq!(p.lookup("openai", "gpt-4o-2024-08-06").unwrap().input, 2.5);
        assert_eq!(p.lookup("openai", "gpt-4o-mini").unwrap().input, 0.15);
        assert_eq!(
            p.lookup("openai", "gpt-5-mini-2025-08-07").unwrap().output,
            2.0
        );
        assert!(p.lookup("openai", "gpt-5-pro").is_none());
        assert!(p.lookup("openai", "unknown-model").is_none());
        // A compatible server's model is not OpenAI's, whatever it is called.
        assert!(p.lookup("compatible", "gpt-4o").is_none());
        assert_eq!(p.context_window("openai", "gpt-4.1"), Some(1_047_576));
    }

    #[test]
    fn cost_counts_cached_input_at_its_own_price() {
        let p = Prices::default();
        let usage = Usage {
            input_tokens: 1_000_000,
            output_tokens: 100_000,
            cached_input_tokens: 400_000,
        };
        // gpt-5: 600k fresh at 1.25, 400k cached at 0.125, 100k out at 10.
        let expected = 0.6 * 1.25 + 0.4 * 0.125 + 0.1 * 10.0;
        assert!((p.cost("openai", "gpt-5", &usage) - expected).abs() < 1e-9);
        assert_eq!(p.cost("ollama", "llama3", &usage), 0.0);
    }

    #[test]
    fn stage_prices_override_and_extend_the_table() {
        let cheap = Price {
            input: 0.1,
            output: 0.2,
            cached_input: None,
        };
        let dear = Price {
            input: 9.0,
            output: 9.0,
            cached_input: None,
        };
        let p = Prices::new(BTreeMap::from([
            ("gpt-5".to_string(), cheap),
            ("openai/gpt-5".to_string(), dear),
            ("llama3".to_string(), cheap),
        ]));
        assert_eq!(p.lookup("openai", "gpt-5"), Some(dear));
        assert_eq!(p.lookup("openai-responses", "gpt-5"), Some(cheap));
        assert_eq!(p.lookup("ollama", "llama3"), Some(cheap));
        assert_eq!(
            p.lookup("anthropic", "claude-haiku-4-5").unwrap().output,
            5.0
        );
    }
}
