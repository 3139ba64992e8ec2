//! The stage file as written: serde structs that keep the position of every value a later check
//! may need to point at, the checks themselves, and the conversion into a [`Stage`].

use crate::LedgerConfig;
use crate::error::Problem;
use crate::mcp::RawProps;
use crate::{
    ActorConfig, CORE_PROPS, Check, CheckOn, ContextConfig, ConvergeOn, DEFAULT_CUE_DEPTH,
    DEFAULT_LOOP_LIMIT, Decision, Edges, Feedback, KNOWN_PROPS, PROVIDERS, Rule, STATE_DIR,
    SandboxMode, Stage, StageMeta, default_actor,
};
use improv_kernel::{Budget, Price};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// Every key the file may have, at the top level.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStage {
    #[serde(default)]
    stage: RawMeta,
    #[serde(default)]
    context: RawContext,
    #[serde(default)]
    actor: Vec<Spanned<RawActor>>,
    #[serde(default)]
    edges: RawEdges,
    #[serde(default)]
    feedback: RawFeedback,
    #[serde(default)]
    prices: BTreeMap<String, RawPrice>,
    #[serde(default)]
    ledger: RawLedger,
    #[serde(default)]
    props: RawProps,
    #[serde(default)]
    routines: crate::routines::RawRoutines,
    #[serde(default)]
    door: Vec<Spanned<crate::door::RawDoor>>,
    #[serde(default)]
    doors: crate::door::RawDoors,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    auto_settle: Option<bool>,
    stable_writes: Option<Spanned<u64>>,
    stable_after: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMeta {
    name: Option<Spanned<String>>,
    intent: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawContext {
    files: Option<Vec<String>>,
    compact_at: Option<Spanned<u64>>,
    skills: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawActor {
    name: Option<Spanned<String>>,
    role: Option<String>,
    model: Option<Spanned<String>>,
    props: Option<Vec<Spanned<String>>>,
    lead: Option<Spanned<bool>>,
    base_url: Option<String>,
    api_key_env: Option<String>,
    max_output_tokens: Option<Spanned<u32>>,
    max_turns: Option<Spanned<u32>>,
    max_input_tokens: Option<Spanned<u64>>,
    max_reply_tokens: Option<Spanned<u64>>,
    max_cost_usd: Option<Spanned<f64>>,
    max_tool_calls: Option<Spanned<u32>>,
    timeout: Option<Spanned<String>>,
    cues: Option<Vec<Spanned<String>>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEdges {
    workspace: Option<String>,
    network: Option<bool>,
    max_turns: Option<Spanned<u32>>,
    max_input_tokens: Option<Spanned<u64>>,
    max_output_tokens: Option<Spanned<u64>>,
    max_cost_usd: Option<Spanned<f64>>,
    max_tool_calls: Option<Spanned<u32>>,
    timeout: Option<Spanned<String>>,
    tool_timeout: Option<Spanned<String>>,
    #[serde(default)]
    rule: Vec<RawRule>,
    sandbox: Option<Spanned<String>>,
    hidden: Option<Vec<Spanned<String>>>,
    read_only: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    writable: Vec<Spanned<String>>,
    #[serde(default)]
    redact: Vec<Spanned<String>>,
    loop_limit: Option<Spanned<u32>>,
    cue_depth: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    prop: Option<Spanned<String>>,
    command: Option<String>,
    path: Option<String>,
    decision: Decision,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFeedback {
    max_attempts: Option<Spanned<u32>>,
    converge_on: Option<ConvergeOn>,
    #[serde(default)]
    check: Vec<Spanned<RawCheck>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    name: Spanned<String>,
    command: Option<String>,
    critic: Option<Spanned<String>>,
    rubric: Option<String>,
    file: Option<Spanned<String>>,
    exists: Option<bool>,
    contains: Option<String>,
    matches: Option<Spanned<String>>,
    schema: Option<Spanned<String>>,
    on: Option<CheckOn>,
    timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    input: Spanned<f64>,
    output: Spanned<f64>,
    cached_input: Option<Spanned<f64>>,
}

const DURATION_HELP: &str = "write a duration such as \"500ms\", \"90s\", \"20m\" or \"1h30m\"";

/// Collects problems while checking a raw stage.
#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn push(&mut self, p: Problem) {
        self.problems.push(p);
    }

    fn nonzero<T: Copy + Default + PartialEq>(&mut self, key: &str, v: &Option<Spanned<T>>) {
        if let Some(v) = v
            && *v.get_ref() == T::default()
        {
            self.push(
                Problem::new(format!("`{key}` is 0, so nothing could run"), v.span(), "0").help(
                    format!("give `{key}` a positive limit, or remove it for no limit"),
                ),
            );
        }
    }

    fn amount(&mut self, key: &str, v: Option<&Spanned<f64>>) {
        if let Some(v) = v {
            let x = *v.get_ref();
            if !x.is_finite() || x < 0.0 {
                self.push(
                    Problem::new(
                        format!("`{key}` must be a positive amount"),
                        v.span(),
                        "here",
                    )
                    .help("write an amount in US dollars, such as 2.0"),
                );
            }
        }
    }

    fn duration(&mut self, key: &str, v: Option<&Spanned<String>>) -> Option<Duration> {
        let v = v?;
        match humantime::parse_duration(v.get_ref()) {
            Ok(d) if d.is_zero() => {
                self.push(
                    Problem::new(format!("`{key}` is zero"), v.span(), "zero")
                        .help(format!("{DURATION_HELP}, or remove `{key}` for no limit")),
                );
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.push(
                    Problem::new(
                        format!("`{key}` is not a duration: {e}"),
                        v.span(),
                        "not a duration",
                    )
                    .help(DURATION_HELP),
                );
                None
            }
        }
    }

    fn sandbox(&mut self, v: Option<&Spanned<String>>) -> SandboxMode {
        match v.map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "on")) => SandboxMode::On,
            Some((_, "off")) => SandboxMode::Off,
            Some((v, other)) => {
                self.push(
                    Problem::new(
                        format!("`sandbox` is \"{other}\", which is neither \"on\" nor \"off\""),
                        v.span(),
                        "not on or off",
                    )
                    .help(
                        "write `sandbox = \"on\"` (the default: shell props run sandboxed) or \
                         `sandbox = \"off\"` (they run unsandboxed, and the log says so)",
                    ),
                );
                SandboxMode::On
            }
        }
    }

    /// Path globs, as the edges match them (`*` stays within one path component).
    fn globs(&mut self, key: &str, v: Option<&Vec<Spanned<String>>>) -> Option<Vec<String>> {
        let v = v?;
        for g in v {
            let text = g.get_ref().trim_end_matches('/');
            if let Err(e) = globset::GlobBuilder::new(text)
                .literal_separator(true)
                .build()
            {
                self.push(
                    Problem::new(
                        format!("`{key}` has a glob that does not parse: {}", e.kind()),
                        g.span(),
                        "not a glob",
                    )
                    .help(
                        "write a glob such as \".env*\", \"*.pem\" or \"secrets/**\" \
                         (`*` matches within a path component, `**` across them)",
                    ),
                );
            }
        }
        Some(v.iter().map(|g| g.get_ref().clone()).collect())
    }

    /// `writable`: control files opened to the actors, each a plain path inside the workspace;
    /// improv's own state (`.improv/`) is never one of them.
    fn writable(&mut self, v: &[Spanned<String>]) -> Vec<PathBuf> {
        let mut out = Vec::with_capacity(v.len());
        for w in v {
            let path = Path::new(w.get_ref().trim_end_matches('/'));
            let parts: Vec<Component> = path.components().collect();
            let problem = if parts.is_empty() || parts == [Component::CurDir] {
                Some((
                    "`writable` names the whole workspace",
                    "name the control files to open one by one, such as \"skills\" or \"AGENTS.md\"",
                ))
            } else if !parts
                .iter()
                .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
            {
                Some((
                    "`writable` has a path that leaves the workspace or is absolute",
                    "write a path relative to the workspace without `..`, such as \"skills\"",
                ))
            } else if parts
                .iter()
                .find(|c| !matches!(c, Component::CurDir))
                .is_some_and(|c| c.as_os_str() == STATE_DIR)
            {
                Some((
                    "`.improv` holds improv's own state (logs, director notes, the serve token) and can never be opened to actors",
                    "remove it from `writable`",
                ))
            } else {
                None
            };
            match problem {
                Some((message, help)) => {
                    self.push(Problem::new(message, w.span(), "here").help(help));
                }
                None => out.push(
                    parts
                        .iter()
                        .filter(|c| !matches!(c, Component::CurDir))
                        .collect(),
                ),
            }
        }
        out
    }

    fn patterns(&mut self, v: &[Spanned<String>]) -> Vec<String> {
        for p in v {
            if p.get_ref().is_empty() {
                self.push(
                    Problem::new("a `redact` pattern is empty", p.span(), "empty")
                        .help("write a regular expression matching the secret, or remove it"),
                );
            } else if let Err(e) = regex::Regex::new(p.get_ref()) {
                let first = e.to_string();
                let why = first.lines().last().unwrap_or_default().trim().to_string();
                self.push(
                    Problem::new(
                        format!("a `redact` pattern is not a regular expression: {why}"),
                        p.span(),
                        "not a regular expression",
                    )
                    .help(
                        "write a regular expression such as \"ghp_[A-Za-z0-9]{36}\" (in TOML, \
                         a literal string '...' keeps backslashes as written)",
                    ),
                );
            }
        }
        v.iter().map(|p| p.get_ref().clone()).collect()
    }

    fn loop_limit(&mut self, v: Option<&Spanned<u32>>) -> u32 {
        let Some(v) = v else {
            return DEFAULT_LOOP_LIMIT;
        };
        if *v.get_ref() < 2 {
            self.push(
                Problem::new(
                    format!(
                        "`loop_limit` is {}, but a loop takes at least 2 identical calls",
                        v.get_ref()
                    ),
                    v.span(),
                    "less than 2",
                )
                .help(format!(
                    "give the number of identical tool calls in a row before the actor is told \
                     it is looping, at least 2 (the default is {DEFAULT_LOOP_LIMIT})"
                )),
            );
        }
        *v.get_ref()
    }

    /// A prop an actor or rule names: a built-in one, an MCP server (all its tools) or one
    /// tool of it (`server.tool`).
    fn prop(&mut self, p: &Spanned<String>, servers: &[String]) {
        let name = p.get_ref().as_str();
        let server = name.split_once('.').map_or(name, |(s, _)| s);
        if servers.iter().any(|s| s == server) {
            return;
        }
        if !KNOWN_PROPS.contains(&name) {
            let mut help = String::new();
            if let Some(close) = closest(p.get_ref(), KNOWN_PROPS.iter().copied()) {
                help.push_str(&format!("did you mean `{close}`? "));
            }
            help.push_str(&format!("the props are: {}", KNOWN_PROPS.join(", ")));
            self.push(
                Problem::new(
                    format!("unknown prop `{}`", p.get_ref()),
                    p.span(),
                    "unknown prop",
                )
                .help(help),
            );
        }
    }

    fn model(&mut self, m: &Spanned<String>) {
        let model = m.get_ref();
        let providers = PROVIDERS.join(", ");
        match model.split_once('/') {
            None => self.push(
                Problem::new(
                    format!("model `{model}` does not name its provider"),
                    m.span(),
                    "no `provider/` prefix",
                )
                .help(format!(
                    "write it as provider/model, such as \"openai/{model}\"; the providers are: {providers}"
                )),
            ),
            Some((provider, name)) => {
                if !PROVIDERS.contains(&provider) {
                    let mut help = String::new();
                    if let Some(close) = closest(provider, PROVIDERS.iter().copied()) {
                        help.push_str(&format!("did you mean `{close}/{name}`? "));
                    }
                    help.push_str(&format!("the providers are: {providers}"));
                    self.push(
                        Problem::new(
                            format!("unknown provider `{provider}` in model `{model}`"),
                            m.span(),
                            "unknown provider",
                        )
                        .help(help),
                    );
                } else if name.is_empty() {
                    self.push(
                        Problem::new(
                            format!("model `{model}` names no model after its provider"),
                            m.span(),
                            "no model name",
                        )
                        .help(format!("write it as provider/model, such as \"{provider}/NAME\"")),
                    );
                }
            }
        }
    }
}

/// The cast as checked: its actors, and where each name was given (for the checks and cues that
/// name an actor).
struct Cast {
    actors: Vec<ActorConfig>,
    names: HashMap<String, Range<usize>>,
}

impl Cast {
    /// A problem for `word` at `span` naming no actor of the cast: the closest name, then the
    /// cast, after `intro`.
    fn unknown(&self, word: &Spanned<String>, message: String, intro: &str) -> Problem {
        let cast: Vec<&str> = self.actors.iter().map(|a| a.name.as_str()).collect();
        let mut help = String::new();
        if let Some(close) = closest(word.get_ref(), cast.iter().copied()) {
            help.push_str(&format!("did you mean `{close}`? "));
        }
        help.push_str(&format!("{intro}: {}", cast.join(", ")));
        Problem::new(message, word.span(), "no such actor").help(help)
    }
}

/// A duration key checked on its own, for the section builders that take a list of problems
/// rather than a [`Checker`] (MCP servers, doors).
fn duration_key(
    problems: &mut Vec<Problem>,
    key: &str,
    v: Option<&Spanned<String>>,
) -> Option<Duration> {
    let mut t = Checker {
        problems: std::mem::take(problems),
    };
    let d = t.duration(key, v);
    *problems = t.problems;
    d
}

impl RawStage {
    /// Checks the stage and builds it, or returns every problem found. Each section is checked
    /// and built by its own method, in the order the file documents them.
    pub(crate) fn build(self, path: PathBuf, dir: PathBuf) -> Result<Stage, Vec<Problem>> {
        let mut c = Checker::default();
        let mcp = self.props.build(&mut c.problems, duration_key);
        let servers: Vec<String> = mcp.iter().map(|m| m.name.clone()).collect();
        let cast = self.cast(&mut c, &servers);
        let edges = self.edges(&mut c, &servers);
        let feedback = self.feedback(&mut c, &dir, &cast);
        let prices = self.prices(&mut c);
        let ledger = self.ledger(&mut c);
        let retire_after = c.duration("retire_after", self.routines.retire_after.as_ref());
        if let Some(n) = &self.stage.name
            && n.get_ref().trim().is_empty()
        {
            c.push(
                Problem::new("the stage's name is empty", n.span(), "empty")
                    .help("name the stage, or remove `name` to use its directory's name"),
            );
        }
        let doors = crate::door::build(
            &self.door,
            self.stage.intent.is_some(),
            &mut c.problems,
            &mut duration_key,
        );
        let keep_for = c.duration("keep_for", self.doors.keep_for.as_ref());
        let door_retention = self.doors.build(keep_for, &mut c.problems);
        if !c.problems.is_empty() {
            return Err(c.problems);
        }
        Ok(Stage {
            doors,
            door_retention,
            stage: StageMeta {
                named: self.stage.name.is_some(),
                name: match self.stage.name {
                    Some(n) => n.into_inner(),
                    None => crate::dir_name(&dir),
                },
                intent: self.stage.intent.filter(|i| !i.trim().is_empty()),
            },
            context: {
                let d = ContextConfig::default();
                ContextConfig {
                    files: self.context.files.unwrap_or(d.files),
                    compact_at: self.context.compact_at.map(|v| v.into_inner()),
                    skills: self.context.skills.unwrap_or(d.skills),
                }
            },
            mcp,
            actors: cast.actors,
            edges,
            feedback,
            prices,
            ledger,
            routines: self.routines.build(retire_after),
            path,
            dir,
        })
    }

    /// `[[actor]]`: each actor checked and built (the default lead when there is none), then
    /// every `cues` checked against the whole cast.
    fn cast(&self, c: &mut Checker, servers: &[String]) -> Cast {
        let mut names: HashMap<String, Range<usize>> = HashMap::new();
        let mut lead: Option<Range<usize>> = None;
        let mut actors = Vec::with_capacity(self.actor.len());
        for (i, spanned) in self.actor.iter().enumerate() {
            let name = actor_name(c, i, spanned, &mut names);
            let a = spanned.get_ref();
            if let Some(l) = &a.lead
                && *l.get_ref()
            {
                if let Some(first) = &lead {
                    c.push(
                        Problem::new("two actors say `lead = true`", l.span(), "second lead")
                            .also(first.clone(), "first lead")
                            .help("one actor leads; remove `lead = true` from all others"),
                    );
                } else {
                    lead = Some(l.span());
                }
            }
            actors.push(actor(c, name, a, servers));
        }
        if actors.is_empty() {
            actors.push(default_actor());
        }
        let cast = Cast { actors, names };
        for a in &self.actor {
            for cued in a.get_ref().cues.iter().flatten() {
                if !cast.names.contains_key(cued.get_ref()) {
                    let message =
                        format!("`cues` names `{}`, who is not in the cast", cued.get_ref());
                    c.push(cast.unknown(cued, message, "the cast is"));
                }
            }
        }
        cast
    }

    /// `[edges]`: limits, rules, the sandbox and the paths it hides, guards or opens.
    fn edges(&self, c: &mut Checker, servers: &[String]) -> Edges {
        let e = &self.edges;
        c.nonzero("max_turns", &e.max_turns);
        c.nonzero("max_tool_calls", &e.max_tool_calls);
        c.nonzero("max_input_tokens", &e.max_input_tokens);
        c.nonzero("max_output_tokens", &e.max_output_tokens);
        c.amount("max_cost_usd", e.max_cost_usd.as_ref());
        let timeout = c.duration("timeout", e.timeout.as_ref());
        let tool_timeout = c.duration("tool_timeout", e.tool_timeout.as_ref());
        for r in &e.rule {
            if let Some(p) = &r.prop {
                c.prop(p, servers);
            }
        }
        let sandbox = c.sandbox(e.sandbox.as_ref());
        let hidden = c.globs("hidden", e.hidden.as_ref());
        let read_only = c.globs("read_only", e.read_only.as_ref());
        let writable = c.writable(&e.writable);
        let redact = c.patterns(&e.redact);
        let loop_limit = c.loop_limit(e.loop_limit.as_ref());
        c.nonzero("cue_depth", &e.cue_depth);
        c.nonzero("compact_at", &self.context.compact_at);
        Edges {
            workspace: e.workspace.as_ref().map(PathBuf::from),
            network: e.network.unwrap_or(false),
            max_turns: e.max_turns.as_ref().map(|v| *v.get_ref()),
            max_input_tokens: e.max_input_tokens.as_ref().map(|v| *v.get_ref()),
            max_output_tokens: e.max_output_tokens.as_ref().map(|v| *v.get_ref()),
            max_cost_usd: e.max_cost_usd.as_ref().map(|v| *v.get_ref()),
            max_tool_calls: e.max_tool_calls.as_ref().map(|v| *v.get_ref()),
            timeout,
            tool_timeout,
            rules: e
                .rule
                .iter()
                .map(|r| Rule {
                    prop: r.prop.as_ref().map(|p| p.get_ref().clone()),
                    command: r.command.clone(),
                    path: r.path.clone(),
                    decision: r.decision,
                })
                .collect(),
            sandbox,
            hidden,
            read_only,
            writable,
            redact,
            loop_limit,
            cue_depth: e
                .cue_depth
                .as_ref()
                .map_or(DEFAULT_CUE_DEPTH, |v| *v.get_ref()),
        }
    }

    /// `[feedback]`: the attempts, when to converge, and each `[[feedback.check]]` (two of one
    /// name are refused).
    fn feedback(&self, c: &mut Checker, dir: &Path, cast: &Cast) -> Feedback {
        let f = &self.feedback;
        c.nonzero("max_attempts", &f.max_attempts);
        let mut check_names: HashMap<&str, Range<usize>> = HashMap::new();
        let mut checks = Vec::with_capacity(f.check.len());
        for spanned in &f.check {
            let k = spanned.get_ref();
            let name = k.name.get_ref();
            if let Some(first) = check_names.get(name.as_str()) {
                c.push(
                    Problem::new(
                        format!("two checks are named `{name}`"),
                        k.name.span(),
                        "second check with this name",
                    )
                    .also(first.clone(), "first one")
                    .help("give each check its own name"),
                );
            } else {
                check_names.insert(name, k.name.span());
            }
            checks.push(check(c, spanned, dir, cast));
        }
        Feedback {
            max_attempts: f.max_attempts.as_ref().map_or(3, |v| *v.get_ref()),
            converge_on: f.converge_on.unwrap_or_default(),
            checks,
        }
    }

    /// `[prices.MODEL]`: what a model's tokens cost, each amount checked.
    fn prices(&self, c: &mut Checker) -> BTreeMap<String, Price> {
        let mut prices = BTreeMap::new();
        for (model, p) in &self.prices {
            c.amount("input", Some(&p.input));
            c.amount("output", Some(&p.output));
            c.amount("cached_input", p.cached_input.as_ref());
            prices.insert(
                model.clone(),
                Price {
                    input: *p.input.get_ref(),
                    output: *p.output.get_ref(),
                    cached_input: p.cached_input.as_ref().map(|v| *v.get_ref()),
                },
            );
        }
        prices
    }

    /// `[ledger]`: when a collection is stable and whether it settles on its own.
    fn ledger(&self, c: &mut Checker) -> LedgerConfig {
        let l = &self.ledger;
        if let Some(n) = &l.stable_writes
            && *n.get_ref() == 0
        {
            c.push(Problem::new("`stable_writes` is 0", n.span(), "zero").help(
                "give how many writes without a change in shape make a collection stable, e.g. 20",
            ));
        }
        LedgerConfig {
            auto_settle: l.auto_settle.unwrap_or(false),
            stable_writes: l.stable_writes.as_ref().map(|v| *v.get_ref()),
            stable_after: c.duration("stable_after", l.stable_after.as_ref()),
        }
    }
}

/// The name of the `i`th actor: the one given (not empty, not taken), or `lead` for the first
/// and `actorN` for the others; recorded in `names` with where it was given.
fn actor_name(
    c: &mut Checker,
    i: usize,
    spanned: &Spanned<RawActor>,
    names: &mut HashMap<String, Range<usize>>,
) -> String {
    let Some(n) = &spanned.get_ref().name else {
        let name = if i == 0 {
            "lead".to_string()
        } else {
            format!("actor{}", i + 1)
        };
        if let Some(first) = names.get(&name) {
            c.push(
                Problem::new(
                    format!("this unnamed actor would be named `{name}`, like another one"),
                    spanned.span(),
                    "unnamed actor",
                )
                .also(first.clone(), "already named so")
                .help("give each actor a `name`"),
            );
        } else {
            names.insert(name.clone(), spanned.span());
        }
        return name;
    };
    if n.get_ref().trim().is_empty() {
        c.push(
            Problem::new("an actor's name is empty", n.span(), "empty")
                .help("give the actor a name, such as \"lead\""),
        );
    } else if let Some(first) = names.get(n.get_ref()) {
        c.push(
            Problem::new(
                format!("two actors are named `{}`", n.get_ref()),
                n.span(),
                "second actor with this name",
            )
            .also(first.clone(), "first one")
            .help("give each actor its own name"),
        );
    } else {
        names.insert(n.get_ref().clone(), n.span());
    }
    n.get_ref().clone()
}

/// One actor: its model and props checked, its own limits checked and made its budget.
fn actor(c: &mut Checker, name: String, a: &RawActor, servers: &[String]) -> ActorConfig {
    if let Some(m) = &a.model {
        c.model(m);
    }
    for p in a.props.iter().flatten() {
        c.prop(p, servers);
    }
    c.nonzero("max_output_tokens", &a.max_output_tokens);
    c.nonzero("max_turns", &a.max_turns);
    c.nonzero("max_tool_calls", &a.max_tool_calls);
    c.nonzero("max_input_tokens", &a.max_input_tokens);
    c.nonzero("max_reply_tokens", &a.max_reply_tokens);
    c.amount("max_cost_usd", a.max_cost_usd.as_ref());
    let budget = Budget {
        max_turns: a.max_turns.as_ref().map(|v| *v.get_ref()),
        max_input_tokens: a.max_input_tokens.as_ref().map(|v| *v.get_ref()),
        max_output_tokens: a.max_reply_tokens.as_ref().map(|v| *v.get_ref()),
        max_cost_usd: a.max_cost_usd.as_ref().map(|v| *v.get_ref()),
        timeout: c.duration("timeout", a.timeout.as_ref()),
        max_tool_calls: a.max_tool_calls.as_ref().map(|v| *v.get_ref()),
    };
    ActorConfig {
        name,
        role: a.role.clone(),
        model: a.model.as_ref().map(|m| m.get_ref().clone()),
        props: match &a.props {
            Some(ps) => dedup(ps.iter().map(|p| p.get_ref().clone())),
            None => CORE_PROPS.iter().map(|p| p.to_string()).collect(),
        },
        lead: a.lead.as_ref().is_some_and(|l| *l.get_ref()),
        base_url: a.base_url.clone(),
        api_key_env: a.api_key_env.clone(),
        max_output_tokens: a.max_output_tokens.as_ref().map(|m| *m.get_ref()),
        budget,
        cues: a
            .cues
            .as_ref()
            .map(|v| v.iter().map(|n| n.get_ref().clone()).collect()),
    }
}

/// One `[[feedback.check]]`: exactly one kind (a command, a critic of the cast, a file), and
/// what it asserts fits its kind.
fn check(c: &mut Checker, spanned: &Spanned<RawCheck>, dir: &Path, cast: &Cast) -> Check {
    let k = spanned.get_ref();
    let name = k.name.get_ref();
    check_kind(c, spanned);
    if let Some(m) = &k.matches
        && let Err(e) = regex::Regex::new(m.get_ref())
    {
        let first = e.to_string();
        let why = first.lines().last().unwrap_or_default().trim().to_string();
        c.push(
            Problem::new(
                format!("`matches` is not a regular expression: {why}"),
                m.span(),
                "not a regular expression",
            )
            .help("write a regular expression (in TOML, a literal string '...' keeps backslashes)"),
        );
    }
    let schema = k.schema.as_ref().map(|p| dir.join(p.get_ref()));
    if let (Some(path), Some(raw)) = (&schema, &k.schema)
        && !path.is_file()
    {
        c.push(
            Problem::new(
                format!("the schema file {} does not exist", path.display()),
                raw.span(),
                "no such file",
            )
            .help("give the path of a JSON Schema file, relative to the stage file's folder"),
        );
    }
    if k.critic.is_none() && k.rubric.is_some() {
        c.push(
            Problem::new(
                format!("check `{name}` has a `rubric` but no `critic`"),
                spanned.span(),
                "this check",
            )
            .help("add `critic = \"ACTOR\"`: the actor who judges by the rubric"),
        );
    }
    if let (None, Some(critic)) = (&k.command, &k.critic)
        && !cast.names.contains_key(critic.get_ref())
    {
        let message = format!(
            "check `{name}` names critic `{}`, who is not in the cast",
            critic.get_ref()
        );
        c.push(cast.unknown(critic, message, "a critic is an actor of this stage"));
    }
    let timeout = c.duration("timeout", k.timeout.as_ref());
    Check {
        name: name.clone(),
        command: k.command.clone(),
        critic: k.critic.as_ref().map(|v| v.get_ref().clone()),
        rubric: k.rubric.clone(),
        file: k.file.as_ref().map(|f| f.get_ref().clone()),
        exists: k.exists.unwrap_or(true),
        contains: k.contains.clone(),
        matches: k.matches.as_ref().map(|m| m.get_ref().clone()),
        schema,
        on: k.on.unwrap_or_default(),
        timeout,
    }
}

/// A check is of exactly one kind (a command, a critic, a file), and asserts about a file only
/// when it names one.
fn check_kind(c: &mut Checker, spanned: &Spanned<RawCheck>) {
    let k = spanned.get_ref();
    let name = k.name.get_ref();
    let kinds = [k.command.is_some(), k.critic.is_some(), k.file.is_some()];
    match kinds.iter().filter(|k| **k).count() {
        0 => c.push(
            Problem::new(
                format!("check `{name}` has neither `command`, `critic` nor `file`"),
                spanned.span(),
                "this check",
            )
            .help(
                "add `command = \"...\"` (a shell command that passes with exit code 0), \
                 `critic = \"ACTOR\"` (an actor that judges the work) or `file = \"PATH\"` \
                 (with `contains`, `matches` or `schema`)",
            ),
        ),
        1 => {}
        _ => c.push(
            Problem::new(
                format!("check `{name}` is of more than one kind"),
                spanned.span(),
                "this check",
            )
            .help("a check runs a command, asks a critic or looks at a file; split it into several checks"),
        ),
    }
    if k.file.is_none()
        && (k.contains.is_some() || k.matches.is_some() || k.schema.is_some() || k.exists.is_some())
    {
        c.push(
            Problem::new(
                format!("check `{name}` asserts about a file but names none"),
                spanned.span(),
                "this check",
            )
            .help("add `file = \"PATH\"` (relative to the workspace)"),
        );
    }
}

/// Keeps the first of each repeated item.
fn dedup(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

/// The candidate closest to `word`, when one is close enough to be a likely typo.
pub(crate) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A parse error's message, label and hint. Serde's "unknown field `x`, expected one of ..."
/// becomes "unknown key `x`" with the closest valid key and the list in the hint.
pub(crate) fn parse_problem(message: &str) -> (String, &'static str, String) {
    const EXAMPLE: &str = "`improv init` writes a stage.toml that documents every key";
    let unknown = [
        ("unknown field `", "key", "keys"),
        ("unknown variant `", "value", "values"),
    ]
    .iter()
    .find_map(|(p, one, many)| message.strip_prefix(p).map(|rest| (*one, *many, rest)));
    if let Some((one, many, rest)) = unknown {
        let word = rest.split('`').next().unwrap_or_default();
        let valid: Vec<&str> = rest
            .split_once("expected")
            .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
            .unwrap_or_default();
        let mut help = String::new();
        if let Some(close) = closest(word, valid.iter().copied()) {
            help.push_str(&format!("did you mean `{close}`? "));
        }
        if valid.is_empty() {
            help.push_str(&format!("no {many} are allowed here; {EXAMPLE}"));
        } else {
            help.push_str(&format!("the valid {many} here are: {}", valid.join(", ")));
        }
        let label = if one == "key" {
            "unknown key"
        } else {
            "unknown value"
        };
        return (format!("unknown {one} `{word}`"), label, help);
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or_default();
        let help = if field == "decision" {
            "add `decision = \"allow\"`, `\"deny\"` or `\"ask\"` to this rule".to_string()
        } else {
            format!("add `{field} = ...` here; {EXAMPLE}")
        };
        return (format!("missing key `{field}`"), "in this table", help);
    }
    (plain_types(message), "here", EXAMPLE.into())
}

/// Serde names the Rust type it wanted ("invalid value: integer `-1`, expected u32"); the
/// author of a stage file reads TOML, so the type is said in words.
fn plain_types(message: &str) -> String {
    const PLAIN: &[(&[&str], &str)] = &[
        (
            &["u8", "u16", "u32", "u64", "u128", "usize"],
            "a whole number ≥ 0",
        ),
        (
            &["i8", "i16", "i32", "i64", "i128", "isize"],
            "a whole number",
        ),
        (&["f32", "f64"], "a number"),
        (&["a sequence"], "a list, [...]"),
        (&["a map"], "a table"),
    ];
    let Some((head, wanted)) = message.rsplit_once("expected ") else {
        return message.to_string();
    };
    match PLAIN.iter().find(|(rust, _)| rust.contains(&wanted.trim())) {
        Some((_, plain)) => format!("{head}expected {plain}"),
        None => message.to_string(),
    }
}
