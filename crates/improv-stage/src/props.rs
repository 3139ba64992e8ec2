//! The one list of the props improv provides: each prop's name, where it comes from and what
//! its calls may do. The stage's checks, casting, the AGENTS.md hints and the doctor read it
//! instead of lists of their own; the props themselves still say, call by call, whether a call
//! writes ([`improv_kernel::Prop::access`]), and a test holds the two together.
//!
//! Props from outside improv (an MCP server's tools) are named by the stage, not listed here.

use improv_kernel::Access;

/// Where a prop comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `improv-props`: the files and the shell, every actor's by default.
    Core,
    /// The performance itself: `cue` starts another actor's sub-performance.
    Cue,
    /// The performance itself: the board every actor of it reads and posts on.
    Board,
    /// The stage's ledger (`improv-ledger`).
    Ledger,
    /// The stage's memory across performances (`improv-memory`).
    Memory,
    /// The Agent Skills of the stage and the user (`improv-skills`).
    Skills,
}

/// What improv knows of one prop before it is cast.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PropInfo {
    pub name: &'static str,
    pub source: Source,
    /// The most its calls do: [`Access::Write`] when some call may change the work.
    pub access: Access,
    /// It runs commands: it needs the sandbox.
    pub runs_commands: bool,
    /// Its `path` argument says where the actor works (the AGENTS.md hints follow it).
    pub takes_path: bool,
}

impl PropInfo {
    /// Whether its calls may change the workspace's files: a core prop that may write (a
    /// ledger `record` writes, but to the ledger).
    pub fn changes_files(&self) -> bool {
        self.source == Source::Core && self.access == Access::Write
    }
}

const fn prop(name: &'static str, source: Source, access: Access) -> PropInfo {
    PropInfo {
        name,
        source,
        access,
        runs_commands: false,
        takes_path: false,
    }
}

const fn with_path(info: PropInfo) -> PropInfo {
    PropInfo {
        takes_path: true,
        ..info
    }
}

use Access::{Read, Write};

/// Every prop a stage may name, the core ones first in the order they are best offered.
pub const PROPS: [PropInfo; 13] = [
    with_path(prop("read", Source::Core, Read)),
    with_path(prop("write", Source::Core, Write)),
    with_path(prop("edit", Source::Core, Write)),
    PropInfo {
        runs_commands: true,
        ..prop("bash", Source::Core, Write)
    },
    with_path(prop("grep", Source::Core, Read)),
    with_path(prop("find", Source::Core, Read)),
    prop("cue", Source::Cue, Read),
    prop("board", Source::Board, Write),
    prop("record", Source::Ledger, Write),
    prop("query", Source::Ledger, Read),
    prop("remember", Source::Memory, Write),
    prop("recall", Source::Memory, Read),
    prop("skill", Source::Skills, Read),
];

/// The prop named `name`, if improv provides one.
pub fn find(name: &str) -> Option<&'static PropInfo> {
    PROPS.iter().find(|p| p.name == name)
}

/// Whether `name` is a prop of `source`.
pub fn is(name: &str, source: Source) -> bool {
    find(name).is_some_and(|p| p.source == source)
}

/// How many props come from `source`.
const fn count(source: Source) -> usize {
    let (mut i, mut n) = (0, 0);
    while i < PROPS.len() {
        if PROPS[i].source as u8 == source as u8 {
            n += 1;
        }
        i += 1;
    }
    n
}

/// The names of the props from `source`, in order; `N` is their [`count`].
const fn names_of<const N: usize>(source: Source) -> [&'static str; N] {
    let mut out = [""; N];
    let (mut i, mut n) = (0, 0);
    while i < PROPS.len() {
        if PROPS[i].source as u8 == source as u8 {
            out[n] = PROPS[i].name;
            n += 1;
        }
        i += 1;
    }
    out
}

/// The names of every prop, in order.
const fn all_names() -> [&'static str; PROPS.len()] {
    let mut out = [""; PROPS.len()];
    let mut i = 0;
    while i < PROPS.len() {
        out[i] = PROPS[i].name;
        i += 1;
    }
    out
}

pub(crate) const CORE_NAMES: [&str; count(Source::Core)] = names_of(Source::Core);
pub(crate) const ALL_NAMES: [&str; PROPS.len()] = all_names();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lists_a_stage_is_checked_against_come_from_the_registry() {
        assert_eq!(
            crate::CORE_PROPS,
            ["read", "write", "edit", "bash", "grep", "find"]
        );
        assert_eq!(crate::KNOWN_PROPS.len(), PROPS.len());
        assert!(crate::KNOWN_PROPS.contains(&"recall"));
        let mut seen = std::collections::HashSet::new();
        assert!(
            PROPS.iter().all(|p| seen.insert(p.name)),
            "names are unique"
        );
        assert!(is("record", Source::Ledger) && !is("record", Source::Core));
    }
}
