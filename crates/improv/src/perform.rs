//! Performing a stage: `improv run` (new or resumed) and the interactive session, with Ctrl-C
//! interrupting cleanly, every performance inside the stage's edges.

use crate::cast::{self, Edges};
use crate::view;
use anyhow::{Context, Result, anyhow, bail};
use improv_edges::{Approver, LoopDetector, Prompt, RedactingObserver, Unattended};
use improv_kernel::performance::new_id;
use improv_kernel::{Ended, EventKind, Observer, Outcome, Performance, PerformanceBuilder};
use improv_log::EventLog;
use improv_stage::Stage;
use std::io::{BufRead, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::UnboundedReceiver;
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

/// The performance's builder with the lead cast inside the edges, and the edges themselves,
/// which live until the performance is [finished](end).
fn builder(
    stage: &Stage,
    model: Option<&str>,
    approver: Arc<dyn Approver>,
) -> Result<(PerformanceBuilder, Edges)> {
    let workspace = workspace(stage)?;
    let edges = cast::edges(stage, &workspace, approver)?;
    let actor = cast::lead(stage, &workspace, model, &edges)?;
    let loop_limit = usize::try_from(stage.edges.loop_limit).unwrap_or(usize::MAX);
    let mut b = Performance::builder(actor)
        .stage(stage.stage.name.clone())
        .workspace(workspace)
        .budget(stage.budget())
        .hook(Arc::new(LoopDetector::new(loop_limit)))
        .hook(edges.decisions.clone());
    if let Some(t) = stage.edges.tool_timeout {
        b = b.tool_timeout(t);
    }
    Ok((b, edges))
}

/// The log and the view behind one redaction: each event is checked for secrets once, then
/// handed to both.
fn redacting(edges: &Edges, log: Arc<dyn Observer>, view: Arc<dyn Observer>) -> Arc<dyn Observer> {
    Arc::new(RedactingObserver::new(
        Arc::new(Both(log, view)),
        edges.redactor.clone(),
    ))
}

/// Two observers as one; both always see the event, and the first error is reported.
struct Both(Arc<dyn Observer>, Arc<dyn Observer>);

impl Observer for Both {
    fn observe(&self, event: &improv_kernel::Event) -> Result<(), improv_kernel::ObserveError> {
        let first = self.0.observe(event);
        let second = self.1.observe(event);
        first.and(second)
    }
}

/// Logs what the sandbox enforces (or that the stage turned it off), right after the start.
fn announce_sandbox(performance: &mut Performance, edges: &Edges) -> Result<()> {
    if let Some(sandbox) = &edges.sandbox {
        performance.emit(EventKind::SandboxStarted {
            enforced: sandbox.is_enforced(),
            description: sandbox.describe(),
        })?;
    }
    Ok(())
}

/// Finishes the performance: logs the decisions of its last turn, then the end, then drops
/// the edges, whose sandbox kills whatever the actors left running.
fn end(mut performance: Performance, ended: &Ended, edges: Edges) -> Result<()> {
    for kind in edges.decisions.take() {
        performance.emit(kind)?;
    }
    performance.finish(ended)?;
    if let Some(sandbox) = &edges.sandbox {
        sandbox.reap();
    }
    drop(edges);
    Ok(())
}

fn exit_code(outcome: Outcome) -> ExitCode {
    match outcome {
        Outcome::Done | Outcome::Converged => ExitCode::SUCCESS,
        Outcome::Exhausted => ExitCode::from(4),
        Outcome::Failed => ExitCode::from(1),
        Outcome::Stopped => ExitCode::from(3),
        Outcome::Interrupted => ExitCode::from(130),
    }
}

/// `improv run`: performs the intent (or resumes a performance) until the actor ends its turn.
pub async fn run(o: RunOptions) -> Result<ExitCode> {
    let stage = load_stage(o.stage.as_deref(), o.intent.is_some() || o.resume.is_some())?;
    let log = EventLog::open(&state_dir(&stage))?;
    // `improv run` is unattended: an `ask` rule denies, telling the actor why.
    let (builder, edges) = builder(&stage, o.model.as_deref(), Arc::new(Unattended))?;
    let view: Arc<dyn Observer> = if o.json {
        Arc::new(view::JsonLines)
    } else {
        Arc::new(view::Terminal::new())
    };
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
                .observer(redacting(&edges, log.recorder(&row.id)?, view))
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
                .observer(redacting(&edges, log.recorder(&id)?, view))
                .start(&intent)?
        }
    };
    announce_sandbox(&mut performance, &edges)?;
    let ended = performance.act(&ctrl_c.arm()).await;
    end(performance, &ended, edges)?;
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
    // Lines are read on their own thread so a turn can run while the director types. They go
    // to the session, or to the approval prompt while a turn asks the director.
    let (tx, lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let lines = Arc::new(tokio::sync::Mutex::new(lines));
    let approver: Arc<dyn Approver> = if std::io::stdin().is_terminal() {
        Arc::new(Prompt::new(
            DirectorLines::new(lines.clone()),
            std::io::stderr(),
        ))
    } else {
        Arc::new(Unattended)
    };
    let (builder, edges) = builder(&stage, model.as_deref(), approver)?;
    let ctrl_c = CtrlC::install()?;
    let mut performance = builder
        .id(id.clone())
        .observer(redacting(
            &edges,
            log.recorder(&id)?,
            Arc::new(view::Terminal::new()),
        ))
        .start("")?;
    announce_sandbox(&mut performance, &edges)?;
    eprintln!(
        "improv · stage {} · type to direct the cast · /exit or Ctrl-D to leave · Ctrl-C stops a turn",
        stage.stage.name
    );

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
        let Some(line) = lines.lock().await.recv().await else {
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
            Outcome::Done | Outcome::Converged => {}
            Outcome::Interrupted => eprintln!("(turn interrupted; say how to go on)"),
            Outcome::Stopped | Outcome::Failed | Outcome::Exhausted => {
                eprintln!("{}", turn.reason);
                ended = turn;
                break;
            }
        }
    }
    end(performance, &ended, edges)?;
    Ok(exit_code(ended.outcome))
}

/// The director's typed lines as the approval prompt's input: the next line typed answers the
/// question. Read only from a blocking thread (the prompt reads on one).
struct DirectorLines {
    lines: Arc<tokio::sync::Mutex<UnboundedReceiver<String>>>,
    line: Vec<u8>,
    at: usize,
}

impl DirectorLines {
    fn new(lines: Arc<tokio::sync::Mutex<UnboundedReceiver<String>>>) -> Self {
        DirectorLines {
            lines,
            line: Vec::new(),
            at: 0,
        }
    }
}

impl Read for DirectorLines {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = {
            let available = self.fill_buf()?;
            let n = available.len().min(out.len());
            out[..n].copy_from_slice(&available[..n]);
            n
        };
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for DirectorLines {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if self.at >= self.line.len() {
            // The session holds the lock only while it waits at its own prompt, when no turn
            // (and so no approval) runs.
            match self.lines.blocking_lock().blocking_recv() {
                Some(line) => {
                    self.line = format!("{line}\n").into_bytes();
                    self.at = 0;
                }
                None => return Ok(&[]),
            }
        }
        Ok(&self.line[self.at..])
    }

    fn consume(&mut self, n: usize) {
        self.at = (self.at + n).min(self.line.len());
    }
}
