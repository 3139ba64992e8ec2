//! Skills found on disk, summed up for the context, read through the `skill` prop by the real
//! kernel loop; and AGENTS.md files along a path.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

use improv_kernel::{Actor, Message, Performance, ScriptedModel, ScriptedTurn};
use improv_skills::{SkillProp, Source, agents_files, discover, estimate_tokens};
use std::fs;
use std::path::Path;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

fn write(path: &Path, text: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// A stage with two good skills, three broken ones, and a user folder with one more skill and
/// one that the stage shadows.
fn setup() -> (tempfile::TempDir, tempfile::TempDir) {
    let stage = tempfile::tempdir().unwrap();
    let user = tempfile::tempdir().unwrap();
    let s = stage.path().join("skills");
    write(
        &s.join("pdf/SKILL.md"),
        "---\nname: pdf\ndescription: Fill and merge PDF forms.\n---\n# PDF\nRun `scripts/fill.py FORM DATA`.\n",
    );
    write(&s.join("pdf/scripts/fill.py"), "print('filled')\n");
    write(
        &s.join("release/SKILL.md"),
        "---\nname: release\ndescription: >\n  Cut a release:\n  tag, changelog, publish.\n---\nSteps: tag, then publish.\n",
    );
    write(&s.join("nofront/SKILL.md"), "# Just a body\n");
    write(
        &s.join("badyaml/SKILL.md"),
        "---\nname: [unclosed\ndescription: x\n---\nbody\n",
    );
    write(&s.join("nodesc/SKILL.md"), "---\nname: nodesc\n---\nbody\n");
    write(&s.join("not-a-skill/README.md"), "no SKILL.md here\n");
    write(
        &user.path().join("pdf/SKILL.md"),
        "---\nname: pdf\ndescription: The user's own pdf skill.\n---\nOther.\n",
    );
    write(
        &user.path().join("notes/SKILL.md"),
        "---\nname: notes\ndescription: Keep meeting notes.\n---\nWrite notes in notes/.\n",
    );
    (stage, user)
}

#[test]
fn discovery_keeps_good_skills_and_names_the_broken_files() {
    let (stage, user) = setup();
    let found = discover(stage.path(), &["skills".into()], Some(user.path()));
    let names: Vec<(&str, Source)> = found
        .skills
        .iter()
        .map(|s| (s.name.as_str(), s.source))
        .collect();
    assert_eq!(
        names,
        [
            ("pdf", Source::Stage),
            ("release", Source::Stage),
            ("notes", Source::User)
        ]
    );
    assert_eq!(
        found.get("release").unwrap().description,
        "Cut a release: tag, changelog, publish."
    );
    assert_eq!(
        found.get("pdf").unwrap().description,
        "Fill and merge PDF forms."
    );

    let w = found.warnings.join("\n");
    assert_eq!(found.warnings.len(), 4, "{w}");
    for file in ["nofront/SKILL.md", "badyaml/SKILL.md", "nodesc/SKILL.md"] {
        let line = found
            .warnings
            .iter()
            .find(|l| l.contains(file))
            .unwrap_or_else(|| panic!("no warning for {file}: {w}"));
        assert!(line.ends_with("the skill is skipped"), "{line}");
    }
    assert!(w.contains("no `description`"), "{w}");
    assert!(w.contains("not valid YAML"), "{w}");
    assert!(
        w.contains(&format!(
            "{}: skill `pdf` is also in",
            user.path().join("pdf/SKILL.md").display()
        )),
        "{w}"
    );
}

#[test]
fn the_context_has_names_and_descriptions_only() {
    let (stage, user) = setup();
    let found = discover(stage.path(), &["skills".into()], Some(user.path()));
    let context = found.context();
    assert_eq!(
        context,
        "Skills (read one with the `skill` prop before you follow it):\n\
         - pdf: Fill and merge PDF forms.\n\
         - release: Cut a release: tag, changelog, publish.\n\
         - notes: Keep meeting notes.\n"
    );
    assert!(
        !context.contains("fill.py"),
        "bodies stay out of the context"
    );
    println!(
        "skills context: {} bytes for {} skills",
        context.len(),
        found.skills.len()
    );
    assert!(
        discover(stage.path(), &["nowhere".into()], None)
            .context()
            .is_empty()
    );
}

#[test]
fn the_listing_prices_each_skill() {
    let (stage, user) = setup();
    let found = discover(stage.path(), &["skills".into()], Some(user.path()));
    let rows = found.listing();
    let pdf = &rows[0];
    assert_eq!(pdf.name, "pdf");
    assert_eq!(pdf.path, stage.path().join("skills/pdf/SKILL.md"));
    assert_eq!(
        pdf.context_tokens,
        estimate_tokens("- pdf: Fill and merge PDF forms.\n")
    );
    assert_eq!(
        pdf.body_tokens,
        estimate_tokens("# PDF\nRun `scripts/fill.py FORM DATA`.")
    );
    assert_eq!(rows.len(), 3);
}

#[tokio::test]
async fn an_actor_reads_a_skill_through_the_prop() {
    let (stage, user) = setup();
    let found = discover(stage.path(), &["skills".into()], Some(user.path()));
    let model = Arc::new(ScriptedModel::new([
        ScriptedTurn::call("skill", serde_json::json!({"name": "pdf"})),
        ScriptedTurn::call("skill", serde_json::json!({"name": "nope"})),
        ScriptedTurn::say("done"),
    ]));
    let actor = Actor {
        name: "lead".into(),
        system: found.context(),
        model: model.clone(),
        props: vec![Arc::new(SkillProp::new(&found))],
        max_output_tokens: None,
    };
    let mut p = Performance::builder(actor)
        .workspace(stage.path())
        .start("fill the form")
        .unwrap();
    p.act(&CancellationToken::new()).await;
    let results: Vec<(String, bool)> = p
        .conversation()
        .iter()
        .filter_map(|m| match m {
            Message::Tool {
                content, is_error, ..
            } => Some((content.clone(), *is_error)),
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), 2);
    let (body, err) = &results[0];
    assert!(!err);
    assert!(
        body.starts_with("# PDF\nRun `scripts/fill.py FORM DATA`."),
        "{body}"
    );
    assert!(body.contains("files: scripts/fill.py"), "{body}");
    let (missing, err) = &results[1];
    assert!(err);
    assert_eq!(
        missing,
        "no skill named `nope`; the skills are: pdf, release, notes"
    );
}

#[test]
fn agents_files_run_from_the_root_down_to_the_path() {
    let ws = tempfile::tempdir().unwrap();
    let root = ws.path();
    write(&root.join("AGENTS.md"), "root");
    write(&root.join("crates/AGENTS.md"), "crates");
    write(&root.join("crates/a/src/lib.rs"), "");
    write(&root.join("crates/a/src/AGENTS.md"), "src");
    write(&root.join("docs/AGENTS.md"), "docs");

    let expect = |v: &[&str]| v.iter().map(|p| root.join(p)).collect::<Vec<_>>();
    assert_eq!(
        agents_files(root, Path::new("crates/a/src/lib.rs")),
        expect(&["AGENTS.md", "crates/AGENTS.md", "crates/a/src/AGENTS.md"])
    );
    // A folder counts as one of the folders walked.
    assert_eq!(
        agents_files(root, &root.join("crates/a/src")),
        expect(&["AGENTS.md", "crates/AGENTS.md", "crates/a/src/AGENTS.md"])
    );
    assert_eq!(
        agents_files(root, Path::new("crates/a")),
        expect(&["AGENTS.md", "crates/AGENTS.md"])
    );
    assert_eq!(agents_files(root, Path::new("")), expect(&["AGENTS.md"]));
    // A path not yet written still gets its folders' files.
    assert_eq!(
        agents_files(root, Path::new("docs/new/page.md")),
        expect(&["AGENTS.md", "docs/AGENTS.md"])
    );
    // `..` is resolved; outside the workspace there are none.
    assert_eq!(
        agents_files(root, Path::new("docs/../crates/x.rs")),
        expect(&["AGENTS.md", "crates/AGENTS.md"])
    );
    assert!(agents_files(root, Path::new("../elsewhere/x.rs")).is_empty());
    assert!(agents_files(&root.join("docs"), &root.join("crates/a")).is_empty());
}

const SECRET: &str = "OUTSIDE-SECRET-0d4e";

/// An outside folder holding a skill `pdf` whose description and body are the secret.
fn outside_skill() -> tempfile::TempDir {
    let outside = tempfile::tempdir().unwrap();
    write(
        &outside.path().join("pdf/SKILL.md"),
        &format!("---\nname: pdf\ndescription: {SECRET}\n---\n{SECRET}\n"),
    );
    write(&outside.path().join("pdf/secret-file.txt"), SECRET);
    outside
}

#[test]
fn stage_skills_that_lead_outside_the_stage_folder_are_refused_and_named() {
    let (stage, _user) = setup();
    let outside = outside_skill();
    let skills = stage.path().join("skills");
    // A skill folder that is a symlink out, and a SKILL.md that is one.
    std::os::unix::fs::symlink(outside.path().join("pdf"), skills.join("evil")).unwrap();
    fs::create_dir_all(skills.join("file-link")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("pdf/SKILL.md"),
        skills.join("file-link/SKILL.md"),
    )
    .unwrap();
    // A skill linked from elsewhere inside the stage folder is fine.
    write(
        &stage.path().join("vendor/fmt/SKILL.md"),
        "---\nname: fmt\ndescription: Format code.\n---\nRun the formatter.\n",
    );
    std::os::unix::fs::symlink("../vendor/fmt", skills.join("fmt")).unwrap();
    // A whole skills folder that leads out.
    std::os::unix::fs::symlink(outside.path(), stage.path().join("more")).unwrap();

    let found = discover(stage.path(), &["skills".into(), "more".into()], None);
    let names: Vec<&str> = found.skills.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["fmt", "pdf", "release"]);
    assert_eq!(
        found.get("fmt").unwrap().body().unwrap(),
        "Run the formatter."
    );
    let w = found.warnings.join("\n");
    for skipped in ["skills/evil/SKILL.md", "skills/file-link/SKILL.md"] {
        let line = found
            .warnings
            .iter()
            .find(|l| l.contains(skipped))
            .unwrap_or_else(|| panic!("no warning for {skipped}: {w}"));
        assert!(
            line.contains("leads outside the stage folder through a symlink"),
            "{line}"
        );
    }
    assert!(
        w.contains("more: `more` leads outside the stage folder through a symlink"),
        "{w}"
    );
    assert!(
        !w.contains(SECRET) && !found.context().contains(SECRET),
        "{w}"
    );
}

#[test]
fn a_users_own_linked_skill_is_still_found() {
    let (stage, user) = setup();
    let elsewhere = tempfile::tempdir().unwrap();
    write(
        &elsewhere.path().join("mine/SKILL.md"),
        "---\nname: mine\ndescription: The user's linked skill.\n---\nDo it my way.\n",
    );
    write(&elsewhere.path().join("mine/tool.sh"), "echo mine\n");
    std::os::unix::fs::symlink(elsewhere.path().join("mine"), user.path().join("mine")).unwrap();
    let found = discover(stage.path(), &["skills".into()], Some(user.path()));
    let mine = found.get("mine").unwrap();
    assert_eq!(mine.source, Source::User);
    assert_eq!(mine.body().unwrap(), "Do it my way.");
    assert_eq!(mine.files(10), ["tool.sh"]);
}

/// Exchanges `a` and `b` atomically, so `a` is always there: a folder, then a symlink.
fn exchange(a: &Path, b: &Path) -> bool {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skill_folder_swapped_for_a_symlink_never_brings_outside_text() {
    const CALLS: usize = 400;
    let (stage, _user) = setup();
    let outside = outside_skill();
    let found = discover(stage.path(), &["skills".into()], None);
    let skills = stage.path().join("skills");
    std::os::unix::fs::symlink(outside.path().join("pdf"), skills.join("swap")).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let swapper = {
        let (stop, skills) = (stop.clone(), skills.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                swaps += u64::from(exchange(&skills.join("pdf"), &skills.join("swap")));
            }
            swaps
        })
    };
    let turns = (0..CALLS).map(|_| ScriptedTurn::call("skill", serde_json::json!({"name": "pdf"})));
    let model = Arc::new(ScriptedModel::new(turns.chain([ScriptedTurn::say("done")])));
    let actor = Actor {
        name: "lead".into(),
        system: found.context(),
        model,
        props: vec![Arc::new(SkillProp::new(&found))],
        max_output_tokens: None,
    };
    let mut p = Performance::builder(actor)
        .workspace(stage.path())
        .start("use the pdf skill")
        .unwrap();
    p.act(&CancellationToken::new()).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    let results: Vec<(String, bool)> = p
        .conversation()
        .iter()
        .filter_map(|m| match m {
            Message::Tool {
                content, is_error, ..
            } => Some((content.clone(), *is_error)),
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), CALLS);
    let refused = results.iter().filter(|(_, e)| *e).count();
    let leaked = results
        .iter()
        .filter(|(c, _)| c.contains(SECRET) || c.contains("secret-file"))
        .count();
    println!("{swaps} swaps, {CALLS} calls, {refused} refused, {leaked} leaked");
    assert!(swaps > CALLS as u64, "the swapper ran");
    assert!(refused > 0, "some reads met the symlink");
    assert!(
        results.iter().any(|(c, e)| !e && c.starts_with("# PDF")),
        "some reads met the folder"
    );
    assert_eq!(leaked, 0, "outside text reached the model");
}
