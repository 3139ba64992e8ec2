//! Shared by the MCP tests: where the reference servers are installed, a server config builder,
//! and a performance of the real kernel loop with a scripted model.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use improv_kernel::{Actor, Message, Performance, Prop, ScriptedModel, ScriptedTurn};
use improv_stage::McpServer;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The npm packages of tests/servers; fails loudly when they are not installed.
pub fn node_modules() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/node_modules");
    assert!(
        dir.join("@modelcontextprotocol/server-everything").is_dir(),
        "the reference MCP servers are not installed in {}: run crates/improv-mcp/ci-setup.sh",
        dir.display()
    );
    assert!(
        which("node"),
        "`node` is not on PATH: install Node.js 18+ and run crates/improv-mcp/ci-setup.sh"
    );
    dir
}

pub fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|p| p.join(program).is_file()))
}

/// A stdio server config with nothing else set.
pub fn stdio(name: &str, command: &str, args: &[&str]) -> McpServer {
    McpServer {
        name: name.into(),
        command: Some(command.into()),
        args: args.iter().map(|a| a.to_string()).collect(),
        env: Vec::new(),
        set_env: Default::default(),
        cwd: None,
        url: None,
        headers_from_env: Default::default(),
        timeout: Some(Duration::from_secs(30)),
        tools: None,
    }
}

/// server-everything over stdio.
pub fn everything() -> McpServer {
    let index = node_modules().join("@modelcontextprotocol/server-everything/dist/index.js");
    stdio("everything", "node", &[index.to_str().unwrap(), "stdio"])
}

/// What each tool call of a performance returned: (prop, content, is_error).
pub type Results = Vec<(String, String, bool)>;

/// Performs `turns` with `props` in the real kernel loop; returns the tool results and the
/// model, which recorded what it was sent.
pub async fn perform(
    props: Vec<Arc<dyn Prop>>,
    workspace: &Path,
    turns: Vec<ScriptedTurn>,
) -> (Results, Arc<ScriptedModel>) {
    let model = Arc::new(ScriptedModel::new(turns));
    let actor = Actor {
        name: "lead".into(),
        system: "You test MCP props.".into(),
        model: model.clone(),
        props,
        max_output_tokens: None,
    };
    let mut p = Performance::builder(actor)
        .workspace(workspace)
        .start("use the MCP props")
        .unwrap();
    let ended = p.act(&CancellationToken::new()).await;
    assert_eq!(ended.reason, "the actor ended its turn", "{ended:?}");
    let results = p
        .conversation()
        .iter()
        .filter_map(|m| match m {
            Message::Tool {
                name,
                content,
                is_error,
                ..
            } => Some((name.clone(), content.clone(), *is_error)),
            _ => None,
        })
        .collect();
    (results, model)
}
