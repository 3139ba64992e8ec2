//! [`LocalModel`]: the [`Model`] trait on top of the engine thread.

use crate::engine::{self, Generated, Job, Loaded};
use crate::grammar::{self, Parsed};
use crate::template::{self, Family, Piece};
use crate::{LocalConfig, LocalError, ToolChoice};
use async_trait::async_trait;
use improv_kernel::{
    Message, Model, ModelError, ModelUpdate, Reply, Request, StopReason, ToolCall, Usage, loop_note,
};
use std::sync::mpsc;
use tokio::sync::{mpsc as tokio_mpsc, oneshot};

/// A GGUF model running in-process. Cheap to share behind an `Arc`; requests are served one at a
/// time, in order, by its engine thread (see [`crate::engine`]).
pub struct LocalModel {
    name: String,
    config: LocalConfig,
    family: Family,
    loaded: Loaded,
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for LocalModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalModel")
            .field("name", &self.name)
            .field("path", &self.config.path)
            .field("family", &self.family)
            .field("context", &self.loaded.context)
            .finish()
    }
}

impl LocalModel {
    /// Loads the GGUF file at `config.path`, named `local/<file stem>`. Blocks while llama.cpp
    /// maps the file (a fraction of a second for small models).
    pub fn load(config: LocalConfig) -> Result<LocalModel, LocalError> {
        let stem = config
            .path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("model")
            .to_string();
        Self::load_named(&format!("local/{stem}"), config)
    }

    /// Loads a model under the name the stage file gave it.
    pub fn load_named(name: &str, config: LocalConfig) -> Result<LocalModel, LocalError> {
        let (jobs, loaded) = engine::start(config.clone())?;
        let family = match loaded.chat_template.as_deref().and_then(Family::detect) {
            Some(f) => f,
            None => {
                tracing::warn!(
                    path = %config.path.display(),
                    "the model has no chat template improv knows (ChatML, Llama 3, Gemma); using ChatML"
                );
                Family::ChatMl {
                    tool_response: false,
                }
            }
        };
        Ok(LocalModel {
            name: name.to_string(),
            config,
            family,
            loaded,
            jobs,
        })
    }

    pub fn config(&self) -> &LocalConfig {
        &self.config
    }

    /// The prompt format detected from the model's chat template.
    pub fn family(&self) -> Family {
        self.family
    }

    /// What the engine reported when it loaded the model.
    pub fn loaded(&self) -> &Loaded {
        &self.loaded
    }

    /// The rendered prompt of a request, and the tool grammar when it offers props.
    pub fn prompt(&self, request: &Request<'_>) -> (Vec<Piece>, Option<String>) {
        let narrowing = self.narrowing(request, must_act(request.messages));
        self.prompt_narrowed(request, &narrowing)
    }

    /// [`prompt`](Self::prompt) with the grammar narrowed as `narrowing` says.
    fn prompt_narrowed(
        &self,
        request: &Request<'_>,
        narrowing: &grammar::Narrowing,
    ) -> (Vec<Piece>, Option<String>) {
        if request.tools.is_empty() {
            return (
                template::render(self.family, request.system, request.messages),
                None,
            );
        }
        let instructions = grammar::instructions(request.tools);
        let system = if request.system.trim().is_empty() {
            instructions
        } else {
            format!("{}\n\n{instructions}", request.system.trim_end())
        };
        (
            template::render(self.family, &system, request.messages),
            Some(grammar::gbnf_narrowed(request.tools, narrowing)),
        )
    }

    /// How the grammar of the next reply is narrowed: a call is required always with
    /// `tool_choice = "required"`, and while the checks fail (see [`must_act`]); while they
    /// fail, the files it reads are those the director's words name ([`mentioned_paths`]) (a
    /// prop that writes files keeps any path, see `grammar::Narrowing::paths`), and the calls
    /// are lean: required arguments only, short strings (see `grammar::Narrowing::lean`).
    /// `failing` is [`must_act`] of the request's messages.
    fn narrowing(&self, request: &Request<'_>, failing: bool) -> grammar::Narrowing {
        grammar::Narrowing {
            required: self.config.tool_choice == ToolChoice::Required || failing,
            paths: if failing {
                mentioned_paths(request.system, request.messages)
            } else {
                Vec::new()
            },
            avoid: Vec::new(),
            lean: failing,
        }
    }

    /// The prompt's tokens, as the engine would evaluate them.
    pub async fn prompt_tokens(&self, request: Request<'_>) -> Result<Vec<i32>, ModelError> {
        let (prompt, _) = self.prompt(&request);
        let generated = self.run(prompt, None, false, 0, true, &mut |_| {}).await?;
        Ok(generated.prompt_tokens)
    }

    async fn run(
        &self,
        prompt: Vec<Piece>,
        grammar: Option<String>,
        nudge: bool,
        max_tokens: u32,
        tokenize_only: bool,
        update: &mut (dyn for<'u> FnMut(ModelUpdate<'u>) + Send),
    ) -> Result<Generated, ModelError> {
        let (text_tx, mut text_rx) = tokio_mpsc::unbounded_channel();
        let (done_tx, done_rx) = oneshot::channel();
        let job = Job {
            prompt,
            grammar,
            max_tokens,
            text: text_tx,
            done: done_tx,
            tokenize_only,
            nudge,
        };
        let gone = || {
            ModelError::Unavailable(format!(
                "the engine of {} stopped; load the model again",
                self.name
            ))
        };
        self.jobs.send(job).map_err(|_| gone())?;
        // The engine drops the text sender when the job ends, which ends this loop.
        while let Some(text) = text_rx.recv().await {
            update(ModelUpdate::Text(&text));
        }
        done_rx.await.map_err(|_| gone())?
    }
}

#[async_trait]
impl Model for LocalModel {
    fn name(&self) -> &str {
        &self.name
    }

    fn context_window(&self) -> Option<u64> {
        Some(u64::from(self.loaded.context))
    }

    async fn respond(
        &self,
        request: Request<'_>,
        update: &mut (dyn for<'u> FnMut(ModelUpdate<'u>) + Send),
    ) -> Result<Reply, ModelError> {
        // Whether the checks fail, and the narrowing it implies, found once per reply: the
        // first try's grammar and every retry's come from them.
        let failing = must_act(request.messages);
        let mut narrowing = self.narrowing(&request, failing);
        let (prompt, grammar) = self.prompt_narrowed(&request, &narrowing);
        let max_tokens = request
            .max_output_tokens
            .unwrap_or(self.config.max_output_tokens)
            .max(1);
        let nudge = matches!(request.messages.last(), Some(Message::User { .. }));
        let mut out = self
            .run(prompt.clone(), grammar, nudge, max_tokens, false, update)
            .await?;
        // Calls since the director's last word are refused only while the checks fail, not
        // whenever a call is required (`tool_choice = "required"` needs no failing check).
        for _ in 0..MAX_REFUSED {
            let Some(avoid) = repeated_call(request.messages, &out, failing) else {
                break;
            };
            // The model is about to make a call it already made (see `repeated_call`): the same
            // call gives the same result. Try again with that call left out of the grammar too,
            // so it does something else or answers. A refused try's call was never streamed;
            // its tokens still count.
            tracing::debug!(model = %self.name, prop = %avoid.prop, "refused a repeated call");
            narrowing.avoid.push(avoid);
            let grammar = grammar::gbnf_narrowed(request.tools, &narrowing);
            let refused = out;
            out = self
                .run(
                    prompt.clone(),
                    Some(grammar),
                    nudge,
                    max_tokens,
                    false,
                    update,
                )
                .await?;
            out.input_tokens += refused.input_tokens;
            out.cached_tokens += refused.cached_tokens;
            out.output_tokens += refused.output_tokens;
        }
        tracing::debug!(
            model = %self.name,
            input = out.input_tokens,
            reused = out.cached_tokens,
            output = out.output_tokens,
            "local reply"
        );
        let usage = Usage {
            input_tokens: out.input_tokens,
            output_tokens: out.output_tokens,
            cached_input_tokens: out.cached_tokens,
        };
        let limit_or = |stop| {
            if out.hit_limit {
                StopReason::MaxTokens
            } else {
                stop
            }
        };
        let reply = |text: String, tool_calls: Vec<ToolCall>, stop| Reply {
            text,
            tool_calls,
            stop,
            usage,
            request_bytes: 0,
        };
        if !out.call {
            return Ok(reply(
                out.text.clone(),
                Vec::new(),
                limit_or(StopReason::EndTurn),
            ));
        }
        let id = format!("call_{}", next_call_number(request.messages));
        Ok(match grammar::parse(&out.text) {
            Parsed::Call { name, arguments } => reply(
                String::new(),
                vec![ToolCall {
                    id,
                    name,
                    arguments,
                }],
                limit_or(StopReason::ToolUse),
            ),
            // Cut off mid-arguments: the kernel answers it with "re-issue the call".
            Parsed::Partial {
                name: Some(name),
                arguments,
            } => reply(
                String::new(),
                vec![ToolCall {
                    id,
                    name,
                    arguments,
                }],
                StopReason::MaxTokens,
            ),
            Parsed::Partial { name: None, .. } => {
                reply(out.text.clone(), Vec::new(), StopReason::MaxTokens)
            }
        })
    }
}

/// Whether the director's last word is a note that the stage's checks fail: the reply must be a
/// call (the `tool_choice = "required"` of a hosted API) until a write makes them pass, which
/// ends the performance converged, or the director speaks again. A small model answers such a
/// note in text, describing what it would run, or says it is done after one look, and the
/// attempts run out with nothing changed; kept acting, it reads, runs and edits. The loop
/// detector's notes do not count as the director's word: they warn about a call, and the
/// refused repeat (see [`repeated_call`]) already makes the model do something else.
fn must_act(messages: &[Message]) -> bool {
    let last_note = messages.iter().rev().find_map(|m| match m {
        Message::User { text } if !loop_note::is_note(m) => Some(text),
        _ => None,
    });
    last_note.is_some_and(|text| improv_feedback::is_failing_note(text))
}

/// The most replies tried again for one request after each made a call already made.
const MAX_REFUSED: usize = 4;

/// The call in `out` when it is exactly (same prop, same parsed arguments) the call the previous
/// reply made, or the one the loop detector's note warned about (see
/// [`loop_note::warned_calls`]): nothing changed since, so it would give the same result. While
/// the checks fail (`failing`), any call made since the director's last word is refused again:
/// a small model otherwise cycles through two or three calls (`grep x`, `bash x`, `grep x`)
/// until its turns run out, which no loop detector of repeats in a row sees; the checks run
/// after every change anyway, so nothing needs to be run twice to see its effect.
fn repeated_call(messages: &[Message], out: &Generated, failing: bool) -> Option<grammar::Avoid> {
    if !out.call {
        return None;
    }
    let Parsed::Call { name, arguments } = grammar::parse(&out.text) else {
        return None;
    };
    let made = [ToolCall {
        id: String::new(),
        name,
        arguments,
    }];
    let key = loop_note::calls_key(&made);
    let previous = messages.iter().rev().find_map(|m| match m {
        Message::Assistant { tool_calls, .. } => Some(tool_calls.as_slice()),
        _ => None,
    });
    let warned = loop_note::warned_calls(messages);
    let since_note = messages
        .iter()
        .rposition(|m| matches!(m, Message::User { .. }) && !loop_note::is_note(m))
        .map_or(messages, |at| &messages[at..]);
    let earlier = since_note
        .iter()
        .filter(|_| failing)
        .filter_map(|m| match m {
            Message::Assistant { tool_calls, .. } => Some(tool_calls.as_slice()),
            _ => None,
        });
    let repeats = [previous, warned]
        .into_iter()
        .flatten()
        .chain(earlier)
        .any(|calls| loop_note::calls_key(calls) == key);
    let [made] = made;
    let arguments: serde_json::Value = serde_json::from_str(&made.arguments).unwrap_or_default();
    let string = |key: &str| {
        arguments
            .get(key)
            .and_then(|v| v.as_str())
            .map(String::from)
    };
    repeats.then(|| grammar::Avoid {
        path: string("path"),
        // What a writing prop wrote: the grammar refuses only that text, not every write.
        text: string("content").or_else(|| string("new")),
        prop: made.name,
    })
}

/// The files the director's words name — the system prompt (the stage's context files), the
/// intent and the notes, a failing check's `panicked at tests/x.rs:5:5` among them — less those
/// a call found missing. While the checks fail, a small model names files it makes up
/// (`test_1`) or a prop's name; the file to look at is almost always one of these
/// ([`names_a_file`] says which words name one). At most [`MAX_PATHS`], each an alternative in
/// every reply's grammar: those named most recently, as the newest note matters most; within a
/// text, in the order named, and the newest text first.
fn mentioned_paths(system: &str, messages: &[Message]) -> Vec<String> {
    let notes = messages.iter().filter_map(|m| match m {
        Message::User { text } => Some(text.as_str()),
        _ => None,
    });
    let missing: Vec<&str> = messages
        .iter()
        .filter_map(|m| match m {
            Message::Tool {
                content,
                is_error: true,
                ..
            } if content.contains("does not exist") => content.split('`').nth(1),
            _ => None,
        })
        .collect();
    // Only read when a name is given as an example: the results can be long, and this runs
    // at every reply.
    let shown = std::cell::OnceCell::new();
    let texts: Vec<&str> = std::iter::once(system).chain(notes).collect();
    let mut paths: Vec<String> = Vec::new();
    for text in texts.into_iter().rev() {
        let words = text
            .split(|c: char| !(c.is_ascii_alphanumeric() || "._-/".contains(c)))
            .filter(|w| !w.is_empty())
            .map(|w| w.trim_end_matches('.'));
        let mut before: [&str; 2] = ["", ""];
        for word in words {
            let example = is_example(before);
            before = [before[1], word];
            if names_a_file(word)
                && (!example || shown.get_or_init(|| shown_files(messages)).contains(&word))
                && !missing.contains(&word)
                && !paths.iter().any(|p| p == word)
            {
                paths.push(word.to_string());
                if paths.len() == MAX_PATHS {
                    return paths;
                }
            }
        }
    }
    paths
}

/// Whether the two words before a name introduce an example (`like notes.txt`, `e.g. a.rs`,
/// `such as x.md`, `for example y.py`): such a name shows a form, it names no file to look at.
/// The stage's own system prompt says "give paths relative to it, like `notes.txt`", and the
/// 135M model spent a turn of every run reading that file, which does not exist.
fn is_example(before: [&str; 2]) -> bool {
    let [first, last] = before.map(str::to_ascii_lowercase);
    matches!(last.as_str(), "like" | "e.g" | "eg")
        || (first == "such" && last == "as")
        || (first == "for" && last == "example")
}

/// The file names a call's result that did not fail shows (a listing, a search's matches, a
/// file's text): the files known to exist. The model cannot look at the workspace itself (the
/// system prompt names only the folder's name, and the model may run beside another machine's
/// tools), so what a prop printed is its only evidence that a name given as an example (see
/// [`is_example`]) is a real file worth offering.
fn shown_files(messages: &[Message]) -> Vec<&str> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::Tool {
                content,
                is_error: false,
                ..
            } => Some(content.as_str()),
            _ => None,
        })
        .flat_map(|text| {
            text.split(|c: char| !(c.is_ascii_alphanumeric() || "._-/".contains(c)))
                .map(|w| w.trim_end_matches('.'))
                .filter(|w| names_a_file(w))
        })
        .collect()
}

/// The most files [`mentioned_paths`] gives.
const MAX_PATHS: usize = 32;

/// Whether `word` looks like a relative file path: path characters only, not starting with `/`
/// or `.`; a stem with a letter, a `.` and an extension of one to four letters; and either a
/// `/` or a stem of two or more characters, so that `e.g` and `i.e` are not files. A product
/// name — `Node.js`, `Vue.js`: a capitalized stem, `.js` and no folder — is not one either
/// (`src/App.js` is).
fn names_a_file(word: &str) -> bool {
    let Some((stem, ext)) = word.rsplit_once('.') else {
        return false;
    };
    let name = stem.rsplit('/').next().unwrap_or(stem);
    let in_folder = word.contains('/');
    let product = !in_folder && ext == "js" && name.starts_with(|c: char| c.is_ascii_uppercase());
    !word.starts_with(['/', '.'])
        && !word.contains("..")
        && name.chars().any(|c| c.is_ascii_alphabetic())
        && (in_folder || name.len() >= 2)
        && !product
        && (1..=4).contains(&ext.len())
        && ext.chars().all(|c| c.is_ascii_alphabetic())
}

/// The number of the next call's id (`call_N`): one past both the count of calls in the
/// conversation and the highest `N` still in it, so the same on every run, and never the id of
/// a call still in the conversation. Counting alone repeated ids after a compaction had dropped
/// earlier calls: the count fell below the numbers of the calls kept, and a new call took one
/// of theirs, so its answer was paired (and trimmed, and resumed) as theirs.
fn next_call_number(messages: &[Message]) -> usize {
    let calls = messages.iter().flat_map(|m| match m {
        Message::Assistant { tool_calls, .. } => tool_calls.as_slice(),
        _ => &[],
    });
    let (count, highest) = calls.fold((0, 0), |(count, highest), call| {
        let n = call
            .id
            .strip_prefix("call_")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        (count + 1, highest.max(n))
    });
    count.max(highest).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_after_a_compaction_never_takes_the_id_of_a_call_kept() {
        // A compaction dropped calls 1 to 3 and kept 4 and 5: counting alone gave call_3,
        // then call_4 again.
        let kept = |id: &str| Message::Assistant {
            text: String::new(),
            tool_calls: vec![ToolCall {
                id: id.into(),
                name: "read".into(),
                arguments: "{}".into(),
            }],
        };
        let conversation = [kept("call_4"), kept("call_5")];
        assert_eq!(next_call_number(&conversation), 6);
        assert_eq!(next_call_number(&[]), 1);
        assert_eq!(next_call_number(&[kept("call_1"), kept("x")]), 3);
    }

    fn reply(arguments: &str) -> Message {
        Message::Assistant {
            text: String::new(),
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "read".into(),
                arguments: arguments.into(),
            }],
        }
    }

    fn call(arguments: &str) -> Generated {
        Generated {
            text: grammar::call_json("read", arguments),
            call: true,
            ..Default::default()
        }
    }

    fn avoid(path: &str) -> Option<grammar::Avoid> {
        Some(grammar::Avoid {
            prop: "read".into(),
            path: Some(path.into()),
            text: None,
        })
    }

    #[test]
    fn the_call_just_made_and_the_warned_call_are_refused_and_no_other() {
        let result = |content: &str| Message::Tool {
            call_id: "call_1".into(),
            name: "read".into(),
            content: content.into(),
            is_error: true,
        };
        let same = r#"{"path": "a.txt"}"#;
        let other = r#"{"path": "b.txt"}"#;
        let mut talk = vec![reply(same), result("no such file")];
        // Spacing does not make it a different call; other arguments or text do.
        let respaced = r#"{"path":"a.txt"}"#;
        assert_eq!(repeated_call(&talk, &call(respaced), false), avoid("a.txt"));
        assert_eq!(repeated_call(&talk, &call(other), false), None);
        let text = Generated {
            text: "I cannot find a.txt.".into(),
            ..Default::default()
        };
        assert_eq!(repeated_call(&talk, &text, false), None);
        // The warned call stays refused after the loop detector's note; the call just made
        // is refused too, and the warning lapses once the actor did something else.
        talk.push(Message::user(loop_note::note(2, "read(...)")));
        assert_eq!(repeated_call(&talk, &call(same), false), avoid("a.txt"));
        talk.push(reply(other));
        talk.push(result("b"));
        assert_eq!(repeated_call(&talk, &call(other), false), avoid("b.txt"));
        assert_eq!(
            repeated_call(&talk, &call(same), false),
            None,
            "the warning lapsed"
        );
        // While the checks fail, a call made since the director's last word is not made again:
        // `a` then `b` then `a` is a cycle.
        assert_eq!(repeated_call(&talk, &call(same), true), avoid("a.txt"));
        talk.push(Message::user(
            "Attempt 2 of 3: 1 of 1 checks failed: tests.",
        ));
        assert_eq!(repeated_call(&talk, &call(same), true), None, "a new note");
    }

    #[test]
    fn calls_stay_required_while_the_directors_last_word_is_a_failing_note() {
        let failing =
            "After your last change, tests fails:\n\n## tests\npanicked at tests/mean.rs:5:5\n";
        let mut talk = vec![Message::user("Fix it."), Message::user(failing)];
        assert!(must_act(&talk));
        talk.push(reply(r#"{"path": "tests/mean.rs"}"#));
        talk.push(result_ok("1\tuse stats::mean;"));
        assert!(must_act(&talk), "one call does not end it");
        talk.push(Message::user(loop_note::note(2, "read(...)")));
        assert!(must_act(&talk), "a loop note is not the director's word");
        talk.push(Message::user("Now write the report."));
        assert!(!must_act(&talk));
    }

    fn result_ok(content: &str) -> Message {
        Message::Tool {
            call_id: "call_1".into(),
            name: "read".into(),
            content: content.into(),
            is_error: false,
        }
    }

    #[test]
    fn the_files_the_directors_words_name_less_those_found_missing() {
        let system = "You work in the folder `x`; give paths relative to it, like `notes.txt`.\n\
            # file: AGENTS.md\nIts code is in `src/lib.rs`; tests in `tests/`. Version 0.1.0. See /etc/passwd or ../up.rs.";
        let talk = vec![
            Message::user("Make `cargo test` pass."),
            Message::user("panicked at tests/mean.rs:5:5:\nassertion failed"),
            reply(r#"{"path": "notes.txt"}"#),
            Message::Tool {
                call_id: "call_1".into(),
                name: "read".into(),
                content: "`notes.txt` does not exist; use `find` to look for the file".into(),
                is_error: true,
            },
            // What a tool printed is not the director's word.
            result_ok("Some(xs.iter().sum::<f64>() / xs.len())"),
        ];
        assert_eq!(
            mentioned_paths(system, &talk),
            ["tests/mean.rs", "AGENTS.md", "src/lib.rs"]
        );
    }

    #[test]
    fn a_name_given_as_an_example_is_not_a_named_file() {
        let system = "You work in the folder `x`; give paths relative to it, like `notes.txt`.\n\
            Its code is in src/lib.rs. Name files for example ab.py, such as bc.py, e.g. cd.py.";
        let talk = vec![Message::user(
            "Fix the bug; the failing test is tests/mean.rs.",
        )];
        assert_eq!(
            mentioned_paths(system, &talk),
            ["tests/mean.rs", "src/lib.rs"]
        );
    }

    #[test]
    fn a_name_given_as_an_example_is_offered_once_a_result_shows_the_file() {
        let system = "You work in the folder `x`; give paths relative to it, like `notes.txt`.";
        let mut talk = vec![Message::user(
            "Make the tests pass, like tests/mean.rs does.",
        )];
        assert!(mentioned_paths(system, &talk).is_empty());
        // A failed call's message names no file that exists.
        talk.push(reply(r#"{"path": "x"}"#));
        talk.push(Message::Tool {
            call_id: "call_1".into(),
            name: "bash".into(),
            content: "ls: cannot access tests/mean.rs and notes.txt".into(),
            is_error: true,
        });
        assert!(mentioned_paths(system, &talk).is_empty());
        talk.push(reply(r#"{"path": "y"}"#));
        talk.push(result_ok("src/lib.rs\ntests/mean.rs\nnotes.txt\n"));
        assert_eq!(
            mentioned_paths(system, &talk),
            ["tests/mean.rs", "notes.txt"]
        );
    }

    #[test]
    fn abbreviations_and_product_names_are_not_files() {
        for word in ["e.g", "i.e", "Node.js", "Vue.js", "a.b"] {
            assert!(!names_a_file(word), "{word}");
        }
        for word in [
            "src/App.js",
            "app.js",
            "x/a.rs",
            "AGENTS.md",
            "Cargo.toml",
            "ab.c",
        ] {
            assert!(names_a_file(word), "{word}");
        }
        let talk = vec![Message::user(
            "Use Node.js here, e.g. in main.js, i.e. the entry point; see x/a.rs.",
        )];
        assert_eq!(mentioned_paths("", &talk), ["main.js", "x/a.rs"]);
    }

    #[test]
    fn at_most_32_files_are_offered_the_newest_named_first() {
        let many: String = (0..50).map(|i| format!("file{i}.rs ")).collect();
        let paths = mentioned_paths(&many, &[]);
        assert_eq!(paths.len(), MAX_PATHS);
        assert_eq!(paths[0], "file0.rs");
        assert_eq!(paths[31], "file31.rs");
        // The failing check's note names the file that matters now: it is kept, and the files
        // named in the system prompt fill what is left.
        let talk = vec![Message::user(
            "Attempt 1 of 3: 1 of 1 checks failed: tests.\npanicked at tests/late.rs:5:5",
        )];
        let paths = mentioned_paths(&many, &talk);
        assert_eq!(paths.len(), MAX_PATHS);
        assert_eq!(paths[0], "tests/late.rs", "{paths:?}");
        assert_eq!(paths[31], "file30.rs");
    }

    #[test]
    fn a_repeated_write_refuses_its_text_and_a_repeated_read_its_path() {
        let write = |content: &str| Message::Assistant {
            text: String::new(),
            tool_calls: vec![ToolCall {
                id: "call_1".into(),
                name: "write".into(),
                arguments: format!(r#"{{"path": "a.txt", "content": "{content}"}}"#),
            }],
        };
        let talk = vec![write("hi")];
        let again = Generated {
            text: grammar::call_json("write", r#"{"path": "a.txt", "content": "hi"}"#),
            call: true,
            ..Default::default()
        };
        assert_eq!(
            repeated_call(&talk, &again, false),
            Some(grammar::Avoid {
                prop: "write".into(),
                path: Some("a.txt".into()),
                text: Some("hi".into()),
            })
        );
        assert_eq!(
            repeated_call(
                &[reply(r#"{"path": "a.txt"}"#)],
                &call(r#"{"path": "a.txt"}"#),
                false
            ),
            avoid("a.txt")
        );
    }
}
