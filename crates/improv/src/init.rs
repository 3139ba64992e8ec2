//! `improv init`: writes a commented stage.toml to start from.

use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::process::ExitCode;

pub fn init(stage: Option<PathBuf>, force: bool) -> Result<ExitCode> {
    let path = stage.unwrap_or_else(|| PathBuf::from("stage.toml"));
    if path.exists() && !force {
        bail!(
            "{} already exists; edit it, or pass --force to overwrite it",
            path.display()
        );
    }
    std::fs::write(&path, improv_stage::init_template())
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "wrote {}: set its intent, then `improv run`",
        path.display()
    );
    Ok(ExitCode::SUCCESS)
}
