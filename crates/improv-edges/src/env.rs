//! The environment of sandboxed processes: an allowlist. Nothing else of improv's environment
//! reaches them, so provider keys (`OPENAI_API_KEY`, ...) never do, whatever a stage asks.

use crate::secrets::looks_secret;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Variables passed through from improv's environment when set, besides `PATH` (filtered) and
/// `HOME`/`TMPDIR` (the private temp dir). `SHELL` spares every `bash -c` a user-database
/// lookup (nscd, `nsswitch.conf`, `/etc/passwd`) that bash makes to set it when it is missing:
/// ~55 µs of each command.
pub const PASSED: [&str; 10] = [
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "TERM",
    "TZ",
    "USER",
    "LOGNAME",
    "SHELL",
];

/// Which variables a child gets.
#[derive(Clone, Debug, Default)]
pub struct EnvPolicy {
    /// More names to pass through from improv's environment (`RUST_LOG`, `CARGO_TERM_COLOR`).
    /// Names that look like secrets (`*_API_KEY`, `*TOKEN*`, `*SECRET*`, `*PASSWORD*`) are
    /// never passed, even when listed.
    pub pass: Vec<String>,
    /// Variables set to a fixed value (they may not look like secrets either).
    pub set: Vec<(String, OsString)>,
}

/// The environment of one sandbox.
#[derive(Clone, Debug, PartialEq)]
pub struct ChildEnv {
    vars: Vec<(OsString, OsString)>,
}

impl ChildEnv {
    /// Builds the environment: `HOME` and `TMPDIR` are `temp`; `PATH` keeps only the entries of
    /// improv's `PATH` the sandbox can read (`readable`); the rest comes from the allowlist.
    pub fn build(policy: &EnvPolicy, temp: &Path, readable: &[PathBuf]) -> Self {
        Self::from_vars(policy, temp, readable, std::env::vars_os())
    }

    /// [`ChildEnv::build`] from a given parent environment.
    pub fn from_vars(
        policy: &EnvPolicy,
        temp: &Path,
        readable: &[PathBuf],
        parent: impl IntoIterator<Item = (OsString, OsString)>,
    ) -> Self {
        let parent: Vec<(OsString, OsString)> = parent.into_iter().collect();
        let get = |name: &str| {
            parent
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let mut vars: Vec<(OsString, OsString)> = Vec::new();
        let path = get("PATH").map_or_else(
            || OsString::from("/usr/local/bin:/usr/bin:/bin"),
            |p| filter_path(&p, readable),
        );
        vars.push(("PATH".into(), path));
        vars.push(("HOME".into(), temp.into()));
        vars.push(("TMPDIR".into(), temp.into()));
        let passed = PASSED
            .iter()
            .map(|s| s.to_string())
            .chain(policy.pass.iter().cloned());
        for name in passed {
            if looks_secret(&name) || vars.iter().any(|(k, _)| *k == *name) {
                continue;
            }
            if let Some(value) = get(&name) {
                vars.push((name.into(), value));
            }
        }
        for (name, value) in &policy.set {
            if looks_secret(name) {
                continue;
            }
            vars.retain(|(k, _)| k != name.as_str());
            vars.push((name.into(), value.clone()));
        }
        ChildEnv { vars }
    }

    pub fn vars(&self) -> &[(OsString, OsString)] {
        &self.vars
    }

    pub fn into_vars(self) -> Vec<(OsString, OsString)> {
        self.vars
    }
}

/// The entries of `path` under a readable directory; `/usr/bin:/bin` when none is left.
fn filter_path(path: &OsString, readable: &[PathBuf]) -> OsString {
    let kept: Vec<PathBuf> = std::env::split_paths(path)
        .filter(|entry| entry.is_absolute() && readable.iter().any(|r| entry.starts_with(r)))
        .collect();
    if kept.is_empty() {
        return OsString::from("/usr/bin:/bin");
    }
    std::env::join_paths(kept).unwrap_or_else(|_| OsString::from("/usr/bin:/bin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parent() -> Vec<(OsString, OsString)> {
        [
            (
                "PATH",
                "/root/.pyenv/shims:/usr/local/bin:/usr/bin:/root/.cargo/bin",
            ),
            ("LANG", "C.UTF-8"),
            ("SHELL", "/bin/bash"),
            ("OPENAI_API_KEY", "sk-test-123456789"),
            ("AWS_SECRET_ACCESS_KEY", "aws-123456789"),
            ("GITHUB_TOKEN", "ghp_123456789"),
            ("RUST_LOG", "debug"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
    }

    #[test]
    fn only_the_allowlist_reaches_the_child_and_keys_never_do() {
        let policy = EnvPolicy {
            pass: vec!["RUST_LOG".into(), "OPENAI_API_KEY".into()],
            set: vec![("GITHUB_TOKEN".into(), "x".into())],
        };
        let env = ChildEnv::from_vars(
            &policy,
            Path::new("/tmp/t"),
            &[PathBuf::from("/usr")],
            parent(),
        );
        let names: Vec<_> = env
            .vars()
            .iter()
            .map(|(k, _)| k.to_string_lossy())
            .collect();
        assert_eq!(
            names,
            ["PATH", "HOME", "TMPDIR", "LANG", "SHELL", "RUST_LOG"]
        );
        assert_eq!(env.vars()[0].1, "/usr/local/bin:/usr/bin");
        assert_eq!(env.vars()[1].1, "/tmp/t");
    }
}
