//! `examine_here`: can this machine perform the stage? Each actor's model set up as a
//! performance would (without loading it), and model servers at loopback addresses connected
//! to for real. The embedded model and the default model are tested through the binary
//! (crates/improv/tests/all/cli_rough_edges.rs), where the model store can be pointed elsewhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_doctor::{Finding, Question, Report, Severity, examine, examine_here};
use improv_stage::Stage;
use std::net::TcpListener;

fn stage(dir: &std::path::Path, actors: &str) -> Stage {
    let text = format!(
        "[stage]\nintent = \"Summarize the README in three lines.\"\n[edges]\nmax_turns = 5\n{actors}"
    );
    let path = dir.join("stage.toml");
    std::fs::write(&path, &text).unwrap();
    Stage::parse(&text, &path).unwrap()
}

fn capabilities(report: &Report, severity: Severity) -> Vec<&Finding> {
    report
        .answers(Question::Capabilities)
        .filter(|f| f.severity == severity)
        .collect()
}

#[test]
fn every_actor_model_is_set_up_or_an_error_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("ok.json"), r#"[{"say": "done"}]"#).unwrap();
    let s = stage(
        tmp.path(),
        r#"
[[actor]]
name = "lead"
model = "scripted/ok.json"
props = ["read"]
cues = ["a", "b", "c"]

[[actor]]
name = "a"
model = "scripted/nowhere.json"
props = ["read"]

[[actor]]
name = "b"
model = "compatible/qwen"
props = ["read"]

[[actor]]
name = "c"
model = "local//nowhere/model.gguf"
props = ["read"]
"#,
    );
    // The stage file alone says nothing about the machine.
    let plain = examine(&s);
    assert!(
        plain
            .findings
            .iter()
            .all(|f| !f.evidence.contains("model `")),
        "{}",
        plain.render(false)
    );

    let report = examine_here(&s);
    let text = report.render(false);
    let ok = capabilities(&report, Severity::Ok);
    assert!(
        ok.iter()
            .any(|f| f.evidence == "`lead` performs with `scripted/ok.json`"),
        "{text}"
    );
    let errors = capabilities(&report, Severity::Error);
    assert_eq!(errors.len(), 3, "{text}");
    let about = |who: &str| {
        errors
            .iter()
            .find(|f| f.evidence.starts_with(&format!("`{who}`'s model")))
            .unwrap_or_else(|| panic!("no error about `{who}` in:\n{text}"))
    };
    assert!(
        about("a").fix.as_deref().unwrap().contains("nowhere.json"),
        "{text}"
    );
    assert!(
        about("b").fix.as_deref().unwrap().contains("base_url"),
        "{text}"
    );
    // Without the embedded model, `c` is told how to get it (tests/all/embedded.rs).
    #[cfg(feature = "embedded")]
    let c = about("c");
    #[cfg(feature = "embedded")]
    assert!(
        c.evidence
            .contains("is not installed: /nowhere/model.gguf does not exist"),
        "{text}"
    );
    #[cfg(feature = "embedded")]
    let fix = c.fix.as_deref().unwrap();
    #[cfg(feature = "embedded")]
    assert!(
        fix.contains("improv model import FILE") && !fix.contains("scripts/"),
        "{fix}"
    );
    assert!(report.has_errors());
}

#[test]
fn a_model_server_on_this_machine_must_accept_connections() {
    let tmp = tempfile::tempdir().unwrap();
    let listening = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = listening.local_addr().unwrap().port();
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let down = closed.local_addr().unwrap().port();
    drop(closed);
    let s = stage(
        tmp.path(),
        &format!(
            r#"
[[actor]]
name = "lead"
model = "compatible/qwen"
base_url = "http://127.0.0.1:{up}/v1"
props = ["read"]
cues = ["helper"]

[[actor]]
name = "helper"
model = "ollama/llama3"
base_url = "http://localhost:{down}/v1"
props = ["read"]
"#
        ),
    );
    let report = examine_here(&s);
    let text = report.render(false);
    let warnings = capabilities(&report, Severity::Warning);
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(
        warnings[0].evidence.contains(&format!(
            "nothing accepts connections at http://localhost:{down}/v1, where `helper`'s model `ollama/llama3` is served"
        )),
        "{text}"
    );
    assert!(
        warnings[0].fix.as_deref().unwrap().contains("ollama serve"),
        "{text}"
    );
    assert!(!report.has_errors(), "{text}");
}
