//! Drives the real performance loop with a scripted model and small test props.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use improv_kernel::*;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Barrier;
use tokio_util::sync::CancellationToken;

/// What these tests read from the kernel's [`Tape`].
trait Read {
    fn names(&self) -> Vec<&'static str>;
    fn finished_tools(&self) -> Vec<(String, bool, String)>;
}

impl Read for Tape {
    fn names(&self) -> Vec<&'static str> {
        self.events().iter().map(|e| e.kind.name()).collect()
    }
    fn finished_tools(&self) -> Vec<(String, bool, String)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::ToolCallFinished {
                    name, ok, output, ..
                } => Some((name, ok, output)),
                _ => None,
            })
            .collect()
    }
}

type Handler = dyn Fn(serde_json::Value) -> futures::future::BoxFuture<'static, Result<String, PropError>>
    + Send
    + Sync;

/// A test prop whose behaviour is a closure.
struct TestProp {
    spec: ToolSpec,
    access: Access,
    timeout: Option<Duration>,
    handler: Box<Handler>,
}

impl TestProp {
    fn make<F, Fut>(name: &str, access: Access, f: F) -> Arc<dyn Prop>
    where
        F: Fn(serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<String, PropError>> + Send + 'static,
    {
        Self::with_timeout(name, access, None, f)
    }
    fn with_timeout<F, Fut>(
        name: &str,
        access: Access,
        timeout: Option<Duration>,
        f: F,
    ) -> Arc<dyn Prop>
    where
        F: Fn(serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<String, PropError>> + Send + 'static,
    {
        Arc::new(TestProp {
            spec: ToolSpec {
                name: name.into(),
                description: format!("test prop {name}"),
                parameters: json!({"type": "object"}),
            },
            access,
            timeout,
            handler: Box::new(move |v| Box::pin(f(v))),
        })
    }
}

#[async_trait]
impl Prop for TestProp {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }
    fn access(&self, _: &serde_json::Value) -> Access {
        self.access
    }
    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
    async fn call(&self, args: serde_json::Value, _: &PropContext) -> Result<String, PropError> {
        (self.handler)(args).await
    }
}

fn echo() -> Arc<dyn Prop> {
    TestProp::make("echo", Access::Read, |args| async move {
        Ok(format!("echo {}", args["text"].as_str().unwrap_or("")))
    })
}

fn actor(model: Arc<dyn Model>, props: Vec<Arc<dyn Prop>>) -> Actor {
    Actor {
        name: "lead".into(),
        system: "You are a test actor.".into(),
        model,
        props,
        max_output_tokens: None,
    }
}

async fn perform(
    model: Arc<ScriptedModel>,
    props: Vec<Arc<dyn Prop>>,
    budget: Budget,
) -> (Ended, Arc<Tape>) {
    let tape = Arc::new(Tape::default());
    let mut p = Performance::builder(actor(model, props))
        .stage("test")
        .budget(budget)
        .observer(tape.clone())
        .start("do the thing")
        .unwrap();
    let ended = p.act(&CancellationToken::new()).await;
    p.finish(&ended).unwrap();
    (ended, tape)
}

#[tokio::test]
async fn a_text_reply_ends_the_turn() {
    let model = Arc::new(ScriptedModel::new([ScriptedTurn::say("All done here.")]));
    let (ended, tape) = perform(model.clone(), vec![echo()], Budget::default()).await;
    assert_eq!(ended.outcome, Outcome::Done);
    assert_eq!(
        tape.names(),
        [
            "performance_started",
            "director_note",
            "turn_started",
            "text_delta",
            "text_delta",
            "text_delta",
            "usage",
            "model_replied",
            "performance_finished"
        ]
    );
    let seqs: Vec<u64> = tape.events().iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        model.requests()[0],
        vec![Message::user("do the thing")],
        "the intent is the first message"
    );
}

#[tokio::test]
async fn tool_results_go_back_to_the_model() {
    let model = Arc::new(ScriptedModel::new([
        ScriptedTurn::call("echo", json!({"text": "hi"})),
        ScriptedTurn::say("said hi"),
    ]));
    let (ended, tape) = perform(model.clone(), vec![echo()], Budget::default()).await;
    assert_eq!(ended.outcome, Outcome::Done);
    assert_eq!(
        tape.finished_tools(),
        [("echo".into(), true, "echo hi".into())]
    );
    let second = &model.requests()[1];
    assert_eq!(
        second.last(),
        Some(&Message::Tool {
            call_id: "call_1_0".into(),
            name: "echo".into(),
            content: "echo hi".into(),
            is_error: false
        })
    );
}

#[tokio::test]
async fn bad_calls_become_tool_errors_the_model_can_fix() {
    let model = Arc::new(ScriptedModel::new([
        ScriptedTurn::call("nope", json!({}))
            .and_call("echo", json!("{\"text\": oops"))
            .and_call("echo", json!("[1, 2]")),
        ScriptedTurn::say("sorry"),
    ]));
    let (ended, tape) = perform(model, vec![echo()], Budget::default()).await;
    assert_eq!(ended.outcome, Outcome::Done);
    let results = tape.finished_tools();
    assert_eq!(results.len(), 3);
    assert!(!results[0].1 && results[0].2.contains("unknown prop `nope`"));
    assert!(
        results[0].2.contains("echo"),
        "lists the props: {}",
        results[0].2
    );
    assert!(!results[1].1 && results[1].2.contains("not valid JSON"));
    assert!(!results[2].1 && results[2].2.contains("JSON object"));
}

#[tokio::test]
async fn prop_errors_are_results_not_crashes() {
    let failing = TestProp::make("fail", Access::Write, |_| async {
        Err(PropError::new("no such file: a.txt"))
    });
    let model = Arc::new(ScriptedModel::new([
        ScriptedTurn::call("fail", json!({})),
        ScriptedTurn::say("ok"),
    ]));
    let (ended, tape) = perform(model.clone(), vec![failing], Budget::default()).await;
    assert_eq!(ended.outcome, Outcome::Done);
    assert_eq!(
        tape.finished_tools(),
        [("fail".into(), false, "no such file: a.txt".into())]
    );
    assert!(matches!(
        model.requests()[1].last(),
        Some(Message::Tool { is_error: true, .. })
    ));
}

#[tokio::test]
async fn a_cut_off_reply_runs_none_of_its_calls() {
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let counting = TestProp::make("write", Access::Write, move |_| {
        r.fetch_add(1, Ordering::SeqCst);
        async { Ok("written".to_string()) }
    });
    let model = Arc::new(ScriptedModel::new([
        ScriptedTurn::call("write", json!({"path": "a", "content": "half"})).cut_off(),
        ScriptedTurn::say("I will re-issue it"),
    ]));
    let (ended, tape) = perform(model, vec![counting], Budget::default()).await;
    assert_eq!(ended.outcome, Outcome::Done);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "a cut-off call must never run"
    );
    let results = tape.finished_tools();
    assert!(!results[0].1);
    assert!(
        results[0].2.contains("output-token limit"),
        "{}",
        results[0].2
    );
}

#[tokio::test]
async fn reads_run_together_and_writes_run_alone_in_order() {
    // Two reads meet at a barrier: if they ran one after the other, the first would wait
    // forever and its timeout would fail the call.
    let barrier = Arc::new(Barrier::new(2));
    let read = {
        let b = barrier.clone();
        TestProp::with_timeout(
            "look",
            Access::Read,
            Some(Duration::from_secs(5)),
            move |_| {
                let b = b.clone();
                async move {
                    b.wait().await;
                    Ok("seen".to_string())
                }
            },
        )
    };
    let in_flight = Arc::new(AtomicUsize::new(0));
    let overlap = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let write = {
        let (f, o, ord) = (in_flight.clone(), overlap.clone(), order.clone());
        TestProp::make("put", Access::Write, move |args| {
            let (f, o, ord) = (f.clone(), o.clone(), ord.clone());
            async move {
                if f.fetch_add(1, Ordering::SeqCst) > 0 {
                    o.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
                ord.lock().unwrap().push(args["n"].as_u64().unwrap());
                f.fetch_sub(1, Ordering::SeqCst);
                Ok("put".to_string())
            }
        })
    };
    let model = Arc::new(ScriptedModel::new([
        ScriptedTurn::call("look", json!({}))
            .and_call("look", json!({}))
            .and_call("put", json!({"n": 1}))
            .and_call("put", json!({"n": 2}))
            .and_call("put", json!({"n": 3})),
        ScriptedTurn::say("done"),
    ]));
    let (ended, tape) = perform(model.clone(), vec![read, write], Budget::default()).await;
    assert_eq!(ended.outcome, Outcome::Done);
    let results = tape.finished_tools();
    assert!(results.iter().all(|r| r.1), "{results:?}");
    assert_eq!(overlap.load(Ordering::SeqCst), 0, "writes overlapped");
    assert_eq!(*order.lock().unwrap(), [1, 2, 3]);
    // Results reach the model in the order the calls were made.
    let ids: Vec<String> = model.requests()[1]
        .iter()
        .filter_map(|m| match m {
            Message::Tool { call_id, .. } => Some(call_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        ids,
        ["call_1_0", "call_1_1", "call_1_2", "call_1_3", "call_1_4"]
    );
}

#[tokio::test]
async fn a_slow_tool_times_out_as_an_error_result() {
    let slow = TestProp::with_timeout(
        "slow",
        Access::Write,
        Some(Duration::from_millis(20)),
        |_| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok("never".to_string())
        },
    );
    let model = Arc::new(ScriptedModel::new([
        ScriptedTurn::call("slow", json!({})),
        ScriptedTurn::say("it was slow"),
    ]));
    let (ended, tape) = perform(model, vec![slow], Budget::default()).await;
    assert_eq!(ended.outcome, Outcome::Done);
    let results = tape.finished_tools();
    assert!(
        !results[0].1 && results[0].2.contains("timed out"),
        "{results:?}"
    );
}

fn looping(n: usize) -> Arc<ScriptedModel> {
    Arc::new(ScriptedModel::new((0..n).map(|i| {
        ScriptedTurn::call("echo", json!({ "text": i.to_string() }))
    })))
}

#[tokio::test]
async fn the_turn_budget_warns_at_80_percent_and_stops_at_100() {
    let budget = Budget {
        max_turns: Some(5),
        ..Default::default()
    };
    let model = looping(50);
    let (ended, tape) = perform(model.clone(), vec![echo()], budget).await;
    assert_eq!(ended.outcome, Outcome::Stopped);
    assert_eq!(ended.budget, Some(BudgetKind::Turns));
    assert!(ended.reason.contains("5 of 5"), "{}", ended.reason);
    let turns = tape
        .names()
        .iter()
        .filter(|n| **n == "turn_started")
        .count();
    assert_eq!(turns, 6, "five turns, then one to wrap up");
    let warnings: Vec<_> = tape
        .events()
        .into_iter()
        .filter(|e| matches!(e.kind, EventKind::BudgetWarning { .. }))
        .collect();
    assert_eq!(warnings.len(), 1, "one warning, not one per turn");
    let last = tape.events().pop().unwrap();
    assert!(matches!(
        last.kind,
        EventKind::PerformanceFinished {
            outcome: Outcome::Stopped,
            budget: Some(BudgetKind::Turns),
            ..
        }
    ));
}

#[tokio::test]
async fn a_spent_budget_leaves_one_last_turn_without_props() {
    let budget = Budget {
        max_tool_calls: Some(2),
        ..Default::default()
    };
    let model = looping(50);
    let (ended, tape) = perform(model.clone(), vec![echo()], budget).await;
    assert_eq!(ended.budget, Some(BudgetKind::ToolCalls));
    assert!(ended.reason.contains("2 of 2 calls"), "{}", ended.reason);
    // Two turns with props, then the wrap-up offered none.
    assert_eq!(model.tools_offered(), [1, 1, 0]);
    let last_request = model.requests().pop().unwrap();
    assert!(matches!(
        last_request.last(),
        Some(Message::User { text }) if text.contains("cannot use props") && text.contains("summary")
    ));
    // The scripted model still asked for a call in the wrap-up: it is answered, never run.
    let results = tape.finished_tools();
    assert_eq!(results.len(), 3);
    assert!(results[..2].iter().all(|r| r.1));
    assert!(!results[2].1 && results[2].2.starts_with("not run: tool-call budget spent"));
}

#[tokio::test]
async fn the_cost_budget_uses_the_models_price() {
    let model = Arc::new(
        ScriptedModel::new(
            (0..50).map(|i| ScriptedTurn::call("echo", json!({ "text": i.to_string() }))),
        )
        .with_price(Price {
            input: 1_000.0,
            output: 1_000.0,
            cached_input: None,
        }),
    );
    let budget = Budget {
        max_cost_usd: Some(0.2),
        ..Default::default()
    };
    let (ended, tape) = perform(model, vec![echo()], budget).await;
    assert_eq!(ended.budget, Some(BudgetKind::Cost));
    let spent = match tape.events().pop().unwrap().kind {
        EventKind::PerformanceFinished { spent, .. } => spent,
        other => panic!("{other:?}"),
    };
    assert!(spent.cost_usd >= 0.2 && spent.cost_usd < 0.3, "{spent:?}");
}

#[tokio::test]
async fn the_time_budget_stops_a_slow_model() {
    let model = Arc::new(ScriptedModel::new([
        ScriptedTurn::say("too late").after(Duration::from_secs(30))
    ]));
    let budget = Budget {
        timeout: Some(Duration::from_millis(50)),
        ..Default::default()
    };
    let (ended, _) = perform(model, vec![], budget).await;
    assert_eq!(ended.outcome, Outcome::Stopped);
    assert_eq!(ended.budget, Some(BudgetKind::Time));
}

#[tokio::test]
async fn a_model_error_fails_the_performance_with_its_message() {
    let model = Arc::new(ScriptedModel::new([ScriptedTurn::fails(
        "server overloaded after 4 retries",
    )]));
    let (ended, tape) = perform(model, vec![], Budget::default()).await;
    assert_eq!(ended.outcome, Outcome::Failed);
    assert!(ended.reason.contains("server overloaded"));
    assert_eq!(tape.names().last(), Some(&"performance_finished"));
}

struct BrokenLog;
impl Observer for BrokenLog {
    fn observe(&self, event: &Event) -> Result<(), ObserveError> {
        if event.kind.name() == "tool_call_started" {
            return Err(ObserveError("No space left on device".into()));
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_log_stops_the_performance() {
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    // The counted prop is the `echo` the script calls, so a call that ran would be counted.
    let counting = TestProp::make("echo", Access::Write, move |_| {
        r.fetch_add(1, Ordering::SeqCst);
        async { Ok("echoed".to_string()) }
    });
    let model = looping(3);
    let mut p = Performance::builder(actor(model, vec![counting.clone()]))
        .observer(Arc::new(BrokenLog))
        .start("x")
        .unwrap();
    // The log breaks on `tool_call_started`, before the call can run.
    let ended = p.act(&CancellationToken::new()).await;
    assert_eq!(ended.outcome, Outcome::Failed);
    assert!(ended.reason.contains("No space left"), "{}", ended.reason);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "the call ran after its log failed"
    );
}

#[tokio::test]
async fn director_notes_arrive_before_the_next_model_call() {
    let (notes_tx, notes) = Notes::channel();
    let tx = notes_tx.clone();
    // The note is sent while the tool runs: it must not be mixed into the tool's result.
    let busy = TestProp::make("busy", Access::Write, move |_| {
        let tx = tx.clone();
        async move {
            tx.send("also update the changelog");
            Ok("busy done".to_string())
        }
    });
    let model = Arc::new(ScriptedModel::new([
        ScriptedTurn::call("busy", json!({})),
        ScriptedTurn::say("noted"),
    ]));
    let tape = Arc::new(Tape::default());
    let mut p = Performance::builder(actor(model.clone(), vec![busy]))
        .hook(Arc::new(notes))
        .observer(tape.clone())
        .start("work")
        .unwrap();
    let ended = p.act(&CancellationToken::new()).await;
    assert_eq!(ended.outcome, Outcome::Done);
    let second = &model.requests()[1];
    assert!(
        matches!(&second[second.len() - 2], Message::Tool { content, .. } if content == "busy done")
    );
    assert_eq!(
        second.last(),
        Some(&Message::user("also update the changelog"))
    );
    assert!(tape.names().contains(&"director_note"));
}

#[tokio::test]
async fn ctrl_c_cancels_the_running_tool_and_resume_continues() {
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    let hang = TestProp::make("hang", Access::Write, move |_| {
        let c = c.clone();
        async move {
            c.cancel(); // the director presses Ctrl-C while the tool runs
            std::future::pending::<()>().await;
            Ok("never".to_string())
        }
    });
    let model = Arc::new(ScriptedModel::new([
        ScriptedTurn::call("hang", json!({})).and_call("echo", json!({"text": "later"}))
    ]));
    let tape = Arc::new(Tape::default());
    let mut p = Performance::builder(actor(model, vec![hang.clone(), echo()]))
        .observer(tape.clone())
        .start("try")
        .unwrap();
    let ended = p.act(&cancel).await;
    assert_eq!(ended.outcome, Outcome::Interrupted);
    let id = p.id().to_string();
    p.finish(&ended).unwrap();
    let results = tape.finished_tools();
    assert_eq!(results.len(), 2, "both calls are answered: {results:?}");
    assert!(results.iter().all(|r| !r.1 && r.2.contains("interrupted")));

    // Resume from the log: the conversation goes on where it stopped.
    let logged = tape.events();
    let model = Arc::new(ScriptedModel::new([ScriptedTurn::say(
        "finished after resume",
    )]));
    let tape2 = Arc::new(Tape::default());
    let mut p = Performance::builder(actor(model.clone(), vec![hang, echo()]))
        .observer(tape2.clone())
        .resume(&logged)
        .unwrap();
    assert_eq!(p.id(), id);
    let ended = p.act(&CancellationToken::new()).await;
    assert_eq!(ended.outcome, Outcome::Done);
    let request = &model.requests()[0];
    assert_eq!(request[0], Message::user("try"));
    assert_eq!(request.len(), 4, "intent, reply, two results: {request:?}");
    let first = tape2.events()[0].clone();
    assert_eq!(first.seq, logged.last().unwrap().seq + 1);
    assert!(matches!(
        first.kind,
        EventKind::PerformanceStarted { resumed: true, .. }
    ));
}

#[tokio::test]
async fn resume_answers_calls_a_crash_left_open() {
    // A log cut off right after a call started: the process died mid-tool.
    let model = Arc::new(ScriptedModel::new([ScriptedTurn::call(
        "echo",
        json!({"text": "x"}),
    )]));
    let tape = Arc::new(Tape::default());
    let mut p = Performance::builder(actor(model, vec![echo()]))
        .observer(tape.clone())
        .start("go")
        .unwrap();
    let _ = p.act(&CancellationToken::new()).await;
    let mut logged = tape.events();
    let cut = logged
        .iter()
        .position(|e| e.kind.name() == "tool_call_started")
        .unwrap();
    logged.truncate(cut + 1);

    // Resumed where the call is a write: it may have run, so it is answered, not repeated.
    let model = Arc::new(ScriptedModel::new([ScriptedTurn::say("recovered")]));
    let tape2 = Arc::new(Tape::default());
    let write = TestProp::make("echo", Access::Write, |_| async { Ok("ran again".into()) });
    let mut p = Performance::builder(actor(model.clone(), vec![write]))
        .observer(tape2.clone())
        .resume(&logged)
        .unwrap();
    let ended = p.act(&CancellationToken::new()).await;
    assert_eq!(ended.outcome, Outcome::Done);
    assert!(matches!(
        model.requests()[0].last(),
        Some(Message::Tool { is_error: true, content, .. }) if content.contains("interrupted")
    ));
}

#[tokio::test]
async fn events_round_trip_through_json() {
    let model = Arc::new(ScriptedModel::new([
        ScriptedTurn::call("echo", json!({"text": "hi"})),
        ScriptedTurn::say("bye"),
    ]));
    let (_, tape) = perform(model, vec![echo()], Budget::default()).await;
    for e in tape.events() {
        let line = serde_json::to_string(&e).unwrap();
        assert!(!line.contains('\n'));
        let back: Event = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e);
    }
}
