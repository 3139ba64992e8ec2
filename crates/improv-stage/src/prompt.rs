//! The system prompt of an actor. It is sent on every turn, so it stays short: the actor's role,
//! its workspace, how to act and when to stop, then the context files that exist.

use crate::{ActorConfig, Stage};
use std::fmt::Write;
use std::path::Path;

/// The role of an actor whose stage gives none.
pub const DEFAULT_ROLE: &str = "You are a capable, careful agent.";

/// The most of one context file put into the prompt.
pub const CONTEXT_FILE_CAP: usize = 20 * 1024;

pub(crate) fn system_prompt(stage: &Stage, actor: &ActorConfig, workspace: &Path) -> String {
    let role = actor
        .role
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .unwrap_or(DEFAULT_ROLE);
    // The folder's name, not its absolute path: models copy what they see, and an absolute path
    // invites them to write paths that leave the workspace. Commands run in it anyway.
    let folder = workspace.file_name().map_or_else(
        || workspace.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut out = format!(
        "{role}\n\
         You work in the folder `{folder}`; give paths relative to it, like `notes.txt`.\n\
         Act with your props (tools); do not just describe what you would do. \
         When the intent is met, stop and reply with a short summary.\n"
    );
    for name in &stage.context.files {
        let Ok(bytes) = std::fs::read(stage.dir.join(name)) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim_end();
        let _ = write!(out, "\n# file: {name}\n");
        if text.len() > CONTEXT_FILE_CAP {
            let mut cut = CONTEXT_FILE_CAP;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let _ = writeln!(
                out,
                "{}\n[{name} is cut here, at 20 KB of its {} bytes; read the file for the rest]",
                &text[..cut],
                bytes.len()
            );
        } else {
            out.push_str(text);
            out.push('\n');
        }
    }
    out
}
