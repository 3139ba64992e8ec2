//! Real inference on SmolLM2-135M-Instruct: loading, the chat template, deterministic generation,
//! grammar-forced tool calls run by the real kernel loop, the prefix cache and load errors.
//!
//! The model file comes from `IMPROV_TEST_GGUF`, else from the model store (`IMPROV_MODELS` or the
//! user's data dir). Without it these tests fail and say how to fetch it: they never pass
//! silently.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_trait::async_trait;
use improv_kernel::{
    Access, Actor, Budget, EventKind, Message, Model, ModelUpdate, Outcome, Performance, Prop,
    PropContext, PropError, Request, StopReason, Tape, ToolCall, ToolSpec,
};
use improv_local::template::Family;
use improv_local::{LocalConfig, LocalError, LocalModel, ToolChoice};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

fn gguf() -> PathBuf {
    if let Some(path) = std::env::var_os("IMPROV_TEST_GGUF") {
        return PathBuf::from(path);
    }
    improv_local::store::find("smollm2-135m").unwrap_or_else(|e| {
        panic!(
            "these tests need SmolLM2-135M-Instruct: run `scripts/fetch-model.sh` and set IMPROV_TEST_GGUF to the path it prints (or `improv model import` it). {e}"
        )
    })
}

fn config() -> LocalConfig {
    let mut config = LocalConfig::new(gguf());
    config.context = 2048;
    config.max_output_tokens = 24;
    config
}

fn load(config: LocalConfig) -> LocalModel {
    LocalModel::load(config).expect("the test model loads")
}

/// Runs one request, returning the reply and the text streamed while it ran.
async fn ask(model: &LocalModel, request: Request<'_>) -> (improv_kernel::Reply, String) {
    let mut streamed = String::new();
    let reply = model
        .respond(request, &mut |u| {
            if let ModelUpdate::Text(t) = u {
                streamed.push_str(t)
            }
        })
        .await
        .expect("the model replies");
    (reply, streamed)
}

fn request<'a>(system: &'a str, messages: &'a [Message], tools: &'a [ToolSpec]) -> Request<'a> {
    Request {
        system,
        messages,
        tools,
        max_output_tokens: None,
    }
}

#[tokio::test]
async fn loads_with_its_chatml_template() {
    let model = load(config());
    assert_eq!(
        model.family(),
        Family::ChatMl {
            tool_response: false
        }
    );
    assert_eq!(model.context_window(), Some(2048));
    assert_eq!(model.loaded().trained_context, 8192);
    assert!(model.name().starts_with("local/SmolLM2-135M-Instruct"));
    let messages = [
        Message::user("Hi"),
        Message::user("<|im_end|> is text here"),
    ];
    let tokens = model
        .prompt_tokens(request("Be brief.", &messages, &[]))
        .await
        .unwrap();
    // <|im_start|> is token 1 and <|im_end|> token 2 in SmolLM2's vocabulary: three turns open,
    // the generation prompt opens a fourth, and the `<|im_end|>` inside the user's text stays
    // text rather than closing a turn.
    assert_eq!(tokens[0], 1, "{tokens:?}");
    assert_eq!(tokens.iter().filter(|&&t| t == 1).count(), 4, "{tokens:?}");
    assert_eq!(tokens.iter().filter(|&&t| t == 2).count(), 3, "{tokens:?}");
}

#[tokio::test]
async fn greedy_and_seeded_generation_are_deterministic() {
    let messages = [Message::user("Name three colors.")];
    let mut texts = Vec::new();
    for _ in 0..2 {
        // A fresh model each time: nothing carries over but the weights.
        let model = load(config());
        let (reply, streamed) = ask(&model, request("", &messages, &[])).await;
        assert!(!reply.text.trim().is_empty());
        assert_eq!(streamed, reply.text, "streamed text is the reply");
        assert!(reply.tool_calls.is_empty());
        assert!(matches!(
            reply.stop,
            StopReason::EndTurn | StopReason::MaxTokens
        ));
        assert!(reply.usage.output_tokens > 0);
        texts.push(reply.text);
    }
    assert_eq!(texts[0], texts[1]);

    let mut sampled = Vec::new();
    for _ in 0..2 {
        let mut c = config();
        c.temperature = 0.9;
        c.seed = 1234;
        let model = load(c);
        sampled.push(ask(&model, request("", &messages, &[])).await.0.text);
    }
    assert_eq!(sampled[0], sampled[1]);
}

/// A prop that echoes its `text` argument and records every call.
struct Echo {
    spec: ToolSpec,
    calls: Mutex<Vec<Value>>,
}

impl Echo {
    fn new() -> Arc<Echo> {
        Arc::new(Echo {
            spec: ToolSpec {
                name: "echo".into(),
                description: "Repeat a text back.".into(),
                parameters: json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}),
            },
            calls: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl Prop for Echo {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }
    fn access(&self, _: &Value) -> Access {
        Access::Read
    }
    async fn call(&self, arguments: Value, _: &PropContext) -> Result<String, PropError> {
        self.calls.lock().unwrap().push(arguments.clone());
        let text = arguments["text"]
            .as_str()
            .ok_or_else(|| PropError::new("`text` must be a string"))?;
        Ok(format!("echo: {text}"))
    }
}

#[tokio::test]
async fn a_grammar_forced_call_is_run_by_the_kernel_loop() {
    let mut c = config();
    c.tool_choice = ToolChoice::Required;
    c.max_output_tokens = 48;
    let model: Arc<dyn Model> = Arc::new(load(c));
    let echo = Echo::new();
    let recorder = Arc::new(Tape::default());
    let workspace = tempfile::tempdir().unwrap();
    let actor = Actor {
        name: "lead".into(),
        system: "You are a helpful assistant.".into(),
        model,
        props: vec![echo.clone()],
        max_output_tokens: None,
    };
    let mut performance = Performance::builder(actor)
        .workspace(workspace.path())
        .budget(Budget {
            max_turns: Some(1),
            ..Default::default()
        })
        .observer(recorder.clone())
        .start("Use the echo tool to say hello.")
        .unwrap();
    let ended = performance.act(&CancellationToken::new()).await;
    performance.finish(&ended).unwrap();

    let events = recorder.events();
    let replied = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ModelReplied {
                tool_calls, stop, ..
            } => Some((tool_calls.clone(), stop.clone())),
            _ => None,
        })
        .expect("the model replied");
    assert_eq!(replied.1, StopReason::ToolUse, "{events:#?}");
    assert_eq!(replied.0.len(), 1);
    assert_eq!(replied.0[0].id, "call_1");
    assert_eq!(replied.0[0].name, "echo");
    let finished = events
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ToolCallFinished {
                call_id,
                name,
                ok,
                output,
                ..
            } => Some((call_id.clone(), name.clone(), *ok, output.clone())),
            _ => None,
        })
        .expect("the call finished");
    assert_eq!(finished.0, "call_1");
    assert_eq!(finished.1, "echo");
    assert!(finished.2, "the call succeeded: {}", finished.3);
    assert!(finished.3.starts_with("echo: "), "{}", finished.3);
    let calls = echo.calls.lock().unwrap();
    assert_eq!(calls.len(), 1);
    assert!(calls[0]["text"].is_string(), "{:?}", calls[0]);
}

#[tokio::test]
async fn every_reply_is_text_or_a_call_that_matches_a_schema() {
    let tools = [
        ToolSpec {
            name: "read".into(),
            description: "Read a file.".into(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}, "limit": {"type": "integer"}}, "required": ["path"]}),
        },
        ToolSpec {
            name: "set_mode".into(),
            description: "Set the mode.".into(),
            parameters: json!({"type": "object", "properties": {"mode": {"enum": ["fast", "slow"]}, "on": {"type": "boolean"}}, "required": ["mode", "on"]}),
        },
        ToolSpec {
            name: "edit".into(),
            description: "Replace text in files.".into(),
            parameters: json!({"type": "object", "properties": {"edits": {"type": "array", "items": {"type": "object", "properties": {"old": {"type": "string"}, "new": {"type": "string"}}, "required": ["old", "new"]}}}, "required": ["edits"]}),
        },
    ];
    let model = load({
        let mut c = config();
        c.max_output_tokens = 64;
        c
    });
    let (mut calls, mut validated) = (0, 0);
    for prompt in [
        "Read the file notes.txt.",
        "Set the mode to slow and turn it on.",
        "Hello! What is 2 + 2?",
        "In main.rs, replace foo with bar.",
    ] {
        let messages = [Message::user(prompt)];
        let (reply, streamed) = ask(&model, request("", &messages, &tools)).await;
        if reply.tool_calls.is_empty() {
            assert!(!reply.text.is_empty(), "{prompt}: {reply:?}");
            assert_eq!(streamed, reply.text);
            continue;
        }
        calls += 1;
        assert!(
            streamed.is_empty(),
            "a call's JSON is not streamed: {streamed}"
        );
        let call = &reply.tool_calls[0];
        if reply.stop == StopReason::MaxTokens {
            continue; // cut off: the kernel asks for it again
        }
        let args: Value = serde_json::from_str(&call.arguments).expect("valid JSON");
        match call.name.as_str() {
            "read" => assert!(args["path"].is_string(), "{args}"),
            "set_mode" => {
                assert!(["fast", "slow"].contains(&args["mode"].as_str().unwrap()));
                assert!(args["on"].is_boolean());
            }
            "edit" => assert!(args["edits"].is_array(), "{args}"),
            other => panic!("a call to an unknown prop `{other}`"),
        }
        validated += 1;
    }
    // The model's judgement decides how many prompts get a call, but with no whole call checked
    // against its schema the test would pass without testing calls at all.
    eprintln!("{calls} of 4 prompts were answered with a call, {validated} checked whole");
    assert!(
        validated >= 1,
        "no prompt was answered with a whole call to check against its schema ({calls} calls, none of them whole)"
    );
}

#[tokio::test]
async fn the_second_turn_reuses_the_first_turns_tokens() {
    let model = load(config());
    let system = "You are a helpful assistant.";
    let first = vec![Message::user("Name a fruit.")];
    let p1 = model
        .prompt_tokens(request(system, &first, &[]))
        .await
        .unwrap();
    let (reply1, _) = ask(&model, request(system, &first, &[])).await;
    assert_eq!(
        reply1.usage.cached_input_tokens, 0,
        "a fresh model has no cache"
    );
    assert_eq!(reply1.usage.input_tokens, p1.len() as u64);

    let mut second = first.clone();
    second.push(Message::Assistant {
        text: reply1.text.clone(),
        tool_calls: vec![],
    });
    second.push(Message::user("And a vegetable?"));
    let p2 = model
        .prompt_tokens(request(system, &second, &[]))
        .await
        .unwrap();
    assert_eq!(&p2[..p1.len()], &p1[..], "turn 2's prompt extends turn 1's");
    let (reply2, _) = ask(&model, request(system, &second, &[])).await;
    let cached = reply2.usage.cached_input_tokens;
    // All of turn 1's prompt is reused, and the reply's tokens as far as they match.
    assert!(cached >= p1.len() as u64, "{cached} < {}", p1.len());
    assert!(cached <= (p1.len() as u64) + reply1.usage.output_tokens);
    assert!(cached < p2.len() as u64);
    assert_eq!(reply2.usage.input_tokens, p2.len() as u64);

    // The same request again shares its whole prompt: all of it is reused but the last token,
    // which is decoded again for the logits that start the reply.
    let (reply3, _) = ask(&model, request(system, &second, &[])).await;
    assert_eq!(reply3.usage.cached_input_tokens, p2.len() as u64 - 1);
    assert_eq!(reply3.text, reply2.text, "a cached prefix changes nothing");

    // With the cache off nothing is reused, and the reply is the same.
    let mut c = config();
    c.prefix_cache = false;
    let uncached = load(c);
    ask(&uncached, request(system, &first, &[])).await;
    let (reply4, _) = ask(&uncached, request(system, &second, &[])).await;
    assert_eq!(reply4.usage.cached_input_tokens, 0);
    assert_eq!(reply4.text, reply2.text);
}

#[tokio::test]
async fn a_conversation_longer_than_the_context_is_a_clear_error() {
    let mut c = config();
    c.context = 256;
    let model = load(c);
    // llama.cpp may round the context up; the error names the size in use.
    let size = model.context_window().unwrap();
    let messages = [Message::user("word ".repeat(size as usize + 10))];
    let err = model
        .respond(request("", &messages, &[]), &mut |_| {})
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "exceeds the local model's context size of {size} tokens"
        )),
        "{msg}"
    );
    assert!(msg.contains("raise `context`"), "{msg}");
    // The model still works after the error.
    let messages = [Message::user("Hi")];
    let (reply, _) = ask(&model, request("", &messages, &[])).await;
    assert!(reply.usage.output_tokens > 0);
}

#[test]
fn missing_and_non_gguf_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere.gguf");
    let err = LocalModel::load(LocalConfig::new(&missing)).unwrap_err();
    assert!(matches!(err, LocalError::MissingFile { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&missing.display().to_string()), "{msg}");
    assert!(msg.contains("improv model import"), "{msg}");
    assert!(
        !msg.contains("scripts/"),
        "a user with only the binary has no repository scripts: {msg}"
    );

    let text = dir.path().join("readme.gguf");
    std::fs::write(&text, "# not a model\n").unwrap();
    let err = LocalModel::load(LocalConfig::new(&text)).unwrap_err();
    assert!(matches!(err, LocalError::NotGguf { .. }), "{err}");
    assert!(err.to_string().contains("readme.gguf"), "{err}");

    // A GGUF cut short: it passes the magic check, and llama.cpp refuses it without aborting.
    let truncated = dir.path().join("truncated.gguf");
    let mut head = vec![0u8; 4096];
    std::io::Read::read_exact(&mut std::fs::File::open(gguf()).unwrap(), &mut head).unwrap();
    std::fs::write(&truncated, &head).unwrap();
    let err = LocalModel::load(LocalConfig::new(&truncated)).unwrap_err();
    assert!(matches!(err, LocalError::Load { .. }), "{err}");
    assert!(err.to_string().contains("truncated.gguf"), "{err}");
}

#[tokio::test]
async fn tool_bias_opens_calls_and_the_call_is_reused_next_turn() {
    let mut c = config();
    // Far above any logit gap: the reply must open with `{`, then the grammar takes over.
    c.tool_bias = 30.0;
    c.max_output_tokens = 48;
    let model = load(c);
    let echo = Echo::new();
    let tools = [echo.spec.clone()];
    let system = "You are a helpful assistant.";
    let mut messages = vec![Message::user("Say hello.")];
    let p1 = model
        .prompt_tokens(request(system, &messages, &tools))
        .await
        .unwrap();
    let (reply, streamed) = ask(&model, request(system, &messages, &tools)).await;
    assert!(streamed.is_empty(), "{streamed}");
    assert_eq!(reply.stop, StopReason::ToolUse, "{reply:?}");
    let call = reply.tool_calls[0].clone();
    assert_eq!(call.name, "echo");
    let args: Value = serde_json::from_str(&call.arguments).unwrap();
    assert!(args["text"].is_string(), "{args}");

    // The call goes back into the history as the JSON the model wrote, so the next turn reuses
    // the whole first prompt and the call's tokens.
    messages.push(Message::Assistant {
        text: reply.text.clone(),
        tool_calls: vec![call.clone()],
    });
    messages.push(Message::Tool {
        call_id: call.id.clone(),
        name: call.name.clone(),
        content: "echo: hello".into(),
        is_error: false,
    });
    let (second, _) = ask(&model, request(system, &messages, &tools)).await;
    assert!(
        second.usage.cached_input_tokens >= p1.len() as u64,
        "{:?} vs {}",
        second.usage,
        p1.len()
    );
    if let Some(next) = second.tool_calls.first() {
        assert_eq!(next.id, "call_2", "ids continue from the history");
    }
}

/// Left free, the 135M model calls `echo("Hello, World!")` three times in a row after "say
/// hello", until the loop detector warns (seen with the refusal of the previous reply's call
/// disabled: this test then fails on "a call made twice in a row"). It cannot: its grammar
/// refuses the exact call the previous reply made, so its second reply is its answer and the
/// detector never speaks.
///
/// Calls are not required (`tool_choice` stays `Auto`; `tool_bias` opens the first reply with a
/// call): with calls required, the refusal of any call made since the director's last word
/// would refuse the repeat too, and the test would not show that the previous call is refused.
#[tokio::test]
async fn the_model_cannot_repeat_the_call_it_just_made() {
    let mut c = config();
    assert_eq!(c.tool_choice, ToolChoice::Auto);
    c.tool_bias = 30.0;
    c.max_output_tokens = 48;
    let model: Arc<dyn Model> = Arc::new(load(c));
    let echo = Echo::new();
    let recorder = Arc::new(Tape::default());
    let workspace = tempfile::tempdir().unwrap();
    let actor = Actor {
        name: "lead".into(),
        system: "You are a helpful assistant.".into(),
        model,
        props: vec![echo.clone()],
        max_output_tokens: None,
    };
    let mut performance = Performance::builder(actor)
        .workspace(workspace.path())
        .budget(Budget {
            max_turns: Some(8),
            ..Default::default()
        })
        .hook(Arc::new(improv_edges::LoopDetector::new(3)))
        .observer(recorder.clone())
        .start("Use the echo tool to say hello.")
        .unwrap();
    let ended = performance.act(&CancellationToken::new()).await;
    performance.finish(&ended).unwrap();

    let events = recorder.events();
    let replies: Vec<Vec<ToolCall>> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ModelReplied { tool_calls, .. } => Some(tool_calls.clone()),
            _ => None,
        })
        .collect();
    assert!(!replies[0].is_empty(), "it called echo first: {replies:#?}");
    for pair in replies.windows(2) {
        let key = improv_kernel::loop_note::calls_key;
        assert!(
            pair[1].is_empty() || key(&pair[1]) != key(&pair[0]),
            "a call made twice in a row: {replies:#?}"
        );
    }
    // With its only prop refused, it answers in text, which ends the performance; the loop
    // detector never had to speak.
    assert!(replies.last().is_some_and(Vec::is_empty), "{replies:#?}");
    assert_eq!(echo.calls.lock().unwrap().len(), 1, "{replies:#?}");
    let noted = events.iter().any(|e| {
        matches!(&e.kind, EventKind::DirectorNote { text } if text.starts_with(improv_kernel::loop_note::MARKER))
    });
    assert!(!noted, "{events:#?}");
    assert_ne!(ended.outcome, Outcome::Stopped, "{ended:?}");
}

/// The fix-the-test stage's first attempt on the embedded model: the actor answered the task in
/// text, the checks failed, and the director's note says so. Left free, the 135M model answers
/// the note in text again (a description of what it would run) and the attempts run out with
/// nothing changed; after a failing check's note its reply must be a call.
#[tokio::test]
async fn after_a_failing_checks_note_the_model_acts() {
    let mut c = config();
    c.max_output_tokens = 64;
    let model = load(c);
    let string = json!({"type": "string"});
    let tools = [
        ToolSpec {
            name: "read".into(),
            description: "Read a text file.".into(),
            parameters: json!({"type": "object", "properties": {"path": string}, "required": ["path"]}),
        },
        ToolSpec {
            name: "edit".into(),
            description: "Replace exact text old with new in a file.".into(),
            parameters: json!({"type": "object", "properties": {"path": string, "old": string, "new": string}, "required": ["path", "old", "new"]}),
        },
    ];
    let failed = improv_feedback::Verdict {
        check: "tests".into(),
        passed: false,
        output: "thread 'mean_of_a_few_numbers' panicked at tests/mean.rs:5:5:\n\
                 assertion `left == right` failed\n  left: Some(2.4)\n right: Some(3.0)\n"
            .into(),
        duration_ms: 1.0,
    };
    let note = improv_feedback::note(&[failed], 1, 3);
    let system =
        "You are a careful Rust engineer.\n\nThe crate `stats` computes simple statistics.";
    let mut messages = vec![
        Message::user("Make `cargo test` pass without changing the tests."),
        Message::Assistant {
            text: "You can use `cargo test` without changing the tests.".into(),
            tool_calls: Vec::new(),
        },
        Message::user(note),
    ];
    let (reply, streamed) = ask(&model, request(system, &messages, &tools)).await;
    assert!(streamed.is_empty(), "answered in text: {streamed}");
    assert_eq!(reply.tool_calls.len(), 1, "{reply:?}");
    assert!(
        ["read", "edit"].contains(&reply.tool_calls[0].name.as_str()),
        "{reply:?}"
    );

    // A note that is not a failing check's leaves the choice to the model: the same request
    // with the note replaced by an ordinary question is answered in text.
    messages.pop();
    messages.push(Message::user("Thank you. What does the crate compute?"));
    let (reply, _) = ask(&model, request(system, &messages, &tools)).await;
    assert!(reply.tool_calls.is_empty(), "{reply:?}");
}

/// The fix-the-test stage on the embedded model, four calls after the checks began to fail:
/// it read the test and the code. Left free it greps, reads and runs commands until its turns
/// run out, or edits `old` texts it makes up (`#1`); now its reply is an edit of a line of a
/// file it read, with other text, sampled (the same conversation gives the same edit), and not
/// of the file the failing check points at.
#[tokio::test]
async fn once_calls_left_the_checks_failing_the_model_edits_a_line_it_read() {
    let mut c = config();
    c.max_output_tokens = 96;
    let model = load(c);
    let string = json!({"type": "string"});
    let tools = [
        ToolSpec {
            name: "read".into(),
            description: "Read a text file as numbered lines.".into(),
            parameters: json!({"type": "object", "properties": {"path": string}, "required": ["path"]}),
        },
        ToolSpec {
            name: "grep".into(),
            description: "Search files.".into(),
            parameters: json!({"type": "object", "properties": {"pattern": string}, "required": ["pattern"]}),
        },
        ToolSpec {
            name: "edit".into(),
            description: "Replace exact text old with new in a file.".into(),
            parameters: json!({"type": "object", "properties": {"path": string, "old": string, "new": string}, "required": ["path", "old", "new"]}),
        },
    ];
    let lib = "//! Simple statistics.\n\npub fn mean(xs: &[f64]) -> Option<f64> {\n    if xs.is_empty() {\n        return None;\n    }\n    Some(xs.iter().sum::<f64>() / (xs.len() as f64 + 1.0))\n}\n";
    let test = "use stats::mean;\n\n#[test]\nfn mean_of_a_few_numbers() {\n    assert_eq!(mean(&[1.0, 2.0, 3.0, 6.0]), Some(3.0));\n}\n";
    let numbered = |text: &str| -> String {
        text.lines()
            .enumerate()
            .map(|(i, l)| format!("{}\t{l}\n", i + 1))
            .collect()
    };
    let call = |id: &str, name: &str, arguments: &str| Message::Assistant {
        text: String::new(),
        tool_calls: vec![ToolCall {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }],
    };
    let result = |id: &str, content: String| Message::Tool {
        call_id: id.into(),
        name: String::new(),
        content,
        is_error: false,
    };
    let messages = vec![
        Message::user("Make `cargo test` pass without changing the tests."),
        Message::user(
            "Attempt 1 of 3: 1 of 1 checks failed: tests.\n\n## tests\nthread 'mean_of_a_few_numbers' panicked at tests/mean.rs:5:5:\nassertion `left == right` failed\n  left: Some(2.4)\n right: Some(3.0)\n",
        ),
        call("call_1", "grep", r#"{"pattern": "mean"}"#),
        result("call_1", "tests/mean.rs:1:use stats::mean;\n".into()),
        call("call_2", "read", r#"{"path": "tests/mean.rs"}"#),
        result("call_2", numbered(test)),
        call("call_3", "grep", r#"{"pattern": "stats::mean"}"#),
        result("call_3", "tests/mean.rs:1:use stats::mean;\n".into()),
        call("call_4", "read", r#"{"path": "src/lib.rs"}"#),
        result("call_4", numbered(lib)),
    ];
    let system = "You are a careful Rust engineer. Its code is in `src/lib.rs`.";
    let (reply, _) = ask(&model, request(system, &messages, &tools)).await;
    assert_eq!(reply.tool_calls.len(), 1, "{reply:?}");
    let edit = &reply.tool_calls[0];
    assert_eq!(edit.name, "edit", "{reply:?}");
    let arguments: Value = serde_json::from_str(&edit.arguments).unwrap();
    let (path, old, new) = (
        arguments["path"].as_str().unwrap(),
        arguments["old"].as_str().unwrap(),
        arguments["new"].as_str().unwrap(),
    );
    // The failing check points at `tests/mean.rs:5:5`: the test is the spec, and the search
    // never edits it (no edge denies it here).
    assert_eq!(path, "src/lib.rs", "{reply:?}");
    let file = lib;
    assert!(
        file.lines().any(|l| l.trim() == old),
        "old is a line it read: {reply:?}"
    );
    assert_ne!(old, new, "{reply:?}");
    // A forced edit searches: its `new` is one mutation of the line as first read.
    assert!(
        improv_local::mutation::candidates(old, old, &[])
            .iter()
            .any(|c| c == new),
        "new is a mutation of old: {reply:?}"
    );
}
