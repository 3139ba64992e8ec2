//! Casting: turns the stage file's actors into kernel actors with a resolved model and props.

use anyhow::{Context, Result, bail};
use improv_kernel::{Actor, Model, Prop};
use improv_stage::{ActorConfig, Stage};
use std::path::Path;
use std::sync::Arc;

/// The model an actor gets when neither the stage nor `--model` names one: a hosted model when
/// its key is set, the embedded one otherwise.
pub fn default_model() -> &'static str {
    if std::env::var_os("OPENAI_API_KEY").is_some() {
        "openai/gpt-5-mini"
    } else if std::env::var_os("ANTHROPIC_API_KEY").is_some() {
        "anthropic/claude-sonnet-4-5"
    } else {
        improv_local::DEFAULT_MODEL
    }
}

/// Resolves `provider/name` for an actor: `local/…` is the embedded model, the rest are
/// hosted providers.
pub fn model(stage: &Stage, actor: &ActorConfig, name: &str) -> Result<Arc<dyn Model>> {
    if name.starts_with("local/") {
        return improv_local::resolve(name, &improv_local::LocalOptions::default()).with_context(
            || {
                format!(
                    "cannot load the embedded model `{name}` for actor `{}`",
                    actor.name
                )
            },
        );
    }
    // A script named in the stage file is found beside the stage file.
    let model = match name.strip_prefix("scripted/") {
        Some(path) if Path::new(path).is_relative() && stage.dir.join(path).exists() => {
            format!("scripted/{}", stage.dir.join(path).display())
        }
        _ => name.to_string(),
    };
    let spec = improv_models::ModelSpec {
        model,
        base_url: actor.base_url.clone(),
        api_key_env: actor.api_key_env.clone(),
        max_retries: None,
    };
    let prices = improv_models::Prices::new(stage.prices.clone());
    improv_models::resolve(&spec, &prices).with_context(|| {
        format!(
            "cannot set up the model `{name}` for actor `{}`",
            actor.name
        )
    })
}

/// The props an actor asked for. Props that later parts of improv provide are skipped with a
/// warning rather than offered half-built.
pub fn props(stage: &Stage, actor: &ActorConfig) -> Result<Vec<Arc<dyn Prop>>> {
    let mut config = improv_props::PropsConfig::default();
    if let Some(t) = stage.edges.tool_timeout {
        config.bash_timeout = t;
    }
    let mut props = Vec::new();
    for name in &actor.props {
        if let Some(p) = improv_props::prop(name, &config) {
            props.push(p);
            continue;
        }
        match name.as_str() {
            "record" | "query" => {
                if !props.iter().any(|p| p.spec().name == *name) {
                    props.extend(
                        improv_ledger::props(ledger(stage)?)
                            .into_iter()
                            .filter(|p| actor.props.contains(&p.spec().name)),
                    );
                }
            }
            _ => eprintln!(
                "warning: actor `{}` asks for the prop `{name}`, which this build of improv does not provide yet; it performs without it",
                actor.name
            ),
        }
    }
    Ok(props)
}

/// The stage's ledger, beside its event log.
fn ledger(stage: &Stage) -> Result<Arc<improv_ledger::Ledger>> {
    let dir = crate::perform::state_dir(stage);
    let ledger = improv_ledger::Ledger::open_in(&dir, Default::default())
        .with_context(|| format!("cannot open the ledger in {}", dir.display()))?;
    Ok(Arc::new(ledger))
}

/// The system prompt: the stage's, plus the settled schemas of the ledger for actors that use it,
/// so later performances converge on the structure earlier ones discovered.
fn system_prompt(stage: &Stage, actor: &ActorConfig, workspace: &Path) -> Result<String> {
    let mut system = stage.system_prompt(actor, workspace);
    if actor.props.iter().any(|p| p == "record" || p == "query") {
        let settled = ledger(stage)?.context_for(&[])?;
        if !settled.is_empty() {
            system.push('\n');
            system.push_str(&settled);
        }
    }
    Ok(system)
}

/// The lead actor, ready to perform in `workspace`.
pub fn lead(stage: &Stage, workspace: &Path, model_override: Option<&str>) -> Result<Actor> {
    let config = stage.lead();
    let name: &str = match (model_override, config.model.as_deref()) {
        (Some(m), _) | (None, Some(m)) => m,
        (None, None) => default_model(),
    };
    if !name.contains('/') {
        bail!(
            "the model `{name}` has no provider: write it as provider/name, e.g. openai/{name}, anthropic/{name} or local/smollm2-135m"
        );
    }
    Ok(Actor {
        name: config.name.clone(),
        system: system_prompt(stage, config, workspace)?,
        model: model(stage, config, name)?,
        props: props(stage, config)?,
        max_output_tokens: config.max_output_tokens,
    })
}
