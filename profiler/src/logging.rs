//! Log output: `tracing` events (and the `log` records of libraries) to
//! stderr, as text or JSON lines. The level comes from `SMOLDER_LOG`
//! (`warn`, `info`, `debug`, or a filter such as `smolder=debug`).

use tracing_subscriber::EnvFilter;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global subscriber. `default_level` applies when `SMOLDER_LOG`
/// is unset; `timestamps` is off for one-shot commands, whose output a person
/// reads right away.
pub fn init(format: LogFormat, default_level: &str, timestamps: bool) {
    let filter =
        EnvFilter::try_from_env("SMOLDER_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // A second init (tests calling into the library) is harmless: ignore it.
    let _ = match (format, timestamps) {
        (LogFormat::Json, _) => builder.json().try_init(),
        (LogFormat::Text, true) => builder.try_init(),
        (LogFormat::Text, false) => builder.without_time().try_init(),
    };
}

/// Warns once per kind of message: the text without its digits (pids,
/// addresses) is the kind, so one broken process of a thousand alike says
/// so once.
#[derive(Debug, Default)]
pub struct WarnOnce {
    said: std::collections::HashSet<String>,
}

impl WarnOnce {
    pub fn warn(&mut self, message: String) {
        let kind: String = message.chars().filter(|c| !c.is_ascii_digit()).collect();
        if self.said.insert(kind) {
            tracing::warn!("{message}");
        }
    }
}
