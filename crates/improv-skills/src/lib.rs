//! Agent Skills for improv, and AGENTS.md by convention.
//!
//! A skill is a folder with a `SKILL.md`: YAML front matter (`name`, `description`) and a body of
//! instructions, with scripts and files beside it. Skills are found in the stage's
//! `context.skills` folders and in the user's skills folder ([`user_dir`]). Only each skill's
//! name and description reach the actor ([`Found::context`]); the body is read when the actor
//! decides to use one, through the [`SkillProp`] (progressive disclosure).
//!
//! [`agents_files`] finds the AGENTS.md files along the folders an actor works in.

mod agents;
mod prop;

pub use agents::{AGENTS_FILE, agents_files};
pub use prop::SkillProp;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file that makes a folder a skill.
pub const SKILL_FILE: &str = "SKILL.md";

/// The longest skill name and description the Agent Skills format allows.
pub const NAME_MAX: usize = 64;
pub const DESCRIPTION_MAX: usize = 1024;

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
}

impl Skill {
    /// The SKILL.md file.
    pub fn file(&self) -> PathBuf {
        self.dir.join(SKILL_FILE)
    }

    /// The instructions: SKILL.md after its front matter.
    pub fn body(&self) -> Result<String, SkillError> {
        let text = std::fs::read_to_string(self.file()).map_err(|source| SkillError::Read {
            path: self.file(),
            source,
        })?;
        Ok(split_front_matter(&text)
            .map(|(_, body)| body)
            .unwrap_or(&text)
            .trim()
            .to_string())
    }

    /// The files beside SKILL.md, relative to the skill's folder, sorted; at most `max`.
    pub fn files(&self, max: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut stack = vec![self.dir.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    stack.push(path);
                } else if let Ok(rel) = path.strip_prefix(&self.dir)
                    && rel != Path::new(SKILL_FILE)
                {
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
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
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
    let mut roots: Vec<(PathBuf, Source)> = folders
        .iter()
        .map(|f| (stage_dir.join(f), Source::Stage))
        .collect();
    roots.extend(user.map(|u| (u.to_path_buf(), Source::User)));
    let mut found = Found::default();
    for (root, source) in roots {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue; // An absent folder has no skills; that is not worth a warning.
        };
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join(SKILL_FILE).is_file())
            .collect();
        dirs.sort();
        for dir in dirs {
            match read_skill(&dir, source) {
                Ok(skill) => {
                    if let Some(first) = found.skills.iter().find(|s| s.name == skill.name) {
                        found.warnings.push(format!(
                            "{}: skill `{}` is also in {}, which is used instead",
                            skill.file().display(),
                            skill.name,
                            first.file().display()
                        ));
                    } else {
                        found.skills.push(skill);
                    }
                }
                Err(warning) => found.warnings.push(warning),
            }
        }
    }
    found
}

/// The front matter of a SKILL.md.
#[derive(Deserialize)]
struct FrontMatter {
    name: Option<String>,
    description: Option<String>,
}

/// Reads one skill, or says why it is skipped (naming the file).
fn read_skill(dir: &Path, source: Source) -> Result<Skill, String> {
    let file = dir.join(SKILL_FILE);
    let skip = |why: String| format!("{}: {why}; the skill is skipped", file.display());
    let text = std::fs::read_to_string(&file).map_err(|e| skip(format!("cannot read it ({e})")))?;
    let (yaml, _) = split_front_matter(&text).ok_or_else(|| {
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
        dir: dir.to_path_buf(),
        source,
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
