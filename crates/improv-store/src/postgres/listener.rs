//! The one listening connection of a [`super::PgStore`]: it `LISTEN`s on the events channel and
//! wakes the waiters of the performance each notification names, and only them ([`Waiters`]: a
//! map id -> waiters, so an append does not wake the thousands of other performances' note
//! watchers of a worker, each to filter it out). When the connection drops (a database restart)
//! it reconnects with a growing pause, and after each (re)connection wakes every waiter, "look
//! again", since notifications sent meanwhile are lost.

use super::{CHANNEL, Namer, QUEUE, STOPS};
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The waiters of each performance: a counter of its notifications each waits on.
#[derive(Default)]
pub(super) struct Waiters {
    by_id: Mutex<HashMap<String, watch::Sender<u64>>>,
    /// Every waiter looks again: the listener (re)connected and may have missed notifications.
    all: watch::Sender<u64>,
}

impl Waiters {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<u64>>> {
        // A panic while the map was held leaves it whole (one insert or remove), so it is sound.
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for notifications of performance `id` from now on.
    pub(super) fn subscribe(self: &Arc<Self>, id: &str) -> Subscription {
        let mine = self
            .lock()
            .entry(id.to_string())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe();
        Subscription {
            id: id.to_string(),
            waiters: self.clone(),
            mine,
            all: self.all.subscribe(),
        }
    }

    /// Wakes the waiters of performance `id`.
    fn wake(&self, id: &str) {
        if let Some(sender) = self.lock().get(id) {
            sender.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Wakes every waiter.
    fn wake_all(&self) {
        self.all.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// One waiter of one performance; leaves the map when dropped.
pub(super) struct Subscription {
    id: String,
    waiters: Arc<Waiters>,
    mine: watch::Receiver<u64>,
    all: watch::Receiver<u64>,
}

impl Subscription {
    /// Waits until the performance is notified or every waiter must look again; returns at
    /// once for one notified since the last call (or since subscribing).
    pub(super) async fn changed(&mut self) {
        // Neither sender is dropped while `self` holds the map, so neither call fails.
        tokio::select! {
            _ = self.mine.changed() => {}
            _ = self.all.changed() => {}
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut by_id = self.waiters.lock();
        // Counted under the lock that subscribing takes: 1 is this waiter, the last one.
        if by_id.get(&self.id).is_some_and(|s| s.receiver_count() <= 1) {
            by_id.remove(&self.id);
        }
    }
}

pub(super) struct Listener {
    waiters: Arc<Waiters>,
    /// Something may be claimable: a performance was queued or given back, or the listener
    /// (re)connected and may have missed notifications.
    queued: broadcast::Sender<()>,
    /// How many stops were notified (and reconnections, which may have missed some).
    stops: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Listener {
    /// Starts listening in the background (must be called inside a tokio runtime).
    pub(super) fn start(
        config: tokio_postgres::Config,
        tls: MakeRustlsConnect,
        namer: Namer,
    ) -> Listener {
        let waiters = Arc::new(Waiters::default());
        let (queued, _) = broadcast::channel(16);
        let stops = watch::Sender::new(0);
        let senders = Senders {
            waiters: waiters.clone(),
            queued: queued.clone(),
            stops: stops.clone(),
        };
        let task = tokio::spawn(listen(config, tls, namer, senders));
        Listener {
            waiters,
            queued,
            stops,
            task,
        }
    }

    /// Waits for the notifications of performance `id` (and the listener's reconnections).
    pub(super) fn subscribe(&self, id: &str) -> Subscription {
        self.waiters.subscribe(id)
    }

    pub(super) fn subscribe_queue(&self) -> broadcast::Receiver<()> {
        self.queued.subscribe()
    }

    pub(super) fn subscribe_stops(&self) -> watch::Receiver<u64> {
        self.stops.subscribe()
    }

    pub(super) fn stop(&self) {
        self.task.abort();
    }
}

/// Where the listener tells what it heard.
struct Senders {
    waiters: Arc<Waiters>,
    queued: broadcast::Sender<()>,
    stops: watch::Sender<u64>,
}

/// Listens until aborted, reconnecting whenever the connection ends.
async fn listen(
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    namer: Namer,
    senders: Senders,
) {
    let Senders {
        waiters,
        queued,
        stops,
    } = senders;
    let mut pause = Duration::from_millis(50);
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
                let (forward, forward_queued) = (waiters.clone(), queued.clone());
                let forward_stops = stops.clone();
                // The connection must be polled for LISTEN to complete and for notifications.
                let messages = tokio::spawn(async move {
                    let mut stream =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(Ok(message)) = stream.next().await {
                        match message {
                            AsyncMessage::Notification(n) if n.channel() == QUEUE => {
                                let _ = forward_queued.send(());
                            }
                            AsyncMessage::Notification(n) if n.channel() == STOPS => {
                                forward_stops.send_modify(|n| *n = n.wrapping_add(1));
                            }
                            AsyncMessage::Notification(n) => forward.wake(n.payload()),
                            _ => {}
                        }
                    }
                    drop(ready_tx);
                });
                let listen = format!("LISTEN {CHANNEL}; LISTEN {QUEUE}; LISTEN {STOPS}");
                match client.batch_execute(&listen).await {
                    Ok(()) => {
                        pause = Duration::from_millis(50);
                        waiters.wake_all();
                        let _ = queued.send(());
                        stops.send_modify(|n| *n = n.wrapping_add(1));
                        // Until the connection ends; `client` stays alive meanwhile.
                        let _ = ready_rx.await;
                    }
                    Err(e) => report(&namer, &e),
                }
                messages.abort();
            }
            Err(e) => report(&namer, &e),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// The listener has no caller to return its errors to (waiters see an outage through their own
/// queries, which fail with `Unavailable`), so it logs them, the password scrubbed.
fn report(namer: &Namer, error: &tokio_postgres::Error) {
    tracing::warn!(
        store = %namer.name,
        error = %namer.error(error),
        "the events listener cannot listen; reconnecting"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[test]
    fn a_notification_wakes_only_the_waiters_of_its_performance() {
        let waiters = Arc::new(Waiters::default());
        let mut a = waiters.subscribe("a");
        let mut a2 = waiters.subscribe("a");
        let mut b = waiters.subscribe("b");
        waiters.wake("b");
        assert!(
            a.changed().now_or_never().is_none(),
            "b's notification woke a"
        );
        assert!(b.changed().now_or_never().is_some());
        waiters.wake("a");
        assert!(a.changed().now_or_never().is_some());
        assert!(a2.changed().now_or_never().is_some());
        assert!(
            b.changed().now_or_never().is_none(),
            "a's notification woke b"
        );
        waiters.wake_all();
        assert!(
            b.changed().now_or_never().is_some(),
            "a reconnection wakes all"
        );
        drop(a);
        assert_eq!(waiters.lock().len(), 2, "a2 still waits for a");
        drop((a2, b));
        assert!(waiters.lock().is_empty(), "a waiter left behind an entry");
    }
}
