//! The six examinations, one function each: what each looks at, and the findings it makes.

use crate::command::{Program, programs};
use crate::{Finding, Question, Severity};
use improv_stage::prompt::CONTEXT_FILE_CAP;
use improv_stage::{ActorConfig, Check, DEFAULT_CONTEXT_FILES, Decision, SandboxMode, Stage};
use std::collections::BTreeSet;
use std::path::{Component, Path};

/// A system prompt past this many bytes is flagged: it is sent on every turn.
const BIG_PROMPT: usize = 32 * 1024;

/// Intents shorter than this many words rarely say what done looks like.
const SHORT_INTENT_WORDS: usize = 4;

/// Providers that bill by the token.
const PRICED_PROVIDERS: &[&str] = &["openai", "openai-responses", "anthropic"];

/// Words of an intent that call for running commands.
const RUN_WORDS: &[&str] = &[
    "run",
    "test",
    "tests",
    "build",
    "compile",
    "install",
    "execute",
    "benchmark",
    "lint",
];

/// Words of an intent that call for changing files.
const CHANGE_WORDS: &[&str] = &[
    "fix",
    "write",
    "create",
    "edit",
    "implement",
    "add",
    "change",
    "update",
    "refactor",
    "rename",
    "delete",
    "remove",
    "generate",
    "make",
];

/// Whether `prop` changes files (the registry says: `write`, `edit`, `bash`).
fn changes_files(prop: &str) -> bool {
    improv_stage::props::find(prop).is_some_and(|p| p.changes_files())
}

pub(crate) fn ask(stage: &Stage, question: Question) -> Vec<Finding> {
    let mut f = Findings {
        question,
        list: Vec::new(),
    };
    match question {
        Question::Capabilities => capabilities(stage, &mut f),
        Question::Information => information(stage, &mut f),
        Question::Goal => goal(stage, &mut f),
        Question::Edges => edges(stage, &mut f),
        Question::Collaboration => collaboration(stage, &mut f),
        Question::Feedback => feedback(stage, &mut f),
    }
    f.list
}

struct Findings {
    question: Question,
    list: Vec<Finding>,
}

impl Findings {
    fn ok(&mut self, evidence: impl Into<String>) {
        self.push(Severity::Ok, evidence.into(), None);
    }
    fn warn(&mut self, evidence: impl Into<String>, fix: impl Into<String>) {
        self.push(Severity::Warning, evidence.into(), Some(fix.into()));
    }
    fn error(&mut self, evidence: impl Into<String>, fix: impl Into<String>) {
        self.push(Severity::Error, evidence.into(), Some(fix.into()));
    }
    fn push(&mut self, severity: Severity, evidence: String, fix: Option<String>) {
        self.list.push(Finding {
            question: self.question,
            severity,
            evidence,
            fix,
        });
    }
    fn clean(&self) -> bool {
        self.list.iter().all(|f| f.severity == Severity::Ok)
    }
}

fn has(actor: &ActorConfig, prop: &str) -> bool {
    actor.props.iter().any(|p| p == prop)
}

fn critics(stage: &Stage) -> BTreeSet<&str> {
    stage
        .feedback
        .checks
        .iter()
        .filter_map(|c| c.critic.as_deref())
        .collect()
}

/// The words of `text` that appear in `list`, lower-cased, first occurrence each.
fn words_in(text: &str, list: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .map(str::to_lowercase)
    {
        if list.contains(&w.as_str()) && !out.contains(&w) {
            out.push(w);
        }
    }
    out
}

fn quoted(items: &[String]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn capabilities(stage: &Stage, f: &mut Findings) {
    let lead = stage.lead();
    let critics = critics(stage);
    let solo = stage.actors.len() == 1;
    for a in &stage.actors {
        if a.props.is_empty() {
            f.warn(
                format!("`{}` has no props: it can only talk", a.name),
                format!(
                    "give `{}` the props its work needs, e.g. props = [\"read\", \"grep\", \"find\"]",
                    a.name
                ),
            );
        }
        if solo && has(a, "cue") {
            f.warn(
                format!(
                    "`{}` has the `cue` prop, but the cast has nobody else to cue; its description is paid for on every turn",
                    a.name
                ),
                format!(
                    "remove \"cue\" from `{}`'s props, or add an [[actor]] for it to cue",
                    a.name
                ),
            );
        }
        if solo && has(a, "board") {
            f.warn(
                format!(
                    "`{}` has the `board` prop, but it performs alone: there is nobody to share notes with",
                    a.name
                ),
                format!("remove \"board\" from `{}`'s props", a.name),
            );
        }
        if critics.contains(a.name.as_str()) {
            if !has(a, "read") {
                f.warn(
                    format!(
                        "critic `{}` has no `read` prop: it must judge from the actor's report alone, without looking at the work",
                        a.name
                    ),
                    format!("add \"read\" (and \"grep\", \"find\") to `{}`'s props", a.name),
                );
            }
            let changes: Vec<String> = ["write", "edit"]
                .iter()
                .filter(|p| has(a, p))
                .map(|p| p.to_string())
                .collect();
            if !changes.is_empty() {
                f.warn(
                    format!(
                        "critic `{}` can change the work ({}): a critic that edits may fix what it should judge",
                        a.name,
                        quoted(&changes)
                    ),
                    format!("remove {} from `{}`'s props", quoted(&changes), a.name),
                );
            }
        }
    }

    // What the checks and the intent ask of the lead and the cast.
    let commands: Vec<&Check> = stage
        .feedback
        .checks
        .iter()
        .filter(|c| c.command.is_some())
        .collect();
    if let Some(c) = commands.first()
        && !has(lead, "bash")
    {
        f.warn(
            format!(
                "check `{}` runs `{}`, but the lead `{}` has no `bash`: it cannot run it before it says done, and learns of failures only from the checks",
                c.name,
                c.command.as_deref().unwrap_or_default(),
                lead.name
            ),
            format!("add \"bash\" to `{}`'s props", lead.name),
        );
    }
    let wants_files = stage
        .feedback
        .checks
        .iter()
        .find(|c| c.command.is_some() || (c.file.is_some() && c.exists));
    if let Some(c) = wants_files
        && !lead.props.iter().any(|p| changes_files(p))
    {
        f.warn(
            format!(
                "check `{}` judges the workspace, but the lead `{}` cannot change it (no write, edit or bash)",
                c.name, lead.name
            ),
            format!("add \"write\" and \"edit\" to `{}`'s props", lead.name),
        );
    }
    if let Some(intent) = &stage.stage.intent {
        let anyone = |props: &[&str]| stage.actors.iter().any(|a| props.iter().any(|p| has(a, p)));
        let run = words_in(intent, RUN_WORDS);
        if !run.is_empty() && !anyone(&["bash"]) {
            f.warn(
                format!(
                    "the intent speaks of {} but no actor has `bash` to run anything",
                    quoted(&run)
                ),
                format!("add \"bash\" to `{}`'s props", lead.name),
            );
        }
        let change = words_in(intent, CHANGE_WORDS);
        let changer = stage
            .actors
            .iter()
            .any(|a| a.props.iter().any(|p| changes_files(p)));
        if !change.is_empty() && !changer {
            f.warn(
                format!(
                    "the intent speaks of {} but no actor can change files (no write, edit or bash)",
                    quoted(&change)
                ),
                format!("add \"write\" and \"edit\" to `{}`'s props", lead.name),
            );
        }
    }
    if f.clean() {
        for a in &stage.actors {
            let props = if a.props.is_empty() {
                "no props".to_string()
            } else {
                a.props.join(", ")
            };
            f.ok(format!("`{}` has {props}", a.name));
        }
    }
}

/// `n` with thousands separators.
fn num(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration as a stage file would write it: `20m`, `90s`, `1h`.
fn duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Bytes and the tokens they cost, roughly (4 bytes a token).
fn size(bytes: usize) -> String {
    format!("{} bytes (~{} tokens)", num(bytes), num(bytes.div_ceil(4)))
}

fn information(stage: &Stage, f: &mut Findings) {
    let defaults = stage
        .context
        .files
        .iter()
        .map(String::as_str)
        .eq(DEFAULT_CONTEXT_FILES.iter().copied());
    let mut present = Vec::new();
    for name in &stage.context.files {
        let path = stage.dir.join(name);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => f.warn(
                format!("context file `{name}` is a folder: nothing of it reaches the actors"),
                format!("name files under [context] files, not folders (`{name}/README.md`?)"),
            ),
            Ok(meta) => {
                let bytes = usize::try_from(meta.len()).unwrap_or(usize::MAX);
                if bytes > CONTEXT_FILE_CAP {
                    f.warn(
                        format!(
                            "context file `{name}` is {}: only its first {} KB goes into each system prompt, and every turn pays for that",
                            size(bytes),
                            CONTEXT_FILE_CAP / 1024
                        ),
                        format!(
                            "keep what the actors need in a short file (AGENTS.md) and list it instead of `{name}`; they can still read `{name}` with their props"
                        ),
                    );
                } else {
                    f.ok(format!("context file `{name}`: {}", size(bytes)));
                }
                present.push(name.as_str());
            }
            Err(_) if defaults => {}
            Err(_) => f.warn(
                format!(
                    "context file `{name}` does not exist in {}, so no actor sees it",
                    stage.dir.display()
                ),
                format!("create `{name}`, or remove it from `files` under [context]"),
            ),
        }
    }
    if present.is_empty() {
        f.ok(format!(
            "no context file found (looked for {}): the actors start from the intent and what they read",
            quoted(&stage.context.files)
        ));
    }
    let workspace = stage.workspace();
    for a in &stage.actors {
        let prompt = stage.system_prompt(a, &workspace).len();
        if prompt > BIG_PROMPT {
            f.warn(
                format!(
                    "`{}`'s system prompt is {}, sent on every turn",
                    a.name,
                    size(prompt)
                ),
                "shorten its role and the context files; let the actors read long documents when they need them",
            );
        } else {
            f.ok(format!(
                "`{}`'s system prompt: {}, sent on every turn",
                a.name,
                size(prompt)
            ));
        }
    }
}

fn goal(stage: &Stage, f: &mut Findings) {
    let checks = &stage.feedback.checks;
    match &stage.stage.intent {
        None => f.error(
            "the stage has no intent: nothing says what a performance is for",
            "add `intent = \"...\"` under [stage]: the goal in a sentence or two, with what done looks like",
        ),
        Some(intent) => {
            let words = intent.split_whitespace().count();
            if words < SHORT_INTENT_WORDS {
                f.warn(
                    format!("the intent \"{intent}\" is {words} word(s): too short to say what done looks like"),
                    "say what to change and how to tell it is done, e.g. \"Make `cargo test` pass without changing the tests.\"",
                );
            } else {
                f.ok(format!("intent: \"{}\" ({words} words)", intent.trim()));
            }
        }
    }
    if checks.is_empty() {
        f.warn(
            "no check says when the goal is met: the performance ends whenever the actor says it is done",
            "add a [[feedback.check]]: a `command` that passes when the work is done (`cargo test`), a `file` assertion, or a `critic` with a `rubric`",
        );
    } else {
        let names: Vec<String> = checks.iter().map(|c| c.name.clone()).collect();
        f.ok(format!(
            "{} check(s) say when it is met: {}",
            checks.len(),
            quoted(&names)
        ));
    }
}

/// The limits a budget sets, as `key value` phrases.
fn limits(b: &improv_stage::Stage, actor: Option<&ActorConfig>) -> Vec<String> {
    let budget = match actor {
        Some(a) => a.budget.clone(),
        None => b.budget(),
    };
    let mut out = Vec::new();
    if let Some(v) = budget.max_turns {
        out.push(format!("max_turns {v}"));
    }
    if let Some(v) = budget.max_tool_calls {
        out.push(format!("max_tool_calls {v}"));
    }
    if let Some(v) = budget.max_input_tokens {
        out.push(format!("max_input_tokens {v}"));
    }
    if let Some(v) = budget.max_output_tokens {
        out.push(format!("max_output_tokens {v}"));
    }
    if let Some(v) = budget.max_cost_usd {
        out.push(format!("max_cost_usd ${v:.2}"));
    }
    if let Some(v) = budget.timeout {
        out.push(format!("timeout {}", duration(v)));
    }
    out
}

fn edges(stage: &Stage, f: &mut Findings) {
    let e = &stage.edges;
    let lead = stage.lead();
    let shell = stage.actors.iter().any(|a| has(a, "bash"))
        || stage.feedback.checks.iter().any(|c| c.command.is_some());
    if e.sandbox == SandboxMode::Off {
        f.warn(
            format!(
                "sandbox = \"off\": {} with your user's rights, able to read and write anything you can",
                if shell {
                    "shell commands run"
                } else {
                    "any shell command an actor is later given would run"
                }
            ),
            "remove `sandbox = \"off\"` under [edges]; if the sandbox refuses something the work needs, allow that path rather than everything",
        );
    }
    let stage_limits = limits(stage, None);
    let lead_limits = limits(stage, Some(lead));
    let budget = stage.budget();
    let bounded = |b: &improv_stage::Stage| {
        let l = &lead.budget;
        let s = b.budget();
        s.max_turns.is_some()
            || s.max_tool_calls.is_some()
            || s.timeout.is_some()
            || l.max_turns.is_some()
            || l.max_tool_calls.is_some()
            || l.timeout.is_some()
    };
    if stage_limits.is_empty() && lead_limits.is_empty() {
        f.error(
            "no budget at all: nothing under [edges] or on the lead limits turns, tokens, cost or time, so a performance may run and spend without end",
            "set limits under [edges], e.g. max_turns = 60 and timeout = \"20m\" (and max_cost_usd = 2.0 for priced models)",
        );
    } else if !bounded(stage) {
        f.warn(
            format!(
                "the budget ({}) sets no turn, tool-call or time limit; an unpriced model spends nothing, so such a budget never runs out",
                stage_limits
                    .iter()
                    .chain(&lead_limits)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "add max_turns (e.g. 60) or timeout (e.g. \"20m\") under [edges]",
        );
    }
    let priced: Vec<String> = stage
        .actors
        .iter()
        .filter_map(|a| {
            let model = a.model.as_deref()?;
            let provider = model.split_once('/')?.0;
            PRICED_PROVIDERS
                .contains(&provider)
                .then(|| format!("{} ({model})", a.name))
        })
        .collect();
    if !priced.is_empty() && budget.max_cost_usd.is_none() && lead.budget.max_cost_usd.is_none() {
        f.warn(
            format!(
                "priced models perform ({}) but no `max_cost_usd` caps what a performance spends",
                priced.join(", ")
            ),
            "add max_cost_usd under [edges], e.g. max_cost_usd = 2.0",
        );
    }
    for (i, r) in e.rules.iter().enumerate() {
        if r.decision != Decision::Allow {
            continue;
        }
        let everything = |g: &Option<String>| {
            g.as_deref()
                .is_some_and(|g| matches!(g.trim(), "*" | "**" | "**/*"))
        };
        let what = match (&r.prop, &r.command, &r.path) {
            (None, None, None) => Some("every call of every prop".to_string()),
            (_, c, _) if everything(c) => Some(format!(
                "every command (`command = {:?}`)",
                c.as_deref().unwrap_or_default()
            )),
            (_, _, p) if everything(p) => Some(format!(
                "every path (`path = {:?}`)",
                p.as_deref().unwrap_or_default()
            )),
            (Some(prop), None, None) => Some(format!("every call of `{prop}`")),
            _ => None,
        };
        if let Some(what) = what {
            f.warn(
                format!(
                    "rule {} under [[edges.rule]] allows {what}: no rule after it is ever asked",
                    i + 1
                ),
                "remove it: calls no rule matches are allowed anyway (inside the sandbox), and the `ask`/`deny` rules then keep working",
            );
        }
    }
    if e.network {
        f.warn(
            "network = true: commands and props may reach the network, and so send the workspace's contents out",
            "set network = false under [edges] unless the work needs the network",
        );
    }
    if f.clean() {
        let mut evidence = vec![
            "sandbox on".to_string(),
            format!("network {}", if e.network { "on" } else { "off" }),
        ];
        let mut all_limits = stage_limits;
        all_limits.extend(lead_limits.into_iter().map(|l| format!("{l} (lead)")));
        evidence.push(format!("budget: {}", all_limits.join(", ")));
        evidence.push(format!("{} rule(s)", e.rules.len()));
        f.ok(evidence.join("; "));
    }
}

fn collaboration(stage: &Stage, f: &mut Findings) {
    let names: BTreeSet<&str> = stage.actors.iter().map(|a| a.name.as_str()).collect();
    let cast = stage
        .actors
        .iter()
        .map(|a| a.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    for c in &stage.feedback.checks {
        if let Some(critic) = &c.critic
            && !names.contains(critic.as_str())
        {
            f.error(
                format!(
                    "check `{}` names critic `{critic}`, who is not in the cast ({cast})",
                    c.name
                ),
                format!("add an [[actor]] named `{critic}`, or name one of: {cast}"),
            );
        }
    }
    for a in &stage.actors {
        for cued in a.cues.iter().flatten() {
            if !names.contains(cued.as_str()) {
                f.error(
                    format!(
                        "`{}` may cue `{cued}`, who is not in the cast ({cast})",
                        a.name
                    ),
                    format!(
                        "remove `{cued}` from `{}`'s cues, or add it to the cast",
                        a.name
                    ),
                );
            }
        }
        if a.cues.is_some() && !has(a, "cue") {
            f.warn(
                format!(
                    "`{}` lists `cues` but has no `cue` prop, so it cannot cue anyone",
                    a.name
                ),
                format!("add \"cue\" to `{}`'s props, or remove its `cues`", a.name),
            );
        }
        if has(a, "cue") && a.cues.as_ref().is_some_and(|c| c.is_empty()) {
            f.warn(
                format!(
                    "`{}` has the `cue` prop but `cues = []`: it may cue nobody",
                    a.name
                ),
                format!(
                    "list the actors `{}` may cue, or remove \"cue\" from its props",
                    a.name
                ),
            );
        }
    }

    // Who performs: the lead, the critics, and whoever a performer can cue.
    let lead = stage.lead();
    let critics = critics(stage);
    let mut performs: BTreeSet<&str> = BTreeSet::new();
    performs.insert(lead.name.as_str());
    performs.extend(critics.iter().copied().filter(|c| names.contains(c)));
    loop {
        let before = performs.len();
        let cuers: Vec<&ActorConfig> = stage
            .actors
            .iter()
            .filter(|a| performs.contains(a.name.as_str()) && has(a, "cue"))
            .collect();
        for a in cuers {
            for b in &stage.actors {
                if b.name != a.name && a.cues.as_ref().is_none_or(|c| c.contains(&b.name)) {
                    performs.insert(b.name.as_str());
                }
            }
        }
        if performs.len() == before {
            break;
        }
    }
    for a in &stage.actors {
        if !performs.contains(a.name.as_str()) {
            f.warn(
                format!(
                    "`{}` never performs: it does not lead, no check names it as critic, and no actor that performs can cue it",
                    a.name
                ),
                format!(
                    "give `{}` the \"cue\" prop (listing `{}` in its `cues`, if it has that list), make `{}` a check's `critic`, or remove it",
                    lead.name, a.name, a.name
                ),
            );
        }
    }
    if f.clean() {
        if stage.actors.len() == 1 {
            f.ok(format!("one actor, `{}`: nothing to coordinate", lead.name));
        } else {
            let mut parts = vec![format!("`{}` leads", lead.name)];
            for a in stage.actors.iter().filter(|a| has(a, "cue")) {
                let reach: Vec<String> = stage
                    .actors
                    .iter()
                    .filter(|b| {
                        b.name != a.name && a.cues.as_ref().is_none_or(|c| c.contains(&b.name))
                    })
                    .map(|b| b.name.clone())
                    .collect();
                parts.push(format!("`{}` may cue {}", a.name, quoted(&reach)));
            }
            if !critics.is_empty() {
                let list: Vec<String> = critics.iter().map(|c| c.to_string()).collect();
                parts.push(format!("critics: {}", quoted(&list)));
            }
            f.ok(format!("{}; every actor performs", parts.join("; ")));
        }
    }
}

/// Whether `file` (relative to the workspace) stays inside it, lexically.
fn inside(file: &str) -> bool {
    let mut depth: i64 = 0;
    for c in Path::new(file).components() {
        match c {
            Component::Prefix(_) | Component::RootDir => return false,
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
        }
    }
    true
}

fn feedback(stage: &Stage, f: &mut Findings) {
    let checks = &stage.feedback.checks;
    if checks.is_empty() {
        f.warn(
            "no checks: nothing verifies the work, and nothing goes back to the actor to correct it",
            "add a [[feedback.check]], e.g. name = \"tests\" and command = \"cargo test --quiet\"",
        );
        return;
    }
    if stage.feedback.max_attempts == 1 {
        f.warn(
            "max_attempts = 1: a failed check ends the performance, with no second try to act on what it reported",
            "set max_attempts = 3 (or more) under [feedback]",
        );
    }
    let workspace = stage.workspace();
    let names: BTreeSet<&str> = stage.actors.iter().map(|a| a.name.as_str()).collect();
    for c in checks {
        let when = match c.on {
            improv_stage::CheckOn::Done => "when the actor is done",
            improv_stage::CheckOn::Write => "after every write",
        };
        if let Some(command) = &c.command {
            let found = programs(command, &workspace);
            let mut missing = Vec::new();
            let mut present = Vec::new();
            for p in found {
                match p {
                    Program::Found(name, path) => {
                        present.push(format!("`{name}` at {}", path.display()))
                    }
                    Program::Missing(name) => missing.push(name),
                }
            }
            if command.trim().is_empty() {
                f.error(
                    format!("check `{}` has an empty command: it can never pass", c.name),
                    "give it a command that passes (exit code 0) when the work is done",
                );
            } else if !missing.is_empty() {
                f.error(
                    format!(
                        "check `{}` runs {}, not found {}, so the check can never pass",
                        c.name,
                        quoted(&missing),
                        if missing.iter().any(|m| m.contains('/')) {
                            format!("in the workspace {}", workspace.display())
                        } else {
                            "on PATH".to_string()
                        }
                    ),
                    format!("install {}, or fix the check's command", quoted(&missing)),
                );
            } else {
                f.ok(format!(
                    "check `{}` runs `{command}` {when}{}{}",
                    c.name,
                    if present.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", present.join(", "))
                    },
                    c.timeout
                        .map(|t| format!(", timeout {}", duration(t)))
                        .unwrap_or_default()
                ));
            }
        } else if let Some(critic) = &c.critic {
            if c.on == improv_stage::CheckOn::Write {
                f.warn(
                    format!(
                        "critic check `{}` runs after every write: a whole performance of `{critic}` each time is slow and costly",
                        c.name
                    ),
                    format!("remove `on = \"write\"` from check `{}`", c.name),
                );
            }
            if c.rubric.as_deref().is_none_or(|r| r.trim().is_empty()) {
                f.warn(
                    format!("critic check `{}` has no rubric: `{critic}` is not told what to judge by", c.name),
                    format!("add `rubric = \"...\"` to check `{}`, e.g. \"Is the fix minimal and correct?\"", c.name),
                );
            } else if names.contains(critic.as_str()) {
                f.ok(format!(
                    "check `{}`: critic `{critic}` judges {when}",
                    c.name
                ));
            }
        } else if let Some(file) = &c.file {
            if !inside(file) {
                f.error(
                    format!(
                        "check `{}` looks at `{file}`, outside the workspace: the check refuses it, so it can never pass",
                        c.name
                    ),
                    "give a path relative to the workspace, without `..` above it",
                );
                continue;
            }
            if !c.exists && (c.contains.is_some() || c.matches.is_some() || c.schema.is_some()) {
                f.warn(
                    format!(
                        "check `{}` wants `{file}` absent (exists = false) yet asserts about its content, which is never read",
                        c.name
                    ),
                    "split it: one check that the file is absent, or drop `exists = false`",
                );
            }
            let mut ok = true;
            if let Some(schema) = &c.schema {
                let path = stage.dir.join(schema);
                let problem = match std::fs::read_to_string(&path) {
                    Err(e) => Some(format!("cannot be read ({e})")),
                    Ok(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                        Err(e) => Some(format!("is not JSON ({e})")),
                        Ok(json) => jsonschema::validator_for(&json)
                            .err()
                            .map(|e| format!("is not a valid JSON Schema ({e})")),
                    },
                };
                if let Some(problem) = problem {
                    ok = false;
                    f.error(
                        format!(
                            "check `{}`'s schema {} {problem}, so the check can never pass",
                            c.name,
                            path.display()
                        ),
                        "fix the schema file: a JSON Schema (2020-12) object such as {\"type\": \"object\", \"required\": [\"name\"]}",
                    );
                }
            }
            if ok {
                let mut what = vec![if c.exists {
                    format!("`{file}` exists")
                } else {
                    format!("`{file}` is absent")
                }];
                if let Some(t) = &c.contains {
                    what.push(format!("contains {t:?}"));
                }
                if let Some(m) = &c.matches {
                    what.push(format!("matches /{m}/"));
                }
                if let Some(s) = &c.schema {
                    what.push(format!("satisfies {}", s.display()));
                }
                f.ok(format!(
                    "check `{}` asserts {} {when}",
                    c.name,
                    what.join(", ")
                ));
            }
        } else {
            f.error(
                format!(
                    "check `{}` has neither `command`, `critic` nor `file`: it can never pass",
                    c.name
                ),
                "add `command`, `critic` (with `rubric`) or `file` to it",
            );
        }
    }
}
