//! AGENTS.md files in subfolders, as context by convention: the stage folder's own AGENTS.md is
//! in every system prompt (a context file); when an actor first works on a path below a folder
//! with its own AGENTS.md, that file's text comes along with the result of the call, once per
//! actor and performance. The system prompt stays unchanged, so prompt caches keep hitting.

use async_trait::async_trait;
use improv_kernel::{Access, Prop, PropContext, PropError, ToolSpec};
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The most of one AGENTS.md passed along, in bytes.
const LIMIT: usize = 8_000;

/// The props whose `path` argument says where the actor works.
pub(crate) const PATH_PROPS: &[&str] = &["read", "write", "edit", "grep", "find"];

/// The AGENTS.md files an actor has been given, shared by its props.
#[derive(Default)]
pub(crate) struct Given(Mutex<HashSet<PathBuf>>);

/// A prop that brings along the AGENTS.md files of the folders its path is in.
pub(crate) struct WithAgents {
    inner: Arc<dyn Prop>,
    root_file: PathBuf,
    given: Arc<Given>,
}

impl WithAgents {
    pub(crate) fn new(inner: Arc<dyn Prop>, workspace: &Path, given: Arc<Given>) -> Self {
        WithAgents {
            inner,
            root_file: workspace.join(improv_skills::AGENTS_FILE),
            given,
        }
    }
}

#[async_trait]
impl Prop for WithAgents {
    fn spec(&self) -> &ToolSpec {
        self.inner.spec()
    }
    fn access(&self, arguments: &Value) -> Access {
        self.inner.access(arguments)
    }
    fn timeout(&self) -> Option<std::time::Duration> {
        self.inner.timeout()
    }

    async fn call(&self, arguments: Value, context: &PropContext) -> Result<String, PropError> {
        let path = arguments
            .get("path")
            .and_then(Value::as_str)
            .map(PathBuf::from);
        let mut out = self.inner.call(arguments, context).await?;
        let Some(path) = path else {
            return Ok(out);
        };
        let files = improv_skills::agents_files(&context.workspace, &path);
        let new: Vec<PathBuf> = {
            // Poisoning needs a panic while inserting; the set is still sound then.
            let mut given = self.given.0.lock().unwrap_or_else(|e| e.into_inner());
            files
                .into_iter()
                .filter(|f| *f != self.root_file && given.insert(f.clone()))
                .collect()
        };
        for file in new {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            let shown = file
                .strip_prefix(&*context.workspace)
                .unwrap_or(&file)
                .display()
                .to_string();
            let mut text = text.trim().to_string();
            if text.len() > LIMIT {
                let mut end = LIMIT;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                text.push_str(&format!("\n… (cut; read {shown} for the rest)"));
            }
            out.push_str(&format!("\n\n[{shown} applies to this folder]\n{text}"));
        }
        Ok(out)
    }
}
