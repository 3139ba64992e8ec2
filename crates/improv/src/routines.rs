//! `improv routines`: the stage's routines, learned from converged practice: list them, show
//! one, approve, reject or retire it, learn from the stage's converged performances now, and
//! export one as an Agent Skill (`SKILL.md`).

use anyhow::{Context, Result};
use clap::Subcommand;
use improv_routine::{Repertoire, Routine, Status};
use improv_stage::Stage;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum RoutinesCommand {
    /// Every routine: name, status, stability, record (the default).
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// One routine's file, as the director edits it.
    Show { name: String },
    /// Offer it to the actors and replay it for intents it matches.
    Approve { name: String },
    /// Do not use it, and do not propose the same skeleton again.
    Reject { name: String },
    /// Stop using an approved routine.
    Retire { name: String },
    /// Learn from the stage's converged performances now (a converged performance does this
    /// by itself).
    Learn,
    /// Write it as an Agent Skill, `DIR/NAME/SKILL.md`, for agents that do not run improv.
    Export {
        name: String,
        /// The folder to write into (default: the stage's `skills/`).
        #[arg(long, value_name = "DIR")]
        to: Option<PathBuf>,
    },
}

/// `improv routines …`
pub fn run(stage: &Stage, command: Option<RoutinesCommand>) -> Result<ExitCode> {
    match command.unwrap_or(RoutinesCommand::List { json: false }) {
        RoutinesCommand::List { json } => list(stage, json),
        RoutinesCommand::Show { name } => {
            let repertoire = Repertoire::open(&stage.dir)?;
            print!("{}", repertoire.find_named(&name)?.1.to_toml()?);
            Ok(ExitCode::SUCCESS)
        }
        RoutinesCommand::Approve { name } => decide(stage, &name, Status::Approved),
        RoutinesCommand::Reject { name } => decide(stage, &name, Status::Rejected),
        RoutinesCommand::Retire { name } => decide(stage, &name, Status::Retired),
        RoutinesCommand::Learn => {
            let learned = improv_perform::learn_routines(stage)?;
            for name in &learned.proposed {
                eprintln!("proposed {name} (routines/{name}.toml)");
            }
            for name in &learned.updated {
                eprintln!("updated {name}");
            }
            if learned.proposed.is_empty() && learned.updated.is_empty() {
                eprintln!("nothing new: a routine needs two converged performances that agree");
            }
            Ok(ExitCode::SUCCESS)
        }
        RoutinesCommand::Export { name, to } => {
            let repertoire = Repertoire::open(&stage.dir)?;
            // Named after its file: a file name already, checked when it was read.
            let (stem, r) = repertoire.find_named(&name)?;
            let dir = to.unwrap_or_else(|| stage.dir.join("skills")).join(stem);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let path = dir.join("SKILL.md");
            std::fs::write(&path, improv_routine::skill::skill_md(r))
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list(stage: &Stage, json: bool) -> Result<ExitCode> {
    let mut repertoire = Repertoire::open(&stage.dir)?;
    if let Some(after) = stage.routines.retire_after {
        for name in repertoire.retire_unused(improv_routine::now_at(), after)? {
            eprintln!("retired {name} now: unused for longer than `[routines] retire_after`");
        }
    }
    if repertoire.routines.is_empty() && !json {
        eprintln!(
            "no routines yet in {}: two converged performances that do the same thing propose one",
            repertoire.dir.display()
        );
    }
    for (stem, r) in repertoire.entries() {
        if json {
            let mut summary = r.summary();
            summary["file"] = format!("{stem}.toml").into();
            println!("{summary}");
        } else {
            // The file too when it is not named like the routine: commands take either.
            let name = if stem == r.name {
                r.name.clone()
            } else {
                format!("{} ({stem}.toml)", r.name)
            };
            println!(
                "{:<24} {:<9} {:<9} {} steps · {} runs · {} uses, {} fallbacks · {}",
                name,
                r.status.as_str(),
                r.stability.as_str(),
                r.steps.len(),
                r.provenance.performances.len(),
                r.record.uses,
                r.record.fallbacks,
                r.intent
            );
            if let Some(why) = &r.retired_because {
                println!("{:<24} retired: {why}", "");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn decide(stage: &Stage, name: &str, status: Status) -> Result<ExitCode> {
    let mut repertoire = Repertoire::open(&stage.dir)?;
    let dir = repertoire.dir.clone();
    // By its file: `NAME.toml`, or the one routine named NAME inside its file; an error
    // naming the files when NAME could be either.
    let stem = repertoire.find_named(name)?.0.to_string();
    // Decided on the file under its lock, so a performance noting a match at the same time
    // neither loses this decision nor has its count lost (review L3).
    let found = repertoire.update(&stem, |r| {
        r.status = status;
        r.retired_because = (status == Status::Retired).then(|| "retired by the director".into());
        if status == Status::Approved {
            r.approve(&improv_routine::now());
        }
        true
    })?;
    // The file may have been removed since the repertoire was read.
    let r: &Routine = match repertoire.find(&stem) {
        Ok((_, r)) if found => r,
        _ => {
            return Err(improv_routine::RoutineError::NotFound { name: stem, dir }.into());
        }
    };
    if status == Status::Approved && !r.replayable() {
        eprintln!(
            "note: `{stem}` has parameters its intent template does not fill; it is offered to actors as the prop {} but never replayed for an intent by itself",
            r.prop_name()
        );
    }
    let path = dir.join(format!("{stem}.toml"));
    eprintln!("{stem} is {} ({})", status.as_str(), path.display());
    Ok(ExitCode::SUCCESS)
}
