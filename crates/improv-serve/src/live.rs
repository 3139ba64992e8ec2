//! Performances running in this server: each one's recent events (a ring), the broadcast that
//! fans them out to every stream, the approvals waiting for the director, and how it ended.
//!
//! One lock per performance orders everything: an event is put in the ring and broadcast under
//! it, and a subscriber snapshots the ring and subscribes under it, so a stream neither misses
//! nor repeats an event. Events that fell out of the ring are in the log: the kernel hands each
//! event to every observer (the log's recorder included) before the next one, so by the time
//! an event leaves the ring it has been written.

use async_trait::async_trait;
use improv_edges::{Approval, ApprovalRequest, Approver};
use improv_kernel::{Event, EventKind, NoteSender, ObserveError, Observer, Outcome, Spent};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::{broadcast, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// Events kept in memory per running performance; older ones are read back from the log.
pub(crate) const RING: usize = 1024;
/// Frames a slow stream may fall behind before it re-reads from the ring and the log.
const BROADCAST: usize = 1024;

/// One message of an event stream.
#[derive(Clone, Debug)]
pub(crate) struct Frame {
    /// The event's `seq` (the SSE id); `None` for frames that are not logged events.
    pub seq: Option<u64>,
    /// The SSE event name; `None` for kernel events (the default `message`).
    pub name: Option<&'static str>,
    /// JSON.
    pub data: Arc<str>,
}

impl Frame {
    pub(crate) fn event(event: &Event) -> Result<Frame, serde_json::Error> {
        Ok(Frame {
            seq: Some(event.seq),
            name: None,
            data: serde_json::to_string(event)?.into(),
        })
    }

    pub(crate) fn named(name: &'static str, value: &serde_json::Value) -> Frame {
        Frame {
            seq: None,
            name: Some(name),
            data: value.to_string().into(),
        }
    }

    pub(crate) fn is_end(&self) -> bool {
        self.name == Some("end")
    }
}

/// How a performance ended, as the `end` frame and the API report it.
#[derive(Clone, Debug, Serialize)]
pub struct End {
    pub id: String,
    pub outcome: Outcome,
    pub reason: String,
    pub attempts: u32,
    pub spent: Spent,
    /// The lead's last reply.
    pub answer: String,
}

/// An approval waiting for the director's answer.
#[derive(Clone, Debug, Serialize)]
pub struct PendingApproval {
    pub approval: u64,
    pub actor: String,
    pub prop: String,
    pub subject: String,
    pub rule: String,
}

struct Waiting {
    info: PendingApproval,
    answer: oneshot::Sender<Approval>,
}

struct State {
    ring: VecDeque<Frame>,
    pending: BTreeMap<u64, Waiting>,
    next_approval: u64,
    end: Option<Frame>,
    /// The text of the last `model_replied` without tool calls.
    answer: String,
}

/// A performance running in this server.
pub struct Live {
    state: Mutex<State>,
    tx: broadcast::Sender<Frame>,
    end: watch::Sender<Option<Arc<End>>>,
    control: OnceLock<Control>,
}

/// What steers a running performance; set once it has been launched.
pub(crate) struct Control {
    pub notes: NoteSender,
    pub cancel: CancellationToken,
}

/// What a new stream starts from.
pub(crate) struct Snapshot {
    /// Frames from the ring (events after the requested seq), then the pending approvals,
    /// then the end when there is one.
    pub frames: Vec<Frame>,
    /// The seq of the oldest event still in the ring, when events before it must be read
    /// from the log (`Some(u64::MAX)`: the ring is empty, read the whole log).
    pub log_before: Option<u64>,
    pub rx: broadcast::Receiver<Frame>,
}

impl Live {
    pub(crate) fn new() -> Arc<Live> {
        Arc::new(Live {
            state: Mutex::new(State {
                ring: VecDeque::new(),
                pending: BTreeMap::new(),
                next_approval: 1,
                end: None,
                answer: String::new(),
            }),
            tx: broadcast::channel(BROADCAST).0,
            end: watch::channel(None).0,
            control: OnceLock::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Poisoning needs a panic while the lock is held; the ring stays consistent (each
        // change under it is a single push or pop).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_control(&self, control: Control) {
        // Set once, right after launch; a second call would be a bug in this crate.
        let _ = self.control.set(control);
    }

    pub(crate) fn control(&self) -> Option<&Control> {
        self.control.get()
    }

    fn publish(&self, state: &mut State, frame: Frame) {
        if frame.seq.is_some() {
            if state.ring.len() >= RING {
                state.ring.pop_front();
            }
            state.ring.push_back(frame.clone());
        }
        // No receiver is not an error: nobody watches right now.
        let _ = self.tx.send(frame);
    }

    /// The frames after `after` (every frame when `None`) and a receiver for what follows.
    pub(crate) fn subscribe(&self, after: Option<u64>) -> Snapshot {
        let state = self.lock();
        let rx = self.tx.subscribe();
        let from = after.map_or(0, |a| a.saturating_add(1));
        let first = state.ring.front().and_then(|f| f.seq);
        let log_before = match first {
            None => Some(u64::MAX),
            Some(first) if from < first => Some(first),
            Some(_) => None,
        };
        let mut frames: Vec<Frame> = state
            .ring
            .iter()
            .filter(|f| f.seq.is_some_and(|s| s >= from))
            .cloned()
            .collect();
        frames.extend(
            state
                .pending
                .values()
                .map(|w| Frame::named("approval", &json!(w.info))),
        );
        frames.extend(state.end.clone());
        Snapshot {
            frames,
            log_before,
            rx,
        }
    }

    /// The approvals waiting now.
    pub fn pending(&self) -> Vec<PendingApproval> {
        self.lock()
            .pending
            .values()
            .map(|w| w.info.clone())
            .collect()
    }

    /// Answers approval `approval`; false when no such approval waits.
    pub(crate) fn answer(&self, approval: u64, answer: Approval) -> bool {
        let waiting = self.lock().pending.remove(&approval);
        match waiting {
            // The asking side publishes `approval_answered` once it has the answer.
            Some(w) => w.answer.send(answer).is_ok(),
            None => false,
        }
    }

    /// Records how the performance ended and tells every stream.
    pub(crate) fn finish(&self, end: End) {
        let frame = Frame::named("end", &json!(end));
        {
            let mut state = self.lock();
            state.end = Some(frame.clone());
            self.publish(&mut state, frame);
        }
        self.end.send_replace(Some(Arc::new(end)));
    }

    /// Waits until the performance has ended.
    pub(crate) async fn ended(&self) -> Arc<End> {
        let mut rx = self.end.subscribe();
        loop {
            if let Some(end) = rx.borrow_and_update().clone() {
                return end;
            }
            // The sender lives in `self`, so the channel cannot close while this waits; were
            // it to, `changed` returns at once and the loop reads the (unchanged) value again.
            let _ = rx.changed().await;
        }
    }

    /// The lead's final reply so far.
    pub(crate) fn answer_text(&self) -> String {
        self.lock().answer.clone()
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.lock().end.is_some()
    }
}

/// The observer that feeds a [`Live`].
pub(crate) struct LiveObserver(pub Arc<Live>);

impl Observer for LiveObserver {
    fn observe(&self, event: &Event) -> Result<(), ObserveError> {
        let frame = Frame::event(event).map_err(|e| ObserveError(e.to_string()))?;
        let mut state = self.0.lock();
        if let EventKind::ModelReplied {
            text, tool_calls, ..
        } = &event.kind
            && tool_calls.is_empty()
        {
            state.answer.clone_from(text);
        }
        self.0.publish(&mut state, frame);
        Ok(())
    }
}

/// Answers `ask` decisions over the API: the request waits, visible in the stream and in
/// `GET /performances/{id}`, until the director answers or the performance is stopped, or (with
/// a `timeout`: an MCP client's `perform`, whose caller may be no director) until the timeout
/// passes, when it is denied, as a worker's `--ask-timeout` does.
pub(crate) struct WebApprover {
    pub live: Arc<Live>,
    pub timeout: Option<std::time::Duration>,
}

/// Removes an approval nobody answered (its performance was stopped) and says so.
struct Unanswered<'a> {
    live: &'a Live,
    approval: u64,
    armed: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if self.armed {
            let mut state = self.live.lock();
            state.pending.remove(&self.approval);
            let frame = Frame::named(
                "approval_answered",
                &json!({"approval": self.approval, "answer": "withdrawn"}),
            );
            self.live.publish(&mut state, frame);
        }
    }
}

#[async_trait]
impl Approver for WebApprover {
    async fn ask(&self, request: &ApprovalRequest) -> Approval {
        let live = &self.live;
        let (tx, rx) = oneshot::channel();
        let approval = {
            let mut state = live.lock();
            let approval = state.next_approval;
            state.next_approval += 1;
            let info = PendingApproval {
                approval,
                actor: request.actor.clone(),
                prop: request.prop.clone(),
                subject: request.subject.clone(),
                rule: request.rule.clone(),
            };
            let frame = Frame::named("approval", &json!(info));
            state.pending.insert(approval, Waiting { info, answer: tx });
            live.publish(&mut state, frame);
            approval
        };
        let mut guard = Unanswered {
            live,
            approval,
            armed: true,
        };
        let unanswered = || Approval::Deny {
            note: Some("no answer from the director".into()),
        };
        let mut rx = rx;
        let answer = match self.timeout {
            None => (&mut rx).await.unwrap_or_else(|_| unanswered()),
            Some(timeout) => match tokio::time::timeout(timeout, &mut rx).await {
                Ok(answer) => answer.unwrap_or_else(|_| unanswered()),
                Err(_) => timed_out(live, approval, rx, timeout).await,
            },
        };
        guard.armed = false;
        let word = match &answer {
            Approval::Once => "once",
            Approval::ForPerformance => "performance",
            Approval::Deny { .. } => "deny",
            Approval::Unattended => "unattended",
        };
        let mut state = live.lock();
        let frame = Frame::named(
            "approval_answered",
            &json!({"approval": approval, "answer": word}),
        );
        live.publish(&mut state, frame);
        answer
    }
}

/// The answer to approval `approval` once its `timeout` passed: denied with a note saying so,
/// as a worker's `--ask-timeout` denies (not [`Approval::Unattended`], whose message tells the
/// actor it runs where nobody can approve anything), unless the director's answer was taken
/// meanwhile (accepted with a 202 between the last look at `rx` and the timer), which is then
/// the answer rather than lost.
async fn timed_out(
    live: &Live,
    approval: u64,
    rx: oneshot::Receiver<Approval>,
    timeout: std::time::Duration,
) -> Approval {
    let denied = || Approval::Deny {
        note: Some(format!(
            "no answer from the director within {} (this server's --ask-timeout)",
            humantime::format_duration(timeout)
        )),
    };
    // Taken out under the lock `answer` takes it out under: whichever comes first wins.
    let still_waiting = live.lock().pending.remove(&approval).is_some();
    if still_waiting {
        return denied();
    }
    // `answer` sends right after taking it out, and cannot fail to while `rx` lives here; an
    // error would only mean the answer never came.
    rx.await.unwrap_or_else(|_| denied())
}

/// The performances running in this server, by id, and the places reserved for those about to
/// start: a place is taken under the same lock that counts the running, so concurrent starts
/// cannot both take the last one, nor two resumes run one id twice ([`Hub::reserve`]), and
/// none is taken once the server stops ([`Hub::close`]).
#[derive(Default)]
pub(crate) struct Hub {
    running: Mutex<Running>,
    /// Told when the last reserved place is filled or given back (what [`Hub::close`] awaits).
    settled: tokio::sync::Notify,
    /// Cancelled when the server stops: a start holding a place stops waiting for what it
    /// attaches ([`Place::unless_closed`]) and gives the place back, so it does not hold the
    /// stop up.
    closing: CancellationToken,
    /// What the server's performances counted, for `/metrics`.
    pub(crate) metrics: Arc<crate::ops::Metrics>,
}

#[derive(Default)]
struct Running {
    by_id: HashMap<String, Arc<Live>>,
    /// Places taken by starts that have not launched their performance yet.
    reserved: usize,
    /// The ids those of them that resume a performance resume.
    resuming: HashSet<String>,
    /// The server is stopping: no place is given any more.
    closed: bool,
}

/// Why [`Hub::reserve`] gave no place.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Every place is running or reserved.
    Full,
    /// The server is stopping.
    Closed,
    /// The performance to resume runs here, or another start resumes it.
    Busy,
}

/// One place in the [`Hub`], reserved for a performance about to start: [`Place::fill`]ed with
/// it, or given back when dropped (its start failed).
pub(crate) struct Place {
    hub: Arc<Hub>,
    filled: bool,
    /// The id of the performance it resumes, held against another resume until released.
    resuming: Option<String>,
}

impl Place {
    /// The hub the place is in.
    pub(crate) fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Puts the performance that started in the place, as running under `id`.
    pub(crate) fn fill(mut self, id: String, live: Arc<Live>) {
        self.filled = true;
        self.hub.release(self.resuming.take(), Some((id, live)));
    }

    /// `work`'s result, or `None` once the server stops (the caller gives the place back).
    pub(crate) async fn unless_closed<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            () = self.hub.closing.cancelled() => None,
            done = work => Some(done),
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if !self.filled {
            self.hub.release(self.resuming.take(), None);
        }
    }
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, Running> {
        // A map insert or remove, a count changed by one: nothing is left half-changed.
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<Live>> {
        self.lock().by_id.get(id).cloned()
    }

    /// Takes one of `max` places for a performance about to start (to resume `resume` when
    /// given), unless they are all running or reserved, the server is stopping, or the one to
    /// resume runs here or is being resumed by another start.
    pub(crate) fn reserve(
        self: &Arc<Self>,
        max: usize,
        resume: Option<&str>,
    ) -> Result<Place, Refused> {
        let mut running = self.lock();
        if running.closed {
            return Err(Refused::Closed);
        }
        if let Some(id) = resume
            && (running.by_id.contains_key(id) || running.resuming.contains(id))
        {
            return Err(Refused::Busy);
        }
        if running.by_id.len() + running.reserved >= max {
            return Err(Refused::Full);
        }
        running.reserved += 1;
        if let Some(id) = resume {
            running.resuming.insert(id.to_string());
        }
        Ok(Place {
            hub: self.clone(),
            filled: false,
            resuming: resume.map(str::to_string),
        })
    }

    /// Ends a reservation (of one resuming `resuming`), with the performance that took it when
    /// it started.
    fn release(&self, resuming: Option<String>, started: Option<(String, Arc<Live>)>) {
        let mut running = self.lock();
        running.reserved -= 1;
        if let Some(id) = resuming {
            running.resuming.remove(&id);
        }
        if let Some((id, live)) = started {
            running.by_id.insert(id, live);
        }
        if running.reserved == 0 {
            self.settled.notify_waiters();
        }
    }

    pub(crate) fn remove(&self, id: &str) {
        self.lock().by_id.remove(id);
    }

    /// How many performances run here (the reserved places not counted).
    pub(crate) fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    pub(crate) fn all(&self) -> Vec<Arc<Live>> {
        self.lock().by_id.values().cloned().collect()
    }

    /// Gives no place from now on, tells the starts holding one to stop waiting for what they
    /// attach ([`Place::unless_closed`]), waits for them to launch or fail, and
    /// returns every performance running then: none starts after, so the caller can stop and
    /// await them all.
    pub(crate) async fn close(&self) -> Vec<Arc<Live>> {
        self.closing.cancel();
        loop {
            let settled = self.settled.notified();
            let mut settled = std::pin::pin!(settled);
            // Registered before the count is read, so a release in between still wakes it.
            settled.as_mut().enable();
            {
                let mut running = self.lock();
                running.closed = true;
                if running.reserved == 0 {
                    return running.by_id.values().cloned().collect();
                }
            }
            settled.await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests may unwrap

    use super::{Hub, Live, PendingApproval, Refused, Waiting, timed_out};
    use improv_edges::Approval;
    use std::sync::{Arc, Barrier};
    use tokio::sync::oneshot;

    const STARTS: usize = 16;
    const SECOND: std::time::Duration = std::time::Duration::from_secs(1);

    /// Many starts at once on a server with one place: exactly one gets it, however they
    /// interleave (the place is counted under the lock that checks the bound).
    #[test]
    fn concurrent_starts_take_one_place() {
        for _ in 0..50 {
            let hub = Arc::new(Hub::default());
            let barrier = Arc::new(Barrier::new(STARTS));
            let starts: Vec<_> = (0..STARTS)
                .map(|_| {
                    let (hub, barrier) = (hub.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        hub.reserve(1, None)
                    })
                })
                .collect();
            let places: Vec<_> = starts.into_iter().map(|s| s.join().unwrap()).collect();
            let taken = places.iter().filter(|p| p.is_ok()).count();
            assert_eq!(taken, 1, "{taken} of {STARTS} starts took the one place");
            assert!(
                places
                    .iter()
                    .flat_map(|p| p.as_ref().err())
                    .all(|r| *r == Refused::Full),
                "refused for another reason than a full server"
            );
        }
    }

    /// A place given back (its start failed) is free again; one filled counts as running.
    #[test]
    fn a_failed_start_gives_its_place_back() {
        let hub = Arc::new(Hub::default());
        drop(hub.reserve(1, None).unwrap());
        let place = hub.reserve(1, None).unwrap();
        place.fill("p1".into(), Live::new());
        assert_eq!(hub.reserve(1, None).err(), Some(Refused::Full));
        assert_eq!(hub.len(), 1);
    }

    /// A stopping server gives no place (a 503 for the caller), and waits for the starts that
    /// hold one, so the performance they launch is among those it stops and awaits.
    #[tokio::test]
    async fn a_stopping_server_starts_nothing_and_waits_for_those_starting() {
        let hub = Arc::new(Hub::default());
        let starting = hub.reserve(4, None).unwrap();
        let closing = tokio::spawn({
            let hub = hub.clone();
            async move { hub.close().await }
        });
        // Closed before it waits: a start from now on is refused.
        let mut tries = 0;
        let refused = loop {
            match crate::perform::place(&hub, 4, None) {
                Err(refused) => break refused,
                Ok(_) => tries += 1,
            }
            assert!(tries < 10_000, "a stopping server still gives places");
            tokio::task::yield_now().await;
        };
        assert_eq!(refused.status, axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.code, "shutting_down");
        assert!(!closing.is_finished(), "closed while a start held a place");

        let live = Live::new();
        starting.fill("p1".into(), live.clone());
        let running = closing.await.unwrap();
        assert_eq!(running.len(), 1);
        assert!(
            Arc::ptr_eq(&running[0], &live),
            "the last start is not stopped"
        );
    }

    /// Approval 1 of `live`, waiting, and the receiver of its answer.
    fn waiting(live: &Live) -> oneshot::Receiver<Approval> {
        let (tx, rx) = oneshot::channel();
        let info = PendingApproval {
            approval: 1,
            actor: "lead".into(),
            prop: "shell".into(),
            subject: "ls".into(),
            rule: "ask".into(),
        };
        live.lock().pending.insert(1, Waiting { info, answer: tx });
        rx
    }

    /// An answer the API accepted (202) just as the wait timed out, before the asking side
    /// looked at it again, is the answer: not lost for a deny.
    #[tokio::test]
    async fn an_answer_taken_as_the_wait_times_out_is_kept() {
        let live = Live::new();
        let rx = waiting(&live);
        assert!(live.answer(1, Approval::Once), "the answer was refused");
        assert_eq!(timed_out(&live, 1, rx, SECOND).await, Approval::Once);
    }

    /// Timed out with no answer: denied, saying nobody answered in time, and an answer after that is refused (a 404 for
    /// the director), not accepted and dropped.
    #[tokio::test]
    async fn an_answer_after_the_timeout_is_refused() {
        let live = Live::new();
        let rx = waiting(&live);
        let told = timed_out(&live, 1, rx, SECOND).await;
        assert!(
            matches!(&told, Approval::Deny { note: Some(n) } if n.contains("within 1s")),
            "{told:?}"
        );
        assert!(
            !live.answer(1, Approval::Once),
            "a late answer was accepted"
        );
    }

    /// Two resumes of one id at once: one takes a place, the other is refused with a 409, as
    /// is a resume of one running here; once it has ended it can be resumed again.
    #[test]
    fn one_id_is_resumed_once_at_a_time() {
        for _ in 0..50 {
            let hub = Arc::new(Hub::default());
            let barrier = Arc::new(Barrier::new(STARTS));
            let starts: Vec<_> = (0..STARTS)
                .map(|_| {
                    let (hub, barrier) = (hub.clone(), barrier.clone());
                    std::thread::spawn(move || {
                        barrier.wait();
                        hub.reserve(STARTS, Some("p1"))
                    })
                })
                .collect();
            let mut places: Vec<_> = starts.into_iter().map(|s| s.join().unwrap()).collect();
            let taken = places.iter().filter(|p| p.is_ok()).count();
            assert_eq!(taken, 1, "{taken} of {STARTS} resumes of p1 took a place");
            assert!(
                places
                    .iter()
                    .flat_map(|p| p.as_ref().err())
                    .all(|r| *r == Refused::Busy)
            );
            let place = places.swap_remove(places.iter().position(Result::is_ok).unwrap());
            place.unwrap().fill("p1".into(), Live::new());
            let refused = crate::perform::place(&hub, STARTS, Some("p1"))
                .err()
                .unwrap();
            assert_eq!(refused.status, axum::http::StatusCode::CONFLICT);
            assert!(
                hub.reserve(STARTS, Some("p2")).is_ok(),
                "another id is refused"
            );
            hub.remove("p1");
            assert!(
                hub.reserve(STARTS, Some("p1")).is_ok(),
                "p1 ended, still refused"
            );
        }
    }

    /// A stop does not wait for a start that holds a place while attaching the stage's MCP
    /// servers: the start stops waiting and gives its place back.
    #[tokio::test]
    async fn a_stop_does_not_wait_for_an_attachment() {
        let hub = Arc::new(Hub::default());
        let place = hub.reserve(1, None).unwrap();
        let starting = tokio::spawn(async move {
            let attached = place.unless_closed(std::future::pending::<()>()).await;
            attached.is_none()
        });
        // Bounds a hang (the protection missing), not a speed.
        let patience = std::time::Duration::from_secs(30);
        let running = tokio::time::timeout(patience, hub.close())
            .await
            .expect("the stop waits for the attachment");
        assert!(running.is_empty());
        assert!(starting.await.unwrap(), "the attachment was not cut short");
    }
}
