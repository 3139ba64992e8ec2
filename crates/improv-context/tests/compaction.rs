//! Drives the real performance loop through long performances with a small threshold and
//! checks what the compactor keeps, cuts and reports.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use improv_context::{Compactor, SUMMARY_HEADER, UNCOMPACTED_WARNING_AT, estimate};
use improv_kernel::*;
use serde_json::json;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

const INTENT: &str = "Read every chapter and report the longest word.";
const SYSTEM: &str = "You are a test actor.";

/// What these tests read from the kernel's [`Tape`].
trait Read {
    fn compactions(&self) -> Vec<(u32, u32, u64, u64)>;
    fn input_tokens(&self) -> Vec<u64>;
}

impl Read for Tape {
    fn compactions(&self) -> Vec<(u32, u32, u64, u64)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Compacted {
                    messages,
                    trimmed,
                    tokens_before,
                    tokens_after,
                    ..
                } => Some((messages, trimmed, tokens_before, tokens_after)),
                _ => None,
            })
            .collect()
    }
    fn input_tokens(&self) -> Vec<u64> {
        self.events()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Usage { input_tokens, .. } => Some(input_tokens),
                _ => None,
            })
            .collect()
    }
}

/// The actor's model: requests with props go to the actor's script, requests without (the
/// compactor's summaries) to the summarizer's.
struct Split {
    actor: ScriptedModel,
    summarizer: ScriptedModel,
    summary_texts: Mutex<Vec<(String, String)>>,
}

impl Split {
    fn new(actor: ScriptedModel, summarizer: ScriptedModel) -> Self {
        Split {
            actor,
            summarizer,
            summary_texts: Mutex::new(Vec::new()),
        }
    }
}

#[async_trait]
impl Model for Split {
    fn name(&self) -> &str {
        "scripted/split"
    }
    async fn respond(
        &self,
        request: Request<'_>,
        update: &mut (dyn for<'u> FnMut(ModelUpdate<'u>) + Send),
    ) -> Result<Reply, ModelError> {
        if request.tools.is_empty() {
            let asked = match request.messages {
                [Message::User { text }] => text.clone(),
                other => panic!("a summary request is one director message, not {other:?}"),
            };
            self.summary_texts
                .lock()
                .unwrap()
                .push((request.system.to_string(), asked));
            self.summarizer.respond(request, update).await
        } else {
            self.actor.respond(request, update).await
        }
    }
}

/// A `read` prop that returns a long chapter: 3,000 bytes with a recognizable head and tail.
struct Chapters;

#[async_trait]
impl Prop for Chapters {
    fn spec(&self) -> &ToolSpec {
        static SPEC: std::sync::OnceLock<ToolSpec> = std::sync::OnceLock::new();
        SPEC.get_or_init(|| ToolSpec {
            name: "read".into(),
            description: "read a chapter".into(),
            parameters: json!({"type": "object"}),
        })
    }
    fn access(&self, _: &serde_json::Value) -> Access {
        Access::Read
    }
    async fn call(&self, args: serde_json::Value, _: &PropContext) -> Result<String, PropError> {
        let n = args["chapter"].as_u64().unwrap();
        let body: String = (0..60)
            .map(|i| format!("chapter {n} line {i:02} ....................................\n"))
            .collect();
        Ok(format!("BEGIN {n}\n{body}END {n}"))
    }
}

/// `turns` turns, each reading one chapter (two chapters every third turn), then a final answer.
fn script(turns: u64) -> Vec<ScriptedTurn> {
    let mut script: Vec<ScriptedTurn> = (1..=turns)
        .map(|n| {
            let turn = ScriptedTurn::call("read", json!({"chapter": n}));
            let turn = if n % 3 == 0 {
                turn.and_call("read", json!({"chapter": n + 1000}))
            } else {
                turn
            };
            ScriptedTurn {
                say: format!("Reading chapter {n}."),
                ..turn
            }
        })
        .collect();
    script.push(ScriptedTurn::say("The longest word is 'chapter'."));
    script
}

async fn perform(model: Arc<Split>, compactor: Compactor) -> (Ended, Arc<Tape>, Vec<Message>) {
    let tape = Arc::new(Tape::default());
    let actor = Actor {
        name: "lead".into(),
        system: SYSTEM.into(),
        model,
        props: vec![Arc::new(Chapters)],
        max_output_tokens: None,
    };
    let mut p = Performance::builder(actor)
        .stage("test")
        .hook(Arc::new(compactor))
        .observer(tape.clone())
        .start(INTENT)
        .unwrap();
    let ended = p.act(&CancellationToken::new()).await;
    let conversation = p.conversation().to_vec();
    p.finish(&ended).unwrap();
    (ended, tape, conversation)
}

/// Every tool result answers a call of the assistant message before it, and every call is
/// answered before the next assistant message.
fn assert_pairs_whole(conversation: &[Message]) {
    let mut open: HashSet<String> = HashSet::new();
    for (i, m) in conversation.iter().enumerate() {
        match m {
            Message::Assistant { tool_calls, .. } => {
                assert!(
                    open.is_empty(),
                    "calls {open:?} unanswered before message {i}"
                );
                open = tool_calls.iter().map(|c| c.id.clone()).collect();
            }
            Message::Tool { call_id, .. } => {
                assert!(
                    open.remove(call_id),
                    "orphaned result {call_id} at {i}: {conversation:#?}"
                );
            }
            Message::User { .. } => {}
        }
    }
}

fn assistant_texts(conversation: &[Message]) -> Vec<String> {
    conversation
        .iter()
        .filter_map(|m| match m {
            Message::Assistant { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_long_performance_stays_inside_a_small_window() {
    const THRESHOLD: u64 = 3_000;
    const TURNS: u64 = 30;
    let summaries = (1..=TURNS).map(|n| {
        ScriptedTurn::say(format!(
            "Summary {n}: chapters read so far, all lines alike."
        ))
    });
    let model = Arc::new(Split::new(
        ScriptedModel::new(script(TURNS)),
        ScriptedModel::new(summaries),
    ));
    let (ended, tape, last) = perform(
        model.clone(),
        Compactor::new(Some(THRESHOLD), 2).trim_tool_results_to(600),
    )
    .await;
    assert_eq!(ended.outcome, Outcome::Done, "{}", ended.reason);

    // The log is enough to rebuild the compacted conversation exactly: a resumed performance
    // goes on from what the actor last saw, not from the whole history.
    let logged = tape.events();
    assert_eq!(improv_kernel::resume::replay(&logged).conversation, last);

    // Without compaction the last request would carry ~40 chapters of 3 KB: ~30k tokens.
    let requests = model.actor.requests();
    assert_eq!(requests.len() as u64, TURNS + 1);
    // Every summary call is accounted for too: one `usage` event per model call of either kind.
    let summaries = model.summary_texts.lock().unwrap().len();
    assert!(summaries > 0);
    assert_eq!(
        tape.input_tokens().len(),
        requests.len() + summaries,
        "the summaries' tokens must reach the budget"
    );
    let inputs = tape.input_tokens();
    for (i, tokens) in inputs.iter().enumerate() {
        assert!(
            *tokens <= THRESHOLD,
            "request {} took {tokens} input tokens",
            i + 1
        );
    }
    assert!(estimate(&last) < THRESHOLD);

    for conversation in &requests {
        // The intent stays first and verbatim; the pairs stay whole.
        assert_eq!(conversation[0], Message::user(INTENT));
        assert_pairs_whole(conversation);
    }

    // The two most recent turns survive verbatim, their chapters untrimmed.
    let texts = assistant_texts(&last);
    assert_eq!(
        &texts[texts.len() - 3..],
        &[
            format!("Reading chapter {}.", TURNS - 1),
            format!("Reading chapter {TURNS}."),
            "The longest word is 'chapter'.".to_string()
        ]
    );
    let last_result = last.iter().rev().find_map(|m| match m {
        Message::Tool { content, .. } => Some(content.clone()),
        _ => None,
    });
    let last_result = last_result.unwrap();
    assert!(
        last_result.contains("line 30") && last_result.ends_with(&format!("END {}", TURNS + 1000))
    );

    // The older turns became a summary by the actor's own model, asked without props.
    let summary = last
        .iter()
        .find_map(|m| match m {
            Message::User { text } if text.starts_with(SUMMARY_HEADER) => Some(text.clone()),
            _ => None,
        })
        .expect("a summary message");
    assert!(summary.contains("chapters read so far"), "{summary}");
    assert_eq!(last[1], Message::user(summary.clone()));
    let asked = model.summary_texts.lock().unwrap().clone();
    assert!(!asked.is_empty());
    let (system, first) = &asked[0];
    assert!(system.contains("Summarize"), "{system}");
    assert!(
        first.contains(INTENT) && first.contains("[actor calls read]") && first.contains("BEGIN 1"),
        "{first}"
    );
    // A later summary folds the earlier one in.
    if let Some((_, second)) = asked.get(1) {
        assert!(second.contains("Summary 1:"), "{second}");
    }

    // Each compaction was recorded, with what it saved.
    let compactions = tape.compactions();
    let summarized = compactions.iter().filter(|c| c.0 > 0).count();
    assert!(summarized > 1, "{compactions:?}");
    assert_eq!(summarized, asked.len());
    for (messages, trimmed, before, after) in &compactions {
        assert!(*messages > 0 || *trimmed > 0);
        assert!(*before >= THRESHOLD, "{before}");
        assert!(
            after < before && *after < THRESHOLD,
            "{after} after {before}"
        );
    }
    // Old chapters were trimmed before they were summarized.
    assert!(compactions.iter().any(|c| c.1 > 0), "{compactions:?}");
    assert!(
        asked
            .iter()
            .any(|(_, a)| a.contains("cut here to save context"))
    );
}

#[tokio::test]
async fn a_failed_summary_falls_back_to_trimming_and_keeps_the_intent() {
    const THRESHOLD: u64 = 3_000;
    const TURNS: u64 = 12;
    let failures = (1..=TURNS).map(|_| ScriptedTurn::fails("the provider is down"));
    let model = Arc::new(Split::new(
        ScriptedModel::new(script(TURNS)),
        ScriptedModel::new(failures),
    ));
    let (ended, tape, last) = perform(
        model.clone(),
        Compactor::new(Some(THRESHOLD), 2).trim_tool_results_to(300),
    )
    .await;
    assert_eq!(ended.outcome, Outcome::Done, "{}", ended.reason);
    assert!(
        !model.summarizer.requests().is_empty(),
        "a summary was attempted"
    );

    // No summary, and no event claims one: only trims.
    assert!(
        !last
            .iter()
            .any(|m| matches!(m, Message::User { text } if text.starts_with(SUMMARY_HEADER)))
    );
    let compactions = tape.compactions();
    assert!(!compactions.is_empty());
    for (messages, trimmed, before, after) in &compactions {
        assert_eq!(*messages, 0);
        assert!(*trimmed > 0);
        assert!(after < before);
    }

    // Every turn is still there, trimmed; the intent first; the pairs whole.
    assert_eq!(last[0], Message::user(INTENT));
    assert_eq!(assistant_texts(&last).len() as u64, TURNS + 1);
    assert_pairs_whole(&last);
    let trimmed = last
        .iter()
        .filter(|m| matches!(m, Message::Tool { content, .. } if content.contains("cut here to save context")))
        .count();
    assert!(trimmed >= 10, "{trimmed} results trimmed");
}

#[tokio::test]
async fn without_a_threshold_or_a_known_window_nothing_is_compacted() {
    let model = Arc::new(Split::new(
        ScriptedModel::new(script(10)),
        ScriptedModel::new([]),
    ));
    let (ended, tape, last) = perform(model.clone(), Compactor::default()).await;
    assert_eq!(ended.outcome, Outcome::Done);
    assert!(tape.compactions().is_empty());
    assert!(model.summarizer.requests().is_empty());
    assert!(
        last.iter()
            .all(|m| !matches!(m, Message::Tool { content, .. } if content.contains("cut here")))
    );
}

/// The actor's model whose summaries never come: it says when one was asked for, then waits
/// forever, as a provider that hangs would.
struct HangingSummary {
    actor: ScriptedModel,
    asked: Arc<tokio::sync::Notify>,
}

#[async_trait]
impl Model for HangingSummary {
    fn name(&self) -> &str {
        "scripted/hanging-summary"
    }
    async fn respond(
        &self,
        request: Request<'_>,
        update: &mut (dyn for<'u> FnMut(ModelUpdate<'u>) + Send),
    ) -> Result<Reply, ModelError> {
        if request.tools.is_empty() {
            self.asked.notify_one();
            std::future::pending::<()>().await;
        }
        self.actor.respond(request, update).await
    }
}

#[tokio::test]
async fn ctrl_c_interrupts_a_compaction_waiting_on_its_summary() {
    let asked = Arc::new(tokio::sync::Notify::new());
    let model = Arc::new(HangingSummary {
        actor: ScriptedModel::new(script(12)),
        asked: asked.clone(),
    });
    let tape = Arc::new(Tape::default());
    let actor = Actor {
        name: "lead".into(),
        system: SYSTEM.into(),
        model,
        props: vec![Arc::new(Chapters)],
        max_output_tokens: None,
    };
    let compactor = Compactor::new(Some(3_000), 2).trim_tool_results_to(300);
    let mut p = Performance::builder(actor)
        .stage("test")
        .hook(Arc::new(compactor))
        .observer(tape.clone())
        .start(INTENT)
        .unwrap();
    let cancel = CancellationToken::new();
    // The director presses Ctrl-C once the summary is being waited for.
    let director = tokio::spawn({
        let cancel = cancel.clone();
        async move {
            asked.notified().await;
            cancel.cancel();
        }
    });
    // The summary never comes: only the cancellation can end this act.
    let ended = tokio::time::timeout(std::time::Duration::from_secs(20), p.act(&cancel))
        .await
        .expect("the compaction kept waiting for its summary after Ctrl-C");
    director.await.unwrap();
    assert_eq!(ended.outcome, Outcome::Interrupted, "{}", ended.reason);
    // What was trimmed before the summary was asked for is logged, so a resume rebuilds it.
    let trims: u32 = tape.compactions().iter().map(|c| c.1).sum();
    let trimmed = p
        .conversation()
        .iter()
        .filter(|m| matches!(m, Message::Tool { content, .. } if content.contains("cut here to save context")))
        .count();
    assert_eq!(trims as usize, trimmed);
    assert_pairs_whole(p.conversation());
}

/// What a test's log subscriber writes.
struct Logged(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logged {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A conversation that nothing compacts (its model names no context window and no threshold was
/// given) is reported in the log once it passes `UNCOMPACTED_WARNING_AT`, once per performance
/// however many turns follow, naming the model and the setting that bounds it; a smaller one is
/// not.
#[tokio::test]
async fn a_large_conversation_that_is_never_compacted_is_reported_once() {
    let logged = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::fmt()
        .with_writer(Mutex::new(Logged(logged.clone())))
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let perform = |intent: String| async move {
        let actor = Actor {
            name: "lead".into(),
            system: SYSTEM.into(),
            model: Arc::new(ScriptedModel::new(script(3))),
            props: vec![Arc::new(Chapters)],
            max_output_tokens: None,
        };
        let mut p = Performance::builder(actor)
            .stage("test")
            .hook(Arc::new(Compactor::default()))
            .start(&intent)
            .unwrap();
        let ended = p.act(&CancellationToken::new()).await;
        p.finish(&ended).unwrap();
        assert_eq!(ended.outcome, Outcome::Done, "{ended:?}");
    };
    let mark = UNCOMPACTED_WARNING_AT as usize * 4;
    perform("x".repeat(mark / 2)).await;
    let said = String::from_utf8(logged.lock().unwrap().clone()).unwrap();
    assert!(!said.contains("never compacted"), "{said}");

    perform("x".repeat(mark)).await;
    let said = String::from_utf8(logged.lock().unwrap().clone()).unwrap();
    assert_eq!(said.matches("never compacted").count(), 1, "{said}");
    assert!(said.contains("the model `scripted/test`"), "{said}");
    assert!(said.contains("compact_at"), "{said}");
}
