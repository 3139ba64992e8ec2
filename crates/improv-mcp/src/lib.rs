//! MCP for improv. [`attach`] turns the servers a stage declares in `[[props.mcp]]` into props
//! named `server.tool` (see [`client`] for when servers start, restart and stop); [`schema`]
//! trims their schemas for the model; [`serve_stdio`] offers a stage to MCP clients.

pub mod client;
pub mod schema;
pub mod serve;

pub use client::{Attached, DEFAULT_TIMEOUT, McpTool, PromptInfo, ResourceInfo, attach};

use improv_kernel::Prop;
use improv_stage::Stage;
use std::sync::Arc;

/// The tools of a stage's MCP servers, as props an actor asks for by name.
impl improv_perform::PropSource for Attached {
    fn props(&self, wanted: &[String]) -> Vec<Arc<dyn Prop>> {
        Attached::props(self, wanted)
    }
}

/// Attaches `stage`'s MCP servers for one performance, as the props source a
/// [`Launch`](improv_perform::Launch) takes (`Launch::outside`); `None` when the stage declares
/// none. Warnings (a `tools` entry the server lacks) go to the log.
pub async fn outside(
    stage: &Stage,
) -> Result<Option<Arc<dyn improv_perform::PropSource>>, McpError> {
    if stage.mcp.is_empty() {
        return Ok(None);
    }
    let attached = attach(&stage.mcp, &stage.dir, &stage.workspace()).await?;
    for w in attached.warnings() {
        tracing::warn!("{w}");
    }
    Ok(Some(Arc::new(attached)))
}
pub use serve::{
    Elsewhere, Inflight, StageServer, progress_message, serve_stdio, serve_stdio_until,
};

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
