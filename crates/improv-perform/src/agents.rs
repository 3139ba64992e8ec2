//! AGENTS.md files in subfolders, as context by convention: the stage folder's own AGENTS.md is
//! in every system prompt (a context file); when an actor first works on a path below a folder
//! with its own AGENTS.md, that file's text comes along with the result of the call, once per
//! actor and performance. The system prompt stays unchanged, so prompt caches keep hitting.
//! Each file is read beneath the workspace: one that leads outside through a symlink is left out,
//! and the result says so instead of its text.

use async_trait::async_trait;
use improv_kernel::prop::{Layer, Wrapped};
use improv_kernel::{Prop, PropContext, PropError};
use improv_props::workspace::Workspace;
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The most of one AGENTS.md passed along, in bytes.
const LIMIT: usize = 8_000;

/// The AGENTS.md files an actor has been given, shared by its props.
#[derive(Default)]
pub(crate) struct Given(Mutex<HashSet<PathBuf>>);

/// A prop that brings along the AGENTS.md files of the folders its path is in.
pub(crate) type WithAgents = Wrapped<Agents>;

/// The [`Layer`] of [`WithAgents`]: the files already given, and the root one never added.
pub(crate) struct Agents {
    root_file: PathBuf,
    given: Arc<Given>,
}

impl Agents {
    pub(crate) fn new(workspace: &Path, given: Arc<Given>) -> Self {
        Agents {
            root_file: workspace.join(improv_skills::AGENTS_FILE),
            given,
        }
    }
}

#[async_trait]
impl Layer for Agents {
    async fn call(
        &self,
        inner: &dyn Prop,
        arguments: Value,
        context: &PropContext,
    ) -> Result<String, PropError> {
        let path = arguments
            .get("path")
            .and_then(Value::as_str)
            .map(PathBuf::from);
        let mut out = inner.call(arguments, context).await?;
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
        if new.is_empty() {
            return Ok(out);
        }
        let workspace = Workspace::new(&context.workspace)?;
        for file in new {
            let shown = file
                .strip_prefix(&*context.workspace)
                .unwrap_or(&file)
                .display()
                .to_string();
            // A little over the limit, so a longer file is seen to be cut.
            let text = match improv_skills::read_agents(&workspace, &file, LIMIT + 4) {
                Ok(text) => text,
                Err(e) if e.is_not_found() => continue,
                Err(e) => {
                    out.push_str(&format!("\n\n[{shown} is left out: {e}]"));
                    continue;
                }
            };
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

#[cfg(test)]
mod tests {
    use super::*;
    use improv_kernel::{Actor, Message, Performance, ScriptedModel, ScriptedTurn};
    use std::path::Path;
    use tokio_util::sync::CancellationToken;

    const SECRET: &str = "OUTSIDE-SECRET-a2b8";

    /// One performance in `ws` whose actor reads `path` once with the real `read` prop wrapped in
    /// [`WithAgents`]; the tool result.
    async fn read_once(ws: &Path, path: &str) -> String {
        let model = Arc::new(ScriptedModel::new([
            ScriptedTurn::call("read", serde_json::json!({"path": path})),
            ScriptedTurn::say("done"),
        ]));
        let read: Arc<dyn Prop> = Arc::new(improv_props::Read::new(50 * 1024));
        let prop = WithAgents::new(read, Agents::new(ws, Arc::new(Given::default())));
        let actor = Actor {
            name: "lead".into(),
            system: "test".into(),
            model,
            props: vec![Arc::new(prop)],
            max_output_tokens: None,
        };
        let mut p = Performance::builder(actor)
            .workspace(ws)
            .start("read")
            .unwrap();
        p.act(&CancellationToken::new()).await;
        p.conversation()
            .iter()
            .find_map(|m| match m {
                Message::Tool { content, .. } => Some(content.clone()),
                _ => None,
            })
            .unwrap()
    }

    /// A workspace `ws` and an outside folder with an AGENTS.md holding the secret, both canonical.
    fn fixture() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let base = tempfile::tempdir().unwrap();
        let real = base.path().canonicalize().unwrap();
        let (ws, outside) = (real.join("ws"), real.join("outside"));
        std::fs::create_dir_all(ws.join("api")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(ws.join("api/x.rs"), "fn x() {}\n").unwrap();
        std::fs::write(outside.join("x.rs"), "fn x() {}\n").unwrap();
        std::fs::write(outside.join("AGENTS.md"), SECRET).unwrap();
        (base, ws, outside)
    }

    #[tokio::test]
    async fn an_agents_md_that_leads_outside_is_left_out_and_named() {
        let (_base, ws, outside) = fixture();
        std::os::unix::fs::symlink(outside.join("AGENTS.md"), ws.join("api/AGENTS.md")).unwrap();
        let out = read_once(&ws, "api/x.rs").await;
        assert!(!out.contains(SECRET), "{out}");
        assert!(
            out.contains("[api/AGENTS.md is left out: `api/AGENTS.md` leads outside the workspace through a symlink"),
            "{out}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_agents_md_swapped_for_a_symlink_never_brings_outside_text() {
        const TRIES: usize = 1000;
        let (_base, ws, outside) = fixture();
        std::fs::write(ws.join("api/AGENTS.md"), "inside rules").unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (stop, api, secret) = (stop.clone(), ws.join("api"), outside.join("AGENTS.md"));
            std::thread::spawn(move || {
                let (file, temp) = (api.join("AGENTS.md"), api.join(".swap"));
                let mut swaps = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Each rename replaces AGENTS.md at once: a symlink out, then a file again.
                    let ok = std::os::unix::fs::symlink(&secret, &temp).is_ok()
                        && std::fs::rename(&temp, &file).is_ok()
                        && std::fs::write(&temp, "inside rules").is_ok()
                        && std::fs::rename(&temp, &file).is_ok();
                    swaps += u64::from(ok);
                }
                swaps
            })
        };
        let mut inside = 0;
        for _ in 0..TRIES {
            let out = read_once(&ws, "api/x.rs").await;
            assert!(
                !out.contains(SECRET),
                "outside text reached the model: {out}"
            );
            inside += usize::from(out.contains("inside rules"));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        println!("{swaps} swaps, {TRIES} tries, {inside} with the inside AGENTS.md");
        assert!(swaps > 0 && inside > 0, "the race was really run");
    }
}
