//! What each command's own mount namespace holds in the workspace. Landlock grants the workspace
//! as a whole and cannot carve a subpath out of it, so each command starts in a user namespace of
//! its own and a mount namespace where:
//!
//! - the paths matching the stage's `read_only` globs and the control files
//!   ([`SandboxConfig::protected`](crate::SandboxConfig::protected)) are bound onto themselves
//!   read-only;
//! - every hidden file (`.env`, `id_rsa*`, ... as the edges say, matched without regard to ASCII
//!   case; a file named only like key material, `*.pem` or `*.key`, when it holds a private key
//!   or cannot be checked: [`HiddenGlobs`]) is covered by an empty, unreadable, read-only file,
//!   every hidden folder and improv's state
//!   ([`SandboxConfig::concealed`](crate::SandboxConfig::concealed)) by an empty folder;
//! - the folders above a control file, improv's state or a hidden path are bound onto themselves
//!   (read-write).
//!
//! A mount point cannot be renamed, removed or replaced in its namespace (`EBUSY`), so none of
//! these can be moved aside, nor any folder that holds one: a hidden file found by a scan stays
//! where it was for every command started since, background ones included. The mounts exist
//! only in that command's namespace (or the template it joined); seccomp then denies `mount`,
//! `umount2`, `unshare` and `setns`, and `exec` drops every capability, so the command cannot
//! undo them.
//!
//! A forked command (`Sandbox::apply`) makes both namespaces and its mounts before `exec`. One
//! started without `fork` (`Sandbox::spawn`, the `bash` prop's) joins a [`Template`]: the mount
//! namespace made once, by a helper running the same steps, for the targets of a scan, then a
//! user namespace of its own nested in the template's, which gives it no capability over the
//! shared mounts and counts its processes (`RLIMIT_NPROC`) apart. Making a mount namespace (a
//! copy of every mount) and tearing it down at the command's exit was most of what the sandbox
//! added to a command's start; joining one is a `setns`. A template serves while the scan finds
//! the same targets and every mount in it stands where it was made: a mount comes off an entry
//! in every other namespace when that entry is removed or replaced from outside (`unlink`, or a
//! rename over it), which changes the identity found at the path or the change time of its
//! folder, both stamped when the template was made ([`Template::holds`]). Those stamps miss a
//! change on a file system with coarse change times or under a symlinked folder (the link is
//! stamped), so each target is also looked at inside the template, through its root opened by
//! the helper: a cover taken off shows the file under it, a bind taken off shows another mount
//! id. A template whose stamps were not yet settled (changed within a clock tick of it), that
//! follows a protected symlink, or on a kernel that cannot show mount ids (before 5.8), serves
//! one command. A template serves [`TEMPLATE_AGE`] at most, so mounts made outside improv after
//! it was made reach commands within that time (those made after a forked command started
//! never reach it).
//!
//! The workspace is scanned again before every command ([`Scanner`]), so a hidden file that
//! appeared, or that something outside the sandbox moved, is covered where it is now. The scan
//! keeps what it read of each folder, keyed by the folder's change time (which no command can
//! set), and reads again only the folders that changed: a rescan costs one `lstat` per folder.
//! It is written here rather than with a walker crate for that cache. A file named only like key
//! material is judged again at every scan unless it is unchanged since it was last read (same
//! identity, size, modification and change time, settled as a folder is): a certificate
//! rewritten into a key is covered at the next command. A command running during
//! a scan cannot move what earlier scans found (pinned), so what it can hide from the scan is
//! what it could read anyway. Each covered path is opened and checked to be the very file the
//! scan found before the mount goes onto that open file, so a path swapped between the scan and
//! the mount fails the command instead of covering something else. Where improv cannot cover
//! every hidden file (too many of them, too large a workspace, a folder it cannot read) no
//! command runs: [`ScanError`] says why and what to do.

use crate::policy::{ByName, HiddenGlobs, PathGlob, holds_secret};
use rustix::fs::{Mode, OFlags, StatVfsMountFlags};
use rustix::io::Errno;
use rustix::mount::{MountFlags, MountPropagationFlags};
use rustix::thread::UnshareFlags;
use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// How many workspace entries the scan reads, at most, before it refuses to run commands.
pub const SCAN_ENTRIES: usize = 500_000;
/// How many hidden paths are covered, at most, before commands are refused.
pub const MAX_COVERS: usize = 1_000;
/// How many mounts a command's namespace gets, at most (covers, read-only paths and the folders
/// pinned above them), before commands are refused.
pub const MAX_MOUNTS: usize = 4_000;
/// A folder changed this recently may change again without its change time moving (the kernel
/// stamps times from a clock that ticks every few milliseconds): it is read again next time.
const SETTLE: Duration = Duration::from_millis(30);
/// How often a scan is made again while a hidden file the last one found is missing.
const RESCANS: usize = 3;

/// Why no command may run: improv cannot cover every hidden file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error(
        "the workspace has more than {max} files named like hidden ones ({globs}), more than improv covers for commands, so it runs none; narrow `hidden` under [edges] in stage.toml or remove them"
    )]
    TooManyHidden { max: usize, globs: String },
    #[error(
        "the workspace has more than {max} files and folders, more than improv scans for hidden files before each command, so it runs none; move large trees (build output, dependencies) out of the workspace"
    )]
    TooManyEntries { max: usize },
    #[error(
        "improv cannot read the folder {path} to look for hidden files in it ({reason}), so it runs no command; make it readable or remove it"
    )]
    Unreadable { path: PathBuf, reason: String },
    #[error(
        "the workspace has {count} paths to guard for commands (hidden files, `read_only` matches and the folders above them), more than the {max} improv mounts, so it runs none; narrow `hidden` and `read_only` under [edges] in stage.toml"
    )]
    TooManyMounts { count: usize, max: usize },
}

/// A file or folder's identity: `(st_dev, st_ino)`.
pub type Id = (u64, u64);

/// What a folder (or a file named like key material) looked like when it was read: a later
/// read with the same stamp can reuse what was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    id: Id,
    size: u64,
    ctime: (i64, i64),
    mtime: (i64, i64),
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Stamp {
            id: (meta.dev(), meta.ino()),
            size: meta.size(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        }
    }

    /// Whether the folder last changed before `before` by more than a clock tick, so that any
    /// later change moves its change time.
    fn settled(&self, before: SystemTime) -> bool {
        let changed = SystemTime::UNIX_EPOCH
            + Duration::new(
                self.ctime.0.max(0) as u64,
                self.ctime.1.clamp(0, 999_999_999) as u32,
            );
        changed + SETTLE <= before
    }
}

/// A hidden or read-only path the scan found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub path: PathBuf,
    pub is_dir: bool,
    pub id: Id,
}

/// What one folder holds that matters, relative to it.
#[derive(Clone, Debug)]
struct Listing {
    stamp: Stamp,
    settled: bool,
    entries: usize,
    hidden: Vec<(OsString, bool, Id)>,
    /// Files named only like key material: hidden if what they hold is secret, judged at every
    /// scan (writing a file does not change its folder).
    key_material: Vec<OsString>,
    read_only: Vec<(OsString, bool, Id)>,
    /// Subfolders to descend into, and whether they lie under a read-only match.
    subdirs: Vec<(OsString, bool)>,
}

/// What a scan of the workspace found.
#[derive(Clone, Debug, Default)]
pub struct Scan {
    /// Hidden paths to cover, parents before children.
    pub hidden: Vec<Found>,
    /// Paths matching a `read_only` glob (the outermost of nested ones), parents first.
    pub read_only: Vec<Found>,
    /// Entries looked at.
    pub entries: usize,
}

/// The verdict on a file named like key material, and the file as it was when judged.
#[derive(Clone, Copy, Debug)]
struct Judged {
    stamp: Stamp,
    settled: bool,
    secret: bool,
}

/// Globs matched against a path with its ASCII letters lowered: `.ENV` is as read-only as `.env`.
pub struct Globs {
    globs: Vec<PathGlob>,
}

impl Globs {
    pub fn new(globs: &[String]) -> Result<Self, crate::policy::GlobError> {
        Ok(Globs {
            globs: globs
                .iter()
                .map(|g| PathGlob::new(&g.to_ascii_lowercase()))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Whether `rel` (relative to the workspace) matches, whatever the case of its letters.
    pub fn matches(&self, rel: &Path) -> bool {
        if self.globs.is_empty() {
            return false;
        }
        let folded = PathBuf::from(OsString::from_vec(
            rel.as_os_str().as_bytes().to_ascii_lowercase(),
        ));
        self.globs.iter().any(|g| g.matches(&folded))
    }

    pub fn is_empty(&self) -> bool {
        self.globs.is_empty()
    }
}

/// Finds hidden and read-only paths in the workspace, again before every command, reading only
/// the folders that changed since the last scan. No ignore files are honored (a `.env` is
/// usually git-ignored) and no folder is skipped; symlinks are not followed (a link's target is
/// judged by its own name); a hidden folder is covered whole.
pub struct Scanner {
    root: PathBuf,
    hidden: HiddenGlobs,
    read_only: Globs,
    /// Covered whole, not scanned ([`crate::SandboxConfig::concealed`]).
    skip: Vec<PathBuf>,
    cache: HashMap<PathBuf, Listing>,
    /// The verdicts on files named like key material, by identity.
    judged: HashMap<Id, Judged>,
    /// The hidden files the last scan found.
    known: HashSet<Id>,
}

impl Scanner {
    pub fn new(root: PathBuf, hidden: HiddenGlobs, read_only: Globs, skip: Vec<PathBuf>) -> Self {
        Scanner {
            root,
            hidden,
            read_only,
            skip,
            cache: HashMap::new(),
            judged: HashMap::new(),
            known: HashSet::new(),
        }
    }

    /// Scans the workspace. A folder that disappears meanwhile (a running command removed or
    /// moved it) is passed over: it holds no hidden file an earlier scan found, as those and the
    /// folders above them cannot be moved by commands. Something outside the sandbox may move
    /// one during the scan, out of its sight (a folder renamed while its parent is read): while
    /// a hidden file the last scan found is missing, the scan is made again (reading only what
    /// changed), a few times before it is taken as removed.
    pub fn scan(&mut self) -> Result<Scan, ScanError> {
        let mut scan = self.walk()?;
        for _ in 0..RESCANS {
            let found: HashSet<Id> = scan.hidden.iter().map(|f| f.id).collect();
            if self.known.is_subset(&found) {
                break;
            }
            scan = self.walk()?;
        }
        self.known = scan.hidden.iter().map(|f| f.id).collect();
        Ok(scan)
    }

    fn walk(&mut self) -> Result<Scan, ScanError> {
        if self.hidden.is_empty() && self.read_only.is_empty() {
            return Ok(Scan::default());
        }
        let mut old = std::mem::take(&mut self.cache);
        let mut judged = std::mem::take(&mut self.judged);
        let mut scan = Scan::default();
        let mut stack = vec![(self.root.clone(), false)];
        while let Some((dir, under_read_only)) = stack.pop() {
            let before = SystemTime::now();
            let meta = match std::fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => meta,
                _ => continue,
            };
            let stamp = Stamp::of(&meta);
            let listing = match old.remove(&dir) {
                Some(l) if l.stamp == stamp && l.settled => l,
                _ => match self.read(&dir, under_read_only, stamp, stamp.settled(before))? {
                    Some(listing) => listing,
                    None => continue,
                },
            };
            scan.entries += listing.entries;
            if scan.entries > SCAN_ENTRIES {
                return Err(ScanError::TooManyEntries { max: SCAN_ENTRIES });
            }
            let found = |(name, is_dir, id): &(OsString, bool, Id)| Found {
                path: dir.join(name),
                is_dir: *is_dir,
                id: *id,
            };
            scan.hidden.extend(listing.hidden.iter().map(found));
            for name in &listing.key_material {
                let path = dir.join(name);
                if let Some((id, true)) = self.judge(&path, &mut judged)? {
                    scan.hidden.push(Found {
                        path,
                        is_dir: false,
                        id,
                    });
                }
            }
            if scan.hidden.len() > MAX_COVERS {
                return Err(ScanError::TooManyHidden {
                    max: MAX_COVERS,
                    globs: self.hidden.text(),
                });
            }
            scan.read_only.extend(listing.read_only.iter().map(found));
            for (name, under) in listing.subdirs.iter().rev() {
                stack.push((dir.join(name), *under));
            }
            self.cache.insert(dir, listing);
        }
        Ok(scan)
    }

    /// Whether the file at `path`, named only like key material, holds a secret
    /// ([`holds_secret`], read through a descriptor opened without following a symlink); `None`
    /// if it is gone. The verdict of an earlier scan (`old`, taken from by identity) stands
    /// while the file is unchanged.
    fn judge(
        &mut self,
        path: &Path,
        old: &mut HashMap<Id, Judged>,
    ) -> Result<Option<(Id, bool)>, ScanError> {
        let before = SystemTime::now();
        let meta = match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            meta => meta.map_err(|e| ScanError::Unreadable {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?,
        };
        let stamp = Stamp::of(&meta);
        let verdict = match old.remove(&stamp.id) {
            Some(j) if j.stamp == stamp && j.settled => j,
            _ => Judged {
                stamp,
                settled: stamp.settled(before),
                secret: !meta.is_file() || Self::sniff(path, stamp),
            },
        };
        self.judged.insert(stamp.id, verdict);
        Ok(Some((stamp.id, verdict.secret)))
    }

    /// [`holds_secret`] of the file at `path` if it is still the one `stamp` describes; secret
    /// if not, or if it cannot be opened.
    fn sniff(path: &Path, stamp: Stamp) -> bool {
        match open_to_judge(path) {
            Ok(file) => match file.metadata() {
                Ok(meta) if Stamp::of(&meta) == stamp => holds_secret(&file),
                _ => true,
            },
            Err(_) => true,
        }
    }

    /// Reads one folder: what in it is hidden or read-only, and where to descend; `None` if it
    /// is gone.
    fn read(
        &self,
        dir: &Path,
        under_read_only: bool,
        stamp: Stamp,
        settled: bool,
    ) -> Result<Option<Listing>, ScanError> {
        let unreadable = |e: io::Error| ScanError::Unreadable {
            path: dir.to_path_buf(),
            reason: e.to_string(),
        };
        let rel = dir.strip_prefix(&self.root).unwrap_or(dir);
        let mut listing = Listing {
            stamp,
            settled,
            entries: 0,
            hidden: Vec::new(),
            key_material: Vec::new(),
            read_only: Vec::new(),
            subdirs: Vec::new(),
        };
        let entries = match std::fs::read_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            entries => entries.map_err(unreadable)?,
        };
        for entry in entries {
            let entry = entry.map_err(unreadable)?;
            listing.entries += 1;
            let kind = entry.file_type().map_err(unreadable)?;
            let (is_dir, is_file) = (kind.is_dir(), kind.is_file());
            if !(is_dir || is_file) {
                // Symlinks (judged where they lead), sockets, pipes, devices.
                continue;
            }
            let name = entry.file_name();
            let path = dir.join(&name);
            if is_dir && self.skip.contains(&path) {
                continue;
            }
            let rel = rel.join(&name);
            let hidden = match self.hidden.by_name(&rel) {
                ByName::Shown => false,
                ByName::Hidden(_) => true,
                // A folder has no content to judge: hidden whole.
                ByName::KeyMaterial(_) if is_dir => true,
                ByName::KeyMaterial(_) => {
                    listing.key_material.push(name.clone());
                    false
                }
            };
            let read_only = !hidden && !under_read_only && self.read_only.matches(&rel);
            if hidden || read_only {
                // The identity the command's mount checks, as a path lookup sees it (a host
                // mount point's root, not the folder beneath it).
                let meta = match std::fs::symlink_metadata(&path) {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    meta => meta.map_err(unreadable)?,
                };
                let found = (name.clone(), is_dir, (meta.dev(), meta.ino()));
                if hidden {
                    listing.hidden.push(found);
                    continue;
                }
                listing.read_only.push(found);
            }
            if is_dir {
                listing.subdirs.push((name, under_read_only || read_only));
            }
        }
        Ok(Some(listing))
    }
}

/// Opens a file named like key material to judge it: not through a symlink (a link is judged
/// by its own name), and without waiting on a pipe.
fn open_to_judge(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// The empty, unreadable file and folder that cover hidden paths, in a private folder outside
/// the workspace and the sandbox's temp dir. The folder can be searched by anyone (the covers
/// are mounted by the command's own uid, which may be `run_as`), not listed.
pub struct Covers {
    /// Removed with the sandbox.
    _dir: tempfile::TempDir,
    file: CString,
    folder: CString,
    /// The identities of `file` and `folder`: what a covered path must lead to once covered.
    ids: (Id, Id),
    /// A file the availability probe covers.
    probe: CString,
}

impl Covers {
    pub fn new() -> io::Result<Self> {
        // Named after improv's process, so the next sandbox removes it after a crash.
        let dir = tempfile::Builder::new()
            .prefix(&format!(
                "improv-covers-{}",
                crate::scratch::Owner::me().tag()
            ))
            .tempdir()?;
        let base = dir.path().canonicalize()?;
        let file = base.join("file");
        std::fs::write(&file, b"")?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000))?;
        let folder = base.join("folder");
        std::fs::create_dir(&folder)?;
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o000))?;
        let probe = base.join("probe");
        std::fs::write(&probe, b"probe")?;
        std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o644))?;
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o711))?;
        let id = |p: &Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
        Ok(Covers {
            _dir: dir,
            ids: (id(&file)?, id(&folder)?),
            file: c_path(&file)?,
            folder: c_path(&folder)?,
            probe: c_path(&probe)?,
        })
    }
}

pub fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// What a command's namespace does to one workspace path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    /// Bound onto itself, read-write: it cannot be renamed or removed (a folder above a control
    /// file or improv's state).
    Pinned,
    /// Bound onto itself read-only (a control file, a `read_only` match).
    ReadOnly,
    /// Covered by the empty file or folder (a hidden path, improv's state).
    Covered,
}

/// One path to guard, ready for the child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub path: CString,
    pub guard: Guard,
    /// What the scan found there: the mount fails the command if the path now leads elsewhere,
    /// or nowhere. `None` for the configured paths, skipped when missing, symlinks followed.
    pub expect: Option<Id>,
}

/// The paths to guard, in mount order, shared by every command until the next scan.
pub type Targets = Arc<Vec<Target>>;

/// The paths guarded whatever the scan finds: control files, improv's state and the folders
/// above them.
pub struct Fixed {
    workspace: PathBuf,
    pub protected: Vec<PathBuf>,
    pub concealed: Vec<PathBuf>,
    pins: Vec<PathBuf>,
}

/// Adds the folders between `workspace` and `path` to `pins`, outermost first, each once.
fn pin_above(workspace: &Path, path: &Path, pins: &mut Vec<PathBuf>, seen: &mut HashSet<PathBuf>) {
    let Ok(rel) = path.strip_prefix(workspace) else {
        return;
    };
    let mut dir = workspace.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for part in parts.iter().take(parts.len().saturating_sub(1)) {
        dir.push(part);
        if seen.insert(dir.clone()) {
            pins.push(dir.clone());
        }
    }
}

impl Fixed {
    /// `protected` and `concealed` as configured; relative ones are taken from the workspace.
    /// The folders between `workspace` and each of them are pinned.
    pub fn new(
        workspace: &Path,
        configured: &Path,
        protected: &[PathBuf],
        concealed: &[PathBuf],
    ) -> Self {
        let place = |p: &PathBuf| {
            let rel = p
                .strip_prefix(workspace)
                .or_else(|_| p.strip_prefix(configured))
                .unwrap_or(p);
            workspace.join(rel)
        };
        let protected: Vec<PathBuf> = protected.iter().map(place).collect();
        let concealed: Vec<PathBuf> = concealed.iter().map(place).collect();
        let (mut pins, mut seen) = (Vec::new(), HashSet::new());
        for path in protected.iter().chain(&concealed) {
            pin_above(workspace, path, &mut pins, &mut seen);
        }
        Fixed {
            workspace: workspace.to_path_buf(),
            protected,
            concealed,
            pins,
        }
    }

    /// The mount order: read-only matches first (what is bound inside one inherits its
    /// read-only flag), then the pins (recursive binds, which carry what is mounted below), the
    /// control files, the hidden paths and improv's state. `Err` past [`MAX_MOUNTS`].
    pub fn targets(&self, scan: &Scan) -> Result<Vec<Target>, ScanError> {
        let mut pins = self.pins.clone();
        let mut seen: HashSet<PathBuf> = pins.iter().cloned().collect();
        for f in &scan.hidden {
            pin_above(&self.workspace, &f.path, &mut pins, &mut seen);
        }
        let count = scan.read_only.len()
            + pins.len()
            + self.protected.len()
            + scan.hidden.len()
            + self.concealed.len();
        if count > MAX_MOUNTS {
            return Err(ScanError::TooManyMounts {
                count,
                max: MAX_MOUNTS,
            });
        }
        // A path with a NUL byte cannot be named to the kernel: refused like an unreadable one.
        self.mounts(scan, &pins).map_err(|e| ScanError::Unreadable {
            path: self.workspace.clone(),
            reason: e.to_string(),
        })
    }

    fn mounts(&self, scan: &Scan, pins: &[PathBuf]) -> io::Result<Vec<Target>> {
        let found = |f: &Found, guard| -> io::Result<Target> {
            Ok(Target {
                path: c_path(&f.path)?,
                guard,
                expect: Some(f.id),
            })
        };
        let fixed = |p: &PathBuf, guard| -> io::Result<Target> {
            Ok(Target {
                path: c_path(p)?,
                guard,
                expect: None,
            })
        };
        let mut out = Vec::new();
        for f in &scan.read_only {
            out.push(found(f, Guard::ReadOnly)?);
        }
        for p in pins {
            out.push(fixed(p, Guard::Pinned)?);
        }
        for p in &self.protected {
            out.push(fixed(p, Guard::ReadOnly)?);
        }
        for f in &scan.hidden {
            out.push(found(f, Guard::Covered)?);
        }
        for p in &self.concealed {
            out.push(fixed(p, Guard::Covered)?);
        }
        Ok(out)
    }
}

/// What the child does to enter its namespaces, prepared before `fork`.
pub struct Plan {
    /// `"uid uid 1"`: the command's uid maps to itself (no privilege is gained; files keep
    /// their owners).
    pub uid_map: Vec<u8>,
    pub gid_map: Vec<u8>,
    pub file: CString,
    pub folder: CString,
    /// The identities of `file` and `folder`.
    pub ids: (Id, Id),
    pub targets: Targets,
    /// The namespace these targets are guarded in already, for a command that joins it
    /// ([`Template`]); `None`: the command makes its own.
    pub template: Option<Arc<Template>>,
}

impl Plan {
    pub fn new(uid: u32, gid: u32, covers: &Covers, targets: Targets) -> Self {
        Plan {
            uid_map: format!("{uid} {uid} 1\n").into_bytes(),
            gid_map: format!("{gid} {gid} 1\n").into_bytes(),
            file: covers.file.clone(),
            folder: covers.folder.clone(),
            ids: covers.ids,
            targets,
            template: None,
        }
    }
}

/// A step of [`enter`] that failed, and why.
pub type Failed = (&'static CStr, Errno);

/// Runs in the forked child before `exec`: system calls only, no allocation (the paths and map
/// lines were built before `fork`). Enters a new user and mount namespace, maps the uid and gid
/// to themselves, makes every mount private and guards each target. A configured path that is
/// missing, or a path the command could not reach anyway, is skipped; a scanned path that is
/// gone or leads elsewhere, and any other failure, fails the command.
pub fn enter(plan: &Plan) -> Result<(), Failed> {
    if let Some(template) = &plan.template {
        return join(plan, template);
    }
    make(plan)
}

/// [`enter`] by making the namespaces: a user and a mount namespace of its own, every target
/// guarded in it.
fn make(plan: &Plan) -> Result<(), Failed> {
    // A uid changed by `run_as` leaves the process undumpable, and /proc/self then belongs
    // to root: the maps could not be written. `exec` sets it again from the program.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::Dumpable)
        .map_err(|e| (c"prctl(PR_SET_DUMPABLE)", e))?;
    // SAFETY: the child is single-threaded and shares no fs info with another process (`fork`
    // and `Sandbox::spawn` copy it; the helper of a `Template` shares only improv's file
    // table, which this leaves alone); only the namespaces change.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNS) }
        .map_err(|e| (c"unshare(CLONE_NEWUSER | CLONE_NEWNS)", e))?;
    map_ids(plan)?;
    rustix::mount::mount_change(
        c"/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| (c"making mounts private", e))?;
    for target in plan.targets.iter() {
        guard(plan, target)?;
    }
    Ok(())
}

/// [`enter`] by joining a [`Template`]: its user namespace, to be allowed into its mount
/// namespace, then its mount namespace, then a user namespace of the command's own nested in
/// the template's. The command holds no capability over the template's user namespace, so it
/// cannot change the shared mounts, and its processes are counted (`RLIMIT_NPROC`) in its own.
/// Joining a mount namespace moves the root and working directory to its root: the caller sets
/// the working directory after.
fn join(plan: &Plan, template: &Template) -> Result<(), Failed> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::Dumpable)
        .map_err(|e| (c"prctl(PR_SET_DUMPABLE)", e))?;
    rustix::thread::move_into_link_name_space(
        template.user.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::User),
    )
    .map_err(|e| (c"setns(the performance's user namespace)", e))?;
    rustix::thread::move_into_link_name_space(
        template.mount.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Mount),
    )
    .map_err(|e| (c"setns(the performance's mount namespace)", e))?;
    // SAFETY: as in `make`: the child shares no file table or fs info with another process.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER) }
        .map_err(|e| (c"unshare(CLONE_NEWUSER)", e))?;
    map_ids(plan)
}

/// Maps the command's uid and gid to themselves in the user namespace it just made.
fn map_ids(plan: &Plan) -> Result<(), Failed> {
    write_proc(c"/proc/self/setgroups", b"deny")?;
    write_proc(c"/proc/self/uid_map", &plan.uid_map)?;
    write_proc(c"/proc/self/gid_map", &plan.gid_map)
}

/// A user and mount namespace with every target of a scan guarded, made once and joined by each
/// command started while it still holds ([`Template::holds`]): making the namespaces and the
/// mounts, and tearing them down at the command's exit, was most of what the sandbox cost a
/// command. Made by a helper that runs [`enter`]'s own steps and exits; the two namespace files
/// keep them alive. Commands cannot mount (no capability in its user namespace, and seccomp),
/// so what they share is what each would have had alone.
pub struct Template {
    user: OwnedFd,
    mount: OwnedFd,
    targets: Targets,
    /// What the mounts stand on, as it was when they were made.
    stamps: Stamps,
    /// Whether every stamp was settled when taken: a later change moves it.
    settled: bool,
    /// The template's root, opened by its helper: the mounts are looked at through it.
    root: OwnedFd,
    /// What each target showed through `root` when the template was made.
    view: View,
    made: Instant,
}

/// How long a template serves at most. Its mounts are private, so a mount the host adds later
/// (an admin's overmount) reaches commands only with a new template; 5 s bounds that delay to
/// about the length of a command, as a forked command keeps the mounts of its start for its
/// whole run, while a template is still made at most once per 5 s of a busy performance (a few
/// milliseconds each).
pub const TEMPLATE_AGE: Duration = Duration::from_secs(5);

/// For each target: the identity and mount id its path leads to in the template (not following
/// a last link), `None` where it leads nowhere. Host stamps miss a mount taken off under a
/// symlinked folder or on a file system with coarse change times; the mounts themselves do not
/// lie: a cover taken off shows the file under it, a bind taken off shows its parent's mount.
#[derive(Debug, PartialEq, Eq)]
struct View(Vec<Option<(Id, u64)>>);

impl View {
    /// Looks at each target through `root` (`openat2` kept inside it, so no link leads out to
    /// the host's mounts); `None` where the kernel cannot say (no `openat2` or no mount id in
    /// `statx`, before Linux 5.8), and a template then serves one command.
    fn take(root: &OwnedFd, targets: &[Target]) -> Option<Self> {
        use rustix::fs::{AtFlags, ResolveFlags, StatxFlags};
        let mut view = Vec::with_capacity(targets.len());
        for target in targets {
            let rel = target.path.to_bytes();
            let rel = rel.strip_prefix(b"/").unwrap_or(rel);
            let rel = if rel.is_empty() { &b"."[..] } else { rel };
            let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd =
                match rustix::fs::openat2(root, rel, flags, Mode::empty(), ResolveFlags::IN_ROOT) {
                    Ok(fd) => fd,
                    Err(Errno::NOENT | Errno::NOTDIR | Errno::ACCESS) => {
                        view.push(None);
                        continue;
                    }
                    Err(_) => return None,
                };
            let mask = StatxFlags::INO | StatxFlags::MNT_ID;
            let st = rustix::fs::statx(&fd, c"", AtFlags::EMPTY_PATH, mask).ok()?;
            if st.stx_mask & mask.bits() != mask.bits() {
                return None;
            }
            let dev = rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor);
            view.push(Some(((dev, st.stx_ino), st.stx_mnt_id)));
        }
        Some(View(view))
    }

    /// Whether every covered target shows a cover (one of `ids`) where it shows anything.
    fn covered(&self, targets: &[Target], ids: (Id, Id)) -> bool {
        targets.iter().zip(&self.0).all(|(target, seen)| {
            target.guard != Guard::Covered || seen.is_none_or(|(id, _)| id == ids.0 || id == ids.1)
        })
    }
}

/// For each target: what its path leads to (not following a link), and its folder's identity
/// and change time; `None` where missing. A mount goes with the entry it was made on when that
/// is renamed, and comes off it in every other namespace when the entry is removed or replaced
/// (unlink, rmdir, or a rename over it), which changes the folder's change time; an entry
/// replaced under the same name changes the identity.
#[derive(Debug, PartialEq, Eq)]
struct Stamps(Vec<(Option<Id>, Option<Folder>)>);

/// A folder's identity and change time.
type Folder = (Id, (i64, i64));

impl Stamps {
    /// The stamps of `targets` now, and whether they are settled (changed at least [`SETTLE`]
    /// before `before`) and reusable: a configured path that is a symlink is guarded where it
    /// leads, which is not stamped, so a template with one is made for one command only.
    fn take(targets: &[Target], before: SystemTime) -> (Self, bool) {
        let mut settled = true;
        let mut stamps = Vec::with_capacity(targets.len());
        for target in targets {
            let path = Path::new(OsStr::from_bytes(target.path.as_bytes()));
            let own = std::fs::symlink_metadata(path).ok();
            if own.as_ref().is_some_and(|m| m.file_type().is_symlink()) {
                settled = false;
            }
            let folder = path
                .parent()
                .and_then(|p| std::fs::symlink_metadata(p).ok())
                .map(|m| {
                    let stamp = Stamp::of(&m);
                    settled &= stamp.settled(before);
                    (stamp.id, stamp.ctime)
                });
            stamps.push((own.map(|m| (m.dev(), m.ino())), folder));
        }
        (Stamps(stamps), settled)
    }
}

impl Template {
    /// Makes the namespaces of `plan` (its template ignored) in a helper: `Err` names the step
    /// that failed, as [`enter`] does.
    pub fn make(plan: &Plan) -> Result<Self, Failed> {
        let before = SystemTime::now();
        let (stamps, settled) = Stamps::take(&plan.targets, before);
        let made = Instant::now();
        let [user, mount, root] = crate::spawn::in_helper(|| {
            make(plan)?;
            let open = |path: &'static CStr, flags| {
                rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty())
                    .map_err(|e| (path, e))
            };
            Ok([
                open(c"/proc/self/ns/user", OFlags::RDONLY)?,
                open(c"/proc/self/ns/mnt", OFlags::RDONLY)?,
                open(c"/", OFlags::PATH | OFlags::DIRECTORY)?,
            ])
        })?;
        let (view, settled) = match View::take(&root, &plan.targets) {
            Some(view) => {
                let covered = view.covered(&plan.targets, plan.ids);
                (view, settled && covered)
            }
            None => (View(Vec::new()), false),
        };
        Ok(Template {
            user,
            mount,
            targets: plan.targets.clone(),
            stamps,
            settled,
            root,
            view,
            made,
        })
    }

    /// Whether a command guarded by `targets` may join this template now: younger than
    /// [`TEMPLATE_AGE`], the same targets, settled stamps still unchanged, and every mount still
    /// where it was made, as seen in the template itself ([`View`]).
    pub fn holds(&self, targets: &[Target]) -> bool {
        self.settled
            && self.made.elapsed() < TEMPLATE_AGE
            && self.targets.as_slice() == targets
            && Stamps::take(targets, SystemTime::now()).0 == self.stamps
            && View::take(&self.root, targets).is_some_and(|view| view == self.view)
    }
}

/// Mounts what `target` asks for onto the very file or folder its path leads to now.
fn guard(plan: &Plan, target: &Target) -> Result<(), Failed> {
    let follow = if target.expect.is_some() {
        OFlags::NOFOLLOW
    } else {
        OFlags::empty()
    };
    let flags = OFlags::PATH | OFlags::CLOEXEC | follow;
    let fd = match rustix::fs::open(target.path.as_c_str(), flags, Mode::empty()) {
        Ok(fd) => fd,
        // Out of the command's reach (a folder on the way it cannot search or change).
        Err(Errno::ACCESS) => return Ok(()),
        Err(Errno::NOENT | Errno::NOTDIR) if target.expect.is_none() => return Ok(()),
        Err(Errno::NOENT | Errno::NOTDIR) => return Err((MOVED, Errno::AGAIN)),
        Err(e) => return Err((c"opening a path to guard", e)),
    };
    let stat = rustix::fs::fstat(&fd).map_err(|e| (c"fstat", e))?;
    let id = (stat.st_dev, stat.st_ino);
    if target.expect.is_some_and(|expect| expect != id) {
        return Err((MOVED, Errno::AGAIN));
    }
    let is_dir = stat.st_mode & libc::S_IFMT == libc::S_IFDIR;
    let mut at = ProcFd::default();
    let at_target = at.of(&fd);
    let (source, recursive, now) = match target.guard {
        Guard::Covered if is_dir => (plan.folder.as_c_str(), false, plan.ids.1),
        Guard::Covered => (plan.file.as_c_str(), false, plan.ids.0),
        Guard::Pinned | Guard::ReadOnly => (at_target, is_dir, id),
    };
    let bound = if recursive {
        rustix::mount::mount_bind_recursive(source, at_target)
    } else {
        rustix::mount::mount_bind(source, at_target)
    };
    bound.map_err(|e| (c"binding a guarded path", e))?;
    drop(fd);
    if target.guard == Guard::Pinned {
        return Ok(());
    }
    // The path now leads to the new mount, checked by what it holds: make that read-only.
    let fd = rustix::fs::open(target.path.as_c_str(), flags, Mode::empty())
        .map_err(|_| (MOVED, Errno::AGAIN))?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| (c"fstat", e))?;
    if (stat.st_dev, stat.st_ino) != now {
        return Err((MOVED, Errno::AGAIN));
    }
    remount_read_only(&fd)
}

const MOVED: &CStr =
    c"a guarded workspace path moved while the command started (run it again); guarding it";

/// Remounts the mount whose root `fd` is read-only, keeping the flags the kernel locks (those
/// of the mount it was bound from), and checks that it took.
fn remount_read_only(fd: &OwnedFd) -> Result<(), Failed> {
    let mut at = ProcFd::default();
    let path = at.of(fd);
    let now = rustix::fs::fstatvfs(fd)
        .map_err(|e| (c"fstatvfs", e))?
        .f_flag;
    let mut flags = MountFlags::BIND | MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
    for (has, keep) in [
        (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (StatVfsMountFlags::NODIRATIME, MountFlags::NODIRATIME),
    ] {
        if now.contains(has) {
            flags |= keep;
        }
    }
    if !now.intersects(StatVfsMountFlags::NOATIME | StatVfsMountFlags::RELATIME) {
        flags |= MountFlags::STRICTATIME;
    }
    rustix::mount::mount_remount(path, flags, c"")
        .map_err(|e| (c"making a guarded path read-only", e))?;
    let after = rustix::fs::fstatvfs(fd)
        .map_err(|e| (c"fstatvfs", e))?
        .f_flag;
    if !after.contains(StatVfsMountFlags::RDONLY) {
        return Err((c"making a guarded path read-only", Errno::ROFS));
    }
    Ok(())
}

/// `/proc/self/fd/N` for an open file, written without allocating: mounting onto it reaches
/// that very file, whatever its path leads to by now.
#[derive(Default)]
struct ProcFd([u8; 32]);

impl ProcFd {
    fn of(&mut self, fd: &impl AsFd) -> &CStr {
        use std::os::fd::AsRawFd;
        const PREFIX: &[u8] = b"/proc/self/fd/";
        self.0 = [0; 32];
        self.0[..PREFIX.len()].copy_from_slice(PREFIX);
        let mut n = fd.as_fd().as_raw_fd().unsigned_abs();
        let mut digits = [0u8; 10];
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for (i, d) in digits[..len].iter().rev().enumerate() {
            self.0[PREFIX.len() + i] = *d;
        }
        // The buffer ends in zeros: PREFIX and ten digits at most leave room for them.
        CStr::from_bytes_until_nul(&self.0).unwrap_or(c"/proc/self/fd/")
    }
}

fn write_proc(path: &'static CStr, data: &[u8]) -> Result<(), Failed> {
    let fd = rustix::fs::open(path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| (path, e))?;
    match rustix::io::write(&fd, data) {
        Ok(n) if n == data.len() => Ok(()),
        Ok(_) => Err((path, Errno::IO)),
        Err(e) => Err((path, e)),
    }
}

/// Workspace files git tracks whose names are hidden: their contents stay readable to commands
/// through git's objects (`git show HEAD:.env`). From `git ls-files`, run by improv with a fixed
/// argv, no hooks and no fsmonitor. `Err` says why the index could not be read.
pub fn tracked_hidden(workspace: &Path, hidden: &HiddenGlobs) -> Result<Vec<PathBuf>, String> {
    if hidden.is_empty() || !workspace.join(".git").exists() {
        return Ok(Vec::new());
    }
    let mut git = std::process::Command::new("git");
    crate::open_files::restore_in(&mut git);
    let out = git
        .args([
            "-c",
            "core.fsmonitor=false",
            "-c",
            "core.hooksPath=/dev/null",
            "--no-optional-locks",
            "ls-files",
            "-z",
        ])
        .current_dir(workspace)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .output()
        .map_err(|e| format!("git: {e}"))?;
    if !out.status.success() {
        // The first line only: git names what it could not read, nothing of its content.
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(stderr.lines().next().unwrap_or("git failed").to_string());
    }
    Ok(out
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| PathBuf::from(OsStr::from_bytes(p)))
        .filter(|p| {
            hidden
                .hidden_by(p, || {
                    open_to_judge(&workspace.join(p)).map_or(true, |f| holds_secret(&f))
                })
                .is_some()
        })
        .collect())
}

/// Whether this kernel lets a command of `uid`/`gid` (`run_as`, or improv's own) enter the
/// namespaces and cover a file: a forked child tries it on the probe file and exits. `Err` says
/// which step failed and why (user namespaces disabled, or without the right to mount).
pub fn probe(covers: &Covers, run_as: Option<(u32, u32)>) -> Result<(), String> {
    let (uid, gid) = run_as.unwrap_or_else(|| {
        (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        )
    });
    let target = covers.probe.clone();
    let plan = Plan::new(
        uid,
        gid,
        covers,
        Arc::new(vec![Target {
            path: target.clone(),
            guard: Guard::Covered,
            expect: None,
        }]),
    );
    let (reader, writer) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: the child only makes system calls (setgid, setuid, those of `enter`, write and
    // _exit) on memory prepared before the fork, which is what is safe in the child of a
    // multi-threaded process.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(reader);
        let result = (|| -> Result<(), Failed> {
            if let Some((uid, gid)) = run_as {
                // SAFETY: plain system calls with integer arguments.
                if unsafe { libc::setgid(gid) } != 0 || unsafe { libc::setuid(uid) } != 0 {
                    return Err((c"setuid to run_as", Errno::PERM));
                }
            }
            enter(&plan)?;
            // The probe file must now be the cover.
            let seen = rustix::fs::stat(target.as_c_str()).map_err(|e| (c"stat", e))?;
            let cover = rustix::fs::stat(plan.file.as_c_str()).map_err(|e| (c"stat", e))?;
            if (seen.st_dev, seen.st_ino) == (cover.st_dev, cover.st_ino) {
                Ok(())
            } else {
                Err((c"covering the probe file", Errno::EXIST))
            }
        })();
        let code = match result {
            Ok(()) => 0,
            Err((step, errno)) => {
                let raw = errno.raw_os_error().to_ne_bytes();
                let _ = rustix::io::write(&writer, &raw);
                let _ = rustix::io::write(&writer, step.to_bytes());
                1
            }
        };
        // SAFETY: leaves the child at once, without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    drop(writer);
    let mut status = 0;
    // SAFETY: waits for the child we just forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let mut message = Vec::new();
    let mut buf = [0u8; 256];
    while let Ok(n) = rustix::io::read(&reader, &mut buf) {
        if n == 0 {
            break;
        }
        message.extend_from_slice(&buf[..n]);
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        return Ok(());
    }
    if message.len() < 4 {
        return Err(format!("the probe process failed (status {status})"));
    }
    let errno = i32::from_ne_bytes([message[0], message[1], message[2], message[3]]);
    Err(format!(
        "{}: {}",
        String::from_utf8_lossy(&message[4..]),
        io::Error::from_raw_os_error(errno)
    ))
}
