//! `improv doctor` on stage files written to temp dirs: each of the six questions, answered
//! with the evidence found and a fix where something is off.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_doctor::{Finding, Question, Report, Severity, examine};
use improv_stage::Stage;

/// A stage directory with `files` in it.
struct Dir {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
}

impl Dir {
    fn new(files: &[(&str, &str)]) -> Dir {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        for (name, text) in files {
            std::fs::write(root.join(name), text).unwrap();
        }
        Dir { _tmp: tmp, root }
    }

    fn examine(&self, text: &str) -> Report {
        let path = self.root.join("stage.toml");
        std::fs::write(&path, text).unwrap();
        examine(&Stage::parse(text, &path).unwrap())
    }
}

fn examine_text(text: &str) -> Report {
    Dir::new(&[]).examine(text)
}

/// The findings of `severity` that answer `question`.
fn found(report: &Report, question: Question, severity: Severity) -> Vec<&Finding> {
    report
        .answers(question)
        .filter(|f| f.severity == severity)
        .collect()
}

/// The one finding of `severity` for `question` whose evidence contains `text`.
fn one<'a>(report: &'a Report, question: Question, severity: Severity, text: &str) -> &'a Finding {
    let hits: Vec<&Finding> = found(report, question, severity)
        .into_iter()
        .filter(|f| f.evidence.contains(text))
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "one {severity:?} about {text:?} under {question:?}, in:\n{}",
        report.render(false)
    );
    hits[0]
}

const GOOD: &str = r#"
[stage]
name = "fix-the-build"
intent = "Make `sh -c true` pass without changing the tests."

[context]
files = ["AGENTS.md"]

[[actor]]
name = "lead"
model = "openai/gpt-5-mini"
props = ["read", "write", "edit", "bash", "grep", "find", "cue"]
cues = ["helper"]

[[actor]]
name = "helper"
props = ["read", "grep"]

[[actor]]
name = "reviewer"
props = ["read", "grep", "find"]

[edges]
max_turns = 60
max_cost_usd = 2.0
timeout = "20m"

[[edges.rule]]
command = "git push*"
decision = "ask"

[feedback]
max_attempts = 4

[[feedback.check]]
name = "tests"
command = "sh -c 'exit 0' && sh -c true | cat"

[[feedback.check]]
name = "review"
critic = "reviewer"
rubric = "Is the fix minimal and correct?"
"#;

#[test]
fn a_well_set_stage_answers_every_question_with_evidence_and_no_problem() {
    let d = Dir::new(&[("AGENTS.md", "Run the tests.\n")]);
    let report = d.examine(GOOD);
    assert!(!report.has_errors(), "{}", report.render(false));
    assert_eq!(
        report.count(Severity::Warning),
        0,
        "{}",
        report.render(false)
    );
    for q in Question::ALL {
        assert!(
            !found(&report, q, Severity::Ok).is_empty(),
            "{q:?} has no evidence:\n{}",
            report.render(false)
        );
    }
    one(
        &report,
        Question::Information,
        Severity::Ok,
        "context file `AGENTS.md`: 15 bytes (~4 tokens)",
    );
    one(
        &report,
        Question::Information,
        Severity::Ok,
        "`lead`'s system prompt: ",
    );
    one(
        &report,
        Question::Goal,
        Severity::Ok,
        "2 check(s) say when it is met: `tests`, `review`",
    );
    one(
        &report,
        Question::Edges,
        Severity::Ok,
        "budget: max_turns 60, max_cost_usd $2.00, timeout 20m",
    );
    one(
        &report,
        Question::Collaboration,
        Severity::Ok,
        "`lead` may cue `helper`",
    );
    let tests = one(
        &report,
        Question::Feedback,
        Severity::Ok,
        "check `tests` runs",
    );
    assert!(tests.evidence.contains("`sh` at /"), "{}", tests.evidence);
    assert!(tests.evidence.contains("`cat` at /"), "{}", tests.evidence);
    assert_eq!(report.stage, "fix-the-build");
}

#[test]
fn no_intent_is_an_error_and_no_check_a_warning() {
    let report = examine_text("[edges]\nmax_turns = 10\n");
    assert!(report.has_errors());
    let intent = one(&report, Question::Goal, Severity::Error, "no intent");
    assert!(
        intent.fix.as_deref().unwrap().contains("intent = "),
        "{intent:?}"
    );
    one(
        &report,
        Question::Goal,
        Severity::Warning,
        "no check says when the goal is met",
    );
    let fb = one(&report, Question::Feedback, Severity::Warning, "no checks");
    assert!(
        fb.fix.as_deref().unwrap().contains("[[feedback.check]]"),
        "{fb:?}"
    );
    // A vague intent is a warning, not an error.
    let report = examine_text("[stage]\nintent = \"Do it.\"\n[edges]\nmax_turns = 10\n");
    one(&report, Question::Goal, Severity::Warning, "2 word(s)");
}

#[test]
fn no_budget_at_all_is_an_error() {
    let report = examine_text("[stage]\nintent = \"Summarize the README in three lines.\"\n");
    let e = one(
        &report,
        Question::Edges,
        Severity::Error,
        "no budget at all",
    );
    assert!(e.fix.as_deref().unwrap().contains("max_turns"), "{e:?}");
    assert!(report.has_errors());
    // The lead's own budget is a budget.
    let report = examine_text(
        "[stage]\nintent = \"Summarize the README in three lines.\"\n[[actor]]\nname = \"lead\"\nmax_turns = 5\n",
    );
    assert!(
        found(&report, Question::Edges, Severity::Error).is_empty(),
        "{}",
        report.render(false)
    );
}

#[test]
fn a_budget_that_never_runs_out_and_an_uncapped_priced_model_are_warned_of() {
    let report = examine_text(
        "[stage]\nintent = \"Summarize the README in three lines.\"\n\
         [[actor]]\nname = \"lead\"\nmodel = \"anthropic/claude-sonnet-4-5\"\n\
         [edges]\nmax_input_tokens = 100000\n",
    );
    one(
        &report,
        Question::Edges,
        Severity::Warning,
        "sets no turn, tool-call or time limit",
    );
    let cost = one(
        &report,
        Question::Edges,
        Severity::Warning,
        "no `max_cost_usd`",
    );
    assert!(
        cost.evidence.contains("lead (anthropic/claude-sonnet-4-5)"),
        "{cost:?}"
    );
    assert!(!report.has_errors());
}

#[test]
fn the_sandbox_off_the_network_on_and_an_allow_all_rule_are_warned_of() {
    let report = examine_text(
        "[stage]\nintent = \"Summarize the README in three lines.\"\n\
         [edges]\nmax_turns = 10\nsandbox = \"off\"\nnetwork = true\n\
         [[edges.rule]]\ncommand = \"*\"\ndecision = \"allow\"\n\
         [[edges.rule]]\ncommand = \"git push*\"\ndecision = \"ask\"\n\
         [[edges.rule]]\nprop = \"write\"\npath = \"src/**\"\ndecision = \"allow\"\n",
    );
    let warnings = found(&report, Question::Edges, Severity::Warning);
    assert_eq!(warnings.len(), 3, "{}", report.render(false));
    one(
        &report,
        Question::Edges,
        Severity::Warning,
        "sandbox = \"off\": shell commands run",
    );
    one(
        &report,
        Question::Edges,
        Severity::Warning,
        "network = true",
    );
    let rule = one(
        &report,
        Question::Edges,
        Severity::Warning,
        "rule 1 under [[edges.rule]] allows every command",
    );
    assert!(
        rule.fix.as_deref().unwrap().starts_with("remove it"),
        "{rule:?}"
    );
}

#[test]
fn missing_capabilities_are_found_from_the_checks_the_intent_and_the_cast() {
    let report = examine_text(
        r#"
[stage]
intent = "Fix the failing test and run the suite."

[[actor]]
name = "lead"
props = ["read", "grep", "cue", "board"]

[[actor]]
name = "reviewer"
props = ["grep", "write"]

[edges]
max_turns = 10

[[feedback.check]]
name = "tests"
command = "sh -c true"

[[feedback.check]]
name = "review"
critic = "reviewer"
rubric = "Is it right?"
"#,
    );
    let q = Question::Capabilities;
    let bash = one(
        &report,
        q,
        Severity::Warning,
        "check `tests` runs `sh -c true`, but the lead `lead` has no `bash`",
    );
    assert_eq!(bash.fix.as_deref(), Some("add \"bash\" to `lead`'s props"));
    one(
        &report,
        q,
        Severity::Warning,
        "cannot change it (no write, edit or bash)",
    );
    one(
        &report,
        q,
        Severity::Warning,
        "critic `reviewer` has no `read` prop",
    );
    one(
        &report,
        q,
        Severity::Warning,
        "critic `reviewer` can change the work (`write`)",
    );
    one(
        &report,
        q,
        Severity::Warning,
        "the intent speaks of `test`, `run` but no actor has `bash`",
    );
    // The reviewer can write, so someone in the cast can change files: no warning about that.
    assert!(
        found(&report, q, Severity::Warning)
            .iter()
            .all(|f| !f.evidence.contains("the intent speaks of `fix`")),
        "{}",
        report.render(false)
    );
}

#[test]
fn cue_and_board_for_a_lone_actor_are_warned_of() {
    let report = examine_text(
        "[stage]\nintent = \"Summarize the README in three lines.\"\n\
         [[actor]]\nname = \"solo\"\nprops = [\"read\", \"cue\", \"board\"]\n[edges]\nmax_turns = 10\n",
    );
    one(
        &report,
        Question::Capabilities,
        Severity::Warning,
        "has the `cue` prop, but the cast has nobody else to cue",
    );
    one(
        &report,
        Question::Capabilities,
        Severity::Warning,
        "has the `board` prop, but it performs alone",
    );
    one(
        &report,
        Question::Collaboration,
        Severity::Ok,
        "one actor, `solo`",
    );
}

#[test]
fn context_files_are_sized_and_missing_or_big_ones_flagged() {
    let big = "x".repeat(30_000);
    let d = Dir::new(&[("AGENTS.md", "Be brief.\n"), ("BIG.md", &big)]);
    let report = d.examine(
        "[stage]\nintent = \"Summarize the README in three lines.\"\n\
         [context]\nfiles = [\"AGENTS.md\", \"NOTES.md\", \"BIG.md\"]\n[edges]\nmax_turns = 10\n",
    );
    let q = Question::Information;
    one(
        &report,
        q,
        Severity::Ok,
        "context file `AGENTS.md`: 10 bytes (~3 tokens)",
    );
    let missing = one(
        &report,
        q,
        Severity::Warning,
        "context file `NOTES.md` does not exist",
    );
    assert!(
        missing
            .fix
            .as_deref()
            .unwrap()
            .contains("remove it from `files`"),
        "{missing:?}"
    );
    one(
        &report,
        q,
        Severity::Warning,
        "context file `BIG.md` is 30,000 bytes (~7,500 tokens): only its first 20 KB",
    );

    // The default files (AGENTS.md, README.md) are included when present: their absence is fine.
    let report = examine_text(
        "[stage]\nintent = \"Summarize the README in three lines.\"\n[edges]\nmax_turns = 10\n",
    );
    assert!(
        found(&report, q, Severity::Warning).is_empty(),
        "{}",
        report.render(false)
    );
    one(&report, q, Severity::Ok, "no context file found");
}

#[test]
fn an_actor_nobody_can_reach_and_cues_without_the_prop_are_found() {
    let report = examine_text(
        r#"
[stage]
intent = "Summarize the README in three lines."

[[actor]]
name = "lead"
props = ["read", "cue"]
cues = ["researcher"]

[[actor]]
name = "researcher"
props = ["read"]
cues = ["lead"]

[[actor]]
name = "forgotten"
props = ["read"]

[[actor]]
name = "deep"
props = ["read"]

[edges]
max_turns = 10
"#,
    );
    let q = Question::Collaboration;
    let lost = one(&report, q, Severity::Warning, "`forgotten` never performs");
    assert!(
        lost.fix
            .as_deref()
            .unwrap()
            .contains("give `lead` the \"cue\" prop"),
        "{lost:?}"
    );
    one(&report, q, Severity::Warning, "`deep` never performs");
    one(
        &report,
        q,
        Severity::Warning,
        "`researcher` lists `cues` but has no `cue` prop",
    );
    assert!(
        found(&report, q, Severity::Warning)
            .iter()
            .all(|f| !f.evidence.contains("`researcher` never")),
        "the lead can cue the researcher:\n{}",
        report.render(false)
    );
}

#[test]
fn an_actor_reachable_through_a_cued_actor_performs() {
    let report = examine_text(
        r#"
[stage]
intent = "Summarize the README in three lines."

[[actor]]
name = "lead"
props = ["read", "cue"]
cues = ["middle"]

[[actor]]
name = "middle"
props = ["read", "cue"]
cues = ["last"]

[[actor]]
name = "last"
props = ["read"]

[edges]
max_turns = 10
"#,
    );
    assert!(
        found(&report, Question::Collaboration, Severity::Warning).is_empty(),
        "{}",
        report.render(false)
    );
}

#[test]
fn checks_that_can_never_pass_are_errors() {
    let d = Dir::new(&[
        ("bad.schema.json", r#"{"type": 12}"#),
        ("notjson.schema.json", "{ type: object }"),
    ]);
    let report = d.examine(
        r#"
[stage]
intent = "Write out.json with the summary."

[[actor]]
name = "lead"
props = ["read", "write", "bash"]

[[actor]]
name = "judge"
props = ["read"]

[edges]
max_turns = 10

[feedback]
max_attempts = 1

[[feedback.check]]
name = "lint"
command = "improv-no-such-linter --strict src && ./scripts/missing.sh"

[[feedback.check]]
name = "shape"
file = "out.json"
schema = "bad.schema.json"

[[feedback.check]]
name = "shape2"
file = "out.json"
schema = "notjson.schema.json"

[[feedback.check]]
name = "escape"
file = "../elsewhere/out.json"

[[feedback.check]]
name = "gone"
file = "tmp.log"
exists = false
contains = "x"

[[feedback.check]]
name = "taste"
critic = "judge"
"#,
    );
    let q = Question::Feedback;
    assert!(report.has_errors());
    let lint = one(
        &report,
        q,
        Severity::Error,
        "check `lint` runs `improv-no-such-linter`, `./scripts/missing.sh`",
    );
    assert!(lint.evidence.contains("can never pass"), "{lint:?}");
    one(
        &report,
        q,
        Severity::Error,
        "bad.schema.json is not a valid JSON Schema",
    );
    one(
        &report,
        q,
        Severity::Error,
        "notjson.schema.json is not JSON",
    );
    one(
        &report,
        q,
        Severity::Error,
        "check `escape` looks at `../elsewhere/out.json`, outside the workspace",
    );
    one(&report, q, Severity::Warning, "max_attempts = 1");
    one(
        &report,
        q,
        Severity::Warning,
        "check `gone` wants `tmp.log` absent",
    );
    one(
        &report,
        q,
        Severity::Warning,
        "critic check `taste` has no rubric",
    );
    assert_eq!(
        found(&report, q, Severity::Error).len(),
        4,
        "{}",
        report.render(false)
    );
}

#[test]
fn the_report_renders_for_a_terminal_and_as_json() {
    let report = examine_text("[stage]\nname = \"demo\"\n");
    let text = report.render(false);
    let titles = [
        "1. Are the capabilities complete?",
        "2. Is the information relevant?",
        "3. Is the goal clear?",
        "4. Are the edges reasonable?",
        "5. Is the collaboration smooth?",
        "6. Does the feedback close the loop?",
    ];
    let mut at = 0;
    for t in titles {
        let found = text[at..]
            .find(t)
            .unwrap_or_else(|| panic!("{t} in order in:\n{text}"));
        at += found;
    }
    assert!(text.starts_with("stage `demo` ("), "{text}");
    assert!(text.contains("  ✗ the stage has no intent"), "{text}");
    assert!(text.contains("    fix: add `intent = "), "{text}");
    assert!(text.contains("  ! no checks"), "{text}");
    assert!(
        text.trim_end()
            .ends_with("2 errors, 2 warnings: fix the errors before the stage runs"),
        "{text}"
    );
    assert!(!text.contains('\x1b'));
    let colored = report.render(true);
    assert!(
        colored.contains("\x1b[31m✗\x1b[0m the stage has no intent"),
        "{colored}"
    );

    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["stage"], "demo");
    let goal_error = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["question"] == "goal" && f["severity"] == "error")
        .unwrap();
    assert!(
        goal_error["evidence"]
            .as_str()
            .unwrap()
            .contains("no intent")
    );
    assert!(goal_error["fix"].as_str().unwrap().contains("intent"));
    let ok = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["severity"] == "ok")
        .unwrap();
    assert!(ok.get("fix").is_none(), "{ok}");
}
