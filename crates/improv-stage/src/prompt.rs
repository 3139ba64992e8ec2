//! The system prompt of an actor. It is sent on every turn, so it stays short: the actor's role,
//! its workspace, how to act and when to stop, then the context files that exist.
//!
//! Context files are read beneath the stage folder ([`improv_workspace::Workspace`]): actors can
//! write there, so a file that is (or is swapped for) a symlink leading outside it, to a user's
//! credentials or `/proc/self/environ`, is left out, and the prompt says which and why in one
//! line, so the director sees it in the logged prompt.

use crate::{ActorConfig, Stage};
use improv_workspace::{PathError, Scope, Workspace};
use std::fmt::Write;
use std::io::Read;
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
    let dir = if stage.dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        &stage.dir
    };
    let Ok(folder) = Workspace::scoped(dir, Scope::StageFolder) else {
        return out;
    };
    for name in &stage.context.files {
        let (bytes, len) = match read_capped(&folder, name) {
            Ok(read) => read,
            Err(
                e @ (PathError::Leaves { .. } | PathError::Outside { .. } | PathError::Loop { .. }),
            ) => {
                let _ = write!(out, "\n[context file {name} is left out: {}]\n", why(&e));
                continue;
            }
            // Missing (or unreadable) files are simply not there.
            Err(_) => continue,
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
                len
            );
        } else {
            out.push_str(text);
            out.push('\n');
        }
    }
    out
}

/// The start of the context file `name`, a little over the cap so a cut shows, and its length.
fn read_capped(folder: &Workspace, name: &str) -> Result<(Vec<u8>, u64), PathError> {
    let file = folder.open_read(name)?;
    let io = |source| PathError::Io {
        given: name.to_string(),
        source,
    };
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(PathError::NotAFile { given: name.into() });
    }
    let mut bytes = Vec::new();
    file.take(CONTEXT_FILE_CAP as u64 + 4)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    Ok((bytes, meta.len()))
}

/// Why a context file was left out, in a few words (no absolute path for the model to copy).
fn why(e: &PathError) -> &'static str {
    match e {
        PathError::Outside { .. } => "it is outside the stage folder",
        PathError::Loop { .. } => "it goes through a symlink loop or a /proc magic link",
        _ => "it leads outside the stage folder through a symlink",
    }
}
