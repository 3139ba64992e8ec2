//! A stage that names the embedded model is told how to get it, in either build: with the
//! embedded model (the default), how to install the model file; without it (`cargo build
//! --no-default-features`), how to get a build that has it. Run both:
//! `cargo test -p improv-doctor --test all embedded::` and the same with `--no-default-features`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_doctor::{Question, Severity, examine_here};
use improv_stage::Stage;

#[test]
fn naming_the_embedded_model_says_how_to_get_it() {
    let tmp = tempfile::tempdir().unwrap();
    let text = "[stage]\nintent = \"Say hello.\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"local//nowhere/model.gguf\"\nprops = [\"read\"]\n";
    let path = tmp.path().join("stage.toml");
    std::fs::write(&path, text).unwrap();
    let report = examine_here(&Stage::parse(text, &path).unwrap());
    let rendered = report.render(false);
    let finding = report
        .answers(Question::Capabilities)
        .find(|f| {
            f.evidence
                .starts_with("`lead`'s model `local//nowhere/model.gguf`")
        })
        .unwrap_or_else(|| panic!("no finding about the lead's model in:\n{rendered}"));
    assert_eq!(finding.severity, Severity::Error, "{rendered}");
    let fix = finding.fix.as_deref().unwrap_or_default();
    if cfg!(feature = "embedded") {
        assert!(fix.contains("improv model import FILE"), "{rendered}");
    } else {
        assert!(
            fix.contains("built without the embedded model")
                && fix.contains("cargo install --path crates/improv"),
            "{rendered}"
        );
    }
}
