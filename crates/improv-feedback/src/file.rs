//! File checks: assertions about one file of the workspace — it exists (or must not), contains a
//! text, matches a regular expression, is JSON that satisfies a JSON Schema. The file is read
//! beneath the workspace and the schema beneath the stage folder, as the props read theirs
//! ([`Workspace`]): a symlink that leads outside, even one swapped in while the check runs, is
//! refused, so no outside text reaches a verdict.

use improv_props::workspace::{PathError, Scope, Workspace};
use improv_stage::Check;
use std::path::Path;

/// The most schema violations listed in one verdict.
const MAX_VIOLATIONS: usize = 10;

/// The largest schema file read.
const SCHEMA_MAX_BYTES: usize = 4 * 1024 * 1024;

/// Checks the assertions of `check` on its file in `workspace`; relative schema paths are found
/// in `stage_dir`. Whether they all hold, and what was found: every failed assertion, one a
/// line, or a line saying what holds.
pub fn assert(check: &Check, workspace: &Path, stage_dir: &Path) -> (bool, String) {
    let Some(given) = check.file.as_deref() else {
        return (false, "this check names no `file`".into());
    };
    let (workspace, exists) = match Workspace::new(workspace).and_then(|w| {
        let exists = w.exists(given)?;
        Ok((w, exists))
    }) {
        Ok(found) => found,
        Err(e) => return (false, format!("file `{given}`: {e}")),
    };
    if !check.exists {
        return if exists {
            (
                false,
                format!("`{given}` exists, but this check wants it absent: remove it"),
            )
        } else {
            (true, format!("`{given}` does not exist, as required"))
        };
    }
    if !exists {
        return (false, format!("`{given}` does not exist; create it"));
    }
    let wants_content =
        check.contains.is_some() || check.matches.is_some() || check.schema.is_some();
    if !wants_content {
        return (true, format!("`{given}` exists"));
    }
    let bytes = match workspace.read(given, usize::MAX) {
        Ok(b) => b,
        Err(PathError::IsDir { .. }) => {
            return (
                false,
                format!("`{given}` is a folder, but this check reads it as a file"),
            );
        }
        Err(e) => return (false, format!("`{given}` cannot be read: {e}")),
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut held = vec![format!("`{given}` exists")];
    let mut problems = Vec::new();
    if let Some(needle) = &check.contains {
        if text.contains(needle.as_str()) {
            held.push(format!("contains {needle:?}"));
        } else {
            problems.push(format!("`{given}` does not contain {needle:?}"));
        }
    }
    if let Some(pattern) = &check.matches {
        match regex::Regex::new(pattern) {
            Ok(re) if re.is_match(&text) => held.push(format!("matches /{pattern}/")),
            Ok(_) => problems.push(format!("no part of `{given}` matches /{pattern}/")),
            Err(e) => problems.push(format!("`matches` is not a regular expression: {e}")),
        }
    }
    if let Some(schema) = &check.schema {
        let shown = stage_dir.join(schema).display().to_string();
        match schema_problems(stage_dir, schema, &shown, given, &text) {
            Ok(()) => held.push(format!("satisfies {shown}")),
            Err(found) => problems.extend(found),
        }
    }
    if problems.is_empty() {
        (true, held.join(", "))
    } else {
        (false, problems.join("\n"))
    }
}

/// What keeps `text` (the file `given`) from satisfying the JSON Schema `schema`, read beneath
/// `stage_dir` and shown as `shown`.
fn schema_problems(
    stage_dir: &Path,
    schema: &Path,
    shown: &str,
    given: &str,
    text: &str,
) -> Result<(), Vec<String>> {
    let schema: serde_json::Value = Workspace::scoped(stage_dir, Scope::StageFolder)
        .and_then(|folder| folder.read_to_string(schema, SCHEMA_MAX_BYTES))
        .map_err(|e| format!("the schema {shown} cannot be read: {e}"))
        .and_then(|s| {
            serde_json::from_str(&s).map_err(|e| format!("the schema {shown} is not JSON: {e}"))
        })
        .map_err(|p| vec![p])?;
    let validator = jsonschema::validator_for(&schema).map_err(|e| {
        vec![format!(
            "the schema {shown} is not a valid JSON Schema: {e}"
        )]
    })?;
    let instance: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        vec![format!(
            "`{given}` is not JSON ({e}), so it cannot satisfy the schema {shown}"
        )]
    })?;
    let mut problems = vec![format!("`{given}` does not satisfy the schema {shown}:")];
    let mut count = 0;
    for error in validator.iter_errors(&instance) {
        count += 1;
        if count <= MAX_VIOLATIONS {
            let at = error.instance_path().as_str();
            let at = if at.is_empty() { "/" } else { at };
            problems.push(format!("  at {at}: {error}"));
        }
    }
    if count == 0 {
        return Ok(());
    }
    if count > MAX_VIOLATIONS {
        problems.push(format!("  and {} more", count - MAX_VIOLATIONS));
    }
    Err(problems)
}
