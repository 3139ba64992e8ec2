//! Serves one stage as an MCP server over stdio: `improv-mcp-stage [STAGE_DIR_OR_FILE]`. The CLI's
//! `improv mcp` does the same; this binary lets the tests (and early users) run it alone.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[tokio::main]
async fn main() -> ExitCode {
    let arg = std::env::args_os()
        .nth(1)
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    let path = if arg.is_dir() {
        arg.join(improv_stage::STAGE_FILE)
    } else {
        arg
    };
    let stage = match improv_stage::Stage::load(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match improv_mcp::serve_stdio(Arc::new(stage)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
