//! `improv memory`: the stage's memory where its performances keep it: in a PostgreSQL store
//! named by `--store URL` or `IMPROV_STORE` (shared by the workers), else the stage folder's
//! SQLite file, as `improv_perform`'s cast chooses for a performance.

use anyhow::{Context, Result};
use improv_memory::cli::{MemoryCommand, run_on};
use improv_stage::Stage;
use improv_store::{PgPool, StoreUrl};

/// Runs `command` against the memory of `stage`, printing to standard output.
pub fn run(
    stage: &Stage,
    command: Option<MemoryCommand>,
    store: Option<&str>,
    json: bool,
) -> Result<()> {
    let url = store.map(StoreUrl::parse).transpose()?;
    let Some(StoreUrl::Postgres(url)) = url else {
        // A SQLite store keeps no memories: performances keep them in the stage folder.
        let dir = crate::perform::state_dir(stage);
        return Ok(improv_memory::cli::run(command, &dir, json)?);
    };
    let pool = PgPool::connect(&url)?;
    let memory = improv_memory::PgMemory::new(pool, stage.stage.name.clone());
    let place = format!("the store's memory of stage {}", stage.stage.name);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime for the store")?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    runtime.block_on(run_on(command, &memory, &place, json, &mut out))?;
    Ok(())
}
