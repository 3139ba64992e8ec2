//! The shared store from the command line: `improv store migrate`, `improv run --detach`
//! (enqueue for the workers), `improv show --follow` (watch from anywhere) and `improv note`
//! (direct a leased performance from anywhere). Every command
//! names the store by `--store URL` or `IMPROV_STORE`; a URL reaches a message only with its
//! password hidden (`StoreUrl::redacted`).

use crate::view::{JsonLines, Terminal};
use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};
use improv_kernel::{EventKind, Observer};
use improv_store::{ListFilter, NewPerformance, State, Store, StoreError, StoreUrl};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The environment variable naming the store when `--store` is not given.
pub const STORE_ENV: &str = "IMPROV_STORE";

/// The fewest characters of an id that name a performance in the store: fewer would match
/// many in a busy store, and a prefix is typed by a person who has the id in front of them.
pub const MIN_PREFIX: usize = 6;

/// How many candidates an ambiguous prefix lists.
const CANDIDATES_SHOWN: usize = 10;

/// The whole id of the performance `given` names in `store`: its id, or the one id that begins
/// with it (at least [`MIN_PREFIX`] characters). An ambiguous prefix is an error listing the
/// candidates; none found names the store, its password hidden.
pub async fn resolve(store: &dyn Store, given: &str) -> Result<String> {
    match store.performance(given).await {
        Ok(record) => return Ok(record.id),
        Err(StoreError::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    if given.chars().count() < MIN_PREFIX {
        anyhow::bail!(
            "no performance {given} in the store {}; name one by its whole id or its first {MIN_PREFIX} characters or more (`improv log --store URL` lists them)",
            store.describe()
        );
    }
    let found = store
        .list(&ListFilter {
            limit: CANDIDATES_SHOWN + 1,
            id_prefix: Some(given.to_string()),
            ..ListFilter::default()
        })
        .await?;
    match found.as_slice() {
        [] => anyhow::bail!(
            "no performance with an id beginning {given} in the store {}; `improv log --store URL` lists them",
            store.describe()
        ),
        [one] => Ok(one.id.clone()),
        many => {
            let shown: Vec<&str> = many
                .iter()
                .take(CANDIDATES_SHOWN)
                .map(|r| r.id.as_str())
                .collect();
            let more = if many.len() > CANDIDATES_SHOWN {
                ", and more"
            } else {
                ""
            };
            anyhow::bail!(
                "{given} begins the ids of several performances in the store {}: {}{more}; give more of the id",
                store.describe(),
                shown.join(", ")
            )
        }
    }
}

/// Which store.
#[derive(Args, Clone)]
pub struct StoreArgs {
    /// The store: postgres://USER@HOST/DB or sqlite:PATH.
    #[arg(long, env = STORE_ENV, value_name = "URL", hide_env_values = true)]
    pub store: String,
}

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Bring the store's schema up to date; refuses a store migrated by a newer improv.
    Migrate(StoreArgs),
}

/// Opens the store a `--store` value names; the error names it with its password hidden.
/// A SQLite file is concealed from the actors of every performance this process casts, as
/// it may lie in their workspace ([`improv_perform::control::conceal_store_file`]).
pub fn open(text: &str) -> Result<Arc<dyn Store>> {
    let url = StoreUrl::parse(text)?;
    let store = improv_store::open(&url)?;
    if let StoreUrl::Sqlite(path) = &url {
        refuse_linked(path)?;
        improv_perform::control::conceal_store_file(path);
    }
    Ok(store)
}

/// Refuses a SQLite store (or one of its side files) with another hard link: the cover that
/// keeps the store from the actors hides it by path, so a second name for the same file, made
/// by a command in an earlier performance, would still reach it.
fn refuse_linked(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    for file in improv_perform::control::sqlite_files(path) {
        if let Ok(meta) = std::fs::metadata(&file)
            && meta.nlink() > 1
        {
            anyhow::bail!(
                "the store file {} has {} hard links: another name for it could let an actor's command read or write the store. Remove the other links (find them with `find / -samefile {}`) or move the store outside every stage's workspace",
                file.display(),
                meta.nlink(),
                file.display()
            );
        }
    }
    Ok(())
}

/// `improv store …`
pub async fn run(command: StoreCommand) -> Result<ExitCode> {
    match command {
        StoreCommand::Migrate(args) => {
            let store = open(&args.store)?;
            let version = store.migrate().await?;
            eprintln!(
                "the store {} is at schema version {version}",
                store.describe()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The store `improv run --detach` or `improv show --follow` use: `--store`, else
/// `IMPROV_STORE`; none is an error saying so.
pub fn named(flag: Option<String>) -> Result<String> {
    flag.or_else(|| {
        std::env::var(STORE_ENV)
            .ok()
            .filter(|s| !s.trim().is_empty())
    })
    .ok_or_else(|| anyhow!("name the store with --store URL or {STORE_ENV}"))
}

/// `improv run --detach`: queues the performance for the workers and prints its id.
pub async fn enqueue(
    store: &str,
    stage: &improv_stage::Stage,
    intent: String,
    model: Option<String>,
) -> Result<ExitCode> {
    let store = open(store)?;
    // Workers open the stage file themselves: they need a path that does not depend on the
    // folder this command ran in.
    let path = stage.path.canonicalize().with_context(|| {
        format!(
            "a detached performance needs a stage file the workers can read; {} cannot be used",
            stage.path.display()
        )
    })?;
    let id = store
        .enqueue(&NewPerformance {
            id: None,
            stage: path.display().to_string(),
            stage_name: stage.stage.identity().map(Into::into),
            intent,
            model,
            origin: "cli".into(),
            budget: None,
        })
        .await?;
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

/// `improv show --follow ID`: prints the performance's events from the store as they arrive,
/// until it finishes.
pub async fn follow(store: &str, id: &str, json: bool, verbose: bool) -> Result<ExitCode> {
    let store = open(store)?;
    let id = &resolve(store.as_ref(), id).await?;
    let view: Arc<dyn Observer> = if json {
        Arc::new(JsonLines)
    } else {
        Arc::new(Terminal::new(verbose))
    };
    let mut after = 0;
    loop {
        let events = store.events(id, after, 0).await?;
        for event in &events {
            after = event.seq;
            view.observe(event).map_err(|e| anyhow!("{e}"))?;
            if matches!(event.kind, EventKind::PerformanceFinished { .. }) {
                return Ok(ExitCode::SUCCESS);
            }
        }
        if events.is_empty() {
            if store.performance(id).await?.state == State::Finished {
                // Finished without a last event (it could not be performed): say how.
                let record = store.performance(id).await?;
                eprintln!(
                    "{id} finished: {} ({})",
                    record.outcome.map_or("unknown", |o| o.as_str()),
                    record.reason
                );
                return Ok(ExitCode::SUCCESS);
            }
            store.wait_events(id, after, Duration::from_secs(5)).await?;
        }
    }
}

/// `improv note --store URL ID TEXT`: leaves a director note in the store; the worker
/// performing the performance hands it to its lead at the next turn boundary.
pub async fn note(store: &str, id: &str, text: &str) -> Result<ExitCode> {
    let text = text.trim();
    if text.is_empty() {
        return Err(anyhow!("the note is empty: say something to the cast"));
    }
    let store = open(store)?;
    let id = &resolve(store.as_ref(), id).await?;
    let note = store.send_note(id, text).await?;
    eprintln!(
        "note {} sent to {id}; its lead reads it before its next turn",
        note.n
    );
    Ok(ExitCode::SUCCESS)
}
