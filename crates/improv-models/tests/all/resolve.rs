//! Resolving `provider/model` from a stage file: keys, base URLs, prices and the errors a
//! director sees before any request is made.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_kernel::{Message, ModelUpdate, Price, Request};
use improv_models::{ModelSpec, Prices, ResolveError, resolve_with};
use std::collections::BTreeMap;

fn env(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

fn error(spec: ModelSpec, vars: &'static [(&'static str, &'static str)]) -> ResolveError {
    match resolve_with(&spec, &Prices::default(), &env(vars)) {
        Err(e) => e,
        Ok(m) => panic!("expected an error, resolved {}", m.name()),
    }
}

#[test]
fn a_missing_key_names_the_variable_to_set() {
    let e = error(ModelSpec::new("openai/gpt-5-mini"), &[]);
    assert!(matches!(e, ResolveError::MissingKey { .. }));
    assert!(
        e.to_string()
            .contains("set the environment variable OPENAI_API_KEY"),
        "{e}"
    );
    let e = error(
        ModelSpec::new("anthropic/claude-sonnet-4-5"),
        &[("OPENAI_API_KEY", "k")],
    );
    assert!(e.to_string().contains("ANTHROPIC_API_KEY"), "{e}");
    let e = error(
        ModelSpec::new("openai-responses/gpt-5"),
        &[("OPENAI_API_KEY", "  ")],
    );
    assert!(
        e.to_string().contains("OPENAI_API_KEY"),
        "an empty key counts as unset: {e}"
    );
    let spec = ModelSpec {
        api_key_env: Some("TEAM_OPENAI_KEY".into()),
        ..ModelSpec::new("openai/gpt-5")
    };
    let e = error(spec, &[("OPENAI_API_KEY", "k")]);
    assert!(e.to_string().contains("TEAM_OPENAI_KEY"), "{e}");
}

#[test]
fn keys_and_prices_come_with_the_model() {
    let m = resolve_with(
        &ModelSpec::new("openai/gpt-5-mini"),
        &Prices::default(),
        &env(&[("OPENAI_API_KEY", "k")]),
    )
    .unwrap();
    assert_eq!(m.name(), "openai/gpt-5-mini");
    assert_eq!(m.price().unwrap().output, 2.0);
    assert_eq!(m.context_window(), Some(400_000));
    let custom = Price {
        input: 1.0,
        output: 1.0,
        cached_input: None,
    };
    let prices = Prices::new(BTreeMap::from([(
        "anthropic/claude-haiku-4-5".to_string(),
        custom,
    )]));
    let m = resolve_with(
        &ModelSpec::new("anthropic/claude-haiku-4-5"),
        &prices,
        &env(&[("ANTHROPIC_API_KEY", "k")]),
    )
    .unwrap();
    assert_eq!(m.price(), Some(custom));
}

#[test]
fn a_base_url_of_ones_own_needs_no_key() {
    assert!(
        resolve_with(
            &ModelSpec::new("openai/llama"),
            &Prices::default(),
            &env(&[("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")]),
        )
        .is_ok()
    );
    let spec = ModelSpec {
        base_url: Some("http://127.0.0.1:9/v1".into()),
        ..ModelSpec::new("compatible/qwen3")
    };
    assert!(resolve_with(&spec, &Prices::default(), &env(&[])).is_ok());
    assert!(
        resolve_with(
            &ModelSpec::new("ollama/llama3.2"),
            &Prices::default(),
            &env(&[])
        )
        .is_ok()
    );
}

#[test]
fn configuration_mistakes_say_what_to_change() {
    let e = error(ModelSpec::new("compatible/qwen3"), &[]);
    assert!(matches!(e, ResolveError::MissingBaseUrl { .. }));
    assert!(e.to_string().contains("base_url"), "{e}");

    let e = error(ModelSpec::new("gemini/pro"), &[]);
    let text = e.to_string();
    assert!(text.contains("unknown model provider `gemini`"), "{text}");
    assert!(
        text.contains("openai, openai-responses, anthropic, compatible, ollama, scripted, local"),
        "{text}"
    );

    let e = error(ModelSpec::new("gpt-5"), &[]);
    assert!(matches!(e, ResolveError::NoProvider { .. }), "{e}");

    let e = error(ModelSpec::new("local/smollm2-135m"), &[]);
    assert!(matches!(e, ResolveError::Local { .. }), "{e}");
}

#[tokio::test]
async fn a_scripted_model_rehearses_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.json");
    std::fs::write(
        &path,
        r#"[{"say": "reading", "calls": [{"name": "read", "arguments": {"path": "a.txt"}}]}, {"say": "done"}]"#,
    )
    .unwrap();
    let name = format!("scripted/{}", path.display());
    let price = Price {
        input: 1.0,
        output: 2.0,
        cached_input: None,
    };
    let prices = Prices::new(BTreeMap::from([(name.clone(), price)]));
    let model = resolve_with(&ModelSpec::new(&name), &prices, &env(&[])).unwrap();
    assert_eq!(model.name(), name);
    assert_eq!(model.price(), Some(price));
    let messages = [Message::user("go")];
    let request = Request {
        system: "",
        messages: &messages,
        tools: &[],
        max_output_tokens: None,
    };
    let reply = model
        .respond(request, &mut |_: ModelUpdate<'_>| {})
        .await
        .unwrap();
    assert_eq!(reply.text, "reading");
    assert_eq!(reply.tool_calls[0].name, "read");

    std::fs::write(&path, "[{\"say\": \"x\",\n \"oops\": 1}]").unwrap();
    let e = error_owned(ModelSpec::new(&name));
    assert!(matches!(e, ResolveError::Script { line: 2, .. }), "{e}");
    assert!(e.to_string().contains(&path.display().to_string()), "{e}");

    let e = error_owned(ModelSpec::new("scripted/does/not/exist.json"));
    assert!(matches!(e, ResolveError::ScriptRead { .. }), "{e}");
}

fn error_owned(spec: ModelSpec) -> ResolveError {
    match resolve_with(&spec, &Prices::default(), &|_| None) {
        Err(e) => e,
        Ok(m) => panic!("expected an error, resolved {}", m.name()),
    }
}

/// What a server that queues for workers checks of a model: the provider only, with nothing
/// read or resolved (a `scripted/` path named by an API client is not opened on the server).
#[test]
fn provider_of_checks_the_provider_without_resolving() {
    use improv_models::provider_of;
    assert_eq!(
        provider_of("scripted//dev/zero").unwrap(),
        ("scripted", "/dev/zero")
    );
    assert_eq!(provider_of("local/smollm2").unwrap().0, "local");
    assert!(matches!(
        provider_of("nosuch/model"),
        Err(ResolveError::UnknownProvider { .. })
    ));
    assert!(matches!(
        provider_of("no-provider"),
        Err(ResolveError::NoProvider { .. })
    ));
}
