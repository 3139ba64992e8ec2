//! Command checks: `bash -c COMMAND` in the workspace, run by the same `bash` prop the actors
//! use (its own process group, killed whole on timeout or cancel), in the actors' sandbox when
//! one is given. Exit code 0 passes; the tail of the combined output is the verdict.

use crate::{OUTPUT_LIMIT, tail};
use improv_edges::Sandbox;
use improv_kernel::{Prop, PropContext};
use improv_props::Bash;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How much output is captured before the tail is taken (head and tail of it are kept, so a
/// huge output costs no more memory than this).
const CAPTURE: usize = 64 * 1024;

/// Runs `command` in `workspace` (canonical) for at most `limit`: whether it passed, and the
/// tail of its output with a last line saying how it ended when it failed (`[exit code 1]`,
/// `[timed out after 300s; ...]`, `[cancelled: ...]`).
pub async fn run(
    command: &str,
    workspace: &Arc<Path>,
    limit: Duration,
    sandbox: Option<&Arc<Sandbox>>,
    cancel: &CancellationToken,
) -> (bool, String) {
    let mut bash = Bash::new(limit, CAPTURE);
    if let Some(sandbox) = sandbox {
        bash = bash.with_spawn_hook(Arc::new(sandbox.spawn_hook()));
    }
    let mut context = PropContext::new(workspace.clone(), "feedback", "feedback");
    context.cancel = cancel.child_token();
    let args = serde_json::json!({"command": command, "timeout": limit.as_secs_f64()});
    match bash.call(args, &context).await {
        Ok(out) => (true, tail(&out, OUTPUT_LIMIT)),
        Err(e) => (false, tail(e.message(), OUTPUT_LIMIT)),
    }
}
