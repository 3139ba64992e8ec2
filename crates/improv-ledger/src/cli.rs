//! `improv ledger`: the director's view of the ledger, for the CLI crate to mount.
//!
//! ```ignore
//! // in the CLI's command enum:
//! Ledger {
//!     #[command(subcommand)]
//!     command: Option<improv_ledger::cli::LedgerCommand>,
//! },
//! // and where commands run:
//! Command::Ledger { command } => improv_ledger::cli::run(command, &state_dir, &stage_name, options, json)?,
//! ```
//!
//! `settle` and `evolve --accept` with `--store postgres://…` also bring the
//! collection's table in that database up to date ([`crate::postgres`]): created and loaded, or
//! migrated.

use crate::ledger::{Decision, Ledger, LedgerOptions, Provenance, Query};
use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::json;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The `improv ledger` subcommands. With none, every collection is listed.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum LedgerCommand {
    /// List every collection: its state, record count and inferred shape (the default).
    List,
    /// Settle a collection: write its JSON Schema and DDL, and validate every later write.
    Settle {
        /// The collection to settle.
        collection: String,
        #[command(flatten)]
        store: StoreArg,
    },
    /// List the fields proposed since settling, or accept or reject one.
    Evolve {
        collection: String,
        /// Take this field into the settled schema (prints the migration DDL).
        #[arg(long, value_name = "FIELD", conflicts_with = "reject")]
        accept: Option<String>,
        /// Refuse this field: entries carrying it are rejected from now on.
        #[arg(long, value_name = "FIELD")]
        reject: Option<String>,
        #[command(flatten)]
        store: StoreArg,
    },
    /// Import a JSON lines, JSON array or CSV (by extension) file into a collection, streaming;
    /// lines that cannot be read go to the rejects with their line number.
    Import {
        file: PathBuf,
        #[arg(long)]
        collection: String,
    },
    /// Export a collection as JSON lines (or CSV) to standard output.
    Export {
        collection: String,
        #[arg(long)]
        csv: bool,
    },
    /// Read a collection's entries, as JSON lines (what the `query` prop does).
    Query {
        collection: String,
        /// Conditions as JSON: `{"status": "open", "score": {">": 3}}`; operators
        /// = != < > <= >= contains exists.
        #[arg(long = "where", value_name = "JSON")]
        filter: Option<String>,
        /// Fields to order by, comma-separated; `-field` for descending.
        #[arg(long, value_name = "FIELDS", allow_hyphen_values = true)]
        order_by: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Print the settled JSON Schema instead of entries.
        #[arg(long, conflicts_with_all = ["filter", "order_by"])]
        schema: bool,
    },
    /// Show the entries a collection refused, with the reasons, newest first.
    Rejects {
        collection: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

/// The PostgreSQL store whose copy of the settled collections a command brings up to date.
#[derive(Debug, Clone, PartialEq, Eq, Default, clap::Args)]
pub struct StoreArg {
    /// Also create, load or migrate the collection's table in this PostgreSQL store (schema
    /// `ledger_<slug>_<hash>`, see [`crate::postgres::schema_name`]); a SQLite store keeps the ledger in the stage folder only.
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
}

/// Runs a ledger command against `<state_dir>/ledger.db` of the stage named `stage`, printing
/// to standard output.
pub fn run(
    command: Option<LedgerCommand>,
    state_dir: &Path,
    stage: &str,
    options: LedgerOptions,
    json: bool,
) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    run_with(command, state_dir, stage, options, json, &mut out)
}

/// [`run`] with the default options, writing to `out`.
pub fn run_to(
    command: Option<LedgerCommand>,
    state_dir: &Path,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    run_with(command, state_dir, "", LedgerOptions::default(), json, out)
}

/// [`run`], writing to `out`.
pub fn run_with(
    command: Option<LedgerCommand>,
    state_dir: &Path,
    stage: &str,
    options: LedgerOptions,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let ledger = Ledger::open_in(state_dir, options)
        .with_context(|| format!("opening the ledger in {}", state_dir.display()))?;
    match command.unwrap_or(LedgerCommand::List) {
        LedgerCommand::List => list(&ledger, json, out),
        LedgerCommand::Settle { collection, store } => {
            let settlement = ledger.settle(&collection)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&settlement)?)?;
            } else {
                writeln!(
                    out,
                    "settled {collection} (schema version {}); every write is validated from now on",
                    settlement.version
                )?;
                writeln!(out, "JSON Schema: {}", settlement.schema_file.display())?;
                writeln!(out, "\n-- SQLite (created in {})", ledger.path().display())?;
                writeln!(out, "{}", settlement.sqlite_ddl)?;
                writeln!(out, "\n-- Postgres")?;
                writeln!(out, "{}", settlement.postgres_ddl)?;
            }
            sync_store(&ledger, &store, stage, &collection, json, out)
        }
        LedgerCommand::Evolve {
            collection,
            accept,
            reject,
            store,
        } => {
            let accepting = accept.is_some();
            let decision = match (accept, reject) {
                (Some(field), None) => Some((field, Decision::Accept)),
                (None, Some(field)) => Some((field, Decision::Reject)),
                (None, None) => None,
                (Some(_), Some(_)) => bail!("give --accept or --reject, not both"),
            };
            match decision {
                None => {
                    let proposals = ledger.proposals(&collection)?;
                    if json {
                        writeln!(out, "{}", serde_json::to_string_pretty(&proposals)?)?;
                    } else if proposals.iter().all(|p| p.status != "pending") {
                        writeln!(out, "{collection}: no pending proposals")?;
                    } else {
                        writeln!(out, "{collection}: fields seen since settling")?;
                        for p in proposals.iter().filter(|p| p.status == "pending") {
                            writeln!(
                                out,
                                "  {}  {}  ({} entries, first {})",
                                p.field,
                                p.shape.label(),
                                p.count,
                                p.first_seen
                            )?;
                        }
                        writeln!(
                            out,
                            "accept with `improv ledger evolve {collection} --accept FIELD`, or --reject FIELD"
                        )?;
                    }
                }
                Some((field, decision)) => {
                    let evolution = ledger.evolve(&collection, &field, decision)?;
                    if json {
                        writeln!(out, "{}", serde_json::to_string_pretty(&evolution)?)?;
                    } else if evolution.accepted {
                        writeln!(
                            out,
                            "accepted {} into {collection} (schema version {})",
                            evolution.field, evolution.version
                        )?;
                        writeln!(
                            out,
                            "\n-- SQLite migration (applied)\n{}",
                            evolution.sqlite_migration
                        )?;
                        writeln!(
                            out,
                            "\n-- Postgres migration\n{}",
                            evolution.postgres_migration
                        )?;
                    } else {
                        writeln!(
                            out,
                            "rejected {} for {collection} (schema version {}); entries carrying it are refused",
                            evolution.field, evolution.version
                        )?;
                    }
                }
            }
            if accepting {
                sync_store(&ledger, &store, stage, &collection, json, out)?;
            }
            Ok(())
        }
        LedgerCommand::Import { file, collection } => {
            let mut progress = Progress::on_terminal();
            let report = ledger.import_with_progress(
                &collection,
                &file,
                &Provenance::new("import", "director"),
                &mut |p| progress.show(p),
            );
            progress.finish();
            let report = report?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
            } else {
                writeln!(
                    out,
                    "imported {} entries into {collection}, {} rejected{}",
                    report.recorded,
                    report.rejected,
                    if report.rejected > 0 {
                        format!(" (see `improv ledger rejects {collection}`)")
                    } else {
                        String::new()
                    }
                )?;
                if !report.proposed.is_empty() {
                    writeln!(out, "new fields proposed: {}", report.proposed.join(", "))?;
                }
            }
            Ok(())
        }
        LedgerCommand::Export { collection, csv } => {
            // Fails with a clear message for a collection that does not exist.
            ledger.collection(&collection)?;
            if csv {
                ledger.export_csv(&collection, out)?;
            } else {
                ledger.export_jsonl(&collection, out)?;
            }
            Ok(())
        }
        LedgerCommand::Query {
            collection,
            filter,
            order_by,
            limit,
            schema,
        } => query(&ledger, &collection, filter, order_by, limit, schema, out),
        LedgerCommand::Rejects { collection, limit } => {
            let rejects = ledger.rejects(&collection, limit)?;
            if json {
                writeln!(out, "{}", serde_json::to_string_pretty(&rejects)?)?;
            } else if rejects.is_empty() {
                writeln!(out, "{collection}: no rejects")?;
            } else {
                for r in &rejects {
                    let text: String = r.text.chars().take(200).collect();
                    let more = if text.len() < r.text.len() { "…" } else { "" };
                    writeln!(out, "#{} {} by {} ({})", r.id, r.at, r.actor, r.performance)?;
                    writeln!(out, "  reason: {}", r.reason)?;
                    writeln!(out, "  entry:  {text}{more}")?;
                }
            }
            Ok(())
        }
    }
}

fn query(
    ledger: &Ledger,
    collection: &str,
    filter: Option<String>,
    order_by: Option<String>,
    limit: usize,
    schema: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    // Fails with a clear message for a collection that does not exist.
    ledger.collection(collection)?;
    if schema {
        let Some(schema) = ledger.schema(collection)? else {
            bail!(
                "{collection} is not settled yet; settle it with `improv ledger settle {collection}`"
            );
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&schema)?)?;
        return Ok(());
    }
    let filter = filter
        .map(|text| serde_json::from_str::<serde_json::Value>(&text))
        .transpose()
        .context("--where must be JSON, e.g. '{\"status\": \"open\", \"score\": {\">\": 3}}'")?;
    if limit == 0 {
        bail!("--limit must be at least 1");
    }
    let query = Query::from_json(filter.as_ref(), order_by.as_deref(), Some(limit))?;
    for entry in ledger.query(collection, &query)? {
        writeln!(out, "{}", entry.text)?;
    }
    Ok(())
}

/// Import progress on standard error, only when it is a terminal.
struct Progress {
    shown: bool,
    on_terminal: bool,
}

impl Progress {
    fn on_terminal() -> Progress {
        use std::io::IsTerminal;
        Progress {
            shown: false,
            on_terminal: std::io::stderr().is_terminal(),
        }
    }

    fn show(&mut self, progress: crate::ImportProgress) {
        if !self.on_terminal {
            return;
        }
        let percent = match progress.total_bytes {
            0 => 100,
            total => (progress.bytes.min(total) * 100 / total) as u32,
        };
        eprint!(
            "\r{percent:>3}%  {} MiB  {} recorded, {} rejected ",
            progress.bytes >> 20,
            progress.recorded,
            progress.rejected
        );
        self.shown = true;
    }

    fn finish(&self) {
        if self.shown {
            eprintln!();
        }
    }
}

fn list(ledger: &Ledger, json: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let collections = ledger.collections()?;
    if json {
        let options = ledger.options();
        let value = json!({
            "ledger": ledger.path(),
            "collections": collections,
            "stability": {
                "writes": options.stable_writes,
                "seconds": options.stable_after.as_secs(),
            },
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    if collections.is_empty() {
        writeln!(
            out,
            "the ledger has no collections yet; actors create them with the `record` prop, or `improv ledger import FILE --collection NAME`"
        )?;
        return Ok(());
    }
    let options = ledger.options();
    for c in &collections {
        let state = c.state_label();
        writeln!(
            out,
            "{}  {state}  {} records, {} rejects, {} writes since the last change",
            c.name, c.records, c.rejects, c.writes_since_change
        )?;
        for line in c
            .shape
            .tree(options.enum_max_values, options.enum_min_records)
            .lines()
        {
            writeln!(out, "  {line}")?;
        }
        for s in &c.rename_suspects {
            writeln!(
                out,
                "  ! {} ({}) and {} ({}) look like one field under two names",
                s.first, s.first_count, s.second, s.second_count
            )?;
        }
        let pending: Vec<&str> = c
            .proposals
            .iter()
            .filter(|p| p.status == "pending")
            .map(|p| p.field.as_str())
            .collect();
        if !pending.is_empty() {
            writeln!(
                out,
                "  proposed: {} (`improv ledger evolve {}`)",
                pending.join(", "),
                c.name
            )?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// Brings `collection`'s table in the PostgreSQL store named by `store` up to date, and says
/// what it did; nothing without a store or with a SQLite one (the ledger stays in the stage
/// folder).
fn sync_store(
    ledger: &Ledger,
    store: &StoreArg,
    stage: &str,
    collection: &str,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    use improv_store::StoreUrl;
    let Some(text) = &store.store else {
        return Ok(());
    };
    let StoreUrl::Postgres(url) = StoreUrl::parse(text)? else {
        return Ok(());
    };
    if stage.is_empty() {
        bail!(
            "--store needs the stage's name for its schema; run it as `improv ledger` in a stage"
        );
    }
    let pool = improv_store::PgPool::connect(&url)?;
    let tables = crate::postgres::PgLedger::new(pool, stage);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime that talks to the store")?;
    let synced = runtime.block_on(tables.sync(ledger, collection))?;
    let Some(synced) = synced else {
        return Ok(());
    };
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&synced)?)?;
    } else {
        let change = match synced.table {
            crate::postgres::TableChange::Created => "created",
            crate::postgres::TableChange::Migrated => "migrated",
            crate::postgres::TableChange::Current => "up to date",
        };
        writeln!(
            out,
            "\ntable {}.{collection} in {}: {change} (version {}), {} entries loaded",
            tables.schema(),
            StoreUrl::Postgres(url.clone()).redacted(),
            synced.version,
            synced.loaded
        )?;
    }
    Ok(())
}
