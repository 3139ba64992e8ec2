//! The report as a terminal shows it: the six questions in order, each finding marked `✓`, `!`
//! or `✗` with its fix below it, and a closing count.

use crate::{Question, Report, Severity};
use std::fmt::Write;

const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[31m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

pub(crate) fn render(report: &Report, color: bool) -> String {
    let paint = |style: &str, text: &str| {
        if color {
            format!("{style}{text}{RESET}")
        } else {
            text.to_string()
        }
    };
    let mut out = format!(
        "{} {}\n",
        paint(BOLD, &format!("stage `{}`", report.stage)),
        paint(DIM, &format!("({})", report.path))
    );
    for (i, question) in Question::ALL.iter().enumerate() {
        let _ = writeln!(
            out,
            "\n{}",
            paint(BOLD, &format!("{}. {}", i + 1, question.title()))
        );
        for finding in report.answers(*question) {
            let (mark, style) = match finding.severity {
                Severity::Ok => ("✓", GREEN),
                Severity::Warning => ("!", YELLOW),
                Severity::Error => ("✗", RED),
            };
            let _ = writeln!(out, "  {} {}", paint(style, mark), finding.evidence);
            if let Some(fix) = &finding.fix {
                let _ = writeln!(out, "    {} {fix}", paint(DIM, "fix:"));
            }
        }
    }
    let (errors, warnings) = (
        report.count(Severity::Error),
        report.count(Severity::Warning),
    );
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let summary = match (errors, warnings) {
        (0, 0) => paint(GREEN, "no problems found"),
        (0, w) => paint(
            YELLOW,
            &format!("{}; the stage can run", plural(w, "warning")),
        ),
        (e, w) => paint(
            RED,
            &format!(
                "{}, {}: fix the errors before the stage runs",
                plural(e, "error"),
                plural(w, "warning")
            ),
        ),
    };
    let _ = writeln!(out, "\n{summary}");
    out
}
