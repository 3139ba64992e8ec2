//! The judge on real stages: checks parsed from stage files in temp dirs, real commands run by
//! bash (plain and sandboxed), real files asserted on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use improv_edges::{Sandbox, SandboxConfig};
use improv_feedback::{Critic, CriticError, Judge, Judgement, Verdict, all_passed};
use improv_stage::{CheckOn, Stage};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A stage directory (also the workspace) with `files` written into it.
struct Dir {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Dir {
    fn new(files: &[(&str, &str)]) -> Dir {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        std::fs::create_dir_all(root.join("ws")).unwrap();
        for (name, text) in files {
            let path = root.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        Dir { _tmp: tmp, root }
    }

    fn ws(&self) -> PathBuf {
        self.root.join("ws")
    }

    /// The stage of `checks` (TOML of `[[feedback.check]]` tables), working in `ws/`.
    fn stage(&self, checks: &str) -> Stage {
        let text = format!("[edges]\nworkspace = \"ws\"\nmax_turns = 5\n\n{checks}");
        let path = self.root.join("stage.toml");
        std::fs::write(&path, &text).unwrap();
        Stage::parse(&text, &path).unwrap()
    }

    fn judge(&self, checks: &str) -> Judge {
        let stage = self.stage(checks);
        Judge::new(
            stage.feedback.checks.clone(),
            &stage.workspace(),
            &stage.dir,
        )
        .unwrap()
    }
}

async fn done(judge: &Judge) -> Vec<Verdict> {
    judge
        .judge(CheckOn::Done, "brief", &CancellationToken::new())
        .await
}

fn only(verdicts: &[Verdict]) -> &Verdict {
    assert_eq!(verdicts.len(), 1, "{verdicts:#?}");
    &verdicts[0]
}

#[tokio::test]
async fn a_passing_command_passes_with_its_output() {
    let d = Dir::new(&[("ws/marker.txt", "here")]);
    let judge = d.judge(
        "[[feedback.check]]\nname = \"ok\"\ncommand = \"cat marker.txt && echo ' and well'\"\n",
    );
    let v = done(&judge).await;
    let v = only(&v);
    assert_eq!(v.check, "ok");
    assert!(v.passed, "{v:?}");
    // It ran in the workspace: the relative path resolved there.
    assert_eq!(v.output, "here and well\n");
}

#[tokio::test]
async fn a_failing_command_fails_with_its_output_and_exit_code() {
    let d = Dir::new(&[]);
    let judge = d.judge(
        "[[feedback.check]]\nname = \"tests\"\ncommand = \"echo running; echo 'assertion failed: 1 == 2' >&2; exit 3\"\n",
    );
    let v = done(&judge).await;
    let v = only(&v);
    assert!(!v.passed);
    assert!(v.output.contains("running\n"), "{}", v.output);
    assert!(
        v.output.contains("assertion failed: 1 == 2"),
        "{}",
        v.output
    );
    assert!(v.output.ends_with("[exit code 3]"), "{}", v.output);
}

#[tokio::test]
async fn long_output_is_cut_to_its_tail() {
    let d = Dir::new(&[]);
    let judge =
        d.judge("[[feedback.check]]\nname = \"noisy\"\ncommand = \"seq 1 100000; exit 1\"\n");
    let v = done(&judge).await;
    let v = only(&v);
    assert!(!v.passed);
    assert!(
        v.output.starts_with("[… earlier output omitted …]\n"),
        "{}",
        &v.output[..80]
    );
    assert!(
        v.output.ends_with("99999\n100000\n[exit code 1]"),
        "{}",
        v.output
    );
    assert!(
        v.output.len() <= improv_feedback::OUTPUT_LIMIT + 40,
        "{}",
        v.output.len()
    );
    // Cut at a line start: the first kept line is whole.
    let first = v.output.lines().nth(1).unwrap();
    let n: u32 = first.parse().unwrap();
    assert!(n > 99000, "{first}");
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed_and_fails() {
    let d = Dir::new(&[]);
    // The sleep runs in the background, so killing only the shell would leave it running.
    let judge = d.judge(
        "[[feedback.check]]\nname = \"slow\"\n\
         command = \"sleep 30 & echo $! > sleeper.pid; echo started; wait\"\ntimeout = \"1s\"\n",
    );
    let v = done(&judge).await;
    let v = only(&v);
    assert!(!v.passed);
    assert!(v.output.starts_with("started\n"), "{}", v.output);
    assert!(v.output.contains("timed out after 1s"), "{}", v.output);
    let pid = std::fs::read_to_string(d.ws().join("sleeper.pid")).unwrap();
    let pid = pid.trim();
    assert!(
        dies(pid.parse().unwrap()),
        "the check's sleep {pid} outlived its timeout"
    );
}

/// Whether process `pid` is gone (or a zombie) within ten seconds: SIGKILL is delivered
/// asynchronously, so the death may trail the verdict a little; a live process never passes.
fn dies(pid: u32) -> bool {
    let proc = PathBuf::from(format!("/proc/{pid}/stat"));
    for _ in 0..1000 {
        match std::fs::read_to_string(&proc) {
            Err(_) => return true,
            // The state follows the parenthesised command name.
            Ok(stat)
                if stat
                    .rsplit(')')
                    .next()
                    .unwrap()
                    .trim_start()
                    .starts_with('Z') =>
            {
                return true;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    false
}

#[tokio::test]
async fn commands_run_in_the_sandbox_when_one_is_given() {
    let d = Dir::new(&[("outside/secret", "s3cret")]);
    let checks = format!(
        "[[feedback.check]]\nname = \"peek\"\ncommand = \"cat {}\"\n",
        d.root.join("outside/secret").display()
    );
    // Without a sandbox the read succeeds: the control.
    let plain = d.judge(&checks);
    let v = done(&plain).await;
    assert!(only(&v).passed, "{v:?}");
    assert_eq!(only(&v).output, "s3cret");

    let sandbox = Arc::new(Sandbox::new(SandboxConfig::new(d.ws())).unwrap());
    let sandboxed = d.judge(&checks).with_sandbox(sandbox);
    let v = done(&sandboxed).await;
    let v = only(&v);
    assert!(!v.passed, "{v:?}");
    assert!(v.output.contains("Permission denied"), "{}", v.output);
}

#[tokio::test]
async fn after_a_write_only_write_checks_run() {
    let d = Dir::new(&[]);
    let judge = d.judge(
        "[[feedback.check]]\nname = \"build\"\ncommand = \"true\"\non = \"write\"\n\n\
         [[feedback.check]]\nname = \"tests\"\ncommand = \"false\"\n",
    );
    assert!(judge.has_checks(CheckOn::Write));
    let cancel = CancellationToken::new();
    let after_write = judge.judge(CheckOn::Write, "", &cancel).await;
    assert_eq!(only(&after_write).check, "build");
    let at_done = judge.judge(CheckOn::Done, "", &cancel).await;
    let names: Vec<&str> = at_done.iter().map(|v| v.check.as_str()).collect();
    assert_eq!(names, ["build", "tests"]);
    assert!(!all_passed(&at_done));

    let none = d.judge("[[feedback.check]]\nname = \"tests\"\ncommand = \"true\"\n");
    assert!(!none.has_checks(CheckOn::Write));
    assert!(none.judge(CheckOn::Write, "", &cancel).await.is_empty());
}

/// Counts the critics it is asked to be, and always passes.
struct Counting(AtomicUsize);

#[async_trait]
impl Critic for Counting {
    async fn judge(
        &self,
        critic: &str,
        rubric: &str,
        brief: &str,
    ) -> Result<Judgement, CriticError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Judgement {
            pass: true,
            notes: format!("{critic} judged by {rubric:?} on {brief:?}"),
        })
    }
}

const CRITIC_STAGE: &str = "[[actor]]\nname = \"lead\"\n\n[[actor]]\nname = \"reviewer\"\nprops = [\"read\"]\n\n\
    [[feedback.check]]\nname = \"review\"\ncritic = \"reviewer\"\nrubric = \"Is it minimal?\"\n\n";

#[tokio::test]
async fn critics_judge_only_work_that_passes_the_other_checks() {
    let d = Dir::new(&[]);
    let counting = Arc::new(Counting(AtomicUsize::new(0)));

    let failing = d
        .judge(&format!(
            "{CRITIC_STAGE}[[feedback.check]]\nname = \"tests\"\ncommand = \"exit 1\"\n"
        ))
        .with_critic(counting.clone());
    let v = done(&failing).await;
    assert_eq!(only(&v).check, "tests");
    assert_eq!(
        counting.0.load(Ordering::SeqCst),
        0,
        "the critic was not asked"
    );

    let passing = d
        .judge(&format!(
            "{CRITIC_STAGE}[[feedback.check]]\nname = \"tests\"\ncommand = \"exit 0\"\n"
        ))
        .with_critic(counting.clone());
    let v = passing
        .judge(CheckOn::Done, "the task", &CancellationToken::new())
        .await;
    // In the order written, the critic first.
    let names: Vec<&str> = v.iter().map(|v| v.check.as_str()).collect();
    assert_eq!(names, ["review", "tests"]);
    assert!(all_passed(&v));
    assert_eq!(
        v[0].output,
        "reviewer judged by \"Is it minimal?\" on \"the task\""
    );
    assert_eq!(counting.0.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_critic_check_without_a_critic_fails_clearly() {
    let d = Dir::new(&[]);
    let v = done(&d.judge(CRITIC_STAGE)).await;
    let v = only(&v);
    assert!(!v.passed);
    assert!(
        v.output.contains("no critic is set up to ask `reviewer`"),
        "{}",
        v.output
    );
}

#[tokio::test]
async fn cancelling_stops_the_running_check_and_skips_the_rest() {
    let d = Dir::new(&[]);
    let judge = d.judge(
        "[[feedback.check]]\nname = \"long\"\ncommand = \"echo begun; touch started; sleep 30\"\n\n\
         [[feedback.check]]\nname = \"next\"\ncommand = \"true\"\n",
    );
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let started = d.ws().join("started");
    // Cancel once the command has started, not after a guessed delay; a judgement that ends
    // without starting it ends the wait too (and fails below) instead of waiting forever.
    let judging = judge.judge(CheckOn::Done, "", &cancel);
    tokio::pin!(judging);
    let v = tokio::select! {
        v = &mut judging => v,
        () = async {
            while !started.exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        } => {
            trigger.cancel();
            judging.await
        }
    };
    let v = only(&v);
    assert_eq!(v.check, "long");
    assert!(!v.passed);
    assert!(v.output.starts_with("begun\n"), "{}", v.output);
    assert!(v.output.contains("cancelled"), "{}", v.output);
}

// --- File checks ---------------------------------------------------------------------------

fn file_check(name: &str, body: &str) -> String {
    format!("[[feedback.check]]\nname = \"{name}\"\n{body}\n\n")
}

#[tokio::test]
async fn a_file_must_exist_or_must_not() {
    let d = Dir::new(&[("ws/out/report.md", "# Report\n")]);
    let judge = d.judge(
        &[
            file_check("present", "file = \"out/report.md\""),
            file_check("missing", "file = \"out/summary.md\""),
            file_check("absent", "file = \"tmp.log\"\nexists = false"),
            file_check("not-absent", "file = \"out/report.md\"\nexists = false"),
        ]
        .concat(),
    );
    let v = done(&judge).await;
    let by: Vec<(&str, bool, &str)> = v
        .iter()
        .map(|v| (v.check.as_str(), v.passed, v.output.as_str()))
        .collect();
    assert_eq!(
        by,
        [
            ("present", true, "`out/report.md` exists"),
            (
                "missing",
                false,
                "`out/summary.md` does not exist; create it"
            ),
            ("absent", true, "`tmp.log` does not exist, as required"),
            (
                "not-absent",
                false,
                "`out/report.md` exists, but this check wants it absent: remove it"
            ),
        ]
    );
}

#[tokio::test]
async fn a_file_must_contain_a_text_and_match_a_pattern() {
    let d = Dir::new(&[("ws/version.txt", "version = 1.4.2\nstable\n")]);
    let judge = d.judge(
        &[
            file_check(
                "both",
                "file = \"version.txt\"\ncontains = \"stable\"\nmatches = '\\d+\\.\\d+\\.\\d+'",
            ),
            file_check("text", "file = \"version.txt\"\ncontains = \"beta\""),
            file_check(
                "pattern",
                "file = \"version.txt\"\nmatches = '^version = 2\\.'",
            ),
        ]
        .concat(),
    );
    let v = done(&judge).await;
    assert!(v[0].passed, "{:?}", v[0]);
    assert_eq!(
        v[0].output,
        "`version.txt` exists, contains \"stable\", matches /\\d+\\.\\d+\\.\\d+/"
    );
    assert!(!v[1].passed);
    assert_eq!(v[1].output, "`version.txt` does not contain \"beta\"");
    assert!(!v[2].passed);
    assert_eq!(
        v[2].output,
        "no part of `version.txt` matches /^version = 2\\./"
    );
}

const PERSON: &str = r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "required": ["name", "age"],
  "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}}
}"#;

#[tokio::test]
async fn a_json_file_must_satisfy_its_schema() {
    let d = Dir::new(&[
        ("person.schema.json", PERSON),
        ("ws/good.json", r#"{"name": "Ada", "age": 36}"#),
        ("ws/bad.json", r#"{"age": -1, "tags": []}"#),
        ("ws/broken.json", "{\"name\": \"Ada\",\n  age: 36}"),
    ]);
    let schema = "schema = \"person.schema.json\"";
    let judge = d.judge(
        &[
            file_check("good", &format!("file = \"good.json\"\n{schema}")),
            file_check("bad", &format!("file = \"bad.json\"\n{schema}")),
            file_check("broken", &format!("file = \"broken.json\"\n{schema}")),
        ]
        .concat(),
    );
    let v = done(&judge).await;
    assert!(v[0].passed, "{:?}", v[0]);
    assert!(v[0].output.contains("satisfies"), "{}", v[0].output);

    assert!(!v[1].passed);
    let lines: Vec<&str> = v[1].output.lines().collect();
    assert!(
        lines[0].starts_with("`bad.json` does not satisfy the schema "),
        "{}",
        v[1].output
    );
    assert!(lines[0].ends_with("person.schema.json:"), "{}", v[1].output);
    assert!(
        lines.contains(&"  at /: \"name\" is a required property"),
        "{}",
        v[1].output
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  at /age: -1 is less than the minimum")),
        "{}",
        v[1].output
    );

    assert!(!v[2].passed);
    assert!(
        v[2].output.starts_with("`broken.json` is not JSON ("),
        "{}",
        v[2].output
    );
    assert!(v[2].output.contains("line 2"), "{}", v[2].output);
}

#[tokio::test]
async fn a_schema_that_is_not_a_schema_fails_the_check_clearly() {
    let d = Dir::new(&[
        ("bad.schema.json", r#"{"type": "no-such-type"}"#),
        ("ws/x.json", "{}"),
    ]);
    let judge = d.judge(&file_check(
        "x",
        "file = \"x.json\"\nschema = \"bad.schema.json\"",
    ));
    let v = done(&judge).await;
    let v = only(&v);
    assert!(!v.passed);
    assert!(
        v.output.contains("is not a valid JSON Schema"),
        "{}",
        v.output
    );
}

#[tokio::test]
async fn file_checks_stay_inside_the_workspace() {
    let d = Dir::new(&[("secret.txt", "s3cret"), ("ws/inside.txt", "ok")]);
    std::os::unix::fs::symlink(d.root.join("secret.txt"), d.ws().join("link.txt")).unwrap();
    let judge = d.judge(
        &[
            file_check("dotdot", "file = \"../secret.txt\""),
            file_check(
                "absolute",
                &format!("file = \"{}\"", d.root.join("secret.txt").display()),
            ),
            file_check("symlink", "file = \"link.txt\"\ncontains = \"s3cret\""),
            file_check("inside", "file = \"sub/../inside.txt\"\ncontains = \"ok\""),
        ]
        .concat(),
    );
    let v = done(&judge).await;
    for refused in &v[..3] {
        assert!(!refused.passed, "{refused:?}");
        assert!(
            refused.output.contains("outside the workspace"),
            "{}",
            refused.output
        );
        assert!(!refused.output.contains("s3cret\n"), "{}", refused.output);
    }
    assert!(v[3].passed, "{:?}", v[3]);
}

#[test]
fn a_missing_workspace_is_a_clear_error() {
    let err = Judge::new(
        Vec::new(),
        Path::new("/nonexistent/improv-ws"),
        Path::new("/"),
    )
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("/nonexistent/improv-ws"), "{text}");
    assert!(text.contains("`workspace` under [edges]"), "{text}");
}
