//! Typed configuration of `smolder record`. The CLI becomes this in one place
//! (`cli.rs`).

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::collect::{CudaConfig, OffCpuConfig, UnwindConfig};
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
    /// Sample stacks on CPU.
    pub on_cpu: bool,
    /// Time voluntary sleeps.
    pub off_cpu: Option<OffCpuConfig>,
    /// How user stacks are walked.
    pub unwind: UnwindConfig,
    /// Probe CUDA launches and sync calls.
    pub cuda: Option<CudaConfig>,
}

impl RecordConfig {
    /// Where the off-CPU profile goes: `output` when it is the only profile,
    /// else `output` with `.offcpu` before its extension.
    pub fn off_cpu_output(&self) -> PathBuf {
        if self.on_cpu {
            with_infix(&self.output, "offcpu")
        } else {
            self.output.clone()
        }
    }

    /// Where the CUDA launch profile goes: `output` when no CPU profile is
    /// recorded, else `output` with `.cuda` before its extension.
    pub fn cuda_output(&self) -> PathBuf {
        if self.on_cpu || self.off_cpu.is_some() {
            with_infix(&self.output, "cuda")
        } else {
            self.output.clone()
        }
    }

    /// Where the GPU wait profile goes: beside the others, `.gpuwait`
    /// before the extension.
    pub fn gpu_wait_output(&self) -> PathBuf {
        with_infix(&self.output, "gpuwait")
    }
}

/// `flame.svg` -> `flame.offcpu.svg`, `p.pb.gz` -> `p.offcpu.pb.gz`.
fn with_infix(path: &Path, infix: &str) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let split = if name.ends_with(".pb.gz") {
        name.len() - ".pb.gz".len()
    } else {
        name.rfind('.').filter(|&i| i > 0).unwrap_or(name.len())
    };
    let (stem, ext) = name.split_at(split);
    path.with_file_name(format!("{stem}.{infix}{ext}"))
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
        "ns" => value / 1e9,
        "us" => value / 1e6,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit `{unit}` in `{text}` (use ns, us, ms, s, m or h)"
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
    fn off_cpu_output_gets_an_infix_only_next_to_on_cpu() {
        assert_eq!(
            with_infix(Path::new("/t/flame.svg"), "offcpu"),
            Path::new("/t/flame.offcpu.svg")
        );
        assert_eq!(
            with_infix(Path::new("p.pb.gz"), "offcpu"),
            Path::new("p.offcpu.pb.gz")
        );
        assert_eq!(
            with_infix(Path::new("out"), "offcpu"),
            Path::new("out.offcpu")
        );
        assert_eq!(
            with_infix(Path::new(".hidden"), "offcpu"),
            Path::new(".hidden.offcpu")
        );
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
