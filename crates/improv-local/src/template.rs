//! Chat templates: renders a conversation in the prompt format the model was trained on.
//!
//! A GGUF file carries its chat template as a Jinja text (`tokenizer.chat_template`). llama.cpp's
//! own `llama_chat_apply_template` knows a fixed list of templates and nothing about tools, so
//! instead we detect the template's *family* from markers in its text and render each message
//! ourselves:
//!
//! | family  | marker in the template   | models                 | tool results as              |
//! |---------|--------------------------|------------------------|------------------------------|
//! | ChatML  | `<\|im_start\|>`         | SmolLM2, Qwen 2/2.5/3  | a user turn (`<tool_response>` when the template has it) |
//! | Llama 3 | `<\|start_header_id\|>`  | Llama 3, 3.1, 3.2      | an `ipython` turn when the template has it, else a user turn |
//! | Gemma   | `<start_of_turn>`        | Gemma 2, Gemma 3       | a user turn                  |
//!
//! The output is a list of [`Piece`]s: control markers (`<|im_start|>`, ...), which are tokenized
//! as special tokens, and text, which is tokenized as plain text, so a file or a tool result that
//! happens to contain `<|im_end|>` cannot end a turn. Each message renders to the same pieces no
//! matter what follows it, which is what lets the prefix cache reuse earlier turns.
//!
//! Tool calls in the history are rendered as the JSON the tool grammar produces
//! (see [`crate::grammar::call_json`]), so the model sees its own calls as it wrote them.

use crate::grammar::call_json;
use improv_kernel::Message;

/// The prompt formats we can render.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `<|im_start|>role\n...<|im_end|>`. `tool_response`: the template wraps tool results in
    /// `<tool_response>` tags (Qwen 2.5 and later).
    ChatMl { tool_response: bool },
    /// `<|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>`. `ipython`: the template has
    /// the `ipython` role for tool results (Llama 3.1 and later).
    Llama3 { ipython: bool },
    /// `<start_of_turn>user\n...<end_of_turn>`, with the system prompt folded into the first user
    /// turn and roles strictly alternating.
    Gemma,
}

impl Family {
    /// Detects the family from a GGUF chat template; `None` when it is none we know.
    pub fn detect(template: &str) -> Option<Family> {
        if template.contains("<|im_start|>") {
            Some(Family::ChatMl {
                tool_response: template.contains("<tool_response>"),
            })
        } else if template.contains("<|start_header_id|>") {
            Some(Family::Llama3 {
                ipython: template.contains("ipython"),
            })
        } else if template.contains("<start_of_turn>") {
            Some(Family::Gemma)
        } else {
            None
        }
    }

    /// A short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Family::ChatMl { .. } => "chatml",
            Family::Llama3 { .. } => "llama3",
            Family::Gemma => "gemma",
        }
    }
}

/// One piece of a rendered prompt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// A control marker, tokenized as a special token.
    Special(&'static str),
    /// Text, tokenized as plain text.
    Text(String),
}

/// Renders the system prompt and the conversation, ending with the header of the assistant's turn
/// (the "generation prompt"). An empty `system` renders no system turn.
pub fn render(family: Family, system: &str, messages: &[Message]) -> Vec<Piece> {
    let mut out = Vec::new();
    match family {
        Family::ChatMl { tool_response } => chatml(&mut out, tool_response, system, messages),
        Family::Llama3 { ipython } => llama3(&mut out, ipython, system, messages),
        Family::Gemma => gemma(&mut out, system, messages),
    }
    out
}

/// The rendered prompt as one string, markers included: for tests and debugging.
pub fn to_text(pieces: &[Piece]) -> String {
    pieces
        .iter()
        .map(|p| match p {
            Piece::Special(s) => *s,
            Piece::Text(t) => t.as_str(),
        })
        .collect()
}

/// What an assistant message says: its text, then each tool call as JSON on its own line.
fn assistant_content(text: &str, calls: &[improv_kernel::ToolCall]) -> String {
    let mut content = text.to_string();
    for call in calls {
        if !content.is_empty() {
            content.push('\n');
        }
        content.push_str(&call_json(&call.name, &call.arguments));
    }
    content
}

/// A tool result for families without a tool role: said by the "user", naming the prop.
fn tool_as_user(name: &str, content: &str, is_error: bool) -> String {
    let verb = if is_error { "failed" } else { "returned" };
    format!("Tool {name} {verb}:\n{content}")
}

/// Pushes text, skipping empty strings so that no empty piece splits the token stream.
fn text(out: &mut Vec<Piece>, s: impl Into<String>) {
    let s = s.into();
    if !s.is_empty() {
        out.push(Piece::Text(s));
    }
}

fn chatml(out: &mut Vec<Piece>, tool_response: bool, system: &str, messages: &[Message]) {
    let turn = |out: &mut Vec<Piece>, role: &str, content: &str| {
        out.push(Piece::Special("<|im_start|>"));
        text(out, format!("{role}\n"));
        text(out, content);
        out.push(Piece::Special("<|im_end|>"));
        text(out, "\n");
    };
    if !system.is_empty() {
        turn(out, "system", system);
    }
    let mut i = 0;
    while i < messages.len() {
        match &messages[i] {
            Message::User { text } => turn(out, "user", text),
            Message::Assistant { text, tool_calls } => {
                turn(out, "assistant", &assistant_content(text, tool_calls))
            }
            Message::Tool {
                name,
                content,
                is_error,
                ..
            } => {
                if tool_response {
                    // Qwen's template gathers consecutive tool results into one user turn.
                    let mut body = String::new();
                    while let Some(Message::Tool { content, .. }) = messages.get(i) {
                        if !body.is_empty() {
                            body.push('\n');
                        }
                        body.push_str("<tool_response>\n");
                        body.push_str(content);
                        body.push_str("\n</tool_response>");
                        i += 1;
                    }
                    turn(out, "user", &body);
                    continue;
                }
                turn(out, "user", &tool_as_user(name, content, *is_error));
            }
        }
        i += 1;
    }
    out.push(Piece::Special("<|im_start|>"));
    text(out, "assistant\n");
}

fn llama3(out: &mut Vec<Piece>, ipython: bool, system: &str, messages: &[Message]) {
    let header = |out: &mut Vec<Piece>, role: &str| {
        out.push(Piece::Special("<|start_header_id|>"));
        text(out, role);
        out.push(Piece::Special("<|end_header_id|>"));
        text(out, "\n\n");
    };
    let turn = |out: &mut Vec<Piece>, role: &str, content: &str| {
        header(out, role);
        text(out, content);
        out.push(Piece::Special("<|eot_id|>"));
    };
    if !system.is_empty() {
        turn(out, "system", system);
    }
    for message in messages {
        match message {
            Message::User { text } => turn(out, "user", text),
            Message::Assistant { text, tool_calls } => {
                turn(out, "assistant", &assistant_content(text, tool_calls))
            }
            Message::Tool {
                name,
                content,
                is_error,
                ..
            } => {
                if ipython {
                    turn(out, "ipython", content);
                } else {
                    turn(out, "user", &tool_as_user(name, content, *is_error));
                }
            }
        }
    }
    header(out, "assistant");
}

fn gemma(out: &mut Vec<Piece>, system: &str, messages: &[Message]) {
    // Gemma has two roles, `user` and `model`, which must alternate: the system prompt opens the
    // first user turn, and consecutive user-side messages (notes, tool results) share one turn.
    let mut pending_user: Vec<String> = Vec::new();
    if !system.is_empty() {
        pending_user.push(system.to_string());
    }
    let flush = |out: &mut Vec<Piece>, pending: &mut Vec<String>| {
        if pending.is_empty() {
            return;
        }
        out.push(Piece::Special("<start_of_turn>"));
        text(out, "user\n");
        text(out, pending.join("\n\n"));
        out.push(Piece::Special("<end_of_turn>"));
        text(out, "\n");
        pending.clear();
    };
    for message in messages {
        match message {
            Message::User { text } => pending_user.push(text.clone()),
            Message::Tool {
                name,
                content,
                is_error,
                ..
            } => pending_user.push(tool_as_user(name, content, *is_error)),
            Message::Assistant {
                text: t,
                tool_calls,
            } => {
                flush(out, &mut pending_user);
                out.push(Piece::Special("<start_of_turn>"));
                text(out, "model\n");
                text(out, assistant_content(t, tool_calls));
                out.push(Piece::Special("<end_of_turn>"));
                text(out, "\n");
            }
        }
    }
    flush(out, &mut pending_user);
    out.push(Piece::Special("<start_of_turn>"));
    text(out, "model\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use improv_kernel::ToolCall;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    const QWEN25_PART: &str = "{%- if tools %}{{- '<|im_start|>system\\n' }}...{{- '\\n<tool_response>\\n' }}{{- message.content }}{{- '\\n</tool_response>' }}";
    const LLAMA31_PART: &str = "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}{%- elif message.role == \"tool\" or message.role == \"ipython\" %}";
    const GEMMA_PART: &str =
        "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}";

    fn conversation() -> Vec<Message> {
        vec![
            Message::user("List the files."),
            Message::Assistant {
                text: String::new(),
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "list".into(),
                    arguments: r#"{"path": "."}"#.into(),
                }],
            },
            Message::Tool {
                call_id: "call_1".into(),
                name: "list".into(),
                content: "a.txt\nb.txt".into(),
                is_error: false,
            },
        ]
    }

    #[test]
    fn detects_each_family_from_real_template_text() {
        assert_eq!(
            Family::detect(SMOLLM2),
            Some(Family::ChatMl {
                tool_response: false
            })
        );
        assert_eq!(
            Family::detect(QWEN25_PART),
            Some(Family::ChatMl {
                tool_response: true
            })
        );
        assert_eq!(
            Family::detect(LLAMA31_PART),
            Some(Family::Llama3 { ipython: true })
        );
        assert_eq!(Family::detect(GEMMA_PART), Some(Family::Gemma));
        assert_eq!(Family::detect("{{ messages }}"), None);
    }

    #[test]
    fn chatml_renders_system_user_call_result_and_generation_prompt() {
        let pieces = render(
            Family::ChatMl {
                tool_response: false,
            },
            "Be brief.",
            &conversation(),
        );
        assert_eq!(
            to_text(&pieces),
            "<|im_start|>system\nBe brief.<|im_end|>\n\
             <|im_start|>user\nList the files.<|im_end|>\n\
             <|im_start|>assistant\n{\"tool\": \"list\", \"arguments\": {\"path\": \".\"}}<|im_end|>\n\
             <|im_start|>user\nTool list returned:\na.txt\nb.txt<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        // Markers are special pieces, never text, so content cannot forge them.
        assert_eq!(pieces[0], Piece::Special("<|im_start|>"));
        assert!(
            pieces
                .iter()
                .all(|p| !matches!(p, Piece::Text(t) if t.contains("<|im_")))
        );
    }

    #[test]
    fn qwen_gathers_tool_results_in_tool_response_tags() {
        let mut messages = conversation();
        messages.push(Message::Tool {
            call_id: "call_2".into(),
            name: "read".into(),
            content: "hello".into(),
            is_error: false,
        });
        let text = to_text(&render(
            Family::ChatMl {
                tool_response: true,
            },
            "",
            &messages,
        ));
        assert!(text.starts_with("<|im_start|>user\nList the files."));
        assert!(text.ends_with(
            "<|im_start|>user\n<tool_response>\na.txt\nb.txt\n</tool_response>\n<tool_response>\nhello\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
        ));
    }

    #[test]
    fn llama3_uses_headers_and_ipython_for_results() {
        let text = to_text(&render(
            Family::Llama3 { ipython: true },
            "Be brief.",
            &conversation(),
        ));
        assert_eq!(
            text,
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nList the files.<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n{\"tool\": \"list\", \"arguments\": {\"path\": \".\"}}<|eot_id|>\
             <|start_header_id|>ipython<|end_header_id|>\n\na.txt\nb.txt<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        let plain = to_text(&render(
            Family::Llama3 { ipython: false },
            "",
            &conversation(),
        ));
        assert!(plain.contains("<|start_header_id|>user<|end_header_id|>\n\nTool list returned:"));
    }

    #[test]
    fn gemma_folds_system_into_first_user_turn_and_alternates() {
        let mut messages = conversation();
        messages.push(Message::user("Now summarize."));
        let text = to_text(&render(Family::Gemma, "Be brief.", &messages));
        assert_eq!(
            text,
            "<start_of_turn>user\nBe brief.\n\nList the files.<end_of_turn>\n\
             <start_of_turn>model\n{\"tool\": \"list\", \"arguments\": {\"path\": \".\"}}<end_of_turn>\n\
             <start_of_turn>user\nTool list returned:\na.txt\nb.txt\n\nNow summarize.<end_of_turn>\n\
             <start_of_turn>model\n"
        );
    }

    #[test]
    fn a_message_renders_the_same_whatever_follows_it() {
        // The prefix cache depends on this: turn N's pieces start with turn N-1's.
        let family = Family::ChatMl {
            tool_response: false,
        };
        let all = conversation();
        let shorter = render(family, "sys", &all[..2]);
        let longer = render(family, "sys", &all);
        // Everything but the trailing generation prompt is a prefix of the longer rendering.
        let stable = &shorter[..shorter.len() - 2];
        assert_eq!(&longer[..stable.len()], stable);
    }

    #[test]
    fn errors_in_tool_results_are_said() {
        let messages = vec![Message::Tool {
            call_id: "c".into(),
            name: "read".into(),
            content: "no such file".into(),
            is_error: true,
        }];
        let text = to_text(&render(
            Family::ChatMl {
                tool_response: false,
            },
            "",
            &messages,
        ));
        assert!(text.contains("Tool read failed:\nno such file"));
    }
}
