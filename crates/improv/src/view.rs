//! The terminal views of the event stream: a human one (model text on stdout, everything else
//! on stderr) and `--json` (every event as one JSON line on stdout).

use improv_kernel::{Event, EventKind, ObserveError, Observer, Outcome};
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

/// Every event as one JSON line on stdout, flushed as it happens.
pub struct JsonLines;

impl Observer for JsonLines {
    fn observe(&self, event: &Event) -> Result<(), ObserveError> {
        let mut line = serde_json::to_vec(event).map_err(|e| ObserveError(e.to_string()))?;
        line.push(b'\n');
        let mut out = std::io::stdout().lock();
        // A reader that went away (a closed pipe) must not stop the performance: the log still
        // records everything.
        let _ = out.write_all(&line).and_then(|_| out.flush());
        Ok(())
    }
}

struct Style {
    color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
    fn dim(&self, t: &str) -> String {
        self.paint("2", t)
    }
    fn bold(&self, t: &str) -> String {
        self.paint("1", t)
    }
    fn green(&self, t: &str) -> String {
        self.paint("32", t)
    }
    fn red(&self, t: &str) -> String {
        self.paint("31", t)
    }
    fn yellow(&self, t: &str) -> String {
        self.paint("33", t)
    }
}

#[derive(Default)]
struct TerminalState {
    /// The model's text is mid-line on stdout.
    mid_line: bool,
    /// Text deltas were shown for the current reply (a replayed log has none).
    streamed: bool,
    intent_shown: bool,
    id: String,
}

/// The human view: streams the model's text and shows each tool call as one line.
pub struct Terminal {
    style: Style,
    state: Mutex<TerminalState>,
    /// A cued actor's sub-performance: every line goes to stderr, indented under the cue and
    /// prefixed with the actor's name, so it never mixes with the lead's answer on stdout.
    cued: bool,
    /// `-v`: details that are the same on every run (what the sandbox enforces) are shown.
    verbose: bool,
}

impl Terminal {
    pub fn new(verbose: bool) -> Self {
        let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        Terminal {
            style: Style { color },
            state: Mutex::new(TerminalState::default()),
            cued: false,
            verbose,
        }
    }

    /// The view of a cued actor's sub-performance.
    pub fn cued(verbose: bool) -> Self {
        Terminal {
            cued: true,
            ..Terminal::new(verbose)
        }
    }

    fn render(&self, event: &Event, st: &mut TerminalState) -> Vec<Line> {
        let s = &self.style;
        let mut lines = Vec::new();
        match &event.kind {
            EventKind::PerformanceStarted {
                performance,
                stage,
                model,
                resumed,
                ..
            } => {
                let verb = if *resumed { "resuming" } else { "performance" };
                st.id = performance.clone();
                lines.push(Line::Err(
                    s.dim(&format!("▶ {verb} {performance} · stage {stage} · {model}")),
                ));
            }
            EventKind::DirectorNote { text } => {
                let who = if st.intent_shown {
                    "director"
                } else {
                    "intent"
                };
                st.intent_shown = true;
                lines.push(Line::Err(format!(
                    "{} {}",
                    s.bold(&format!("{who} ›")),
                    text
                )));
            }
            EventKind::OutsideMessage { from, text } => lines.push(Line::Err(format!(
                "{} {}",
                s.bold(&format!("{from} (outside) ›")),
                text
            ))),
            EventKind::TextDelta { text } => {
                st.streamed = true;
                st.mid_line = !text.ends_with('\n');
                lines.push(Line::Out(text.clone()));
            }
            EventKind::ModelReplied { text, .. } => {
                if !st.streamed && !text.is_empty() {
                    lines.push(Line::Out(text.clone()));
                    st.mid_line = !text.ends_with('\n');
                }
                if st.mid_line {
                    lines.push(Line::Out("\n".into()));
                    st.mid_line = false;
                }
                st.streamed = false;
            }
            EventKind::ToolCallStarted {
                name, arguments, ..
            } => lines.push(Line::Err(format!(
                "  {} {} {}",
                s.dim("▸"),
                s.bold(name),
                summarize_arguments(arguments)
            ))),
            EventKind::ToolCallFinished {
                name,
                ok,
                output,
                duration_ms,
                ..
            } => {
                let first = output.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                let mark = if *ok { s.green("✓") } else { s.red("✗") };
                lines.push(Line::Err(format!(
                    "  {mark} {name} {} {}",
                    s.dim(&format_ms(*duration_ms)),
                    s.dim(&clip(first, 100))
                )));
            }
            EventKind::ModelRetry {
                attempt,
                delay_ms,
                reason,
            } => lines.push(Line::Err(s.yellow(&format!(
                "  ↻ retry {attempt} in {:.1} s: {reason}",
                *delay_ms as f64 / 1000.0
            )))),
            EventKind::BudgetWarning {
                budget,
                used,
                limit,
            } => lines.push(Line::Err(s.yellow(&format!(
                "  ⚠ {} at {:.0}%",
                budget.describe(*used, *limit).replace(" spent", ""),
                100.0 * used / limit
            )))),
            EventKind::PerformanceFinished {
                outcome,
                reason,
                spent,
                ..
            } => {
                if st.mid_line {
                    lines.push(Line::Out("\n".into()));
                    st.mid_line = false;
                }
                let word = match outcome {
                    Outcome::Done => s.green("done"),
                    Outcome::Converged => s.green("converged"),
                    Outcome::Exhausted => s.red("exhausted"),
                    Outcome::Stopped => s.yellow("stopped"),
                    Outcome::Interrupted => s.yellow("interrupted"),
                    Outcome::Failed => s.red("failed"),
                };
                lines.push(Line::Err(format!(
                    "■ {word} · {} turns · {} in / {} out tokens · ${:.4} · {:.1} s · {}",
                    spent.turns,
                    spent.input_tokens,
                    spent.output_tokens,
                    spent.cost_usd,
                    spent.elapsed_ms as f64 / 1000.0,
                    st.id
                )));
                if !matches!(outcome, Outcome::Done | Outcome::Converged) {
                    lines.push(Line::Err(format!("  {reason}")));
                }
                if *outcome == Outcome::Interrupted {
                    lines.push(Line::Err(format!(
                        "  continue with: improv run --resume {}",
                        st.id
                    )));
                }
            }
            EventKind::PolicyDecision {
                prop,
                subject,
                decision,
                rule,
                ..
            } => {
                // Plain allows are in the log; on the terminal they would drown the actual work.
                if *decision != improv_kernel::event::Decision::Allow {
                    let text = format!("  ⚖ {prop} {decision}: {} ({rule})", clip(subject, 80));
                    lines.push(Line::Err(if decision.approved() {
                        s.dim(&text)
                    } else {
                        s.yellow(&text)
                    }));
                }
            }
            EventKind::SandboxStarted {
                enforced,
                description,
            } => lines.push(Line::Err(match (*enforced, self.verbose) {
                (true, true) => s.dim(&format!("  {description}")),
                // The same paragraph on every run is noise; `-v` shows it.
                (true, false) => s.dim("  sandbox on (-v for what it enforces)"),
                // A warning: why it is off is worth reading every time.
                (false, _) => s.yellow(&format!("  {description}")),
            })),
            EventKind::CheckFinished {
                check,
                passed,
                output,
                duration_ms,
                on,
                ..
            } => {
                let mark = if *passed {
                    s.green("✓")
                } else {
                    s.red("✗")
                };
                let first = output.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                let when = if on == "write" {
                    " (after a write)"
                } else {
                    ""
                };
                lines.push(Line::Err(format!(
                    "  {mark} check {}{when} {} {}",
                    s.bold(check),
                    s.dim(&format_ms(*duration_ms)),
                    s.dim(&clip(first, 100))
                )));
            }
            EventKind::AttemptFinished {
                attempt,
                max_attempts,
                passed,
                failed,
            } => lines.push(Line::Err(if *passed {
                s.green(&format!(
                    "◆ attempt {attempt}/{max_attempts}: every check passed"
                ))
            } else {
                s.yellow(&format!(
                    "◆ attempt {attempt}/{max_attempts}: failed {}",
                    failed.join(", ")
                ))
            })),
            EventKind::CueStarted { to, task, .. } => lines.push(Line::Err(format!(
                "  {} cue {} {}",
                s.dim("↪"),
                s.bold(to),
                s.dim(&clip(task, 100))
            ))),
            EventKind::CueFinished {
                to, outcome, spent, ..
            } => lines.push(Line::Err(s.dim(&format!(
                "  ↩ {to} {} · {} turns · {:.1} s",
                outcome.as_str(),
                spent.turns,
                spent.elapsed_ms as f64 / 1000.0
            )))),
            EventKind::BoardNote { author, text } => lines.push(Line::Err(format!(
                "  {} board ({author}) {}",
                s.dim("✎"),
                clip(text, 100)
            ))),
            EventKind::Compacted {
                messages,
                tokens_before,
                tokens_after,
                ..
            } => lines.push(Line::Err(s.dim(&format!(
                "  ⇊ compacted {messages} messages: {tokens_before} → {tokens_after} tokens"
            )))),
            EventKind::RoutineStarted {
                routine, within, ..
            } if within.is_none() => lines.push(Line::Err(format!(
                "  {} routine {} (no model calls)",
                s.dim("⟳"),
                s.bold(routine)
            ))),
            EventKind::RoutineFinished {
                routine,
                deviation: Some(why),
                ..
            } => lines.push(Line::Err(s.dim(&format!(
                "  ⟳ routine {routine} handed back: {}",
                clip(why, 100)
            )))),
            EventKind::RoutineStarted { .. }
            | EventKind::RoutineStep { .. }
            | EventKind::RoutineFinished { .. }
            | EventKind::TurnStarted { .. }
            | EventKind::Usage { .. } => {}
        }
        lines
    }
}

enum Line {
    Out(String),
    Err(String),
}

impl Observer for Terminal {
    fn observe(&self, event: &Event) -> Result<(), ObserveError> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.cued {
            // Whole replies only: streamed pieces of two actors would interleave.
            if matches!(event.kind, EventKind::TextDelta { .. }) {
                return Ok(());
            }
            let who = event.actor.as_deref().unwrap_or("cued");
            let bar = self.style.dim(&format!("    │ {who}"));
            for line in self.render(event, &mut st) {
                let (Line::Out(t) | Line::Err(t)) = line;
                let mut err = std::io::stderr().lock();
                for l in t.lines().filter(|l| !l.trim().is_empty()) {
                    let _ = writeln!(err, "{bar} {}", l.trim_start());
                }
            }
            st.mid_line = false;
            return Ok(());
        }
        for line in self.render(event, &mut st) {
            // The terminal is a view: a closed one must not stop the performance.
            match line {
                Line::Out(t) => {
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(t.as_bytes()).and_then(|_| out.flush());
                }
                Line::Err(t) => {
                    if st.mid_line {
                        let _ = writeln!(std::io::stdout().lock());
                        st.mid_line = false;
                    }
                    let _ = writeln!(std::io::stderr().lock(), "{t}");
                }
            }
        }
        Ok(())
    }
}

/// After a performance with checks: how many attempts it took and the last verdicts.
pub fn summary(summary: &improv_perform::Summary) {
    if summary.attempts == 0 {
        return;
    }
    let s = Style {
        color: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let verdicts: Vec<String> = summary
        .verdicts
        .iter()
        .map(|(check, passed, _)| {
            if *passed {
                format!("{} {check}", s.green("✓"))
            } else {
                format!("{} {check}", s.red("✗"))
            }
        })
        .collect();
    eprintln!(
        "  {} attempt{} · last checks: {}",
        summary.attempts,
        if summary.attempts == 1 { "" } else { "s" },
        verdicts.join("  ")
    );
}

/// The part of a tool call's arguments worth a glance: the command, the path, the pattern.
fn summarize_arguments(arguments: &str) -> String {
    let value: serde_json::Value = match serde_json::from_str(arguments) {
        Ok(v) => v,
        Err(_) => return clip(arguments, 80),
    };
    for key in ["command", "path", "pattern"] {
        if let Some(s) = value.get(key).and_then(|v| v.as_str()) {
            return clip(s, 80);
        }
    }
    clip(&value.to_string(), 80)
}

fn clip(s: &str, max: usize) -> String {
    let one_line = s.replace('\n', " ⏎ ");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max).collect();
        format!("{cut}…")
    }
}

fn format_ms(ms: f64) -> String {
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1000.0)
    }
}

/// How a command ends when its stdout's reader went away (`improv log --json | head -1`): a
/// normal end for a command-line tool, so it exits quietly with 0, as ripgrep does. (Rust
/// ignores SIGPIPE, so the write fails with `BrokenPipe` instead of killing the process; a
/// performance keeps going and logging when its terminal view is gone.)
pub const CLOSED_STDOUT: u8 = 0;

/// A command's output could not be written: stdout's reader went away. Only writes to stdout
/// become this ([`stdout_error`]), so a broken pipe to a child process stays an error.
#[derive(Debug)]
pub struct ClosedStdout;

impl std::fmt::Display for ClosedStdout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed by its reader")
    }
}

impl std::error::Error for ClosedStdout {}

/// The error of a failed write to stdout: [`ClosedStdout`] when its reader went away.
pub fn stdout_error(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        anyhow::Error::new(ClosedStdout)
    } else {
        anyhow::Error::new(e).context("cannot write to stdout")
    }
}

/// Whether a command failed only because stdout's reader went away.
pub fn is_closed_stdout(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ClosedStdout>().is_some()
}

/// The backstop for `println!` in the subcommands other crates implement (`improv ledger`,
/// `improv memory`): it panics when stdout's reader went away; end quietly as
/// [`CLOSED_STDOUT`] instead of printing a panic and a backtrace.
pub fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        // std's own message for a failed `print!`; the error text is not localized.
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(CLOSED_STDOUT.into());
        }
        default(info);
    }));
}

/// Prints an error: stage-file errors as a report with the offending line, others with their
/// chain of causes.
pub fn report_error(e: &anyhow::Error) {
    if let Some(diagnostic) = e.downcast_ref::<improv_stage::StageError>() {
        let mut out = String::new();
        let handler = if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
            miette::GraphicalReportHandler::new()
        } else {
            miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::unicode_nocolor())
        };
        if handler
            .render_report(&mut out, &Uncoded::new(diagnostic))
            .is_ok()
        {
            eprint!("{out}");
            return;
        }
    }
    let said = crate::causes::distinct(e.as_ref());
    eprintln!("error: {}", said.join("\n  caused by: "));
}

/// A diagnostic shown without its code: `improv::stage::invalid` on a line of its own tells a
/// user nothing the message does not.
struct Uncoded<'a> {
    inner: &'a dyn miette::Diagnostic,
    related: Vec<Uncoded<'a>>,
    /// The causes the message does not already say.
    causes: Option<Box<crate::causes::Cause>>,
}

impl<'a> Uncoded<'a> {
    fn new(inner: &'a dyn miette::Diagnostic) -> Self {
        Uncoded {
            inner,
            causes: crate::causes::below(inner),
            related: inner
                .related()
                .map(|r| r.map(Uncoded::new).collect())
                .unwrap_or_default(),
        }
    }
}

impl std::fmt::Display for Uncoded<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self.inner, f)
    }
}

impl std::fmt::Debug for Uncoded<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.inner, f)
    }
}

impl std::error::Error for Uncoded<'_> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.causes
            .as_deref()
            .map(|c| c as &(dyn std::error::Error + 'static))
    }
}

impl miette::Diagnostic for Uncoded<'_> {
    fn severity(&self) -> Option<miette::Severity> {
        self.inner.severity()
    }
    fn help<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.inner.help()
    }
    fn url<'b>(&'b self) -> Option<Box<dyn std::fmt::Display + 'b>> {
        self.inner.url()
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.inner.source_code()
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        self.inner.labels()
    }
    fn related<'b>(&'b self) -> Option<Box<dyn Iterator<Item = &'b dyn miette::Diagnostic> + 'b>> {
        if self.related.is_empty() {
            return None;
        }
        Some(Box::new(
            self.related.iter().map(|r| r as &dyn miette::Diagnostic),
        ))
    }
    fn diagnostic_source(&self) -> Option<&dyn miette::Diagnostic> {
        self.inner.diagnostic_source()
    }
}
