//! The stage's control plane: the workspace files that set up later performances or run with
//! the director's rights, which an actor must not change — or it would go around its edges the
//! next time improv, an MCP server or git reads them. [`ControlPlane::of`] is the one place
//! that decides what they are; [`crate::cast::edges`] keeps them out of reach: read-only to
//! commands (read-only bind mounts in each command's mount namespace) and to the write props,
//! and improv's state invisible to both.
//!
//! What counts, and why:
//! - the stage file: it sets the edges of the next performance (`sandbox = "off"`);
//! - `.improv/` (concealed, never opened): the event logs, director notes, the serve token and
//!   the databases. An actor that could write it would forge its own log or plant notes;
//! - the stdio MCP servers' program when it is a path, the existing files among their
//!   arguments, and their `cwd` when it is a folder of its own: improv starts them
//!   unsandboxed. What those files load is not followed; a `cwd` covers a server's folder;
//! - the skills folders, every `AGENTS.md` and the `[context] files`: the next prompt;
//! - git's `config` (and `config.worktree`) and `hooks`, of the repository and of its
//!   submodules under `.git/modules`: the user's next git command runs what they name.
//!   `.git/info` stays as `read_only` says: excludes, attributes and sparse patterns run
//!   nothing by themselves (attributes only name drivers the config defines);
//! - a SQLite store this process opened ([`conceal_store_file`]), with its `-wal`, `-shm` and
//!   `-journal` files, when it lies in the workspace (`improv worker --store sqlite:./s.db`):
//!   it holds the approvals and director notes, so a command that could write it would answer
//!   its own `ask` or plant a note. A process-wide list, as the store is opened once by the
//!   command (worker, serve, door) and every cast it builds afterwards must leave it out.
//!
//! `writable` under `[edges]` opens listed files or folders (a name like `AGENTS.md` opens it
//! wherever it is). Files outside the workspace need nothing: actors cannot reach them.

use async_trait::async_trait;
use improv_edges::{Approval, ApprovalRequest, Approver};
use improv_kernel::prop::{Layer, Wrapped};
use improv_kernel::{Prop, PropContext, PropError};
use improv_stage::Stage;
use improv_workspace::normalize;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The serve token's file name inside the stage's state folder.
pub const SERVE_TOKEN_FILE: &str = "serve.token";

/// The name the serve token is redacted as: `[redacted:IMPROV_SERVE_TOKEN]`.
pub const SERVE_TOKEN_NAME: &str = "IMPROV_SERVE_TOKEN";

/// File names protected wherever they are in the workspace: subfolders' AGENTS.md reach the
/// model with the results of calls below them.
const PROTECTED_NAMES: [&str; 1] = [improv_skills::AGENTS_FILE];

/// How deep submodules are looked for under `.git/modules` (a submodule's own submodules
/// are a level down each).
const MODULE_DEPTH: usize = 6;

/// The files SQLite keeps beside a database: its write-ahead log, the log's index and the
/// rollback journal, each as much the store as the database file itself.
const SQLITE_SIDE_FILES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// The SQLite stores this process opened ([`conceal_store_file`]), as absolute paths.
static STORE_FILES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Keeps the SQLite store at `path` and its side files out of every actor's reach in every
/// performance this process casts from now on, as `.improv/` is: neither readable nor
/// writable by commands or the file props. Call it once the store is open, before any
/// performance is cast; a path outside a performance's workspace changes nothing there.
///
/// A mount can only cover a file that exists, and a rollback journal a command planted would
/// be played into the database by the next process to open it; so an empty `-journal` is
/// made when there is none, to be covered. SQLite in WAL mode never writes it, and an empty
/// journal is not played back.
pub fn conceal_store_file(path: &Path) {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    // SQLite follows a link to the database and keeps its side files beside the file it
    // reaches, so the files to cover are named from the fully resolved path, not the link's.
    let path = match std::fs::canonicalize(&path) {
        Ok(resolved) => resolved,
        Err(_) => match (path.parent(), path.file_name()) {
            (Some(dir), Some(name)) => canonical(dir).join(name),
            _ => path,
        },
    };
    let journal = side_file(&path, "-journal");
    if let Err(e) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&journal)
    {
        tracing::warn!(
            "cannot make {} to keep it from the actors ({e}); a store in a stage's workspace is then exposed to its commands: keep the store outside every workspace",
            journal.display()
        );
    }
    // A poisoned list is still a list: a panic elsewhere cannot leave it half-pushed.
    let mut files = STORE_FILES.lock().unwrap_or_else(PoisonError::into_inner);
    if !files.contains(&path) {
        files.push(path);
    }
}

fn side_file(db: &Path, suffix: &str) -> PathBuf {
    let mut side = db.as_os_str().to_os_string();
    side.push(suffix);
    PathBuf::from(side)
}

/// A SQLite database `db` and its side files: every file that holds the store.
pub fn sqlite_files(db: &Path) -> impl Iterator<Item = PathBuf> + '_ {
    std::iter::once(db.to_path_buf()).chain(SQLITE_SIDE_FILES.map(|suffix| side_file(db, suffix)))
}

/// The files of every store [`conceal_store_file`] named: each database and its side files.
fn store_files() -> Vec<PathBuf> {
    let files = STORE_FILES.lock().unwrap_or_else(PoisonError::into_inner);
    files.iter().flat_map(|db| sqlite_files(db)).collect()
}

/// A stage's control files in one workspace, as workspace-relative paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlPlane {
    workspace: PathBuf,
    /// Actors may read these but not change, rename or remove them.
    protected: Vec<PathBuf>,
    /// Actors can neither read nor change these.
    concealed: Vec<PathBuf>,
    /// File names protected in every folder, unless opened.
    names: Vec<&'static str>,
}

impl ControlPlane {
    /// The control files of `stage` performed in `workspace` (canonical), less those the
    /// stage opens with `writable`.
    pub fn of(stage: &Stage, workspace: &Path) -> ControlPlane {
        let dir = canonical(&stage.dir);
        let mut files = vec![dir.join(file_name(&stage.path))];
        files.extend(mcp_files(stage, &dir, workspace));
        files.extend(stage.context.skills.iter().map(|s| dir.join(s)));
        files.extend(stage.context.files.iter().map(|f| dir.join(f)));
        files.extend(git_files(workspace));
        // The routines: approval is a field in each file, so an actor that could write one
        // could approve its own steps for replay without a model or the director.
        files.push(dir.join(improv_routine::routine::DIR));
        let opened = |rel: &Path| stage.edges.writable.iter().any(|w| rel.starts_with(w));
        let mut protected: Vec<PathBuf> = Vec::new();
        for file in files {
            for rel in inside(workspace, &file) {
                if !opened(&rel) && !protected.contains(&rel) {
                    protected.push(rel);
                }
            }
        }
        let state = canonical(&crate::state_dir(stage));
        let mut concealed: Vec<PathBuf> = inside(workspace, &state).into_iter().take(1).collect();
        for file in store_files() {
            for rel in inside(workspace, &file) {
                if !concealed.iter().any(|c| rel.starts_with(c)) {
                    concealed.push(rel);
                }
            }
        }
        ControlPlane {
            workspace: workspace.to_path_buf(),
            protected,
            concealed,
            names: PROTECTED_NAMES
                .into_iter()
                .filter(|n| !opened(Path::new(n)))
                .collect(),
        }
    }

    /// For commands: the protected files, as absolute paths (missing ones too).
    pub fn protected_paths(&self) -> Vec<PathBuf> {
        absolute(&self.workspace, &self.protected)
    }

    /// For commands: the concealed folders, as absolute paths (missing ones too).
    pub fn concealed_paths(&self) -> Vec<PathBuf> {
        absolute(&self.workspace, &self.concealed)
    }

    /// Globs of the names protected in every folder (`AGENTS.md`), for commands and props.
    pub fn name_globs(&self) -> Vec<String> {
        self.names.iter().map(|n| n.to_string()).collect()
    }

    /// For the file props: every protected path as a glob anchored at the workspace root,
    /// and the protected names.
    pub fn read_only_globs(&self) -> Vec<String> {
        let mut globs = anchored(&self.protected);
        globs.extend(self.name_globs());
        globs
    }

    /// For the file props: the concealed paths, anchored globs.
    pub fn hidden_globs(&self) -> Vec<String> {
        anchored(&self.concealed)
    }
}

/// The serve token of `stage`, when `improv serve` has made one: every performance redacts
/// it, so it is never logged nor sent to a model even if it leaked.
pub fn serve_token(stage: &Stage) -> Option<String> {
    let path = crate::state_dir(stage).join(SERVE_TOKEN_FILE);
    let token = std::fs::read_to_string(path).ok()?;
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_string())
}

/// Whether actors of `stage` can reach `path`: inside the workspace and outside improv's
/// state folder (what does not exist yet is judged by its nearest existing folder). Where the
/// director keeps a secret of theirs, such as a `--token-file`, this must be false.
pub fn within_reach(stage: &Stage, path: &Path) -> bool {
    let workspace = canonical(&stage.workspace());
    let state = canonical(&crate::state_dir(stage));
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = normalize(&path);
    let mut rest = Vec::new();
    while existing.symlink_metadata().is_err() {
        let Some(name) = existing.file_name().map(|n| n.to_os_string()) else {
            break;
        };
        rest.push(name);
        existing.pop();
    }
    let mut real = canonical(&existing);
    real.extend(rest.iter().rev());
    real.starts_with(&workspace) && !real.starts_with(&state)
}

/// Whether a performance has held the serve token: a tool call that carried it in its
/// arguments or showed it in its output. The token is concealed and redacted, so this only
/// trips when it leaked some other way; a performance that holds it could answer its own
/// approvals through the API, so from then on its `ask` rules are denied without asking.
pub(crate) struct TokenWatch {
    token: Option<String>,
    seen: AtomicBool,
}

impl TokenWatch {
    pub(crate) fn new(token: Option<String>) -> Self {
        TokenWatch {
            token,
            seen: AtomicBool::new(false),
        }
    }

    pub(crate) fn value(&self) -> Option<&str> {
        self.token.as_deref()
    }

    fn look(&self, text: &str) {
        if let Some(token) = &self.token
            && text.contains(token.as_str())
        {
            self.seen.store(true, Ordering::SeqCst);
        }
    }

    fn seen(&self) -> bool {
        self.seen.load(Ordering::SeqCst)
    }
}

/// A prop whose calls the [`TokenWatch`] sees, before redaction: `Watched::new(prop, watch)`.
pub(crate) type Watched = Wrapped<Arc<TokenWatch>>;

#[async_trait]
impl Layer for TokenWatch {
    async fn call(
        &self,
        inner: &dyn Prop,
        arguments: Value,
        context: &PropContext,
    ) -> Result<String, PropError> {
        if self.token.is_none() {
            return inner.call(arguments, context).await;
        }
        self.look(&arguments.to_string());
        let out = inner.call(arguments, context).await;
        match &out {
            Ok(text) => self.look(text),
            Err(e) => self.look(e.message()),
        }
        out
    }
}

/// Asks the director only while the performance has not held the serve token.
pub(crate) struct DirectorOnly {
    inner: Arc<dyn Approver>,
    watch: Arc<TokenWatch>,
}

impl DirectorOnly {
    pub(crate) fn new(inner: Arc<dyn Approver>, watch: Arc<TokenWatch>) -> Self {
        DirectorOnly { inner, watch }
    }
}

#[async_trait]
impl Approver for DirectorOnly {
    async fn ask(&self, request: &ApprovalRequest) -> Approval {
        if self.watch.seen() {
            return Approval::Deny {
                note: Some(
                    "not asked: this performance has held the director's serve token, so improv asks the director nothing more for it; do without it, or finish and say that it is needed".into(),
                ),
            };
        }
        self.inner.ask(request).await
    }
}

fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}

fn file_name(path: &Path) -> &std::ffi::OsStr {
    path.file_name()
        .unwrap_or(improv_stage::STAGE_FILE.as_ref())
}

/// `path` relative to `workspace`, without `.` or `..`, when it lies inside it (not the
/// workspace itself); and, for a link, its target's path too.
fn inside(workspace: &Path, path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut candidates = vec![normalize(path)];
    if let Ok(real) = path.canonicalize()
        && !candidates.contains(&real)
    {
        candidates.push(real);
    }
    for p in candidates {
        if let Ok(rel) = p.strip_prefix(workspace)
            && !rel.as_os_str().is_empty()
        {
            out.push(rel.to_path_buf());
        }
    }
    out
}

/// Every path, whether it exists yet or not: the sandbox skips a missing one for each command
/// and guards it from the first command after it appears.
fn absolute(workspace: &Path, rels: &[PathBuf]) -> Vec<PathBuf> {
    rels.iter().map(|r| workspace.join(r)).collect()
}

fn anchored(rels: &[PathBuf]) -> Vec<String> {
    rels.iter()
        .map(|r| format!("/{}", r.to_string_lossy()))
        .collect()
}

/// The files of the stage's stdio MCP servers that improv starts unsandboxed: a program given
/// as a path, the arguments that are files, and a `cwd`.
fn mcp_files(stage: &Stage, dir: &Path, workspace: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for server in &stage.mcp {
        let Some(command) = &server.command else {
            continue; // A server over HTTP runs elsewhere.
        };
        if command.contains('/') {
            out.push(dir.join(command));
        }
        let cwd = match &server.cwd {
            Some(c) => {
                out.push(dir.join(c));
                dir.join(c)
            }
            None => workspace.to_path_buf(),
        };
        out.extend(
            server
                .args
                .iter()
                .map(|a| cwd.join(a))
                .filter(|p| p.is_file()),
        );
    }
    out
}

/// git's config and hooks, of the repository and of its submodules.
fn git_files(workspace: &Path) -> Vec<PathBuf> {
    let git = workspace.join(".git");
    if !git.is_dir() {
        return Vec::new();
    }
    let mut dirs = vec![git.clone()];
    let mut level = vec![git.join("modules")];
    for _ in 0..MODULE_DEPTH {
        let mut next = Vec::new();
        for modules in level {
            let Ok(entries) = std::fs::read_dir(&modules) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.join("config").is_file() {
                    next.push(path.join("modules"));
                    dirs.push(path);
                }
            }
        }
        level = next;
    }
    dirs.iter()
        .flat_map(|d| ["config", "config.worktree", "hooks"].map(|f| d.join(f)))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn plane(toml: &str, files: &[&str]) -> (tempfile::TempDir, ControlPlane) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for f in files {
            let p = root.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        std::fs::write(root.join("stage.toml"), toml).unwrap();
        let stage = Stage::load(&root).unwrap();
        let plane = ControlPlane::of(&stage, &root);
        (dir, plane)
    }

    #[test]
    fn the_control_files_of_a_stage() {
        let (dir, plane) = plane(
            "[[props.mcp]]\nname = \"s\"\ncommand = \"python3\"\nargs = [\"-u\", \"tools/server.py\", \"missing.py\"]\n\
             [[props.mcp]]\nname = \"t\"\ncommand = \"./bin/t\"\ncwd = \"mcp\"\n",
            &[
                "tools/server.py",
                ".git/config",
                ".git/hooks/pre-commit",
                ".git/modules/sub/config",
            ],
        );
        let globs = plane.read_only_globs();
        for g in [
            "/stage.toml",
            "/tools/server.py",
            "/bin/t",
            "/mcp",
            "/skills",
            "/AGENTS.md",
            "/README.md",
            "/.git/config",
            "/.git/hooks",
            "/.git/modules/sub/config",
            "/.git/modules/sub/hooks",
            "/routines",
            "AGENTS.md",
        ] {
            assert!(globs.contains(&g.to_string()), "{g} in {globs:?}");
        }
        assert!(!globs.iter().any(|g| g.contains("missing.py") || g == "/-u"));
        assert_eq!(plane.hidden_globs(), ["/.improv"]);
        let root = dir.path().canonicalize().unwrap();
        let paths = plane.protected_paths();
        assert!(paths.contains(&root.join("tools/server.py")));
        assert!(paths.contains(&root.join(".git/hooks")));
        // A control file missing now is handed on too: the sandbox guards it once it appears.
        assert!(paths.contains(&root.join("skills")), "missing: handed on");
    }

    #[test]
    fn writable_opens_control_files_but_never_the_state() {
        let (_dir, plane) = plane(
            "[edges]\nwritable = [\"skills\", \"AGENTS.md\", \".git\"]\n",
            &[".git/config"],
        );
        let globs = plane.read_only_globs();
        assert!(globs.contains(&"/stage.toml".to_string()));
        assert!(!globs.iter().any(|g| g.contains("skills")), "{globs:?}");
        assert!(!globs.iter().any(|g| g.contains("AGENTS.md")), "{globs:?}");
        assert!(!globs.iter().any(|g| g.contains(".git")), "{globs:?}");
        assert_eq!(plane.hidden_globs(), ["/.improv"]);
    }

    #[test]
    fn a_linked_control_file_protects_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("docs")).unwrap();
        std::fs::write(root.join("docs/rules.md"), "rules").unwrap();
        std::os::unix::fs::symlink("docs/rules.md", root.join("AGENTS.md")).unwrap();
        let stage = Stage::default_in(&root);
        let globs = ControlPlane::of(&stage, &root).read_only_globs();
        assert!(globs.contains(&"/docs/rules.md".to_string()), "{globs:?}");
    }

    #[test]
    fn a_token_file_is_within_reach_in_the_workspace_but_not_in_the_state() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let stage = Stage::default_in(&root);
        assert!(within_reach(&stage, &root.join("tok")));
        assert!(within_reach(&stage, &root.join("new/dir/tok")));
        assert!(!within_reach(&stage, &root.join(".improv/serve.token")));
        assert!(!within_reach(&stage, &root.join("x/../.improv/t")));
        assert!(!within_reach(&stage, &outside.path().join("tok")));
        std::os::unix::fs::symlink(&root, outside.path().join("link")).unwrap();
        assert!(within_reach(&stage, &outside.path().join("link/tok")));
    }

    #[test]
    fn a_sqlite_store_in_the_workspace_is_concealed_with_its_side_files() {
        let (dir, _) = plane("", &[]);
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("store.db"), "x").unwrap();
        conceal_store_file(&dir.path().join("./store.db"));
        let stage = Stage::load(&root).unwrap();
        let plane = ControlPlane::of(&stage, &root);
        assert_eq!(
            plane.hidden_globs(),
            [
                "/.improv",
                "/store.db",
                "/store.db-wal",
                "/store.db-shm",
                "/store.db-journal"
            ]
        );
        assert!(
            root.join("store.db-journal").is_file(),
            "made, to be covered"
        );
        assert!(plane.concealed_paths().contains(&root.join("store.db-wal")));
    }

    #[test]
    fn a_store_named_through_a_link_is_concealed_where_sqlite_keeps_its_side_files() {
        // An actor's `ln -s data/x.db store.db`: SQLite writes data/x.db-wal and -journal.
        let (dir, _) = plane("", &[]);
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("data")).unwrap();
        std::fs::write(root.join("data/x.db"), "x").unwrap();
        std::os::unix::fs::symlink("data/x.db", root.join("linked.db")).unwrap();
        conceal_store_file(&root.join("linked.db"));
        let stage = Stage::load(&root).unwrap();
        let plane = ControlPlane::of(&stage, &root);
        let concealed = plane.concealed_paths();
        for file in ["data/x.db", "data/x.db-wal", "data/x.db-journal"] {
            assert!(
                concealed.contains(&root.join(file)),
                "{file}: {concealed:?}"
            );
        }
        assert!(
            root.join("data/x.db-journal").is_file(),
            "made, to be covered"
        );
    }

    #[test]
    fn files_outside_the_workspace_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let work = root.join("work");
        std::fs::create_dir(&work).unwrap();
        let stage = Stage::default_in(&root);
        let plane = ControlPlane::of(&stage, &work);
        assert_eq!(plane.read_only_globs(), ["AGENTS.md"]);
        assert!(plane.hidden_globs().is_empty());
    }
}
