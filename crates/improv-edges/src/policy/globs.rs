//! The path globs of the edges: hidden paths (by name, or by content for files named like key
//! material) and read-only paths, matched against workspace-relative paths the way
//! `.gitignore` matches them.

use globset::{GlobBuilder, GlobMatcher};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

/// Paths no prop may read or write, nor any command, unless the stage says otherwise.
pub const DEFAULT_HIDDEN: [(&str, HiddenKind); 8] = [
    (".env", HiddenKind::Name),
    (".env.*", HiddenKind::Name),
    ("*.pem", HiddenKind::KeyMaterial),
    ("*.key", HiddenKind::KeyMaterial),
    ("id_rsa*", HiddenKind::Name),
    ("id_ed25519*", HiddenKind::Name),
    (".netrc", HiddenKind::Name),
    (".npmrc", HiddenKind::Name),
];

/// [`DEFAULT_HIDDEN`] as a configuration holds it.
pub fn default_hidden() -> Vec<Hidden> {
    DEFAULT_HIDDEN
        .iter()
        .map(|&(glob, kind)| Hidden {
            glob: glob.to_string(),
            kind,
        })
        .collect()
}

/// How a hidden glob decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HiddenKind {
    /// What matches is hidden by its name alone: every glob a stage declares, and most defaults.
    Name,
    /// The name of key material (`*.pem`, `*.key`), which public certificates and CA bundles
    /// share (`certifi/cacert.pem` in every Python environment): a file matched by no other
    /// glob is hidden only when [`holds_secret`] says so, a folder so named always.
    KeyMaterial,
}

/// A hidden glob and how it decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hidden {
    pub glob: String,
    pub kind: HiddenKind,
}

/// A glob as a stage declares it: by name.
impl From<String> for Hidden {
    fn from(glob: String) -> Self {
        Hidden {
            glob,
            kind: HiddenKind::Name,
        }
    }
}

impl From<&str> for Hidden {
    fn from(glob: &str) -> Self {
        Hidden::from(glob.to_string())
    }
}

impl std::fmt::Display for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.glob)
    }
}

/// How much of a file named like key material is read to judge it; a larger one is secret.
/// The whole file is read, not its head: a certificate chain with its key appended (as some
/// servers take it) holds the key past the first certificates.
pub const KEY_MATERIAL_MAX: u64 = 1 << 20;

/// PEM blocks that hold nothing secret.
const PUBLIC_PEM: [&str; 4] = [
    "CERTIFICATE",
    "TRUSTED CERTIFICATE",
    "X509 CRL",
    "PUBLIC KEY",
];

/// Whether a file named like key material, opened by the caller (so that what is judged is
/// what it opened), must stay hidden. Public only when it is a regular file of at most
/// [`KEY_MATERIAL_MAX`] bytes of UTF-8 text holding one or more PEM blocks, each a
/// certificate, a CRL or a public key, with nothing but blank lines and `#` comments between
/// them, and no `PRIVATE KEY` anywhere. Anything else (a private key of any kind, binary DER, a
/// token, an empty file, a file that cannot be read) is secret: the check fails closed.
pub fn holds_secret(file: &std::fs::File) -> bool {
    use std::io::Read;
    let Ok(meta) = file.metadata() else {
        return true;
    };
    if !meta.is_file() || meta.len() > KEY_MATERIAL_MAX {
        return true;
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    match file.take(KEY_MATERIAL_MAX + 1).read_to_end(&mut bytes) {
        Ok(n) if n as u64 <= KEY_MATERIAL_MAX => !is_public_pem(&bytes),
        _ => true,
    }
}

/// Whether `bytes` are PEM text of public blocks only (see [`holds_secret`]).
fn is_public_pem(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    if text.contains("PRIVATE KEY") {
        return false;
    }
    let label = |line: &str, edge: &str| {
        line.strip_prefix(edge)
            .and_then(|l| l.strip_suffix("-----"))
            .map(str::to_string)
    };
    let (mut open, mut blocks) = (None::<String>, 0);
    for line in text.lines().map(str::trim_end) {
        match &open {
            None => match label(line, "-----BEGIN ") {
                Some(l) if PUBLIC_PEM.contains(&l.as_str()) => open = Some(l),
                Some(_) => return false,
                None if line.trim_start().is_empty() || line.starts_with('#') => {}
                None => return false,
            },
            Some(l) => match label(line, "-----END ") {
                Some(end) if &end == l => {
                    open = None;
                    blocks += 1;
                }
                Some(_) => return false,
                None if line.starts_with("-----") => return false,
                None => {}
            },
        }
    }
    open.is_none() && blocks > 0
}

/// What a path's name says, before its content is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ByName<'a> {
    Shown,
    /// Hidden by the glob named.
    Hidden(&'a str),
    /// A file named only like key material: hidden if [`holds_secret`] says so.
    KeyMaterial(&'a str),
}

/// The hidden globs, compiled and matched whatever the ASCII case of a path (`.ENV` is as
/// hidden as `.env`): the one place that says whether a workspace path is hidden, for the file
/// props ([`Guarded`]) and for commands (the scan of [`crate::namespace::Scanner`]) alike.
pub struct HiddenGlobs {
    globs: Vec<(PathGlob, HiddenKind, String)>,
}

impl HiddenGlobs {
    pub fn new(hidden: &[Hidden]) -> Result<Self, GlobError> {
        let globs = hidden
            .iter()
            .map(|h| {
                let glob = PathGlob::new(&h.glob.to_ascii_lowercase()).map_err(|e| GlobError {
                    glob: h.glob.clone(),
                    source: e.source,
                })?;
                Ok((glob, h.kind, h.glob.clone()))
            })
            .collect::<Result<_, GlobError>>()?;
        Ok(HiddenGlobs { globs })
    }

    pub fn is_empty(&self) -> bool {
        self.globs.is_empty()
    }

    /// The globs as the stage says them, comma-separated.
    pub fn text(&self) -> String {
        let texts: Vec<&str> = self.globs.iter().map(|(_, _, t)| t.as_str()).collect();
        texts.join(", ")
    }

    /// What the name of `rel` (relative to the workspace) says. A name glob wins over a
    /// key-material one; a folder above named like key material hides all it holds (a folder
    /// has no content to judge).
    pub fn by_name(&self, rel: &Path) -> ByName<'_> {
        if self.globs.is_empty() {
            return ByName::Shown;
        }
        let folded = PathBuf::from(OsString::from_vec(
            rel.as_os_str().as_bytes().to_ascii_lowercase(),
        ));
        let above = folded.parent().unwrap_or(Path::new(""));
        let mut key_material = None;
        for (glob, kind, text) in &self.globs {
            if !glob.matches(&folded) {
                continue;
            }
            match kind {
                HiddenKind::Name => return ByName::Hidden(text),
                HiddenKind::KeyMaterial if glob.matches(above) => return ByName::Hidden(text),
                HiddenKind::KeyMaterial => key_material = key_material.or(Some(text.as_str())),
            }
        }
        key_material.map_or(ByName::Shown, ByName::KeyMaterial)
    }

    /// The glob that hides `rel`, if one does: by name, or, for a file named only like key
    /// material, when `secret` (its [`holds_secret`] verdict) says so.
    pub fn hidden_by(&self, rel: &Path, secret: impl FnOnce() -> bool) -> Option<&str> {
        match self.by_name(rel) {
            ByName::Shown => None,
            ByName::Hidden(glob) => Some(glob),
            ByName::KeyMaterial(glob) => secret().then_some(glob),
        }
    }
}

/// Paths props may read but not write unless the stage allows it: git's internals.
pub const DEFAULT_READ_ONLY: [&str; 1] = [".git"];

/// A rule or glob that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("edges: `{glob}` is not a valid glob ({source}); fix it in [edges] of stage.toml")]
pub struct GlobError {
    pub glob: String,
    #[source]
    pub source: globset::Error,
}

/// A glob on a workspace-relative path: with a `/` it matches the path (or a folder above it);
/// without one it matches any component (`.env*` hides `config/.env.local`, `.git` everything
/// in `.git/`). A leading `/` anchors it at the workspace root, as in `.gitignore`
/// (`/stage.toml` is the root's stage file only).
#[derive(Clone, Debug)]
pub(crate) struct PathGlob {
    pub(crate) text: String,
    matcher: GlobMatcher,
    whole_path: bool,
}

/// The most compiled globs kept for reuse; past it the cache starts again (a process sees
/// few distinct globs: its stages' and the defaults).
const COMPILED_KEPT: usize = 1024;

impl PathGlob {
    /// The glob for `text`, compiled once per process and then shared (a clone shares the
    /// compiled regex): a worker builds the edges of every performance it holds, and compiling
    /// the same default globs each time was most of a waiting performance's memory.
    pub(crate) fn new(text: &str) -> Result<Self, GlobError> {
        static COMPILED: std::sync::Mutex<Option<std::collections::HashMap<String, PathGlob>>> =
            std::sync::Mutex::new(None);
        // Poisoned only by a panic inside a map operation; the map is still whole.
        let lock = || COMPILED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(glob) = lock().as_ref().and_then(|m| m.get(text)) {
            return Ok(glob.clone());
        }
        let glob = PathGlob::compile(text)?;
        let mut compiled = lock();
        let map = compiled.get_or_insert_with(Default::default);
        if map.len() >= COMPILED_KEPT {
            map.clear();
        }
        map.insert(text.to_string(), glob.clone());
        Ok(glob)
    }

    fn compile(text: &str) -> Result<Self, GlobError> {
        let anchored = text.strip_prefix('/');
        let trimmed = anchored.unwrap_or(text).trim_end_matches('/');
        let matcher = GlobBuilder::new(trimmed)
            .literal_separator(true)
            .build()
            .map_err(|source| GlobError {
                glob: text.to_string(),
                source,
            })?
            .compile_matcher();
        Ok(PathGlob {
            text: text.to_string(),
            matcher,
            whole_path: anchored.is_some() || trimmed.contains('/'),
        })
    }

    pub(crate) fn matches(&self, rel: &Path) -> bool {
        if self.whole_path {
            rel.ancestors()
                .filter(|a| !a.as_os_str().is_empty())
                .any(|a| self.matcher.is_match(a))
        } else {
            rel.components().any(|c| match c {
                Component::Normal(name) => self.matcher.is_match(name),
                _ => false,
            })
        }
    }
}

/// Path edges of the file props.
#[derive(Clone, Debug, PartialEq)]
pub struct PathEdges {
    /// Never read nor written by a prop, nor listed by `grep`/`find`.
    pub hidden: Vec<Hidden>,
    /// Read but not written.
    pub read_only: Vec<String>,
}

impl Default for PathEdges {
    fn default() -> Self {
        PathEdges {
            hidden: default_hidden(),
            read_only: DEFAULT_READ_ONLY.map(String::from).to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_globs_match_components_or_whole_paths() {
        let env = PathGlob::new(".env*").unwrap();
        assert!(env.matches(Path::new("config/.env.local")));
        assert!(!env.matches(Path::new("src/env.rs")));
        let git = PathGlob::new(".git/").unwrap();
        assert!(git.matches(Path::new(".git/config")));
        let docs = PathGlob::new("docs/*.md").unwrap();
        assert!(docs.matches(Path::new("docs/a.md")));
        assert!(!docs.matches(Path::new("docs/x/a.md")));
        assert!(PathGlob::new("a[").is_err());
        let root = PathGlob::new("/stage.toml").unwrap();
        assert!(root.matches(Path::new("stage.toml")));
        assert!(!root.matches(Path::new("sub/stage.toml")));
        let state = PathGlob::new("/.improv").unwrap();
        assert!(state.matches(Path::new(".improv/serve.token")));
        assert!(!state.matches(Path::new("x/.improv/serve.token")));
    }

    const CERT: &str =
        "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";

    /// `holds_secret` of a temp file holding `bytes`.
    fn secret(bytes: &[u8]) -> bool {
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, bytes).unwrap();
        std::io::Seek::rewind(&mut file).unwrap();
        holds_secret(&file)
    }

    #[test]
    fn certificates_crls_and_public_keys_are_public_and_anything_else_is_secret() {
        let bundle = format!("# Issuer: CN=Root\n# Label: \"Root\"\n{CERT}\n{CERT}");
        for public in [
            CERT.to_string(),
            bundle.clone(),
            CERT.replace("\n", "\r\n"),
            "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----\n".into(),
            "-----BEGIN X509 CRL-----\nMIIB\n-----END X509 CRL-----\n".into(),
            "-----BEGIN TRUSTED CERTIFICATE-----\nMIIB\n-----END TRUSTED CERTIFICATE-----\n".into(),
        ] {
            assert!(!secret(public.as_bytes()), "{public}");
        }
        let key = |label: &str| format!("-----BEGIN {label}-----\nMIIE\n-----END {label}-----\n");
        // A key appended far past the head of a long chain is still found.
        let long_chain = format!("{}{}", CERT.repeat(400), key("PRIVATE KEY"));
        assert!(long_chain.len() > 16 * 1024);
        for secret_text in [
            key("PRIVATE KEY"),
            key("RSA PRIVATE KEY"),
            key("EC PRIVATE KEY"),
            key("OPENSSH PRIVATE KEY"),
            key("ENCRYPTED PRIVATE KEY"),
            format!("{CERT}{}", key("RSA PRIVATE KEY")),
            long_chain,
            key("EC PARAMETERS"),
            format!("{CERT}password=hunter2\n"),
            "-----BEGIN CERTIFICATE-----\nMIIB\n".into(),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END PUBLIC KEY-----\n".into(),
            "sk-live-0123456789".into(),
            String::new(),
        ] {
            assert!(secret(secret_text.as_bytes()), "{secret_text}");
        }
        // Binary DER, and a file past what is read.
        assert!(secret(&[0x30, 0x82, 0x04, 0xa4, 0x02, 0x01, 0x00]));
        let huge = CERT.repeat(KEY_MATERIAL_MAX as usize / CERT.len() + 1);
        assert!(secret(huge.as_bytes()));
        // Not a regular file.
        let dir = tempfile::tempdir().unwrap();
        assert!(holds_secret(&std::fs::File::open(dir.path()).unwrap()));
    }

    #[test]
    fn only_a_file_named_only_like_key_material_is_judged_by_its_content() {
        let globs = HiddenGlobs::new(&default_hidden()).unwrap();
        let by_name = |p: &str| globs.by_name(Path::new(p));
        let cacert = ".venv/lib/python3.12/site-packages/certifi/cacert.pem";
        assert_eq!(by_name(cacert), ByName::KeyMaterial("*.pem"));
        assert_eq!(by_name("certs/TLS.KEY"), ByName::KeyMaterial("*.key"));
        // Another glob matching it hides it by name; so does a folder named like key material.
        assert_eq!(by_name("id_rsa.pem"), ByName::Hidden("id_rsa*"));
        assert_eq!(by_name("config/.env.pem"), ByName::Hidden(".env.*"));
        assert_eq!(by_name("keys.pem/a.txt"), ByName::Hidden("*.pem"));
        assert_eq!(by_name("src/main.rs"), ByName::Shown);
        assert_eq!(globs.hidden_by(Path::new(cacert), || false), None);
        assert_eq!(globs.hidden_by(Path::new(cacert), || true), Some("*.pem"));
        assert_eq!(globs.hidden_by(Path::new(".ENV"), || false), Some(".env"));
        // A glob the stage declares hides by name.
        let stage = HiddenGlobs::new(&["*.pem".into()]).unwrap();
        assert_eq!(stage.hidden_by(Path::new(cacert), || false), Some("*.pem"));
    }
}
