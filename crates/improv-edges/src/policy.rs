//! Command and path policy: the stage's `[[edges.rule]]`s (prop, command glob, path glob →
//! allow, deny or ask), hidden and read-only path globs, and approvals. [`Guarded`] wraps a prop
//! and applies the policy before the prop runs; every decision is recorded as a
//! [`PolicyDecision`] and said in the tool result.
//!
//! Command rules judge what a shell line would run, not its text: [`crate::command`] parses it
//! and resolves each simple command wherever it stands (`a && $(b) | sh -c 'c'` is three),
//! unquoted and seen through launchers (`env`, `sudo`, `xargs`, `find -exec`, …), with git's
//! global options dropped (`git -C . push` is `git push`). Each command takes the first rule
//! that matches it (as written or normalized), else the prop's rule; the strictest decision of
//! the line wins. What cannot be known before the line runs (a computed program, `eval`,
//! `source`, `alias`, `sh -c "$x"`) takes the strictest deny or ask among the command rules, and
//! a command known only up to a computed word (`git $sub`) takes the strictest deny or ask rule
//! that could match what it becomes; neither is ever allowed by a rule. Scripts and programs
//! that start programs themselves (`bash x.sh`, `python -c`) are beyond the rules: there the
//! sandbox holds, as it does against any hostile actor. Path rules judge the file props only;
//! what a command may touch is the sandbox's (`hidden` and `read_only` globs are enforced for
//! every process it starts), so a path to keep from commands belongs in `read_only`/`hidden`.

use crate::command::{self, CommandGlob, Invocation, Resolution, Spelling};
use async_trait::async_trait;
use globset::{GlobBuilder, GlobMatcher};
use improv_kernel::event::Decision as Decided;
use improv_kernel::{Access, EventKind, Prop, PropContext, PropError, ToolSpec};
use improv_props::workspace::Workspace;
pub use improv_stage::{Decision, Rule};
use serde::Serialize;
use std::collections::HashSet;
use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Paths no prop may read or write, nor any command, unless the stage says otherwise.
pub const DEFAULT_HIDDEN: [(&str, HiddenKind); 8] = [
    (".env", HiddenKind::Name),
    (".env.*", HiddenKind::Name),
    ("*.pem", HiddenKind::KeyMaterial),
    ("*.key", HiddenKind::KeyMaterial),
    ("id_rsa*", HiddenKind::Name),
    ("id_ed25519*", HiddenKind::Name),
    (".netrc", HiddenKind::Name),
    (".npmrc", HiddenKind::Name),
];

/// [`DEFAULT_HIDDEN`] as a configuration holds it.
pub fn default_hidden() -> Vec<Hidden> {
    DEFAULT_HIDDEN
        .iter()
        .map(|&(glob, kind)| Hidden {
            glob: glob.to_string(),
            kind,
        })
        .collect()
}

/// How a hidden glob decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HiddenKind {
    /// What matches is hidden by its name alone: every glob a stage declares, and most defaults.
    Name,
    /// The name of key material (`*.pem`, `*.key`), which public certificates and CA bundles
    /// share (`certifi/cacert.pem` in every Python environment): a file matched by no other
    /// glob is hidden only when [`holds_secret`] says so, a folder so named always.
    KeyMaterial,
}

/// A hidden glob and how it decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hidden {
    pub glob: String,
    pub kind: HiddenKind,
}

/// A glob as a stage declares it: by name.
impl From<String> for Hidden {
    fn from(glob: String) -> Self {
        Hidden {
            glob,
            kind: HiddenKind::Name,
        }
    }
}

impl From<&str> for Hidden {
    fn from(glob: &str) -> Self {
        Hidden::from(glob.to_string())
    }
}

impl std::fmt::Display for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.glob)
    }
}

/// How much of a file named like key material is read to judge it; a larger one is secret.
/// The whole file is read, not its head: a certificate chain with its key appended (as some
/// servers take it) holds the key past the first certificates.
pub const KEY_MATERIAL_MAX: u64 = 1 << 20;

/// PEM blocks that hold nothing secret.
const PUBLIC_PEM: [&str; 4] = [
    "CERTIFICATE",
    "TRUSTED CERTIFICATE",
    "X509 CRL",
    "PUBLIC KEY",
];

/// Whether a file named like key material, opened by the caller (so that what is judged is
/// what it opened), must stay hidden. Public only when it is a regular file of at most
/// [`KEY_MATERIAL_MAX`] bytes of UTF-8 text holding one or more PEM blocks, each a
/// certificate, a CRL or a public key, with nothing but blank lines and `#` comments between
/// them, and no `PRIVATE KEY` anywhere. Anything else (a private key of any kind, binary DER, a
/// token, an empty file, a file that cannot be read) is secret: the check fails closed.
pub fn holds_secret(file: &std::fs::File) -> bool {
    use std::io::Read;
    let Ok(meta) = file.metadata() else {
        return true;
    };
    if !meta.is_file() || meta.len() > KEY_MATERIAL_MAX {
        return true;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    match file.take(KEY_MATERIAL_MAX + 1).read_to_end(&mut bytes) {
        Ok(n) if n as u64 <= KEY_MATERIAL_MAX => !is_public_pem(&bytes),
        _ => true,
    }
}

/// Whether `bytes` are PEM text of public blocks only (see [`holds_secret`]).
fn is_public_pem(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    if text.contains("PRIVATE KEY") {
        return false;
    }
    let label = |line: &str, edge: &str| {
        line.strip_prefix(edge)
            .and_then(|l| l.strip_suffix("-----"))
            .map(str::to_string)
    };
    let (mut open, mut blocks) = (None::<String>, 0);
    for line in text.lines().map(str::trim_end) {
        match &open {
            None => match label(line, "-----BEGIN ") {
                Some(l) if PUBLIC_PEM.contains(&l.as_str()) => open = Some(l),
                Some(_) => return false,
                None if line.trim_start().is_empty() || line.starts_with('#') => {}
                None => return false,
            },
            Some(l) => match label(line, "-----END ") {
                Some(end) if &end == l => {
                    open = None;
                    blocks += 1;
                }
                Some(_) => return false,
                None if line.starts_with("-----") => return false,
                None => {}
            },
        }
    }
    open.is_none() && blocks > 0
}

/// What a path's name says, before its content is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByName<'a> {
    Shown,
    /// Hidden by the glob named.
    Hidden(&'a str),
    /// A file named only like key material: hidden if [`holds_secret`] says so.
    KeyMaterial(&'a str),
}

/// The hidden globs, compiled and matched whatever the ASCII case of a path (`.ENV` is as
/// hidden as `.env`): the one place that says whether a workspace path is hidden, for the file
/// props ([`Guarded`]) and for commands (the scan of [`crate::namespace::Scanner`]) alike.
pub struct HiddenGlobs {
    globs: Vec<(PathGlob, HiddenKind, String)>,
}

impl HiddenGlobs {
    pub fn new(hidden: &[Hidden]) -> Result<Self, GlobError> {
        let globs = hidden
            .iter()
            .map(|h| {
                let glob = PathGlob::new(&h.glob.to_ascii_lowercase()).map_err(|e| GlobError {
                    glob: h.glob.clone(),
                    source: e.source,
                })?;
                Ok((glob, h.kind, h.glob.clone()))
            })
            .collect::<Result<_, GlobError>>()?;
        Ok(HiddenGlobs { globs })
    }

    pub fn is_empty(&self) -> bool {
        self.globs.is_empty()
    }

    /// The globs as the stage says them, comma-separated.
    pub fn text(&self) -> String {
        let texts: Vec<&str> = self.globs.iter().map(|(_, _, t)| t.as_str()).collect();
        texts.join(", ")
    }

    /// What the name of `rel` (relative to the workspace) says. A name glob wins over a
    /// key-material one; a folder above named like key material hides all it holds (a folder
    /// has no content to judge).
    pub fn by_name(&self, rel: &Path) -> ByName<'_> {
        if self.globs.is_empty() {
            return ByName::Shown;
        }
        let folded = PathBuf::from(OsString::from_vec(
            rel.as_os_str().as_bytes().to_ascii_lowercase(),
        ));
        let above = folded.parent().unwrap_or(Path::new(""));
        let mut key_material = None;
        for (glob, kind, text) in &self.globs {
            if !glob.matches(&folded) {
                continue;
            }
            match kind {
                HiddenKind::Name => return ByName::Hidden(text),
                HiddenKind::KeyMaterial if glob.matches(above) => return ByName::Hidden(text),
                HiddenKind::KeyMaterial => key_material = key_material.or(Some(text.as_str())),
            }
        }
        key_material.map_or(ByName::Shown, ByName::KeyMaterial)
    }

    /// The glob that hides `rel`, if one does: by name, or, for a file named only like key
    /// material, when `secret` (its [`holds_secret`] verdict) says so.
    pub fn hidden_by(&self, rel: &Path, secret: impl FnOnce() -> bool) -> Option<&str> {
        match self.by_name(rel) {
            ByName::Shown => None,
            ByName::Hidden(glob) => Some(glob),
            ByName::KeyMaterial(glob) => secret().then_some(glob),
        }
    }
}

/// Paths props may read but not write unless the stage allows it: git's internals.
pub const DEFAULT_READ_ONLY: [&str; 1] = [".git"];

/// A rule or glob that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("edges: `{glob}` is not a valid glob ({source}); fix it in [edges] of stage.toml")]
pub struct GlobError {
    pub glob: String,
    #[source]
    pub source: globset::Error,
}

/// A glob on a workspace-relative path: with a `/` it matches the path (or a folder above it);
/// without one it matches any component (`.env*` hides `config/.env.local`, `.git` everything
/// in `.git/`). A leading `/` anchors it at the workspace root, as in `.gitignore`
/// (`/stage.toml` is the root's stage file only).
#[derive(Clone, Debug)]
pub(crate) struct PathGlob {
    text: String,
    matcher: GlobMatcher,
    whole_path: bool,
}

impl PathGlob {
    pub(crate) fn new(text: &str) -> Result<Self, GlobError> {
        let anchored = text.strip_prefix('/');
        let trimmed = anchored.unwrap_or(text).trim_end_matches('/');
        let matcher = GlobBuilder::new(trimmed)
            .literal_separator(true)
            .build()
            .map_err(|source| GlobError {
                glob: text.to_string(),
                source,
            })?
            .compile_matcher();
        Ok(PathGlob {
            text: text.to_string(),
            matcher,
            whole_path: anchored.is_some() || trimmed.contains('/'),
        })
    }

    pub(crate) fn matches(&self, rel: &Path) -> bool {
        if self.whole_path {
            rel.ancestors()
                .filter(|a| !a.as_os_str().is_empty())
                .any(|a| self.matcher.is_match(a))
        } else {
            rel.components().any(|c| match c {
                Component::Normal(name) => self.matcher.is_match(name),
                _ => false,
            })
        }
    }
}

fn command_glob(text: &str) -> Result<CommandGlob, GlobError> {
    CommandGlob::new(text).map_err(|source| GlobError {
        glob: text.to_string(),
        source,
    })
}

struct CompiledRule {
    index: usize,
    rule: Rule,
    command: Option<CommandGlob>,
    path: Option<PathGlob>,
}

impl CompiledRule {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(p) = &self.rule.prop {
            parts.push(format!("prop = \"{p}\""));
        }
        if let Some(c) = &self.rule.command {
            parts.push(format!("command = \"{c}\""));
        }
        if let Some(p) = &self.rule.path {
            parts.push(format!("path = \"{p}\""));
        }
        format!(
            "rule {} ({} → {})",
            self.index + 1,
            parts.join(", "),
            decision_name(self.rule.decision)
        )
    }

    /// The rule as the stage file says it, and why it applies when its glob did not simply
    /// match the command as written.
    fn explain(&self, because: Option<&str>) -> String {
        match because {
            Some(why) => format!("{}: {why}", self.describe()),
            None => self.describe(),
        }
    }
}

fn decision_name(d: Decision) -> &'static str {
    match d {
        Decision::Allow => "allow",
        Decision::Deny => "deny",
        Decision::Ask => "ask",
    }
}

fn strictness(d: Decision) -> u8 {
    match d {
        Decision::Allow => 0,
        Decision::Ask => 1,
        Decision::Deny => 2,
    }
}

/// Path edges of the file props.
#[derive(Clone, Debug, PartialEq)]
pub struct PathEdges {
    /// Never read nor written by a prop, nor listed by `grep`/`find`.
    pub hidden: Vec<Hidden>,
    /// Read but not written.
    pub read_only: Vec<String>,
}

impl Default for PathEdges {
    fn default() -> Self {
        PathEdges {
            hidden: default_hidden(),
            read_only: DEFAULT_READ_ONLY.map(String::from).to_vec(),
        }
    }
}

/// One decision of the policy: what the log's `policy_decision` event carries, and the actor
/// that made the call.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyDecision {
    pub actor: String,
    pub prop: String,
    /// The command or path judged.
    pub subject: String,
    pub decision: Decided,
    /// The rule or edge that decided, as the stage file says it.
    pub rule: String,
    /// The director's note, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What to ask the director.
#[derive(Clone, Debug, PartialEq)]
pub struct ApprovalRequest {
    pub actor: String,
    pub prop: String,
    pub subject: String,
    pub rule: String,
}

/// The director's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Approval {
    Once,
    /// Approves whatever the same rule matches for the rest of the performance.
    ForPerformance,
    Deny {
        note: Option<String>,
    },
    /// Nobody can be asked (a non-interactive run): a deny the actor is told the reason of.
    Unattended,
}

/// Who answers `ask` decisions.
#[async_trait]
pub trait Approver: Send + Sync {
    async fn ask(&self, request: &ApprovalRequest) -> Approval;
}

/// A non-interactive run: every `ask` is denied, with a message telling the actor why.
pub struct Unattended;

#[async_trait]
impl Approver for Unattended {
    async fn ask(&self, _request: &ApprovalRequest) -> Approval {
        Approval::Unattended
    }
}

/// Asks the director on a terminal: `o` approves once, `p` for this performance, `d` (or
/// anything else) denies; text after `d` is a note to the actor. End of input denies.
///
/// The director's input is read on a thread of its own, one line per question, and each line
/// answers the question on screen when it arrives: a question withdrawn because the performance
/// stopped ([`Guarded`] races every ask against the performance's cancellation) leaves nothing
/// blocked, and the next question gets the next line. The thread ends with the input, or after
/// the `Prompt` is dropped once its pending read returns.
pub struct Prompt {
    output: Arc<Mutex<Box<dyn Write + Send>>>,
    reader: Arc<LineReader>,
}

/// Where a line of the director's input goes: the question waiting for it.
type Waiter = tokio::sync::oneshot::Sender<Option<String>>;

/// Reads the director's lines on demand, on its own thread.
struct LineReader {
    state: Mutex<ReaderState>,
    wake: std::sync::Condvar,
}

struct ReaderState {
    /// The input, until the reading thread takes it.
    input: Option<Box<dyn BufRead + Send>>,
    /// The question waiting for the next line.
    waiter: Option<Waiter>,
    /// The input ended (or failed): every later question is denied at once.
    closed: bool,
    /// The `Prompt` was dropped.
    dropped: bool,
}

impl LineReader {
    /// Waits for the next line on behalf of a question; `None` at the end of the input.
    async fn next_line(self: &Arc<Self>) -> Option<String> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut state = lock(&self.state);
            if state.closed {
                return None;
            }
            state.waiter = Some(tx);
            if let Some(input) = state.input.take() {
                let reader = self.clone();
                let spawned = std::thread::Builder::new()
                    .name("improv-prompt".into())
                    .spawn(move || reader.read_lines(input));
                if spawned.is_err() {
                    state.closed = true;
                    return None;
                }
            }
        }
        self.wake.notify_all();
        rx.await.ok().flatten()
    }

    /// The reading thread: reads a line only while a question waits for one, and hands it to
    /// whichever question waits when it arrives (a withdrawn question's line is dropped).
    fn read_lines(&self, mut input: Box<dyn BufRead + Send>) {
        loop {
            {
                let mut state = lock(&self.state);
                while state.waiter.as_ref().is_none_or(|w| w.is_closed()) {
                    if state.dropped {
                        return;
                    }
                    state = self.wake.wait(state).unwrap_or_else(|e| e.into_inner());
                }
            }
            let mut line = String::new();
            let answer = match input.read_line(&mut line) {
                Ok(0) | Err(_) => None,
                Ok(_) => Some(line),
            };
            let mut state = lock(&self.state);
            let end = answer.is_none();
            state.closed |= end;
            if let Some(waiter) = state.waiter.take() {
                let _ = waiter.send(answer);
            }
            if end {
                return;
            }
        }
    }
}

impl Drop for Prompt {
    fn drop(&mut self) {
        lock(&self.reader.state).dropped = true;
        self.reader.wake.notify_all();
    }
}

impl Prompt {
    pub fn new(input: impl BufRead + Send + 'static, output: impl Write + Send + 'static) -> Self {
        Prompt {
            output: Arc::new(Mutex::new(Box::new(output))),
            reader: Arc::new(LineReader {
                state: Mutex::new(ReaderState {
                    input: Some(Box::new(input)),
                    waiter: None,
                    closed: false,
                    dropped: false,
                }),
                wake: std::sync::Condvar::new(),
            }),
        }
    }

    /// Reads stdin and writes to stderr.
    pub fn stdio() -> Self {
        Prompt::new(std::io::BufReader::new(std::io::stdin()), std::io::stderr())
    }

    fn say(&self, text: &str) {
        let mut output = lock(&self.output);
        let _ = output.write_all(text.as_bytes());
        let _ = output.flush();
    }
}

/// Tells the director a question was withdrawn, when the ask is dropped unanswered.
struct Withdrawn<'a> {
    prompt: &'a Prompt,
    answered: bool,
}

impl Drop for Withdrawn<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.prompt
                .say("\n  (withdrawn: the performance stopped; the request is denied)\n");
        }
    }
}

#[async_trait]
impl Approver for Prompt {
    async fn ask(&self, request: &ApprovalRequest) -> Approval {
        self.say(&format!(
            "\n{} wants to use {}: {}\n  ({})\n  approve [o]nce, for this [p]erformance, or [d]eny (d <note to the actor>)? ",
            request.actor, request.prop, request.subject, request.rule
        ));
        let mut withdrawn = Withdrawn {
            prompt: self,
            answered: false,
        };
        let answer = self.reader.next_line().await;
        withdrawn.answered = true;
        let Some(line) = answer else {
            return Approval::Deny {
                note: Some("no answer from the director".into()),
            };
        };
        let line = line.trim();
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        match word.to_ascii_lowercase().as_str() {
            "o" | "once" | "y" | "yes" => Approval::Once,
            "p" | "performance" => Approval::ForPerformance,
            _ => Approval::Deny {
                note: (!rest.trim().is_empty()).then(|| rest.trim().to_string()),
            },
        }
    }
}

/// The policy of one performance: rules, path edges, the approver, approvals given so far and
/// the decisions made (by every actor of the performance; each decision is also an event in the
/// stream of the performance that made the call).
pub struct Policy {
    rules: Vec<CompiledRule>,
    hidden: HiddenGlobs,
    read_only: Vec<PathGlob>,
    approver: Arc<dyn Approver>,
    approved: Mutex<HashSet<usize>>,
    decisions: Mutex<Vec<PolicyDecision>>,
}

/// What the policy says about one call, before any approval.
#[derive(Clone)]
struct Verdict {
    decision: Decision,
    /// The rule that decided; `None` for the default (allow).
    rule: Option<usize>,
    subject: String,
    /// Why the rule applies, when not by matching the subject as written.
    because: Option<String>,
}

impl Verdict {
    /// Whether `self` is stricter than `other` (at equal strictness a rule beats the default).
    fn stricter_than(&self, other: &Verdict) -> bool {
        (strictness(self.decision), self.rule.is_some())
            > (strictness(other.decision), other.rule.is_some())
    }
}

/// The stricter of two verdicts, the earlier at a tie.
fn stricter(a: Option<Verdict>, b: Verdict) -> Verdict {
    match a {
        Some(a) if !b.stricter_than(&a) => a,
        _ => b,
    }
}

/// A stage's command rule for one prop, with its glob.
type CommandRule<'a> = (&'a CompiledRule, &'a CommandGlob);

/// The strictest deny or ask among `rules` that `applies` to; never an allow.
fn strictest<'a>(
    rules: &[CommandRule<'a>],
    applies: impl Fn(&CommandGlob) -> bool,
) -> Option<&'a CompiledRule> {
    rules
        .iter()
        .filter(|(r, g)| r.rule.decision != Decision::Allow && applies(g))
        .map(|(r, _)| *r)
        .reduce(|a, b| {
            if strictness(b.rule.decision) > strictness(a.rule.decision) {
                b
            } else {
                a
            }
        })
}

/// What the command rules say about one command of a line; `None` when none applies.
fn judge_invocation(rules: &[CommandRule<'_>], invocation: &Invocation) -> Option<Verdict> {
    let verdict = |rule: &CompiledRule, because: Option<String>| Verdict {
        decision: rule.rule.decision,
        rule: Some(rule.index),
        subject: invocation.source.clone(),
        because,
    };
    let mut worst = None;
    for layer in &invocation.layers {
        let spellings = match layer {
            Resolution::Resolved(c) => c.spellings(),
            Resolution::Unresolved(why) => {
                if let Some(r) = strictest(rules, |_| true) {
                    let because = format!(
                        "{why}, so the strictest command rule applies; spell the command out"
                    );
                    worst = Some(stricter(worst, verdict(r, Some(because))));
                }
                continue;
            }
        };
        for Spelling { text, complete } in spellings {
            let found = if complete {
                rules.iter().find(|(_, g)| g.is_match(&text)).map(|(r, _)| {
                    let because = (text != invocation.source).then(|| format!("it runs `{text}`"));
                    verdict(r, because)
                })
            } else {
                strictest(rules, |g| g.could_match(&text)).map(|r| {
                    let because = format!(
                        "it runs `{text}…` with the rest computed when the line runs, which the rule could match"
                    );
                    verdict(r, Some(because))
                })
            };
            if let Some(v) = found {
                worst = Some(stricter(worst, v));
            }
        }
    }
    worst
}

impl Policy {
    /// Compiles the stage's rules and path edges. Calls no rule matches are allowed (the sandbox
    /// still holds).
    pub fn new(
        rules: &[Rule],
        paths: &PathEdges,
        approver: Arc<dyn Approver>,
    ) -> Result<Self, GlobError> {
        let rules = rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                Ok(CompiledRule {
                    index,
                    command: rule.command.as_deref().map(command_glob).transpose()?,
                    path: rule.path.as_deref().map(PathGlob::new).transpose()?,
                    rule: rule.clone(),
                })
            })
            .collect::<Result<_, GlobError>>()?;
        let globs = |list: &[String]| {
            list.iter()
                .map(|g| PathGlob::new(g))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Policy {
            rules,
            hidden: HiddenGlobs::new(&paths.hidden)?,
            read_only: globs(&paths.read_only)?,
            approver,
            approved: Mutex::new(HashSet::new()),
            decisions: Mutex::new(Vec::new()),
        })
    }

    /// The decisions made so far, in order.
    pub fn decisions(&self) -> Vec<PolicyDecision> {
        lock(&self.decisions).clone()
    }

    fn record(&self, decision: PolicyDecision) {
        lock(&self.decisions).push(decision);
    }

    /// Judges a shell line: each command it would run by the command rules (see the module
    /// doc), one no command rule applies to by the prop's rule; the strictest wins.
    fn judge_command(&self, prop: &str, line: &str) -> Verdict {
        let rules: Vec<CommandRule<'_>> = self
            .rules
            .iter()
            .filter(|r| r.path.is_none() && r.rule.prop.as_deref().is_none_or(|p| p == prop))
            .filter_map(|r| Some((r, r.command.as_ref()?)))
            .collect();
        let fallback = Verdict {
            decision: self
                .prop_rule(prop)
                .map_or(Decision::Allow, |r| r.rule.decision),
            rule: self.prop_rule(prop).map(|r| r.index),
            subject: line.to_string(),
            because: None,
        };
        if rules.is_empty() {
            // Nothing to match: the line need not be parsed.
            return fallback;
        }
        let mut worst: Option<Verdict> = None;
        for invocation in command::invocations(line) {
            let verdict = judge_invocation(&rules, &invocation);
            worst = Some(stricter(worst, verdict.unwrap_or_else(|| fallback.clone())));
        }
        worst.unwrap_or(fallback)
    }

    fn judge_path(&self, prop: &str, rel: &Path) -> Verdict {
        let shown = rel.display().to_string();
        let hit = self.rules.iter().find(|r| {
            r.rule.prop.as_deref().is_none_or(|p| p == prop)
                && r.command.is_none()
                && r.path.as_ref().is_some_and(|g| g.matches(rel))
        });
        match hit.or_else(|| self.prop_rule(prop)) {
            Some(r) => Verdict {
                decision: r.rule.decision,
                rule: Some(r.index),
                subject: shown,
                because: None,
            },
            None => Verdict {
                decision: Decision::Allow,
                rule: None,
                subject: shown,
                because: None,
            },
        }
    }

    fn prop_rule(&self, prop: &str) -> Option<&CompiledRule> {
        self.rules.iter().find(|r| {
            r.rule.prop.as_deref() == Some(prop) && r.command.is_none() && r.path.is_none()
        })
    }

    /// The glob hiding `rel`; a file named only like key material is judged by what `given`
    /// opens to (beneath the workspace, as the props open it), just before the prop runs.
    fn hidden_by(&self, rel: &Path, workspace: &Workspace, given: &Path) -> Option<&str> {
        self.hidden.hidden_by(rel, || {
            workspace
                .open_read(given)
                .map_or(true, |file| holds_secret(&file))
        })
    }

    fn read_only_by(&self, rel: &Path) -> Option<&str> {
        self.read_only
            .iter()
            .find(|g| g.matches(rel))
            .map(|g| g.text.as_str())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every value guarded here stays valid if a holder panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An ask in flight: records `denied_interrupted` when dropped unanswered.
struct Pending<'a> {
    guarded: &'a Guarded,
    context: &'a PropContext,
    subject: String,
    rule: String,
    armed: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.armed {
            // Dropped unanswered: nothing runs, and a log failure has no one to tell.
            let _ = self.guarded.decide(
                self.context,
                &self.subject,
                Decided::DeniedInterrupted,
                self.rule.clone(),
                Some("the performance stopped before the director answered".into()),
            );
        }
    }
}

/// A prop under the policy: its command or path is judged before it runs; hidden paths are
/// refused and left out of `grep`/`find` results.
pub struct Guarded {
    inner: Arc<dyn Prop>,
    policy: Arc<Policy>,
}

impl Guarded {
    pub fn new(inner: Arc<dyn Prop>, policy: Arc<Policy>) -> Self {
        Guarded { inner, policy }
    }

    /// Wraps every prop.
    pub fn all(props: Vec<Arc<dyn Prop>>, policy: &Arc<Policy>) -> Vec<Arc<dyn Prop>> {
        props
            .into_iter()
            .map(|p| Arc::new(Guarded::new(p, policy.clone())) as Arc<dyn Prop>)
            .collect()
    }

    /// Records a decision and emits it as a `policy_decision` event in the stream of the
    /// performance making the call, under its actor: a cued actor's decisions are in its own
    /// sub-performance. An error means the log failed: the call must not run.
    fn decide(
        &self,
        context: &PropContext,
        subject: &str,
        decision: Decided,
        rule: String,
        note: Option<String>,
    ) -> Result<(), PropError> {
        let decision = PolicyDecision {
            actor: context.actor.to_string(),
            prop: self.inner.spec().name.clone(),
            subject: subject.to_string(),
            decision,
            rule,
            note,
        };
        let event = EventKind::PolicyDecision {
            prop: decision.prop.clone(),
            subject: decision.subject.clone(),
            decision: decision.decision,
            rule: decision.rule.clone(),
            note: decision.note.clone(),
        };
        self.policy.record(decision);
        context.events.emit(event).map_err(|e| {
            PropError::new(format!(
                "the policy's decision could not be logged ({e}), so the call did not run"
            ))
        })
    }

    /// Refuses a path the edges hide or keep read-only; `Ok(Some(rel))` for a path to judge.
    fn check_path(
        &self,
        given: &str,
        write: bool,
        context: &PropContext,
    ) -> Result<std::path::PathBuf, PropError> {
        let prop = &self.inner.spec().name;
        let workspace = Workspace::new(&context.workspace).map_err(PropError::from)?;
        let real = match workspace.resolve(given) {
            Ok(real) => real,
            Err(e) => {
                let message = format!("{prop}: {e}");
                self.decide(
                    context,
                    given,
                    Decided::Deny,
                    "the workspace edge".into(),
                    None,
                )?;
                return Err(PropError(format!("{message} [denied by the edges]")));
            }
        };
        let rel = real
            .strip_prefix(workspace.root())
            .map(Path::to_path_buf)
            .unwrap_or_default();
        // The path as written too: a link inside the workspace must not unhide its target,
        // nor a hidden name hide behind a link.
        let lexical = Path::new(given)
            .strip_prefix(workspace.root())
            .unwrap_or(Path::new(given))
            .to_path_buf();
        for p in [&rel, &lexical] {
            if let Some(glob) = self.policy.hidden_by(p, &workspace, Path::new(given)) {
                self.decide(
                    context,
                    given,
                    Decided::Deny,
                    format!("hidden = \"{glob}\""),
                    None,
                )?;
                return Err(PropError(format!(
                    "{prop}: `{given}` is hidden by the stage's edges (`{glob}`): it cannot be read, written or listed. Do not try to reach it another way; ask the director if you need it."
                )));
            }
            if write && let Some(glob) = self.policy.read_only_by(p) {
                self.decide(
                    context,
                    given,
                    Decided::Deny,
                    format!("read_only = \"{glob}\""),
                    None,
                )?;
                return Err(PropError(format!(
                    "{prop}: `{given}` is read-only by the stage's edges (`{glob}`); you may read it but not change it."
                )));
            }
        }
        Ok(rel)
    }

    /// Drops `grep`/`find` result lines naming a hidden path.
    fn filter_listing(&self, out: String, context: &PropContext) -> String {
        let name = self.inner.spec().name.as_str();
        if name != "grep" && name != "find" {
            return out;
        }
        // Without the workspace, no file named like key material can be judged: all are hidden.
        let workspace = Workspace::new(&context.workspace).ok();
        let hidden = |path: &Path| {
            self.policy
                .hidden
                .hidden_by(path, || {
                    workspace
                        .as_ref()
                        .and_then(|w| w.open_read(path).ok())
                        .is_none_or(|file| holds_secret(&file))
                })
                .is_some()
        };
        let mut dropped = 0;
        let mut kept: Vec<&str> = Vec::new();
        for line in out.lines() {
            let path = if name == "grep" {
                line.split(':').next().unwrap_or(line)
            } else {
                line
            };
            if !path.is_empty() && hidden(Path::new(path)) {
                dropped += 1;
            } else {
                kept.push(line);
            }
        }
        if dropped == 0 {
            return out;
        }
        let mut text = kept.join("\n");
        text.push_str(&format!(
            "\n[{dropped} result line(s) in paths hidden by the stage's edges were left out]"
        ));
        text
    }
}

#[async_trait]
impl Prop for Guarded {
    fn spec(&self) -> &ToolSpec {
        self.inner.spec()
    }

    fn access(&self, arguments: &serde_json::Value) -> Access {
        self.inner.access(arguments)
    }

    fn timeout(&self) -> Option<Duration> {
        self.inner.timeout()
    }

    async fn call(
        &self,
        arguments: serde_json::Value,
        context: &PropContext,
    ) -> Result<String, PropError> {
        let prop = self.inner.spec().name.clone();
        let write = self.inner.access(&arguments) == Access::Write;
        let verdict = if let Some(command) = arguments.get("command").and_then(|c| c.as_str()) {
            self.policy.judge_command(&prop, command)
        } else {
            let given = arguments
                .get("path")
                .and_then(|p| p.as_str())
                .filter(|p| !p.is_empty())
                .unwrap_or(".");
            let rel = self.check_path(given, write, context)?;
            self.policy.judge_path(&prop, &rel)
        };
        let rule = verdict
            .rule
            .map(|i| self.policy.rules[i].explain(verdict.because.as_deref()));
        let rule_text = rule.clone().unwrap_or_else(|| "default".into());
        let subject = verdict.subject.clone();
        let mut banner = None;
        match verdict.decision {
            Decision::Allow => {
                self.decide(context, &subject, Decided::Allow, rule_text, None)?;
            }
            Decision::Deny => {
                self.decide(context, &subject, Decided::Deny, rule_text.clone(), None)?;
                return Err(PropError(format!(
                    "{prop}: `{subject}` is denied by the stage's edges ({rule_text}). Do not retry it or work around it; do without it, or finish and say what you needed."
                )));
            }
            Decision::Ask => {
                let index = verdict.rule.unwrap_or(usize::MAX);
                if lock(&self.policy.approved).contains(&index) {
                    self.decide(
                        context,
                        &subject,
                        Decided::ApprovedForPerformance,
                        rule_text,
                        None,
                    )?;
                } else {
                    let request = ApprovalRequest {
                        actor: context.actor.to_string(),
                        prop: prop.clone(),
                        subject: subject.clone(),
                        rule: rule_text.clone(),
                    };
                    // Recorded as interrupted unless an answer comes: the performance may stop
                    // (and drop this call) while the director is being asked.
                    let mut pending = Pending {
                        guarded: self,
                        context,
                        subject: subject.clone(),
                        rule: rule_text.clone(),
                        armed: true,
                    };
                    let answer = tokio::select! {
                        biased;
                        _ = context.cancel.cancelled() => None,
                        answer = self.policy.approver.ask(&request) => Some(answer),
                    };
                    let Some(answer) = answer else {
                        drop(pending);
                        return Err(PropError(format!(
                            "{prop}: `{subject}` was waiting for the director's approval ({rule_text}) when the performance stopped, so it was denied and did not run."
                        )));
                    };
                    pending.armed = false;
                    match answer {
                        Approval::Once => {
                            self.decide(context, &subject, Decided::ApprovedOnce, rule_text, None)?;
                            banner = Some("[approved by the director, once]");
                        }
                        Approval::ForPerformance => {
                            lock(&self.policy.approved).insert(index);
                            self.decide(
                                context,
                                &subject,
                                Decided::ApprovedForPerformance,
                                rule_text,
                                None,
                            )?;
                            banner = Some("[approved by the director for this performance]");
                        }
                        Approval::Deny { note } => {
                            self.decide(
                                context,
                                &subject,
                                Decided::DeniedByDirector,
                                rule_text.clone(),
                                note.clone(),
                            )?;
                            let note = note
                                .map(|n| format!(" The director's note: {n}"))
                                .unwrap_or_default();
                            return Err(PropError(format!(
                                "{prop}: the director denied `{subject}` ({rule_text}).{note}"
                            )));
                        }
                        Approval::Unattended => {
                            self.decide(
                                context,
                                &subject,
                                Decided::DeniedUnattended,
                                rule_text.clone(),
                                None,
                            )?;
                            return Err(PropError(format!(
                                "{prop}: `{subject}` needs the director's approval ({rule_text}), and nobody can approve it in this non-interactive run, so it was denied. Do without it, or finish and say that it is needed."
                            )));
                        }
                    }
                }
            }
        }
        let result = self.inner.call(arguments, context).await;
        let with_banner = |text: String| match banner {
            Some(b) => format!("{b}\n{text}"),
            None => text,
        };
        match result {
            Ok(out) => Ok(with_banner(self.filter_listing(out, context))),
            Err(e) => Err(PropError(with_banner(e.0))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every spelling of `git push` an actor might try to get past a rule on it: quoting,
    /// paths, launchers, shells, substitutions, aliases, functions, computed words.
    const GIT_PUSH: [&str; 36] = [
        "/usr/bin/git push",
        "sh -c 'git push'",
        "bash -lc \"cd x && git push\"",
        "$(echo git) push",
        "`echo git` push",
        "cmd=git; $cmd push",
        "g\"i\"t push",
        "\\git pu\\sh",
        "git $'\\x70ush'",
        "git -C . push",
        "git --git-dir=.git --work-tree=. --no-pager push origin",
        "env git push",
        "env -i -u HOME A=1 git push",
        "command git push",
        "exec git push",
        "nice -n 5 nohup timeout 10 stdbuf -o0 setsid git push",
        "sudo -u root git push",
        "doas git push",
        "echo push | xargs git",
        "find . -exec git push \\;",
        "eval \"git push\"",
        "source ./push.sh",
        "alias p='git push'; p",
        "f() { git push; }; f",
        "if true; then (git push); fi",
        "for x in a; do { git push; }; done",
        "echo \"$(git push)\"",
        "cat <(git push)",
        "bash <<< 'git push'",
        "echo 'git push' | sh",
        "git $sub",
        "git pu*",
        "trap 'git push' EXIT",
        "git -c alias.p=push p",
        "x=$(git push)",
        "git push 'unterminated",
    ];

    /// Commands that only mention `git push`, or are other commands.
    const NOT_GIT_PUSH: [&str; 9] = [
        "git status",
        "echo \"git push\"",
        "grep 'git push' file",
        "cat push.txt",
        "git log --grep push",
        "ls *.rs | xargs wc -l",
        "[ -f x ] && echo $HOME",
        "cargo test 2>&1 | tail -5",
        "git -C $dir status",
    ];

    fn rule(command: &str, decision: Decision) -> Rule {
        Rule {
            prop: None,
            command: Some(command.into()),
            path: None,
            decision,
        }
    }

    fn policy(rules: &[Rule]) -> Policy {
        Policy::new(rules, &PathEdges::default(), Arc::new(Unattended)).unwrap()
    }

    /// The decision on `line` and the rule text the actor is told.
    fn judge(policy: &Policy, line: &str) -> (Decision, String) {
        let v = policy.judge_command("bash", line);
        let rule = v
            .rule
            .map(|i| policy.rules[i].explain(v.because.as_deref()));
        (v.decision, rule.unwrap_or_default())
    }

    #[test]
    fn every_spelling_of_a_denied_command_is_denied() {
        let deny = policy(&[rule("git push*", Decision::Deny)]);
        for line in GIT_PUSH {
            assert_eq!(judge(&deny, line).0, Decision::Deny, "{line}");
        }
        for line in NOT_GIT_PUSH {
            assert_eq!(
                judge(&deny, line),
                (Decision::Allow, String::new()),
                "{line}"
            );
        }
    }

    #[test]
    fn every_spelling_of_a_command_to_ask_about_is_asked_about() {
        let ask = policy(&[rule("git push*", Decision::Ask)]);
        for line in GIT_PUSH {
            assert_eq!(judge(&ask, line).0, Decision::Ask, "{line}");
        }
        for line in NOT_GIT_PUSH {
            assert_eq!(judge(&ask, line).0, Decision::Allow, "{line}");
        }
    }

    #[test]
    fn what_cannot_be_resolved_takes_the_strictest_command_rule_and_says_why() {
        let rules = [
            rule("cargo*", Decision::Allow),
            rule("git commit*", Decision::Ask),
            rule("git push*", Decision::Deny),
        ];
        let (decision, why) = judge(&policy(&rules), "$cmd status");
        assert_eq!(decision, Decision::Deny);
        assert!(
            why.contains("rule 3") && why.contains("`$cmd` is computed"),
            "{why}"
        );
        let (decision, why) = judge(&policy(&rules[..2]), "eval x");
        assert_eq!(decision, Decision::Ask);
        assert!(why.contains("`eval` runs text"), "{why}");
        // A computed word takes only the rules that could match what it becomes.
        assert_eq!(judge(&policy(&rules), "git com$x").0, Decision::Ask);
        assert_eq!(judge(&policy(&rules), "cargo $x").0, Decision::Allow);
        let (decision, why) = judge(&policy(&rules), "/usr/bin/git -C . push");
        assert_eq!(decision, Decision::Deny);
        assert!(why.ends_with("it runs `git push`"), "{why}");
        // Allow rules never allow what cannot be resolved; with no command rule nothing
        // changes.
        assert_eq!(judge(&policy(&rules[..1]), "$cmd").0, Decision::Allow);
        assert_eq!(judge(&policy(&[]), "eval \"git push\"").0, Decision::Allow);
    }

    #[test]
    fn the_first_rule_matching_a_command_decides_it() {
        let rules = [
            rule("git push --dry-run*", Decision::Allow),
            rule("git push*", Decision::Deny),
        ];
        let p = policy(&rules);
        assert_eq!(judge(&p, "git -C . push --dry-run").0, Decision::Allow);
        assert_eq!(judge(&p, "git push --dry-run; git push").0, Decision::Deny);
    }

    #[test]
    fn a_command_no_command_rule_matches_takes_the_prop_rule() {
        let rules = [
            Rule {
                prop: Some("bash".into()),
                command: None,
                path: None,
                decision: Decision::Ask,
            },
            rule("cargo test*", Decision::Allow),
        ];
        let p = policy(&rules);
        assert_eq!(judge(&p, "cargo test").0, Decision::Allow);
        // An allowed command does not carry the rest of the line with it.
        assert_eq!(judge(&p, "cargo test && curl x").0, Decision::Ask);
        assert_eq!(judge(&p, "").0, Decision::Ask);
    }

    #[test]
    fn path_globs_match_components_or_whole_paths() {
        let env = PathGlob::new(".env*").unwrap();
        assert!(env.matches(Path::new("config/.env.local")));
        assert!(!env.matches(Path::new("src/env.rs")));
        let git = PathGlob::new(".git/").unwrap();
        assert!(git.matches(Path::new(".git/config")));
        let docs = PathGlob::new("docs/*.md").unwrap();
        assert!(docs.matches(Path::new("docs/a.md")));
        assert!(!docs.matches(Path::new("docs/x/a.md")));
        assert!(PathGlob::new("a[").is_err());
        let root = PathGlob::new("/stage.toml").unwrap();
        assert!(root.matches(Path::new("stage.toml")));
        assert!(!root.matches(Path::new("sub/stage.toml")));
        let state = PathGlob::new("/.improv").unwrap();
        assert!(state.matches(Path::new(".improv/serve.token")));
        assert!(!state.matches(Path::new("x/.improv/serve.token")));
    }

    /// A shell-like prop that only counts its calls.
    struct Counting(ToolSpec, std::sync::atomic::AtomicUsize);

    #[async_trait]
    impl Prop for Counting {
        fn spec(&self) -> &ToolSpec {
            &self.0
        }
        async fn call(
            &self,
            _arguments: serde_json::Value,
            _context: &PropContext,
        ) -> Result<String, PropError> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok("ran".into())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_ask_is_denied_as_interrupted_when_the_performance_is_cancelled() {
        // A director who never answers.
        let (_director, input) = std::os::unix::net::UnixStream::pair().unwrap();
        let prompt = Prompt::new(std::io::BufReader::new(input), std::io::sink());
        let rule = Rule {
            prop: None,
            command: Some("git push*".into()),
            path: None,
            decision: Decision::Ask,
        };
        let policy =
            Arc::new(Policy::new(&[rule], &PathEdges::default(), Arc::new(prompt)).unwrap());
        let spec = ToolSpec {
            name: "bash".into(),
            description: String::new(),
            parameters: serde_json::json!({}),
        };
        let inner = Arc::new(Counting(spec, Default::default()));
        let guarded = Guarded::new(inner.clone(), policy.clone());
        let dir = tempfile::tempdir().unwrap();
        let context = PropContext::new(dir.path().canonicalize().unwrap(), "lead", "p1");
        let cancel = context.cancel.clone();
        let stop = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            cancel.cancel();
        });
        let result = guarded
            .call(serde_json::json!({"command": "git push"}), &context)
            .await;
        stop.await.unwrap();
        let err = result.unwrap_err().0;
        assert!(err.contains("when the performance stopped"), "{err}");
        assert_eq!(inner.1.load(std::sync::atomic::Ordering::SeqCst), 0);
        let d = policy.decisions();
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].decision, Decided::DeniedInterrupted);
        // Already cancelled: denied without asking.
        let again = guarded
            .call(serde_json::json!({"command": "git push"}), &context)
            .await;
        assert!(again.is_err());
        assert_eq!(policy.decisions()[1].decision, Decided::DeniedInterrupted);
    }

    /// Every event a performance emits.
    #[derive(Default)]
    struct Collect(Mutex<Vec<improv_kernel::Event>>);

    impl improv_kernel::Observer for Collect {
        fn observe(&self, event: &improv_kernel::Event) -> Result<(), improv_kernel::ObserveError> {
            self.0.lock().unwrap().push(event.clone());
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_decision_is_logged_during_its_call_in_the_stream_of_the_actor_making_it() {
        use improv_kernel::{Actor, Performance, ScriptedModel, ScriptedTurn};
        let dir = tempfile::tempdir().unwrap();
        let policy = Arc::new(policy(&[rule("curl*", Decision::Deny)]));
        let spec = ToolSpec {
            name: "bash".into(),
            description: String::new(),
            parameters: serde_json::json!({}),
        };
        let inner = Arc::new(Counting(spec, Default::default()));
        let model = Arc::new(ScriptedModel::new(vec![
            ScriptedTurn::call("bash", serde_json::json!({"command": "curl x.invalid"})),
            ScriptedTurn::call("bash", serde_json::json!({"command": "echo fine"})),
            ScriptedTurn::say("done"),
        ]));
        let collect = Arc::new(Collect::default());
        let actor = Actor {
            name: "scout".into(),
            system: "test".into(),
            model,
            props: Guarded::all(vec![inner.clone()], &policy),
            max_output_tokens: None,
        };
        let mut performance = Performance::builder(actor)
            .workspace(dir.path())
            .observer(collect.clone())
            .start("go")
            .unwrap();
        let ended = performance.act(&Default::default()).await;
        performance.finish(&ended).unwrap();
        let events = collect.0.lock().unwrap();
        let names: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
        let decided: Vec<(Decided, &str)> = events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::PolicyDecision {
                    decision, subject, ..
                } => {
                    assert_eq!(e.actor.as_deref(), Some("scout"));
                    Some((*decision, subject.as_str()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            decided,
            [
                (Decided::Deny, "curl x.invalid"),
                (Decided::Allow, "echo fine")
            ]
        );
        // Each between its call's start and finish: made, and logged, where the call runs.
        for (at, _) in names
            .iter()
            .enumerate()
            .filter(|(_, n)| **n == "policy_decision")
        {
            assert_eq!(names[at - 1], "tool_call_started", "{names:?}");
            assert_eq!(names[at + 1], "tool_call_finished", "{names:?}");
        }
        assert_eq!(inner.1.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    const CERT: &str =
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";

    /// `holds_secret` of a temp file holding `bytes`.
    fn secret(bytes: &[u8]) -> bool {
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, bytes).unwrap();
        std::io::Seek::rewind(&mut file).unwrap();
        holds_secret(&file)
    }

    #[test]
    fn certificates_crls_and_public_keys_are_public_and_anything_else_is_secret() {
        let bundle = format!("# Issuer: CN=Root\n# Label: \"Root\"\n{CERT}\n{CERT}");
        for public in [
            CERT.to_string(),
            bundle.clone(),
            CERT.replace("\n", "\r\n"),
            "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n".into(),
            "-----BEGIN X509 CRL-----\nMIIB\n-----END X509 CRL-----\n".into(),
            "-----BEGIN TRUSTED CERTIFICATE-----\nMIIB\n-----END TRUSTED CERTIFICATE-----\n".into(),
        ] {
            assert!(!secret(public.as_bytes()), "{public}");
        }
        let key = |label: &str| format!("-----BEGIN {label}-----\nMIIE\n-----END {label}-----\n");
        // A key appended far past the head of a long chain is still found.
        let long_chain = format!("{}{}", CERT.repeat(400), key("PRIVATE KEY"));
        assert!(long_chain.len() > 16 * 1024);
        for secret_text in [
            key("PRIVATE KEY"),
            key("RSA PRIVATE KEY"),
            key("EC PRIVATE KEY"),
            key("OPENSSH PRIVATE KEY"),
            key("ENCRYPTED PRIVATE KEY"),
            format!("{CERT}{}", key("RSA PRIVATE KEY")),
            long_chain,
            key("EC PARAMETERS"),
            format!("{CERT}password=hunter2\n"),
            "-----BEGIN CERTIFICATE-----\nMIIB\n".into(),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END PUBLIC KEY-----\n".into(),
            "sk-live-0123456789".into(),
            String::new(),
        ] {
            assert!(secret(secret_text.as_bytes()), "{secret_text}");
        }
        // Binary DER, and a file past what is read.
        assert!(secret(&[0x30, 0x82, 0x04, 0xa4, 0x02, 0x01, 0x00]));
        let huge = CERT.repeat(KEY_MATERIAL_MAX as usize / CERT.len() + 1);
        assert!(secret(huge.as_bytes()));
        // Not a regular file.
        let dir = tempfile::tempdir().unwrap();
        assert!(holds_secret(&std::fs::File::open(dir.path()).unwrap()));
    }

    #[test]
    fn only_a_file_named_only_like_key_material_is_judged_by_its_content() {
        let globs = HiddenGlobs::new(&default_hidden()).unwrap();
        let by_name = |p: &str| globs.by_name(Path::new(p));
        let cacert = ".venv/lib/python3.12/site-packages/certifi/cacert.pem";
        assert_eq!(by_name(cacert), ByName::KeyMaterial("*.pem"));
        assert_eq!(by_name("certs/TLS.KEY"), ByName::KeyMaterial("*.key"));
        // Another glob matching it hides it by name; so does a folder named like key material.
        assert_eq!(by_name("id_rsa.pem"), ByName::Hidden("id_rsa*"));
        assert_eq!(by_name("config/.env.pem"), ByName::Hidden(".env.*"));
        assert_eq!(by_name("keys.pem/a.txt"), ByName::Hidden("*.pem"));
        assert_eq!(by_name("src/main.rs"), ByName::Shown);
        assert_eq!(globs.hidden_by(Path::new(cacert), || false), None);
        assert_eq!(globs.hidden_by(Path::new(cacert), || true), Some("*.pem"));
        assert_eq!(globs.hidden_by(Path::new(".ENV"), || false), Some(".env"));
        // A glob the stage declares hides by name.
        let stage = HiddenGlobs::new(&["*.pem".into()]).unwrap();
        assert_eq!(stage.hidden_by(Path::new(cacert), || false), Some("*.pem"));
    }
}
