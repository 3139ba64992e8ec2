//! The words that go back to actors: the director note after a failed attempt, the note after a
//! write broke a fast check, and the brief a critic is given. Every byte is paid for on every
//! later turn, so they stay short and carry only the failed checks.

use crate::{OUTPUT_LIMIT, Verdict, head};
use improv_kernel::Message;

/// How the note after a failed attempt opens (then the attempt's number).
const ATTEMPT_OPENING: &str = "Attempt ";
/// What the first line of the note after a failed attempt says, after its counts.
const ATTEMPT_FAILED: &str = " checks failed: ";
/// How the note after a write that broke a check opens.
const WRITE_OPENING: &str = "After your last change, ";

/// Whether `text` is a note of failing checks ([`note`] with a check failed, or [`write_note`]):
/// the actor's work does not pass yet. A model that constrains its own output (the embedded one)
/// reads it to make the actor act rather than answer; a hosted model reads it as any note.
pub fn is_failing_note(text: &str) -> bool {
    let first = text.lines().next().unwrap_or_default();
    (first.starts_with(ATTEMPT_OPENING) && first.contains(ATTEMPT_FAILED))
        || first.starts_with(WRITE_OPENING)
}

/// The director note after attempt `attempt` of `max_attempts`: the failed checks with what
/// they reported, and what to do next.
pub fn note(verdicts: &[Verdict], attempt: u32, max_attempts: u32) -> String {
    let failed: Vec<&Verdict> = verdicts.iter().filter(|v| !v.passed).collect();
    if failed.is_empty() {
        return format!(
            "All {} checks passed on attempt {attempt} of {max_attempts}.",
            verdicts.len()
        );
    }
    let names: Vec<&str> = failed.iter().map(|v| v.check.as_str()).collect();
    let mut out = format!(
        "{ATTEMPT_OPENING}{attempt} of {max_attempts}: {} of {}{ATTEMPT_FAILED}{}.\n",
        failed.len(),
        verdicts.len(),
        names.join(", ")
    );
    push_reports(&mut out, &failed);
    let left = max_attempts.saturating_sub(attempt);
    out.push('\n');
    if left == 0 {
        out.push_str("That was the last attempt.");
    } else {
        out.push_str(&format!(
            "Fix what they report, then say you are done: the checks run again ({left} attempt{} left).",
            if left == 1 { "" } else { "s" }
        ));
    }
    out
}

/// The note after a write when a check with `on = "write"` fails; `None` when all pass.
pub fn write_note(verdicts: &[Verdict]) -> Option<String> {
    let failed: Vec<&Verdict> = verdicts.iter().filter(|v| !v.passed).collect();
    if failed.is_empty() {
        return None;
    }
    let names: Vec<&str> = failed.iter().map(|v| v.check.as_str()).collect();
    let mut out = format!("{WRITE_OPENING}{} fails:\n", names.join(", "));
    push_reports(&mut out, &failed);
    out.push_str("\nFix this before you go on.");
    Some(out)
}

fn push_reports(out: &mut String, failed: &[&Verdict]) {
    for v in failed {
        let report = panics(&v.output).unwrap_or_else(|| v.output.trim_end().to_string());
        out.push_str(&format!("\n## {}\n", v.check));
        out.push_str(if report.is_empty() {
            "(no output)"
        } else {
            &report
        });
        out.push('\n');
    }
}

/// The panics in a test run's output, when it has any: each `panicked at FILE:LINE` line with
/// the message under it (the assertion, `left`/`right`), without the backtraces, test lists
/// and summaries around them. The file and line of the failed assertion and its values are what
/// an actor acts on; the rest is paid for on every later turn, and drowns a small model.
fn panics(output: &str) -> Option<String> {
    let mut kept = Vec::new();
    let mut inside = false;
    for line in output.lines() {
        if line.contains(" panicked at ") {
            inside = true;
        } else if inside && (line.trim().is_empty() || is_trailer(line)) {
            inside = false;
        }
        if inside {
            kept.push(line);
        }
    }
    (!kept.is_empty()).then(|| kept.join("\n"))
}

/// A line that ends a panic's message: the backtrace or the hint about it.
fn is_trailer(line: &str) -> bool {
    let line = line.trim_start();
    line.starts_with("stack backtrace:") || line.starts_with("note: ")
}

/// What a critic is told about the work: the task (the conversation's first director message)
/// and the performing actor's last words, each cut to a couple of KB.
pub fn brief(conversation: &[Message]) -> String {
    let task = conversation.iter().find_map(|m| match m {
        Message::User { text } if !text.trim().is_empty() => Some(text.trim()),
        _ => None,
    });
    let report = conversation.iter().rev().find_map(|m| match m {
        Message::Assistant { text, .. } if !text.trim().is_empty() => Some(text.trim()),
        _ => None,
    });
    format!(
        "The task: {}\nThe actor's report: {}",
        head(task.unwrap_or("(none given)"), OUTPUT_LIMIT),
        head(report.unwrap_or("(it said nothing)"), OUTPUT_LIMIT)
    )
}
