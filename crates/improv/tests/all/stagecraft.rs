//! The commands around performing, through the real binary: `improv doctor` gates a stage,
//! `improv skills` lists what actors see, `improv note` refuses a finished performance, and
//! `improv serve` starts, refuses requests without its token and performs one with it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

fn improv(dir: &Path) -> Command {
    let mut c = common::improv_command();
    c.current_dir(dir)
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env("NO_COLOR", "1")
        .env("XDG_DATA_HOME", dir.join("data"))
        .stdin(Stdio::null());
    c
}

fn scripted_stage(dir: &Path, extra: &str) {
    std::fs::write(
        dir.join("stage.toml"),
        format!(
            "[stage]\nname = \"t\"\nintent = \"say hi\"\n\n[[actor]]\nname = \"lead\"\nmodel = \"scripted/s.json\"\nprops = [\"read\"]\n\n[edges]\nmax_turns = 5\n{extra}"
        ),
    )
    .unwrap();
    std::fs::write(dir.join("s.json"), r#"[{"say": "hi"}]"#).unwrap();
}

#[test]
fn doctor_passes_a_sound_stage_and_fails_one_without_intent_or_budget() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    scripted_stage(
        d,
        "\n[[feedback.check]]\nname = \"greeting\"\nfile = \"hi.txt\"\n",
    );
    let out = improv(d).arg("doctor").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("Does the feedback close the loop?"), "{text}");

    std::fs::write(d.join("stage.toml"), "[[actor]]\nname = \"lead\"\n").unwrap();
    let out = improv(d).args(["doctor", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let errors: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .map(|f| f["evidence"].as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
}

#[test]
fn skills_are_listed_with_their_cost_and_a_broken_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    scripted_stage(d, "");
    let skill = d.join("skills/release");
    std::fs::create_dir_all(&skill).unwrap();
    std::fs::write(
        skill.join("SKILL.md"),
        "---\nname: release\ndescription: Cut a release of this project.\n---\nRun the tests, tag, push.\n",
    )
    .unwrap();
    let broken = d.join("skills/broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(broken.join("SKILL.md"), "no front matter here\n").unwrap();
    let out = improv(d).arg("skills").output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("release"), "{stdout}");
    assert!(stdout.contains("Cut a release"), "{stdout}");
    assert!(stdout.contains("1 skill ·"), "{stdout}");
    assert!(stderr.contains("broken/SKILL.md"), "{stderr}");
}

#[test]
fn a_note_to_a_finished_performance_is_refused_with_the_way_on() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    scripted_stage(d, "");
    let out = improv(d).args(["run", "--json"]).output().unwrap();
    assert!(out.status.success());
    let first = String::from_utf8_lossy(&out.stdout);
    let started: serde_json::Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
    let id = started["performance"].as_str().unwrap();
    let out = improv(d)
        .args(["note", id, "use", "tabs"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not running"), "{stderr}");
    assert!(
        stderr.contains(&format!("improv run --resume {id}")),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_requests_without_its_token_and_performs_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    scripted_stage(d, "");
    let mut child = improv(d)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let url = first
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_string();
    let token_line = lines.next().unwrap().unwrap();
    let token = token_line.rsplit(' ').next().unwrap().to_string();
    assert_eq!(
        std::fs::read_to_string(d.join(".improv/serve.token"))
            .unwrap()
            .trim(),
        token
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = improv_models::client_builder().unwrap().build().unwrap();
        let refused = client
            .get(format!("{url}/performances"))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 401);
        let started: serde_json::Value = client
            .post(format!("{url}/performances"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"intent": "say hi"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = started["id"].as_str().unwrap().to_string();
        // The event stream of a performance ends with its end.
        let events = client
            .get(format!("{url}/performances/{id}/events"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(events.contains("performance_finished"), "{events}");
    });
    // SAFETY: kill takes plain integers; the child is ours and not yet waited for.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
