//! A copy of improv-props' `bash` prop (crates/improv-props/src/bash.rs) with the one change the
//! sandbox needs: a spawn hook called on the command before it is spawned (marked `EDGES:`).
//! improv-props is not this crate's to edit; the tests drive this copy so the adversarial suite
//! runs the real spawn path under the sandbox. Keep it in step with the original.
#![allow(dead_code)]

use async_trait::async_trait;
use improv_kernel::{Access, Prop, PropContext, PropError, ToolSpec};
use improv_props::output::HeadTail;
use serde::Deserialize;
use serde_json::json;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

/// A call that names no timeout may run this long (or the configured maximum, when lower).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// After bash exits, how long output may still arrive from processes it left in the background
/// before they are stopped.
const LINGER: Duration = Duration::from_millis(250);
/// After a kill, how long to wait for the last output to drain.
const DRAIN: Duration = Duration::from_secs(1);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    command: String,
    timeout: Option<f64>,
}

/// EDGES: what improv-props' `Bash` would gain: a hook that prepares every command it spawns.
pub type SpawnHook = Arc<dyn Fn(&mut Command) -> std::io::Result<()> + Send + Sync>;

pub struct Bash {
    spec: ToolSpec,
    max_timeout: Duration,
    max_output: usize,
    spawn_hook: Option<SpawnHook>,
}

impl Bash {
    /// `max_timeout` bounds every call, whatever it asks for; `max_output` bounds what comes back.
    pub fn new(max_timeout: Duration, max_output: usize) -> Self {
        let default = DEFAULT_TIMEOUT.min(max_timeout).as_secs();
        let spec = ToolSpec {
            name: "bash".into(),
            description: "Run a bash command in the workspace root.".into(),
            parameters: json!({"type": "object", "properties": {
                "command": {"type": "string"},
                "timeout": {"type": "number", "description": format!("seconds, default {default}")}
            }, "required": ["command"]}),
        };
        Bash {
            spec,
            max_timeout,
            max_output,
            spawn_hook: None,
        }
    }

    /// EDGES: every command is prepared by `hook` before it is spawned (the sandbox).
    pub fn with_spawn_hook(mut self, hook: SpawnHook) -> Self {
        self.spawn_hook = Some(hook);
        self
    }
}

#[async_trait]
impl Prop for Bash {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn access(&self, _arguments: &serde_json::Value) -> Access {
        Access::Write
    }

    /// A little over the longest a call may ask for, so the prop's own timeout (which reports
    /// the output so far) fires before the kernel's.
    fn timeout(&self) -> Option<Duration> {
        Some(self.max_timeout + Duration::from_secs(5))
    }

    async fn call(
        &self,
        arguments: serde_json::Value,
        context: &PropContext,
    ) -> Result<String, PropError> {
        let args: Args = serde_json::from_value(arguments)
            .map_err(|e| PropError(format!("bash: invalid arguments: {e}")))?;
        if args.command.trim().is_empty() {
            return Err(PropError::new("bash: `command` is empty"));
        }
        let limit = match args.timeout {
            None => DEFAULT_TIMEOUT.min(self.max_timeout),
            Some(s) if s.is_finite() && s > 0.0 => {
                Duration::from_secs_f64(s.min(self.max_timeout.as_secs_f64()))
            }
            Some(s) => {
                return Err(PropError(format!(
                    "bash: `timeout` must be a positive number of seconds, not {s}"
                )));
            }
        };
        run(
            &args.command,
            &context.workspace,
            limit,
            &context.cancel,
            self.max_output,
            self.spawn_hook.as_ref(),
        )
        .await
    }
}

/// Kills the process group when dropped, unless the command ended on its own.
struct Group {
    pgid: libc::pid_t,
    armed: bool,
}

impl Group {
    fn kill(&mut self) {
        if self.armed {
            // SAFETY: killpg only sends a signal; pgid is the group `process_group(0)` made for
            // our child, and a stale id fails with ESRCH, which is fine to ignore.
            unsafe {
                libc::killpg(self.pgid, libc::SIGKILL);
            }
            self.armed = false;
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How the wait for the command ended.
enum End {
    Exited(ExitStatus),
    /// Bash exited but processes it put in the background still hold the output pipe.
    Lingering(ExitStatus),
    TimedOut,
    Cancelled,
}

async fn run(
    command: &str,
    root: &Path,
    limit: Duration,
    cancel: &CancellationToken,
    max_output: usize,
    spawn_hook: Option<&SpawnHook>,
) -> Result<String, PropError> {
    let started = |e: std::io::Error| PropError(format!("bash: could not start the command: {e}"));
    let (writer, mut reader) = tokio::net::unix::pipe::pipe().map_err(started)?;
    let stdout = writer.into_blocking_fd().map_err(started)?;
    let stderr = stdout.try_clone().map_err(started)?;
    let mut child = {
        let mut bash = Command::new("bash");
        bash.arg("-c")
            .arg(command)
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(true);
        if let Some(hook) = spawn_hook {
            hook(&mut bash).map_err(started)?; // EDGES: the one added line
        }
        bash.spawn().map_err(started)?
        // `bash` drops here, closing our copies of the pipe's write end: the reader sees EOF
        // once every process of the command has closed its own.
    };
    let mut group = Group {
        // A child not yet waited for always has an id.
        pgid: child.id().map_or(0, |id| id as libc::pid_t),
        armed: child.id().is_some(),
    };

    let mut out = HeadTail::new(max_output);
    let mut buf = [0u8; 16 * 1024];
    let deadline = tokio::time::sleep(limit);
    let linger = tokio::time::sleep(limit);
    tokio::pin!(deadline, linger);
    let mut status = None;
    let mut eof = false;
    let end = loop {
        if let (Some(status), true) = (status, eof) {
            break End::Exited(status);
        }
        tokio::select! {
            read = reader.read(&mut buf), if !eof => match read {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => out.push(&buf[..n]),
            },
            exited = child.wait(), if status.is_none() => {
                let exited = exited.map_err(|e| PropError(format!("bash: lost the command: {e}")))?;
                status = Some(exited);
                linger.as_mut().reset(tokio::time::Instant::now() + LINGER);
            }
            () = &mut linger, if status.is_some() && !eof => {
                if let Some(status) = status {
                    break End::Lingering(status);
                }
            }
            () = &mut deadline => break End::TimedOut,
            () = cancel.cancelled() => break End::Cancelled,
        }
    };

    match end {
        End::Exited(_) => group.armed = false,
        _ => {
            group.kill();
            if status.is_none() {
                // Killed with its group already; this is for a bash that left it (setsid).
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
            if !eof {
                let _ = tokio::time::timeout(DRAIN, async {
                    while let Ok(n @ 1..) = reader.read(&mut buf).await {
                        out.push(&buf[..n]);
                    }
                })
                .await;
            }
        }
    }

    let empty = out.is_empty();
    let mut text = out.finish();
    let mut note = |line: &str| {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(line);
    };
    let status = match end {
        End::Exited(status) => status,
        End::Lingering(status) => {
            note(
                "[background processes that still held the output were stopped; redirect their output (`cmd > log 2>&1 &`) to keep one running]",
            );
            status
        }
        End::TimedOut => {
            note(&format!(
                "[timed out after {}s; the command and every process it started were killed]",
                limit.as_secs_f64()
            ));
            return Err(PropError(text));
        }
        End::Cancelled => {
            note(
                "[cancelled: the performance stopped; the command and every process it started were killed]",
            );
            return Err(PropError(text));
        }
    };
    match (status.code(), status.signal()) {
        (Some(0), _) => {
            if empty {
                text.push_str("[no output]");
            }
            Ok(text)
        }
        (Some(code), _) => {
            note(&format!("[exit code {code}]"));
            Err(PropError(text))
        }
        (None, signal) => {
            note(&format!("[killed by signal {}]", signal.unwrap_or(0)));
            Err(PropError(text))
        }
    }
}
