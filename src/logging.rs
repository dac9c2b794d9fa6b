//! The binary's log: tracing events to stderr, as text (coloured only on a terminal) or JSON lines,
//! through a filter that a reload swaps (`log` in the config, `--log`).

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

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

/// The handle of the installed subscriber's filter; unset when [`init`] did not run (the proxy
/// started in-process by a test or an embedding program, whose log is its own).
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// A filter in tracing's `EnvFilter` syntax (`info`, `haproxy_rs=debug,warn`).
///
/// # Errors
/// The parser's message when `filter` does not parse.
pub fn parse_filter(filter: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(filter).map_err(|e| format!("not a log filter ({e}): {filter:?}"))
}

/// Installs the global subscriber: events passing `filter` (`info` when it does not parse) go to
/// stderr in `format`. [`set_filter`] replaces the filter later.
pub fn init(filter: &str, format: LogFormat) {
    let filter = parse_filter(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    use tracing_subscriber::fmt::layer;
    let text = (format == LogFormat::Text)
        .then(|| layer().with_writer(std::io::stderr).with_ansi(colour()));
    let json = (format == LogFormat::Json)
        .then(|| layer().json().with_writer(std::io::stderr).with_ansi(false));
    // Only the first call installs a subscriber (and keeps its handle).
    if tracing_subscriber::registry()
        .with(filter)
        .with(text)
        .with(json)
        .try_init()
        .is_ok()
    {
        let _ = FILTER.set(handle);
    }
}

/// Replaces the filter of the subscriber [`init`] installed (nothing without one); events from
/// then on pass the new one.
///
/// # Errors
/// `filter` does not parse (the filter in force stays).
pub fn set_filter(filter: &str) -> Result<(), String> {
    let parsed = parse_filter(filter)?;
    match FILTER.get() {
        Some(handle) => handle
            .reload(parsed)
            .map_err(|e| format!("cannot replace the log filter: {e}")),
        None => Ok(()),
    }
}

/// Whether text lines get ANSI colours: only on a terminal, and not under `NO_COLOR`
/// (<https://no-color.org>), which `with_ansi` would otherwise override.
fn colour() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
