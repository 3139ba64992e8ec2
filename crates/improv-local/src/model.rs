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
            Some(grammar::gbnf(
                request.tools,
                self.required(request.messages),
            )),
        )
    }

    /// Whether the next reply must call a prop: always with `tool_choice = "required"`, and
    /// right after a note of failing checks (see [`must_act`]).
    fn required(&self, messages: &[Message]) -> bool {
        self.config.tool_choice == ToolChoice::Required || must_act(messages)
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
        let (prompt, grammar) = self.prompt(&request);
        let max_tokens = request
            .max_output_tokens
            .unwrap_or(self.config.max_output_tokens)
            .max(1);
        let nudge = matches!(request.messages.last(), Some(Message::User { .. }));
        let mut out = self
            .run(prompt.clone(), grammar, nudge, max_tokens, false, update)
            .await?;
        if let Some(name) = repeats_warned_call(request.messages, &out) {
            // The model is about to make the call the loop detector just warned about: try once
            // more with that prop left out of the grammar, so it does something else or answers.
            // The first try's call was never streamed; its tokens still count.
            tracing::debug!(model = %self.name, prop = %name, "refused a warned repeat");
            let required = self.required(request.messages);
            let grammar = grammar::gbnf_without(request.tools, required, &name);
            let first = out;
            out = self
                .run(prompt, Some(grammar), nudge, max_tokens, false, update)
                .await?;
            out.input_tokens += first.input_tokens;
            out.cached_tokens += first.cached_tokens;
            out.output_tokens += first.output_tokens;
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
        let id = format!("call_{}", calls_so_far(request.messages) + 1);
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

/// Whether the conversation ends with a note that the stage's checks fail: the actor has called
/// no prop since, so its reply must be a call (the `tool_choice = "required"` of a hosted API,
/// for this one reply). A small model answers such a note in text, describing what it would
/// run, turn after turn, and the attempts run out with nothing changed; made to act, it reads,
/// runs and edits. After its call it is free again to answer and end its turn.
fn must_act(messages: &[Message]) -> bool {
    matches!(messages.last(), Some(Message::User { text }) if improv_feedback::is_failing_note(text))
}

/// The prop of the call in `out` when that call is exactly the one the loop detector's note in
/// `messages` warned about (same prop, same arguments; see [`loop_note::warned_calls`]).
fn repeats_warned_call(messages: &[Message], out: &Generated) -> Option<String> {
    if !out.call {
        return None;
    }
    let warned = loop_note::warned_calls(messages)?;
    let Parsed::Call { name, arguments } = grammar::parse(&out.text) else {
        return None;
    };
    let made = [ToolCall {
        id: String::new(),
        name,
        arguments,
    }];
    let [made] = (loop_note::calls_key(&made) == loop_note::calls_key(warned)).then_some(made)?;
    Some(made.name)
}

/// Tool calls in the conversation: call ids continue from it, so they are unique within a
/// performance and the same on every run.
fn calls_so_far(messages: &[Message]) -> usize {
    messages
        .iter()
        .map(|m| match m {
            Message::Assistant { tool_calls, .. } => tool_calls.len(),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn only_the_exact_warned_call_is_refused() {
        let result = Message::Tool {
            call_id: "call_1".into(),
            name: "read".into(),
            content: "no such file".into(),
            is_error: true,
        };
        let same = r#"{"path": "a.txt"}"#;
        let mut talk = vec![reply(same), result.clone(), reply(same), result];
        assert_eq!(
            repeats_warned_call(&talk, &call(same)),
            None,
            "not warned yet"
        );
        talk.push(Message::user(loop_note::note(2, "read(...)")));
        // Spacing does not make it a different call; other arguments or text do.
        let respaced = r#"{"path":"a.txt"}"#;
        assert_eq!(
            repeats_warned_call(&talk, &call(respaced)),
            Some("read".into())
        );
        assert_eq!(
            repeats_warned_call(&talk, &call(r#"{"path": "b.txt"}"#)),
            None
        );
        let text = Generated {
            text: "I cannot find a.txt.".into(),
            ..Default::default()
        };
        assert_eq!(repeats_warned_call(&talk, &text), None);
    }
}
