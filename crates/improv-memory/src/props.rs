//! The `remember` and `recall` props: how actors save notes for later performances of a stage
//! and find them again. Their specs are kept tiny (a test holds each under 300 bytes), because
//! every byte is paid on every turn. Either backend ([`MemoryBackend`]) serves them.

use crate::backend::MemoryBackend;
use crate::store::{Entry, Found, Provenance};
use async_trait::async_trait;
use improv_kernel::{Access, Prop, PropContext, PropError, ToolSpec};
use serde_json::{Value, json};
use std::sync::Arc;

/// Memories `recall` returns when the model gives no limit.
const DEFAULT_LIMIT: usize = 5;
/// The most memories one `recall` returns.
const MAX_LIMIT: usize = 20;
/// Memories longer than this are shown as a snippet around the matching words.
const FULL_TEXT: usize = 300;

/// The `remember` and `recall` props over a stage's memory. Memories are attributed to the
/// actor and performance in the call's [`PropContext`].
pub fn props(memory: Arc<dyn MemoryBackend>) -> Vec<Arc<dyn Prop>> {
    vec![
        Arc::new(Remember {
            memory: memory.clone(),
            spec: ToolSpec {
                name: "remember".into(),
                description: "Save a note for later performances of this stage. A key replaces its earlier note.".into(),
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "text": {"type": "string"},
                        "tags": {"type": "array", "items": {"type": "string"}},
                        "key": {"type": "string"}
                    },
                    "required": ["text"]
                }),
            },
        }),
        Arc::new(Recall {
            memory,
            spec: ToolSpec {
                name: "recall".into(),
                description: "Search saved notes; an empty query lists the newest.".into(),
                parameters: json!({
                    "type": "object",
                    "properties": {
                        "query": {"type": "string"},
                        "limit": {"type": "integer"}
                    }
                }),
            },
        }),
    ]
}

struct Remember {
    memory: Arc<dyn MemoryBackend>,
    spec: ToolSpec,
}

struct Recall {
    memory: Arc<dyn MemoryBackend>,
    spec: ToolSpec,
}

#[async_trait]
impl Prop for Remember {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    async fn call(&self, arguments: Value, context: &PropContext) -> Result<String, PropError> {
        let Some(text) = arguments.get("text").and_then(Value::as_str) else {
            return Err(PropError::new("`text` is required: the note to save"));
        };
        let text = text.to_string();
        let tags: Vec<String> = match arguments.get("tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(tag)) => vec![tag.clone()],
            Some(Value::Array(tags)) => tags
                .iter()
                .map(|t| match t {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
            Some(_) => return Err(PropError::new("`tags` must be a list of strings")),
        };
        let key = match arguments.get("key") {
            None | Some(Value::Null) => None,
            Some(Value::String(key)) => Some(key.clone()),
            Some(_) => return Err(PropError::new("`key` must be a string")),
        };
        let by = Provenance::new(context.actor.as_ref(), context.performance.as_ref());
        let done = self
            .memory
            .remember(&text, &tags, key.as_deref(), &by)
            .await
            .map_err(|e| PropError::new(e.to_string()))?;
        Ok(if done.replaced {
            format!("replaced note #{}", done.id)
        } else {
            format!("saved note #{}", done.id)
        })
    }
}

#[async_trait]
impl Prop for Recall {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn access(&self, _arguments: &Value) -> Access {
        Access::Read
    }

    async fn call(&self, arguments: Value, _context: &PropContext) -> Result<String, PropError> {
        let query = match arguments.get("query") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(q)) => q.clone(),
            Some(_) => return Err(PropError::new("`query` must be a string")),
        };
        let limit = match arguments.get("limit") {
            None | Some(Value::Null) => DEFAULT_LIMIT,
            Some(v) => match v.as_u64() {
                Some(n) => (n as usize).clamp(1, MAX_LIMIT),
                None => return Err(PropError::new("`limit` must be a positive integer")),
            },
        };
        let found = self
            .memory
            .recall(&query, limit)
            .await
            .map_err(|e| PropError::new(e.to_string()))?;
        if found.is_empty() {
            return Ok(if query.trim().is_empty() {
                "no notes saved yet".into()
            } else {
                format!("no notes match `{}`", query.trim())
            });
        }
        Ok(found.iter().map(line).collect::<Vec<_>>().join("\n"))
    }
}

/// One memory as the model sees it: `#id date [tags] (key) text`.
fn line(found: &Found) -> String {
    let Found { entry, snippet } = found;
    let Entry {
        id,
        text,
        tags,
        key,
        updated_at,
        ..
    } = entry;
    let mut out = format!("#{id} {}", updated_at.get(..10).unwrap_or(updated_at));
    if !tags.is_empty() {
        out.push_str(&format!(" [{}]", tags.join(" ")));
    }
    if let Some(key) = key {
        out.push_str(&format!(" ({key})"));
    }
    out.push(' ');
    out.push_str(if text.len() <= FULL_TEXT {
        text
    } else {
        snippet
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_stay_small() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let memory = crate::Memory::open_in(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let memory: Arc<dyn MemoryBackend> = Arc::new(memory);
        for prop in props(memory) {
            let bytes = serde_json::to_string(prop.spec()).map_or(0, |s| s.len());
            assert!(bytes < 300, "{} spec is {bytes} bytes", prop.spec().name);
        }
    }
}
