//! Tells a service manager how `improv serve` is doing, by systemd's notify protocol
//! (`Type=notify`): `READY=1` once the server listens and the doors' daemon is up,
//! `RELOADING=1` with `MONOTONIC_USEC` and then `READY=1` around a SIGHUP reload, `STOPPING=1`
//! at SIGTERM, a `STATUS=` line with each, and `WATCHDOG=1` every half of `WATCHDOG_USEC` when
//! the unit sets `WatchdogSec=`. Without `NOTIFY_SOCKET` each call does nothing.
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
/// every half of its period for as long as the runtime runs; call within a tokio runtime.
pub fn keep_watchdog() {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (period / 2).max(Duration::from_millis(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            if let Err(e) = send(&[NotifyState::Watchdog]) {
                tracing::warn!("cannot send WATCHDOG=1 through ${NOTIFY_SOCKET}: {e}");
            }
        }
    });
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

    #[test]
    fn a_plain_value_is_a_path() {
        let addr = address(OsStr::new("/run/systemd/notify")).unwrap();
        assert_eq!(
            addr.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
    }
}
