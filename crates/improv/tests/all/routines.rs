//! `improv routines` and `improv run` with routines, through the real binary and the OpenAI
//! mock: two converged runs propose a routine, the director approves it, the next matching run
//! sends the mock no request; a routine exports as SKILL.md; a broken routine file is named with
//! its line; a routine is decided by its file name, and a name that could mean two files is
//! refused naming both.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use improv_mock::{MockServer, openai_chat};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn improv(dir: &Path) -> Command {
    let mut c = common::improv_command();
    c.current_dir(dir)
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    c
}

fn stage(dir: &Path, server: &MockServer) {
    let text = format!(
        "[[actor]]\nname = \"lead\"\nmodel = \"openai/gpt-5-mini\"\nbase_url = \"{}/v1\"\nprops = [\"read\", \"write\"]\n\n[[feedback.check]]\nname = \"greeting\"\nfile = \"greeting.txt\"\ncontains = \"Dear\"\n",
        server.url()
    );
    std::fs::write(dir.join("stage.toml"), text).unwrap();
    std::fs::write(dir.join("template.txt"), "Dear").unwrap();
}

async fn run(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

async fn ok(dir: &Path, args: &[&str]) -> String {
    let mut cmd = improv(dir);
    cmd.args(args);
    let out = run(cmd).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "improv {args:?}: {err}");
    format!("{}{err}", String::from_utf8_lossy(&out.stdout))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_approved_and_replayed_with_no_model_request_then_exported() {
    let server = MockServer::start(Vec::new()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    stage(d, &server);
    for name in ["Alice", "Bob"] {
        server.push(openai_chat::tool_calls(&[(
            "r",
            "read",
            r#"{"path": "template.txt"}"#,
        )]));
        let write = serde_json::json!({"path": "greeting.txt", "content": format!("Dear {name}")});
        server.push(openai_chat::tool_calls(&[(
            "w",
            "write",
            &write.to_string(),
        )]));
        ok(d, &["run", &format!("Greet {name} in greeting.txt")]).await;
    }
    let listed = ok(d, &["routines", "list", "--json"]).await;
    let line = listed.lines().next().unwrap();
    let routine: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(routine["status"], "proposed", "{listed}");
    assert_eq!(routine["intent"], "Greet {content} in greeting.txt");
    let name = routine["name"].as_str().unwrap().to_string();

    ok(d, &["routines", "approve", &name]).await;
    assert!(
        ok(d, &["routines", "show", &name])
            .await
            .contains("status = \"approved\"")
    );
    let before = server.requests().len();
    let out = ok(d, &["run", "Greet Carol in greeting.txt"]).await;
    assert_eq!(server.requests().len(), before, "no model request: {out}");
    assert_eq!(
        std::fs::read_to_string(d.join("greeting.txt")).unwrap(),
        "Dear Carol"
    );

    let skills = d.join("exported");
    ok(
        d,
        &[
            "routines",
            "export",
            &name,
            "--to",
            skills.to_str().unwrap(),
        ],
    )
    .await;
    let skill = std::fs::read_to_string(skills.join(&name).join("SKILL.md")).unwrap();
    assert!(
        skill.starts_with(&format!("---\nname: {name}\n")),
        "{skill}"
    );
    assert!(
        skill.contains("`read`") && skill.contains("`write`"),
        "{skill}"
    );
    let listed = ok(d, &["routines", "list", "--json"]).await;
    assert!(listed.contains("\"uses\":1"), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_routine_file_is_named_with_its_line() {
    let server = MockServer::start(Vec::new()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    stage(d, &server);
    std::fs::create_dir(d.join("routines")).unwrap();
    std::fs::write(
        d.join("routines/greet.toml"),
        "name = \"greet\"\ndescription = \"x\"\nstatus = \"approved\"\nstability = \"solid\"\n",
    )
    .unwrap();
    let mut cmd = improv(d);
    cmd.args(["routines", "list"]);
    let out = run(cmd).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("routines/greet.toml:4:"), "{err}");
}

/// A routine file's text: routine `name`, of skeleton `skeleton`.
fn routine_file(name: &str, skeleton: &str) -> String {
    format!(
        "name = \"{name}\"\ndescription = \"x\"\nstatus = \"proposed\"\nstability = \"fluid\"\n\
         intent = \"Greet\"\n\n[provenance]\nskeleton = \"{skeleton}\"\nperformances = [\"p1\"]\n\n\
         [[steps]]\nprop = \"read\"\n\n[steps.guard]\n\n[steps.args]\npath = \"template.txt\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routine_is_decided_by_its_file_name_and_an_ambiguous_name_says_which_files() {
    let server = MockServer::start(Vec::new()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    stage(d, &server);
    let routines = d.join("routines");
    std::fs::create_dir(&routines).unwrap();
    // `deploy.toml` names itself `build`, and `build.toml` is another routine.
    std::fs::write(routines.join("deploy.toml"), routine_file("build", "01")).unwrap();
    std::fs::write(routines.join("build.toml"), routine_file("other", "02")).unwrap();
    std::fs::write(routines.join("x1.toml"), routine_file("twice", "03")).unwrap();
    std::fs::write(routines.join("x2.toml"), routine_file("twice", "04")).unwrap();

    let status = |file: &str| {
        let text = std::fs::read_to_string(routines.join(file)).unwrap();
        text.lines()
            .find(|l| l.starts_with("status"))
            .unwrap()
            .to_string()
    };
    // `build` is build.toml's file name and deploy.toml's routine: refused, naming both.
    let mut cmd = improv(d);
    cmd.args(["routines", "approve", "build"]);
    let out = run(cmd).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("build.toml, deploy.toml"), "{err}");
    assert_eq!(status("build.toml"), "status = \"proposed\"");
    assert_eq!(status("deploy.toml"), "status = \"proposed\"");
    let said = ok(d, &["routines", "approve", "other"]).await;
    assert!(said.contains("build is approved"), "{said}");
    assert_eq!(status("build.toml"), "status = \"approved\"");
    assert_eq!(status("deploy.toml"), "status = \"proposed\"");
    ok(d, &["routines", "retire", "deploy"]).await;
    assert_eq!(status("deploy.toml"), "status = \"retired\"");
    // `list` shows the file beside a routine not named like it.
    let listed = ok(d, &["routines", "list"]).await;
    assert!(listed.contains("build (deploy.toml)"), "{listed}");
    assert!(listed.contains("other (build.toml)"), "{listed}");

    let mut cmd = improv(d);
    cmd.args(["routines", "reject", "twice"]);
    let out = run(cmd).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("x1.toml, x2.toml"), "{err}");
    assert_eq!(status("x1.toml"), "status = \"proposed\"");
}
