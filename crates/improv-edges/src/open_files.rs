//! The open-file limit: raised for improv itself, given back to the programs it starts outside
//! the sandbox.
//!
//! A long-running `improv serve` or `improv worker` raises its soft `RLIMIT_NOFILE` to the hard
//! limit ([`raise`]): it holds a socket per performance waiting on its model, and the soft limit
//! is often 1,024 where the hard one is far higher. A child inherits the limit, and programs
//! that are not written for a raised one (anything using `select(2)`, or allocating a table per
//! possible descriptor) misbehave with it. Sandboxed commands get their own limit
//! (`Limits::open_files`); every other program improv starts (MCP stdio servers, the model
//! download, `git`) goes through [`restore_in`], which sets the soft limit improv started with
//! back in the child before `exec`.

use std::io;
use std::os::unix::process::CommandExt;
use std::sync::OnceLock;

/// The limit improv started with, set by the first [`raise`] that changed it.
static ORIGINAL: OnceLock<libc::rlimit> = OnceLock::new();

/// The open-file limit could not be raised.
#[derive(Debug, thiserror::Error)]
#[error(
    "could not raise the open-file limit from {from} to {to}: {source}; raise it with \
     `ulimit -n` before starting improv"
)]
pub struct RaiseError {
    /// The soft limit, left as it is.
    pub from: u64,
    /// The hard limit it was to be raised to.
    pub to: u64,
    /// Why `setrlimit` refused.
    #[source]
    pub source: io::Error,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and remembers the soft limit it had, for
/// [`restore_in`]; call at the start of a long-running command. A limit that cannot be read, or
/// is already at the hard limit, is left as it is.
pub fn raise() -> Result<(), RaiseError> {
    let Some(limit) = get() else {
        return Ok(());
    };
    if limit.rlim_cur >= limit.rlim_max {
        return Ok(());
    }
    let raised = libc::rlimit {
        rlim_cur: limit.rlim_max,
        rlim_max: limit.rlim_max,
    };
    // The original is known before the limit changes: a child started meanwhile by another
    // thread gets it back too.
    let original = *ORIGINAL.get_or_init(|| limit);
    // SAFETY: setrlimit reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(RaiseError {
            from: original.rlim_cur,
            to: limit.rlim_max,
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// The soft open-file limit improv started with, when [`raise`] changed it.
pub fn original() -> Option<u64> {
    ORIGINAL.get().map(|l| l.rlim_cur)
}

/// Makes `cmd`'s child start with the soft open-file limit improv started with, when [`raise`]
/// changed it (otherwise `cmd` is left as it is, and may start without `fork`). Every program
/// improv starts outside the sandbox goes through here; for a tokio command pass
/// `cmd.as_std_mut()`.
pub fn restore_in(cmd: &mut std::process::Command) {
    let Some(original) = ORIGINAL.get().copied() else {
        return;
    };
    let child = move || -> io::Result<()> {
        let mut now = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit are async-signal-safe system calls on structs on this
        // stack; nothing here allocates or takes a lock.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The hard limit stays as it is now: lowering the soft one is always allowed.
            let back = libc::rlimit {
                rlim_cur: original.rlim_cur.min(now.rlim_max),
                rlim_max: now.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &back) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the closure only makes async-signal-safe system calls on values copied before
    // fork.
    unsafe {
        cmd.pre_exec(child);
    }
}

fn get() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0).then_some(limit)
}
