//! Critics performing in the real kernel loop: a scripted model reads the work with the real
//! `read` prop and answers with `verdict`; the judge turns its answer into the check's verdict.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use improv_feedback::{ActorCritic, Judge, brief};
use improv_kernel::{Actor, Message, Model, ScriptedModel, ScriptedTurn, Tape};
use improv_stage::{CheckOn, Stage};
use serde_json::json;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

const STAGE: &str = r#"
[stage]
intent = "Write a greeting into hello.txt."

[[actor]]
name = "lead"

[[actor]]
name = "reviewer"
role = "You review work. You never edit files."
props = ["read"]

[[feedback.check]]
name = "review"
critic = "reviewer"
rubric = "Does hello.txt greet the world?"
"#;

struct Setup {
    _tmp: tempfile::TempDir,
    judge: Judge,
    model: Arc<ScriptedModel>,
    events: Arc<Tape>,
}

/// The stage above in a temp dir with `hello.txt` saying `hello`, and a critic whose model
/// plays `turns`.
fn setup(hello: &str, turns: Vec<ScriptedTurn>) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().canonicalize().unwrap();
    std::fs::write(dir.join("hello.txt"), hello).unwrap();
    let path = dir.join("stage.toml");
    std::fs::write(&path, STAGE).unwrap();
    let stage = Stage::parse(STAGE, &path).unwrap();
    let model = Arc::new(ScriptedModel::new(turns));
    let events = Arc::new(Tape::default());
    let cast_stage = stage.clone();
    let cast_model = model.clone();
    let workspace = stage.workspace();
    let critic = ActorCritic::new(stage.workspace(), move |name: &str| {
        let config = cast_stage
            .actor(name)
            .ok_or_else(|| format!("no actor `{name}` in the cast"))?;
        let props = config
            .props
            .iter()
            .filter_map(|p| improv_props::prop(p, &improv_props::PropsConfig::default()))
            .collect();
        Ok(Actor {
            name: name.to_string(),
            system: cast_stage.system_prompt(config, &workspace),
            model: cast_model.clone() as Arc<dyn Model>,
            props,
            max_output_tokens: None,
        })
    })
    .stage("critic-test")
    .observer(events.clone());
    let judge = Judge::new(
        stage.feedback.checks.clone(),
        &stage.workspace(),
        &stage.dir,
    )
    .unwrap()
    .with_critic(Arc::new(critic));
    Setup {
        _tmp: tmp,
        judge,
        model,
        events,
    }
}

const BRIEF: &str = "The task: Write a greeting into hello.txt.\nThe actor's report: Done: hello.txt says hello world.";

async fn review(s: &Setup) -> improv_feedback::Verdict {
    let mut v = s
        .judge
        .judge(CheckOn::Done, BRIEF, &CancellationToken::new())
        .await;
    assert_eq!(v.len(), 1, "{v:?}");
    v.remove(0)
}

fn user_text(m: &Message) -> &str {
    match m {
        Message::User { text } => text,
        _ => "",
    }
}

#[tokio::test]
async fn a_critic_reads_the_work_and_passes_it() {
    let s = setup(
        "hello world\n",
        vec![
            ScriptedTurn::call("read", json!({"path": "hello.txt"})),
            ScriptedTurn::call(
                "verdict",
                json!({"pass": true, "notes": "hello.txt greets the world."}),
            ),
        ],
    );
    let v = review(&s).await;
    assert_eq!(v.check, "review");
    assert!(v.passed, "{v:?}");
    assert_eq!(v.output, "hello.txt greets the world.");

    let requests = s.model.requests();
    // Stopped right after the verdict: no third model call.
    assert_eq!(requests.len(), 2);
    assert_eq!(s.model.remaining(), 0);
    // The critic was told the rubric and the brief, and offered `verdict` beside its own prop.
    let intent = user_text(&requests[0][0]);
    assert!(
        intent.contains("Rubric: Does hello.txt greet the world?"),
        "{intent}"
    );
    assert!(intent.contains(BRIEF), "{intent}");
    assert!(intent.contains("`verdict`"), "{intent}");
    assert_eq!(s.model.tools_offered(), [2, 2]);
    // The real `read` prop ran: the file's text came back to the model.
    let read_result = requests[1]
        .iter()
        .find_map(|m| match m {
            Message::Tool { name, content, .. } if name == "read" => Some(content.clone()),
            _ => None,
        })
        .unwrap();
    assert!(read_result.contains("hello world"), "{read_result}");
    // Its performance was observed, from start to finish.
    let events = s.events.events();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds.first(), Some(&"performance_started"));
    assert_eq!(kinds.last(), Some(&"performance_finished"));
    assert!(
        events
            .iter()
            .all(|e| e.actor.as_deref() == Some("reviewer"))
    );
}

#[tokio::test]
async fn a_critic_fails_the_work_with_its_notes() {
    let s = setup(
        "",
        vec![
            ScriptedTurn::call("read", json!({"path": "hello.txt"})),
            ScriptedTurn::call(
                "verdict",
                json!({"pass": false, "notes": "hello.txt is empty: write \"hello world\" into it."}),
            ),
        ],
    );
    let v = review(&s).await;
    assert!(!v.passed);
    assert_eq!(
        v.output,
        "hello.txt is empty: write \"hello world\" into it."
    );
}

#[tokio::test]
async fn a_critic_that_gives_no_verdict_is_reminded_once_then_fails_the_check() {
    let s = setup(
        "hello world\n",
        vec![
            ScriptedTurn::say("Looks good to me."),
            ScriptedTurn::say("Really, it is fine."),
        ],
    );
    let v = review(&s).await;
    assert!(!v.passed);
    assert!(
        v.output
            .contains("critic `reviewer` ended without calling `verdict`, even when reminded"),
        "{}",
        v.output
    );
    let requests = s.model.requests();
    assert_eq!(requests.len(), 2);
    let reminder = user_text(requests[1].last().unwrap());
    assert!(reminder.contains("Call `verdict` now"), "{reminder}");
}

#[tokio::test]
async fn a_reminded_critic_that_answers_gives_its_verdict() {
    let s = setup(
        "hello world\n",
        vec![
            ScriptedTurn::say("Looks good to me."),
            ScriptedTurn::call("verdict", json!({"pass": true, "notes": "fine"})),
        ],
    );
    let v = review(&s).await;
    assert!(v.passed, "{v:?}");
    assert_eq!(v.output, "fine");
}

#[tokio::test]
async fn a_malformed_verdict_goes_back_to_the_critic_to_correct() {
    let s = setup(
        "hello world\n",
        vec![
            ScriptedTurn::call("verdict", json!({"pass": "yes"})),
            ScriptedTurn::call("verdict", json!({"pass": true, "notes": "ok"})),
        ],
    );
    let v = review(&s).await;
    assert!(v.passed, "{v:?}");
    let requests = s.model.requests();
    let error = requests[1]
        .iter()
        .find_map(|m| match m {
            Message::Tool {
                content,
                is_error: true,
                ..
            } => Some(content.clone()),
            _ => None,
        })
        .unwrap();
    assert!(error.starts_with("verdict: "), "{error}");
    assert!(error.contains("\"pass\": true or false"), "{error}");
}

#[tokio::test]
async fn a_critic_whose_model_fails_fails_the_check_with_the_reason() {
    let s = setup(
        "hello world\n",
        vec![ScriptedTurn::fails("the provider is down")],
    );
    let v = review(&s).await;
    assert!(!v.passed);
    assert!(
        v.output.contains(
            "critic `reviewer` stopped before its verdict: model error: the provider is down"
        ),
        "{}",
        v.output
    );
}

#[test]
fn the_brief_is_the_task_and_the_last_report() {
    let conversation = vec![
        Message::user("Write a greeting into hello.txt."),
        Message::Assistant {
            text: "I will write it.".into(),
            tool_calls: Vec::new(),
        },
        Message::user("a director note"),
        Message::Assistant {
            text: "Done: hello.txt says hello world.".into(),
            tool_calls: Vec::new(),
        },
        Message::Assistant {
            text: String::new(),
            tool_calls: Vec::new(),
        },
    ];
    assert_eq!(brief(&conversation), BRIEF);
    assert_eq!(
        brief(&[]),
        "The task: (none given)\nThe actor's report: (it said nothing)"
    );
}
