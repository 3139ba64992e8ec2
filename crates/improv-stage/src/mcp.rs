//! `[[props.mcp]]`: the MCP servers a stage attaches, as written and as checked.

use crate::error::Problem;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// `[[props.mcp]]`: an MCP server, over stdio (`command`) or streamable HTTP (`url`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct McpServer {
    /// The server's name: its tools become props named `name.tool`.
    pub name: String,
    /// The program to start, for a stdio server.
    pub command: Option<String>,
    pub args: Vec<String>,
    /// The environment variables passed through to the server (an allowlist of names), and
    /// variables set for it.
    pub env: Vec<String>,
    pub set_env: BTreeMap<String, String>,
    /// The server's working directory, relative to the stage directory (the workspace when
    /// absent).
    pub cwd: Option<PathBuf>,
    /// The endpoint, for a streamable HTTP server.
    pub url: Option<String>,
    /// HTTP headers, each read from an environment variable: header name → variable name.
    pub headers_from_env: BTreeMap<String, String>,
    /// How long one tool call may take.
    pub timeout: Option<Duration>,
    /// Only these tools become props (all when absent).
    pub tools: Option<Vec<String>>,
}

/// `[[props.mcp]]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMcp {
    name: Spanned<String>,
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    set_env: BTreeMap<String, String>,
    cwd: Option<String>,
    url: Option<String>,
    #[serde(default)]
    headers_from_env: BTreeMap<String, String>,
    timeout: Option<Spanned<String>>,
    tools: Option<Vec<String>>,
}

/// `[props]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProps {
    #[serde(default)]
    pub(crate) mcp: Vec<Spanned<RawMcp>>,
}

impl RawProps {
    /// Checks the servers; `duration` parses a duration key, reporting problems itself.
    pub(crate) fn build(
        &self,
        problems: &mut Vec<Problem>,
        mut duration: impl FnMut(&mut Vec<Problem>, &str, Option<&Spanned<String>>) -> Option<Duration>,
    ) -> Vec<McpServer> {
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for spanned in &self.mcp {
            let m = spanned.get_ref();
            let name = m.name.get_ref();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                problems.push(
                    Problem::new(
                        format!("MCP server name `{name}` is not a plain name"),
                        m.name.span(),
                        "not a plain name",
                    )
                    .help("use letters, digits, `-` and `_` only: its tools are named `NAME.tool`"),
                );
            } else if crate::KNOWN_PROPS.contains(&name.as_str()) || !seen.insert(name.clone()) {
                problems.push(
                    Problem::new(
                        format!("MCP server name `{name}` is already taken"),
                        m.name.span(),
                        "taken",
                    )
                    .help("give each MCP server its own name, different from the built-in props"),
                );
            }
            match (&m.command, &m.url) {
                (None, None) => problems.push(
                    Problem::new(
                        format!("MCP server `{name}` has neither `command` nor `url`"),
                        spanned.span(),
                        "this server",
                    )
                    .help("add `command = \"...\"` (a stdio server) or `url = \"http://...\"` (streamable HTTP)"),
                ),
                (Some(_), Some(_)) => problems.push(
                    Problem::new(
                        format!("MCP server `{name}` has both `command` and `url`"),
                        spanned.span(),
                        "this server",
                    )
                    .help("a server is started (`command`) or reached (`url`), not both"),
                ),
                _ => {}
            }
            let timeout = duration(problems, "timeout", m.timeout.as_ref());
            out.push(McpServer {
                name: name.clone(),
                command: m.command.clone(),
                args: m.args.clone(),
                env: m.env.clone(),
                set_env: m.set_env.clone(),
                cwd: m.cwd.as_ref().map(PathBuf::from),
                url: m.url.clone(),
                headers_from_env: m.headers_from_env.clone(),
                timeout,
                tools: m.tools.clone(),
            });
        }
        out
    }
}
