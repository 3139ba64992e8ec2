//! The commands that look at a stage rather than perform it: `improv doctor` (is the stage
//! ready?) and `improv skills` (which skills do the actors see, at what token cost?); and the
//! stage's MCP servers attached for a performance.

use anyhow::{Context, Result};
use improv_perform::PropSource;
use improv_stage::Stage;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

/// `improv doctor`: the six questions, with evidence and fixes, and whether this machine has
/// every actor's model; exits 1 on an error so CI can gate a stage on it.
pub fn doctor(stage: &Stage, json: bool) -> Result<ExitCode> {
    let report = improv_doctor::examine_here(stage);
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        print!("{}", report.render(color));
    }
    Ok(if report.has_errors() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// `improv skills`: the skills found for the stage, each with what it costs in context.
pub fn skills(stage: &Stage, json: bool) -> Result<ExitCode> {
    let user = improv_skills::user_dir();
    let found = improv_skills::discover(&stage.dir, &stage.context.skills, user.as_deref());
    for w in &found.warnings {
        eprintln!("warning: {w}");
    }
    let rows = found.listing();
    if json {
        for row in &rows {
            println!("{}", serde_json::to_string(row)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        eprintln!(
            "no skills: put NAME/SKILL.md folders in {} or in {}",
            stage
                .context
                .skills
                .iter()
                .map(|f| stage.dir.join(f).display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            user.map_or("your skills folder".into(), |u| u.display().to_string())
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:>9} {:>9}  description",
        "skill", "per turn", "when read"
    );
    let mut per_turn = 0;
    for r in &rows {
        per_turn += r.context_tokens;
        let description: String = r.description.chars().take(70).collect();
        println!(
            "{:<24} {:>9} {:>9}  {description}",
            r.name,
            format!("~{}", r.context_tokens),
            format!("~{}", r.body_tokens)
        );
    }
    let n = rows.len();
    println!(
        "{n} skill{} · ~{per_turn} tokens on every turn (names and descriptions only)",
        if n == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

/// Attaches the stage's MCP servers, when it declares any.
pub async fn attach_mcp(stage: &Stage) -> Result<Option<Arc<dyn PropSource>>> {
    improv_mcp::outside(stage)
        .await
        .with_context(|| format!("cannot attach the MCP servers of {}", stage.path.display()))
}
