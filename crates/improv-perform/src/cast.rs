//! Casting: turns the stage file's actors into kernel actors with a resolved model and props,
//! every prop inside the stage's edges (sandbox, policy, redaction). [`Cast`] casts any actor of
//! the stage for one performance, the lead and the actors it cues alike; [`wrap`] is the one
//! place that puts a prop inside the edges.

use crate::board::{Board, BoardProp};
use crate::control::{self, ControlPlane, DirectorOnly, TokenWatch, Watched};
use crate::cue::CueProp;
use anyhow::{Context, Result, bail};
use improv_edges::{
    Approver, Guarded, Hidden, LoopDetector, PathEdges, Policy, Redacted, Redactor, Sandbox,
    SandboxConfig, SandboxError,
};
use improv_kernel::{Actor, Budget, Model, Observer, Performance, PerformanceBuilder, Prop};
use improv_stage::props::{self, Source};
use improv_stage::{ActorConfig, Stage};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The edges of one performance, built from `[edges]`.
pub struct Edges {
    /// The sandbox every process an actor starts runs in; `None` when no actor of the cast
    /// has a shell prop and the kernel cannot sandbox. Keep it until the performance is
    /// finished: dropping it kills whatever the actors left running.
    pub sandbox: Option<Arc<Sandbox>>,
    pub policy: Arc<Policy>,
    /// Redacts provider keys, secret-looking variables, the serve token and `redact` patterns.
    pub redactor: Arc<Redactor>,
    /// Whether a call of this performance carried or showed the serve token; then its `ask`
    /// rules are denied without asking (see [`control::DirectorOnly`]).
    pub(crate) token: Arc<TokenWatch>,
}

/// Builds the edges of a performance in `workspace` (canonical). Fails when the stage wants a
/// sandbox for shell props that this kernel cannot give, saying how to go on.
///
/// The stage's control plane ([`ControlPlane`]) is read-only to commands and to the file props,
/// and `.improv/` is invisible to both.
pub fn edges(stage: &Stage, workspace: &Path, approver: Arc<dyn Approver>) -> Result<Edges> {
    let e = &stage.edges;
    let control = ControlPlane::of(stage, workspace);
    let mut config = SandboxConfig::new(workspace).allow_rust_toolchain();
    config.network = e.network;
    config.mode = e.sandbox;
    let mut paths = PathEdges::default();
    if let Some(hidden) = &e.hidden {
        paths.hidden = hidden.iter().map(|g| Hidden::from(g.as_str())).collect();
    }
    if let Some(read_only) = &e.read_only {
        paths.read_only = read_only.clone();
    }
    // Commands see the same hidden files as the file props do not: covered, not readable; and
    // what the props may only read, commands may only read too.
    config.hidden = paths.hidden.clone();
    config.read_only_globs = paths.read_only.clone();
    config.read_only_globs.extend(control.name_globs());
    config.protected = control.protected_paths();
    config.concealed = control.concealed_paths();
    paths.read_only.extend(control.read_only_globs());
    paths
        .hidden
        .extend(control.hidden_globs().into_iter().map(Hidden::from));
    let shell = stage
        .actors
        .iter()
        .flat_map(|a| &a.props)
        // A prop that starts processes only runs sandboxed (or with `sandbox = "off"`).
        .any(|p| props::find(p).is_some_and(|info| info.runs_commands));
    let sandbox = match Sandbox::new(config) {
        Ok(s) => Some(Arc::new(s)),
        Err(e @ SandboxError::Unsupported { .. }) if shell => {
            bail!("{e} ({})", stage.path.display())
        }
        Err(SandboxError::Unsupported { .. }) => None,
        Err(e) => return Err(e).context("cannot set up the sandbox for the actors' commands"),
    };
    let token = Arc::new(TokenWatch::new(control::serve_token(stage)));
    let approver = Arc::new(DirectorOnly::new(approver, token.clone()));
    let policy = Policy::new(&e.rules, &paths, approver)
        .with_context(|| format!("in {}", stage.path.display()))?;
    let mut redactor = Redactor::from_env();
    if let Some(value) = token.value() {
        redactor = redactor.with_secret(control::SERVE_TOKEN_NAME, value);
    }
    for pattern in &e.redact {
        redactor = redactor
            .with_pattern(pattern)
            .with_context(|| format!("`redact` under [edges] in {}", stage.path.display()))?;
    }
    Ok(Edges {
        sandbox,
        policy: Arc::new(policy),
        redactor: Arc::new(redactor),
        token,
    })
}

/// Puts one prop inside the edges. Outermost first, as a call meets them:
///
/// 1. the policy ([`Guarded`]): rules, hidden and read-only paths, approvals, judged before
///    anything runs;
/// 2. redaction ([`Redacted`]): of everything the call returns, the hints below included, so
///    no secret reaches the model or the log whichever layer added it;
/// 3. the serve token's watch ([`Watched`]): sees the call's arguments and its output before
///    redaction;
/// 4. AGENTS.md hints ([`crate::agents::WithAgents`]), for the props that take a path: the
///    rules of the folders the call works in, once per actor;
/// 5. the prop itself; `bash` was built to spawn every command in the sandbox
///    ([`bare_props`]).
pub(crate) fn wrap(prop: Arc<dyn Prop>, edges: &Edges, hints: &Hints) -> Arc<dyn Prop> {
    let mut prop = prop;
    if props::find(&prop.spec().name).is_some_and(|info| info.takes_path) {
        let agents = crate::agents::Agents::new(&hints.workspace, hints.given.clone());
        prop = Arc::new(crate::agents::WithAgents::new(prop, agents));
    }
    let prop = Arc::new(Watched::new(prop, edges.token.clone()));
    let prop = Arc::new(Redacted::new(prop, edges.redactor.clone()));
    Arc::new(Guarded::new(prop, edges.policy.clone()))
}

/// What the AGENTS.md hints of one actor need: the workspace and the files it was given.
pub(crate) struct Hints {
    workspace: PathBuf,
    given: Arc<crate::agents::Given>,
}

impl Hints {
    pub(crate) fn new(workspace: &Path) -> Self {
        Hints {
            workspace: workspace.to_path_buf(),
            given: Arc::default(),
        }
    }
}

/// The model an actor gets when neither the stage nor `--model` names one: a hosted model when
/// its key is set, the embedded one otherwise.
pub fn default_model() -> &'static str {
    if std::env::var_os("OPENAI_API_KEY").is_some() {
        "openai/gpt-5-mini"
    } else if std::env::var_os("ANTHROPIC_API_KEY").is_some() {
        "anthropic/claude-sonnet-4-5"
    } else {
        EMBEDDED_DEFAULT
    }
}

/// The embedded model a stage gets when it names none and no API key is set; in a build without
/// the embedded model, naming it says how to get it.
#[cfg(feature = "embedded")]
const EMBEDDED_DEFAULT: &str = improv_local::DEFAULT_MODEL;
#[cfg(not(feature = "embedded"))]
const EMBEDDED_DEFAULT: &str = "local/smollm2-135m";

/// Why `local/…` cannot be performed by a build without the embedded model, and how to get it.
#[cfg(not(feature = "embedded"))]
pub const NO_EMBEDDED_MODEL: &str = "this improv was built without the embedded model (cargo \
    feature `embedded`); rebuild it with `cargo install --path crates/improv` (the feature is \
    on by default), or name a hosted model (e.g. `openai/gpt-5-mini` with OPENAI_API_KEY set)";

/// Resolves `provider/name` for an actor: `local/…` is the embedded model, the rest are
/// hosted providers.
pub fn model(stage: &Stage, actor: &ActorConfig, name: &str) -> Result<Arc<dyn Model>> {
    #[cfg(not(feature = "embedded"))]
    if name.starts_with("local/") {
        bail!(
            "cannot load the embedded model `{name}` for actor `{}`: {NO_EMBEDDED_MODEL}",
            actor.name
        );
    }
    #[cfg(feature = "embedded")]
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

/// The props an actor asked for and the `extra` ones, each inside the edges ([`wrap`]).
/// Props that later parts of improv provide are skipped with a warning rather than offered
/// half-built.
fn props(
    cast: &Cast,
    actor: &ActorConfig,
    extra: Vec<Arc<dyn Prop>>,
    hints: &Hints,
) -> Result<Vec<Arc<dyn Prop>>> {
    let mut props = bare_props(cast, actor)?;
    props.extend(extra);
    Ok(props
        .into_iter()
        .map(|p| wrap(p, &cast.edges, hints))
        .collect())
}

/// The actor's props as improv provides them, outside the edges but `bash`, which spawns its
/// commands in the sandbox.
fn bare_props(cast: &Cast, actor: &ActorConfig) -> Result<Vec<Arc<dyn Prop>>> {
    let (stage, edges) = (&*cast.stage, &*cast.edges);
    let mut config = improv_props::PropsConfig::default();
    if let Some(t) = stage.edges.tool_timeout {
        config.bash_timeout = t;
    }
    let mut props = Vec::new();
    for name in &actor.props {
        if name == "bash" {
            let Some(sandbox) = &edges.sandbox else {
                // `edges` refuses a cast with a shell prop and no sandbox.
                bail!("the shell prop `bash` has no sandbox to run in");
            };
            let bash = improv_props::Bash::new(config.bash_timeout, config.max_output_bytes)
                .with_spawn_hook(Arc::new(sandbox.spawn_hook()));
            props.push(Arc::new(bash) as Arc<dyn Prop>);
            continue;
        }
        if let Some(p) = improv_props::prop(name, &config) {
            props.push(p);
            continue;
        }
        match props::find(name).map(|info| info.source) {
            // Provided by the performance itself (see `Cast::actor`).
            Some(Source::Cue | Source::Board | Source::Skills) => {}
            // The tools of an MCP server come from `Cast::outside`.
            _ if stage
                .mcp
                .iter()
                .any(|m| *name == m.name || name.starts_with(&format!("{}.", m.name))) => {}
            Some(Source::Memory) => {
                if !props.iter().any(|p| p.spec().name == *name) {
                    props.extend(
                        improv_memory::props(memory(stage, cast.store.as_ref())?)
                            .into_iter()
                            .filter(|p| actor.props.contains(&p.spec().name)),
                    );
                }
            }
            Some(Source::Ledger) => {
                if !props.iter().any(|p| p.spec().name == *name) {
                    props.extend(
                        ledger_props(stage, cast.store.as_ref())?
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

/// The stage's memory: in a PostgreSQL store the performance is performed from (one pool per
/// store in the process), else in the stage folder beside its event log.
fn memory(
    stage: &Stage,
    store: Option<&improv_store::StoreUrl>,
) -> Result<Arc<dyn improv_memory::MemoryBackend>> {
    if let Some(improv_store::StoreUrl::Postgres(url)) = store {
        let pool = improv_store::PgPool::shared(url)?;
        return Ok(Arc::new(improv_memory::PgMemory::new(
            pool,
            stage.stage.name.clone(),
        )));
    }
    let dir = crate::state_dir(stage);
    let memory = improv_memory::Memory::open_in(&dir)
        .with_context(|| format!("cannot open the stage's memory in {}", dir.display()))?;
    Ok(Arc::new(memory))
}

/// The `record` and `query` props: in a PostgreSQL store the performance is performed from,
/// settled collections are tables there too (`ledger_<stage>`), kept up to date and queried.
fn ledger_props(
    stage: &Stage,
    store: Option<&improv_store::StoreUrl>,
) -> Result<Vec<Arc<dyn Prop>>> {
    let ledger = ledger(stage)?;
    if let Some(improv_store::StoreUrl::Postgres(url)) = store {
        let pool = improv_store::PgPool::shared(url)?;
        let tables = improv_ledger::postgres::PgLedger::new(pool, &stage.stage.name);
        return Ok(improv_ledger::props_in_store(ledger, Arc::new(tables)));
    }
    Ok(improv_ledger::props(ledger))
}

/// The stage's ledger, beside its event log.
fn ledger(stage: &Stage) -> Result<Arc<improv_ledger::Ledger>> {
    let dir = crate::state_dir(stage);
    let ledger = improv_ledger::Ledger::open_in(&dir, ledger_options(stage))
        .with_context(|| format!("cannot open the ledger in {}", dir.display()))?;
    Ok(Arc::new(ledger))
}

/// The ledger's settings from the stage's `[ledger]`.
pub fn ledger_options(stage: &Stage) -> improv_ledger::LedgerOptions {
    let mut options = improv_ledger::LedgerOptions {
        auto_settle: stage.ledger.auto_settle,
        ..Default::default()
    };
    if let Some(n) = stage.ledger.stable_writes {
        options.stable_writes = n;
    }
    if let Some(t) = stage.ledger.stable_after {
        options.stable_after = t;
    }
    options
}

/// The system prompt: the stage's, plus the settled schemas of the ledger for actors that use it,
/// so later performances converge on the structure earlier ones discovered.
fn system_prompt(stage: &Stage, actor: &ActorConfig, workspace: &Path) -> Result<String> {
    let mut system = stage.system_prompt(actor, workspace);
    if actor.props.iter().any(|p| props::is(p, Source::Ledger)) {
        let settled = ledger(stage)?.context_for(&[])?;
        if !settled.is_empty() {
            system.push('\n');
            system.push_str(&settled);
        }
    }
    Ok(system)
}

/// Everything needed to cast any actor of the stage for one performance: the lead at the start,
/// the actors it cues later. Cheap to share: the cue prop keeps one.
pub struct Cast {
    pub stage: Arc<Stage>,
    pub workspace: PathBuf,
    pub edges: Arc<Edges>,
    /// `--model`: every actor's model for this run.
    pub model_override: Option<String>,
    /// The notes every actor of this performance can post and read.
    pub board: Arc<Board>,
    /// Where sub-performances are logged.
    pub log: Arc<improv_log::EventLog>,
    /// Makes a view for a sub-performance (the terminal shows cued actors too); none when
    /// nobody watches.
    pub watch: Option<Arc<dyn Fn() -> Arc<dyn Observer> + Send + Sync>>,
    /// Props from outside improv (the stage's MCP servers), by the names actors give.
    pub outside: Option<Arc<dyn PropSource>>,
    /// The Agent Skills of the stage and the user: a line each in the system prompt, and the
    /// `skill` prop to read one.
    pub skills: improv_skills::Found,
    /// The store the performance is performed from: when it is PostgreSQL, the stage's memory
    /// is there (shared by every worker); otherwise in the stage folder.
    pub store: Option<improv_store::StoreUrl>,
}

/// Props that come from outside improv, such as the tools of the stage's MCP servers: the ones
/// an actor asked for by name. The source stays alive as long as the production holds it.
pub trait PropSource: Send + Sync {
    fn props(&self, wanted: &[String]) -> Vec<Arc<dyn Prop>>;
}

impl Cast {
    /// The actor named `name`, ready to perform at cue depth `depth` (0 for the lead).
    pub fn actor(self: &Arc<Self>, name: &str, depth: u32) -> Result<Actor> {
        let stage = &self.stage;
        let Some(config) = stage.actor(name).or_else(|| {
            // A stage without `[[actor]]` has one default lead.
            (stage.lead().name == name).then(|| stage.lead())
        }) else {
            bail!("no actor named `{name}` in {}", stage.path.display());
        };
        let model_name: &str = match (self.model_override.as_deref(), config.model.as_deref()) {
            (Some(m), _) | (None, Some(m)) => m,
            (None, None) => default_model(),
        };
        if !model_name.contains('/') {
            bail!(
                "the model `{model_name}` has no provider: write it as provider/name, e.g. openai/{model_name}, anthropic/{model_name} or local/smollm2-135m"
            );
        }
        let mut extra: Vec<Arc<dyn Prop>> = Vec::new();
        let has = |p: &str| config.props.iter().any(|x| x == p);
        if has("board") {
            extra.push(Arc::new(BoardProp::new(self.board.clone())));
        }
        if has("cue") && depth < stage.edges.cue_depth && stage.actors.len() > 1 {
            extra.push(Arc::new(CueProp::new(self.clone(), config, depth)));
        }
        if let Some(outside) = &self.outside {
            extra.extend(outside.props(&config.props));
        }
        let mut system = system_prompt(stage, config, &self.workspace)?;
        if !self.skills.skills.is_empty() {
            extra.push(Arc::new(improv_skills::SkillProp::new(&self.skills)));
            system.push('\n');
            system.push_str(&self.skills.context());
        }
        let hints = Hints::new(&self.workspace);
        let mut props = props(self, config, extra, &hints)?;
        let (routines, line) = crate::routines::offer(stage, &props, &self.edges, &hints);
        props.extend(routines);
        if let Some(line) = line {
            system.push('\n');
            system.push_str(&line);
        }
        // The context files and skills are the workspace's text: redacted like a prop's output.
        let system = self.edges.redactor.redact(&system).into_owned();
        Ok(Actor {
            name: config.name.clone(),
            system,
            model: model(stage, config, model_name)?,
            props,
            max_output_tokens: config.max_output_tokens,
        })
    }

    /// A performance of `actor` inside this cast's edges: the stage, the workspace, the actor's
    /// budget, the loop detector and the tool time limit. The lead and cued actors alike.
    pub fn performance(&self, actor: Actor) -> PerformanceBuilder {
        let loop_limit = usize::try_from(self.stage.edges.loop_limit).unwrap_or(usize::MAX);
        let budget = self.budget(&actor.name);
        let builder = Performance::builder(actor)
            .stage(self.stage.stage.name.clone())
            .workspace(self.workspace.clone())
            .budget(budget)
            .hook(Arc::new(LoopDetector::new(loop_limit)));
        match self.stage.edges.tool_timeout {
            Some(t) => builder.tool_timeout(t),
            None => builder,
        }
    }

    /// The budget `name` performs within: the tighter of its own limits and the performance's.
    pub fn budget(&self, name: &str) -> Budget {
        let stage = self.stage.budget();
        let Some(own) = self.stage.actor(name).map(|a| &a.budget) else {
            return stage;
        };
        Budget {
            max_turns: tighter(own.max_turns, stage.max_turns),
            max_input_tokens: tighter(own.max_input_tokens, stage.max_input_tokens),
            max_output_tokens: tighter(own.max_output_tokens, stage.max_output_tokens),
            max_cost_usd: tighter(own.max_cost_usd, stage.max_cost_usd),
            timeout: tighter(own.timeout, stage.timeout),
            max_tool_calls: tighter(own.max_tool_calls, stage.max_tool_calls),
        }
    }
}

/// The smaller of two limits; `None` is no limit.
fn tighter<T: PartialOrd>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if a <= b { a } else { b }),
        (a, b) => a.or(b),
    }
}
