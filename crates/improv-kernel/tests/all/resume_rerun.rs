//! A performance resumed after its process died mid-reply: the calls that never started run, a
//! call that started runs again only when its prop is repeatable, and every other one is
//! answered as interrupted (it may have run).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use improv_kernel::*;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio_util::sync::CancellationToken;

/// Counts its calls; reads or writes as told.
struct Counting {
    spec: ToolSpec,
    access: Access,
    calls: Arc<AtomicUsize>,
}

#[async_trait]
impl Prop for Counting {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }
    fn access(&self, _: &serde_json::Value) -> Access {
        self.access
    }
    async fn call(&self, _: serde_json::Value, _: &PropContext) -> Result<String, PropError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(format!("{} ran", self.spec.name))
    }
}

fn counting(name: &str, access: Access) -> (Arc<dyn Prop>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let prop = Counting {
        spec: ToolSpec {
            name: name.into(),
            description: format!("test prop {name}"),
            parameters: json!({"type": "object"}),
        },
        access,
        calls: calls.clone(),
    };
    (Arc::new(prop), calls)
}

fn event(seq: u64, kind: EventKind) -> Event {
    Event {
        seq,
        at: "2026-11-29T00:00:00.000Z".into(),
        actor: Some("lead".into()),
        kind,
    }
}

fn call(id: &str, name: &str) -> ToolCall {
    ToolCall {
        id: id.into(),
        name: name.into(),
        arguments: "{}".into(),
    }
}

/// The log of a process that died while its reply's first two calls ran: `look` (a read) and
/// `mark` (a write) started, `later` never did.
fn died_mid_reply() -> Vec<Event> {
    vec![
        event(
            0,
            EventKind::PerformanceStarted {
                performance: "p1".into(),
                stage: "s".into(),
                intent: "go".into(),
                model: "scripted".into(),
                resumed: false,
            },
        ),
        event(1, EventKind::DirectorNote { text: "go".into() }),
        event(2, EventKind::TurnStarted { turn: 1 }),
        event(
            3,
            EventKind::ModelReplied {
                text: String::new(),
                tool_calls: vec![call("c1", "look"), call("c2", "mark"), call("c3", "later")],
                stop: StopReason::ToolUse,
            },
        ),
        event(
            4,
            EventKind::ToolCallStarted {
                call_id: "c1".into(),
                name: "look".into(),
                arguments: "{}".into(),
            },
        ),
        event(
            5,
            EventKind::ToolCallStarted {
                call_id: "c2".into(),
                name: "mark".into(),
                arguments: "{}".into(),
            },
        ),
    ]
}

#[tokio::test]
async fn a_started_write_is_not_run_again_but_reads_and_unstarted_calls_are() {
    let (look, looks) = counting("look", Access::Read);
    let (mark, marks) = counting("mark", Access::Write);
    let (later, laters) = counting("later", Access::Write);
    let model = Arc::new(ScriptedModel::new([ScriptedTurn::say("done")]));
    let kept = Arc::new(Tape::default());
    let actor = Actor {
        name: "lead".into(),
        system: "test".into(),
        model: model.clone(),
        props: vec![look, mark, later],
        max_output_tokens: None,
    };
    let mut performance = Performance::builder(actor)
        .observer(kept.clone())
        .resume(&died_mid_reply())
        .unwrap();
    let ended = performance.act(&CancellationToken::new()).await;
    assert_eq!(ended.outcome, Outcome::Done, "{ended:?}");

    assert_eq!(looks.load(Ordering::SeqCst), 1, "the read runs again");
    assert_eq!(
        laters.load(Ordering::SeqCst),
        1,
        "the call that never started runs"
    );
    assert_eq!(
        marks.load(Ordering::SeqCst),
        0,
        "the write that started is not repeated"
    );
    let finished: Vec<(String, bool, String)> = kept
        .events()
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolCallFinished {
                call_id,
                ok,
                output,
                ..
            } => Some((call_id.clone(), *ok, output.clone())),
            _ => None,
        })
        .collect();
    let mark = finished.iter().find(|(id, ..)| id == "c2").unwrap();
    assert!(!mark.1 && mark.2.contains("interrupted"), "{mark:?}");
    // Every call has exactly one answer, and the model saw them all before its next turn.
    let mut ids: Vec<&str> = finished.iter().map(|(id, ..)| id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["c1", "c2", "c3"]);
    let request = &model.requests()[0];
    let answered = request
        .iter()
        .filter(|m| matches!(m, Message::Tool { .. }))
        .count();
    assert_eq!(answered, 3);
}

/// A process that died after the actor's last reply ended its turn, before the end was
/// recorded: resumed, the performance ends done without asking the model again.
#[tokio::test]
async fn a_turn_that_ended_is_not_asked_for_again() {
    let mut log = died_mid_reply();
    log.truncate(3);
    log.push(event(
        3,
        EventKind::ModelReplied {
            text: "all done".into(),
            tool_calls: Vec::new(),
            stop: StopReason::EndTurn,
        },
    ));
    let model = Arc::new(ScriptedModel::new([ScriptedTurn::say("asked again")]));
    let actor = Actor {
        name: "lead".into(),
        system: "test".into(),
        model: model.clone(),
        props: Vec::new(),
        max_output_tokens: None,
    };
    let mut performance = Performance::builder(actor).resume(&log).unwrap();
    let ended = performance.act(&CancellationToken::new()).await;
    assert_eq!(ended.outcome, Outcome::Done, "{ended:?}");
    assert!(model.requests().is_empty(), "the model was asked again");
    // Directed afterwards, it performs as usual.
    performance.direct("one more thing").unwrap();
    let ended = performance.act(&CancellationToken::new()).await;
    assert_eq!(ended.outcome, Outcome::Done);
    assert_eq!(model.requests().len(), 1);
}
