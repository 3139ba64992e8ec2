//! Parses real stage files: the DESIGN example, the `improv init` template, and broken files
//! whose rendered diagnostics must point at the right line and carry a hint.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_stage::{Decision, Stage, StageError};
use miette::{GraphicalReportHandler, GraphicalTheme};
use std::path::Path;
use std::time::Duration;

const DESIGN_EXAMPLE: &str = r#"[stage]
name = "fix-the-build"
intent = "Make `cargo test` pass without changing the tests."

[context]
files = ["AGENTS.md", "README.md"]      # included when present

[[actor]]
name = "lead"                            # the first actor leads unless another says lead = true
role = "You are a careful Rust engineer."
model = "openai/gpt-5-mini"              # provider/model; "local/smollm2-135m" is the embedded default
props = ["read", "write", "edit", "bash", "grep", "find", "cue", "board"]

[[actor]]
name = "reviewer"
role = "You review diffs for correctness. You never edit files."
model = "anthropic/claude-sonnet-4-5"
props = ["read", "grep", "find"]

[edges]
workspace = "."
network = false
max_turns = 60
max_cost_usd = 2.0
timeout = "20m"

[[edges.rule]]
command = "git push*"
decision = "ask"                         # allow | deny | ask

[feedback]
max_attempts = 4

[[feedback.check]]
name = "tests"
command = "cargo test --quiet"

[[feedback.check]]
name = "review"
critic = "reviewer"
rubric = "Is the fix minimal and correct?"
"#;

fn render(err: &StageError) -> String {
    let mut out = String::new();
    GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
        .with_width(400)
        .render_report(&mut out, err)
        .unwrap();
    out
}

/// Parses `text` as `/proj/stage.toml`, expecting a problem whose first label is at
/// `line:column`; returns the rendered report after checking it names the file, shows the
/// offending line and has a hint.
fn fails_at(text: &str, line: usize, column: usize) -> String {
    let err = Stage::parse(text, Path::new("/proj/stage.toml")).unwrap_err();
    let StageError::Invalid(inv) = &err else {
        panic!("expected an invalid stage, got {err:?}");
    };
    assert_eq!(
        inv.location,
        format!("/proj/stage.toml:{line}:{column}"),
        "{err}"
    );
    let report = render(&err);
    assert!(
        report.contains(&format!("[/proj/stage.toml:{line}:{column}]")),
        "report does not name the file and position:\n{report}"
    );
    let source_line = text.lines().nth(line - 1).unwrap();
    assert!(
        report.contains(&format!("{line} │ {source_line}")),
        "report does not show line {line}:\n{report}"
    );
    assert!(report.contains("help:"), "report has no hint:\n{report}");
    report
}

#[test]
fn the_design_example_parses_into_its_values() {
    let stage = Stage::parse(DESIGN_EXAMPLE, Path::new("/proj/stage.toml")).unwrap();
    assert_eq!(stage.path, Path::new("/proj/stage.toml"));
    assert_eq!(stage.dir, Path::new("/proj"));
    assert_eq!(stage.stage.name, "fix-the-build");
    assert_eq!(
        stage.stage.intent.as_deref(),
        Some("Make `cargo test` pass without changing the tests.")
    );
    assert_eq!(stage.context.files, ["AGENTS.md", "README.md"]);

    assert_eq!(stage.actors.len(), 2);
    let lead = stage.lead();
    assert_eq!(lead.name, "lead");
    assert_eq!(
        lead.role.as_deref(),
        Some("You are a careful Rust engineer.")
    );
    assert_eq!(lead.model.as_deref(), Some("openai/gpt-5-mini"));
    assert_eq!(
        lead.props,
        [
            "read", "write", "edit", "bash", "grep", "find", "cue", "board"
        ]
    );
    assert!(!lead.lead);
    let reviewer = stage.actor("reviewer").unwrap();
    assert_eq!(
        reviewer.model.as_deref(),
        Some("anthropic/claude-sonnet-4-5")
    );
    assert_eq!(reviewer.props, ["read", "grep", "find"]);
    assert_eq!(reviewer.base_url, None);

    let e = &stage.edges;
    assert_eq!(e.workspace.as_deref(), Some(Path::new(".")));
    assert!(!e.network);
    assert_eq!(e.max_turns, Some(60));
    assert_eq!(e.max_cost_usd, Some(2.0));
    assert_eq!(e.timeout, Some(Duration::from_secs(20 * 60)));
    assert_eq!(e.tool_timeout, None);
    assert_eq!(e.rules.len(), 1);
    assert_eq!(e.rules[0].command.as_deref(), Some("git push*"));
    assert_eq!(e.rules[0].prop, None);
    assert_eq!(e.rules[0].decision, Decision::Ask);
    assert_eq!(stage.workspace(), Path::new("/proj"));

    assert_eq!(stage.feedback.max_attempts, 4);
    let checks = &stage.feedback.checks;
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0].name, "tests");
    assert_eq!(checks[0].command.as_deref(), Some("cargo test --quiet"));
    assert_eq!(checks[1].critic.as_deref(), Some("reviewer"));
    assert_eq!(
        checks[1].rubric.as_deref(),
        Some("Is the fix minimal and correct?")
    );
    assert!(stage.prices.is_empty());
}

#[test]
fn the_init_template_parses_and_performs_with_the_embedded_model() {
    let template = improv_stage::init_template();
    let stage = Stage::parse(template, Path::new("/proj/stage.toml")).unwrap();
    assert_eq!(stage.lead().model.as_deref(), Some("local/smollm2-135m"));
    assert_eq!(stage.lead().props, improv_stage::CORE_PROPS);
    assert!(stage.edges.max_turns.is_some());
    assert!(template.contains("openai/") && template.contains("anthropic/"));
    assert!(template.contains("OPENAI_API_KEY") && template.contains("ANTHROPIC_API_KEY"));
    // Every key a stage file may have is documented in it.
    for key in [
        "[stage]",
        "name",
        "intent",
        "[context]",
        "files",
        "[[actor]]",
        "role",
        "model",
        "props",
        "lead",
        "base_url",
        "api_key_env",
        "max_output_tokens",
        "[edges]",
        "workspace",
        "network",
        "max_turns",
        "max_input_tokens",
        "max_cost_usd",
        "max_tool_calls",
        "timeout",
        "tool_timeout",
        "[[edges.rule]]",
        "sandbox",
        "hidden",
        "read_only",
        "redact",
        "loop_limit",
        "prop",
        "command",
        "path",
        "decision",
        "[feedback]",
        "max_attempts",
        "converge_on",
        "[[feedback.check]]",
        "critic",
        "rubric",
        "on",
        "[prices.",
        "cached_input",
        "[ledger]",
        "auto_settle",
        "stable_writes",
        "stable_after",
    ] {
        assert!(
            template.contains(key),
            "the template does not document `{key}`"
        );
    }
}

#[test]
fn the_init_template_with_every_example_uncommented_parses() {
    // Uncomment the lines that are commented-out TOML (`# key = ...`, `# [table]`).
    let mut text = String::new();
    for line in improv_stage::init_template().lines() {
        let body = line.strip_prefix("# ").unwrap_or(line);
        let is_toml = body.starts_with('[')
            || body
                .split_once(" = ")
                .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
        if line.starts_with("# ") && is_toml && !body.starts_with("model = ") {
            text.push_str(body);
        } else {
            text.push_str(line);
        }
        text.push('\n');
    }
    // The lead with `lead = true` uncommented still leaves one lead.
    let stage = Stage::parse(&text, Path::new("/proj/stage.toml")).unwrap();
    assert_eq!(stage.actors.len(), 2);
    assert_eq!(stage.feedback.checks.len(), 3);
    assert_eq!(stage.feedback.converge_on, improv_stage::ConvergeOn::Done);
    assert_eq!(
        stage.feedback.checks[2].file.as_deref(),
        Some("report.json")
    );
    assert_eq!(stage.mcp.len(), 1);
    assert_eq!(stage.mcp[0].name, "fs");
    assert_eq!(stage.lead().cues, Some(vec!["reviewer".to_string()]));
    assert_eq!(stage.edges.cue_depth, 2);
    assert_eq!(stage.context.compact_at, Some(60000));
    assert_eq!(stage.edges.rules.len(), 2);
    assert_eq!(stage.edges.sandbox, improv_stage::SandboxMode::On);
    assert_eq!(stage.edges.hidden.as_ref().map(Vec::len), Some(8));
    assert_eq!(stage.edges.read_only, Some(vec![".git".to_string()]));
    assert_eq!(stage.edges.redact, ["ghp_[A-Za-z0-9]{36}"]);
    assert_eq!(stage.edges.loop_limit, 3);
    assert_eq!(stage.prices["compatible/my-model"].cached_input, Some(0.05));
    assert_eq!(
        stage.ledger,
        improv_stage::LedgerConfig {
            auto_settle: false,
            stable_writes: Some(20),
            stable_after: Some(Duration::from_secs(600)),
        }
    );
    assert_eq!(
        stage.feedback.checks[0].timeout,
        Some(Duration::from_secs(600))
    );
}

#[test]
fn an_unknown_key_suggests_the_closest() {
    let text = "[[actor]]\nnmae = \"lead\"\n";
    let report = fails_at(text, 2, 1);
    assert!(report.contains("unknown key `nmae`"), "{report}");
    assert!(report.contains("did you mean `name`?"), "{report}");
    assert!(report.contains("role"), "lists the valid keys:\n{report}");
}

#[test]
fn an_unknown_table_suggests_the_closest() {
    let report = fails_at("[actors]\nname = \"x\"\n", 1, 2);
    assert!(report.contains("did you mean `actor`?"), "{report}");
}

#[test]
fn a_model_without_a_provider_lists_the_providers() {
    let text = "[[actor]]\nname = \"lead\"\nmodel = \"gpt-5-mini\"\n";
    let report = fails_at(text, 3, 9);
    assert!(report.contains("does not name its provider"), "{report}");
    assert!(report.contains("\"openai/gpt-5-mini\""), "{report}");
    assert!(
        report.contains("openai, openai-responses, anthropic, compatible, ollama, local, scripted"),
        "{report}"
    );
}

#[test]
fn an_unknown_provider_suggests_the_closest() {
    let text = "[[actor]]\nmodel = \"antropic/claude-sonnet-4-5\"\n";
    let report = fails_at(text, 2, 9);
    assert!(
        report.contains("did you mean `anthropic/claude-sonnet-4-5`?"),
        "{report}"
    );
}

#[test]
fn duplicate_actor_names_point_at_both() {
    let text = "[[actor]]\nname = \"lead\"\n\n[[actor]]\nname = \"lead\"\n";
    let report = fails_at(text, 5, 8);
    assert!(report.contains("two actors are named `lead`"), "{report}");
    assert!(report.contains("first one"), "{report}");
    assert!(report.contains("2 │ name = \"lead\""), "{report}");
}

#[test]
fn two_leads_are_refused() {
    let text = "[[actor]]\nname = \"a\"\nlead = true\n\n[[actor]]\nname = \"b\"\nlead = true\n";
    let report = fails_at(text, 7, 8);
    assert!(report.contains("two actors say `lead = true`"), "{report}");
    assert!(report.contains("first lead"), "{report}");
}

#[test]
fn an_unknown_prop_lists_the_props() {
    let text = "[[actor]]\nname = \"lead\"\nprops = [\"read\", \"bsh\"]\n";
    let report = fails_at(text, 3, 18);
    assert!(report.contains("unknown prop `bsh`"), "{report}");
    assert!(report.contains("did you mean `bash`?"), "{report}");
    assert!(
        report.contains("read, write, edit, bash, grep, find, cue, board"),
        "{report}"
    );
}

#[test]
fn an_unknown_prop_in_a_rule_is_refused() {
    let text = "[edges]\n[[edges.rule]]\nprop = \"wirte\"\ndecision = \"deny\"\n";
    let report = fails_at(text, 3, 8);
    assert!(report.contains("did you mean `write`?"), "{report}");
}

#[test]
fn zero_turns_are_refused() {
    let report = fails_at("[edges]\nmax_turns = 0\n", 2, 13);
    assert!(report.contains("`max_turns` is 0"), "{report}");
}

#[test]
fn a_negative_cost_is_refused() {
    let report = fails_at("[edges]\nmax_turns = 5\nmax_cost_usd = -1.5\n", 3, 16);
    assert!(
        report.contains("`max_cost_usd` must be a positive amount"),
        "{report}"
    );
}

#[test]
fn a_bad_timeout_shows_the_forms_a_duration_takes() {
    let report = fails_at("[edges]\ntimeout = \"20 minutes-ish\"\n", 2, 11);
    assert!(report.contains("`timeout` is not a duration"), "{report}");
    assert!(report.contains("\"1h30m\""), "{report}");
}

#[test]
fn durations_read_as_people_write_them() {
    for (text, want) in [
        ("20m", Duration::from_secs(1200)),
        ("90s", Duration::from_secs(90)),
        ("1h30m", Duration::from_secs(5400)),
        ("500ms", Duration::from_millis(500)),
    ] {
        let stage = Stage::parse(
            &format!("[edges]\ntool_timeout = \"{text}\"\n"),
            Path::new("stage.toml"),
        )
        .unwrap();
        assert_eq!(stage.edges.tool_timeout, Some(want), "{text}");
    }
}

#[test]
fn a_check_without_command_or_critic_is_refused() {
    let text = "[feedback]\n\n[[feedback.check]]\nname = \"tests\"\nrubric = \"good?\"\n";
    let report = fails_at(text, 3, 1);
    assert!(
        report.contains("has neither `command`, `critic` nor `file`"),
        "{report}"
    );
}

#[test]
fn file_checks_actor_budgets_cues_and_mcp_servers_parse() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("out.schema.json"), "{}").unwrap();
    let text = r#"
[[actor]]
name = "lead"
props = ["read", "cue", "fs", "docs.search"]
cues = ["helper"]

[[actor]]
name = "helper"
max_turns = 5
max_cost_usd = 0.5
timeout = "2m"

[edges]
cue_depth = 1

[[feedback.check]]
name = "report"
file = "out.json"
contains = "total"
matches = '"total":\s*\d+'
schema = "out.schema.json"
on = "write"

[[props.mcp]]
name = "fs"
command = "npx"
args = ["server-filesystem", "."]

[[props.mcp]]
name = "docs"
url = "http://127.0.0.1:9/mcp"
timeout = "30s"
"#;
    let stage = Stage::parse(text, &dir.path().join("stage.toml")).unwrap();
    let helper = stage.actor("helper").unwrap();
    assert_eq!(helper.budget.max_turns, Some(5));
    assert_eq!(helper.budget.timeout, Some(Duration::from_secs(120)));
    assert_eq!(
        stage.lead().cues.as_deref(),
        Some(&["helper".to_string()][..])
    );
    assert_eq!(stage.edges.cue_depth, 1);
    let check = &stage.feedback.checks[0];
    assert_eq!(check.file.as_deref(), Some("out.json"));
    assert!(check.exists);
    assert_eq!(check.on, improv_stage::CheckOn::Write);
    assert_eq!(check.schema, Some(dir.path().join("out.schema.json")));
    assert_eq!(stage.mcp.len(), 2);
    assert_eq!(stage.mcp[1].timeout, Some(Duration::from_secs(30)));
}

#[test]
fn cues_outside_the_cast_mcp_without_command_and_a_missing_schema_are_refused() {
    let text = "[[actor]]\nname = \"lead\"\ncues = [\"helpr\"]\n\n[[actor]]\nname = \"helper\"\n";
    let report = fails_at(text, 3, 9);
    assert!(report.contains("did you mean `helper`"), "{report}");
    let text = "[[props.mcp]]\nname = \"fs\"\n";
    let report = fails_at(text, 1, 1);
    assert!(report.contains("neither `command` nor `url`"), "{report}");
    let text = "[[feedback.check]]\nname = \"x\"\nfile = \"a.json\"\nschema = \"nope.json\"\n";
    let report = fails_at(text, 4, 10);
    assert!(report.contains("does not exist"), "{report}");
}

#[test]
fn a_critic_outside_the_cast_is_refused() {
    let text = "[[actor]]\nname = \"lead\"\n\n[[actor]]\nname = \"reviewer\"\n\n\
                [[feedback.check]]\nname = \"review\"\ncritic = \"reveiwer\"\n";
    let report = fails_at(text, 9, 10);
    assert!(report.contains("did you mean `reviewer`?"), "{report}");
}

#[test]
fn a_decision_outside_allow_deny_ask_is_refused() {
    let text = "[[edges.rule]]\ncommand = \"rm *\"\ndecision = \"never\"\n";
    let report = fails_at(text, 3, 12);
    assert!(report.contains("unknown value `never`"), "{report}");
    assert!(report.contains("allow, deny, ask"), "{report}");
}

#[test]
fn a_rule_without_a_decision_says_what_to_add() {
    let report = fails_at("[[edges.rule]]\ncommand = \"rm *\"\n", 1, 1);
    assert!(report.contains("missing key `decision`"), "{report}");
    assert!(report.contains("add `decision = \"allow\"`"), "{report}");
}

#[test]
fn a_toml_syntax_error_points_at_it() {
    let report = fails_at("[stage]\nname = \"unclosed\n", 2, 17);
    assert!(report.contains("improv init"), "{report}");
}

#[test]
fn every_problem_in_a_file_is_reported() {
    let text = "[[actor]]\nprops = [\"reed\"]\n\n[edges]\nmax_turns = 0\ntimeout = \"soon\"\n";
    let err = Stage::parse(text, Path::new("stage.toml")).unwrap_err();
    let StageError::Invalid(inv) = &err else {
        panic!("{err:?}");
    };
    assert_eq!(inv.location, "stage.toml:2:10");
    let more: Vec<&str> = inv.more().iter().map(|m| m.location.as_str()).collect();
    assert_eq!(more, ["stage.toml:5:13", "stage.toml:6:11"]);
    let report = render(&err);
    assert!(report.contains("`max_turns` is 0"), "{report}");
    assert!(report.contains("`timeout` is not a duration"), "{report}");
}

#[test]
fn a_missing_stage_file_says_to_run_init() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Stage::load(tmp.path()).unwrap_err();
    assert!(matches!(err, StageError::Missing { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "no stage.toml in {}; run `improv init` to write one",
            tmp.path().display()
        )
    );
    // A file named otherwise is not a missing stage.toml: the error names it.
    let other = tmp.path().join("other.toml");
    let err = Stage::load(&other).unwrap_err();
    assert!(matches!(err, StageError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains("other.toml"), "{err}");
}

#[test]
fn load_reads_a_directory_or_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("stage.toml");
    std::fs::write(&path, DESIGN_EXAMPLE).unwrap();
    let from_dir = Stage::load(tmp.path()).unwrap();
    let from_file = Stage::load(&path).unwrap();
    assert_eq!(from_dir, from_file);
    assert_eq!(from_dir.path, path);
    assert_eq!(from_dir.dir, tmp.path());
    assert_eq!(from_dir.workspace(), tmp.path());
}

#[test]
fn a_stage_without_actors_gets_one_default_lead() {
    let stage = Stage::parse(
        "[stage]\nintent = \"hi\"\n",
        Path::new("/proj/x/stage.toml"),
    )
    .unwrap();
    assert_eq!(stage.stage.name, "x", "named after its directory");
    assert_eq!(stage.actors.len(), 1);
    let lead = stage.lead();
    assert_eq!(lead.name, "lead");
    assert_eq!(lead.model, None);
    assert_eq!(lead.props, improv_stage::CORE_PROPS);
    assert_eq!(stage.context.files, ["AGENTS.md", "README.md"]);
    assert_eq!(stage.feedback.max_attempts, 3);

    let default = Stage::default_in(Path::new("/proj/x"));
    assert_eq!(default.actors, stage.actors);
    assert_eq!(default.stage.name, "x");
    assert_eq!(default.stage.intent, None);
    assert_eq!(default.workspace(), Path::new("/proj/x"));
}

#[test]
fn lead_true_picks_the_lead_and_unnamed_actors_get_names() {
    let text = "[[actor]]\nmodel = \"openai/a\"\n\n[[actor]]\nmodel = \"openai/b\"\nlead = true\n";
    let stage = Stage::parse(text, Path::new("stage.toml")).unwrap();
    assert_eq!(stage.lead().model.as_deref(), Some("openai/b"));
    assert_eq!(stage.actors[0].name, "lead");
    assert_eq!(stage.actors[1].name, "actor2");
    assert_eq!(stage.dir, Path::new("."));
}

#[test]
fn the_workspace_is_relative_to_the_stage() {
    let text = "[edges]\nworkspace = \"./src\"\n";
    let stage = Stage::parse(text, Path::new("/proj/stage.toml")).unwrap();
    assert_eq!(stage.workspace(), Path::new("/proj/src"));
    let text = "[edges]\nworkspace = \"/elsewhere\"\n";
    let stage = Stage::parse(text, Path::new("/proj/stage.toml")).unwrap();
    assert_eq!(stage.workspace(), Path::new("/elsewhere"));
}

#[test]
fn edges_become_the_kernels_budget() {
    let text = "[edges]\nmax_turns = 7\nmax_input_tokens = 1000\nmax_output_tokens = 200\n\
                max_cost_usd = 1\ntimeout = \"1h30m\"\n";
    let budget = Stage::parse(text, Path::new("stage.toml"))
        .unwrap()
        .budget();
    assert_eq!(
        budget,
        improv_kernel::Budget {
            max_turns: Some(7),
            max_input_tokens: Some(1000),
            max_output_tokens: Some(200),
            max_cost_usd: Some(1.0),
            timeout: Some(Duration::from_secs(5400)),
            max_tool_calls: None,
        }
    );
    assert_eq!(
        Stage::default_in(Path::new(".")).budget(),
        improv_kernel::Budget::default()
    );
}

#[test]
fn prices_are_read_per_model() {
    let text = "[prices.\"compatible/m\"]\ninput = 0.5\noutput = 1.5\n";
    let stage = Stage::parse(text, Path::new("stage.toml")).unwrap();
    let p = stage.prices["compatible/m"];
    assert_eq!((p.input, p.output, p.cached_input), (0.5, 1.5, None));
    fails_at("[prices.\"compatible/m\"]\ninput = -1\noutput = 1\n", 2, 9);
    fails_at("[prices.\"compatible/m\"]\ninput = 1\noutptu = 1\n", 3, 1);
}

#[test]
fn the_default_system_prompt_is_short_and_says_how_to_act() {
    let tmp = tempfile::tempdir().unwrap();
    let stage = Stage::default_in(tmp.path());
    let ws = tmp.path().join("a-fairly-long-workspace-directory-name");
    let prompt = stage.system_prompt(stage.lead(), &ws);
    assert!(prompt.len() < 600, "{} bytes:\n{prompt}", prompt.len());
    assert!(prompt.starts_with(improv_stage::prompt::DEFAULT_ROLE));
    assert!(prompt.contains("`a-fairly-long-workspace-directory-name`"));
    assert!(
        !prompt.contains(&tmp.path().display().to_string()),
        "no absolute path for the model to copy"
    );
    assert!(prompt.contains("relative"));
    assert!(prompt.contains("props"));
    assert!(prompt.contains("summary"));
    assert!(!prompt.contains("# file:"));
}

#[test]
fn the_system_prompt_carries_the_role_and_the_context_files_that_exist() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("AGENTS.md"),
        "Run `make check` before you finish.\n",
    )
    .unwrap();
    let big = "x".repeat(30 * 1024);
    std::fs::write(tmp.path().join("BIG.md"), &big).unwrap();
    let text = "[context]\nfiles = [\"AGENTS.md\", \"MISSING.md\", \"BIG.md\"]\n\n\
                [[actor]]\nname = \"lead\"\nrole = \"You are a careful Rust engineer.\"\n";
    std::fs::write(tmp.path().join("stage.toml"), text).unwrap();
    let stage = Stage::load(tmp.path()).unwrap();
    let prompt = stage.system_prompt(stage.lead(), &stage.workspace());
    assert!(
        prompt.starts_with("You are a careful Rust engineer.\n"),
        "{prompt}"
    );
    assert!(prompt.contains("# file: AGENTS.md\nRun `make check` before you finish.\n"));
    assert!(!prompt.contains("MISSING.md"));
    assert!(prompt.contains("# file: BIG.md\n"));
    assert!(
        prompt.contains(&format!("its {} bytes", big.len())),
        "notes the cut"
    );
    let kept = prompt.lines().find(|l| l.starts_with("xxx")).unwrap();
    assert_eq!(kept.len(), 20 * 1024);
}

#[test]
fn the_sandbox_and_path_edges_parse_with_their_defaults() {
    let stage = Stage::parse("", Path::new("/proj/stage.toml")).unwrap();
    let e = &stage.edges;
    assert_eq!(e.sandbox, improv_stage::SandboxMode::On);
    assert_eq!((&e.hidden, &e.read_only), (&None, &None));
    assert!(e.redact.is_empty());
    assert_eq!(e.loop_limit, improv_stage::DEFAULT_LOOP_LIMIT);
    assert_eq!(Stage::default_in(Path::new("/proj")).edges, *e);

    let text = "[edges]\nsandbox = \"off\"\nhidden = [\"secrets/**\", \"*.key\"]\n\
                read_only = []\nredact = ['tok-[0-9a-f]{8}']\nloop_limit = 5\n";
    let stage = Stage::parse(text, Path::new("/proj/stage.toml")).unwrap();
    let e = &stage.edges;
    assert_eq!(e.sandbox, improv_stage::SandboxMode::Off);
    assert_eq!(
        e.hidden.as_deref(),
        Some(&["secrets/**".to_string(), "*.key".to_string()][..])
    );
    assert_eq!(e.read_only.as_deref(), Some(&[][..]));
    assert_eq!(e.redact, ["tok-[0-9a-f]{8}"]);
    assert_eq!(e.loop_limit, 5);
}

#[test]
fn a_sandbox_neither_on_nor_off_is_pointed_at() {
    let report = fails_at("[edges]\nsandbox = \"of\"\n", 2, 11);
    assert!(report.contains("neither \"on\" nor \"off\""), "{report}");
    assert!(report.contains("sandbox = \"off\""), "{report}");
}

#[test]
fn a_broken_glob_is_pointed_at() {
    let report = fails_at("[edges]\nhidden = [\".env\", \"a[b\"]\n", 2, 19);
    assert!(
        report.contains("`hidden` has a glob that does not parse"),
        "{report}"
    );
    let report = fails_at("[edges]\nread_only = [\"{x\"]\n", 2, 14);
    assert!(report.contains("`read_only` has a glob"), "{report}");
}

#[test]
fn a_broken_redact_pattern_is_pointed_at() {
    let report = fails_at("[edges]\nredact = ['ok', '(unclosed']\n", 2, 17);
    assert!(
        report.contains("a `redact` pattern is not a regular expression"),
        "{report}"
    );
    assert!(report.contains("unclosed"), "{report}");
    let report = fails_at("[edges]\nredact = ['']\n", 2, 11);
    assert!(report.contains("a `redact` pattern is empty"), "{report}");
}

#[test]
fn a_loop_limit_below_two_is_pointed_at() {
    for (text, n) in [("0", 0), ("1", 1)] {
        let report = fails_at(&format!("[edges]\nloop_limit = {text}\n"), 2, 14);
        assert!(report.contains(&format!("`loop_limit` is {n}")), "{report}");
        assert!(report.contains("at least 2"), "{report}");
    }
}

#[test]
fn the_ledger_section_is_checked() {
    let stage = Stage::parse(
        "[ledger]\nauto_settle = true\nstable_writes = 5\nstable_after = \"90s\"\n",
        Path::new("/proj/stage.toml"),
    )
    .unwrap();
    assert!(stage.ledger.auto_settle);
    assert_eq!(stage.ledger.stable_writes, Some(5));
    assert_eq!(stage.ledger.stable_after, Some(Duration::from_secs(90)));
    let err = Stage::parse(
        "[ledger]\nstable_writes = 0\n",
        Path::new("/proj/stage.toml"),
    )
    .unwrap_err();
    assert!(err.to_string().contains("stage.toml:2:"), "{err}");
    assert!(
        Stage::parse(
            "[ledger]\nauto_setle = true\n",
            Path::new("/proj/stage.toml")
        )
        .is_err()
    );
}
