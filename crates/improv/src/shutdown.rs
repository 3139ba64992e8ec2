//! The director wants to stop: Ctrl-C (SIGINT), SIGTERM and SIGHUP, decided in one place for
//! every command that performs (`improv run`, the session, `improv serve`, `improv mcp`).
//!
//! - SIGINT while a turn runs interrupts that turn only (the session goes on); anywhere else it
//!   asks the command to stop.
//! - SIGTERM and SIGHUP always ask the command to stop: the running turn is cancelled, its
//!   processes killed, the sandbox removed and the log ends with `interrupted`. The one
//!   exception: `improv serve` with doors installs [`Shutdown::install_reloading`], and there
//!   SIGHUP asks it to reload the stage file instead (as a daemon is expected to).
//! - A signal that arrives while the command is already stopping exits at once (the escape
//!   hatch when a clean end takes too long).
//!
//! A performance stopped by a signal exits with 128 + the signal's number (130, 143, 129), as a
//! shell reports a process it killed.

use anyhow::{Context, Result};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// The signals that stop a performance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT: Ctrl-C at the terminal.
    Interrupt,
    /// SIGTERM: a service manager, `kill`, a container runtime.
    Terminate,
    /// SIGHUP: the terminal went away.
    Hangup,
}

impl Stop {
    fn number(self) -> i32 {
        self.kind().as_raw_value()
    }

    /// The exit status of a performance this signal interrupted: 128 + the signal's number.
    pub fn exit_code(self) -> ExitCode {
        // SIGINT, SIGTERM and SIGHUP are numbered below 16 everywhere: 128 + N fits a u8.
        ExitCode::from(128 + self.number() as u8)
    }

    fn kind(self) -> SignalKind {
        match self {
            Stop::Interrupt => SignalKind::interrupt(),
            Stop::Terminate => SignalKind::terminate(),
            Stop::Hangup => SignalKind::hangup(),
        }
    }
}

/// The handlers, installed before anything runs so an early signal is not missed.
#[derive(Clone)]
pub struct Shutdown {
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
    /// Where a SIGHUP goes when it reloads instead of stopping.
    reload: Option<tokio::sync::mpsc::UnboundedSender<()>>,
}

#[derive(Default)]
struct State {
    /// The running turn's token, which a SIGINT cancels alone.
    turn: Option<CancellationToken>,
    /// A SIGINT interrupted the armed turn, which has not ended yet.
    interrupting: bool,
    /// The signal that asked the command to stop (or interrupted the last turn).
    received: Option<Stop>,
}

impl Shutdown {
    /// Installs the handlers for SIGINT, SIGTERM and SIGHUP.
    pub fn install() -> Result<Shutdown> {
        Shutdown::install_with(None)
    }

    /// Installs the handlers, SIGHUP asking for a reload: each one is a message on the receiver.
    pub fn install_reloading() -> Result<(Shutdown, tokio::sync::mpsc::UnboundedReceiver<()>)> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Ok((Shutdown::install_with(Some(tx))?, rx))
    }

    fn install_with(reload: Option<tokio::sync::mpsc::UnboundedSender<()>>) -> Result<Shutdown> {
        let shutdown = Shutdown {
            state: Arc::default(),
            stop: CancellationToken::new(),
            reload,
        };
        for which in [Stop::Interrupt, Stop::Terminate, Stop::Hangup] {
            let mut stream = signal(which.kind())
                .with_context(|| format!("cannot install the handler for {which:?}"))?;
            let handler = shutdown.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    handler.on(which);
                }
            });
        }
        Ok(shutdown)
    }

    fn on(&self, which: Stop) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.stop.is_cancelled() || state.interrupting {
            std::process::exit(128 + which.number());
        }
        if which == Stop::Hangup
            && let Some(reload) = &self.reload
            && reload.send(()).is_ok()
        {
            return;
        }
        state.received = Some(which);
        match (which, state.turn.take()) {
            (Stop::Interrupt, Some(turn)) => {
                state.interrupting = true;
                turn.cancel();
            }
            // Cancels the running turn too: it is a child of `stop`.
            _ => self.stop.cancel(),
        }
    }

    /// A token for the next turn: a SIGINT cancels it alone, a stop cancels it with everything.
    /// Already cancelled when the command is stopping.
    pub fn arm(&self) -> CancellationToken {
        let token = self.stop.child_token();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.turn = Some(token.clone());
        state.interrupting = false;
        token
    }

    /// The turn has ended: the next SIGINT stops the command.
    pub fn disarm(&self) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.turn = None;
        state.interrupting = false;
    }

    /// Cancelled once the director asked the command to stop.
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// The signal received last, if any.
    pub fn received(&self) -> Option<Stop> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .received
    }

    /// The exit status of a performance that ended with `interrupted`: the signal's, or 130.
    pub fn interrupted_code(&self) -> ExitCode {
        self.received().unwrap_or(Stop::Interrupt).exit_code()
    }
}
