//! The `skill` prop: an actor reads a skill's instructions by name when it decides to use it,
//! with the list of files beside them (which it can read or run with its other props).

use crate::{Found, Skill};
use async_trait::async_trait;
use improv_kernel::{Access, Prop, PropContext, PropError, ToolSpec};
use std::sync::Arc;

/// How many of a skill's files are listed with its body.
const FILES_LISTED: usize = 50;

/// The `skill` prop over the skills a stage found.
pub struct SkillProp {
    skills: Arc<Vec<Skill>>,
    spec: ToolSpec,
}

impl SkillProp {
    pub fn new(found: &Found) -> Self {
        SkillProp {
            skills: Arc::new(found.skills.clone()),
            spec: ToolSpec {
                name: "skill".into(),
                description: "Read a skill's instructions by name.".into(),
                parameters: serde_json::json!({
                    "type": "object",
                    "properties": {"name": {"type": "string"}},
                    "required": ["name"]
                }),
            },
        }
    }
}

#[async_trait]
impl Prop for SkillProp {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn access(&self, _arguments: &serde_json::Value) -> Access {
        Access::Read
    }

    async fn call(
        &self,
        arguments: serde_json::Value,
        _context: &PropContext,
    ) -> Result<String, PropError> {
        let name = arguments["name"]
            .as_str()
            .ok_or_else(|| PropError::new("give the skill's `name`"))?;
        let Some(skill) = self.skills.iter().find(|s| s.name == name) else {
            let names: Vec<&str> = self.skills.iter().map(|s| s.name.as_str()).collect();
            return Err(PropError::new(format!(
                "no skill named `{name}`; the skills are: {}",
                if names.is_empty() {
                    "(none)".to_string()
                } else {
                    names.join(", ")
                }
            )));
        };
        let body = skill.body().map_err(|e| PropError::new(e.to_string()))?;
        let mut out = format!("{body}\n\n(skill folder: {})", skill.dir.display());
        let files = skill.files(FILES_LISTED);
        if !files.is_empty() {
            out.push_str("\nfiles: ");
            out.push_str(&files.join(", "));
        }
        Ok(out)
    }
}
