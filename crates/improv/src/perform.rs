//! Performing a stage: `improv run` (new or resumed) and the interactive session, with Ctrl-C,
//! SIGTERM and SIGHUP interrupting cleanly ([`crate::shutdown`]), every performance inside the
//! stage's edges.

use crate::shutdown::{Shutdown, Stop};
use crate::slash::{self, Typed};
use crate::view;
use anyhow::{Context, Result, anyhow, bail};
use improv_edges::{Approver, Prompt, Unattended};
use improv_kernel::{Ended, Observer, Outcome};
use improv_perform::{Launch, Production};
use improv_stage::Stage;
use std::io::{BufRead, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::mpsc::UnboundedReceiver;

pub struct RunOptions {
    pub stage: Option<PathBuf>,
    pub intent: Option<String>,
    pub json: bool,
    pub resume: Option<String>,
    pub model: Option<String>,
    /// `-v`: the terminal shows what stays the same on every run (the sandbox's details).
    pub verbose: bool,
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

pub use improv_perform::state_dir;

/// The views of a run: the terminal (or JSON lines), and one per cued actor's sub-performance.
fn views(json: bool, verbose: bool) -> (Arc<dyn Observer>, Option<improv_perform::Watch>) {
    if json {
        // Sub-performances are logged apart; `cue_started` names their ids.
        (Arc::new(view::JsonLines), None)
    } else {
        let watch: improv_perform::Watch =
            Arc::new(move || Arc::new(view::Terminal::cued(verbose)) as Arc<dyn Observer>);
        (Arc::new(view::Terminal::new(verbose)), Some(watch))
    }
}

fn exit_code(outcome: Outcome, shutdown: &Shutdown) -> ExitCode {
    match outcome {
        Outcome::Done | Outcome::Converged => ExitCode::SUCCESS,
        Outcome::Exhausted => ExitCode::from(4),
        Outcome::Failed => ExitCode::from(1),
        Outcome::Stopped => ExitCode::from(3),
        Outcome::Interrupted => shutdown.interrupted_code(),
    }
}

/// The intent to perform: the one given, else the stage's.
pub fn intent(stage: &Stage, given: Option<String>) -> Result<String> {
    given
        .or_else(|| stage.stage.intent.clone().filter(|i| !i.trim().is_empty()))
        .ok_or_else(|| {
            anyhow!(
                "the stage {} has no intent: set `intent` under [stage] or pass --intent \"...\"",
                stage.path.display()
            )
        })
}

/// `improv run`: performs the intent (or resumes a performance) until the work is done, or
/// converges when the stage has checks.
pub async fn run(o: RunOptions) -> Result<ExitCode> {
    let stage = Arc::new(load_stage(
        o.stage.as_deref(),
        o.intent.is_some() || o.resume.is_some(),
    )?);
    let intent = match &o.resume {
        Some(_) => String::new(),
        None => intent(&stage, o.intent.clone())?,
    };
    let (view, watch) = views(o.json, o.verbose);
    let shutdown = Shutdown::install()?;
    // `improv run` is unattended: an `ask` rule denies, telling the actor why.
    let mut launch = Launch::new(intent);
    launch.model = o.model.clone();
    launch.observers = vec![view];
    launch.watch = watch;
    launch.resume = o.resume.clone();
    launch.outside = crate::stagecraft::attach_mcp(&stage).await?;
    let (mut production, _notes) = Production::open(stage, launch)?;
    let ended = production.perform(&shutdown.arm()).await;
    let summary = production.finish(&ended)?;
    improv_perform::trace::flush(improv_perform::trace::FLUSH_AT_EXIT);
    if !o.json {
        view::summary(&summary);
    }
    Ok(exit_code(summary.outcome, &shutdown))
}

/// `improv` alone: the director talks with the lead, turn after turn.
pub async fn session(
    stage_path: Option<PathBuf>,
    model: Option<String>,
    verbose: bool,
) -> Result<ExitCode> {
    let stage = load_stage(stage_path.as_deref(), true)?;
    // Lines are read on their own thread so a turn can run while the director types. They go
    // to the session, or to the approval prompt while a turn asks the director.
    let (tx, lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let lines = Arc::new(tokio::sync::Mutex::new(lines));
    let asking = Arc::new(AtomicBool::new(false));
    let interactive = std::io::stdin().is_terminal();
    let approver: Arc<dyn Approver> = if interactive {
        Arc::new(Asking {
            inner: Prompt::new(DirectorLines::new(lines.clone()), std::io::stderr()),
            asking: asking.clone(),
        })
    } else {
        Arc::new(Unattended)
    };
    let stage = Arc::new(stage);
    let mut launch = Launch::new("");
    launch.model = model;
    launch.approver = approver;
    let (view, watch) = views(false, verbose);
    launch.observers = vec![view];
    launch.watch = watch;
    launch.outside = crate::stagecraft::attach_mcp(&stage).await?;
    let name = stage.stage.name.clone();
    let shutdown = Shutdown::install()?;
    let (mut performance, notes) = Production::open(stage, launch)?;
    eprintln!(
        "improv · stage {name} · type to direct the cast · /help for commands · /exit or Ctrl-D to leave · Ctrl-C stops a turn"
    );

    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut ended = Ended::new(Outcome::Done, "the director ended the session");
    loop {
        eprint!("director › ");
        let stopping = shutdown.stopping();
        let next = tokio::select! {
            line = async { lines.lock().await.recv().await } => line,
            _ = stopping.cancelled() => {
                eprintln!();
                ended = interrupted(&shutdown);
                break;
            }
        };
        let Some(line) = next else {
            eprintln!();
            break;
        };
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let line = match slash::parse(line) {
            Typed::Direct(text) => text,
            Typed::Exit => break,
            Typed::Help => {
                eprintln!("{}", slash::HELP);
                continue;
            }
            Typed::Status => {
                eprintln!("{}", slash::status(performance.id(), &performance.spent()));
                continue;
            }
            Typed::Unknown(word) => {
                eprintln!(
                    "unknown command {word}: /help lists the commands; start the line with // to send it to the cast"
                );
                continue;
            }
        };
        performance.direct(&line)?;
        // While the turn runs, what the director types is a note the lead reads before its
        // next model call (unless the turn is asking the director to approve something).
        // Piped input is a script of directions, one per turn, so it is not forwarded.
        let forward = interactive
            .then(|| tokio::spawn(forward_notes(lines.clone(), asking.clone(), notes.clone())));
        let turn = performance.act(&shutdown.arm()).await;
        if let Some(forward) = forward {
            forward.abort();
        }
        shutdown.disarm();
        if shutdown.stopping().is_cancelled() {
            ended = interrupted(&shutdown);
            break;
        }
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
    performance.finish(&ended)?;
    improv_perform::trace::flush(improv_perform::trace::FLUSH_AT_EXIT);
    Ok(exit_code(ended.outcome, &shutdown))
}

/// How a session ends when the director asks it to stop with a signal.
fn interrupted(shutdown: &Shutdown) -> Ended {
    let by = match shutdown.received() {
        Some(Stop::Terminate) => "SIGTERM",
        Some(Stop::Hangup) => "SIGHUP",
        Some(Stop::Interrupt) | None => "Ctrl-C",
    };
    Ended::new(
        Outcome::Interrupted,
        format!("the director stopped the session ({by})"),
    )
}

/// Hands lines typed during a turn to the lead as director notes. It never holds the lines
/// while the turn asks for an approval, so the answer reaches the prompt.
async fn forward_notes(
    lines: Arc<tokio::sync::Mutex<UnboundedReceiver<String>>>,
    asking: Arc<AtomicBool>,
    notes: improv_kernel::NoteSender,
) {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if asking.load(Ordering::SeqCst) {
            continue;
        }
        let Ok(mut rx) = lines.try_lock() else {
            continue;
        };
        while let Ok(line) = rx.try_recv() {
            let line = line.trim();
            if !line.is_empty() && notes.send(line) {
                eprintln!("(note for the lead's next turn)");
            }
        }
    }
}

/// The terminal approver, telling the note forwarder when it is waiting for an answer.
struct Asking {
    inner: Prompt,
    asking: Arc<AtomicBool>,
}

#[async_trait::async_trait]
impl Approver for Asking {
    async fn ask(&self, request: &improv_edges::ApprovalRequest) -> improv_edges::Approval {
        self.asking.store(true, Ordering::SeqCst);
        let answer = self.inner.ask(request).await;
        self.asking.store(false, Ordering::SeqCst);
        answer
    }
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
