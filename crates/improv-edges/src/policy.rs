//! Command and path policy: the stage's `[[edges.rule]]`s (prop, command glob, path glob →
//! allow, deny or ask), hidden and read-only path globs, and approvals. [`Guarded`] wraps a prop
//! and applies the policy before the prop runs; every decision is recorded as a
//! [`PolicyDecision`] and said in the tool result.
//!
//! Command rules judge each simple command of a shell line (`a && b | c` is three), and the
//! strictest decision wins. They steer an honest actor; the sandbox is what holds against a
//! hostile one (a command can always be spelled another way).

use async_trait::async_trait;
use globset::{Glob, GlobBuilder, GlobMatcher};
use improv_kernel::{Access, Prop, PropContext, PropError, ToolSpec};
use improv_props::workspace::Workspace;
pub use improv_stage::{Decision, Rule};
use serde::Serialize;
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Component, Path};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Paths no prop may read or write unless the stage says otherwise.
pub const DEFAULT_HIDDEN: [&str; 8] = [
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "id_rsa*",
    "id_ed25519*",
    ".netrc",
    ".npmrc",
];

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

fn command_glob(text: &str) -> Result<GlobMatcher, GlobError> {
    Glob::new(text)
        .map(|g| g.compile_matcher())
        .map_err(|source| GlobError {
            glob: text.to_string(),
            source,
        })
}

struct CompiledRule {
    index: usize,
    rule: Rule,
    command: Option<GlobMatcher>,
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
    pub hidden: Vec<String>,
    /// Read but not written.
    pub read_only: Vec<String>,
}

impl Default for PathEdges {
    fn default() -> Self {
        PathEdges {
            hidden: DEFAULT_HIDDEN.map(String::from).to_vec(),
            read_only: DEFAULT_READ_ONLY.map(String::from).to_vec(),
        }
    }
}

/// One decision of the policy: what the log's `policy_decision` event carries.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PolicyDecision {
    pub actor: String,
    pub prop: String,
    /// The command or path judged.
    pub subject: String,
    /// `allow`, `deny`, `approved_once`, `approved_for_performance`, `denied_by_director`,
    /// `denied_unattended`, `denied_interrupted` (the performance stopped while the director
    /// was being asked).
    pub decision: String,
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

/// Called with every decision as it is made.
type DecisionHook = Box<dyn Fn(&PolicyDecision) + Send + Sync>;

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
/// the decisions made.
pub struct Policy {
    rules: Vec<CompiledRule>,
    hidden: Vec<PathGlob>,
    read_only: Vec<PathGlob>,
    approver: Arc<dyn Approver>,
    approved: Mutex<HashSet<usize>>,
    decisions: Mutex<Vec<PolicyDecision>>,
    on_decision: Option<DecisionHook>,
}

/// What the policy says about one call, before any approval.
struct Verdict {
    decision: Decision,
    /// The rule that decided; `None` for the default (allow).
    rule: Option<usize>,
    subject: String,
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
            hidden: globs(&paths.hidden)?,
            read_only: globs(&paths.read_only)?,
            approver,
            approved: Mutex::new(HashSet::new()),
            decisions: Mutex::new(Vec::new()),
            on_decision: None,
        })
    }

    /// Calls `f` with every decision as it is made: where the CLI emits the event.
    pub fn on_decision(mut self, f: impl Fn(&PolicyDecision) + Send + Sync + 'static) -> Self {
        self.on_decision = Some(Box::new(f));
        self
    }

    /// The decisions made so far, in order.
    pub fn decisions(&self) -> Vec<PolicyDecision> {
        lock(&self.decisions).clone()
    }

    fn record(&self, decision: PolicyDecision) {
        if let Some(f) = &self.on_decision {
            f(&decision);
        }
        lock(&self.decisions).push(decision);
    }

    /// Judges a shell command: each simple command in it, the strictest wins.
    fn judge_command(&self, prop: &str, command: &str) -> Verdict {
        let mut worst = Verdict {
            decision: Decision::Allow,
            rule: None,
            subject: command.to_string(),
        };
        for part in simple_commands(command) {
            let hit = self.rules.iter().find(|r| {
                r.rule.prop.as_deref().is_none_or(|p| p == prop)
                    && r.path.is_none()
                    && r.command.as_ref().is_some_and(|g| g.is_match(&part))
            });
            if let Some(r) = hit
                && (worst.rule.is_none()
                    || strictness(r.rule.decision) > strictness(worst.decision))
            {
                worst = Verdict {
                    decision: r.rule.decision,
                    rule: Some(r.index),
                    subject: part,
                };
            }
        }
        if worst.rule.is_none() {
            // A rule for the whole prop (no command, no path).
            if let Some(r) = self.prop_rule(prop) {
                worst.decision = r.rule.decision;
                worst.rule = Some(r.index);
            }
        }
        worst
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
            },
            None => Verdict {
                decision: Decision::Allow,
                rule: None,
                subject: shown,
            },
        }
    }

    fn prop_rule(&self, prop: &str) -> Option<&CompiledRule> {
        self.rules.iter().find(|r| {
            r.rule.prop.as_deref() == Some(prop) && r.command.is_none() && r.path.is_none()
        })
    }

    fn hidden_by(&self, rel: &Path) -> Option<&str> {
        self.hidden
            .iter()
            .find(|g| g.matches(rel))
            .map(|g| g.text.as_str())
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

/// The simple commands of a shell line: split at `;`, `&&`, `||`, `|`, `&`, newlines and
/// inside `$(...)`, backticks and parentheses, quotes respected, leading `VAR=value`
/// assignments dropped.
pub fn simple_commands(line: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = line.chars().peekable();
    let (mut single, mut double) = (false, false);
    let mut flush = |current: &mut String| {
        let words: Vec<&str> = current.split_whitespace().collect();
        let start = words
            .iter()
            .position(|w| !is_assignment(w))
            .unwrap_or(words.len());
        let text = words[start..].join(" ");
        if !text.is_empty() && text != "{" && text != "}" {
            parts.push(text);
        }
        current.clear();
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' if !single => {
                current.push(c);
                if let Some(n) = chars.next() {
                    current.push(n);
                }
            }
            '\'' if !double => {
                single = !single;
                current.push(c);
            }
            '"' if !single => {
                double = !double;
                current.push(c);
            }
            '$' if !single && chars.peek() == Some(&'(') => {
                chars.next();
                flush(&mut current);
            }
            '`' if !single => flush(&mut current),
            ';' | '&' | '|' | '\n' | '(' | ')' if !single && !double => flush(&mut current),
            _ => current.push(c),
        }
    }
    flush(&mut current);
    parts
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && name.chars().all(|c| c == '_' || c.is_ascii_alphanumeric())
            && !name.starts_with(|c: char| c.is_ascii_digit())
    })
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
            self.guarded.decide(
                self.context,
                &self.subject,
                "denied_interrupted",
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

    fn decide(
        &self,
        context: &PropContext,
        subject: &str,
        decision: &str,
        rule: String,
        note: Option<String>,
    ) {
        self.policy.record(PolicyDecision {
            actor: context.actor.to_string(),
            prop: self.inner.spec().name.clone(),
            subject: subject.to_string(),
            decision: decision.to_string(),
            rule,
            note,
        });
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
                self.decide(context, given, "deny", "the workspace edge".into(), None);
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
            if let Some(glob) = self.policy.hidden_by(p) {
                self.decide(context, given, "deny", format!("hidden = \"{glob}\""), None);
                return Err(PropError(format!(
                    "{prop}: `{given}` is hidden by the stage's edges (`{glob}`): it cannot be read, written or listed. Do not try to reach it another way; ask the director if you need it."
                )));
            }
            if write && let Some(glob) = self.policy.read_only_by(p) {
                self.decide(
                    context,
                    given,
                    "deny",
                    format!("read_only = \"{glob}\""),
                    None,
                );
                return Err(PropError(format!(
                    "{prop}: `{given}` is read-only by the stage's edges (`{glob}`); you may read it but not change it."
                )));
            }
        }
        Ok(rel)
    }

    /// Drops `grep`/`find` result lines naming a hidden path.
    fn filter_listing(&self, out: String) -> String {
        let name = self.inner.spec().name.as_str();
        if name != "grep" && name != "find" {
            return out;
        }
        let mut dropped = 0;
        let mut kept: Vec<&str> = Vec::new();
        for line in out.lines() {
            let path = if name == "grep" {
                line.split(':').next().unwrap_or(line)
            } else {
                line
            };
            if !path.is_empty() && self.policy.hidden_by(Path::new(path)).is_some() {
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
        let rule = verdict.rule.map(|i| self.policy.rules[i].describe());
        let rule_text = rule.clone().unwrap_or_else(|| "default".into());
        let subject = verdict.subject.clone();
        let mut banner = None;
        match verdict.decision {
            Decision::Allow => {
                self.decide(context, &subject, "allow", rule_text, None);
            }
            Decision::Deny => {
                self.decide(context, &subject, "deny", rule_text.clone(), None);
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
                        "approved_for_performance",
                        rule_text,
                        None,
                    );
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
                            self.decide(context, &subject, "approved_once", rule_text, None);
                            banner = Some("[approved by the director, once]");
                        }
                        Approval::ForPerformance => {
                            lock(&self.policy.approved).insert(index);
                            self.decide(
                                context,
                                &subject,
                                "approved_for_performance",
                                rule_text,
                                None,
                            );
                            banner = Some("[approved by the director for this performance]");
                        }
                        Approval::Deny { note } => {
                            self.decide(
                                context,
                                &subject,
                                "denied_by_director",
                                rule_text.clone(),
                                note.clone(),
                            );
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
                                "denied_unattended",
                                rule_text.clone(),
                                None,
                            );
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
            Ok(out) => Ok(with_banner(self.filter_listing(out))),
            Err(e) => Err(PropError(with_banner(e.0))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_lines_split_into_simple_commands() {
        assert_eq!(
            simple_commands("cd x && FOO=1 git push origin; echo \"a;b\" | curl -s $(cat u) `id`"),
            [
                "cd x",
                "git push origin",
                "echo \"a;b\"",
                "curl -s",
                "cat u",
                "id"
            ]
        );
        assert_eq!(simple_commands("  "), Vec::<String>::new());
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
        assert_eq!(d[0].decision, "denied_interrupted");
        // Already cancelled: denied without asking.
        let again = guarded
            .call(serde_json::json!({"command": "git push"}), &context)
            .await;
        assert!(again.is_err());
        assert_eq!(policy.decisions()[1].decision, "denied_interrupted");
    }
}
