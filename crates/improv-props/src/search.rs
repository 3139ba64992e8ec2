//! The `grep` and `find` props: search file contents and file names under the workspace, the
//! way ripgrep does (`.gitignore` and `.ignore` respected, hidden files skipped).
//!
//! The walk (the `ignore` crate) goes by path and never follows symlinks, but a folder can be
//! swapped for a symlink while it runs. So it only proposes names: `grep` opens each file
//! beneath the workspace root ([`Workspace::open_read`]) and `find` lists a name only when it
//! opens beneath the root too. What a swapped folder can still change is which `.gitignore`
//! files filter the names; no byte or name from outside reaches the model.

use crate::workspace::Workspace;
use crate::{args, blocking, output, path_error, spec};
use async_trait::async_trait;
use globset::{GlobBuilder, GlobMatcher};
use grep_regex::RegexMatcherBuilder;
use grep_searcher::sinks::Lossy;
use grep_searcher::{BinaryDetection, SearcherBuilder};
use ignore::{DirEntry, WalkBuilder};
use improv_kernel::{Access, Prop, PropContext, PropError, ToolSpec};
use serde::Deserialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

/// Matched lines longer than this are clipped.
const LINE_MAX: usize = 300;
const GREP_LIMIT: usize = 100;
const FIND_LIMIT: usize = 500;

/// A file-name filter: a glob with a `/` matches the path under the search root, one without
/// matches the file name anywhere below it (so `*.rs` finds every Rust file).
struct Glob {
    matcher: GlobMatcher,
    whole_path: bool,
}

impl Glob {
    fn new(prop: &str, glob: &str) -> Result<Self, PropError> {
        let glob = glob.trim_start_matches("./");
        let matcher = GlobBuilder::new(glob)
            .literal_separator(true)
            .build()
            .map_err(|e| PropError::new(format!("{prop}: invalid glob `{glob}`: {e}")))?
            .compile_matcher();
        Ok(Glob {
            matcher,
            whole_path: glob.contains('/'),
        })
    }

    fn matches(&self, path: &Path, root: &Path) -> bool {
        if self.whole_path {
            path.strip_prefix(root)
                .is_ok_and(|rel| self.matcher.is_match(rel))
        } else {
            path.file_name()
                .is_some_and(|name| self.matcher.is_match(name))
        }
    }
}

/// Resolves the optional `path` argument to an existing file or folder inside the workspace.
fn search_root(workspace: &Workspace, path: Option<&str>) -> Result<PathBuf, PropError> {
    let given = path.filter(|p| !p.is_empty()).unwrap_or(".");
    let root = workspace.resolve(given)?;
    match workspace.exists(given) {
        Ok(true) => Ok(root),
        Ok(false) => Err(PropError::new(format!(
            "`{given}` does not exist; give a folder or file inside the workspace"
        ))),
        Err(e) => Err(path_error(given, e)),
    }
}

/// The walk's `entry` as a path relative to the workspace root, to open beneath it.
fn beneath<'a>(workspace: &Workspace, entry: &'a DirEntry) -> Option<&'a Path> {
    entry.path().strip_prefix(workspace.root()).ok()
}

/// Regular files under `root`, sorted by path, ignored and hidden ones left out.
fn files(root: &Path, cancel: CancellationToken) -> impl Iterator<Item = DirEntry> {
    WalkBuilder::new(root)
        .require_git(false)
        .sort_by_file_path(|a, b| a.cmp(b))
        .build()
        .take_while(move |_| !cancel.is_cancelled())
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_some_and(|t| t.is_file()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GrepArgs {
    pattern: String,
    path: Option<String>,
    glob: Option<String>,
    #[serde(default)]
    ignore_case: bool,
    limit: Option<usize>,
}

pub struct Grep {
    spec: ToolSpec,
    max_output: usize,
}

impl Grep {
    pub fn new(max_output: usize) -> Self {
        let spec = spec(
            "grep",
            "Search file contents by regex; prints path:line:text.",
            json!({
                "pattern": {"type": "string"},
                "path": {"type": "string"},
                "glob": {"type": "string", "description": "file filter, e.g. *.rs"},
                "ignore_case": {"type": "boolean"},
                "limit": {"type": "integer"}
            }),
            &["pattern"],
        );
        Grep { spec, max_output }
    }
}

#[async_trait]
impl Prop for Grep {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn access(&self, _arguments: &serde_json::Value) -> Access {
        Access::Read
    }

    async fn call(
        &self,
        arguments: serde_json::Value,
        context: &PropContext,
    ) -> Result<String, PropError> {
        let args: GrepArgs = args::parse("grep", arguments)?;
        let matcher = RegexMatcherBuilder::new()
            .case_insensitive(args.ignore_case)
            .line_terminator(Some(b'\n'))
            .build(&args.pattern)
            .map_err(|e| PropError::new(format!("grep: invalid regex `{}`: {e}", args.pattern)))?;
        let glob = args
            .glob
            .as_deref()
            .map(|g| Glob::new("grep", g))
            .transpose()?;
        let workspace = Workspace::new(&context.workspace)?;
        let root = search_root(&workspace, args.path.as_deref())?;
        let limit = args.limit.unwrap_or(GREP_LIMIT).max(1);
        let max_output = self.max_output;
        let cancel = context.cancel.clone();
        blocking(move || {
            let mut searcher = SearcherBuilder::new()
                .binary_detection(BinaryDetection::quit(0))
                .line_number(true)
                .build();
            let mut out = String::new();
            let mut count = 0;
            let mut full = false;
            for entry in files(&root, cancel) {
                let path = entry.path();
                if glob.as_ref().is_some_and(|g| !g.matches(path, &root)) {
                    continue;
                }
                let shown = workspace.display(path);
                // A file that cannot be read (or no longer lies beneath the workspace) is
                // skipped, as ripgrep skips what it cannot read.
                let Some(file) = beneath(&workspace, &entry).and_then(|rel| workspace.open_read(rel).ok())
                else {
                    continue;
                };
                let _ = searcher.search_file(
                    &matcher,
                    &file,
                    Lossy(|line_number, line| {
                        if count == limit || out.len() >= max_output {
                            full = true;
                            return Ok(false);
                        }
                        let line = line.trim_end_matches(['\n', '\r']);
                        out.push_str(&shown);
                        out.push(':');
                        out.push_str(&line_number.to_string());
                        out.push(':');
                        out.push_str(&output::clip_line(line, LINE_MAX));
                        out.push('\n');
                        count += 1;
                        Ok(true)
                    }),
                );
                if full {
                    out.push_str(&format!(
                        "[stopped at {count} matches; narrow the pattern, path or glob, or raise limit]"
                    ));
                    break;
                }
            }
            if count == 0 {
                return Ok(format!("no matches for `{}`", args.pattern));
            }
            Ok(out)
        })
        .await
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FindArgs {
    pattern: String,
    path: Option<String>,
}

pub struct Find {
    spec: ToolSpec,
}

impl Find {
    pub fn new() -> Self {
        let spec = spec(
            "find",
            "List files matching a glob such as **/*.md or *.rs.",
            json!({"pattern": {"type": "string"}, "path": {"type": "string"}}),
            &["pattern"],
        );
        Find { spec }
    }
}

impl Default for Find {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl Prop for Find {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn access(&self, _arguments: &serde_json::Value) -> Access {
        Access::Read
    }

    async fn call(
        &self,
        arguments: serde_json::Value,
        context: &PropContext,
    ) -> Result<String, PropError> {
        let args: FindArgs = args::parse("find", arguments)?;
        let glob = Glob::new("find", &args.pattern)?;
        let workspace = Workspace::new(&context.workspace)?;
        let root = search_root(&workspace, args.path.as_deref())?;
        let cancel = context.cancel.clone();
        blocking(move || {
            let mut found: Vec<String> = files(&root, cancel)
                .filter(|entry| glob.matches(entry.path(), &root))
                .filter(|entry| {
                    beneath(&workspace, entry)
                        .is_some_and(|rel| workspace.metadata(rel).is_ok_and(|m| m.is_file()))
                })
                .map(|entry| workspace.display(entry.path()).into_owned())
                .collect();
            if found.is_empty() {
                return Ok(format!(
                    "no files match `{}` under `{}`",
                    args.pattern,
                    workspace.display(&root)
                ));
            }
            found.sort_unstable();
            let total = found.len();
            found.truncate(FIND_LIMIT);
            let mut out = found.join("\n");
            out.push('\n');
            if total > FIND_LIMIT {
                out.push_str(&format!(
                    "[{FIND_LIMIT} of {total} files shown; narrow the pattern or path]"
                ));
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::Stage;

    fn tree() -> Stage {
        let stage = Stage::new();
        stage.file(".gitignore", "target/\n*.log\n");
        stage.file("src/main.rs", "fn main() {\n    helper();\n}\n");
        stage.file("src/lib/util.rs", "pub fn helper() {}\n// TODO: more\n");
        stage.file("README.md", "# Demo\nCall helper() first.\n");
        stage.file("docs/guide.md", "todo: write\n");
        stage.file("target/debug/out.rs", "fn helper() {}\n");
        stage.file("run.log", "helper failed\n");
        stage.file(".hidden/secret.rs", "fn helper() {}\n");
        stage.bytes("blob.bin", b"helper\0\x01\x02");
        stage
    }

    #[tokio::test]
    async fn grep_prints_relative_matches_and_respects_gitignore() {
        let stage = tree();
        let out = stage
            .call(&Grep::new(30_000), json!({"pattern": "helper\\(\\)"}))
            .await
            .unwrap();
        assert_eq!(
            out,
            "README.md:2:Call helper() first.\nsrc/lib/util.rs:1:pub fn helper() {}\nsrc/main.rs:2:    helper();\n"
        );
    }

    #[tokio::test]
    async fn grep_filters_by_glob_path_and_case() {
        let stage = tree();
        let grep = Grep::new(30_000);
        let out = stage
            .call(
                &grep,
                json!({"pattern": "todo", "ignore_case": true, "glob": "*.rs"}),
            )
            .await
            .unwrap();
        assert_eq!(out, "src/lib/util.rs:2:// TODO: more\n");
        let out = stage
            .call(&grep, json!({"pattern": "todo", "path": "docs"}))
            .await
            .unwrap();
        assert_eq!(out, "docs/guide.md:1:todo: write\n");
        let out = stage
            .call(&grep, json!({"pattern": "helper", "path": "src/main.rs"}))
            .await
            .unwrap();
        assert_eq!(out, "src/main.rs:2:    helper();\n");
        let out = stage
            .call(&grep, json!({"pattern": "nowhere to be found"}))
            .await
            .unwrap();
        assert!(out.starts_with("no matches"), "{out}");
    }

    #[tokio::test]
    async fn grep_stops_at_the_limit_and_clips_long_lines() {
        let stage = Stage::new();
        let text: String = (0..50).map(|i| format!("hit {i}\n")).collect();
        stage.file("many.txt", &text);
        stage.file("wide.txt", &format!("hit {}\n", "x".repeat(5000)));
        let grep = Grep::new(30_000);
        let out = stage
            .call(&grep, json!({"pattern": "hit", "limit": 3}))
            .await
            .unwrap();
        assert_eq!(
            out,
            "many.txt:1:hit 0\nmany.txt:2:hit 1\nmany.txt:3:hit 2\n[stopped at 3 matches; narrow the pattern, path or glob, or raise limit]"
        );
        let out = stage
            .call(&grep, json!({"pattern": "hit", "path": "wide.txt"}))
            .await
            .unwrap();
        assert!(out.len() < 400, "{}", out.len());
        assert!(out.contains("more bytes]"), "{out}");
    }

    #[tokio::test]
    async fn grep_refuses_bad_regexes_and_outside_paths() {
        let stage = tree();
        let grep = Grep::new(30_000);
        let err = stage
            .call(&grep, json!({"pattern": "("}))
            .await
            .unwrap_err();
        assert!(err.message().contains("invalid regex `(`"), "{err}");
        let err = stage
            .call(&grep, json!({"pattern": "x", "path": "../"}))
            .await
            .unwrap_err();
        assert!(err.message().contains("outside the workspace"), "{err}");
        let err = stage
            .call(&grep, json!({"pattern": "x", "path": "nope"}))
            .await
            .unwrap_err();
        assert!(err.message().contains("`nope` does not exist"), "{err}");
    }

    #[tokio::test]
    async fn find_matches_globs_sorted_and_relative() {
        let stage = tree();
        let out = stage
            .call(&Find::new(), json!({"pattern": "**/*.md"}))
            .await
            .unwrap();
        assert_eq!(out, "README.md\ndocs/guide.md\n");
        let out = stage
            .call(&Find::new(), json!({"pattern": "*.rs"}))
            .await
            .unwrap();
        assert_eq!(
            out, "src/lib/util.rs\nsrc/main.rs\n",
            "ignored and hidden files left out"
        );
        let out = stage
            .call(&Find::new(), json!({"pattern": "*.rs", "path": "src/lib"}))
            .await
            .unwrap();
        assert_eq!(out, "src/lib/util.rs\n");
        let out = stage
            .call(&Find::new(), json!({"pattern": "src/*.rs"}))
            .await
            .unwrap();
        assert_eq!(
            out, "src/main.rs\n",
            "a glob with a slash matches whole paths"
        );
        let out = stage
            .call(&Find::new(), json!({"pattern": "*.py"}))
            .await
            .unwrap();
        assert_eq!(out, "no files match `*.py` under `.`");
    }

    #[tokio::test]
    async fn find_stops_at_its_limit() {
        let stage = Stage::new();
        for i in 0..600 {
            stage.file(&format!("f/{i:04}.txt"), "");
        }
        let out = stage
            .call(&Find::new(), json!({"pattern": "*.txt"}))
            .await
            .unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 501);
        assert_eq!(lines[0], "f/0000.txt");
        assert_eq!(lines[499], "f/0499.txt");
        assert_eq!(
            lines[500],
            "[500 of 600 files shown; narrow the pattern or path]"
        );
        let err = stage
            .call(&Find::new(), json!({"pattern": "a{b"}))
            .await
            .unwrap_err();
        assert!(err.message().contains("invalid glob"), "{err}");
    }
}
