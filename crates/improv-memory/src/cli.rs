//! `improv memory`: the director's view of a stage's memory, for the CLI crate to mount.
//!
//! ```ignore
//! // in the CLI's command enum:
//! Memory {
//!     #[command(subcommand)]
//!     command: Option<improv_memory::cli::MemoryCommand>,
//!     #[arg(long)]
//!     json: bool,
//! },
//! // and where commands run:
//! Command::Memory { command, json } => improv_memory::cli::run(command, &state_dir, json)?,
//! ```

use crate::backend::MemoryBackend;
use crate::store::{Entry, Found, Memory, MemoryError, Provenance};
use clap::Subcommand;
use std::io::Write;
use std::path::Path;

/// The actor recorded for memories the director adds by hand.
pub const DIRECTOR: &str = "director";

/// The widest a text is shown in a table; `--json` shows it whole.
const TEXT_COLUMN: usize = 72;

/// The `improv memory` subcommands. With none, every memory is listed.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum MemoryCommand {
    /// List every memory, newest first (the default).
    List,
    /// Search memories by words, best match first.
    Search {
        /// Words to look for; any text is fine.
        query: String,
    },
    /// Add a memory, as the director.
    Add {
        text: String,
        /// A tag; repeat for more.
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// Replace the memory saved under this key, if any.
        #[arg(long)]
        key: Option<String>,
    },
    /// Replace a memory's text.
    Edit { id: i64, text: String },
    /// Delete a memory.
    Forget { id: i64 },
}

/// Runs a memory command against `<state_dir>/memory.db`, printing to standard output.
pub fn run(
    command: Option<MemoryCommand>,
    state_dir: &Path,
    json: bool,
) -> Result<(), MemoryError> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_to(command, state_dir, json, &mut out)
}

/// [`run`], writing to `out`.
pub fn run_to(
    command: Option<MemoryCommand>,
    state_dir: &Path,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), MemoryError> {
    let memory = Memory::open_in(state_dir)?;
    let place = memory.path().display().to_string();
    // SQLite's backend runs its work on the blocking pool, which a current-thread runtime has.
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    runtime.block_on(run_on(command, &memory, &place, json, out))
}

/// A memory command against `memory` (the stage folder's, or a PostgreSQL store's
/// [`PgMemory`](crate::PgMemory)), writing to `out`; `place` says where it is kept, for the
/// message when there is nothing to list.
pub async fn run_on(
    command: Option<MemoryCommand>,
    memory: &dyn MemoryBackend,
    place: &str,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), MemoryError> {
    match command.unwrap_or(MemoryCommand::List) {
        MemoryCommand::List => {
            let mut entries = memory.all().await?;
            entries.reverse();
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&entries)?)?;
            } else if entries.is_empty() {
                writeln!(
                    out,
                    "no memories yet in {place}; actors save them with the `remember` prop, or run `improv memory add TEXT`"
                )?;
            } else {
                table(out, entries.iter().map(|e| (e, e.text.as_str())))?;
            }
        }
        MemoryCommand::Search { query } => {
            let found = memory.recall(&query, 50).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&found)?)?;
            } else if found.is_empty() {
                writeln!(out, "no memories match `{query}`")?;
            } else {
                table(
                    out,
                    found
                        .iter()
                        .map(|Found { entry, snippet }| (entry, snippet.as_str())),
                )?;
            }
        }
        MemoryCommand::Add { text, tags, key } => {
            let by = Provenance::new(DIRECTOR, "");
            let done = memory.remember(&text, &tags, key.as_deref(), &by).await?;
            let entry = memory.get(done.id).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&entry)?)?;
            } else {
                let verb = if done.replaced { "replaced" } else { "added" };
                writeln!(out, "{verb} memory #{}", entry.id)?;
            }
        }
        MemoryCommand::Edit { id, text } => {
            let entry = memory.edit(id, &text).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&entry)?)?;
            } else {
                writeln!(out, "edited memory #{id}")?;
            }
        }
        MemoryCommand::Forget { id } => {
            let entry = memory.forget(id).await?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&entry)?)?;
            } else {
                writeln!(out, "forgot memory #{id}: {}", shorten(&entry.text))?;
            }
        }
    }
    Ok(())
}

/// Prints memories as an aligned table: id, date, tags, who saved it, and the text.
fn table<'a>(
    out: &mut dyn Write,
    rows: impl Iterator<Item = (&'a Entry, &'a str)>,
) -> Result<(), MemoryError> {
    let header = ["ID", "UPDATED", "TAGS", "BY", "TEXT"].map(String::from);
    let mut cells = vec![header];
    for (entry, text) in rows {
        let by = if entry.performance.is_empty() {
            entry.actor.clone()
        } else {
            format!("{} in {}", entry.actor, entry.performance)
        };
        let mut tags = entry.tags.join(",");
        if let Some(key) = &entry.key {
            tags = if tags.is_empty() {
                format!("key:{key}")
            } else {
                format!("{tags} key:{key}")
            };
        }
        cells.push([
            entry.id.to_string(),
            entry
                .updated_at
                .get(..16)
                .unwrap_or(&entry.updated_at)
                .replace('T', " "),
            tags,
            by,
            shorten(text),
        ]);
    }
    let widths: Vec<usize> = (0..4)
        .map(|c| {
            cells
                .iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &cells {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            line.push_str(&format!("{cell:<width$}  "));
        }
        line.push_str(&row[4]);
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// One line of at most [`TEXT_COLUMN`] characters.
fn shorten(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= TEXT_COLUMN {
        return line;
    }
    let mut short: String = line.chars().take(TEXT_COLUMN - 1).collect();
    short.push('…');
    short
}
