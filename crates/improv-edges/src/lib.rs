//! The edges actors perform within: they improvise freely inside and cannot get out.
//!
//! - [`sandbox`]: every process an actor starts runs under Landlock, seccomp, `no_new_privs`,
//!   resource limits, its own process group and a minimal environment ([`env`]).
//! - [`policy`]: the stage's rules (prop, command glob, path glob → allow, deny, ask), hidden
//!   and read-only paths, approvals; [`Guarded`] applies them to a prop.
//! - [`command`]: what a shell line would run (parsed, unquoted, seen through launchers such as
//!   `env`, `sudo`, `sh -c`), for the command rules to judge.
//! - [`secrets`]: secret values redacted from tool output ([`Redacted`]) and from events
//!   ([`RedactingObserver`]).
//! - [`loop_detector`]: a hook that stops an actor repeating the same call.
//!
//! How a performance is wrapped, outermost first: `Guarded(Redacted(prop))` for every prop,
//! the bash prop's spawn hook set to [`Sandbox::spawn_hook`] (commands start without `fork`, see
//! [`spawn`]), [`LoopDetector`] as a hook and
//! [`RedactingObserver`] around every observer. [`Guarded`] emits each policy decision into the
//! stream of the performance making the call (`PropContext::events`), under its actor.

mod cgroup;
#[cfg(test)]
mod child_test;
pub mod command;
mod disk;
pub mod env;
pub mod loop_detector;
mod namespace;
pub mod open_files;
pub mod policy;
pub mod sandbox;
mod scratch;
mod seccomp;
pub mod secrets;
pub mod spawn;

pub use env::{ChildEnv, EnvPolicy};
pub use loop_detector::LoopDetector;
pub use policy::{
    Approval, ApprovalRequest, Approver, Decision, Guard, Guarded, Hidden, HiddenKind, PathEdges,
    Policy, PolicyDecision, Prompt, Rule, Unattended, guard_all,
};
pub use sandbox::{
    Breach, DiskLimit, Limits, MemoryLimit, ProcessLimit, Sandbox, SandboxConfig, SandboxError,
    SandboxMode, TempSpace,
};
pub use secrets::{Redacted, RedactingObserver, Redaction, Redactor};
