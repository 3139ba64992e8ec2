//! improv doctor: reads a stage and answers the six questions a director should ask before a
//! performance — are the capabilities complete, is the information relevant, is the goal clear,
//! are the edges reasonable, is the collaboration smooth, does the feedback close the loop —
//! each answer with the evidence found and, where something is off, a fix.
//!
//! A stage with no intent, with no budget at all, or with a check that can never pass has
//! errors ([`Report::has_errors`]): `improv doctor` exits non-zero on them, so CI can gate a
//! stage. [`examine`] reads only the stage; [`examine_here`], what `improv doctor` runs, also
//! asks whether this machine can perform it: every actor's model installed or set up.
//!
//! ```
//! let stage = improv_stage::Stage::parse(
//!     "[stage]\nintent = \"Say hello in hello.txt.\"\n[edges]\nmax_turns = 10\n",
//!     std::path::Path::new("stage.toml"),
//! )
//! .unwrap();
//! let report = improv_doctor::examine(&stage);
//! assert!(!report.has_errors());
//! println!("{}", report.render(false));
//! ```

mod command;
mod models;
mod questions;
mod render;

use improv_stage::Stage;
use serde::Serialize;

/// The six questions, in the order they are asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Question {
    /// Does each actor have the props its work needs?
    Capabilities,
    /// Is what goes into the actors' context there, and worth its size?
    Information,
    /// Is there an intent, and a check that says when it is met?
    Goal,
    /// Sandbox on, budgets set, no allow-all rule, network off?
    Edges,
    /// Does every named actor exist, and does every actor get to perform?
    Collaboration,
    /// Do checks exist, and can they run?
    Feedback,
}

impl Question {
    pub const ALL: [Question; 6] = [
        Question::Capabilities,
        Question::Information,
        Question::Goal,
        Question::Edges,
        Question::Collaboration,
        Question::Feedback,
    ];

    /// The question as the director asks it.
    pub fn title(self) -> &'static str {
        match self {
            Question::Capabilities => "Are the capabilities complete?",
            Question::Information => "Is the information relevant?",
            Question::Goal => "Is the goal clear?",
            Question::Edges => "Are the edges reasonable?",
            Question::Collaboration => "Is the collaboration smooth?",
            Question::Feedback => "Does the feedback close the loop?",
        }
    }
}

/// How much a finding matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// What holds, as evidence.
    Ok,
    /// Likely to waste a performance or weaken its edges; the stage still runs.
    Warning,
    /// The stage should not run as it is.
    Error,
}

/// One answer to a question: what was found and, unless it is fine, how to fix it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    pub question: Question,
    pub severity: Severity,
    pub evidence: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// What `improv doctor` found about a stage.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The stage's name.
    pub stage: String,
    /// The stage file.
    pub path: String,
    /// Every finding, grouped by question in the order of [`Question::ALL`].
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether any finding is an error: the stage should not run as it is.
    pub fn has_errors(&self) -> bool {
        self.count(Severity::Error) > 0
    }

    /// How many findings have `severity`.
    pub fn count(&self, severity: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity == severity)
            .count()
    }

    /// The findings that answer `question`.
    pub fn answers(&self, question: Question) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.question == question)
    }

    /// The report for a terminal: each question with its findings (`✓`, `!`, `✗`) and fixes,
    /// then a count. `color` adds ANSI colors.
    pub fn render(&self, color: bool) -> String {
        render::render(self, color)
    }
}

/// Examines `stage` and answers the six questions. Reads the context and schema files and looks
/// programs up on `PATH`; changes nothing.
pub fn examine(stage: &Stage) -> Report {
    examine_with(stage, false)
}

/// [`examine`], and whether this machine can perform the stage, under
/// [`Question::Capabilities`]: each actor's model installed (the embedded model, in the model
/// store) or set up (its API key, `base_url` or script found), and a model server at a loopback
/// address accepting connections. Contacts nothing else.
pub fn examine_here(stage: &Stage) -> Report {
    examine_with(stage, true)
}

fn examine_with(stage: &Stage, here: bool) -> Report {
    let mut findings = Vec::new();
    for question in Question::ALL {
        let mut found = questions::ask(stage, question);
        if here && question == Question::Capabilities {
            found.extend(models::check(stage));
        }
        found.sort_by_key(|f| std::cmp::Reverse(f.severity));
        findings.extend(found);
    }
    Report {
        stage: stage.stage.name.clone(),
        path: stage.path.display().to_string(),
        findings,
    }
}
