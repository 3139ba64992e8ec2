//! Probes: a timed door's shell commands, run before any model inside the stage's sandbox (the
//! edges the actors' commands get, built by `improv_perform::cast::edges`) and judged first by
//! the stage's `[[edges.rule]]` command rules exactly as an actor's `bash` call is
//! (`Policy::command_decision`): a denied probe does not run, and neither does one a rule says
//! to ask about, since no director is at the terminal of a door's firing. Their outputs are
//! kept in the store; the door performs only when one changed, and `{probe_diff}` tells the
//! actor what did.

use crate::error::DoorError;
use improv_edges::{Decision, Unattended};
use improv_stage::{Door, Stage};
use serde::{Deserialize, Serialize};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

/// The most bytes of one probe's output kept (and compared).
const MAX_OUTPUT: usize = 16 * 1024;
/// How long a probe may run when `[edges]` gives no `tool_timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The prop a probe is judged as: it is a shell line, as an actor's `bash` call is.
const PROBE_PROP: &str = "bash";
/// The store scope of the probes' last outputs, keyed by stage and door ([`crate::kept`]).
pub const SCOPE: &str = "door.probe";

/// What one probe printed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub command: String,
    /// The exit status (`None`: killed by a signal or timed out).
    pub status: Option<i32>,
    /// Standard output then standard error, cut at [`MAX_OUTPUT`] bytes.
    pub output: String,
}

/// Runs `door`'s probes one after another in the stage's sandbox.
pub async fn run(stage: &Stage, door: &Door) -> Result<Vec<Seen>, DoorError> {
    let problem = |command: &str, message: String| DoorError::Probe {
        door: door.name.clone(),
        command: command.to_string(),
        message,
    };
    let workspace = std::fs::canonicalize(stage.workspace())
        .map_err(|e| problem("", format!("the workspace cannot be opened: {e}")))?;
    let edges = improv_perform::cast::edges(stage, &workspace, Arc::new(Unattended))
        .map_err(|e| problem("", format!("{e:#}")))?;
    let Some(sandbox) = edges.sandbox else {
        return Err(problem(
            "",
            "this kernel cannot sandbox commands; probes run only sandboxed (or with \
             `sandbox = \"off\"` under [edges])"
                .into(),
        ));
    };
    for command in &door.probes {
        let (decision, rule) = edges.policy.command_decision(PROBE_PROP, command);
        if decision != Decision::Allow {
            return Err(DoorError::ProbeRefused {
                door: door.name.clone(),
                command: command.clone(),
                decision,
                rule,
            });
        }
    }
    let timeout = stage.edges.tool_timeout.unwrap_or(DEFAULT_TIMEOUT);
    let mut seen = Vec::with_capacity(door.probes.len());
    for command in &door.probes {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        sandbox
            .apply_tokio(&mut cmd)
            .map_err(|e| problem(command, e.to_string()))?;
        let child = cmd.spawn().map_err(|e| problem(command, e.to_string()))?;
        let out = tokio::time::timeout(timeout, child.wait_with_output()).await;
        sandbox.reap();
        let (status, output) = match out {
            Ok(Ok(out)) => {
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                (out.status.code(), text)
            }
            Ok(Err(e)) => return Err(problem(command, e.to_string())),
            Err(_) => (None, format!("timed out after {}s", timeout.as_secs())),
        };
        seen.push(Seen {
            command: command.clone(),
            status,
            output: cut(output),
        });
    }
    Ok(seen)
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_OUTPUT {
        let mut end = MAX_OUTPUT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("\n[… cut]");
    }
    s
}

/// What changed between the last outputs and these, for `{probe_diff}`; `None` when nothing did.
pub fn diff(before: &[Seen], after: &[Seen]) -> Option<String> {
    let mut out = String::new();
    for now in after {
        let was = before.iter().find(|b| b.command == now.command);
        if was == Some(now) {
            continue;
        }
        out.push_str(&format!("`{}` ", now.command));
        match was {
            Some(was) => out.push_str(&format!(
                "was (exit {}):\n{}\nis now (exit {}):\n{}\n",
                show_status(was.status),
                was.output.trim_end(),
                show_status(now.status),
                now.output.trim_end()
            )),
            None => out.push_str(&format!(
                "prints (exit {}):\n{}\n",
                show_status(now.status),
                now.output.trim_end()
            )),
        }
    }
    (!out.is_empty()).then_some(out)
}

fn show_status(s: Option<i32>) -> String {
    s.map_or_else(|| "none".into(), |c| c.to_string())
}
