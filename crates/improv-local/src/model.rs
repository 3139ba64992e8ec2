//! [`LocalModel`]: the [`Model`] trait on top of the engine thread.

use crate::engine::{self, Generated, Job, Loaded, Sampling};
use crate::grammar::{self, Parsed};
use crate::template::{self, Family, Piece};
use crate::{LocalConfig, LocalError, ToolChoice};
use async_trait::async_trait;
use improv_kernel::ToolSpec;
use improv_kernel::{
    Message, Model, ModelError, ModelUpdate, Reply, Request, StopReason, ToolCall, Usage, loop_note,
};
use std::collections::HashMap;
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
    /// prop that writes files keeps any path, see `grammar::Narrowing::paths`), the calls
    /// are lean: required arguments only, short strings (see `grammar::Narrowing::lean`), an
    /// edit replaces a line of a file it has seen ([`seen_files`]), and once
    /// [`WRITE_AFTER_CALLS`] calls left them failing, the call is a write ([`must_write`]): an
    /// edit then searches the lines of the files seen less those the failing checks point at
    /// ([`searched_files`]). `failing` is [`must_act`] of the request's messages.
    fn narrowing(&self, request: &Request<'_>, failing: bool) -> grammar::Narrowing {
        let seen = if failing {
            seen_files(request.system, request.messages, request.tools)
        } else {
            Vec::new()
        };
        let writes_only = must_write(request.messages, &seen);
        let seen = if writes_only {
            searched_files(request.messages, seen)
        } else {
            seen
        };
        grammar::Narrowing {
            required: self.config.tool_choice == ToolChoice::Required || failing,
            paths: if failing {
                mentioned_paths(request.system, request.messages)
            } else {
                Vec::new()
            },
            avoid: Vec::new(),
            lean: failing,
            writes_only,
            seen,
        }
    }

    /// How a reply is sampled when not as configured: while a write is forced (see
    /// [`must_write`]), greedy decoding has had its say: a 135M model writes the same wrong
    /// edit again, refused as a repeat. The replies are sampled ([`FAILING_TEMPERATURE`], or the
    /// configured temperature) and the checks, run after every write, choose among varied
    /// edits. The seed is the configured one moved on by the calls made so far and the `retry`
    /// within the reply: a new seed per reply, the same on every run of the same conversation.
    fn sampling(&self, request: &Request<'_>, forced: bool, retry: usize) -> Option<Sampling> {
        sampling_of(&self.config, request.messages, forced, retry)
    }

    /// The prompt's tokens, as the engine would evaluate them.
    pub async fn prompt_tokens(&self, request: Request<'_>) -> Result<Vec<i32>, ModelError> {
        let (prompt, _) = self.prompt(&request);
        let generated = self
            .run(
                prompt,
                None,
                Decoding {
                    nudge: false,
                    max_tokens: 0,
                    tokenize_only: true,
                    sampling: None,
                },
                &mut |_| {},
            )
            .await?;
        Ok(generated.prompt_tokens)
    }

    async fn run(
        &self,
        prompt: Vec<Piece>,
        grammar: Option<String>,
        decoding: Decoding,
        update: &mut (dyn for<'u> FnMut(ModelUpdate<'u>) + Send),
    ) -> Result<Generated, ModelError> {
        let Decoding {
            nudge,
            max_tokens,
            tokenize_only,
            sampling,
        } = decoding;
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
            sampling,
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

/// How one job is decoded (see [`Job`]).
#[derive(Clone, Copy)]
struct Decoding {
    nudge: bool,
    max_tokens: u32,
    tokenize_only: bool,
    /// Sampled so, instead of as configured (see `LocalModel::sampling`).
    sampling: Option<Sampling>,
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
        let forced = narrowing.writes_only;
        let decoding = |retry: usize| Decoding {
            nudge,
            max_tokens,
            tokenize_only: false,
            sampling: self.sampling(&request, forced, retry),
        };
        let mut out = self
            .run(prompt.clone(), grammar, decoding(0), update)
            .await?;
        // Calls made while the checks fail are refused only then, not whenever a call is
        // required (`tool_choice = "required"` needs no failing check).
        let since = failing
            .then(|| fresh_since(request.messages, request.tools))
            .flatten();
        for retry in 1..=MAX_REFUSED {
            let Some(avoid) = repeated_call(request.messages, &out, since) else {
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
                .run(prompt.clone(), Some(grammar), decoding(retry), update)
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
    failing_since(messages).is_some()
}

/// Where the checks began to fail for good: the first of the failing notes that follow the
/// director's last other word, when the last word is one (see [`must_act`]). Each write (and
/// each `bash` call, which may write) brings a new note while they fail; what was tried since
/// the first one did not make them pass.
fn failing_since(messages: &[Message]) -> Option<usize> {
    let mut since = None;
    for (at, m) in messages.iter().enumerate() {
        match m {
            Message::User { text } if !loop_note::is_note(m) => {
                since = improv_feedback::is_failing_note(text).then(|| since.unwrap_or(at));
            }
            _ => {}
        }
    }
    since
}

/// Where the calls that may not be made again begin (see [`repeated_call`]) while the checks
/// fail: at the first failing note ([`failing_since`]), or after the last write that changed a
/// file, whichever is later: a file changed since a call may give it another result.
fn fresh_since(messages: &[Message], tools: &[ToolSpec]) -> Option<usize> {
    let since = failing_since(messages)?;
    let calls = calls_by_id(messages);
    let written = messages.iter().rposition(|m| match m {
        Message::Tool {
            call_id,
            is_error: false,
            ..
        } => calls
            .get(call_id.as_str())
            .is_some_and(|call| writes(tools, &call.name)),
        _ => false,
    });
    Some(written.map_or(since, |at| since.max(at + 1)))
}

/// Whether the prop `name` among `tools` writes files (see `grammar::writes_files`).
fn writes(tools: &[ToolSpec], name: &str) -> bool {
    tools
        .iter()
        .any(|t| t.name == name && grammar::writes_files(&t.parameters))
}

/// The calls of a conversation by their id.
fn calls_by_id(messages: &[Message]) -> HashMap<&str, &ToolCall> {
    messages
        .iter()
        .flat_map(|m| match m {
            Message::Assistant { tool_calls, .. } => tool_calls.as_slice(),
            _ => &[],
        })
        .map(|call| (call.id.as_str(), call))
        .collect()
}

/// A tool result of a conversation that answers one of its calls.
struct Answered<'a> {
    /// Its index in the conversation.
    at: usize,
    content: &'a str,
    is_error: bool,
    call: &'a ToolCall,
    /// The call's arguments; JSON `null` when they do not parse.
    arguments: serde_json::Value,
}

/// The tool results of `messages` that answer a call made in them, in order.
fn answered(messages: &[Message]) -> impl Iterator<Item = Answered<'_>> {
    let calls = calls_by_id(messages);
    messages.iter().enumerate().filter_map(move |(at, m)| {
        let Message::Tool {
            call_id,
            content,
            is_error,
            ..
        } = m
        else {
            return None;
        };
        let call = *calls.get(call_id.as_str())?;
        Some(Answered {
            at,
            content,
            is_error: *is_error,
            call,
            arguments: serde_json::from_str(&call.arguments).unwrap_or_default(),
        })
    })
}

/// Whether the next reply must write a file: the checks fail, [`WRITE_AFTER_CALLS`] calls
/// were made since they began to ([`failing_since`]) and a file was seen an edit may change
/// (`seen`, see [`seen_files`]). A 135M model otherwise reads, greps and runs commands until
/// its turns run out, and never edits; forced, it edits a line of a file it read.
fn must_write(messages: &[Message], seen: &[grammar::Seen]) -> bool {
    !seen.is_empty() && calls_while_failing(messages) >= WRITE_AFTER_CALLS
}

/// How many calls while the checks fail are the model's own before it must write (see
/// [`must_write`]): enough to read the failing test and the code it names, which greedy
/// decoding does well.
const WRITE_AFTER_CALLS: usize = 4;

/// The calls made since the checks began to fail ([`failing_since`]): none made them pass, or
/// the performance would have ended converged.
fn calls_while_failing(messages: &[Message]) -> usize {
    let Some(since) = failing_since(messages) else {
        return 0;
    };
    messages[since..]
        .iter()
        .map(|m| match m {
            Message::Assistant { tool_calls, .. } => tool_calls.len(),
            _ => 0,
        })
        .sum()
}

/// How a reply is sampled when not as `config` says: see `LocalModel::sampling`.
fn sampling_of(
    config: &LocalConfig,
    messages: &[Message],
    forced: bool,
    retry: usize,
) -> Option<Sampling> {
    if !forced {
        return None;
    }
    let step = next_call_number(messages)
        .saturating_mul(MAX_REFUSED + 1)
        .saturating_add(retry);
    let step = u32::try_from(step).unwrap_or(u32::MAX);
    Some(Sampling {
        temperature: if config.temperature > 0.0 {
            config.temperature
        } else {
            FAILING_TEMPERATURE
        },
        top_p: config.top_p,
        seed: config.seed.wrapping_add(step.wrapping_mul(0x9E37_79B9)),
    })
}

/// The temperature of forced writes (see `LocalModel::sampling`): varied enough that a 135M
/// model writes different edits, low enough that they stay edits of the line it chose.
const FAILING_TEMPERATURE: f32 = 0.5;

/// The files a call showed (a `read`'s numbered lines, or what a `write` wrote), as they are
/// now: edits that succeeded since are applied to them; a file whose write a rule of the stage's
/// edges refused is left out ([`refusal`]; a text the director refused is one of its line's
/// `tried`), and so is a context file the system prompt carries ([`CONTEXT_FILE`]):
/// the stage's words to the actor, not its work (a 135M model read `AGENTS.md` while the checks
/// failed, and would edit it). Each comes with the lines an edit's `old` may be (see
/// `grammar::Narrowing::seen`), the file seen last first, at most [`MAX_SEEN_BYTES`] of lines
/// in all: each character is a rule of the grammar.
fn seen_files(system: &str, messages: &[Message], tools: &[ToolSpec]) -> Vec<grammar::Seen> {
    let context: Vec<&str> = system
        .lines()
        .filter_map(|l| l.strip_prefix(CONTEXT_FILE))
        .map(str::trim)
        .collect();
    // Path → text, in the order last seen.
    let mut files: Vec<(String, String)> = Vec::new();
    // A line an edit wrote → the line it replaced as first seen (see `grammar::Line::first`).
    let mut firsts: HashMap<String, String> = HashMap::new();
    // A line as first seen → the texts edits put in its place (see `grammar::Line::tried`).
    let mut tried: HashMap<String, Vec<String>> = HashMap::new();
    let mut denied: Vec<String> = Vec::new();
    for Answered {
        content,
        is_error,
        call,
        arguments,
        ..
    } in answered(messages)
    {
        let string = |key: &str| arguments.get(key).and_then(|v| v.as_str());
        let Some(path) = string("path").map(normal_path) else {
            continue;
        };
        let path = path.as_str();
        let at = files.iter().position(|(p, _)| p == path);
        let text = if is_error {
            match refusal(content).filter(|_| writes(tools, &call.name)) {
                Some(Refusal::Rule) => denied.push(path.to_string()),
                // The director refused this text, not the file: the line's other edits stay.
                Some(Refusal::Director) => {
                    if let (Some(old), Some(new)) = (string("old"), string("new")) {
                        let first = firsts.get(old).cloned().unwrap_or_else(|| old.to_string());
                        tried.entry(first).or_default().push(new.to_string());
                    }
                }
                None => {}
            }
            continue;
        } else if let Some(text) = numbered_text(content) {
            text
        } else if let (Some(text), true) = (string("content"), writes(tools, &call.name)) {
            text.to_string()
        } else if let (Some(old), Some(new), Some(at)) = (string("old"), string("new"), at) {
            let first = firsts.get(old).cloned().unwrap_or_else(|| old.to_string());
            tried
                .entry(first.clone())
                .or_default()
                .push(new.to_string());
            firsts.insert(new.to_string(), first);
            files[at].1.replacen(old, new, 1)
        } else {
            continue;
        };
        if let Some(at) = at {
            files.remove(at);
        }
        files.push((path.to_string(), text));
    }
    let mut budget = MAX_SEEN_BYTES;
    let mut seen = Vec::new();
    for (path, text) in files.into_iter().rev() {
        if denied.contains(&path) || context.contains(&path.as_str()) {
            continue;
        }
        let mut lines: Vec<grammar::Line> = Vec::new();
        for line in text.lines().map(str::trim) {
            let first = firsts.get(line).map_or(line, String::as_str);
            let size = line.len() + first.len();
            if line.is_empty()
                || size > budget
                || text.matches(line).count() != 1
                || lines.iter().any(|l| l.now == line)
            {
                continue;
            }
            budget -= size;
            lines.push(grammar::Line {
                now: line.to_string(),
                first: first.to_string(),
                tried: tried.get(first).cloned().unwrap_or_default(),
            });
        }
        if !lines.is_empty() {
            seen.push(grammar::Seen { path, lines });
        }
    }
    seen
}

/// How the system prompt opens a context file's text (improv-stage's prompt).
const CONTEXT_FILE: &str = "# file: ";

/// Who refused a call, read from the mark that ends the refusal (improv-edges' guarded policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// A rule of the stage's edges (deny, hidden, read-only, the workspace edge, an approval
    /// nobody could give): the file is no file to edit.
    Rule,
    /// The director's no to this one call: the text it would have written is no candidate, the
    /// file's other edits still are (an interactive stage asks before each edit of `src/**`).
    Director,
}

/// The refusal `content` (a failed call's output) is, by the mark it ENDS with: a mark quoted
/// inside an error (an edit's "does not occur" quoting a file line, a path `src/[denied]/x.rs`)
/// is no refusal.
fn refusal(content: &str) -> Option<Refusal> {
    let content = content.trim_end();
    if content.ends_with(improv_edges::policy::DIRECTOR_REFUSED) {
        Some(Refusal::Director)
    } else if content.ends_with(improv_edges::policy::REFUSED) {
        Some(Refusal::Rule)
    } else {
        None
    }
}

/// `path` as one spelling of its file: `./tests/x.rs`, `tests//x.rs` and `tests/./x.rs` are
/// `tests/x.rs`, so a file read under one name and refused under another is one file.
fn normal_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    let joined = parts.join("/");
    if rooted { format!("/{joined}") } else { joined }
}

/// Whether `location` (a path a check's output printed: relative to the workspace, or absolute
/// in it) is the file `path` the model named.
fn same_file(location: &str, path: &str) -> bool {
    let (location, path) = (normal_path(location), normal_path(path));
    !path.is_empty() && (location == path || location.ends_with(&format!("/{path}")))
}

/// The files a forced search may edit: `seen` less those the failing checks point at as tests
/// ([`failure_files`]). The checks' failing lines are the spec: deleting an `assert_eq!` or
/// moving a test's expected number passes them and fixes nothing. Only a test file is ever taken
/// out ([`is_test_path`]), so the file to fix, which tracebacks name too, stays in.
fn searched_files(messages: &[Message], mut seen: Vec<grammar::Seen>) -> Vec<grammar::Seen> {
    let spec = failure_files(messages);
    seen.retain(|file| !spec.iter().any(|s| same_file(s, &file.path)));
    seen
}

/// Whether `path` looks like a test: a `tests/`, `test/`, `spec/` or `__tests__/` folder, or a
/// file name that starts `test_` or holds `_test.`, `.test.` or `.spec.` (Rust, Python, JS, Go).
fn is_test_path(path: &str) -> bool {
    let path = normal_path(path);
    let mut parts = path.rsplit('/');
    let name = parts.next().unwrap_or_default();
    parts.any(|dir| matches!(dir, "tests" | "test" | "spec" | "__tests__"))
        || name.starts_with("test_")
        || ["_test.", ".test.", ".spec."]
            .iter()
            .any(|m| name.contains(m))
}

/// The test files ([`is_test_path`]) the failing notes name as a failure location (see
/// [`failure_locations`]): those of every failing note since the checks began to fail
/// ([`failing_since`]), as a note that shows only an error the search's own edit caused (a
/// compile error) still leaves the test that failed before it the spec. A file this performance
/// edited is re-admitted only when every note that names it came after its first successful
/// edit: a location in it may be that edit's error, and the search must be able to undo it; a
/// test a note named before it was edited stays the spec.
fn failure_files(messages: &[Message]) -> Vec<String> {
    let Some(since) = failing_since(messages) else {
        return Vec::new();
    };
    let edits = first_edits(messages);
    let mut files: Vec<String> = Vec::new();
    for (at, m) in messages.iter().enumerate().skip(since) {
        let Message::User { text } = m else { continue };
        if loop_note::is_note(m) {
            continue;
        }
        for file in failure_locations(text) {
            let after_its_edit = edits
                .iter()
                .any(|(path, edited_at)| *edited_at < at && same_file(&file, path));
            if is_test_path(&file) && !after_its_edit && !files.contains(&file) {
                files.push(file);
            }
        }
    }
    files
}

/// Each file an edit (`old`) or a write (`content`) changed, with the index in `messages` of
/// its first success.
fn first_edits(messages: &[Message]) -> Vec<(String, usize)> {
    let mut edits: Vec<(String, usize)> = Vec::new();
    for Answered { at, arguments, .. } in answered(messages).filter(|a| !a.is_error) {
        let changed = arguments.get("old").or_else(|| arguments.get("content"));
        if let (Some(_), Some(path)) = (changed, arguments.get("path").and_then(|p| p.as_str())) {
            let path = normal_path(path);
            if !edits.iter().any(|(p, _)| *p == path) {
                edits.push((path, at));
            }
        }
    }
    edits
}

/// The files a check's output names as failure locations, normalised ([`normal_path`]). Two
/// patterns, the same in every language improv has met:
///
/// - `PATH:LINE` or `PATH:LINE:COL`, `PATH` a word with a `.` in its last part: a Rust panic
///   (`panicked at tests/mean.rs:5:5:`), a compiler's `--> src/lib.rs:8:5`, a JS stack frame
///   (`at tests/x.test.js:5:10`, `(tests/x.test.js:5:10)`), pytest's `tests/t.py:5: AssertionError`;
/// - `File "PATH", line N`: a Python traceback's frames.
///
/// Written here: two patterns are fewer lines than a regex crate's use.
fn failure_locations(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut push = |path: &str| {
        let file = normal_path(path);
        let name = file.rsplit('/').next().unwrap_or_default();
        if name.contains('.') && !name.starts_with('.') && !out.contains(&file) {
            out.push(file);
        }
    };
    for word in text.split(|c: char| c.is_whitespace() || "()[]<>'\",`".contains(c)) {
        if let Some((path, rest)) = word.split_once(':')
            && rest.starts_with(|c: char| c.is_ascii_digit())
        {
            push(path);
        }
    }
    for frame in text.split("File \"").skip(1) {
        if let Some((path, rest)) = frame.split_once('"')
            && rest
                .strip_prefix(", line ")
                .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        {
            push(path);
        }
    }
    out
}

/// The most bytes of lines [`seen_files`] offers.
const MAX_SEEN_BYTES: usize = 8 * 1024;

/// The text of a `read` result: numbered lines (`12\tfn main() {`), and maybe a note in
/// brackets of the lines left; `None` for any other output.
fn numbered_text(content: &str) -> Option<String> {
    let mut text = String::new();
    let mut numbered = false;
    for line in content.lines() {
        if line.starts_with('[') && line.ends_with(']') {
            continue;
        }
        let (number, rest) = line.split_once('\t')?;
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        numbered = true;
        text.push_str(rest);
        text.push('\n');
    }
    numbered.then_some(text)
}

/// The most replies tried again for one request after each made a call already made.
const MAX_REFUSED: usize = 4;

/// The call in `out` when it is exactly (same prop, same parsed arguments) the call the previous
/// reply made, or the one the loop detector's note warned about (see
/// [`loop_note::warned_calls`]): nothing changed since, so it would give the same result. While
/// the checks fail, any call made from `since` on ([`fresh_since`]) is refused again: a small
/// model otherwise cycles through two or three calls (`grep x`, `bash x`, `grep x`) until its
/// turns run out, which no loop detector of repeats in a row sees; the checks run after every
/// change anyway, so nothing needs to be run twice to see its effect. An edit whose `new` is its
/// `old` is refused too: it would change nothing.
fn repeated_call(
    messages: &[Message],
    out: &Generated,
    since: Option<usize>,
) -> Option<grammar::Avoid> {
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
    let earlier = since
        .and_then(|at| messages.get(at..))
        .unwrap_or_default()
        .iter()
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
    // An edit of a line into itself changes nothing either: a forced edit's `new` is a change
    // of the line as first seen (`grammar::Line::first`), which may be the line as it is now.
    let unchanged = string("old").is_some_and(|old| string("new") == Some(old));
    (repeats || unchanged).then(|| grammar::Avoid {
        path: string("path"),
        // What a writing prop wrote: the grammar refuses only that text, not every write.
        text: string("content").or_else(|| string("new")),
        old: string("old"),
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
            old: None,
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
        assert_eq!(repeated_call(&talk, &call(respaced), None), avoid("a.txt"));
        assert_eq!(repeated_call(&talk, &call(other), None), None);
        let text = Generated {
            text: "I cannot find a.txt.".into(),
            ..Default::default()
        };
        assert_eq!(repeated_call(&talk, &text, None), None);
        // The warned call stays refused after the loop detector's note; the call just made
        // is refused too, and the warning lapses once the actor did something else.
        talk.push(Message::user(loop_note::note(2, "read(...)")));
        assert_eq!(repeated_call(&talk, &call(same), None), avoid("a.txt"));
        talk.push(reply(other));
        talk.push(result("b"));
        assert_eq!(repeated_call(&talk, &call(other), None), avoid("b.txt"));
        assert_eq!(
            repeated_call(&talk, &call(same), None),
            None,
            "the warning lapsed"
        );
        // While the checks fail, a call made since they began to is not made again: `a` then
        // `b` then `a` is a cycle.
        assert_eq!(repeated_call(&talk, &call(same), Some(0)), avoid("a.txt"));
        assert_eq!(repeated_call(&talk, &call(same), Some(2)), None);
    }

    fn edit(id: &str, arguments: &str) -> Message {
        Message::Assistant {
            text: String::new(),
            tool_calls: vec![ToolCall {
                id: id.into(),
                name: "edit".into(),
                arguments: arguments.into(),
            }],
        }
    }

    fn answer(id: &str, content: &str, is_error: bool) -> Message {
        Message::Tool {
            call_id: id.into(),
            name: String::new(),
            content: content.into(),
            is_error,
        }
    }

    fn props() -> Vec<ToolSpec> {
        let spec = |name: &str, parameters: serde_json::Value| ToolSpec {
            name: name.into(),
            description: String::new(),
            parameters,
        };
        vec![
            spec(
                "read",
                serde_json::json!({"type": "object", "properties": {"path": {"type": "string"}},
                    "required": ["path"]}),
            ),
            spec(
                "edit",
                serde_json::json!({"type": "object", "properties": {"path": {"type": "string"},
                    "old": {"type": "string"}, "new": {"type": "string"}},
                    "required": ["path", "old", "new"]}),
            ),
        ]
    }

    #[test]
    fn calls_stay_refused_from_the_first_failing_note_until_a_write_changes_a_file() {
        let tools = props();
        let failing = "Attempt 1 of 3: 1 of 1 checks failed: tests.";
        let read = |id: &str| Message::Assistant {
            text: String::new(),
            tool_calls: vec![ToolCall {
                id: id.into(),
                name: "read".into(),
                arguments: r#"{"path": "a.rs"}"#.into(),
            }],
        };
        let mut talk = vec![
            Message::user("Fix it."),
            read("call_1"),
            answer("call_1", "1\tfn a() {}", false),
            Message::user(failing),
            read("call_2"),
            answer("call_2", "1\tfn a() {}", false),
            // A `bash` call (it may write) brings a new note: the checks still fail.
            Message::user("After your last change, tests fails:\n\n## tests\npanicked"),
        ];
        let since = fresh_since(&talk, &tools);
        assert_eq!(since, Some(3), "from the first failing note, not the last");
        let again = call(r#"{"path": "a.rs"}"#);
        assert_eq!(repeated_call(&talk, &again, since), avoid("a.rs"));
        // A failed edit changed nothing; one that succeeded may change what a read shows.
        talk.push(edit(
            "call_3",
            r#"{"path": "a.rs", "old": "x", "new": "y"}"#,
        ));
        talk.push(answer("call_3", "`old` does not occur in `a.rs`", true));
        assert_eq!(fresh_since(&talk, &tools), Some(3));
        talk.push(edit(
            "call_4",
            r#"{"path": "a.rs", "old": "a", "new": "b"}"#,
        ));
        talk.push(answer("call_4", "replaced 1 occurrence", false));
        let since = fresh_since(&talk, &tools);
        assert_eq!(since, Some(talk.len()));
        assert_eq!(repeated_call(&talk, &again, since), None);
        let unchanged = Generated {
            text: grammar::call_json("edit", r#"{"path": "a.rs", "old": "b", "new": "b"}"#),
            call: true,
            ..Default::default()
        };
        assert!(repeated_call(&talk, &unchanged, since).is_some());
        talk.push(Message::user("Now write the report."));
        assert_eq!(fresh_since(&talk, &tools), None);
    }

    #[test]
    fn an_edit_replaces_a_line_of_a_file_seen_as_it_is_now() {
        let tools = props();
        let talk = vec![
            Message::user("Attempt 1 of 3: 1 of 1 checks failed: tests."),
            reply(r#"{"path": "src/lib.rs"}"#),
            answer(
                "call_1",
                "1\tfn mean() {\n2\t    }\n3\t    x + 1\n4\t    }\n5\t\n[lines 1-5 of 9]",
                false,
            ),
            edit(
                "call_2",
                r#"{"path": "src/lib.rs", "old": "x + 1", "new": "x + 2"}"#,
            ),
            answer("call_2", "replaced", false),
            // An edit of an edited line: the texts put in place of the first line add up.
            edit(
                "call_5",
                r#"{"path": "src/lib.rs", "old": "x + 2", "new": "x"}"#,
            ),
            answer("call_5", "replaced", false),
            // A denied edit's file is no file to edit; a failed read shows nothing.
            edit(
                "call_3",
                r#"{"path": "./tests/t.rs", "old": "a", "new": "b"}"#,
            ),
            answer(
                "call_3",
                "edit: `./tests/t.rs` needs the director's approval (x), so it was denied. [denied]",
                true,
            ),
            Message::Assistant {
                text: String::new(),
                tool_calls: vec![ToolCall {
                    id: "call_4".into(),
                    name: "read".into(),
                    arguments: r#"{"path": "tests/t.rs"}"#.into(),
                }],
            },
            answer("call_4", "1\tassert!(a);", false),
        ];
        // Blank lines and `}` (twice) cannot be an `old`: it must occur once.
        assert_eq!(
            seen_files("", &talk, &tools),
            [grammar::Seen {
                path: "src/lib.rs".into(),
                lines: vec![
                    grammar::Line::new("fn mean() {"),
                    grammar::Line {
                        now: "x".into(),
                        first: "x + 1".into(),
                        tried: vec!["x + 2".into(), "x".into()],
                    },
                ],
            }]
        );
        // Writes are forced once enough calls left the checks failing and a file was seen.
        let seen = seen_files("", &talk, &tools);
        // A context file is the stage's words, not its work.
        assert!(seen_files("# file: src/lib.rs\nfn mean() {", &talk, &tools).is_empty());
        assert!(!must_write(&talk[..3], &seen), "one call");
        assert!(must_write(&talk, &seen));
        assert!(!must_write(&talk, &[]), "no file to edit");
        assert_eq!(
            sampling_of(&LocalConfig::new("m.gguf"), &talk, false, 0),
            None
        );
        let sampled = sampling_of(&LocalConfig::new("m.gguf"), &talk, true, 0).expect("sampled");
        assert_eq!(sampled.temperature, FAILING_TEMPERATURE);
        let retry = sampling_of(&LocalConfig::new("m.gguf"), &talk, true, 1).expect("sampled");
        assert_ne!(retry.seed, sampled.seed, "a retry is sampled anew");
        assert_eq!(
            sampling_of(&LocalConfig::new("m.gguf"), &talk, true, 0),
            Some(sampled),
            "the same conversation, the same seed"
        );
    }

    #[test]
    fn failure_locations_are_path_line_and_python_frames() {
        let rust = "thread 'mean_of_a_few' panicked at tests/mean.rs:5:5:\nassertion `left == right` failed";
        assert_eq!(failure_locations(rust), ["tests/mean.rs"]);
        let compiler = "error[E0308]: mismatched types\n --> ./src/lib.rs:8:5\n  |";
        assert_eq!(failure_locations(compiler), ["src/lib.rs"]);
        let python = "Traceback (most recent call last):\n  File \"/w/tests/test_mean.py\", line 5, in test_mean\n    assert mean([1]) == 1\nAssertionError";
        assert_eq!(failure_locations(python), ["/w/tests/test_mean.py"]);
        let pytest = "tests/test_mean.py:5: AssertionError";
        assert_eq!(failure_locations(pytest), ["tests/test_mean.py"]);
        let js = "    at Object.<anonymous> (tests/mean.test.js:5:10)\n    at mean.test.js:7:1";
        assert_eq!(
            failure_locations(js),
            ["tests/mean.test.js", "mean.test.js"]
        );
        // Times, ports and words before a colon are no files.
        assert!(failure_locations("at 12:30:01 on localhost:8080, note: 3 failed").is_empty());
        assert!(same_file("/w/tests/test_mean.py", "./tests/test_mean.py"));
        assert!(!same_file("/w/tests/test_mean.py", "mean.py"));
    }

    #[test]
    fn the_search_leaves_out_the_files_the_failing_checks_point_at() {
        let file = |path: &str, line: &str| grammar::Seen {
            path: path.into(),
            lines: vec![grammar::Line::new(line)],
        };
        let seen = vec![
            file("./tests/mean.rs", "assert_eq!(mean(&[1.0]), Some(1.0));"),
            file("src/lib.rs", "Some(x / 2.0)"),
        ];
        let mut talk = vec![
            Message::user("Make `cargo test` pass."),
            Message::user(
                "After your last change, tests fails:\n\n## tests\npanicked at tests/mean.rs:5:5:\nassertion failed",
            ),
        ];
        let kept = searched_files(&talk, seen.clone());
        assert_eq!(kept, seen[1..], "the test file is the spec");
        // The search's own edit broke the build: the newest note points only at the edited
        // file, which stays searchable (the edit must be undone), and the test stays out.
        talk.push(edit(
            "call_1",
            r#"{"path": "src/lib.rs", "old": "Some(x / 2.0)", "new": "Some(x / 2.0"}"#,
        ));
        talk.push(answer("call_1", "replaced", false));
        talk.push(Message::user(
            "After your last change, tests fails:\n\n## tests\nerror: expected `)`\n --> src/lib.rs:8:5",
        ));
        assert_eq!(searched_files(&talk, seen.clone()), seen[1..]);
        // Before the checks fail, nothing is the spec.
        assert_eq!(searched_files(&talk[..1], seen.clone()), seen);
        // pytest prints every frame, the file to fix among them: only the test is the spec.
        let py = vec![
            file("tests/test_mean.py", "assert mean([2, 4]) == 3"),
            file("src/mean.py", "return sum(xs) / (len(xs) + 1)"),
        ];
        let pytest = [
            Message::user("Make `pytest` pass."),
            Message::user(
                "After your last change, tests fails:\n\n## tests\ntests/test_mean.py:4: in test_mean\n    assert mean([2, 4]) == 3\nsrc/mean.py:2: AssertionError\n  File \"/w/src/mean.py\", line 2, in mean",
            ),
        ];
        assert_eq!(searched_files(&pytest, py.clone()), py[1..]);
    }

    #[test]
    fn a_test_named_before_the_performance_edited_it_stays_the_spec() {
        let file = |path: &str, line: &str| grammar::Seen {
            path: path.into(),
            lines: vec![grammar::Line::new(line)],
        };
        let seen = vec![
            file("tests/mean.rs", "assert_eq!(mean(&[1.0]), Some(1.0));"),
            file("tests/util.rs", "fn close(a: f64) -> bool {"),
            file("src/lib.rs", "Some(x / 2.0)"),
        ];
        let failing = |at: &str| {
            Message::user(format!(
                "After your last change, tests fails:\n\n## tests\npanicked at {at}:5:5:"
            ))
        };
        let talk = vec![
            Message::user("Make `cargo test` pass."),
            failing("tests/mean.rs"),
            edit(
                "call_1",
                r#"{"path": "tests/mean.rs", "old": "Some(1.0)", "new": "Some(0.5)"}"#,
            ),
            answer("call_1", "replaced", false),
            edit(
                "call_2",
                r#"{"path": "tests/util.rs", "old": "a: f64", "new": "a: f32"}"#,
            ),
            answer("call_2", "replaced", false),
            // Both named after their edits: the spec from before stays out, the file whose
            // only failure is the search's own edit may be edited back.
            failing("tests/mean.rs"),
            failing("tests/util.rs"),
        ];
        assert_eq!(searched_files(&talk, seen.clone()), seen[1..]);
    }

    #[test]
    fn only_a_refusal_that_ends_with_its_mark_is_one() {
        use improv_edges::policy::{DIRECTOR_REFUSED, REFUSED};
        assert_eq!(
            refusal(&format!("edit: `x` is denied (y). {REFUSED}\n")),
            Some(Refusal::Rule)
        );
        assert_eq!(
            refusal(&format!(
                "edit: the director denied `x` (y). {DIRECTOR_REFUSED}"
            )),
            Some(Refusal::Director)
        );
        // An edit's error quoting a line of the file, or a path, that holds the mark.
        let quoted = format!(
            "`old` does not occur in `src/lib.rs`; its first line is at line 3:\n3\tlet s = \"{REFUSED}\";\nbut what follows differs; read the file again and copy the exact text"
        );
        assert_eq!(refusal(&quoted), None);
        assert_eq!(
            refusal(&format!("edit: `src/{REFUSED}/x.rs` does not exist")),
            None
        );
    }

    #[test]
    fn the_directors_no_refuses_a_text_not_the_file() {
        let tools = props();
        let read = |id: &str| Message::Assistant {
            text: String::new(),
            tool_calls: vec![ToolCall {
                id: id.into(),
                name: "read".into(),
                arguments: r#"{"path": "src/lib.rs"}"#.into(),
            }],
        };
        let talk = vec![
            read("call_1"),
            answer("call_1", "1\tx + 1", false),
            edit(
                "call_2",
                r#"{"path": "src/lib.rs", "old": "x + 1", "new": "x + 2"}"#,
            ),
            answer(
                "call_2",
                &format!(
                    "edit: the director denied `src/lib.rs` (ask = \"src/**\"). {}",
                    improv_edges::policy::DIRECTOR_REFUSED
                ),
                true,
            ),
        ];
        let mut line = grammar::Line::new("x + 1");
        line.tried = vec!["x + 2".into()];
        assert_eq!(
            seen_files("", &talk, &tools),
            [grammar::Seen {
                path: "src/lib.rs".into(),
                lines: vec![line],
            }]
        );
    }

    #[test]
    fn seen_files_offer_at_most_max_seen_bytes_of_lines() {
        let tools = props();
        let read: String = (1..=2000)
            .map(|i| format!("{i}\tlet value_{i} = compute({i});\n"))
            .collect();
        let talk = vec![
            Message::user("Attempt 1 of 3: 1 of 1 checks failed: tests."),
            reply(r#"{"path": "src/lib.rs"}"#),
            answer("call_1", &read, false),
        ];
        assert!(read.len() > 4 * MAX_SEEN_BYTES);
        let seen = seen_files("", &talk, &tools);
        let size: usize = seen
            .iter()
            .flat_map(|f| &f.lines)
            .map(|l| l.now.len() + l.first.len())
            .sum();
        assert!(size <= MAX_SEEN_BYTES, "{size}");
        assert!(size > MAX_SEEN_BYTES / 2, "the budget is used: {size}");
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
            repeated_call(&talk, &again, None),
            Some(grammar::Avoid {
                prop: "write".into(),
                path: Some("a.txt".into()),
                text: Some("hi".into()),
                old: None,
            })
        );
        assert_eq!(
            repeated_call(
                &[reply(r#"{"path": "a.txt"}"#)],
                &call(r#"{"path": "a.txt"}"#),
                None
            ),
            avoid("a.txt")
        );
    }
}
