//! The `improv` command: set up a stage, perform it, watch it, look back at it.

mod approve;
mod arena;
mod causes;
mod door;
mod index;
mod init;
mod limits;
mod logbook;
mod logs;
mod memory;
mod models;
mod notify;
mod perform;
mod resident;
mod routines;
mod serve;
mod shutdown;
mod slash;
mod stagecraft;
mod store;
mod view;
mod worker;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "improv",
    version,
    about = "Set up a stage and let actors improvise on it.",
    long_about = "Set up a stage and let actors improvise on it.\n\nWith no command, opens an interactive session: the director talks with the cast, turn after turn."
)]
struct Cli {
    /// The stage file (default: ./stage.toml).
    #[arg(long, short = 's', global = true, value_name = "FILE")]
    stage: Option<PathBuf>,
    #[command(flatten)]
    log: logs::LogArgs,
    #[command(flatten)]
    perform: PerformArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Write a commented stage.toml in the current folder.
    Init {
        /// Overwrite an existing stage.toml.
        #[arg(long)]
        force: bool,
    },
    /// Perform the stage's intent, streamed to the terminal.
    Run(RunArgs),
    /// List past performances: id, intent, status, turns, tokens, cost, time. With --store, the
    /// store's (every worker's): state, outcome, intent, started, worker; with an ID, its events.
    #[command(visible_alias = "logs")]
    Log {
        /// With --store: the performance whose events to print (its id or first 6+ characters).
        #[arg(requires = "store")]
        id: Option<String>,
        /// How many to list, newest first.
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Read the store's index (or IMPROV_STORE's) instead of the stage folder's log:
        /// postgres://USER@HOST/DB or sqlite:PATH.
        #[arg(long, env = store::STORE_ENV, value_name = "URL", hide_env_values = true)]
        store: Option<String>,
    },
    /// Replay a past performance from its log.
    Show {
        /// The performance id: the short form `improv log` shows, or a unique prefix (6+
        /// characters with --store).
        id: String,
        /// Print the logged events as JSON lines.
        #[arg(long)]
        json: bool,
        /// Show the details that are the same on every run (what the sandbox enforces).
        #[arg(long, short = 'v')]
        verbose: bool,
        /// Read it from the store (or IMPROV_STORE) and print its events as they arrive, until
        /// it finishes.
        #[arg(long)]
        follow: bool,
        /// Read it from this store instead of the stage folder's log (with --follow: this store
        /// or IMPROV_STORE): postgres://USER@HOST/DB or sqlite:PATH.
        #[arg(long, value_name = "URL")]
        store: Option<String>,
    },
    /// The ledger: collections the actors recorded, their inferred shapes, settled schemas.
    Ledger {
        #[command(subcommand)]
        command: Option<improv_ledger::cli::LedgerCommand>,
        /// JSON output, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Send a director note to a running performance (from another terminal); its lead reads it
    /// before its next model call.
    Note {
        /// The performance id: the short form `improv log` shows, or a unique prefix (6+
        /// characters with --store).
        id: String,
        /// What to tell the cast.
        text: Vec<String>,
        /// Leave it in the store (or IMPROV_STORE) for whichever worker performs the
        /// performance: postgres://USER@HOST/DB or sqlite:PATH.
        #[arg(long, env = store::STORE_ENV, value_name = "URL", hide_env_values = true)]
        store: Option<String>,
    },
    /// Check a stage: are its capabilities, context, goal, edges, collaboration and feedback
    /// sound? Exits 1 on an error, so CI can gate a stage.
    Doctor {
        /// JSON output, for scripts.
        #[arg(long)]
        json: bool,
    },
    /// List the Agent Skills the actors see, with their token cost.
    Skills {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// What the actors remember across performances of this stage (the remember/recall props).
    Memory {
        #[command(subcommand)]
        command: Option<improv_memory::cli::MemoryCommand>,
        /// JSON output, for scripts.
        #[arg(long)]
        json: bool,
        /// The memory in this PostgreSQL store (shared by its workers) instead of the stage
        /// folder's: postgres://USER@HOST/DB. A sqlite: store keeps none; the folder's is used.
        #[arg(long, env = store::STORE_ENV, value_name = "URL", hide_env_values = true)]
        store: Option<String>,
    },
    /// Open the stage view: the HTTP API, live event streams and the web page (loopback only
    /// unless told otherwise; every request but a door's needs the bearer token), and run the
    /// stage's doors.
    Serve(serve::ServeCommand),
    /// Serve the stage over MCP on stdin/stdout: any MCP client can cast it as a prop.
    Mcp,
    /// Perform the performances queued in the store, with leases: run any number of workers.
    Worker(worker::WorkerArgs),
    /// Answer (or list) the approvals a leased performance waits for in the store.
    Approve(approve::ApproveArgs),
    /// The stage's doors (schedules, webhooks, channels): where each stands.
    Door {
        #[command(subcommand)]
        command: door::DoorCommand,
    },
    /// The shared store (PostgreSQL or SQLite): its schema.
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// Routines learned from converged practice: list, show, approve, reject, retire, learn,
    /// export as an Agent Skill.
    Routines {
        #[command(subcommand)]
        command: Option<routines::RoutinesCommand>,
    },
    /// Manage embedded models.
    Model {
        #[command(subcommand)]
        command: models::ModelCommand,
    },
}

/// Options shared by `improv run` and the interactive session (and only them: `improv log
/// --help` does not offer a model).
#[derive(Args, Clone, Default)]
struct PerformArgs {
    /// Override every actor's model for this run, as provider/name (e.g. openai/gpt-5-mini).
    #[arg(long, value_name = "PROVIDER/NAME")]
    model: Option<String>,
    /// Show the details that are the same on every run (what the sandbox enforces).
    #[arg(long, short = 'v')]
    verbose: bool,
}

#[derive(Args)]
struct RunArgs {
    /// Override the stage's intent (the same as --intent).
    #[arg(value_name = "INTENT", conflicts_with = "intent")]
    goal: Option<String>,
    /// Override the stage's intent.
    #[arg(long, short = 'i')]
    intent: Option<String>,
    /// Every event as one JSON line on stdout, for scripts.
    #[arg(long)]
    json: bool,
    /// Continue an interrupted performance from its log (its id or the short form `improv log`
    /// shows).
    #[arg(long, value_name = "ID")]
    resume: Option<String>,
    /// Queue it in the store (or IMPROV_STORE) for `improv worker` and print its id.
    #[arg(long, conflicts_with_all = ["resume", "json"])]
    detach: bool,
    /// The store to queue it in: postgres://USER@HOST/DB or sqlite:PATH.
    #[arg(long, value_name = "URL", requires = "detach")]
    store: Option<String>,
    #[command(flatten)]
    perform: PerformArgs,
}

fn main() -> ExitCode {
    // Before anything maps much code, and while there is one thread (see resident.rs).
    resident::limit_fault_around();
    let cli = Cli::parse();
    if let Err(e) = logs::init(&cli.log) {
        view::report_error(&e);
        return ExitCode::from(2);
    }
    view::quiet_on_closed_stdout();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) if view::is_closed_stdout(&e) => ExitCode::from(view::CLOSED_STDOUT),
        Err(e) => {
            view::report_error(&e);
            ExitCode::from(2)
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    let stage_path = cli.stage.clone();
    match cli.command {
        Some(Command::Init { force }) => init::init(stage_path, force),
        Some(Command::Log {
            id: Some(id),
            json,
            store: Some(store),
            ..
        }) => runtime()?.block_on(index::show(&store, &id, json, cli.perform.verbose)),
        Some(Command::Log {
            limit,
            json,
            store: Some(store),
            ..
        }) => runtime()?.block_on(index::list(&store, limit, json)),
        Some(Command::Log { limit, json, .. }) => logbook::list(stage_path, limit, json),
        Some(Command::Show {
            id,
            json,
            verbose,
            follow: true,
            store,
        }) => runtime()?.block_on(store::follow(&store::named(store)?, &id, json, verbose)),
        Some(Command::Show {
            id,
            json,
            verbose,
            store: Some(store),
            ..
        }) => runtime()?.block_on(index::show(&store, &id, json, verbose)),
        Some(Command::Show {
            id, json, verbose, ..
        }) => logbook::show(stage_path, &id, json, verbose),
        Some(Command::Worker(args)) => worker::run(args, stage_path),
        Some(Command::Approve(args)) => runtime()?.block_on(approve::run(args)),
        Some(Command::Store { command }) => runtime()?.block_on(store::run(command)),
        Some(Command::Door { command }) => {
            let stage = perform::load_stage(stage_path.as_deref(), false)?;
            runtime()?.block_on(door::run(&stage, command))
        }
        Some(Command::Model { command }) => models::run(command),
        Some(Command::Routines { command }) => {
            routines::run(&perform::load_stage(stage_path.as_deref(), false)?, command)
        }
        Some(Command::Doctor { json }) => {
            stagecraft::doctor(&perform::load_stage(stage_path.as_deref(), false)?, json)
        }
        Some(Command::Skills { json }) => {
            stagecraft::skills(&perform::load_stage(stage_path.as_deref(), true)?, json)
        }
        Some(Command::Memory {
            command,
            json,
            store,
        }) => {
            let stage = perform::load_stage(stage_path.as_deref(), true)?;
            memory::run(&stage, command, store.as_deref(), json)?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Serve(args)) => serve::run(stage_path, args),
        Some(Command::Mcp) => {
            let stage = std::sync::Arc::new(perform::load_stage(stage_path.as_deref(), true)?);
            let rt = runtime()?;
            let served = rt.block_on(async {
                let stopping = shutdown::Shutdown::install()?.stopping();
                improv_mcp::serve_stdio_until(stage, stopping.cancelled_owned()).await?;
                anyhow::Ok(())
            });
            // Stopped by a signal, the stdin reader is still blocked in a read on tokio's
            // blocking pool, which an ordinary runtime drop would wait for.
            rt.shutdown_background();
            served?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Note {
            id,
            text,
            store: Some(store),
        }) => runtime()?.block_on(store::note(&store, &id, &text.join(" "))),
        Some(Command::Note { id, text, .. }) => {
            let stage = perform::load_stage(stage_path.as_deref(), true)?;
            let id = improv_perform::send_note(&perform::state_dir(&stage), &id, &text.join(" "))?;
            eprintln!("note sent to {id}; its lead reads it before its next turn");
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Ledger { command, json }) => {
            let stage = perform::load_stage(stage_path.as_deref(), true)?;
            improv_ledger::cli::run(
                command,
                &perform::state_dir(&stage),
                &stage.stage.name,
                improv_perform::cast::ledger_options(&stage),
                json,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Run(run)) if run.detach => {
            let given = run.intent.or(run.goal);
            let stage = perform::load_stage(stage_path.as_deref(), given.is_some())?;
            let intent = perform::intent(&stage, given)?;
            let model = run.perform.model.or(cli.perform.model);
            runtime()?.block_on(store::enqueue(
                &store::named(run.store)?,
                &stage,
                intent,
                model,
            ))
        }
        Some(Command::Run(run)) => runtime()?.block_on(perform::run(perform::RunOptions {
            stage: stage_path,
            intent: run.intent.or(run.goal),
            json: run.json,
            resume: run.resume,
            // `improv --model M run` means the same as `improv run --model M`.
            model: run.perform.model.or(cli.perform.model),
            verbose: run.perform.verbose || cli.perform.verbose,
        })),
        None => runtime()?.block_on(perform::session(
            stage_path,
            cli.perform.model,
            cli.perform.verbose,
        )),
    }
}

/// One thread is enough: the loop waits on the network or on child processes, and blocking work
/// (the embedded model, file walks) runs on tokio's blocking pool.
fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
