//! The one listening connection of a [`super::PgStore`]: it `LISTEN`s on the events channel and
//! broadcasts each notification's performance id to every waiter in the process. When the
//! connection drops (a database restart) it reconnects with a growing pause, and after each
//! (re)connection broadcasts `None`, "look again", since notifications sent meanwhile are lost.

use super::{CHANNEL, Namer, QUEUE, STOPS};
use futures::StreamExt;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

/// Wake-ups: `Some(id)` when performance `id` changed, `None` when any may have.
pub(super) type Wake = Option<String>;

pub(super) struct Listener {
    wakes: broadcast::Sender<Wake>,
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
        let (wakes, _) = broadcast::channel(1024);
        let (queued, _) = broadcast::channel(16);
        let stops = watch::Sender::new(0);
        let senders = Senders {
            wakes: wakes.clone(),
            queued: queued.clone(),
            stops: stops.clone(),
        };
        let task = tokio::spawn(listen(config, tls, namer, senders));
        Listener {
            wakes,
            queued,
            stops,
            task,
        }
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<Wake> {
        self.wakes.subscribe()
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
    wakes: broadcast::Sender<Wake>,
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
        wakes,
        queued,
        stops,
    } = senders;
    let mut pause = Duration::from_millis(50);
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
                let (forward, forward_queued) = (wakes.clone(), queued.clone());
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
                            AsyncMessage::Notification(n) => {
                                let _ = forward.send(Some(n.payload().to_string()));
                            }
                            _ => {}
                        }
                    }
                    drop(ready_tx);
                });
                let listen = format!("LISTEN {CHANNEL}; LISTEN {QUEUE}; LISTEN {STOPS}");
                match client.batch_execute(&listen).await {
                    Ok(()) => {
                        pause = Duration::from_millis(50);
                        let _ = wakes.send(None);
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
