//! The `bash` prop: runs a command in the workspace root and hands back its output.
//!
//! The command runs as `bash -c` in a process group of its own, with stdout and stderr on one
//! pipe (so they interleave in the order they were written). On timeout, on cancel, or when the
//! call is dropped, the whole group gets SIGKILL: nothing the command started outlives the call.

use crate::output::HeadTail;
use crate::{args, spec};
use async_trait::async_trait;
use improv_kernel::{Access, Prop, PropContext, PropError, ToolSpec};
use serde::Deserialize;
use serde_json::json;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::pin::Pin;
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

/// Starts every command `bash` runs (the edges' sandbox: Landlock, seccomp, resource limits, a
/// minimal environment). An error refuses the command. A closure `Fn(&mut Command) ->
/// io::Result<()>` is one: it prepares the command, which tokio then spawns.
pub type SpawnHook = Arc<dyn Spawn>;

/// How a command is started: `command` is `bash -c LINE` with its working directory and process
/// group set; its stdin is to be `/dev/null`, its stdout and stderr `stdout` and `stderr`.
pub trait Spawn: Send + Sync {
    fn spawn(
        &self,
        command: &mut Command,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> std::io::Result<Box<dyn Running>>;
}

impl<F> Spawn for F
where
    F: Fn(&mut Command) -> std::io::Result<()> + Send + Sync,
{
    fn spawn(
        &self,
        command: &mut Command,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> std::io::Result<Box<dyn Running>> {
        command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true);
        self(command)?;
        Ok(Box::new(command.spawn()?))
    }
}

/// A started command, as `bash` waits for it and kills it.
pub trait Running: Send {
    /// Its pid, the id of its process group; `None` once it has been waited for.
    fn id(&self) -> Option<u32>;
    /// Waits for it to exit (cancel-safe: dropping the future waits no longer).
    fn wait(&mut self) -> Pin<Box<dyn Future<Output = std::io::Result<ExitStatus>> + Send + '_>>;
    /// Sends it SIGKILL.
    fn start_kill(&mut self) -> std::io::Result<()>;
}

impl Running for tokio::process::Child {
    fn id(&self) -> Option<u32> {
        tokio::process::Child::id(self)
    }

    fn wait(&mut self) -> Pin<Box<dyn Future<Output = std::io::Result<ExitStatus>> + Send + '_>> {
        Box::pin(tokio::process::Child::wait(self))
    }

    fn start_kill(&mut self) -> std::io::Result<()> {
        tokio::process::Child::start_kill(self)
    }
}

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
        let spec = spec(
            "bash",
            "Run a bash command in the workspace root.",
            json!({
                "command": {"type": "string"},
                "timeout": {"type": "number", "description": format!("seconds, default {default}")}
            }),
            &["command"],
        );
        Bash {
            spec,
            max_timeout,
            max_output,
            spawn_hook: None,
        }
    }

    /// Every command is prepared by `hook` right before it is spawned (the edges' sandbox).
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
        let args: Args = args::parse("bash", arguments)?;
        if args.command.trim().is_empty() {
            return Err(PropError::new("bash: `command` is empty"));
        }
        let limit = match args.timeout {
            None => DEFAULT_TIMEOUT.min(self.max_timeout),
            Some(s) if s.is_finite() && s > 0.0 => {
                Duration::from_secs_f64(s.min(self.max_timeout.as_secs_f64()))
            }
            Some(s) => {
                return Err(PropError::new(format!(
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
    let started =
        |e: std::io::Error| PropError::new(format!("bash: could not start the command: {e}"));
    let (writer, mut reader) = tokio::net::unix::pipe::pipe().map_err(started)?;
    let stdout = writer.into_blocking_fd().map_err(started)?;
    let stderr = stdout.try_clone().map_err(started)?;
    let mut child = {
        let mut bash = Command::new("bash");
        bash.arg("-c")
            .arg(command)
            .current_dir(root)
            .process_group(0);
        let plain: &dyn Spawn = &|_: &mut Command| -> std::io::Result<()> { Ok(()) };
        spawn_hook
            .map_or(plain, |hook| hook.as_ref())
            .spawn(&mut bash, stdout, stderr)
            .map_err(started)?
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
                let exited = exited.map_err(|e| PropError::new(format!("bash: lost the command: {e}")))?;
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
            return Err(PropError::new(text));
        }
        End::Cancelled => {
            note(
                "[cancelled: the performance stopped; the command and every process it started were killed]",
            );
            return Err(PropError::new(text));
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
            Err(PropError::new(text))
        }
        (None, signal) => {
            note(&format!("[killed by signal {}]", signal.unwrap_or(0)));
            Err(PropError::new(text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::Stage;

    fn bash() -> Bash {
        Bash::new(Duration::from_secs(600), 30 * 1024)
    }

    /// Whether `pid` is gone (or a zombie nobody has reaped yet: it runs no more either way).
    fn dead(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        }
    }

    /// Waits until `pid` is dead; SIGKILL is delivered at once but exiting takes a moment.
    async fn wait_dead(pid: i32) -> bool {
        for _ in 0..500 {
            if dead(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// Bounds a call that should end soon, so a broken kill fails the test instead of hanging it.
    async fn ends<T>(call: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(60), call)
            .await
            .expect("the call did not end: the command was not killed")
    }

    #[tokio::test]
    async fn runs_in_the_workspace_with_interleaved_output() {
        let stage = Stage::new();
        stage.file("here.txt", "");
        let out = stage
            .call(
                &bash(),
                json!({"command": "ls; echo a; echo b >&2; echo c"}),
            )
            .await
            .unwrap();
        assert_eq!(out, "here.txt\na\nb\nc\n");
        let out = stage
            .call(&bash(), json!({"command": "true"}))
            .await
            .unwrap();
        assert_eq!(out, "[no output]");
        let out = stage
            .call(&bash(), json!({"command": "cat; echo done"}))
            .await
            .unwrap();
        assert_eq!(out, "done\n", "stdin is empty, not the test's");
    }

    #[tokio::test]
    async fn a_failing_command_is_an_error_with_its_output() {
        let stage = Stage::new();
        let err = stage
            .call(&bash(), json!({"command": "echo oops >&2; exit 3"}))
            .await
            .unwrap_err();
        assert_eq!(err.message(), "oops\n[exit code 3]");
        let err = stage
            .call(&bash(), json!({"command": "kill -9 $$"}))
            .await
            .unwrap_err();
        assert!(err.message().contains("killed by signal 9"), "{err}");
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let stage = Stage::new();
        let err = ends(stage.call(
            &bash(),
            json!({"command": "sleep 1000 & echo $!; sleep 1000", "timeout": 0.5}),
        ))
        .await
        .unwrap_err();
        assert!(err.message().contains("timed out after 0.5s"), "{err}");
        let pid: i32 = err.message().lines().next().unwrap().parse().unwrap();
        assert!(wait_dead(pid).await, "the background sleep {pid} survived");
    }

    #[tokio::test]
    async fn background_processes_left_holding_the_output_are_stopped() {
        let stage = Stage::new();
        let out = ends(stage.call(&bash(), json!({"command": "sleep 1000 & echo $!"})))
            .await
            .unwrap();
        let pid: i32 = out.lines().next().unwrap().parse().unwrap();
        assert!(out.contains("background processes"), "{out}");
        assert!(wait_dead(pid).await, "the background sleep {pid} survived");
    }

    async fn pid_file(stage: &Stage) -> i32 {
        loop {
            if let Ok(pid) = std::fs::read_to_string(stage.root().join("pid"))
                && let Ok(pid) = pid.trim().parse()
            {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn cancelling_the_performance_kills_the_command() {
        let stage = Stage::new();
        let prop = bash();
        let call = stage.call(
            &prop,
            json!({"command": "sleep 1000 & echo $! > pid.tmp; mv pid.tmp pid; wait"}),
        );
        let cancel = async {
            let pid = pid_file(&stage).await;
            stage.context.cancel.cancel();
            pid
        };
        let (result, pid) = ends(async { tokio::join!(call, cancel) }).await;
        let err = result.unwrap_err();
        assert!(err.message().contains("cancelled"), "{err}");
        assert!(wait_dead(pid).await, "the background sleep {pid} survived");
    }

    #[tokio::test]
    async fn dropping_the_call_kills_the_command() {
        let stage = Stage::new();
        let prop = bash();
        let call = stage.call(
            &prop,
            json!({"command": "sleep 1000 & echo $! > pid.tmp; mv pid.tmp pid; wait"}),
        );
        let pid = tokio::select! {
            _ = call => panic!("the command ended on its own"),
            pid = pid_file(&stage) => pid,
        };
        assert!(wait_dead(pid).await, "the background sleep {pid} survived");
    }

    #[tokio::test]
    async fn huge_output_is_capped_head_and_tail() {
        let stage = Stage::new();
        let out = stage
            .call(&bash(), json!({"command": "seq 1 1000000"}))
            .await
            .unwrap();
        assert!(out.len() <= 30 * 1024 + 64, "{}", out.len());
        assert!(out.starts_with("1\n2\n3\n"));
        assert!(out.ends_with("999999\n1000000\n"));
        assert!(out.contains(" bytes omitted …]"));
    }

    #[tokio::test]
    async fn the_spawn_hook_prepares_every_command_and_can_refuse_it() {
        let stage = Stage::new();
        let hooked = bash().with_spawn_hook(Arc::new(|command: &mut Command| {
            command.env("IMPROV_HOOKED", "yes");
            Ok(())
        }));
        let out = stage
            .call(&hooked, json!({"command": "echo $IMPROV_HOOKED"}))
            .await
            .unwrap();
        assert_eq!(out, "yes\n");
        let refusing = bash().with_spawn_hook(Arc::new(|_: &mut Command| {
            Err(std::io::Error::other("no sandbox here"))
        }));
        let err = stage
            .call(&refusing, json!({"command": "touch made"}))
            .await
            .unwrap_err();
        assert!(err.message().contains("no sandbox here"), "{err}");
        assert!(!stage.root().join("made").exists());
    }

    #[tokio::test]
    async fn bad_arguments_are_explained() {
        let stage = Stage::new();
        let err = stage
            .call(&bash(), json!({"command": "true", "timeout": -1}))
            .await
            .unwrap_err();
        assert!(
            err.message().contains("positive number of seconds"),
            "{err}"
        );
        let err = stage.call(&bash(), json!({"cmd": "ls"})).await.unwrap_err();
        assert!(err.message().contains("unknown field `cmd`"), "{err}");
    }
}
