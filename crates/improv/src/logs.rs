//! Where the binary's logs go and how they look: stderr, coloured only for a terminal (and not
//! under `NO_COLOR`), at the level `IMPROV_LOG` names (warn by default), without the warning
//! rmcp writes for every request a client gets wrong (our handlers log those themselves, at
//! debug for the client's mistakes and at error for ours). `--log-format json` (or
//! `IMPROV_LOG_FORMAT=json`) writes one JSON object per line instead, for a log collector.

use std::io::IsTerminal;
use tracing::{Level, Metadata};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{EnvFilter, FilterFn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines look.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// For a person: one readable line per event.
    #[default]
    Text,
    /// For a collector: one JSON object per line (time, level, target, fields, spans).
    Json,
}

/// Installs the logger for the whole process; call once, first thing in `main`.
pub fn init(format: LogFormat) {
    let level = EnvFilter::try_from_env("IMPROV_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let quiet = || FilterFn::new(|meta| !is_request_error(meta));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match format {
        LogFormat::Text => fmt.with_ansi(colours()).with_filter(quiet()).boxed(),
        LogFormat::Json => fmt.json().with_ansi(false).with_filter(quiet()).boxed(),
    };
    tracing_subscriber::registry()
        .with(level)
        .with(layer)
        .init();
}

/// Colours are for a person at a terminal: a log file or a pipe gets plain text, and
/// `NO_COLOR` (any value, <https://no-color.org>) turns them off everywhere.
fn colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// rmcp's per-request warnings (`response error`, `rejected peer request`): each names one
/// request by `id`, and an error answer to a request is, for the MCP servers improv runs, the
/// client's mistake (an unknown method or tool, bad arguments, a missing resource), which a
/// server's operator should not be warned about once per call. The answer itself tells the
/// client what was wrong.
fn is_request_error(meta: &Metadata<'_>) -> bool {
    meta.is_event()
        && *meta.level() == Level::WARN
        && meta.target() == "rmcp::service"
        && meta.fields().field("id").is_some()
}
