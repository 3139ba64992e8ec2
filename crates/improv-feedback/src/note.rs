//! The words that go back to actors: the director note after a failed attempt, the note after a
//! write broke a fast check, and the brief a critic is given. Every byte is paid for on every
//! later turn, so they stay short and carry only the failed checks.

use crate::{OUTPUT_LIMIT, Verdict, head};
use improv_kernel::Message;

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
        "Attempt {attempt} of {max_attempts}: {} of {} checks failed: {}.\n",
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
    let mut out = format!("After your last change, {} fails:\n", names.join(", "));
    push_reports(&mut out, &failed);
    out.push_str("\nFix this before you go on.");
    Some(out)
}

fn push_reports(out: &mut String, failed: &[&Verdict]) {
    for v in failed {
        let report = v.output.trim_end();
        out.push_str(&format!("\n## {}\n", v.check));
        out.push_str(if report.is_empty() {
            "(no output)"
        } else {
            report
        });
        out.push('\n');
    }
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
