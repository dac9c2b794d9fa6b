//! The binary's log: tracing events to stderr, as text (coloured only on a terminal) or JSON lines.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// How log lines are written (`--log-format`, `HAPROXY_RS_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event; ANSI colours only when stderr is a terminal (and `NO_COLOR`
    /// is not set), so that log files and journals get plain text.
    #[default]
    Text,
    /// One JSON object per line (tracing-subscriber's JSON format: `timestamp`, `level`,
    /// `fields`, `target`, `span`, `spans`), for log shippers.
    Json,
}

/// Installs the global subscriber: events passing `filter` (tracing's `EnvFilter` syntax; `info`
/// when it does not parse) go to stderr in `format`.
pub fn init(filter: &str, format: LogFormat) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let logger = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logger.with_ansi(colour()).init(),
        LogFormat::Json => logger.json().with_ansi(false).init(),
    }
}

/// Whether text lines get ANSI colours: only on a terminal, and not under `NO_COLOR`
/// (<https://no-color.org>), which `with_ansi` would otherwise override.
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
