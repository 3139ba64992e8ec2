//! A routine exported as an Agent Skill: a `SKILL.md` with the front matter other agents read
//! (name, description) and the steps in words, for agents that do not run improv.

use crate::routine::Routine;

/// The text of `SKILL.md` for `routine`.
pub fn skill_md(routine: &Routine) -> String {
    let mut out = format!(
        "---\nname: {}\ndescription: {}\n---\n\n# {}\n\nUse when the task reads like: `{}`.\n",
        routine.name,
        one_line(&routine.description),
        routine.name,
        routine.intent
    );
    if !routine.parameters.is_empty() {
        out.push_str("\n## Parameters\n\n");
        for p in &routine.parameters {
            let eg = p
                .examples
                .first()
                .map(|e| format!(" (e.g. `{e}`)"))
                .unwrap_or_default();
            out.push_str(&format!("- `{}`{eg}\n", p.name));
        }
    }
    out.push_str("\n## Steps\n\n");
    for (i, s) in routine.steps.iter().enumerate() {
        let args = serde_json::Value::Object(s.args.clone());
        let ok = if s.guard.ok { "; it must succeed" } else { "" };
        out.push_str(&format!("{}. `{}` with `{args}`{ok}\n", i + 1, s.prop));
    }
    if !routine.checks.is_empty() {
        out.push_str(&format!(
            "\nDone when these checks pass: {}.\n",
            routine.checks.join(", ")
        ));
    }
    out.push_str(&format!(
        "\nLearned by improv from {} converged performances; record: {} uses, {} fallbacks.\n",
        routine.provenance.performances.len(),
        routine.record.uses,
        routine.record.fallbacks
    ));
    out
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
