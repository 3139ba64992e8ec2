//! Starting a sandboxed command without `fork`: what the `bash` prop runs its commands through
//! ([`Sandbox::spawn_hook`]). A `pre_exec` hook makes std fork, and a fork copies improv's page
//! tables and turns its memory copy-on-write, which the child's `exec` and improv's next writes
//! then undo; `posix_spawn` avoids that with `clone(CLONE_VM | CLONE_VFORK)` but has no room
//! for the sandbox's steps. This module does the same clone itself and runs the sandbox's steps
//! (`Prepared::enter`, those a forked child of [`Sandbox::apply`] runs) in the child before
//! `exec`, but for one: it joins the mount namespace prepared for the workspace as scanned
//! rather than making its own (`namespace::Template`, made by [`in_helper`]).
//!
//! The child shares improv's memory until its `exec`, while the thread that started it waits
//! (improv's other threads run on). So it runs on a stack of its own, does only what a forked
//! child of a multi-threaded process may (system calls on what was prepared before, no
//! allocation), and writes no memory but that stack and the one failure it reports. All signals
//! are blocked around the clone, and the child resets every handler to the default before it
//! unblocks them, so no handler of improv's runs in it. The namespace flags are not passed to
//! `clone` itself: a new user namespace cannot share its creator's memory (`CLONE_VM` with
//! `CLONE_NEWUSER` is `EINVAL`), so the child calls `unshare` as a forked one does.
//!
//! The child is waited for through a pidfd (`CLONE_PIDFD`, and `waitid(P_PIDFD)` of Linux 5.4;
//! Landlock needs 5.13), which tokio polls; a [`Child`] dropped before it was waited for is
//! killed and reaped. This is written here rather than taken from a crate: the process crates
//! spawn through std or `posix_spawn`, and neither runs code of ours before `exec`.
//!
//! Some commands still start forked ([`Sandbox::apply`] and a tokio spawn, see `Way`): those
//! run as another user (`run_as`: changing ids in a child that shares improv's memory would go
//! through glibc's all-threads `setxid` and clear improv's own `dumpable` flag, which lives in
//! the shared memory), those of an improv that is not plainly dumpable (the namespace step sets
//! the flag, improv's included), and all of them on a kernel without pidfds.

use crate::namespace::Failed;
use crate::sandbox::{Entry, Prepared, Sandbox, SandboxError, last_errno};
use rustix::io::Errno;
use rustix::process::{
    DumpableBehavior, Pid, PidfdFlags, Signal, WaitId, WaitIdOptions, WaitIdStatus, WaitOptions,
};
use std::cell::Cell;
use std::ffi::{CStr, CString, OsStr};
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitStatus;
use std::sync::{Arc, OnceLock};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The child's stack until its `exec`: the sandbox's steps need a few KiB; the pages are only
/// mapped, and only those touched are ever allocated.
const STACK: usize = 512 * 1024;

/// The `bash` prop's way to start its commands in a [`Sandbox`] ([`Sandbox::spawn_hook`]).
pub struct Spawner(pub(crate) Arc<Sandbox>);

impl improv_props::Spawn for Spawner {
    fn spawn(
        &self,
        command: &mut tokio::process::Command,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> io::Result<Box<dyn improv_props::Running>> {
        let child = self
            .0
            .spawn(command.as_std(), stdout, stderr)
            .map_err(io::Error::other)?;
        Ok(Box::new(child))
    }
}

impl Sandbox {
    /// Starts `command` sandboxed, as [`Sandbox::apply`] and a spawn would, but without `fork`
    /// (see the module docs): its program and arguments, its working directory (else the
    /// workspace), the sandbox's environment (only), stdin `/dev/null`, `stdout` and `stderr`,
    /// its own process group. `Err` when the sandbox refuses the command or the child failed
    /// before `exec` (which step, and why). Call it within a tokio runtime: a command that
    /// starts forked (see the module docs) is spawned through tokio.
    pub fn spawn(
        &self,
        command: &std::process::Command,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<Child, SandboxError> {
        let dumpable = match self.way() {
            Way::Clone { dumpable } => dumpable,
            Way::Fork => return self.spawn_forked(command, stdout, stderr),
        };
        let prepared = self.prepare(Entry::Join)?;
        let cwd = command.get_current_dir().unwrap_or(self.workspace());
        let stdin = std::fs::File::open("/dev/null").map_err(SandboxError::Prepare)?;
        let stdio = [stdin.into(), stdout, stderr].map(above_stdio);
        let [stdin, stdout, stderr] = stdio;
        let (stdin, stdout, stderr) = (
            stdin.map_err(SandboxError::Prepare)?,
            stdout.map_err(SandboxError::Prepare)?,
            stderr.map_err(SandboxError::Prepare)?,
        );
        let nul = |e: std::ffi::NulError| SandboxError::Prepare(io::Error::other(e));
        let mut argv = vec![c_string(command.get_program()).map_err(nul)?];
        for arg in command.get_args() {
            argv.push(c_string(arg).map_err(nul)?);
        }
        let envp = self
            .env()
            .iter()
            .map(|(k, v)| {
                let mut pair = k.as_bytes().to_vec();
                pair.push(b'=');
                pair.extend_from_slice(v.as_bytes());
                CString::new(pair)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(nul)?;
        let programs = candidates(command.get_program(), self.path_variable())
            .into_iter()
            .map(|p| c_string(p.as_os_str()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(nul)?;
        let start = Start {
            prepared: &prepared,
            stdio: [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()],
            cwd: c_string(cwd.as_os_str()).map_err(nul)?,
            programs: programs.iter().map(|p| p.as_ptr()).collect(),
            argv: pointers(&argv),
            envp: pointers(&envp),
            failure: Cell::new(None),
        };
        let child = start.clone_child();
        // The child's namespace step set the flag of the memory it shared with improv.
        if rustix::process::dumpable_behavior().ok() != Some(dumpable) {
            rustix::process::set_dumpable_behavior(dumpable).map_err(|e| {
                SandboxError::Prepare(io::Error::other(format!(
                    "could not restore improv's dumpable flag after starting a command: {e}"
                )))
            })?;
        }
        let child = child.map_err(|(step, errno)| failed(step, errno))?;
        Ok(Child(Process::Cloned(child)))
    }

    /// How this sandbox's next command starts: the one place that decides (see the module docs).
    fn way(&self) -> Way {
        if self.run_as().is_some() || !pidfds_work() {
            return Way::Fork;
        }
        match rustix::process::dumpable_behavior() {
            Ok(dumpable @ DumpableBehavior::Dumpable) => Way::Clone { dumpable },
            _ => Way::Fork,
        }
    }

    /// Starts `command` as [`Sandbox::spawn`] does, forked: [`Sandbox::apply`] and a tokio
    /// spawn (run within a tokio runtime). Its program, arguments and working directory only.
    fn spawn_forked(
        &self,
        command: &std::process::Command,
        stdout: OwnedFd,
        stderr: OwnedFd,
    ) -> Result<Child, SandboxError> {
        let mut forked = std::process::Command::new(command.get_program());
        forked.args(command.get_args());
        if let Some(dir) = command.get_current_dir() {
            forked.current_dir(dir);
        }
        self.apply(&mut forked)?;
        forked
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = tokio::process::Command::from(forked)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| SandboxError::Start {
                // The child wrote the step that failed to the command's stderr.
                step: "starting the forked command".into(),
                source,
            })?;
        Ok(Child(Process::Forked(child)))
    }

    /// `PATH` as the sandboxed command gets it.
    fn path_variable(&self) -> Option<&OsStr> {
        self.env()
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_os_str())
    }
}

fn failed(step: &CStr, errno: Errno) -> SandboxError {
    SandboxError::Start {
        step: step.to_string_lossy().into_owned(),
        source: errno.into(),
    }
}

/// How a command starts ([`Sandbox::way`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Way {
    /// Without `fork`: improv's `dumpable` flag, as it was, is put back after the child started.
    Clone { dumpable: DumpableBehavior },
    /// [`Sandbox::apply`] and a tokio spawn.
    Fork,
}

/// Whether this kernel gives pidfds that `waitid` takes (Linux 5.4), probed once: a pidfd of
/// improv itself, which `waitid` refuses as not its child (`ECHILD`) where `P_PIDFD` is known.
fn pidfds_work() -> bool {
    static WORK: OnceLock<bool> = OnceLock::new();
    *WORK.get_or_init(|| {
        let Ok(own) = rustix::process::pidfd_open(rustix::process::getpid(), PidfdFlags::empty())
        else {
            return false;
        };
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG;
        matches!(
            rustix::process::waitid(WaitId::PidFd(own.as_fd()), options),
            Err(Errno::CHILD)
        )
    })
}

/// `fd`, or a copy of it numbered 3 or above: the child moves the three onto 0, 1 and 2, and
/// one of them already there could be overwritten before it is moved.
fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    Ok(rustix::io::fcntl_dupfd_cloexec(&fd, 3)?)
}

fn c_string(s: &OsStr) -> Result<CString, std::ffi::NulError> {
    CString::new(s.as_bytes())
}

/// The null-terminated array of pointers `execve` takes; valid while `strings` is.
fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The paths to try `exec` on, in order, as `execvp` would: `program` itself when it names a
/// path, else each folder of `PATH` (an empty entry is the working directory).
fn candidates(program: &OsStr, path: Option<&OsStr>) -> Vec<PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return vec![PathBuf::from(program)];
    }
    let path = path.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    path.as_bytes()
        .split(|b| *b == b':')
        .map(|dir| match dir {
            b"" => Path::new(".").join(program),
            dir => Path::new(OsStr::from_bytes(dir)).join(program),
        })
        .collect()
}

/// Everything the child needs, prepared in the parent and read (never written, but for
/// `failure`) by the child through its shared memory.
struct Start<'a> {
    prepared: &'a Prepared,
    /// stdin, stdout and stderr, each numbered 3 or above.
    stdio: [BorrowedFd<'a>; 3],
    cwd: CString,
    programs: Vec<*const libc::c_char>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    /// Set by the child when a step fails: the parent reads it once the child has exited.
    failure: Cell<Option<Failed>>,
}

impl Start<'_> {
    /// Clones the child and waits until it has called `exec` or exited.
    fn clone_child(&self) -> Result<Cloned, Failed> {
        let stack = Stack::take().map_err(|e| (c"mapping the child's stack", e))?;
        let mut pidfd: libc::c_int = -1;
        let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
        let blocked = Blocked::all();
        // SAFETY: `child_main` gets a pointer to `self`, which outlives the child's use of it:
        // CLONE_VFORK suspends this thread until the child has called `exec` or exited. It
        // runs on `stack`, which nothing else uses until the clone has returned. `pidfd`
        // receives the pidfd (CLONE_PIDFD stores it through the parent_tid argument).
        let pid = unsafe {
            libc::clone(
                child_main,
                stack.top(),
                flags,
                std::ptr::from_ref(self).cast_mut().cast(),
                &mut pidfd as *mut libc::c_int,
            )
        };
        // errno is this thread's only when clone failed (the child shared it until `exec`).
        let errno = (pid < 0).then(last_errno);
        drop(blocked);
        // The child has called `exec` or exited (CLONE_VFORK): nothing runs on the stack now.
        stack.give_back();
        if let Some(errno) = errno {
            return Err((c"clone", errno));
        }
        if pidfd < 0 {
            // A kernel that ignored CLONE_PIDFD (before 5.2): the command may be running.
            // SAFETY: kill and waitpid of the child just cloned, which nothing else reaps.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return Err((
                c"clone (no pidfd: Linux 5.4 or later is needed)",
                Errno::NOSYS,
            ));
        }
        // SAFETY: clone succeeded with CLONE_PIDFD and stored a pidfd (checked above) that we
        // now own.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        let mut child = Cloned {
            pid: pid.unsigned_abs(),
            pidfd: Some(Pidfd::Plain(pidfd)),
            status: None,
        };
        if let Some(failure) = self.failure.get() {
            // It has exited already: reap it.
            let _ = child.reap(WaitIdOptions::empty());
            return Err(failure);
        }
        Ok(child)
    }

    /// The child, from its start to `exec`: returns only why it failed.
    fn run(&self) -> Failed {
        match self.steps() {
            Ok(never) => match never {},
            Err(failed) => failed,
        }
    }

    fn steps(&self) -> Result<std::convert::Infallible, Failed> {
        reset_signals();
        for (target, fd) in self.stdio.iter().enumerate() {
            // SAFETY: dup2 onto 0, 1 and 2 from fds numbered 3 or above; it clears CLOEXEC on
            // the copy.
            if unsafe { libc::dup2(fd.as_raw_fd(), target as libc::c_int) } < 0 {
                return Err((c"dup2", last_errno()));
            }
        }
        self.prepared.enter()?;
        // After the namespaces: joining a mount namespace moves the working directory to its
        // root. Neither Landlock nor seccomp restricts chdir.
        // SAFETY: chdir reads the path prepared before the clone.
        if unsafe { libc::chdir(self.cwd.as_ptr()) } != 0 {
            return Err((c"chdir to the working directory", last_errno()));
        }
        // SAFETY: an empty set, then the mask set from it; handlers are all default by now.
        unsafe {
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        }
        let mut error = Errno::NOENT;
        for program in &self.programs {
            // SAFETY: execve with null-terminated arrays of strings prepared before the clone;
            // it returns only on failure.
            unsafe { libc::execve(*program, self.argv.as_ptr(), self.envp.as_ptr()) };
            match last_errno() {
                // As execvp: look further on, but report a file found and not executable.
                Errno::ACCESS => error = Errno::ACCESS,
                Errno::NOENT | Errno::NOTDIR => {}
                other => return Err((c"exec", other)),
            }
        }
        Err((c"exec", error))
    }
}

/// Runs `work` in a helper that shares improv's memory and file table (`CLONE_VM | CLONE_VFORK
/// | CLONE_FILES`) and exits, and returns what it returned: what the helper opens is improv's.
/// Used to make a [`Template`](crate::namespace::Template), whose steps change the namespaces
/// of the process that runs them. `work` is held to what the child of [`Sandbox::spawn`] may
/// do (system calls only, no allocation); the helper runs with every signal blocked.
pub(crate) fn in_helper<T, F: Fn() -> Result<T, Failed>>(work: F) -> Result<T, Failed> {
    struct Helper<T, F> {
        work: F,
        result: Cell<Option<Result<T, Failed>>>,
    }
    extern "C" fn helper_main<T, F: Fn() -> Result<T, Failed>>(
        helper: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the parent passed a pointer to its `Helper`, alive while it waits for this
        // child (CLONE_VFORK).
        let helper = unsafe { &*helper.cast::<Helper<T, F>>() };
        helper.result.set(Some((helper.work)()));
        // SAFETY: leaves the helper at once, without running anything of the parent's.
        unsafe { libc::_exit(0) }
    }
    let helper = Helper {
        work,
        result: Cell::new(None),
    };
    let stack = Stack::new().map_err(|e| (c"mapping the helper's stack", e))?;
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES | libc::SIGCHLD;
    let dumpable = rustix::process::dumpable_behavior();
    let blocked = Blocked::all();
    // SAFETY: `helper_main` gets a pointer to `helper`, which outlives the child's use of it:
    // CLONE_VFORK suspends this thread until the child has exited. It runs on `stack`.
    let pid = unsafe {
        libc::clone(
            helper_main::<T, F>,
            stack.top(),
            flags,
            std::ptr::from_ref(&helper).cast_mut().cast(),
        )
    };
    let errno = (pid < 0).then(last_errno);
    drop(blocked);
    if let Some(errno) = errno {
        return Err((c"clone", errno));
    }
    // SAFETY: reaps the helper just cloned, which has exited (CLONE_VFORK) and which nothing
    // else waits for; again when a signal interrupted the wait.
    while unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::__WALL) } < 0
        && last_errno() == Errno::INTR
    {}
    // The helper's namespace steps set the flag of the memory it shared with improv.
    if let Ok(dumpable) = dumpable
        && rustix::process::dumpable_behavior().ok() != Some(dumpable)
    {
        rustix::process::set_dumpable_behavior(dumpable)
            .map_err(|e| (c"restoring improv's dumpable flag", e))?;
    }
    helper
        .result
        .into_inner()
        .unwrap_or(Err((c"the namespace helper", Errno::CHILD)))
}

extern "C" fn child_main(start: *mut libc::c_void) -> libc::c_int {
    // SAFETY: the parent passed a pointer to its `Start`, alive and unchanged while it waits
    // for this child (CLONE_VFORK).
    let start = unsafe { &*start.cast::<Start<'_>>() };
    let failure = start.run();
    start.failure.set(Some(failure));
    // SAFETY: leaves the child at once, without running anything of the parent's.
    unsafe { libc::_exit(127) }
}

/// Sets every signal whose handler is improv's own back to the default, and SIGPIPE (which
/// Rust ignores) too, as std does for its children: a handler must not run in a child that
/// shares improv's memory, and `exec` would reset it anyway. Ignored signals stay ignored.
fn reset_signals() {
    for signal in 1..=64 {
        // SAFETY: sigaction on a zeroed struct this function owns; an invalid or unchangeable
        // signal (SIGKILL, SIGSTOP, those libc reserves) fails with EINVAL, which is fine.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(signal, std::ptr::null(), &mut old) != 0 {
                continue;
            }
            let handled = old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN;
            if handled || signal == libc::SIGPIPE {
                let mut default: libc::sigaction = std::mem::zeroed();
                default.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &default, std::ptr::null_mut());
            }
        }
    }
}

/// Every signal blocked in this thread until dropped, when the old mask comes back.
struct Blocked(libc::sigset_t);

impl Blocked {
    fn all() -> Self {
        // SAFETY: sigset_t is plain data; sigfillset and pthread_sigmask fill the sets we own.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            Blocked(old)
        }
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `all`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut());
        }
    }
}

/// The child's stack: mapped for it, with a guard page below, and unmapped when dropped.
struct Stack(*mut libc::c_void);

// SAFETY: a Stack owns its mapping alone; the pointer is only an address, used by one thread
// at a time (the cache hands it out by value).
unsafe impl Send for Stack {}

/// One stack kept between commands: mapping, guarding and unmapping one for each command
/// cost three calls, and the unmap a TLB flush on every CPU that ran one of improv's threads
/// (20–35 µs of a command's start, measured with a C copy of these steps).
static SPARE: std::sync::Mutex<Option<Stack>> = std::sync::Mutex::new(None);

impl Stack {
    /// The spare stack if there is one (a command started at the same time maps its own).
    fn take() -> Result<Self, Errno> {
        let spare = SPARE.lock().ok().and_then(|mut spare| spare.take());
        spare.map_or_else(Stack::new, Ok)
    }

    /// Keeps this stack for the next command (unmaps it when one is kept already). Only once
    /// no child runs on it: after a CLONE_VFORK clone has returned.
    fn give_back(self) {
        if let Ok(mut spare) = SPARE.lock()
            && spare.is_none()
        {
            *spare = Some(self);
        }
    }

    fn new() -> Result<Self, Errno> {
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(last_errno());
        }
        let stack = Stack(base);
        // SAFETY: the lowest page of our own mapping becomes a guard: an overflow faults.
        if unsafe { libc::mprotect(base, page_size(), libc::PROT_NONE) } != 0 {
            return Err(last_errno());
        }
        Ok(stack)
    }

    /// The top of the stack (it grows down), 16-byte aligned as the ABI wants.
    fn top(&self) -> *mut libc::c_void {
        self.0.cast::<u8>().wrapping_add(STACK).cast()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping `new` made; the child no longer runs on it.
        unsafe {
            libc::munmap(self.0, STACK);
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf with a constant.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}

/// The pidfd of a [`Child`], registered with tokio once waited for asynchronously.
enum Pidfd {
    Plain(OwnedFd),
    Polled(AsyncFd<OwnedFd>),
}

impl Pidfd {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Pidfd::Plain(fd) => fd.as_fd(),
            Pidfd::Polled(fd) => fd.get_ref().as_fd(),
        }
    }
}

/// A command started by [`Sandbox::spawn`]. Dropped before it was waited for, it is killed (its
/// process; [`Sandbox::reap`] and the bash prop kill its group) and reaped.
pub struct Child(Process);

/// How a [`Child`] was started ([`Way`]).
enum Process {
    Cloned(Cloned),
    /// Spawned with `kill_on_drop`: tokio kills and reaps it when dropped.
    Forked(tokio::process::Child),
}

impl Child {
    /// Its pid (and process group), until it has been waited for.
    pub fn id(&self) -> Option<u32> {
        match &self.0 {
            Process::Cloned(child) => child.id(),
            Process::Forked(child) => child.id(),
        }
    }

    /// Its exit status if it has exited (reaping it), `None` while it runs.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        match &mut self.0 {
            Process::Cloned(child) => child.reap(WaitIdOptions::NOHANG),
            Process::Forked(child) => child.try_wait(),
        }
    }

    /// Waits for it to exit, on tokio's reactor (a runtime with IO enabled, as
    /// `tokio::process` needs). Cancel-safe.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        match &mut self.0 {
            Process::Cloned(child) => child.wait().await,
            Process::Forked(child) => child.wait().await,
        }
    }

    /// Sends it SIGKILL; nothing when it was already waited for.
    pub fn start_kill(&mut self) -> io::Result<()> {
        match &mut self.0 {
            Process::Cloned(child) => child.start_kill(),
            Process::Forked(child) if child.id().is_none() => Ok(()),
            Process::Forked(child) => child.start_kill(),
        }
    }

    /// Whether it was started without `fork` ([`Sandbox::spawn`]'s module docs).
    pub fn is_cloned(&self) -> bool {
        matches!(self.0, Process::Cloned(_))
    }
}

/// A child started by [`Start::clone_child`].
struct Cloned {
    pid: u32,
    /// `None` once reaped.
    pidfd: Option<Pidfd>,
    status: Option<ExitStatus>,
}

impl Cloned {
    fn id(&self) -> Option<u32> {
        self.status.is_none().then_some(self.pid)
    }

    async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.reap(WaitIdOptions::NOHANG)? {
                return Ok(status);
            }
            if matches!(self.pidfd, Some(Pidfd::Plain(_)))
                && let Some(Pidfd::Plain(fd)) = self.pidfd.take()
            {
                // SAFETY: an OwnedFd stays open, and is the same fd, for as long as it is owned
                // by the AsyncFd.
                let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
                match registered {
                    Ok(polled) => self.pidfd = Some(Pidfd::Polled(polled)),
                    Err(e) => {
                        let (fd, cause) = e.into_parts();
                        self.pidfd = Some(Pidfd::Plain(fd));
                        return Err(cause);
                    }
                }
            }
            if let Some(Pidfd::Polled(fd)) = &self.pidfd {
                // A pidfd turns readable when its process exits.
                fd.readable().await?.clear_ready();
            }
        }
    }

    fn start_kill(&mut self) -> io::Result<()> {
        match &self.pidfd {
            Some(pidfd) => Ok(rustix::process::pidfd_send_signal(
                pidfd.fd(),
                Signal::KILL,
            )?),
            None => Ok(()),
        }
    }

    fn reap(&mut self, options: WaitIdOptions) -> io::Result<Option<ExitStatus>> {
        if let Some(status) = self.status {
            return Ok(Some(status));
        }
        let Some(pidfd) = &self.pidfd else {
            return Err(io::Error::other("the command's pidfd is gone"));
        };
        let waited =
            rustix::process::waitid(WaitId::PidFd(pidfd.fd()), WaitIdOptions::EXITED | options)?;
        Ok(waited.map(|status| {
            let status = exit_status(&status);
            self.status = Some(status);
            self.pidfd = None;
            status
        }))
    }
}

/// The status `waitid` gave as std's `ExitStatus` (the raw form `waitpid` reports).
fn exit_status(status: &WaitIdStatus) -> ExitStatus {
    let raw = match (status.exit_status(), status.terminating_signal()) {
        (Some(code), _) => (code & 0xff) << 8,
        (None, Some(signal)) if status.dumped() => signal | 0x80,
        (None, Some(signal)) => signal,
        (None, None) => 0,
    };
    ExitStatus::from_raw(raw)
}

impl Drop for Cloned {
    fn drop(&mut self) {
        if self.pidfd.is_none() {
            return;
        }
        let _ = self.start_kill();
        if matches!(self.reap(WaitIdOptions::NOHANG), Ok(Some(_))) {
            return;
        }
        // Killed but not yet gone: reap it off this thread rather than wait here.
        if let Some(pidfd) = self.pidfd.take() {
            let fd = match pidfd {
                Pidfd::Plain(fd) => fd,
                Pidfd::Polled(fd) => fd.into_inner(),
            };
            let reaper = std::thread::Builder::new()
                .name("improv-reap".into())
                .spawn(move || {
                    rustix::process::waitid(WaitId::PidFd(fd.as_fd()), WaitIdOptions::EXITED)
                });
            if reaper.is_err() {
                // No thread to spare: wait here for the killed child rather than leave a
                // zombie. Its pid is still ours (not reaped), so it names no other process.
                let pid = Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX));
                let _ = pid.map(|pid| rustix::process::waitpid(Some(pid), WaitOptions::empty()));
            }
        }
    }
}

impl improv_props::Running for Child {
    fn id(&self) -> Option<u32> {
        Child::id(self)
    }

    fn wait(&mut self) -> Pin<Box<dyn Future<Output = io::Result<ExitStatus>> + Send + '_>> {
        Box::pin(Child::wait(self))
    }

    fn start_kill(&mut self) -> io::Result<()> {
        Child::start_kill(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Sandbox, SandboxConfig};
    use std::io::Read;

    /// Runs `program args` through [`Sandbox::spawn`]: (exit status, stdout + stderr).
    async fn run(sandbox: &Sandbox, program: &str, args: &[&str]) -> (ExitStatus, String) {
        let (reader, writer) = rustix::pipe::pipe().unwrap();
        let mut cmd = std::process::Command::new(program);
        cmd.args(args);
        let stderr = writer.try_clone().unwrap();
        let mut child = sandbox.spawn(&cmd, writer, stderr).unwrap();
        let status = child.wait().await.unwrap();
        let mut out = String::new();
        std::fs::File::from(reader)
            .read_to_string(&mut out)
            .unwrap();
        (status, out)
    }

    #[tokio::test]
    async fn a_command_started_without_fork_is_confined_as_a_forked_one() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = Sandbox::new(SandboxConfig::new(dir.path())).unwrap();
        // cat installs no signal handler of its own.
        let (status, out) = run(&sandbox, "cat", &["/proc/self/status"]).await;
        assert!(status.success(), "{out}");
        assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
        // The bounding set is empty too, though dropping stops at the first capability the
        // kernel does not know.
        assert!(out.contains("CapBnd:\t0000000000000000"), "{out}");
        assert!(out.contains("NoNewPrivs:\t1"), "{out}");
        assert!(out.contains("Seccomp:\t2"), "{out}");
        // No handler of improv's reaches the child, and SIGPIPE (ignored by Rust) is default.
        assert!(out.contains("SigCgt:\t0000000000000000"), "{out}");
        let ignored = out
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:\t"))
            .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            .unwrap();
        assert_eq!(ignored & (1 << (libc::SIGPIPE - 1)), 0, "{out}");
        // Landlock: nothing outside the workspace and the system paths.
        let (status, out) = run(&sandbox, "cat", &["/etc/shadow"]).await;
        assert!(
            !status.success() && out.contains("Permission denied"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn the_command_leads_its_own_group_and_a_failed_start_names_its_step() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = Sandbox::new(SandboxConfig::new(dir.path())).unwrap();
        let (status, out) = run(&sandbox, "sh", &["-c", "echo $$ $(ps -o pgid= $$)"]).await;
        assert!(status.success(), "{out}");
        let ids: Vec<&str> = out.split_whitespace().collect();
        assert_eq!(ids.len(), 2, "{out}");
        assert_eq!(ids[0], ids[1], "{out}");
        let (_, writer) = rustix::pipe::pipe().unwrap();
        let cmd = std::process::Command::new("improv-no-such-program");
        let stderr = writer.try_clone().unwrap();
        match sandbox.spawn(&cmd, writer, stderr) {
            Err(SandboxError::Start { step, source }) => {
                assert_eq!(step, "exec");
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a missing program started"),
        }
    }
}
