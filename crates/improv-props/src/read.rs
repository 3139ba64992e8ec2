//! The `read` prop: a text file as numbered lines, a window at a time.

use crate::workspace::Workspace;
use crate::{args, blocking, io_error, output, path_error, spec};
use async_trait::async_trait;
use improv_kernel::{Access, Prop, PropContext, PropError, ToolSpec};
use serde::Deserialize;
use serde_json::json;
use std::fs::File;
use std::io::{BufRead, BufReader, Cursor, Read as _};

/// How many bytes at the start of a file decide whether it is text.
pub(crate) const SNIFF: usize = 8 * 1024;
/// The most lines one call shows, whatever `limit` asks for.
const MAX_LINES: usize = 2000;
/// Longer lines are clipped (minified files would otherwise fill the window with one line).
const MAX_LINE: usize = 2000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    path: String,
    offset: Option<usize>,
    limit: Option<usize>,
}

pub struct Read {
    spec: ToolSpec,
    max_bytes: usize,
}

impl Read {
    pub fn new(max_bytes: usize) -> Self {
        let spec = spec(
            "read",
            "Read a text file as numbered lines.",
            json!({
                "path": {"type": "string"},
                "offset": {"type": "integer", "description": "first line, 1-based"},
                "limit": {"type": "integer", "description": "max lines"}
            }),
            &["path"],
        );
        Read { spec, max_bytes }
    }
}

#[async_trait]
impl Prop for Read {
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
        let args: Args = args::parse("read", arguments)?;
        let workspace = Workspace::new(&context.workspace)?;
        let shown = workspace
            .display(&workspace.resolve(&args.path)?)
            .into_owned();
        let window = Window {
            offset: args.offset.unwrap_or(1).max(1),
            lines: args.limit.unwrap_or(MAX_LINES).clamp(1, MAX_LINES),
            bytes: self.max_bytes,
        };
        blocking(move || read_window(&workspace, &args.path, &shown, window)).await
    }
}

#[derive(Clone, Copy)]
struct Window {
    offset: usize,
    lines: usize,
    bytes: usize,
}

/// Opens `given` for reading text, beneath the workspace: refuses directories, other
/// non-files and binary files, and hands back the first bytes it sniffed together with the rest
/// of the file. `shown` is the path as the model sees it.
pub(crate) fn open_text(
    workspace: &Workspace,
    given: &str,
    shown: &str,
) -> Result<(Vec<u8>, File), PropError> {
    let mut file = workspace
        .open_read(given)
        .map_err(|e| path_error(shown, e))?;
    let meta = file.metadata().map_err(|e| io_error(shown, e))?;
    if meta.is_dir() {
        return Err(PropError::new(format!(
            "`{shown}` is a directory; use `find` with path `{shown}` to list its files"
        )));
    }
    if !meta.is_file() {
        return Err(PropError::new(format!(
            "`{shown}` is not a regular file (a pipe, socket or device); only files can be read"
        )));
    }
    let mut head = Vec::with_capacity(SNIFF);
    (&mut file)
        .take(SNIFF as u64)
        .read_to_end(&mut head)
        .map_err(|e| io_error(shown, e))?;
    if is_binary(&head, head.len() < SNIFF) {
        return Err(PropError::new(format!(
            "`{shown}` is a binary file, {} bytes; only text files can be read (try `bash` with `file` or `xxd`)",
            meta.len()
        )));
    }
    Ok((head, file))
}

/// NUL bytes or invalid UTF-8. When `whole` is false the sample may end inside a character.
fn is_binary(sample: &[u8], whole: bool) -> bool {
    if sample.contains(&0) {
        return true;
    }
    match std::str::from_utf8(sample) {
        Ok(_) => false,
        Err(e) => whole || e.error_len().is_some(),
    }
}

fn read_window(
    workspace: &Workspace,
    given: &str,
    shown: &str,
    window: Window,
) -> Result<String, PropError> {
    let (head, file) = open_text(workspace, given, shown)?;
    let mut reader = BufReader::new(Cursor::new(head).chain(file));
    let mut out = String::new();
    let mut line = Vec::new();
    let mut number = 0;
    let mut shown_lines = 0;
    let mut next = None;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| io_error(shown, e))?;
        if n == 0 {
            break;
        }
        number += 1;
        if number < window.offset {
            continue;
        }
        let text = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(&line));
        let text = output::clip_line(&text, MAX_LINE);
        let entry_len = text.len() + 8;
        if shown_lines == window.lines || (shown_lines > 0 && out.len() + entry_len > window.bytes)
        {
            next = Some(number);
            break;
        }
        out.push_str(&number.to_string());
        out.push('\t');
        out.push_str(&text);
        out.push('\n');
        shown_lines += 1;
    }
    let total = match next {
        // Count the rest without keeping it: the trailer says how far the file goes.
        Some(next) => next + count_lines(&mut reader).map_err(|e| io_error(shown, e))?,
        None => number,
    };
    if shown_lines == 0 {
        return if total == 0 {
            Ok(format!("[`{shown}` is empty]"))
        } else {
            Err(PropError::new(format!(
                "offset {} is past the end of `{shown}`, which has {total} lines",
                window.offset
            )))
        };
    }
    if let Some(next) = next {
        out.push_str(&format!(
            "[lines {}-{} of {total}; call read with offset={next} for more]",
            window.offset,
            next - 1
        ));
    }
    Ok(out)
}

/// Lines left in `reader`, a last line without a newline included.
fn count_lines(reader: &mut impl BufRead) -> std::io::Result<usize> {
    let mut count = 0;
    let mut open_line = false;
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(count + usize::from(open_line));
        }
        count += buf.iter().filter(|&&b| b == b'\n').count();
        open_line = buf.last() != Some(&b'\n');
        let len = buf.len();
        reader.consume(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::Stage;

    fn read() -> Read {
        Read::new(50 * 1024)
    }

    #[tokio::test]
    async fn shows_numbered_lines() {
        let stage = Stage::new();
        stage.file("a.txt", "one\ntwo\nthree");
        let out = stage.call(&read(), json!({"path": "a.txt"})).await.unwrap();
        assert_eq!(out, "1\tone\n2\ttwo\n3\tthree\n");
    }

    #[tokio::test]
    async fn offset_and_limit_choose_a_window_and_the_trailer_says_what_is_next() {
        let stage = Stage::new();
        let text: String = (1..=10).map(|i| format!("l{i}\n")).collect();
        stage.file("a.txt", &text);
        let out = stage
            .call(&read(), json!({"path": "a.txt", "offset": 3, "limit": 2}))
            .await
            .unwrap();
        assert_eq!(
            out,
            "3\tl3\n4\tl4\n[lines 3-4 of 10; call read with offset=5 for more]"
        );
        let out = stage
            .call(&read(), json!({"path": "a.txt", "offset": 9}))
            .await
            .unwrap();
        assert_eq!(out, "9\tl9\n10\tl10\n");
        let err = stage
            .call(&read(), json!({"path": "a.txt", "offset": 11}))
            .await
            .unwrap_err();
        assert!(
            err.message().contains("past the end") && err.message().contains("10 lines"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn large_files_are_capped_at_the_byte_limit() {
        let stage = Stage::new();
        let text: String = (1..=100_000)
            .map(|i| format!("line number {i}\n"))
            .collect();
        stage.file("big.txt", &text);
        let out = stage
            .call(&Read::new(1000), json!({"path": "big.txt"}))
            .await
            .unwrap();
        assert!(out.len() < 1100, "{}", out.len());
        let trailer = out.lines().last().unwrap();
        assert!(trailer.contains("of 100000;"), "{trailer}");
        let next: usize = trailer
            .split("offset=")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .unwrap()
            .parse()
            .unwrap();
        let last_shown = out.lines().rev().nth(1).unwrap();
        assert_eq!(
            last_shown,
            format!("{}\tline number {}", next - 1, next - 1)
        );
        // And the default line cap.
        let out = stage
            .call(&read(), json!({"path": "big.txt"}))
            .await
            .unwrap();
        assert!(out.ends_with("[lines 1-2000 of 100000; call read with offset=2001 for more]"));
    }

    #[tokio::test]
    async fn refuses_missing_binary_and_directory_paths() {
        let stage = Stage::new();
        let err = stage
            .call(&read(), json!({"path": "nope.txt"}))
            .await
            .unwrap_err();
        assert!(err.message().contains("`nope.txt` does not exist"), "{err}");
        stage.bytes("img.bin", &[0x89, b'P', 0, 1, 2]);
        let err = stage
            .call(&read(), json!({"path": "img.bin"}))
            .await
            .unwrap_err();
        assert!(err.message().contains("binary file, 5 bytes"), "{err}");
        stage.bytes("latin1.txt", b"caf\xe9\n");
        let err = stage
            .call(&read(), json!({"path": "latin1.txt"}))
            .await
            .unwrap_err();
        assert!(err.message().contains("binary file"), "{err}");
        stage.file("dir/x", "");
        let err = stage
            .call(&read(), json!({"path": "dir"}))
            .await
            .unwrap_err();
        assert!(
            err.message().contains("is a directory") && err.message().contains("find"),
            "{err}"
        );
        stage.file("empty.txt", "");
        let out = stage
            .call(&read(), json!({"path": "empty.txt"}))
            .await
            .unwrap();
        assert!(out.contains("empty"), "{out}");
    }

    #[tokio::test]
    async fn refuses_paths_outside_the_workspace() {
        let stage = Stage::new();
        let err = stage
            .call(&read(), json!({"path": "../x"}))
            .await
            .unwrap_err();
        assert!(err.message().contains("outside the workspace"), "{err}");
        let err = stage
            .call(&read(), json!({"path": "/etc/passwd"}))
            .await
            .unwrap_err();
        assert!(err.message().contains("outside the workspace"), "{err}");
        std::os::unix::fs::symlink("/", stage.root().join("slash")).unwrap();
        let err = stage
            .call(&read(), json!({"path": "slash/etc/passwd"}))
            .await
            .unwrap_err();
        assert!(err.message().contains("symlink"), "{err}");
    }

    #[tokio::test]
    async fn bad_arguments_say_what_to_send() {
        let stage = Stage::new();
        let err = stage
            .call(&read(), json!({"path": "a", "offset": "3"}))
            .await
            .unwrap_err();
        assert!(
            err.message().contains("`offset`") && err.message().contains("integer"),
            "{err}"
        );
    }
}
