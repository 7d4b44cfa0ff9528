//! The live status line on a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub struct Progress {
    enabled: bool,
    started: Instant,
    last: Option<Instant>,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Self {
            enabled: !quiet && std::io::stderr().is_terminal(),
            started: Instant::now(),
            last: None,
        }
    }

    /// Whether a redraw is due (at most twice a second, on a terminal).
    pub fn due(&self) -> bool {
        self.enabled
            && self
                .last
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(500))
    }

    /// `count` of `what` so far ("1234 samples").
    pub fn update(
        &mut self,
        count: u64,
        what: &str,
        processes: usize,
        lost: u64,
        limit: Option<Duration>,
    ) {
        if !self.due() {
            return;
        }
        self.last = Some(Instant::now());
        let elapsed = self.started.elapsed().as_secs();
        let of = limit
            .map(|d| format!("/{}s", d.as_secs()))
            .unwrap_or_default();
        let lost = if lost > 0 {
            format!(", {lost} lost")
        } else {
            String::new()
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r\x1b[2K[smolder] {elapsed}s{of} elapsed, {count} {what}, {processes} processes{lost} (Ctrl-C to stop)"
        );
        let _ = err.flush();
    }

    pub fn finish(&mut self) {
        if self.enabled && self.last.is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}
