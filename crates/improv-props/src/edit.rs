//! The `edit` prop: replaces exact text in a file. `old` must name one place unless `all` says
//! otherwise, and when it names none the error shows where the model probably meant.

use crate::read::open_text;
use crate::workspace::Workspace;
use crate::{args, blocking, io_error, output, path_error, spec};
use async_trait::async_trait;
use improv_kernel::{Access, Prop, PropContext, PropError, ToolSpec};
use serde::Deserialize;
use serde_json::json;
use std::io::Read as _;

/// How many match lines an error lists before it says "and N more".
const LIST: usize = 10;
/// Lines quoted in errors are clipped to this many bytes.
const QUOTE: usize = 200;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    path: String,
    old: String,
    new: String,
    #[serde(default)]
    all: bool,
}

pub struct Edit {
    spec: ToolSpec,
}

impl Edit {
    pub fn new() -> Self {
        let spec = spec(
            "edit",
            "Replace exact text old with new in a file; old must match once unless all.",
            json!({
                "path": {"type": "string"},
                "old": {"type": "string"},
                "new": {"type": "string"},
                "all": {"type": "boolean"}
            }),
            &["path", "old", "new"],
        );
        Edit { spec }
    }
}

impl Default for Edit {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Prop for Edit {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn access(&self, _arguments: &serde_json::Value) -> Access {
        Access::Write
    }

    async fn call(
        &self,
        arguments: serde_json::Value,
        context: &PropContext,
    ) -> Result<String, PropError> {
        let args: Args = args::parse("edit", arguments)?;
        if args.old.is_empty() {
            return Err(PropError::new(
                "edit: `old` is empty; give the exact text to replace, or use `write` to create a file",
            ));
        }
        if args.old == args.new {
            return Err(PropError::new(
                "edit: `old` and `new` are the same; nothing would change",
            ));
        }
        let workspace = Workspace::new(&context.workspace)?;
        let shown = workspace
            .display(&workspace.resolve(&args.path)?)
            .into_owned();
        blocking(move || edit(&workspace, &shown, &args)).await
    }
}

/// Reads and writes `args.path` beneath the workspace; `shown` is the path as the model sees it.
fn edit(workspace: &Workspace, shown: &str, args: &Args) -> Result<String, PropError> {
    let (mut bytes, mut file) = open_text(workspace, &args.path, shown)?;
    file.read_to_end(&mut bytes)
        .map_err(|e| io_error(shown, e))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        PropError::new(format!(
            "`{shown}` is not valid UTF-8 text; edit only changes text files"
        ))
    })?;
    let starts: Vec<usize> = text.match_indices(&args.old).map(|(i, _)| i).collect();
    if starts.is_empty() {
        return Err(no_match(&text, shown, &args.old));
    }
    let lines = line_numbers(&text, &starts);
    if starts.len() > 1 && !args.all {
        return Err(PropError::new(format!(
            "`old` matches {} places in `{shown}` (lines {}); include more of the surrounding lines in `old` so it matches one, or set all=true to replace every one",
            starts.len(),
            list(&lines)
        )));
    }
    let edited = text.replace(&args.old, &args.new);
    workspace
        .write(&args.path, edited.as_bytes())
        .map_err(|e| path_error(shown, e))?;
    Ok(match lines.as_slice() {
        [line] => format!("edited `{shown}`: replaced 1 match at line {line}"),
        _ => format!(
            "edited `{shown}`: replaced {} matches (lines {})",
            lines.len(),
            list(&lines)
        ),
    })
}

/// The 1-based line of each byte offset in `starts` (ascending).
fn line_numbers(text: &str, starts: &[usize]) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut line = 1;
    let mut from = 0;
    starts
        .iter()
        .map(|&at| {
            line += bytes[from..at].iter().filter(|&&b| b == b'\n').count();
            from = at;
            line
        })
        .collect()
}

fn list(lines: &[usize]) -> String {
    let mut out: Vec<String> = lines.iter().take(LIST).map(|l| l.to_string()).collect();
    if lines.len() > LIST {
        out.push(format!("and {} more", lines.len() - LIST));
    }
    out.join(", ")
}

/// The error for an `old` that is not in the file, with the likeliest reason.
fn no_match(text: &str, shown: &str, old: &str) -> PropError {
    let mut message = format!("`old` does not occur in `{shown}`");
    if old.lines().next().is_some_and(|l| {
        l.split_once('\t')
            .is_some_and(|(n, _)| !n.is_empty() && n.trim().bytes().all(|b| b.is_ascii_digit()))
    }) {
        message.push_str(
            "; it seems to start with a line number from `read`: leave the numbers and the tab after them out of `old`",
        );
        return PropError::new(message);
    }
    if let Some(at) = loose_find(text, old) {
        let line = line_numbers(text, &[at])[0];
        message.push_str(&format!(
            "; it does match when whitespace is ignored, from line {line}:\n{line}\t{}\nCopy the exact text from `read` (indentation, tabs and line breaks included) into `old`",
            quote(text, line)
        ));
        return PropError::new(message);
    }
    let first = old.lines().map(str::trim).find(|l| !l.is_empty());
    if let Some(first) = first
        && let Some((index, _)) = text.lines().enumerate().find(|(_, l)| l.contains(first))
    {
        let line = index + 1;
        message.push_str(&format!(
            "; its first line is at line {line}:\n{line}\t{}\nbut what follows differs; read the file again and copy the exact text",
            quote(text, line)
        ));
        return PropError::new(message);
    }
    message.push_str("; read the file to see its current text");
    PropError::new(message)
}

fn quote(text: &str, line: usize) -> String {
    let body = text.lines().nth(line - 1).unwrap_or("");
    output::clip_line(body, QUOTE).into_owned()
}

/// Finds `needle` in `text` with every run of whitespace counted as one space (and the ends of
/// `needle` trimmed); returns the byte offset in `text` where that match starts.
fn loose_find(text: &str, needle: &str) -> Option<usize> {
    let (needle, _) = squeeze(needle.trim());
    if needle.is_empty() {
        return None;
    }
    let (haystack, origin) = squeeze(text);
    haystack.find(&needle).map(|i| origin[i])
}

/// `text` with whitespace runs folded to one space, and for each byte of the result the offset
/// of the byte it came from.
fn squeeze(text: &str) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(text.len());
    let mut origin = Vec::with_capacity(text.len());
    let mut in_space = false;
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            if !in_space {
                out.push(' ');
                origin.push(i);
            }
            in_space = true;
        } else {
            in_space = false;
            out.push(c);
            origin.extend(std::iter::repeat_n(i, c.len_utf8()));
        }
    }
    (out, origin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::Stage;

    const CODE: &str = "fn main() {\n    let x = 1;\n    let y = 2;\n    println!(\"{x}\");\n    println!(\"{x}\");\n}\n";

    #[tokio::test]
    async fn replaces_one_exact_match() {
        let stage = Stage::new();
        stage.file("main.rs", CODE);
        let out = stage
            .call(
                &Edit::new(),
                json!({"path": "main.rs", "old": "let y = 2;", "new": "let y = 3;"}),
            )
            .await
            .unwrap();
        assert_eq!(out, "edited `main.rs`: replaced 1 match at line 3");
        assert_eq!(stage.read("main.rs"), CODE.replace("y = 2", "y = 3"));
    }

    #[tokio::test]
    async fn several_matches_need_more_context_or_all() {
        let stage = Stage::new();
        stage.file("main.rs", CODE);
        let args = json!({"path": "main.rs", "old": "println!(\"{x}\");", "new": "dbg!(x);"});
        let err = stage.call(&Edit::new(), args.clone()).await.unwrap_err();
        assert!(err.message().contains("matches 2 places"), "{err}");
        assert!(err.message().contains("lines 4, 5"), "{err}");
        assert!(err.message().contains("all=true"), "{err}");
        assert_eq!(stage.read("main.rs"), CODE, "nothing changed");
        let mut args = args;
        args["all"] = json!(true);
        let out = stage.call(&Edit::new(), args).await.unwrap();
        assert_eq!(out, "edited `main.rs`: replaced 2 matches (lines 4, 5)");
        assert_eq!(stage.read("main.rs").matches("dbg!(x);").count(), 2);
    }

    #[tokio::test]
    async fn no_match_points_at_a_whitespace_near_miss() {
        let stage = Stage::new();
        stage.file("main.rs", CODE);
        let err = stage
            .call(
                &Edit::new(),
                json!({"path": "main.rs", "old": "let x = 1;\nlet y = 2;", "new": ""}),
            )
            .await
            .unwrap_err();
        assert!(
            err.message().contains("does not occur in `main.rs`"),
            "{err}"
        );
        assert!(
            err.message().contains("whitespace is ignored, from line 2"),
            "{err}"
        );
        assert!(err.message().contains("2\t    let x = 1;"), "{err}");
        assert_eq!(stage.read("main.rs"), CODE);
    }

    #[tokio::test]
    async fn no_match_names_the_nearest_line_or_the_line_number_slip() {
        let stage = Stage::new();
        stage.file("main.rs", CODE);
        let err = stage
            .call(
                &Edit::new(),
                json!({"path": "main.rs", "old": "let x = 1;\n    let z = 9;", "new": ""}),
            )
            .await
            .unwrap_err();
        assert!(err.message().contains("first line is at line 2"), "{err}");
        let err = stage
            .call(
                &Edit::new(),
                json!({"path": "main.rs", "old": "2\t    let x = 1;", "new": ""}),
            )
            .await
            .unwrap_err();
        assert!(err.message().contains("line number from `read`"), "{err}");
        let err = stage
            .call(
                &Edit::new(),
                json!({"path": "main.rs", "old": "nothing like it", "new": ""}),
            )
            .await
            .unwrap_err();
        assert!(
            err.message()
                .ends_with("read the file to see its current text"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn refuses_missing_files_empty_old_and_outside_paths() {
        let stage = Stage::new();
        let err = stage
            .call(
                &Edit::new(),
                json!({"path": "none.rs", "old": "a", "new": "b"}),
            )
            .await
            .unwrap_err();
        assert!(err.message().contains("`none.rs` does not exist"), "{err}");
        let err = stage
            .call(
                &Edit::new(),
                json!({"path": "none.rs", "old": "", "new": "b"}),
            )
            .await
            .unwrap_err();
        assert!(err.message().contains("`old` is empty"), "{err}");
        // An absolute path to a fixture outside the workspace, never a real system file.
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("hostname");
        std::fs::write(&target, "a\n").unwrap();
        let err = stage
            .call(
                &Edit::new(),
                json!({"path": target.display().to_string(), "old": "a", "new": "b"}),
            )
            .await
            .unwrap_err();
        assert!(err.message().contains("outside the workspace"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "a\n");
        let err = stage
            .call(
                &Edit::new(),
                json!({"path": "x", "old": "a", "new": "b", "all": "yes"}),
            )
            .await
            .unwrap_err();
        assert!(
            err.message().contains("`all`") && err.message().contains("boolean"),
            "{err}"
        );
    }
}
