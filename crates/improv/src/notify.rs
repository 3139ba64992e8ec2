//! Tells a service manager how `improv serve` is doing, by systemd's notify protocol
//! (`Type=notify`): `READY=1` once the server listens and the doors' daemon is up,
//! `RELOADING=1` with `MONOTONIC_USEC` and then `READY=1` around a SIGHUP reload, `STOPPING=1`
//! at SIGTERM, a `STATUS=` line with each, and `WATCHDOG=1` every half of `WATCHDOG_USEC` when
//! the unit sets `WatchdogSec=`, each only once the server has shown it is alive (the doors'
//! daemon answers), so a wedged server stops feeding the watchdog and is restarted. Without
//! `NOTIFY_SOCKET` each call does nothing.
//!
//! The messages and the clock come from the `sd-notify` crate ([`NotifyState`]); the few lines
//! that send them are ours because that crate connects to `NOTIFY_SOCKET` as a path only, and
//! systemd may hand a service an abstract socket (`@name`), which it cannot reach.

use sd_notify::NotifyState;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Where the service is in its life, as the service manager is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Listening, the doors open: `READY=1`.
    Ready,
    /// Re-reading the stage file: `RELOADING=1` and the monotonic clock.
    Reloading,
    /// Draining on the way out: `STOPPING=1`.
    Stopping,
}

/// Tells the service manager `phase`, with `status` as its one-line `STATUS=`. A manager that
/// cannot be reached is logged, never fatal: the server serves without it.
pub fn tell(phase: Phase, status: &str) {
    let mut states = match phase {
        Phase::Ready => vec![NotifyState::Ready],
        Phase::Stopping => vec![NotifyState::Stopping],
        Phase::Reloading => match NotifyState::monotonic_usec_now() {
            Ok(now) => vec![NotifyState::Reloading, now],
            Err(e) => {
                tracing::warn!("cannot read the monotonic clock for RELOADING=1: {e}");
                vec![NotifyState::Reloading]
            }
        },
    };
    // One line: the protocol separates its assignments by newlines.
    let status = status.replace('\n', " ");
    states.push(NotifyState::Status(&status));
    if let Err(e) = send(&states) {
        tracing::warn!("cannot tell the service manager {phase:?} through ${NOTIFY_SOCKET}: {e}");
    }
}

/// When the unit asks for a watchdog (`WATCHDOG_USEC`, for this process), sends `WATCHDOG=1`
/// every half of its period, each time after `alive` answered true within that half period;
/// call within a tokio runtime.
pub fn keep_watchdog<F, A>(alive: F)
where
    F: Fn() -> A + Send + 'static,
    A: Future<Output = bool> + Send + 'static,
{
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (period / 2).max(Duration::from_millis(1));
    tokio::spawn(feed(every, alive, || send(&[NotifyState::Watchdog])));
}

/// Every `every`, asks `alive` and, when it says yes within `every`, calls `pet`; a server that
/// does not answer is not vouched for.
async fn feed<F, A, P>(every: Duration, alive: F, mut pet: P)
where
    F: Fn() -> A,
    A: Future<Output = bool>,
    P: FnMut() -> io::Result<()>,
{
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match tokio::time::timeout(every, alive()).await {
            Ok(true) => {
                if let Err(e) = pet() {
                    tracing::warn!("cannot send WATCHDOG=1 through ${NOTIFY_SOCKET}: {e}");
                }
            }
            Ok(false) | Err(_) => tracing::error!(
                "the doors' daemon did not answer within {every:?}: WATCHDOG=1 withheld, so the \
                 service manager restarts the server if it stays wedged"
            ),
        }
    }
}

/// Sends `states` as one datagram to `NOTIFY_SOCKET`, if it is set.
fn send(states: &[NotifyState]) -> io::Result<()> {
    let Some(socket) = std::env::var_os(NOTIFY_SOCKET) else {
        return Ok(());
    };
    let mut message = String::new();
    for state in states {
        // Writing to a String cannot fail.
        let _ = writeln!(message, "{state}");
    }
    let sent = UnixDatagram::unbound()?.send_to_addr(message.as_bytes(), &address(&socket)?)?;
    if sent != message.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "a part was not sent",
        ));
    }
    Ok(())
}

/// `NOTIFY_SOCKET`'s address: a path, or an abstract name when it starts with `@`.
fn address(socket: &OsStr) -> io::Result<SocketAddr> {
    match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => abstract_address(name),
        None => SocketAddr::from_pathname(socket),
    }
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &[u8]) -> io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_address(_: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract socket names (`@…`) exist on Linux only",
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_at_sign_names_an_abstract_socket_and_reaches_it() {
        let name = format!("improv-notify-test-{}", std::process::id());
        let at = format!("@{name}");
        let addr = address(OsStr::new(&at)).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        UnixDatagram::unbound()
            .unwrap()
            .send_to_addr(b"READY=1\n", &addr)
            .unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\n");
    }

    /// The watchdog is fed while the daemon answers, and no more once it is wedged.
    #[tokio::test]
    async fn a_wedged_daemon_stops_the_watchdog() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let wedged = Arc::new(AtomicBool::new(false));
        let pets = Arc::new(AtomicUsize::new(0));
        let alive = {
            let wedged = wedged.clone();
            move || {
                let wedged = wedged.load(Ordering::SeqCst);
                async move {
                    if wedged {
                        std::future::pending::<()>().await;
                    }
                    true
                }
            }
        };
        let pet = {
            let pets = pets.clone();
            move || {
                pets.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        };
        let feeding = tokio::spawn(feed(Duration::from_millis(5), alive, pet));
        while pets.load(Ordering::SeqCst) < 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        wedged.store(true, Ordering::SeqCst);
        // One tick may have asked before the wedge.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let at_wedge = pets.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pets.load(Ordering::SeqCst), at_wedge, "fed while wedged");
        feeding.abort();
    }

    #[test]
    fn a_plain_value_is_a_path() {
        let addr = address(OsStr::new("/run/systemd/notify")).unwrap();
        assert_eq!(
            addr.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
    }
}
