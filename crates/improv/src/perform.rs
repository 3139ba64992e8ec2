//! Performing a stage: `improv run` (new or resumed) and the interactive session, with Ctrl-C
//! interrupting cleanly.

use crate::{cast, view};
use anyhow::{Context, Result, anyhow, bail};
use improv_kernel::performance::new_id;
use improv_kernel::{Ended, Observer, Outcome, Performance, PerformanceBuilder};
use improv_log::EventLog;
use improv_stage::Stage;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

pub struct RunOptions {
    pub stage: Option<PathBuf>,
    pub intent: Option<String>,
    pub json: bool,
    pub resume: Option<String>,
    pub model: Option<String>,
}

/// Loads the stage file: the one given, or `./stage.toml`. Without one, `allow_default` performs
/// in the current folder with a default stage.
pub fn load_stage(path: Option<&Path>, allow_default: bool) -> Result<Stage> {
    if let Some(path) = path {
        return Ok(Stage::load(path)?);
    }
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    let default = cwd.join("stage.toml");
    if default.exists() {
        return Ok(Stage::load(&default)?);
    }
    if allow_default {
        return Ok(Stage::default_in(&cwd));
    }
    bail!(
        "no stage.toml in {}: run `improv init` to write one, pass --stage FILE, or give --intent to perform here with a default stage",
        cwd.display()
    )
}

/// Where a stage keeps its state: `.improv/` beside the stage file.
pub fn state_dir(stage: &Stage) -> PathBuf {
    stage.dir.join(".improv")
}

fn workspace(stage: &Stage) -> Result<PathBuf> {
    let root = stage.workspace();
    root.canonicalize().with_context(|| {
        format!(
            "the stage's workspace {} does not exist; create it or fix `workspace` under [edges] in {}",
            root.display(),
            stage.path.display()
        )
    })
}

fn builder(stage: &Stage, model: Option<&str>) -> Result<PerformanceBuilder> {
    let workspace = workspace(stage)?;
    let actor = cast::lead(stage, &workspace, model)?;
    let mut b = Performance::builder(actor)
        .stage(stage.stage.name.clone())
        .workspace(workspace)
        .budget(stage.budget());
    if let Some(t) = stage.edges.tool_timeout {
        b = b.tool_timeout(t);
    }
    Ok(b)
}

fn exit_code(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Done => ExitCode::SUCCESS,
        Outcome::Failed => ExitCode::from(1),
        Outcome::Stopped => ExitCode::from(3),
        Outcome::Interrupted => ExitCode::from(130),
    }
}

/// `improv run`: performs the intent (or resumes a performance) until the actor ends its turn.
pub async fn run(o: RunOptions) -> Result<ExitCode> {
    let stage = load_stage(o.stage.as_deref(), o.intent.is_some() || o.resume.is_some())?;
    let log = EventLog::open(&state_dir(&stage))?;
    let view: Arc<dyn Observer> = if o.json {
        Arc::new(view::JsonLines)
    } else {
        Arc::new(view::Terminal::new())
    };
    let builder = builder(&stage, o.model.as_deref())?;
    let ctrl_c = CtrlC::install()?;
    let mut performance = match &o.resume {
        Some(id) => {
            let row = log.find(id)?;
            if row.status == improv_log::Status::Running {
                bail!(
                    "performance {} is still running in another process; stop it (Ctrl-C there) before resuming it",
                    row.id
                );
            }
            let events = log.events(&row.id)?;
            builder
                .id(row.id.clone())
                .observer(log.recorder(&row.id)?)
                .observer(view)
                .resume(&events)?
        }
        None => {
            let intent = o
                .intent
                .clone()
                .or_else(|| stage.stage.intent.clone().filter(|i| !i.trim().is_empty()))
                .ok_or_else(|| {
                    anyhow!(
                        "the stage {} has no intent: set `intent` under [stage] or pass --intent \"...\"",
                        stage.path.display()
                    )
                })?;
            let id = new_id();
            builder
                .id(id.clone())
                .observer(log.recorder(&id)?)
                .observer(view)
                .start(&intent)?
        }
    };
    let ended = performance.act(&ctrl_c.arm()).await;
    performance.finish(&ended)?;
    Ok(exit_code(ended.outcome))
}

/// Ctrl-C: while a turn runs, the first press interrupts it (its tool is cancelled, the log
/// says "interrupted") and a second exits at once; at the session prompt, a press exits. Every
/// event is written before the loop goes on, so exiting loses nothing.
struct CtrlC {
    turn: Arc<Mutex<Option<CancellationToken>>>,
}

impl CtrlC {
    /// Installs the handler now, before anything runs, so an early press is not missed.
    fn install() -> Result<CtrlC> {
        let mut interrupts =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .context("cannot install the Ctrl-C handler")?;
        let turn: Arc<Mutex<Option<CancellationToken>>> = Arc::default();
        let shared = turn.clone();
        tokio::spawn(async move {
            while interrupts.recv().await.is_some() {
                let running = shared.lock().unwrap_or_else(|e| e.into_inner()).take();
                match running {
                    Some(token) if !token.is_cancelled() => token.cancel(),
                    _ => std::process::exit(130),
                }
            }
        });
        Ok(CtrlC { turn })
    }

    /// A token that the next Ctrl-C cancels.
    fn arm(&self) -> CancellationToken {
        let token = CancellationToken::new();
        *self.turn.lock().unwrap_or_else(|e| e.into_inner()) = Some(token.clone());
        token
    }

    fn disarm(&self) {
        self.turn.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// `improv` alone: the director talks with the lead, turn after turn.
pub async fn session(stage_path: Option<PathBuf>, model: Option<String>) -> Result<ExitCode> {
    let stage = load_stage(stage_path.as_deref(), true)?;
    let log = EventLog::open(&state_dir(&stage))?;
    let id = new_id();
    let builder = builder(&stage, model.as_deref())?;
    let ctrl_c = CtrlC::install()?;
    let mut performance = builder
        .id(id.clone())
        .observer(log.recorder(&id)?)
        .observer(Arc::new(view::Terminal::new()))
        .start("")?;
    eprintln!(
        "improv · stage {} · type to direct the cast · /exit or Ctrl-D to leave · Ctrl-C stops a turn",
        stage.stage.name
    );

    // Lines are read on their own thread so a turn can run while the director types.
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut ended = Ended {
        outcome: Outcome::Done,
        reason: "the director ended the session".into(),
        budget: None,
    };
    loop {
        eprint!("director › ");
        let Some(line) = lines.recv().await else {
            eprintln!();
            break;
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line == "/exit" || line == "/quit" {
            break;
        }
        performance.direct(line)?;
        let turn = performance.act(&ctrl_c.arm()).await;
        ctrl_c.disarm();
        match turn.outcome {
            Outcome::Done => {}
            Outcome::Interrupted => eprintln!("(turn interrupted; say how to go on)"),
            Outcome::Stopped | Outcome::Failed => {
                eprintln!("{}", turn.reason);
                ended = turn;
                break;
            }
        }
    }
    performance.finish(&ended)?;
    Ok(exit_code(ended.outcome))
}
