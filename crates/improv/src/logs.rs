//! Where the binary's logs go and how they look: stderr, coloured only for a terminal (and not
//! under `NO_COLOR`), at the level `IMPROV_LOG` names (warn by default), without the warning
//! rmcp writes for every request a client gets wrong (our handlers log those themselves, at
//! debug for the client's mistakes and at error for ours). `--log-format json` (or
//! `IMPROV_LOG_FORMAT=json`) writes one JSON object per line instead, for a log collector.
//!
//! `--log-file PATH` writes them to a file instead, rotated by `file-rotate` (a well-kept crate:
//! size and daily limits, numbered suffixes, old files removed): when it passes
//! `--log-max-size` (or at midnight with `--log-rotate daily`) it becomes `PATH.1`, the older
//! ones shift up, and only `--log-keep` of them stay. A line is never cut between two files.
//! Without it the logs go to stderr, which journald (or the terminal) keeps and rotates.

use anyhow::{Context, Result, bail};
use bytesize::ByteSize;
use file_rotate::suffix::AppendCount;
use file_rotate::{ContentLimit, FileRotate, TimeFrequency, compression::Compression};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Mutex;
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

/// When a log file is set aside for a new one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Rotate {
    /// When it passes `--log-max-size`.
    #[default]
    Size,
    /// At the first line after midnight (local time).
    Daily,
}

/// Where the logs go and how they look; global options of every command.
#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// How logs look: text, or json (one object per line, for a log collector).
    #[arg(
        long = "log-format",
        global = true,
        value_enum,
        env = "IMPROV_LOG_FORMAT",
        default_value = "text"
    )]
    pub format: LogFormat,
    /// Write the logs to this file, rotated, instead of stderr. The default, stderr, suits
    /// systemd: journald keeps and rotates it.
    #[arg(
        long = "log-file",
        global = true,
        value_name = "PATH",
        env = "IMPROV_LOG_FILE"
    )]
    pub file: Option<PathBuf>,
    /// With --log-file: when to start a new file.
    #[arg(long = "log-rotate", global = true, value_enum, default_value = "size")]
    pub rotate: Rotate,
    /// With --log-file and --log-rotate size: the size at which a file is rotated (10MB, 512KiB).
    #[arg(
        long = "log-max-size",
        global = true,
        value_name = "SIZE",
        default_value = "10MB"
    )]
    pub max_size: ByteSize,
    /// With --log-file: how many rotated files to keep (PATH.1 … PATH.N) beside PATH.
    #[arg(
        long = "log-keep",
        global = true,
        value_name = "N",
        default_value_t = 5
    )]
    pub keep: usize,
}

/// Installs the logger for the whole process; call once, first thing in `main`.
pub fn init(args: &LogArgs) -> Result<()> {
    let level = EnvFilter::try_from_env("IMPROV_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let quiet = || FilterFn::new(|meta| !is_request_error(meta));
    let fmt = tracing_subscriber::fmt::layer();
    let layer = match (&args.file, args.format) {
        (None, LogFormat::Text) => fmt
            .with_writer(std::io::stderr)
            .with_ansi(colours())
            .with_filter(quiet())
            .boxed(),
        (None, LogFormat::Json) => fmt
            .json()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_filter(quiet())
            .boxed(),
        (Some(_), LogFormat::Text) => fmt
            .with_writer(Mutex::new(rotating(args)?))
            .with_ansi(false)
            .with_filter(quiet())
            .boxed(),
        (Some(_), LogFormat::Json) => fmt
            .json()
            .with_writer(Mutex::new(rotating(args)?))
            .with_ansi(false)
            .with_filter(quiet())
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(level)
        .with(layer)
        .init();
    Ok(())
}

/// The rotating log file `--log-file` names, checked first: `FileRotate` drops every line
/// silently when it cannot open its file, so a path that cannot be written is refused here.
fn rotating(args: &LogArgs) -> Result<FileRotate<AppendCount>> {
    let Some(path) = &args.file else {
        bail!("no --log-file to write to");
    };
    let limit = match args.rotate {
        Rotate::Daily => ContentLimit::Time(TimeFrequency::Daily),
        Rotate::Size => match usize::try_from(args.max_size.as_u64()) {
            Ok(bytes) if bytes > 0 => ContentLimit::BytesSurpassed(bytes),
            _ => bail!(
                "--log-max-size {} is not a size a log file can have: give one above 0, e.g. 10MB",
                args.max_size
            ),
        },
    };
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {} for --log-file", folder.display()))?;
    }
    owner_only()
        .open(path)
        .with_context(|| format!("cannot write the log file {}", path.display()))?;
    /// Owner only: the logs name doors, senders and stores, which others on the machine need
    /// not read.
    fn owner_only() -> std::fs::OpenOptions {
        use std::os::unix::fs::OpenOptionsExt;
        let mut options = std::fs::OpenOptions::new();
        options.read(true).create(true).append(true).mode(0o600);
        options
    }
    Ok(FileRotate::new(
        path,
        AppendCount::new(args.keep),
        limit,
        Compression::None,
        Some(owner_only()),
    ))
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
