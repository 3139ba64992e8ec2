//! The improv stage file: `stage.toml` parsed and checked into a [`Stage`] — its intent, context,
//! cast of actors, edges, feedback and prices — with errors that point at the offending key.
//!
//! ```
//! let stage = improv_stage::Stage::parse(
//!     "[[actor]]\nname = \"lead\"\nmodel = \"openai/gpt-5-mini\"\n",
//!     std::path::Path::new("stage.toml"),
//! )
//! .unwrap();
//! assert_eq!(stage.lead().model.as_deref(), Some("openai/gpt-5-mini"));
//! ```

pub mod door;
mod error;
mod mcp;
pub mod prompt;
pub mod props;
mod raw;
pub mod routines;

pub use door::{CatchUp, Channel, ChannelDoor, Door, DoorBudget, DoorKind, DoorRetention, Rate};
pub use error::{Invalid, StageError};
pub use mcp::McpServer;

use improv_kernel::{Budget, Price};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

/// The file a stage is written in.
pub const STAGE_FILE: &str = "stage.toml";

/// The folder beside the stage file where improv keeps its state: logs, director notes, the
/// serve token, databases. Actors can never reach it.
pub const STATE_DIR: &str = ".improv";

/// The props every actor gets when it names none: the core ones of [`props::PROPS`].
pub const CORE_PROPS: &[&str] = &props::CORE_NAMES;

/// The props a stage may name: every one of [`props::PROPS`].
pub const KNOWN_PROPS: &[&str] = &props::ALL_NAMES;

/// How deep cues may nest when `[edges]` says nothing: the lead cues an actor, which may cue one
/// more.
pub const DEFAULT_CUE_DEPTH: u32 = 2;

/// The providers a model may name, as in `provider/model`.
pub const PROVIDERS: &[&str] = &[
    "openai",
    "openai-responses",
    "anthropic",
    "compatible",
    "ollama",
    "local",
    "scripted",
];

/// The context files read when a stage names none.
pub const DEFAULT_CONTEXT_FILES: &[&str] = &["AGENTS.md", "README.md"];

/// A stage: where a performance happens and everything the director set up for it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Stage {
    /// The stage file (which may not exist, for [`Stage::default_in`]).
    pub path: PathBuf,
    /// The directory of the stage file; relative paths in it are relative to this.
    pub dir: PathBuf,
    pub stage: StageMeta,
    pub context: ContextConfig,
    /// The cast, never empty: a stage without `[[actor]]` gets one default actor, `lead`.
    pub actors: Vec<ActorConfig>,
    pub edges: Edges,
    pub feedback: Feedback,
    /// Prices in USD per million tokens by `provider/model`, for models whose provider does not
    /// know them.
    pub prices: BTreeMap<String, Price>,
    /// `[ledger]`: when collections count as stable, and whether they settle by themselves.
    pub ledger: LedgerConfig,
    /// `[[props.mcp]]`: MCP servers whose tools become props named `server.tool`.
    pub mcp: Vec<McpServer>,
    /// `[routines]`: learning converged practice, approving it, replaying it.
    pub routines: routines::RoutinesConfig,
    /// `[[door]]`: schedules, webhooks and channels that start performances on a live stage.
    pub doors: Vec<Door>,
    /// `[doors]`: how long the store keeps door-made performances.
    pub door_retention: DoorRetention,
}

/// `[stage]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StageMeta {
    /// The stage's name; its directory's name when the file gives none.
    pub name: String,
    /// Whether the file gives the name (`[stage] name`): only then is it the stage's identity
    /// in a store ([`StageMeta::identity`]).
    #[serde(skip)]
    pub named: bool,
    /// The goal of a performance; a run may give it instead.
    pub intent: Option<String>,
}

impl StageMeta {
    /// The stage's identity in a store, which a deploy moving its folder does not change: the
    /// name its file gives. `None` when the name is only its folder's: `/srv/a/current` and
    /// `/srv/b/current` are both `current`, so such a stage is known by its path instead.
    pub fn identity(&self) -> Option<&str> {
        self.named.then_some(self.name.as_str())
    }
}

/// `[context]`: what the actors are told besides the intent.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ContextConfig {
    /// Files, relative to the stage directory, put into the system prompt when they exist.
    pub files: Vec<String>,
    /// Input tokens at which an actor's older turns are compacted into a summary; `None`
    /// compacts at 80% of the model's context window when the model knows it.
    pub compact_at: Option<u64>,
    /// Folders of Agent Skills (`NAME/SKILL.md`), relative to the stage directory; the
    /// user's skills folder is searched too.
    pub skills: Vec<String>,
}

impl Default for ContextConfig {
    fn default() -> Self {
        ContextConfig {
            files: DEFAULT_CONTEXT_FILES
                .iter()
                .map(|f| f.to_string())
                .collect(),
            compact_at: None,
            skills: vec!["skills".into()],
        }
    }
}

/// `[[actor]]`: one member of the cast.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActorConfig {
    pub name: String,
    /// Its role, the start of its system prompt; a short capable-agent role when absent.
    pub role: Option<String>,
    /// `provider/model`; when absent the CLI chooses (the embedded model when no key is set).
    pub model: Option<String>,
    /// The props it may use; the [`CORE_PROPS`] when the file names none.
    pub props: Vec<String>,
    /// Whether it leads; otherwise the first actor does.
    pub lead: bool,
    /// An endpoint other than the provider's default.
    pub base_url: Option<String>,
    /// The environment variable holding its API key, instead of the provider's usual one.
    pub api_key_env: Option<String>,
    /// The most tokens one reply may have.
    pub max_output_tokens: Option<u32>,
    /// Its own limits, on top of the performance's: `max_turns`, tokens, cost, tool calls and
    /// `timeout` set on the `[[actor]]`. A cued actor performs within them.
    pub budget: Budget,
    /// The actors it may cue; any other actor when absent.
    pub cues: Option<Vec<String>>,
}

/// The number of identical tool calls in a row after which an actor is told it is looping.
pub const DEFAULT_LOOP_LIMIT: u32 = 3;

/// `[edges]`: the limits and rules a performance runs within.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Edges {
    /// The directory actors work in, relative to the stage directory; see [`Stage::workspace`].
    pub workspace: Option<PathBuf>,
    /// Whether props may reach the network.
    pub network: bool,
    pub max_turns: Option<u32>,
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub max_cost_usd: Option<f64>,
    /// The most tool calls the performance may make.
    pub max_tool_calls: Option<u32>,
    /// Wall time of the whole performance.
    pub timeout: Option<Duration>,
    /// Wall time of one tool call.
    pub tool_timeout: Option<Duration>,
    /// `[[edges.rule]]`, in the order written.
    pub rules: Vec<Rule>,
    /// `sandbox = "on"` (the default) or `"off"`: whether shell props run in the sandbox.
    pub sandbox: SandboxMode,
    /// Globs of paths no prop may read, write or list; `None` keeps the edges' defaults
    /// (`.env*`, `*.pem`, SSH keys, ...).
    pub hidden: Option<Vec<String>>,
    /// Globs of paths props and commands may read but not write; `None` keeps the edges'
    /// default (`.git`).
    pub read_only: Option<Vec<String>>,
    /// Control files the stage opens to its actors (workspace-relative paths): improv keeps the
    /// stage file, MCP server scripts, skills, AGENTS.md, the context files and git's config and
    /// hooks read-only to actors unless listed here; `.improv/` can never be opened.
    pub writable: Vec<PathBuf>,
    /// Regular expressions whose matches are redacted from tool output and from the log, on top
    /// of the provider keys and the built-in secret patterns.
    pub redact: Vec<String>,
    /// Identical tool calls in a row before the actor is told it loops (stopped one later).
    pub loop_limit: u32,
    /// How deep cues may nest: 1 lets the lead cue but no cued actor cue further.
    pub cue_depth: u32,
}

impl Default for Edges {
    fn default() -> Self {
        Edges {
            workspace: None,
            network: false,
            max_turns: None,
            max_input_tokens: None,
            max_output_tokens: None,
            max_cost_usd: None,
            max_tool_calls: None,
            timeout: None,
            tool_timeout: None,
            rules: Vec::new(),
            sandbox: SandboxMode::On,
            hidden: None,
            read_only: None,
            writable: Vec::new(),
            redact: Vec::new(),
            loop_limit: DEFAULT_LOOP_LIMIT,
            cue_depth: DEFAULT_CUE_DEPTH,
        }
    }
}

/// `sandbox` in `[edges]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Every process an actor starts runs sandboxed; improv refuses shell props where the
    /// kernel cannot sandbox them.
    #[default]
    On,
    /// Shell props run unsandboxed; the log records the choice.
    Off,
}

/// `[[edges.rule]]`: what happens when a prop call matches.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rule {
    /// The prop it applies to; any prop when absent.
    pub prop: Option<String>,
    /// A glob on the shell command (`git push*`).
    pub command: Option<String>,
    /// A glob on the path a prop touches.
    pub path: Option<String>,
    pub decision: Decision,
}

/// What a rule decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allow,
    Deny,
    /// Ask the director first.
    Ask,
}

/// `[ledger]`: how the ledger judges a collection stable, and whether a stable collection settles
/// into an enforced schema without the director's word.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LedgerConfig {
    pub auto_settle: bool,
    /// Writes without a change in shape before a collection is stable (the ledger's default when
    /// absent).
    pub stable_writes: Option<u64>,
    /// Time without a change in shape before a collection is stable.
    pub stable_after: Option<Duration>,
}

/// `[feedback]`: the checks a performance's work must pass.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Feedback {
    /// How many times the actor may try to pass the checks.
    pub max_attempts: u32,
    /// What ends the performance as converged.
    pub converge_on: ConvergeOn,
    pub checks: Vec<Check>,
}

impl Default for Feedback {
    fn default() -> Self {
        Feedback {
            max_attempts: 3,
            converge_on: ConvergeOn::default(),
            checks: Vec::new(),
        }
    }
}

/// `[[feedback.check]]`: a command that must pass, a file assertion, or a critic (an actor)
/// that judges. Exactly one of `command`, `critic` and `file` is set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    pub name: String,
    /// A shell command, run in the workspace, that passes with exit code 0.
    pub command: Option<String>,
    /// The actor that judges the work.
    pub critic: Option<String>,
    /// What the critic judges by.
    pub rubric: Option<String>,
    /// A file, relative to the workspace, that the assertions below are about.
    pub file: Option<String>,
    /// Whether `file` must exist (the default) or must not.
    pub exists: bool,
    /// Text `file` must contain.
    pub contains: Option<String>,
    /// A regular expression some part of `file` must match.
    pub matches: Option<String>,
    /// A JSON Schema file, relative to the stage directory, that `file` (JSON) must satisfy.
    pub schema: Option<PathBuf>,
    /// When it runs.
    pub on: CheckOn,
    /// How long the command (or the critic) may take.
    pub timeout: Option<Duration>,
}

/// What ends a performance with checks as converged (`converge_on` under `[feedback]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvergeOn {
    /// Every check passing after a turn that changed something: the director's feedback closes
    /// the loop, whether or not the actor says it is done.
    #[default]
    Checks,
    /// Every check passing once the actor says it is done (to let it write a report first).
    Done,
}

/// When a check runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckOn {
    /// When the actor says it is done.
    #[default]
    Done,
    /// After every write (`write`, `edit`, a `bash` call that may write) as well, so the actor
    /// hears about a broken build at once.
    Write,
}

impl CheckOn {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckOn::Done => "done",
            CheckOn::Write => "write",
        }
    }
}

/// The actor a stage without `[[actor]]` gets.
fn default_actor() -> ActorConfig {
    ActorConfig {
        name: "lead".into(),
        role: None,
        model: None,
        props: CORE_PROPS.iter().map(|p| p.to_string()).collect(),
        lead: false,
        base_url: None,
        api_key_env: None,
        max_output_tokens: None,
        budget: Budget::default(),
        cues: None,
    }
}

static DEFAULT_ACTOR: LazyLock<ActorConfig> = LazyLock::new(default_actor);

/// The name of a directory, for a stage that gives none.
fn dir_name(dir: &Path) -> String {
    std::path::absolute(dir)
        .ok()
        .as_deref()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "stage".into())
}

/// The directory of a stage file, `.` for a bare file name.
fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl Stage {
    /// Reads and checks the stage file at `path`, or `path/stage.toml` when `path` is a
    /// directory. The stage's directory is made absolute.
    pub fn load(path: &Path) -> Result<Stage, StageError> {
        let path = if path.is_dir() {
            path.join(STAGE_FILE)
        } else {
            path.to_path_buf()
        };
        let path = std::path::absolute(&path).unwrap_or(path);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    && path.file_name().is_some_and(|n| n == STAGE_FILE) =>
            {
                return Err(StageError::Missing {
                    dir: parent_dir(&path),
                });
            }
            Err(source) => return Err(StageError::Read { path, source }),
        };
        Stage::parse(&text, &path)
    }

    /// Checks the text of a stage file; `path` names it in errors and locates relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Stage, StageError> {
        let raw: raw::RawStage = toml::from_str(text).map_err(|e| {
            let (message, label, help) = raw::parse_problem(e.message());
            let problem = error::Problem::new(message, e.span().unwrap_or(0..0), label).help(help);
            error::invalid(vec![problem], path, text)
        })?;
        raw.build(path.to_path_buf(), parent_dir(path))
            .map_err(|problems| error::invalid(problems, path, text))
    }

    /// The stage of a directory without a stage file: one default actor, no limits.
    pub fn default_in(dir: &Path) -> Stage {
        Stage {
            path: dir.join(STAGE_FILE),
            dir: dir.to_path_buf(),
            stage: StageMeta {
                name: dir_name(dir),
                named: false,
                intent: None,
            },
            context: ContextConfig::default(),
            actors: vec![default_actor()],
            edges: Edges::default(),
            feedback: Feedback::default(),
            prices: BTreeMap::new(),
            ledger: LedgerConfig::default(),
            mcp: Vec::new(),
            routines: routines::RoutinesConfig::default(),
            doors: Vec::new(),
            door_retention: DoorRetention::default(),
        }
    }

    /// The actor that leads: the one with `lead = true`, else the first.
    pub fn lead(&self) -> &ActorConfig {
        self.actors
            .iter()
            .find(|a| a.lead)
            .or_else(|| self.actors.first())
            .unwrap_or(&DEFAULT_ACTOR)
    }

    /// The actor named `name`.
    pub fn actor(&self, name: &str) -> Option<&ActorConfig> {
        self.actors.iter().find(|a| a.name == name)
    }

    /// The directory the actors work in: `edges.workspace` relative to the stage directory, or
    /// the stage directory itself.
    pub fn workspace(&self) -> PathBuf {
        let joined = match &self.edges.workspace {
            Some(w) => self.dir.join(w),
            None => self.dir.clone(),
        };
        // `./.` and `dir/.` name the same place as `dir`; keep the path a reader would write.
        let clean: PathBuf = joined
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect();
        if clean.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            clean
        }
    }

    /// The edges' limits as the kernel's budget.
    pub fn budget(&self) -> Budget {
        Budget {
            max_turns: self.edges.max_turns,
            max_input_tokens: self.edges.max_input_tokens,
            max_output_tokens: self.edges.max_output_tokens,
            max_cost_usd: self.edges.max_cost_usd,
            timeout: self.edges.timeout,
            max_tool_calls: self.edges.max_tool_calls,
        }
    }

    /// The system prompt of `actor` working in `workspace`: its role, how to act, and the
    /// context files that exist. See [`prompt`](crate::prompt) for what goes in and why.
    pub fn system_prompt(&self, actor: &ActorConfig, workspace: &Path) -> String {
        prompt::system_prompt(self, actor, workspace)
    }
}

/// A commented stage file for `improv init`: every key documented, ready for the embedded model.
pub fn init_template() -> &'static str {
    include_str!("stage.init.toml")
}
