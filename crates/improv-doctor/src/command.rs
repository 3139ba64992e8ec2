//! The programs a check's shell command runs, and whether they can be found: enough of shell
//! syntax to find the first word of each simple command (`cd x && cargo test | tail` runs
//! `cargo` and `tail`), skipping shell keywords, builtins and variable assignments.

use std::path::{Path, PathBuf};

/// Words that start a command list but are not programs.
const PREFIXES: &[&str] = &[
    "if", "then", "else", "elif", "while", "until", "do", "!", "{", "(", "time", "exec", "command",
    "nice", "env",
];

/// Shell keywords and builtins: nothing to find on `PATH`.
const BUILTINS: &[&str] = &[
    "cd", "echo", "test", "[", "[[", "true", "false", "exit", "export", "set", "unset", "source",
    ".", "printf", "read", "eval", "pwd", "fi", "done", "esac", "}", ")", "case", "for",
    "function", "return", "shift", "trap", "wait", "ulimit", "umask", "type", "alias", "let",
    "local", "declare", "pushd", "popd", ":",
];

/// Where a program a command runs was looked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Program {
    /// Found: the program and where.
    Found(String, PathBuf),
    /// Not found: the program as written.
    Missing(String),
}

/// The programs `command` runs, each found or not; `workspace` locates relative paths.
pub(crate) fn programs(command: &str, workspace: &Path) -> Vec<Program> {
    let mut out: Vec<Program> = Vec::new();
    for name in first_words(command) {
        if out
            .iter()
            .any(|p| matches!(p, Program::Found(n, _) | Program::Missing(n) if *n == name))
        {
            continue;
        }
        out.push(find(&name, workspace));
    }
    out
}

fn find(name: &str, workspace: &Path) -> Program {
    if name.contains('/') {
        let path = workspace.join(name);
        return if path.is_file() {
            Program::Found(name.into(), path)
        } else {
            Program::Missing(name.into())
        };
    }
    match which::which(name) {
        Ok(path) => Program::Found(name.into(), path),
        Err(_) => Program::Missing(name.into()),
    }
}

/// The first word of every simple command, when it names a program.
fn first_words(command: &str) -> Vec<String> {
    // `2>&1` and `&>` redirect; they do not end a command as a lone `&` does.
    let separated = command
        .replace(">&", ">")
        .replace("&>", ">")
        .replace("&&", "\n")
        .replace("||", "\n");
    let mut out = Vec::new();
    for part in separated.split([';', '|', '\n', '&', '(', ')', '`']) {
        let Some(words) = shlex::split(part) else {
            continue;
        };
        let mut words = words.into_iter().peekable();
        while let Some(w) = words.peek() {
            if PREFIXES.contains(&w.as_str()) || is_assignment(w) || w.starts_with('-') {
                words.next();
            } else {
                break;
            }
        }
        if let Some(word) = words.next()
            && !BUILTINS.contains(&word.as_str())
            && !word.contains('$')
            && !word.is_empty()
        {
            out.push(word);
        }
    }
    out
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_program_of_each_simple_command() {
        assert_eq!(
            first_words("cd app && RUST_LOG=debug cargo test --quiet 2>&1 | tail -n 20"),
            ["cargo", "tail"]
        );
        assert_eq!(first_words("if pytest -q; then echo ok; fi"), ["pytest"]);
        assert_eq!(first_words("env FOO=1 ./run.sh 'a b'"), ["./run.sh"]);
        assert_eq!(first_words("$CC main.c"), Vec::<String>::new());
    }
}
