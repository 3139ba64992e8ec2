//! MCP for improv. [`attach`] turns the servers a stage declares in `[[props.mcp]]` into props
//! named `server.tool` (see [`client`] for when servers start, restart and stop); [`schema`]
//! trims their schemas for the model; [`serve_stdio`] offers a stage to MCP clients.

pub mod client;
pub mod schema;
pub mod serve;

pub use client::{Attached, DEFAULT_TIMEOUT, McpTool, PromptInfo, ResourceInfo, attach};
pub use serve::{StageServer, serve_stdio};

/// What can go wrong attaching or serving MCP.
#[derive(Debug, thiserror::Error)]
pub enum McpError {
    /// A server could not be started, listed or asked.
    #[error("MCP server `{server}`: {reason}")]
    Server { server: String, reason: String },
    /// A server name that the stage does not declare.
    #[error("no MCP server named `{server}` in [[props.mcp]]; the servers are: {known}")]
    NoServer { server: String, known: String },
    /// Serving a stage over MCP failed.
    #[error("serving the stage over MCP: {0}")]
    Serve(String),
}
