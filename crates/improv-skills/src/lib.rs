//! Agent Skills for improv, and AGENTS.md by convention.
//!
//! A skill is a folder with a `SKILL.md`: YAML front matter (`name`, `description`) and a body of
//! instructions, with scripts and files beside it. Skills are found in the stage's
//! `context.skills` folders and in the user's skills folder ([`user_dir`]). Only each skill's
//! name and description reach the actor ([`Found::context`]); the body is read when the actor
//! decides to use one, through the [`SkillProp`] (progressive disclosure).
//!
//! [`agents_files`] finds the AGENTS.md files along the folders an actor works in.
//!
//! Skills are read beneath a bound ([`improv_workspace::Workspace`]): a stage's skills beneath the
//! stage folder, which actors can write, so a skill folder or SKILL.md that is (or is swapped
//! for) a symlink leaving it is refused; the user's skills, and a folder the stage names outside
//! itself, beneath each skill's own folder as found (the director's links are followed once,
//! when skills are found, and nothing read later leaves that folder).

mod agents;
mod prop;

pub use agents::{AGENTS_FILE, agents_files, read_agents};
pub use prop::SkillProp;

use improv_workspace::{Kind, PathError, Scope, Workspace};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file that makes a folder a skill.
pub const SKILL_FILE: &str = "SKILL.md";

/// The longest skill name and description the Agent Skills format allows.
pub const NAME_MAX: usize = 64;
pub const DESCRIPTION_MAX: usize = 1024;

/// The most of a SKILL.md read; the format asks for far less.
const SKILL_MAX_BYTES: usize = 1024 * 1024;

/// Where a skill was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Stage,
    User,
}

/// A skill: its front matter and where it lives. The body is read on demand.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Skill {
    pub name: String,
    pub description: String,
    /// The skill's folder.
    pub dir: PathBuf,
    pub source: Source,
    /// Where its files are read from: beneath which folder, and its own folder inside it.
    #[serde(skip)]
    within: Within,
}

/// A skill's bound: the root folder reads stay beneath, and the skill's folder relative to it.
#[derive(Clone, Debug, PartialEq)]
struct Within {
    root: PathBuf,
    scope: Scope,
    rel: PathBuf,
}

impl Within {
    fn open(&self) -> Result<Workspace, PathError> {
        Workspace::scoped(&self.root, self.scope)
    }
}

impl Skill {
    /// The SKILL.md file.
    pub fn file(&self) -> PathBuf {
        self.dir.join(SKILL_FILE)
    }

    /// The instructions: SKILL.md after its front matter, read beneath the skill's bound.
    pub fn body(&self) -> Result<String, SkillError> {
        let text = self
            .within
            .open()
            .and_then(|ws| ws.read_to_string(self.within.rel.join(SKILL_FILE), SKILL_MAX_BYTES))
            .map_err(|source| SkillError::Read {
                path: self.file(),
                source,
            })?;
        Ok(split_front_matter(&text)
            .map(|(_, body)| body)
            .unwrap_or(&text)
            .trim()
            .to_string())
    }

    /// The files beside SKILL.md, relative to the skill's folder, sorted; at most `max`. Listed
    /// beneath the skill's bound, symlinks not followed.
    pub fn files(&self, max: usize) -> Vec<String> {
        let Ok(ws) = self.within.open() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = ws.read_dir(or_root(&self.within.rel.join(&dir))) else {
                continue;
            };
            for entry in entries {
                let rel = dir.join(&entry.name);
                if entry.kind == Kind::Dir {
                    stack.push(rel);
                } else if rel != Path::new(SKILL_FILE) {
                    out.push(rel.to_string_lossy().into_owned());
                }
            }
        }
        out.sort();
        out.truncate(max);
        out
    }

    /// The line this skill adds to the actor's context.
    pub fn context_line(&self) -> String {
        format!("- {}: {}\n", self.name, self.description)
    }
}

/// Reading a skill failed.
#[derive(Debug, thiserror::Error)]
pub enum SkillError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: PathError },
}

/// The skills found, and what was wrong with the ones skipped.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Found {
    pub skills: Vec<Skill>,
    /// One line per skipped skill or shadowed name, naming the file.
    pub warnings: Vec<String>,
}

/// One row of `improv skills`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Listing {
    pub name: String,
    pub description: String,
    pub path: PathBuf,
    pub source: Source,
    /// Tokens the skill costs on every turn: its line in the context.
    pub context_tokens: usize,
    /// Tokens it costs once, when the actor reads its body.
    pub body_tokens: usize,
}

/// A token estimate for text sent to a model: 4 bytes per token, rounded up. Close for English
/// prose and code with the tokenizers in use; it is a price tag, not a count.
pub fn estimate_tokens(text: &str) -> usize {
    text.len().div_ceil(4)
}

/// The user's skills folder: `$XDG_DATA_HOME/improv/skills`, else the platform's data folder
/// (`~/.local/share/improv/skills` on Linux).
pub fn user_dir() -> Option<PathBuf> {
    match std::env::var_os("XDG_DATA_HOME") {
        Some(d) if !d.is_empty() && Path::new(&d).is_absolute() => Some(PathBuf::from(d)),
        _ => dirs::data_dir(),
    }
    .map(|d| d.join("improv").join("skills"))
}

/// Finds the skills of a stage: its `folders` (relative to `stage_dir`) first, then `user`
/// (usually [`user_dir`]). A name found twice keeps the first, with a warning.
pub fn discover(stage_dir: &Path, folders: &[String], user: Option<&Path>) -> Found {
    let stage_root = stage_dir.canonicalize().ok();
    let mut found = Found::default();
    for folder in folders {
        let shown = stage_dir.join(folder);
        // A folder inside the stage folder is read beneath it: actors can write there.
        let inside = stage_root.as_ref().and_then(|root| {
            let rel = improv_workspace::normalize(&root.join(folder))
                .strip_prefix(root)
                .ok()?
                .to_path_buf();
            Some((root, rel))
        });
        let skills = match inside {
            Some((root, rel)) => bound_skills(root, &rel, &shown, Source::Stage, &mut found),
            None => own_skills(&shown, Source::Stage),
        };
        found.add(skills);
    }
    if let Some(user) = user {
        found.add(own_skills(user, Source::User));
    }
    found
}

/// A skill found, or why one is skipped (naming the file).
type Candidate = Result<Skill, String>;

/// The skills in the folder `rel` beneath `root` (the stage folder), each read beneath it.
fn bound_skills(
    root: &Path,
    rel: &Path,
    shown: &Path,
    source: Source,
    found: &mut Found,
) -> Vec<Candidate> {
    let Ok(ws) = Workspace::scoped(root, Scope::StageFolder) else {
        return Vec::new();
    };
    let mut entries = match ws.read_dir(or_root(rel)) {
        Ok(entries) => entries,
        // An absent folder has no skills; that is not worth a warning.
        Err(e) if is_absent(&e) => return Vec::new(),
        Err(e) => {
            found
                .warnings
                .push(format!("{}: {e}; its skills are skipped", shown.display()));
            return Vec::new();
        }
    };
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    entries
        .into_iter()
        .filter(|e| matches!(e.kind, Kind::Dir | Kind::Symlink))
        .filter_map(|e| {
            let within = Within {
                root: ws.root().to_path_buf(),
                scope: Scope::StageFolder,
                rel: rel.join(&e.name),
            };
            candidate(&ws, within, shown.join(&e.name), source)
        })
        .collect()
}

/// The skills in a folder of the director's own (the user's, or one the stage names outside
/// itself): each skill is bound by its own folder, as found now.
fn own_skills(folder: &Path, source: Source) -> Vec<Candidate> {
    let Ok(entries) = std::fs::read_dir(folder) else {
        return Vec::new(); // An absent folder has no skills; that is not worth a warning.
    };
    let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    dirs.sort();
    dirs.into_iter()
        .filter_map(|dir| {
            let ws = Workspace::scoped(&dir, Scope::SkillsFolder).ok()?;
            let within = Within {
                root: ws.root().to_path_buf(),
                scope: Scope::SkillsFolder,
                rel: PathBuf::new(),
            };
            candidate(&ws, within, dir, source)
        })
        .collect()
}

/// The skill in `within`, shown as `dir`: `None` when the folder has no SKILL.md.
fn candidate(ws: &Workspace, within: Within, dir: PathBuf, source: Source) -> Option<Candidate> {
    let file = dir.join(SKILL_FILE);
    match ws.read_to_string(within.rel.join(SKILL_FILE), SKILL_MAX_BYTES) {
        Ok(text) => Some(read_skill(&text, dir, within, source)),
        Err(e) if is_absent(&e) || matches!(e, PathError::IsDir { .. }) => None,
        Err(e) => Some(Err(format!(
            "{}: {e}; the skill is skipped",
            file.display()
        ))),
    }
}

/// Whether `e` says the path is not there (or a file stands where a folder was looked for).
fn is_absent(e: &PathError) -> bool {
    matches!(e, PathError::Io { source, .. }
        if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory))
}

/// `rel`, or `.` when it is empty (the root itself).
fn or_root(rel: &Path) -> &Path {
    if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    }
}

impl Found {
    /// Keeps the skills found in one folder; a name found before is shadowed, with a warning.
    fn add(&mut self, candidates: Vec<Candidate>) {
        for candidate in candidates {
            match candidate {
                Ok(skill) => {
                    if let Some(first) = self.skills.iter().find(|s| s.name == skill.name) {
                        self.warnings.push(format!(
                            "{}: skill `{}` is also in {}, which is used instead",
                            skill.file().display(),
                            skill.name,
                            first.file().display()
                        ));
                    } else {
                        self.skills.push(skill);
                    }
                }
                Err(warning) => self.warnings.push(warning),
            }
        }
    }
}

/// The front matter of a SKILL.md.
#[derive(Deserialize)]
struct FrontMatter {
    name: Option<String>,
    description: Option<String>,
}

/// Parses one skill's SKILL.md `text`, or says why it is skipped (naming the file).
fn read_skill(text: &str, dir: PathBuf, within: Within, source: Source) -> Result<Skill, String> {
    let file = dir.join(SKILL_FILE);
    let skip = |why: String| format!("{}: {why}; the skill is skipped", file.display());
    let (yaml, _) = split_front_matter(text).ok_or_else(|| {
        skip("it does not open with YAML front matter (a `---` line, `name:` and `description:`, and a closing `---` line)".into())
    })?;
    let front: FrontMatter = yaml_serde::from_str(yaml)
        .map_err(|e| skip(format!("its front matter is not valid YAML: {e}")))?;
    let name = front
        .name
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| skip("its front matter has no `name`".into()))?;
    let description = front
        .description
        .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|d| !d.is_empty())
        .ok_or_else(|| skip("its front matter has no `description`".into()))?;
    if name.len() > NAME_MAX
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(skip(format!(
            "its name `{name}` is not lowercase letters, digits and hyphens (at most {NAME_MAX})"
        )));
    }
    if description.len() > DESCRIPTION_MAX {
        return Err(skip(format!(
            "its description has {} characters, more than {DESCRIPTION_MAX}",
            description.len()
        )));
    }
    Ok(Skill {
        name,
        description,
        dir,
        source,
        within,
    })
}

/// Splits `---\nYAML\n---\nbody` into the YAML and the body.
fn split_front_matter(text: &str) -> Option<(&str, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let rest = text
        .strip_prefix("---\n")
        .or_else(|| text.strip_prefix("---\r\n"))?;
    let mut offset = 0;
    for line in rest.split_inclusive('\n') {
        if line.trim_end() == "---" {
            return Some((&rest[..offset], &rest[offset + line.len()..]));
        }
        offset += line.len();
    }
    None
}

impl Found {
    /// The block for the system prompt: one line per skill, name and description only. Empty
    /// when there are no skills.
    pub fn context(&self) -> String {
        if self.skills.is_empty() {
            return String::new();
        }
        let mut out =
            String::from("Skills (read one with the `skill` prop before you follow it):\n");
        for s in &self.skills {
            out.push_str(&s.context_line());
        }
        out
    }

    /// The rows of `improv skills`, with each skill's token cost.
    pub fn listing(&self) -> Vec<Listing> {
        self.skills
            .iter()
            .map(|s| Listing {
                name: s.name.clone(),
                description: s.description.clone(),
                path: s.file(),
                source: s.source,
                context_tokens: estimate_tokens(&s.context_line()),
                body_tokens: s.body().map_or(0, |b| estimate_tokens(&b)),
            })
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&Skill> {
        self.skills.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_is_split_from_the_body() {
        let (yaml, body) = split_front_matter("---\nname: a\n---\nDo it.\n").unwrap();
        assert_eq!(yaml, "name: a\n");
        assert_eq!(body, "Do it.\n");
        assert!(split_front_matter("name: a\n").is_none());
        assert!(split_front_matter("---\nname: a\n").is_none());
    }

    #[test]
    fn tokens_are_estimated_at_four_bytes() {
        assert_eq!(estimate_tokens(""), 0);
        assert_eq!(estimate_tokens("abcd"), 1);
        assert_eq!(estimate_tokens("abcde"), 2);
    }
}
