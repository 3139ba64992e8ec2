//! A performance's event stream, from a point on: the logged events a stream missed, then the
//! live ones, each once and in order, ending with an `end` frame. A running performance is
//! followed through its [`Live`]; a finished one is replayed from its log.

use crate::live::{End, Frame, Live};
use futures::Stream;
use improv_kernel::{Event, EventKind, Outcome, Spent};
use improv_log::{EventLog, PerformanceRow, Status};
use serde_json::json;
use std::collections::VecDeque;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

/// How often the log of a performance running in another process is read again.
const TAIL_EVERY: std::time::Duration = std::time::Duration::from_millis(250);

/// The frames of performance `id` after event `after`.
pub(crate) fn follow(
    live: Option<Arc<Live>>,
    log: Arc<EventLog>,
    id: String,
    after: Option<u64>,
) -> impl Stream<Item = Frame> + Send + 'static {
    let state = Follow {
        live,
        log,
        id,
        last: after,
        queue: VecDeque::new(),
        rx: None,
        started: false,
        done: false,
        tailing: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        let frame = s.next().await?;
        Some((frame, s))
    })
}

struct Follow {
    live: Option<Arc<Live>>,
    log: Arc<EventLog>,
    id: String,
    /// The seq of the last event sent.
    last: Option<u64>,
    queue: VecDeque<Frame>,
    rx: Option<tokio::sync::broadcast::Receiver<Frame>>,
    started: bool,
    done: bool,
    /// Following the log of a performance another process runs.
    tailing: bool,
}

impl Follow {
    async fn next(&mut self) -> Option<Frame> {
        if !self.started {
            self.started = true;
            self.catch_up().await;
        }
        loop {
            while let Some(frame) = self.queue.pop_front() {
                if let Some(seq) = frame.seq {
                    if self.last.is_some_and(|last| seq <= last) {
                        continue;
                    }
                    self.last = Some(seq);
                }
                if frame.is_end() {
                    self.done = true;
                    self.queue.clear();
                }
                return Some(frame);
            }
            if self.done {
                return None;
            }
            if self.tailing {
                self.catch_up().await;
                continue;
            }
            let rx = self.rx.as_mut()?;
            match rx.recv().await {
                Ok(frame) => self.queue.push_back(frame),
                // Fell behind the broadcast: read again from the ring and the log.
                Err(RecvError::Lagged(_)) => self.catch_up().await,
                Err(RecvError::Closed) => return None,
            }
        }
    }

    /// Queues what was missed since `last` and subscribes to what follows.
    async fn catch_up(&mut self) {
        let from = self.last.map_or(0, |l| l.saturating_add(1));
        let Some(live) = self.live.clone() else {
            // Not performed by this server: the log is the whole story, or, while another
            // process performs it, a story still being written: read on until it ends.
            match self.logged(from, u64::MAX).await {
                Ok((events, row)) if row.status == Status::Running => {
                    self.queue.extend(events.iter().filter_map(event_frame));
                    if self.queue.is_empty() {
                        tokio::time::sleep(TAIL_EVERY).await;
                    }
                    self.tailing = true;
                }
                Ok((events, row)) => {
                    let end = end_of(&row, &events);
                    self.queue.extend(events.iter().filter_map(event_frame));
                    self.queue.push_back(Frame::end(&end));
                }
                Err(message) => {
                    self.queue.push_back(Frame::error(&message));
                    self.done = true;
                }
            }
            return;
        };
        let snapshot = live.subscribe(self.last);
        self.rx = Some(snapshot.rx);
        self.queue.clear();
        if let Some(before) = snapshot.log_before {
            // The performance is running: a log not written yet is no error, only empty.
            if let Ok((events, _)) = self.logged(from, before).await {
                self.queue.extend(events.iter().filter_map(event_frame));
            }
        }
        self.queue.extend(snapshot.frames);
    }

    /// The logged events with `from <= seq < before`, and the performance's row.
    async fn logged(&self, from: u64, before: u64) -> Result<(Vec<Event>, PerformanceRow), String> {
        let log = self.log.clone();
        let id = self.id.clone();
        let read = tokio::task::spawn_blocking(move || {
            let row = log.find(&id)?;
            let events = log.events(&row.id)?;
            Ok::<_, improv_log::LogError>((events, row))
        })
        .await
        .map_err(|e| format!("reading the log failed: {e}"))?
        .map_err(|e| e.to_string())?;
        let (mut events, row) = read;
        events.retain(|e| e.seq >= from && e.seq < before);
        Ok((events, row))
    }
}

fn event_frame(event: &Event) -> Option<Frame> {
    Frame::event(event).ok()
}

impl Frame {
    pub(crate) fn end(end: &End) -> Frame {
        Frame {
            seq: None,
            name: Some("end"),
            data: json!(end).to_string().into(),
        }
    }

    pub(crate) fn error(message: &str) -> Frame {
        Frame {
            seq: None,
            name: Some("error"),
            data: json!({"error": {"message": message}}).to_string().into(),
        }
    }
}

/// How a logged performance ended, from its row and its events.
pub(crate) fn end_of(row: &PerformanceRow, events: &[Event]) -> End {
    let outcome = match row.status {
        Status::Done => Outcome::Done,
        Status::Converged => Outcome::Converged,
        Status::Exhausted => Outcome::Exhausted,
        Status::Stopped => Outcome::Stopped,
        Status::Interrupted | Status::Running => Outcome::Interrupted,
        Status::Failed => Outcome::Failed,
    };
    let indexed = Spent {
        turns: row.turns,
        input_tokens: row.input_tokens,
        output_tokens: row.output_tokens,
        cost_usd: row.cost_usd,
        elapsed_ms: row.elapsed_ms,
        ..Spent::default()
    };
    let told = Told::from(events);
    End {
        id: row.id.clone(),
        outcome,
        reason: row.reason.clone(),
        attempts: told.attempts,
        spent: told.spent.unwrap_or(indexed),
        answer: told.answer,
    }
}

/// What a performance's events tell of its end: the `end` frame's fields besides the outcome.
pub(crate) struct Told {
    pub attempts: u32,
    /// The lead's last reply without tool calls.
    pub answer: String,
    /// What `performance_finished` says was spent, when it was logged.
    pub spent: Option<Spent>,
}

impl From<&[Event]> for Told {
    fn from(events: &[Event]) -> Told {
        let mut told = Told {
            attempts: 0,
            answer: String::new(),
            spent: None,
        };
        for e in events {
            match &e.kind {
                EventKind::AttemptFinished { attempt, .. } => {
                    told.attempts = told.attempts.max(*attempt);
                }
                EventKind::ModelReplied {
                    text, tool_calls, ..
                } if tool_calls.is_empty() => told.answer.clone_from(text),
                EventKind::PerformanceFinished { spent, .. } => told.spent = Some(*spent),
                _ => {}
            }
        }
        told
    }
}
