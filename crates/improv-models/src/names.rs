//! Tool names on the wire. OpenAI and Anthropic accept only `[A-Za-z0-9_-]{1,64}`; improv's MCP
//! props are named `server.tool`. [`WireNames`] wraps a hosted model: it sends each name with
//! every other character spelled `_` (a `.` as `__`), and maps the names in the reply back
//! through the request's own props, so the rest of improv only sees the real names.
//! Written here rather than taken from a crate: it is a dozen lines of mapping, specific to
//! how improv names props.

use async_trait::async_trait;
use improv_kernel::{Message, Model, ModelError, ModelUpdate, Price, Reply, Request, ToolSpec};
use std::collections::HashMap;
use std::sync::Arc;

/// The longest tool name the providers accept.
const MAX_LEN: usize = 64;

/// `name` as the providers accept it: `.` becomes `__`, other characters outside
/// `[A-Za-z0-9_-]` become `_`, and a name longer than 64 bytes keeps its start and a short hash.
pub fn wire_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        match c {
            '.' => out.push_str("__"),
            c if accepted(c) => out.push(c),
            _ => out.push('_'),
        }
    }
    if out.len() > MAX_LEN {
        // FNV-1a: stable across runs and builds, unlike std's hasher.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        out.truncate(MAX_LEN - 9);
        out.push_str(&format!("_{:08x}", hash as u32));
    }
    out
}

/// A character the providers accept in a tool name.
fn accepted(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn needs_mapping(name: &str) -> bool {
    name.len() > MAX_LEN || !name.chars().all(accepted)
}

/// A hosted model whose tool names are mapped to what the provider accepts and back.
pub struct WireNames(pub Arc<dyn Model>);

#[async_trait]
impl Model for WireNames {
    fn name(&self) -> &str {
        self.0.name()
    }
    fn price(&self) -> Option<Price> {
        self.0.price()
    }
    fn context_window(&self) -> Option<u64> {
        self.0.context_window()
    }

    async fn respond(
        &self,
        request: Request<'_>,
        update: &mut (dyn for<'u> FnMut(ModelUpdate<'u>) + Send),
    ) -> Result<Reply, ModelError> {
        let history = request.messages.iter().any(|m| match m {
            Message::Assistant { tool_calls, .. } => {
                tool_calls.iter().any(|c| needs_mapping(&c.name))
            }
            Message::Tool { name, .. } => needs_mapping(name),
            Message::User { .. } => false,
        });
        if !history && !request.tools.iter().any(|t| needs_mapping(&t.name)) {
            return self.0.respond(request, update).await;
        }
        let back: HashMap<String, String> = request
            .tools
            .iter()
            .map(|t| (wire_name(&t.name), t.name.clone()))
            .collect();
        let tools: Vec<ToolSpec> = request
            .tools
            .iter()
            .map(|t| ToolSpec {
                name: wire_name(&t.name),
                ..t.clone()
            })
            .collect();
        let messages: Vec<Message> = request
            .messages
            .iter()
            .map(|m| match m {
                Message::Assistant { text, tool_calls } => Message::Assistant {
                    text: text.clone(),
                    tool_calls: tool_calls
                        .iter()
                        .map(|c| improv_kernel::ToolCall {
                            name: wire_name(&c.name),
                            ..c.clone()
                        })
                        .collect(),
                },
                Message::Tool {
                    call_id,
                    name,
                    content,
                    is_error,
                } => Message::Tool {
                    call_id: call_id.clone(),
                    name: wire_name(name),
                    content: content.clone(),
                    is_error: *is_error,
                },
                other => other.clone(),
            })
            .collect();
        let mut reply = self
            .0
            .respond(
                Request {
                    tools: &tools,
                    messages: &messages,
                    ..request
                },
                update,
            )
            .await?;
        for call in &mut reply.tool_calls {
            if let Some(real) = back.get(&call.name) {
                call.name = real.clone();
            }
        }
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_spelled_as_providers_accept_them() {
        assert_eq!(wire_name("read"), "read");
        assert_eq!(wire_name("fs.read_file"), "fs__read_file");
        assert_eq!(wire_name("a b/c"), "a_b_c");
        let long = format!("srv.{}", "x".repeat(80));
        let w = wire_name(&long);
        assert_eq!(w.len(), 64);
        assert_eq!(w, wire_name(&long), "stable");
        assert_ne!(w, wire_name(&format!("srv.{}", "x".repeat(81))));
    }
}
