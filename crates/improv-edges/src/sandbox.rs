//! The sandbox every process an actor starts runs in: Landlock (what it may read, write and
//! execute), its own user and mount namespace where the workspace's hidden files and improv's
//! state are covered and its control files read-only (see the `namespace` module), seccomp (no
//! network sockets unless allowed, Unix ones included, no ptrace, mount, module or keyring
//! calls, no leaving its process group), `no_new_privs`, no capabilities (even as root),
//! resource limits (per process; for the performance as a whole a cgroup bounds the process
//! count for uid 0 and the memory, see the `cgroup` module, and a watchdog the free space its
//! commands consume on the workspace's filesystem, see the `disk` module), a private temp dir (a
//! size-limited tmpfs where improv may mount one, see the `scratch` module) and a minimal
//! environment. What a crashed improv left (temp dirs, cgroups) is swept at a process's first
//! [`Sandbox::new`] and every 10 minutes after; until then a crashed sibling's orphaned
//! commands may keep running, inside their bounded cgroup, for up to 10 minutes.
//!
//! Everything that allocates or can fail for a reason worth a message (the Landlock ruleset, the
//! BPF program, the environment) is built before `fork`, in [`Sandbox::new`] and
//! [`Sandbox::apply`]; the `pre_exec` closure that runs in the child between `fork` and `exec`
//! only makes system calls, which is all that is async-signal-safe there.
//!
//! ```no_run
//! use improv_edges::sandbox::{Sandbox, SandboxConfig};
//! let sandbox = Sandbox::new(SandboxConfig::new("/path/to/workspace"))?;
//! let mut cmd = std::process::Command::new("bash");
//! cmd.arg("-c").arg("cat ~/.ssh/id_rsa");
//! sandbox.apply(&mut cmd)?; // the child will get "Permission denied"
//! # Ok::<(), improv_edges::sandbox::SandboxError>(())
//! ```

use crate::cgroup::{Bounds, PerformanceCgroup};
pub use crate::disk::{Breach, DiskLimit};
use crate::disk::{DiskGuard, Performers};
use crate::env::{ChildEnv, EnvPolicy};
use crate::namespace::{self, Covers, Plan};
pub use crate::namespace::{ScanError, TEMPLATE_AGE};
use crate::policy::{GlobError, Hidden, HiddenGlobs, default_hidden};
pub use crate::scratch::TempSpace;
use crate::scratch::{self, TempDir};
use crate::seccomp::{self, Verdict};
use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, Scope, path_beneath_rules,
};
use seccompiler::BpfProgram;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The Landlock ABI whose rights improv asks for (Linux 6.15). Older kernels enforce what they
/// know (best effort) as long as they have Landlock at all.
const LANDLOCK_ABI: ABI = ABI::V7;

/// Whether shell props run sandboxed: `sandbox = "on"` (the default) or `"off"` in `[edges]`,
/// the stage's own word. Off means no Landlock and no seccomp; the environment allowlist and
/// resource limits still apply.
pub use improv_stage::SandboxMode;

/// Resource limits of every sandboxed process (`setrlimit`), and of the performance's commands
/// together (its cgroup, its temp dir). `None` leaves a limit as inherited (or unbounded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// CPU time in seconds (`RLIMIT_CPU`): SIGXCPU, then SIGKILL.
    pub cpu_seconds: Option<u64>,
    /// Address space in bytes, per process (`RLIMIT_AS`).
    pub memory_bytes: Option<u64>,
    /// Memory of all the performance's commands together, in bytes (a memory cgroup, no swap):
    /// past it the kernel kills one of them (OOM) and the performance goes on. Only where a
    /// memory cgroup is writable; see [`Sandbox::memory_limit`].
    pub memory_bytes_total: Option<u64>,
    /// Size of the private temp dir (`HOME`, `TMPDIR`) in bytes: a tmpfs where improv may
    /// mount one (root); its pages count in [`Limits::memory_bytes_total`] too. See
    /// [`Sandbox::temp_space`].
    pub temp_bytes: Option<u64>,
    /// Open file descriptors (`RLIMIT_NOFILE`).
    pub open_files: Option<u64>,
    /// Processes (and threads) at once. Counted per command (`RLIMIT_NPROC` in the command's
    /// own user namespace); for uid 0, whose `RLIMIT_NPROC` the kernel never enforces, for
    /// all the performance's commands together in a pids cgroup when one is writable. See
    /// [`Sandbox::process_limit`].
    pub processes: Option<u64>,
    /// The largest file a process may write, in bytes (`RLIMIT_FSIZE`): SIGXFSZ past it.
    pub file_size_bytes: Option<u64>,
    /// The most free space the performance may consume on the workspace's filesystem, in
    /// bytes: past it every command of the performance is killed and new ones are refused
    /// until space is freed. Measured on the filesystem (other processes' writes count too)
    /// while commands run; see the `disk` module and [`Sandbox::disk_limit`].
    pub disk_bytes_total: Option<u64>,
    /// The free space that must remain on the workspace's filesystem, in bytes: below it,
    /// the same as past [`Limits::disk_bytes_total`].
    pub disk_free_floor: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu_seconds: Some(600),
            memory_bytes: Some(16 << 30),
            memory_bytes_total: Some(4 << 30),
            temp_bytes: Some(1 << 30),
            open_files: Some(4096),
            processes: Some(2048),
            file_size_bytes: Some(1 << 30),
            disk_bytes_total: Some(8 << 30),
            disk_free_floor: Some(512 << 20),
        }
    }
}

/// What a [`Sandbox`] allows. Build it with [`SandboxConfig::new`] and adjust the fields.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    pub mode: SandboxMode,
    /// Read-write, and the working directory of commands.
    pub workspace: PathBuf,
    /// Whether processes may open network sockets (TCP, UDP, DNS). Off by default.
    pub network: bool,
    /// Read-only system paths (and executable). Missing ones are skipped.
    pub system_read_only: Vec<PathBuf>,
    /// Files under `/etc` that stay unreadable although the rest of `/etc` is readable, relative
    /// to `/etc` (`shadow`, `ssh`, `ssl/private`, ...).
    pub etc_hidden: Vec<PathBuf>,
    /// More read-only paths: toolchains outside the system ([`SandboxConfig::allow_rust_toolchain`]).
    pub read_only: Vec<PathBuf>,
    /// More read-write paths.
    pub read_write: Vec<PathBuf>,
    /// Workspace paths no command may read (globs as in `hidden` under `[edges]`: without a
    /// `/` a glob matches any path component; for commands, whatever the case of its letters).
    /// Those present when a command starts are covered in its mount namespace; the file props
    /// refuse them too. A file named only like key material
    /// ([`HiddenKind::KeyMaterial`](crate::policy::HiddenKind)) is hidden when it holds a
    /// private key or cannot be checked.
    pub hidden: Vec<Hidden>,
    /// Whether commands get a user and mount namespace of their own (where hidden files are
    /// covered and the process limit counts per command) when the kernel allows it. On by
    /// default; off, hidden files are only hidden from the file props.
    pub user_namespaces: bool,
    /// Absolute paths inside the workspace that commands may read but never change, rename,
    /// remove or replace: the performance's control files (`stage.toml`, MCP server scripts,
    /// `skills/`, `AGENTS.md`, `.git/config`, `.git/hooks`). Missing ones are skipped. Held by
    /// read-only bind mounts in each command's mount namespace, so only where user namespaces
    /// are available (see [`Sandbox::describe`]).
    pub protected: Vec<PathBuf>,
    /// Absolute paths inside the workspace that commands can neither read, change, rename,
    /// remove nor replace: improv's state folder (`.improv/`). Covered like hidden paths, in
    /// each command's mount namespace.
    pub concealed: Vec<PathBuf>,
    /// Workspace path globs commands may read but not change (`read_only` under `[edges]`, the
    /// glob syntax of `hidden`): what matches is bind-mounted read-only in each command's mount
    /// namespace, as [`SandboxConfig::protected`] is.
    pub read_only_globs: Vec<String>,
    pub limits: Limits,
    /// Run commands as this `(uid, gid)`. When improv runs as root without a writable pids
    /// cgroup, the kernel ignores `RLIMIT_NPROC`, so only an unprivileged uid bounds a fork
    /// bomb; the workspace and the private temp dir must be writable by it (the temp dir is
    /// handed to it here).
    pub run_as: Option<(u32, u32)>,
    pub env: EnvPolicy,
}

impl SandboxConfig {
    /// The defaults for a workspace: read-write there and in a private temp dir, read-only
    /// system paths, no network.
    pub fn new(workspace: impl Into<PathBuf>) -> Self {
        SandboxConfig {
            mode: SandboxMode::On,
            workspace: workspace.into(),
            network: false,
            system_read_only: [
                "/usr",
                "/bin",
                "/sbin",
                "/lib",
                "/lib32",
                "/lib64",
                "/libx32",
                "/opt",
                "/proc",
                "/sys/devices/system/cpu",
                "/sys/fs/cgroup",
                "/dev/urandom",
                "/dev/random",
            ]
            .into_iter()
            .map(PathBuf::from)
            .collect(),
            etc_hidden: [
                "shadow",
                "shadow-",
                "gshadow",
                "gshadow-",
                "sudoers",
                "sudoers.d",
                "ssh",
                "ssl/private",
                "security",
                "krb5.keytab",
                "netrc",
                ".pwd.lock",
            ]
            .into_iter()
            .map(PathBuf::from)
            .collect(),
            read_only: Vec::new(),
            read_write: Vec::new(),
            hidden: default_hidden(),
            user_namespaces: true,
            protected: Vec::new(),
            concealed: Vec::new(),
            read_only_globs: Vec::new(),
            limits: Limits::default(),
            run_as: None,
            env: EnvPolicy::default(),
        }
    }

    /// Lets commands run `cargo` and `rustc`: `$CARGO_HOME/bin`, its registry and git caches
    /// and `$RUSTUP_HOME` become readable (not `credentials.toml`), and both variables reach the
    /// child, since its `HOME` is the private temp dir.
    pub fn allow_rust_toolchain(mut self) -> Self {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let dir = |var: &str, default: &str| {
            std::env::var_os(var)
                .map(PathBuf::from)
                .or_else(|| home.as_ref().map(|h| h.join(default)))
        };
        if let Some(cargo) = dir("CARGO_HOME", ".cargo") {
            for sub in ["bin", "registry", "git"] {
                self.read_only.push(cargo.join(sub));
            }
            self.env.set.push(("CARGO_HOME".into(), cargo.into()));
        }
        if let Some(rustup) = dir("RUSTUP_HOME", ".rustup") {
            self.read_only.push(rustup.clone());
            self.env.set.push(("RUSTUP_HOME".into(), rustup.into()));
        }
        self
    }
}

/// Why a sandbox could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "this kernel has no usable Landlock ({reason}), so improv will not run shell props: they would not be sandboxed. Use Linux 5.13 or later with Landlock enabled (`lsm=...,landlock` on the kernel command line), or set `sandbox = \"off\"` under [edges] in stage.toml to run them unsandboxed"
    )]
    Unsupported { reason: String },
    #[error("the workspace {path} cannot be opened for the sandbox: {source}")]
    Workspace { path: String, source: io::Error },
    #[error("could not create the sandbox's private temp dir: {0}")]
    TempDir(io::Error),
    #[error("could not build the Landlock ruleset: {0}")]
    Landlock(#[from] landlock::RulesetError),
    #[error("could not build the seccomp filter: {0}")]
    Seccomp(String),
    #[error("could not prepare the sandboxed process: {0}")]
    Prepare(io::Error),
    #[error(transparent)]
    Hidden(#[from] GlobError),
    /// Commands are refused: improv cannot cover every hidden file.
    #[error(transparent)]
    Scan(#[from] ScanError),
    /// Commands are refused: the performance is past its disk bound.
    #[error(transparent)]
    Disk(#[from] Breach),
    /// Commands are refused: the disk bound's watchdog could not start, so a command could
    /// write past the bound unseen.
    #[error(
        "the disk watchdog could not start ({0}), so the command is refused rather than run past the performance's disk bound unwatched; free file descriptors or threads (raise the open-file limit) and run it again"
    )]
    DiskWatchdog(io::Error),
    /// The command's process failed before it ran its program: which step, and why.
    #[error("the sandboxed command could not start: {step} failed: {source}")]
    Start { step: String, source: io::Error },
}

/// How the process count of sandboxed commands is bounded ([`Limits::processes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessLimit {
    /// No limit is configured.
    Unlimited,
    /// `RLIMIT_NPROC` in each command's own user namespace: at most this many per command.
    PerCommand(u64),
    /// `RLIMIT_NPROC` without a user namespace: counted over every process of the uid.
    PerUser(u64),
    /// A pids cgroup: at most `max` tasks for all the performance's commands together.
    PerPerformance { max: u64, cgroup: PathBuf },
    /// Commands run as uid 0 and no pids cgroup could be made: a fork bomb is only stopped by
    /// the command's timeout and the end of the performance.
    NotEnforced { reason: String },
}

/// How the memory of the performance's commands together is bounded
/// ([`Limits::memory_bytes_total`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryLimit {
    /// No limit is configured.
    Unlimited,
    /// A memory cgroup (swap bounded to none where the kernel accounts it).
    PerPerformance { max: u64, cgroup: PathBuf },
    /// No memory cgroup could be made: only `RLIMIT_AS` per process holds.
    NotEnforced { reason: String },
}

/// The user and mount namespaces that guard the workspace's hidden files, control files and
/// improv's state.
struct Namespaces {
    covers: Covers,
    fixed: namespace::Fixed,
    scanner: Mutex<namespace::Scanner>,
    /// What the last scan found, and the paths it guards: guarded in every command spawned
    /// since; or why commands are refused.
    last: Mutex<Result<(namespace::Targets, namespace::Scan), ScanError>>,
    /// Hidden files git tracks (readable through its objects), or why that is unknown.
    tracked: Result<Vec<PathBuf>, String>,
    /// The namespaces the last scan's targets are guarded in, which commands started without
    /// `fork` join while it holds ([`namespace::Template`]).
    template: Mutex<Option<Arc<namespace::Template>>>,
}

/// A sandbox for the processes of one performance. Cheap to [`apply`](Sandbox::apply) to every
/// command; when dropped (or [`reap`](Sandbox::reap)ed) every process group it started is
/// killed, so nothing an actor started outlives the performance.
pub struct Sandbox {
    config: SandboxConfig,
    workspace: PathBuf,
    temp: TempDir,
    temp_space: TempSpace,
    /// The Landlock ruleset when the mode is on, built by the first command: a performance that
    /// runs none holds no fd for it.
    ruleset: Option<OnceLock<RulesetCreated>>,
    filter: Option<Arc<Filters>>,
    env: Vec<(OsString, OsString)>,
    groups: Arc<Groups>,
    notes: Vec<String>,
    namespaces: Option<Namespaces>,
    cgroup: Option<Arc<PerformanceCgroup>>,
    process_limit: ProcessLimit,
    memory_limit: MemoryLimit,
    /// The disk bound and its watchdog, which also drains `groups` (see [`Sandbox::apply`]).
    disk: Option<DiskGuard>,
    disk_limit: DiskLimit,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("workspace", &self.workspace)
            .field("temp", &self.temp.path())
            .field("enforced", &self.is_enforced())
            .finish()
    }
}

impl Sandbox {
    /// Builds the sandbox: checks Landlock, builds the seccomp program, makes the private temp
    /// dir. What holds a file descriptor (the Landlock ruleset, the pipe the process groups are
    /// registered on, the cgroup's files, the disk watchdog) waits for the first command, so a
    /// performance that runs none (one of thousands waiting on a model) holds none. Fails with [`SandboxError::Unsupported`] on a kernel without Landlock
    /// unless the mode is [`SandboxMode::Off`].
    pub fn new(config: SandboxConfig) -> Result<Self, SandboxError> {
        let workspace =
            config
                .workspace
                .canonicalize()
                .map_err(|source| SandboxError::Workspace {
                    path: config.workspace.display().to_string(),
                    source,
                })?;
        // What crashed improv processes left: swept at the first sandbox of this process, then
        // in the background, never per sandbox (a sweep lists one entry per live sandbox).
        scratch::sweep_leftovers();
        let (temp, temp_space) =
            TempDir::new(config.limits.temp_bytes, config.run_as).map_err(SandboxError::TempDir)?;
        let temp_path = temp.path().to_path_buf();
        let mut notes = Vec::new();
        let (ruleset, filter) = match config.mode {
            SandboxMode::Off => {
                notes.push(
                    "sandbox off (the stage says sandbox = \"off\"): commands run without Landlock or seccomp".to_string(),
                );
                (None, None)
            }
            SandboxMode::On => {
                landlock_usable()?;
                let filter = seccomp_program(config.network)?;
                (Some(OnceLock::new()), Some(Arc::new(filter)))
            }
        };
        // Checked in either mode: a stage with a bad glob is an error, namespaces or not.
        let hidden = HiddenGlobs::new(&config.hidden)?;
        let read_only = namespace::Globs::new(&config.read_only_globs)?;
        let namespaces = match config.mode {
            SandboxMode::Off => None,
            SandboxMode::On => Namespaces::new(&config, &workspace, hidden, read_only, &mut notes)?,
        };
        let uid = config
            .run_as
            .map(|(uid, _)| uid)
            .unwrap_or_else(|| rustix::process::geteuid().as_raw());
        let (cgroup, process_limit, memory_limit) =
            performance_cgroup(&config.limits, uid, namespaces.is_some(), &mut notes);
        let readable: Vec<PathBuf> = config
            .system_read_only
            .iter()
            .chain(&config.read_only)
            .cloned()
            .collect();
        let env = ChildEnv::build(&config.env, &temp_path, &readable).into_vars();
        let groups = Arc::new(Groups::default());
        let (disk, disk_limit) = DiskGuard::new(
            &workspace,
            config.limits.disk_bytes_total,
            config.limits.disk_free_floor,
            Processes {
                groups: groups.clone(),
                cgroup: cgroup.clone(),
            },
        );
        Ok(Sandbox {
            groups,
            config,
            workspace,
            temp,
            temp_space,
            ruleset,
            filter,
            env,
            notes,
            namespaces,
            cgroup,
            process_limit,
            memory_limit,
            disk,
            disk_limit,
        })
    }

    /// How what the performance's commands write into the workspace's filesystem is bounded.
    pub fn disk_limit(&self) -> &DiskLimit {
        &self.disk_limit
    }

    /// How the process count is bounded.
    pub fn process_limit(&self) -> &ProcessLimit {
        &self.process_limit
    }

    /// How the memory of the performance's commands together is bounded.
    pub fn memory_limit(&self) -> &MemoryLimit {
        &self.memory_limit
    }

    /// How the size of the private temp dir is bounded.
    pub fn temp_space(&self) -> &TempSpace {
        &self.temp_space
    }

    /// The hidden paths covered in the namespace of the last command started (or as the
    /// sandbox found them when built); `None` where user namespaces are unavailable (or the
    /// sandbox is off) and only the file props hide them, and where commands are refused
    /// ([`ScanError`]).
    pub fn covered(&self) -> Option<Vec<PathBuf>> {
        let ns = self.namespaces.as_ref()?;
        let last = lock(&ns.last);
        let (_, scan) = last.as_ref().ok()?;
        Some(scan.hidden.iter().map(|f| f.path.clone()).collect())
    }

    /// Scans the workspace for hidden and read-only paths again, as [`Sandbox::apply`] does
    /// before every command. `Err` when commands would be refused.
    pub fn rescan(&self) -> Result<(), SandboxError> {
        match &self.namespaces {
            Some(ns) => ns.rescan().map(|_| ()),
            None => Ok(()),
        }
    }

    /// Whether Landlock and seccomp are applied (the mode is on).
    pub fn is_enforced(&self) -> bool {
        self.ruleset.is_some()
    }

    /// The canonical workspace.
    pub fn workspace(&self) -> &Path {
        &self.workspace
    }

    /// The private temp dir: `HOME` and `TMPDIR` of every sandboxed process.
    pub fn temp_dir(&self) -> &Path {
        self.temp.path()
    }

    /// The environment every sandboxed process gets, and nothing else.
    pub fn env(&self) -> &[(OsString, OsString)] {
        &self.env
    }

    /// One line for the performance's log: what the sandbox enforces, and any weakness.
    pub fn describe(&self) -> String {
        let mut line = if self.is_enforced() {
            format!(
                "sandbox on: Landlock (read-write {} and {}; read-only system paths), seccomp ({}; no ptrace, mount, modules, keyrings, bpf, setsid, keystrokes into a terminal (TIOCSTI)), no_new_privs, own process group",
                self.workspace.display(),
                self.temp.path().display(),
                if self.config.network {
                    "network allowed, Unix sockets too"
                } else {
                    "no network: socket() refused for every family, Unix ones included, so no socket outside the sandbox can be reached; only socketpair() between a command's own processes"
                },
            )
        } else {
            String::from("sandbox off")
        };
        if let Some(ns) = &self.namespaces {
            line.push_str(&ns.describe());
        }
        match &self.process_limit {
            ProcessLimit::PerCommand(n) => {
                line.push_str(&format!(", at most {n} processes per command"))
            }
            ProcessLimit::PerUser(n) => {
                line.push_str(&format!(", at most {n} processes of the uid"))
            }
            ProcessLimit::PerPerformance { max, .. } => line.push_str(&format!(
                ", at most {max} processes for the performance (pids cgroup)"
            )),
            ProcessLimit::Unlimited | ProcessLimit::NotEnforced { .. } => {}
        }
        line.push_str(&self.describe_space());
        for note in &self.notes {
            line.push_str("; ");
            line.push_str(note);
        }
        line
    }

    /// What bounds the performance's memory and what it writes, for [`Sandbox::describe`].
    fn describe_space(&self) -> String {
        let mut line = match &self.memory_limit {
            MemoryLimit::PerPerformance { max, .. } => format!(
                ", at most {} MiB of memory for the performance, no swap (memory cgroup; past it one command is killed)",
                max >> 20
            ),
            MemoryLimit::NotEnforced { reason } => format!(
                ", no memory bound for the performance as a whole ({reason}), only per process"
            ),
            MemoryLimit::Unlimited => String::new(),
        };
        match &self.temp_space {
            TempSpace::Tmpfs(max) => {
                line.push_str(&format!(", the temp dir a tmpfs of {} MiB", max >> 20))
            }
            TempSpace::NotEnforced { reason } => {
                line.push_str(&format!(", the temp dir unbounded in total ({reason})"))
            }
            TempSpace::Unbounded => {}
        }
        if let Some(max) = self.config.limits.file_size_bytes {
            line.push_str(&format!(", files of at most {} MiB each", max >> 20));
        }
        line.push_str(&describe_disk(&self.disk_limit));
        line
    }

    /// Warnings worth showing the director (running as root, sandbox off).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Makes `cmd` start sandboxed: the minimal environment, its own process group, and (in the
    /// child, before `exec`) resource limits, Landlock, `no_new_privs` and seccomp. Sets the
    /// working directory to the workspace when the command has none. The child is forked;
    /// [`Sandbox::spawn`] starts one without `fork`, through the same steps.
    pub fn apply(&self, cmd: &mut std::process::Command) -> Result<(), SandboxError> {
        let prepared = self.prepare(Entry::Make)?;
        cmd.env_clear();
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        if cmd.get_current_dir().is_none() {
            cmd.current_dir(&self.workspace);
        }
        cmd.process_group(0);
        if let Some((uid, gid)) = self.config.run_as {
            cmd.gid(gid).uid(uid);
        }
        let child = move || -> io::Result<()> {
            prepared
                .enter()
                .map_err(|(step, errno)| step_failed(step, errno))
        };
        // SAFETY: the closure only makes async-signal-safe system calls (see `Prepared::enter`);
        // the ruleset and the BPF program were built before fork.
        unsafe {
            cmd.pre_exec(child);
        }
        Ok(())
    }

    /// What every command needs before it starts, and what its child does before `exec`: the
    /// disk bound checked, the workspace scanned again, the namespace plan (with the template
    /// to join when `entry` says so), a dup of the Landlock ruleset. `Err` refuses the command.
    pub(crate) fn prepare(&self, entry: Entry) -> Result<Prepared, SandboxError> {
        // Opened by the first command, before the disk watchdog starts to wait on it.
        let registry = self
            .groups
            .pipe()
            .map_err(SandboxError::Prepare)?
            .writer
            .clone();
        if let Some(cgroup) = &self.cgroup {
            cgroup.open().map_err(SandboxError::Prepare)?;
        }
        match &self.disk {
            Some(disk) => disk.check()?,
            // The disk watchdog drains the groups itself: it wakes on their pipe, so taking a
            // pid here could leave it asleep while that command runs.
            None => self.groups.drain(),
        }
        let landlock = match &self.ruleset {
            // A dup of the ruleset's fd: each child restricts itself with its own copy.
            Some(cell) => {
                let r = match cell.get() {
                    Some(r) => r,
                    None => {
                        let made =
                            landlock_ruleset(&self.config, &self.workspace, self.temp.path())?;
                        // Another command may have built one meanwhile: the same rules.
                        cell.get_or_init(|| made)
                    }
                };
                let fd: Option<OwnedFd> = r.try_clone().map_err(SandboxError::Prepare)?.into();
                // Landlock is a hard requirement when the mode is on: `new` failed without it.
                Some(fd.ok_or_else(|| SandboxError::Unsupported {
                    reason: "the Landlock ruleset has no file descriptor".into(),
                })?)
            }
            None => None,
        };
        let (uid, gid) = self.config.run_as.unwrap_or_else(|| {
            (
                rustix::process::geteuid().as_raw(),
                rustix::process::getegid().as_raw(),
            )
        });
        let plan = match &self.namespaces {
            Some(ns) => {
                let targets = ns.rescan()?;
                let mut plan = Plan::new(uid, gid, &ns.covers, targets);
                if entry == Entry::Join {
                    plan.template = Some(ns.template(&plan)?);
                }
                Some(plan)
            }
            None => None,
        };
        Ok(Prepared {
            registry,
            cgroup: self.cgroup.clone(),
            limits: rlimits(&self.config.limits),
            plan,
            processes: self.config.limits.processes,
            landlock,
            filter: self.filter.clone(),
        })
    }

    /// The user and group commands run as when not improv's own ([`SandboxConfig::run_as`]).
    pub(crate) fn run_as(&self) -> Option<(u32, u32)> {
        self.config.run_as
    }

    /// [`apply`](Sandbox::apply) for a tokio command.
    pub fn apply_tokio(&self, cmd: &mut tokio::process::Command) -> Result<(), SandboxError> {
        self.apply(cmd.as_std_mut())
    }

    /// The spawn hook of the `bash` prop: its commands start through [`Sandbox::spawn`].
    pub fn spawn_hook(self: &Arc<Self>) -> crate::spawn::Spawner {
        crate::spawn::Spawner(self.clone())
    }

    /// Kills every process group this sandbox started that still has members: the end of the
    /// performance. Sandboxed processes cannot leave their group (seccomp denies `setsid` and
    /// `setpgid`), so this reaches everything they started, `nohup`ed or not.
    pub fn reap(&self) -> usize {
        kill_all(&self.groups, self.cgroup.as_deref())
    }
}

/// How a command enters its namespaces ([`Sandbox::prepare`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Makes its own and guards every target in them: a forked child, which may run as another
    /// user (`run_as`) that could not join improv's.
    Make,
    /// Joins the performance's [`namespace::Template`]: a command started without `fork`.
    Join,
}

/// What a sandboxed child does between its start and `exec`, all of it prepared before the child
/// starts ([`Sandbox::prepare`]), so that [`Prepared::enter`] only makes system calls.
pub(crate) struct Prepared {
    /// The write end of the pipe each child writes its pid (its process group) into.
    registry: Arc<OwnedFd>,
    cgroup: Option<Arc<PerformanceCgroup>>,
    limits: [Rlimit; 6],
    plan: Option<Plan>,
    processes: Option<u64>,
    /// This child's copy of the Landlock ruleset; `None` when the sandbox is off.
    landlock: Option<OwnedFd>,
    filter: Option<Arc<Filters>>,
}

impl Prepared {
    /// Runs in the child before `exec`, after its stdio, user and working directory are set: its
    /// own process group (registered with the sandbox), no open file of improv's but stdio
    /// once it execs ([`close_inherited_on_exec`]), the performance's cgroup, resource
    /// limits, the user and mount namespace, no capabilities, Landlock with `no_new_privs`, and
    /// seccomp last. System calls only: no allocation, and nothing written to memory, so it is
    /// safe in the child of a multi-threaded process, forked or sharing its memory
    /// ([`Sandbox::spawn`]). `Err` names the step that failed.
    pub(crate) fn enter(&self) -> Result<(), namespace::Failed> {
        // SAFETY: setpgid, getpid and write are async-signal-safe; the registry fd is kept
        // open by the Arc this value holds.
        unsafe {
            // A command outside a group of its own would escape `Sandbox::reap`.
            if libc::setpgid(0, 0) != 0 {
                return Err((c"setpgid", last_errno()));
            }
            let pid = libc::getpid().to_ne_bytes();
            libc::write(self.registry.as_raw_fd(), pid.as_ptr().cast(), pid.len());
        }
        close_inherited_on_exec();
        if let Some(cgroup) = &self.cgroup {
            for join in cgroup.joins() {
                // `prepare` opened every one; fail closed all the same.
                let join =
                    join.ok_or((c"joining the performance's cgroup", rustix::io::Errno::BADF))?;
                rustix::io::write(join, b"0")
                    .map_err(|e| (c"joining the performance's cgroup", e))?;
            }
        }
        for (resource, value) in self.limits.iter().flatten() {
            if self.plan.is_some() && *resource == libc::RLIMIT_NPROC {
                // Set inside the user namespace below, where it counts this command only.
                continue;
            }
            let limit = libc::rlimit {
                rlim_cur: *value,
                rlim_max: *value,
            };
            // SAFETY: setrlimit reads the struct we pass; it is async-signal-safe.
            if unsafe { libc::setrlimit(*resource, &limit) } != 0 {
                return Err((c"setrlimit", last_errno()));
            }
        }
        if let Some(plan) = &self.plan {
            namespace::enter(plan)?;
            if let Some(max) = self.processes {
                use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
                let value = getrlimit(Resource::Nproc)
                    .maximum
                    .map_or(max, |hard| max.min(hard));
                let limit = Rlimit {
                    current: Some(value),
                    maximum: Some(value),
                };
                setrlimit(Resource::Nproc, limit).map_err(|e| (c"setrlimit(RLIMIT_NPROC)", e))?;
            }
        }
        drop_capabilities();
        if let Some(ruleset) = &self.landlock {
            // What `RulesetCreated::restrict_self` does, without consuming the ruleset (it is
            // the parent's memory when the child shares it).
            // SAFETY: prctl with integer arguments.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err((c"prctl(PR_SET_NO_NEW_PRIVS)", last_errno()));
            }
            // SAFETY: landlock_restrict_self takes a ruleset fd, open while `self` lives, and
            // flags.
            let restricted =
                unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset.as_raw_fd(), 0) };
            if restricted != 0 {
                return Err((c"Landlock", last_errno()));
            }
        }
        if let Some(filter) = &self.filter
            && seccompiler::apply_filter(&filter.program).is_err()
        {
            return Err((c"seccomp", last_errno()));
        }
        Ok(())
    }
}

/// Marks every file descriptor above stdio close-on-exec, so that a command keeps none of
/// improv's open files but its stdin, stdout and stderr: one a library or another thread opened
/// without `O_CLOEXEC` (a pipe, a file outside the workspace, a socket) would otherwise be the
/// command's, past Landlock, which checks paths only when a file is opened. They stay open until
/// `exec`, so the steps after this one keep theirs. `close_range` (Linux 5.11) does it in one
/// call; where it is missing or refused (an older kernel, a container's seccomp profile) one
/// `fcntl` goes to every number below the open-file limits, soft or hard (a descriptor cannot be
/// numbered above the limit it was opened under; `improv serve` raises the soft one to the hard
/// one): slow (about 0.1 s per million), but no descriptor is left out.
fn close_inherited_on_exec() {
    // SAFETY: close_range, getrlimit and fcntl take integers and a struct we own; all are
    // async-signal-safe and allocate nothing.
    unsafe {
        let flags = libc::CLOSE_RANGE_CLOEXEC as libc::c_int;
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, flags) == 0 {
            return;
        }
        let mut limit: libc::rlimit = std::mem::zeroed();
        // Linux's default ceiling for any process's descriptors (`fs.nr_open`) when the limits
        // cannot be read.
        let mut max: libc::rlim_t = 1 << 20;
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            max = limit.rlim_cur.max(limit.rlim_max);
        }
        let max = libc::c_int::try_from(max).unwrap_or(libc::c_int::MAX);
        for fd in 3..max {
            let now = libc::fcntl(fd, libc::F_GETFD);
            if now >= 0 && now & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, now | libc::FD_CLOEXEC);
            }
        }
    }
}

/// The calling thread's `errno`, as rustix names it, after a call that failed; `EIO` when it
/// says no error (rustix has no `Errno` for 0).
pub(crate) fn last_errno() -> rustix::io::Errno {
    match io::Error::last_os_error().raw_os_error() {
        Some(raw) if raw > 0 => rustix::io::Errno::from_raw_os_error(raw),
        _ => rustix::io::Errno::IO,
    }
}

/// Kills every process the sandbox started: its cgroup's, and every process group it
/// started that still has members; how many groups that was.
fn kill_all(groups: &Groups, cgroup: Option<&PerformanceCgroup>) -> usize {
    groups.drain();
    if let Some(cgroup) = cgroup {
        cgroup.kill_all();
    }
    let started = std::mem::take(&mut *groups.lock());
    let mut killed = 0;
    for pgid in started {
        // SAFETY: killpg only sends a signal. A group whose members all died fails with
        // ESRCH. A pgid is only reused once its group is empty and the pid space wrapped.
        if unsafe { libc::killpg(pgid, libc::SIGKILL) } == 0 {
            killed += 1;
        }
    }
    killed
}

/// The performance's processes, as the disk watchdog sees them.
struct Processes {
    groups: Arc<Groups>,
    cgroup: Option<Arc<PerformanceCgroup>>,
}

impl Performers for Processes {
    fn started(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.groups.pipe.get().map(|p| p.reader.as_fd())
    }

    fn running(&self) -> bool {
        self.groups.drain();
        !self.groups.lock().is_empty()
    }

    fn kill(&self) -> usize {
        kill_all(&self.groups, self.cgroup.as_deref())
    }
}

/// What bounds the space the performance's commands write, for [`Sandbox::describe`].
fn describe_disk(limit: &DiskLimit) -> String {
    let mib = |b: &Option<u64>| b.map(|b| b >> 20);
    match limit {
        DiskLimit::Watched { total, floor, .. } => {
            let mut bounds = Vec::new();
            if let Some(max) = mib(total) {
                bounds.push(format!(
                    "at most {max} MiB of the workspace's filesystem consumed (a bound on its free space, so other processes' writes there count too)"
                ));
            }
            if let Some(floor) = mib(floor) {
                bounds.push(format!("at least {floor} MiB of it left free"));
            }
            format!(
                ", {}: checked every {} ms while a command runs, past it every command of the performance is killed (a fast writer can go past it by what it writes in that time) and new ones are refused until space is freed",
                bounds.join(" and "),
                crate::disk::POLL.as_millis()
            )
        }
        DiskLimit::NotEnforced { reason } => format!(
            ", what the performance writes into the workspace is not bounded in total ({reason})"
        ),
        DiskLimit::Unlimited => {
            String::from(", what the performance writes into the workspace is not bounded in total")
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.reap();
    }
}

/// Empties the capability bounding set and the ambient set, so that whatever the child execs
/// has no capabilities, even as uid 0: no reading other processes' memory or environment
/// through `/proc`, no bypassing file permissions. Fails silently where the caller has no
/// capabilities to drop (a normal user, or after `run_as`). Async-signal-safe: prctl only.
fn drop_capabilities() {
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments; an unknown capability fails with EINVAL.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            // Every later one fails too: EPERM is the missing CAP_SETPCAP, EINVAL a number past
            // the kernel's last capability. Stopping saves ~23 calls a command (64 unprivileged).
            if matches!(
                last_errno(),
                rustix::io::Errno::PERM | rustix::io::Errno::INVAL
            ) {
                break;
            }
        }
    }
    // SAFETY: as above.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
    }
}

/// Writes `improv sandbox: <step> failed` to the child's stderr and returns `errno` as the
/// error; no allocation.
fn step_failed(step: &std::ffi::CStr, errno: rustix::io::Errno) -> io::Error {
    for part in [&b"improv sandbox: "[..], step.to_bytes(), &b" failed\n"[..]] {
        // SAFETY: write is async-signal-safe; fd 2 is the child's stderr.
        unsafe {
            libc::write(2, part.as_ptr().cast(), part.len());
        }
    }
    io::Error::from_raw_os_error(errno.raw_os_error())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every value guarded here stays valid if a holder panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Namespaces {
    /// The namespaces where the kernel allows them (probed), scanned once; `None`, with a note
    /// of what commands can then reach, where not.
    fn new(
        config: &SandboxConfig,
        workspace: &Path,
        hidden: HiddenGlobs,
        read_only: namespace::Globs,
        notes: &mut Vec<String>,
    ) -> Result<Option<Self>, SandboxError> {
        let covers = Covers::new().map_err(SandboxError::TempDir)?;
        let probed = if config.user_namespaces {
            namespace::probe(&covers, config.run_as)
        } else {
            Err("turned off in the sandbox's configuration".to_string())
        };
        if let Err(reason) = probed {
            notes.push(format!(
                "no user namespaces ({reason}): hidden files ({}) are only hidden from the file props, and control files and improv's state are NOT protected from commands: a command can read the hidden files and change the control files and improv's state",
                hidden.text()
            ));
            return Ok(None);
        }
        let fixed = namespace::Fixed::new(
            workspace,
            &config.workspace,
            &config.protected,
            &config.concealed,
        );
        let tracked = namespace::tracked_hidden(workspace, &hidden);
        let scanner = namespace::Scanner::new(
            workspace.to_path_buf(),
            hidden,
            read_only,
            fixed.concealed.clone(),
        );
        let ns = Namespaces {
            covers,
            fixed,
            scanner: Mutex::new(scanner),
            last: Mutex::new(Ok(Default::default())),
            tracked,
            template: Mutex::new(None),
        };
        // A workspace improv cannot guard shows in `describe`; commands are refused until then.
        let _ = ns.rescan();
        match &ns.tracked {
            Ok(files) if files.is_empty() => {}
            Ok(files) => notes.push(format!(
                "hidden files tracked by git are readable to commands through git's objects (`git show HEAD:<path>`): {}; remove them from git (and its history) to hide them",
                files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
            )),
            Err(reason) => notes.push(format!(
                "could not list the files git tracks ({reason}): hidden files committed to git would be readable to commands through git's objects"
            )),
        }
        Ok(Some(ns))
    }

    /// Scans the workspace again (only the folders changed since are read) and keeps the
    /// result: the paths every command started from now on guards.
    fn rescan(&self) -> Result<namespace::Targets, SandboxError> {
        let scanned = lock(&self.scanner).scan();
        let result = scanned.and_then(|scan| {
            let targets = self.fixed.targets(&scan)?;
            Ok((Arc::new(targets), scan))
        });
        let out = match &result {
            Ok((targets, _)) => Ok(targets.clone()),
            Err(e) => Err(SandboxError::Scan(e.clone())),
        };
        *lock(&self.last) = result;
        out
    }

    /// The template that guards `plan`'s targets: the last one while it holds, else a new one.
    fn template(&self, plan: &Plan) -> Result<Arc<namespace::Template>, SandboxError> {
        let mut last = lock(&self.template);
        if let Some(template) = last.as_ref()
            && template.holds(&plan.targets)
        {
            return Ok(template.clone());
        }
        // The old one goes first: its namespaces are freed while no command waits.
        *last = None;
        let made =
            namespace::Template::make(plan).map_err(|(step, errno)| SandboxError::Start {
                step: format!(
                    "preparing the namespaces commands join: {}",
                    step.to_string_lossy()
                ),
                source: errno.into(),
            })?;
        let made = Arc::new(made);
        *last = Some(made.clone());
        Ok(made)
    }

    /// What every command's namespace guards, and its limits, for [`Sandbox::describe`].
    fn describe(&self) -> String {
        let last = lock(&self.last);
        let (hidden, read_only) = match &*last {
            Ok((_, scan)) => (scan.hidden.len(), scan.read_only.len()),
            Err(_) => (0, 0),
        };
        let mut line = format!(
            ", own user namespace per command, in a mount namespace whose workspace is guarded as scanned just before the command starts: {hidden} hidden path(s) covered (names matched whatever their ASCII case; no folder skipped; a file named only like key material, `*.pem` or `*.key`, only when it holds a private key or cannot be checked, so certificates and CA bundles stay readable), {read_only} path(s) matching `read_only` and {} control file(s) read-only, improv's state ({}) covered; none of them can be changed, renamed, removed or replaced by a command (mount points), nor the folders above them (so removing a folder that holds one fails), and a hidden file cannot be moved out from under its cover; one moved by something outside the sandbox is covered where it is at the next command (limits: a command's covers are those of its start, so what gets a hidden name or becomes a private key while it runs stays readable to it; symlinks are not followed by the scan, and a protected symlink guards its target, not the link; control files missing at a command's start are not guarded for it)",
            self.fixed.protected.len(),
            if self.fixed.concealed.is_empty() {
                "none named".to_string()
            } else {
                self.fixed
                    .concealed
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        );
        if let Err(e) = &*last {
            line.push_str(&format!("; COMMANDS ARE REFUSED: {e}"));
        }
        line
    }
}

type Rlimit = Option<(libc::__rlimit_resource_t, libc::rlim_t)>;

fn rlimits(limits: &Limits) -> [Rlimit; 6] {
    let l = |resource, value: Option<u64>| value.map(|v| (resource, v as libc::rlim_t));
    [
        l(libc::RLIMIT_CPU, limits.cpu_seconds),
        l(libc::RLIMIT_AS, limits.memory_bytes),
        l(libc::RLIMIT_NOFILE, limits.open_files),
        l(libc::RLIMIT_NPROC, limits.processes),
        l(libc::RLIMIT_FSIZE, limits.file_size_bytes),
        l(libc::RLIMIT_CORE, Some(0)),
    ]
}

/// The process groups the sandbox started. Each child writes its pid (its pgid) into a
/// non-blocking pipe before `exec`; the parent drains it. The pipe is opened by the first
/// command ([`Groups::pipe`]): a performance that runs none (one of thousands waiting on a model
/// in a worker) holds no fd for it.
#[derive(Default)]
struct Groups {
    pipe: OnceLock<Pipe>,
    seen: Mutex<Vec<libc::pid_t>>,
}

/// The two ends of [`Groups`]' pipe.
struct Pipe {
    reader: OwnedFd,
    writer: Arc<OwnedFd>,
}

impl Groups {
    /// The pipe, opened on first use.
    fn pipe(&self) -> io::Result<&Pipe> {
        if let Some(pipe) = self.pipe.get() {
            return Ok(pipe);
        }
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills the two-element array we pass.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both are open fds that we now own.
        let (reader, writer) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let made = Pipe {
            reader,
            writer: Arc::new(writer),
        };
        // Another thread may have opened one meanwhile: its pipe is kept, this one closed.
        Ok(self.pipe.get_or_init(|| made))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<libc::pid_t>> {
        // A panic while holding the lock leaves a valid list.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the pids written so far into the list.
    fn drain(&self) {
        let Some(pipe) = self.pipe.get() else {
            // No command started: nothing to take in.
            return;
        };
        let mut buf = [0u8; 4096];
        let mut seen = self.lock();
        loop {
            // SAFETY: reads at most buf.len() bytes into buf from our non-blocking pipe.
            let n =
                unsafe { libc::read(pipe.reader.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            // Writes of 4 bytes are atomic on a pipe, so reads come in whole pids.
            for pid in buf[..n as usize].chunks_exact(4) {
                let pid = libc::pid_t::from_ne_bytes([pid[0], pid[1], pid[2], pid[3]]);
                seen.push(pid);
            }
        }
        // Forget groups that are gone, so the list stays short in a long performance.
        // SAFETY: kill with signal 0 only checks that the group exists.
        seen.retain(|&pgid| unsafe { libc::killpg(pgid, 0) } == 0);
    }
}

/// Read access to system paths: read files, list and execute.
fn read_access() -> landlock::BitFlags<AccessFs> {
    AccessFs::from_read(LANDLOCK_ABI)
}

/// Whether this kernel has Landlock, as [`landlock_ruleset`] requires it: probed (a ruleset
/// made and closed) until the answer is known, so that [`Sandbox::new`] refuses a sandbox it
/// could not enforce without building the whole ruleset. Only a lasting answer is kept: a
/// probe that failed for a passing reason (no descriptor or memory to spare) refuses this
/// sandbox only, and the next one probes again.
fn landlock_usable() -> Result<(), SandboxError> {
    static PROBED: OnceLock<Result<(), String>> = OnceLock::new();
    if let Some(known) = PROBED.get() {
        return known
            .clone()
            .map_err(|reason| SandboxError::Unsupported { reason });
    }
    let probe = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .and_then(|r| r.create())
        .map(drop);
    let known = match probe {
        Ok(()) => Ok(()),
        Err(e) => Err(unsupported_or_passing(e)?),
    };
    PROBED
        .get_or_init(|| known)
        .clone()
        .map_err(|reason| SandboxError::Unsupported { reason })
}

/// A Landlock error that says the kernel lacks Landlock (what for [`SandboxError::Unsupported`]),
/// or, as `Err`, one that a later try may not meet: `landlock_create_ruleset` failing other than
/// with `ENOSYS` or `EOPNOTSUPP` (`EMFILE`, `ENOMEM`...).
fn unsupported_or_passing(e: landlock::RulesetError) -> Result<String, SandboxError> {
    use landlock::{CreateRulesetError, RulesetError};
    match e {
        RulesetError::CreateRuleset(CreateRulesetError::CreateRulesetCall { source, .. })
            if !matches!(source.raw_os_error(), Some(libc::ENOSYS | libc::EOPNOTSUPP)) =>
        {
            Err(SandboxError::Prepare(io::Error::new(
                source.kind(),
                format!("could not create the Landlock ruleset: {source}"),
            )))
        }
        e => Ok(e.to_string()),
    }
}

fn landlock_ruleset(
    config: &SandboxConfig,
    workspace: &Path,
    temp: &Path,
) -> Result<RulesetCreated, SandboxError> {
    let unsupported = |e: landlock::RulesetError| match unsupported_or_passing(e) {
        Ok(reason) => SandboxError::Unsupported { reason },
        Err(passing) => passing,
    };
    // Landlock itself is a hard requirement; the rights of newer ABIs are best effort.
    let ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(ABI::V1))
        .map_err(unsupported)?
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(LANDLOCK_ABI))?
        .scope(Scope::from_all(LANDLOCK_ABI))?;
    let ruleset = if config.network {
        ruleset
    } else {
        ruleset.handle_access(AccessNet::from_all(LANDLOCK_ABI))?
    };
    let mut created = ruleset.create().map_err(unsupported)?;
    let mut read_only: Vec<PathBuf> = config
        .system_read_only
        .iter()
        .chain(&config.read_only)
        .cloned()
        .collect();
    read_only.extend(etc_entries(Path::new("/etc"), &config.etc_hidden));
    created = created.add_rules(path_beneath_rules(&read_only, read_access()))?;
    let devices = ["/dev/null", "/dev/zero", "/dev/tty"];
    created = created.add_rules(path_beneath_rules(
        devices,
        AccessFs::from_file(LANDLOCK_ABI),
    ))?;
    let mut read_write = vec![workspace.to_path_buf(), temp.to_path_buf()];
    read_write.extend(config.read_write.iter().cloned());
    created = created.add_rules(path_beneath_rules(
        &read_write,
        AccessFs::from_all(LANDLOCK_ABI),
    ))?;
    Ok(created)
}

/// What of `/etc` may be read: every entry except the hidden ones, descending only into
/// folders that hold a hidden entry (Landlock allows by subtree and cannot subtract).
fn etc_entries(etc: &Path, hidden: &[PathBuf]) -> Vec<PathBuf> {
    fn walk(dir: &Path, rel: &Path, hidden: &[PathBuf], out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let rel = rel.join(entry.file_name());
            if hidden.contains(&rel) {
                continue;
            }
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && hidden.iter().any(|h| h.starts_with(&rel)) {
                walk(&entry.path(), &rel, hidden, out);
            } else {
                out.push(entry.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(etc, Path::new(""), hidden, &mut out);
    out
}

/// How many sweeps of what crashed improv processes left this process has run: one at its
/// first sandbox, then one every [`LEFTOVER_SWEEP_EVERY`], whatever the number of sandboxes.
pub fn leftover_sweeps() -> usize {
    scratch::sweeps_run()
}

/// How often a process that builds sandboxes sweeps crashed processes' leftovers again.
pub const LEFTOVER_SWEEP_EVERY: std::time::Duration = scratch::SWEEP_EVERY;

/// The uid that owns `path`: a workspace owner to [`SandboxConfig::run_as`].
pub fn owner(path: &Path) -> io::Result<(u32, u32)> {
    let meta = std::fs::metadata(path)?;
    Ok((meta.uid(), meta.gid()))
}

/// The performance's cgroup and what it bounds: the process count for uid 0 (for whom the
/// kernel ignores `RLIMIT_NPROC`; other uids are bounded per command or per uid by the rlimit)
/// and the memory of all the commands together. Why a bound does not hold goes in `notes` when
/// the director should act on it.
fn performance_cgroup(
    limits: &Limits,
    uid: u32,
    namespaces: bool,
    notes: &mut Vec<String>,
) -> (Option<Arc<PerformanceCgroup>>, ProcessLimit, MemoryLimit) {
    let bounds = Bounds {
        pids: limits.processes.filter(|_| uid == 0),
        memory: limits.memory_bytes_total,
    };
    let (cgroup, outcome) = PerformanceCgroup::create(bounds);
    let process_limit = match (limits.processes, outcome.pids) {
        (None, _) => ProcessLimit::Unlimited,
        (Some(max), Some(Ok(cgroup))) => ProcessLimit::PerPerformance { max, cgroup },
        (Some(_), Some(Err(reason))) => {
            notes.push(format!(
                "commands run as root and no pids cgroup could be made ({reason}): the process limit is not enforced, so a fork bomb runs until the command times out; set run_as to an unprivileged uid, or give improv a writable pids cgroup"
            ));
            ProcessLimit::NotEnforced { reason }
        }
        (Some(max), None) if namespaces => ProcessLimit::PerCommand(max),
        (Some(max), None) => ProcessLimit::PerUser(max),
    };
    let memory_limit = match (limits.memory_bytes_total, outcome.memory) {
        (Some(max), Some(Ok(cgroup))) => MemoryLimit::PerPerformance { max, cgroup },
        (Some(_), Some(Err(reason))) => MemoryLimit::NotEnforced { reason },
        _ => MemoryLimit::Unlimited,
    };
    (cgroup.map(Arc::new), process_limit, memory_limit)
}

/// The seccomp program: denies (EPERM) what a command never needs and an escape would.
fn seccomp_program(network: bool) -> Result<Filters, SandboxError> {
    let arch = seccomp::audit_arch().ok_or_else(|| {
        SandboxError::Seccomp(format!(
            "no seccomp program for {}: run with sandbox = \"off\" on this architecture",
            std::env::consts::ARCH
        ))
    })?;
    let nr = |call: i64| u32::try_from(call).unwrap_or(u32::MAX);
    let mut rules: BTreeMap<u32, Verdict> = BTreeMap::new();
    for call in DENIED {
        rules.insert(nr(call), Verdict::Refuse(libc::EPERM as u32));
    }
    // Sockets: none without network; never raw packet sockets. Without network no socket at
    // all: a pathname Unix socket outside the workspace (a docker or D-Bus socket, any
    // listener) reaches out as surely as TCP. `socketpair` stays: its two ends are the caller's
    // own and connect to nothing else.
    let socket = if network {
        Verdict::RefuseIfArgIs(libc::AF_PACKET as u32)
    } else {
        Verdict::Refuse(libc::EPERM as u32)
    };
    rules.insert(nr(libc::SYS_socket), socket);
    // clone with a namespace flag; clone3 cannot be inspected (its flags are in memory), so it
    // gets ENOSYS, and libc falls back to clone, which is.
    let namespaces = NAMESPACE_FLAGS.iter().fold(0u32, |all, f| all | *f as u32);
    rules.insert(nr(libc::SYS_clone), Verdict::RefuseIfArgHas(namespaces));
    rules.insert(nr(libc::SYS_clone3), Verdict::Refuse(libc::ENOSYS as u32));
    rules.insert(
        nr(libc::SYS_ioctl),
        Verdict::RefuseIfArg1In(&TERMINAL_INPUT),
    );
    let program = seccomp::compile(arch, &rules).map_err(|seccomp::TooLarge| {
        SandboxError::Seccomp("the seccomp program is too large for classic BPF".into())
    })?;
    Ok(Filters { program })
}

/// The seccomp program ([`crate::seccomp`]).
struct Filters {
    program: BpfProgram,
}

/// `ioctl` requests that put input into a terminal: `TIOCSTI` pushes keystrokes into improv's
/// controlling terminal (through `/dev/tty`, on kernels before 6.2 or with
/// `dev.tty.legacy_tiocsti = 1`), as if its user typed them; `TIOCLINUX` can paste the console's
/// selection. Refused whatever the terminal.
const TERMINAL_INPUT: [u32; 2] = [libc::TIOCSTI as u32, libc::TIOCLINUX as u32];

const NAMESPACE_FLAGS: [libc::c_int; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWCGROUP,
];

/// System calls a sandboxed process gets EPERM for.
const DENIED: [i64; 37] = [
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_setsid,
    libc::SYS_setpgid,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_open_by_handle_at,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_syslog,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets this process's soft open-file limit; returns the limits it had.
    fn set_open_files(soft: Option<libc::rlim_t>, back: Option<libc::rlimit>) -> libc::rlimit {
        let mut had = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit read or write the structs we pass.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut had), 0);
            let new = back.unwrap_or(libc::rlimit {
                rlim_cur: soft.unwrap_or(had.rlim_cur),
                rlim_max: had.rlim_max,
            });
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &new), 0);
        }
        had
    }

    // In a process of its own (this test binary run again for this test alone): it takes away
    // every file descriptor, and the probe's answer is kept for the whole process.
    #[test]
    fn a_landlock_probe_failing_for_want_of_descriptors_is_not_kept_as_unsupported() {
        const CHILD: &str = "IMPROV_EDGES_LANDLOCK_TEST_CHILD";
        let name = "sandbox::tests::a_landlock_probe_failing_for_want_of_descriptors_is_not_kept_as_unsupported";
        if !crate::child_test::in_child(name, CHILD) {
            return;
        }
        let had = set_open_files(Some(0), None);
        let starved = landlock_usable();
        set_open_files(None, Some(had));
        match starved {
            Err(SandboxError::Prepare(e)) => {
                let said = e.to_string();
                assert!(
                    said.contains("Landlock") && said.contains("os error 24"),
                    "{said}"
                );
            }
            other => panic!("no descriptor to spare was taken for no Landlock: {other:?}"),
        }
        // This machine's kernel has Landlock (the sandbox tests need it): with descriptors back,
        // the next probe finds it.
        landlock_usable().expect("Landlock, once a descriptor can be made");
    }

    /// The two programs seccompiler built for the same rules before [`crate::seccomp`].
    fn seccompiler_programs(network: bool) -> Result<(BpfProgram, BpfProgram), SandboxError> {
        use seccompiler::{
            SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
            SeccompRule, TargetArch,
        };
        let err = |e: seccompiler::BackendError| SandboxError::Seccomp(e.to_string());
        let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(err)?;
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for nr in DENIED {
            rules.insert(nr, Vec::new());
        }
        // Sockets: none without network; never raw packet sockets.
        let domain = |op, value| {
            SeccompCondition::new(0, SeccompCmpArgLen::Dword, op, value)
                .and_then(|c| SeccompRule::new(vec![c]))
                .map_err(err)
        };
        // Without network no socket at all: a pathname Unix socket outside the workspace (a docker
        // or D-Bus socket, any listener) reaches out as surely as TCP. `socketpair` stays: its two
        // ends are the caller's own and connect to nothing else.
        if network {
            rules.insert(
                libc::SYS_socket,
                vec![domain(SeccompCmpOp::Eq, libc::AF_PACKET as u64)?],
            );
        } else {
            rules.insert(libc::SYS_socket, Vec::new());
        }
        // clone with a namespace flag (clone3 cannot be inspected, so it is refused below with
        // ENOSYS and libc falls back to clone).
        let mut clone = Vec::new();
        for flag in NAMESPACE_FLAGS {
            let flag = flag as u64;
            clone.push(
                SeccompCondition::new(
                    0,
                    SeccompCmpArgLen::Qword,
                    SeccompCmpOp::MaskedEq(flag),
                    flag,
                )
                .and_then(|c| SeccompRule::new(vec![c]))
                .map_err(err)?,
            );
        }
        rules.insert(libc::SYS_clone, clone);
        let mut ioctl = Vec::new();
        for request in TERMINAL_INPUT {
            ioctl.push(
                SeccompCondition::new(1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, request.into())
                    .and_then(|c| SeccompRule::new(vec![c]))
                    .map_err(err)?,
            );
        }
        rules.insert(libc::SYS_ioctl, ioctl);
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )
        .map_err(err)?;
        let main: BpfProgram = filter.try_into().map_err(err)?;
        // clone3 gets ENOSYS rather than EPERM: libc then falls back to clone, which is inspected.
        let clone3 = SeccompFilter::new(
            BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )
        .map_err(err)?;
        let clone3: BpfProgram = clone3.try_into().map_err(err)?;
        Ok((main, clone3))
    }

    #[test]
    fn the_seccomp_program_answers_every_call_as_seccompilers_two_did() {
        let arch = seccomp::audit_arch().unwrap();
        let mut args: Vec<u64> = vec![0, 1, 2, 10, 17, u64::MAX, 1 << 32 | 17, 0x11 | 0x100];
        args.extend(NAMESPACE_FLAGS.iter().map(|f| *f as u64));
        args.extend(NAMESPACE_FLAGS.iter().map(|f| *f as u64 | 0x11));
        // TIOCSTI and TIOCLINUX as the kernel's asm-generic/ioctls.h numbers them.
        let (tiocsti, tioclinux) = (0x5412u64, 0x541cu64);
        let requests = [0, tiocsti, tioclinux, tiocsti | 1 << 32, 0x5413];
        for network in [false, true] {
            let (main, clone3) = seccompiler_programs(network).unwrap();
            let new = seccomp_program(network).unwrap().program;
            for nr in 0..1024 {
                for arg in &args {
                    for arg1 in requests {
                        let call = [*arg, arg1];
                        let first = seccomp::run(&main, arch, nr, call);
                        let second = seccomp::run(&clone3, arch, nr, call);
                        // The filter installed last wins among refusals.
                        let old = if second != 0x7fff_0000 { second } else { first };
                        let now = seccomp::run(&new, arch, nr, call);
                        assert_eq!(
                            now, old,
                            "call {nr}, arguments {arg:#x} {arg1:#x}, network {network}"
                        );
                    }
                }
            }
            // The terminal's input requests are refused to ioctl, whatever the high bits.
            let ioctl = libc::SYS_ioctl as u32;
            for request in [tiocsti, tioclinux] {
                for high in [0, 1 << 32] {
                    let call = [0, request | high];
                    assert_eq!(seccomp::run(&new, arch, ioctl, call), 0x0005_0000 | 1);
                }
            }
            assert_eq!(seccomp::run(&new, arch, ioctl, [0, 0x5413]), 0x7fff_0000);
            // Another architecture's calls kill the process, as before; x32 calls (which
            // seccompiler's program let through) are refused.
            assert_eq!(seccomp::run(&new, 0x4000_0003, 0, [0, 0]), 0x8000_0000);
            if std::env::consts::ARCH == "x86_64" {
                let ptrace = 0x4000_0000 | libc::SYS_ptrace as u32;
                assert_eq!(seccomp::run(&new, arch, ptrace, [0, 0]), 0x0005_0000 | 1);
            }
        }
    }

    /// Runs `script` with bash in a sandbox for `ws`: (exit code, stdout + stderr).
    fn run(sandbox: &Sandbox, script: &str) -> (i32, String) {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg("-c").arg(script);
        sandbox.apply(&mut cmd).unwrap();
        let out = cmd.output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    struct Dirs {
        _root: tempfile::TempDir,
        ws: PathBuf,
        outside: PathBuf,
    }

    fn dirs() -> Dirs {
        let root = tempfile::tempdir().unwrap();
        let base = root.path().canonicalize().unwrap();
        let (ws, outside) = (base.join("ws"), base.join("outside"));
        std::fs::create_dir_all(&ws).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "s3cret").unwrap();
        Dirs {
            _root: root,
            ws,
            outside,
        }
    }

    #[test]
    fn the_workspace_and_temp_are_writable_and_nothing_else() {
        let d = dirs();
        let sandbox = Sandbox::new(SandboxConfig::new(&d.ws)).unwrap();
        assert!(sandbox.is_enforced());
        let (code, out) = run(
            &sandbox,
            "echo a > f && cat f && echo b > $TMPDIR/t && cat $TMPDIR/t && pwd",
        );
        assert_eq!(code, 0, "{out}");
        assert_eq!(out, format!("a\nb\n{}\n", d.ws.display()));
        let (code, out) = run(&sandbox, &format!("cat {}/secret", d.outside.display()));
        assert_ne!(code, 0);
        assert!(out.contains("Permission denied"), "{out}");
        let (code, out) = run(&sandbox, &format!("touch {}/new", d.outside.display()));
        assert_ne!(code, 0, "{out}");
        assert!(!d.outside.join("new").exists());
    }

    #[test]
    fn with_the_sandbox_off_the_same_reads_succeed() {
        // The control for the test above: the denial comes from the sandbox, not the setup.
        let d = dirs();
        let mut config = SandboxConfig::new(&d.ws);
        config.mode = SandboxMode::Off;
        let sandbox = Sandbox::new(config).unwrap();
        assert!(!sandbox.is_enforced());
        assert!(sandbox.describe().starts_with("sandbox off"));
        let (code, out) = run(&sandbox, &format!("cat {}/secret", d.outside.display()));
        assert_eq!((code, out.as_str()), (0, "s3cret"));
        // The environment allowlist holds even with the sandbox off.
        let (_, out) = run(&sandbox, "env");
        assert!(!out.contains("CARGO_PKG_NAME"), "{out}");
    }

    #[test]
    fn sockets_are_refused_and_socketpairs_allowed() {
        let d = dirs();
        let sandbox = Sandbox::new(SandboxConfig::new(&d.ws)).unwrap();
        for family in ["AF_INET", "AF_UNIX"] {
            let (code, out) = run(
                &sandbox,
                &format!(
                    "python3 -c 'import socket; a, b = socket.socketpair(); a.send(b\"x\"); print(\"pair\", b.recv(1)); socket.socket(socket.{family})'"
                ),
            );
            assert_ne!(code, 0, "{family}: {out}");
            assert!(
                out.contains("pair b'x'") && out.contains("PermissionError"),
                "{family}: {out}"
            );
        }
    }

    #[test]
    fn children_have_no_capabilities_and_no_new_privileges() {
        let d = dirs();
        let sandbox = Sandbox::new(SandboxConfig::new(&d.ws)).unwrap();
        let (code, out) = run(
            &sandbox,
            "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status",
        );
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
        assert!(out.contains("CapBnd:\t0000000000000000"), "{out}");
        assert!(out.contains("NoNewPrivs:\t1"), "{out}");
        assert!(out.contains("Seccomp:\t2"), "{out}");
    }

    #[test]
    fn etc_is_readable_except_its_secrets() {
        let entries = etc_entries(Path::new("/etc"), &SandboxConfig::new("/").etc_hidden);
        assert!(entries.iter().any(|p| p == Path::new("/etc/passwd")));
        for hidden in ["/etc/shadow", "/etc/gshadow", "/etc/ssh", "/etc/sudoers"] {
            assert!(!entries.iter().any(|p| p == Path::new(hidden)), "{hidden}");
        }
    }

    #[test]
    fn a_missing_workspace_is_a_clear_error() {
        let err = Sandbox::new(SandboxConfig::new("/nonexistent/improv-ws")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/improv-ws"), "{err}");
    }

    #[test]
    fn every_started_group_is_reaped() {
        let d = dirs();
        let sandbox = Sandbox::new(SandboxConfig::new(&d.ws)).unwrap();
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("1000");
        sandbox.apply(&mut cmd).unwrap();
        let mut child = cmd.spawn().unwrap();
        assert_eq!(sandbox.reap(), 1);
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn hidden_files_in_the_workspace_are_unreadable_to_commands() {
        let d = dirs();
        for (rel, text) in [
            (".env", "dotenv-secret"),
            ("config/.env.local", "local-secret"),
            ("certs/server.pem", "pem-secret"),
            ("secrets/db.txt", "folder-secret"),
            ("target/.ENV", "build-output"),
            ("src/main.rs", "fn main() {}"),
        ] {
            let p = d.ws.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        let mut config = SandboxConfig::new(&d.ws);
        config.hidden.push("secrets/".into());
        let sandbox = Sandbox::new(config).unwrap();
        let covered = sandbox.covered().expect("user namespaces on this kernel");
        assert_eq!(covered.len(), 5, "{covered:?}");
        assert!(
            sandbox.describe().contains("5 hidden path(s)"),
            "{}",
            sandbox.describe()
        );
        for (script, secret) in [
            ("cat .env", "dotenv-secret"),
            ("cat config/.env.local", "local-secret"),
            ("cat certs/server.pem", "pem-secret"),
            ("cat secrets/db.txt; ls secrets", "folder-secret"),
            // Build output is scanned too, and names match whatever their case.
            ("cat target/.ENV", "build-output"),
        ] {
            let (code, out) = run(&sandbox, script);
            assert_ne!(code, 0, "{script}: {out}");
            assert!(out.contains("Permission denied"), "{script}: {out}");
            assert!(!out.contains(secret), "{script}: {out}");
        }
        let (code, out) = run(&sandbox, "cat src/main.rs");
        assert_eq!((code, out.as_str()), (0, "fn main() {}"));
        // The file is there on disk, unchanged.
        assert_eq!(
            std::fs::read_to_string(d.ws.join(".env")).unwrap(),
            "dotenv-secret"
        );
    }

    #[test]
    fn without_user_namespaces_hidden_files_are_only_hidden_from_the_file_props() {
        // The fallback when the kernel refuses user namespaces, and what it tells the director.
        let d = dirs();
        std::fs::write(d.ws.join(".env"), "dotenv-secret").unwrap();
        let mut config = SandboxConfig::new(&d.ws);
        config.user_namespaces = false;
        let sandbox = Sandbox::new(config).unwrap();
        assert!(sandbox.is_enforced());
        assert!(sandbox.covered().is_none());
        assert!(
            sandbox
                .describe()
                .contains("control files and improv's state are NOT protected from commands"),
            "{}",
            sandbox.describe()
        );
        let (code, out) = run(&sandbox, "cat .env");
        assert_eq!((code, out.as_str()), (0, "dotenv-secret"));
    }
}
