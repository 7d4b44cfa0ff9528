//! Typed configuration of `smolder record`. The CLI becomes this in one place
//! (`cli.rs`).

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::target::TargetSpec;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Gzipped pprof protobuf (`go tool pprof`, Pyroscope, Grafana).
    Pprof,
    /// Collapsed stacks, one `comm;root;...;leaf COUNT` line per stack.
    Collapsed,
    /// SVG flame graph.
    Svg,
}

impl OutputFormat {
    /// From a file name: `.svg`, `.folded`/`.collapsed`/`.txt`, otherwise pprof.
    pub fn infer(path: &Path) -> Self {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if name.ends_with(".svg") {
            Self::Svg
        } else if [".folded", ".collapsed", ".txt"]
            .iter()
            .any(|e| name.ends_with(e))
        {
            Self::Collapsed
        } else {
            Self::Pprof
        }
    }
}

#[derive(Debug, Clone)]
pub struct RecordConfig {
    pub targets: TargetSpec,
    /// `None`: until Ctrl-C, or until the command or pids exit.
    pub duration: Option<Duration>,
    pub frequency: NonZeroU32,
    pub output: PathBuf,
    pub format: OutputFormat,
    pub quiet: bool,
    /// Turn on the kernel's BPF run-time accounting and report it.
    pub bpf_stats: bool,
}

/// `30s`, `500ms`, `2m`, `1h`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (try 30s, 500ms, 2m)"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{text}` (use ms, s, m or h)"
            ))
        }
    };
    if !(seconds > 0.0 && seconds.is_finite()) {
        return Err(format!("duration `{text}` must be positive"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infers_format_from_extension() {
        assert_eq!(
            OutputFormat::infer(Path::new("a/flame.SVG")),
            OutputFormat::Svg
        );
        assert_eq!(
            OutputFormat::infer(Path::new("x.folded")),
            OutputFormat::Collapsed
        );
        assert_eq!(
            OutputFormat::infer(Path::new("x.pb.gz")),
            OutputFormat::Pprof
        );
        assert_eq!(OutputFormat::infer(Path::new("x")), OutputFormat::Pprof);
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
