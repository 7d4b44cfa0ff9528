//! Command line. Flags become typed config here and nowhere else.

use std::ffi::OsString;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::collect::OffCpuConfig;
use crate::config::{parse_duration, OutputFormat, RecordConfig};
use crate::target::TargetSpec;

#[derive(Debug, Parser)]
#[command(
    name = "smolder",
    version,
    about = "Continuous eBPF profiler for Linux"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Commands,
}

#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Capture an on-CPU profile once: pprof, collapsed stacks or an SVG flame graph.
    Record(RecordArgs),
}

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  smolder record --all --duration 10s -o flame.svg\n  smolder record --pid 1234 -o app.pb.gz\n  smolder record -o build.folded -- make -j2"
)]
pub struct RecordArgs {
    /// Profile these processes (repeatable, or comma-separated).
    #[arg(short, long = "pid", value_name = "PID", value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Profile every process on the host.
    #[arg(short, long, conflicts_with = "pids")]
    pub all: bool,
    /// Stop after this long (30s, 500ms, 2m). Default: until Ctrl-C or the target exits.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Samples per second per CPU.
    #[arg(short = 'F', long, default_value = "99")]
    pub frequency: NonZeroU32,
    /// Output file; the format follows its extension (.svg, .folded, else pprof).
    #[arg(short, long, default_value = "smolder.pb.gz")]
    pub output: PathBuf,
    /// Output format, overriding the extension.
    #[arg(long, value_enum)]
    pub format: Option<OutputFormat>,
    /// No progress line and no summary.
    #[arg(short, long)]
    pub quiet: bool,
    /// Record off-CPU time (where threads block, and for how long) instead of
    /// on-CPU samples. With --on-cpu, both: the off-CPU profile then goes to
    /// FILE.offcpu.EXT.
    #[arg(long)]
    pub off_cpu: bool,
    /// Record on-CPU samples (the default unless --off-cpu is given).
    #[arg(long)]
    pub on_cpu: bool,
    /// Off-CPU: ignore blocks shorter than this (1us, 1ms).
    #[arg(long, default_value = "1us", value_parser = parse_duration, value_name = "DURATION")]
    pub off_cpu_min: Duration,
    /// Off-CPU: time one in N sleeps, to keep busy hosts cheap; totals are
    /// scaled back up by N.
    #[arg(long, default_value = "1", value_name = "N")]
    pub off_cpu_sample_every: NonZeroU32,
    /// Report the BPF programs' run time (turns on kernel BPF stats).
    #[arg(long, hide = true)]
    pub bpf_stats: bool,
    /// Command to start and profile, with its children, until it exits.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    #[error("say what to profile: --all, --pid PID, or -- COMMAND ARGS")]
    NoTarget,
    #[error("give either a command or --pid/--all, not both")]
    TargetConflict,
    #[error("frequency {0} Hz is above the kernel's usual limit; use at most 10000")]
    FrequencyTooHigh(u32),
}

impl RecordArgs {
    pub fn into_config(self) -> Result<RecordConfig, CliError> {
        let targets = match (self.all, self.pids.is_empty(), self.command.is_empty()) {
            (true, true, true) => TargetSpec::All,
            (false, false, true) => TargetSpec::Pids(self.pids),
            (false, true, false) => TargetSpec::Command(self.command),
            (false, true, true) => return Err(CliError::NoTarget),
            _ => return Err(CliError::TargetConflict),
        };
        if self.frequency.get() > 10_000 {
            return Err(CliError::FrequencyTooHigh(self.frequency.get()));
        }
        let format = self
            .format
            .unwrap_or_else(|| OutputFormat::infer(&self.output));
        Ok(RecordConfig {
            targets,
            duration: self.duration,
            frequency: self.frequency,
            output: self.output,
            format,
            quiet: self.quiet,
            bpf_stats: self.bpf_stats,
            on_cpu: self.on_cpu || !self.off_cpu,
            off_cpu: self.off_cpu.then_some(OffCpuConfig {
                min_block: self.off_cpu_min,
                sample_every: self.off_cpu_sample_every,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RecordConfig, CliError> {
        let cli = Cli::try_parse_from(args).expect("parses");
        match cli.command {
            Commands::Record(r) => r.into_config(),
        }
    }

    #[test]
    fn targets_and_formats() {
        let c = parse(&["smolder", "record", "-p", "1,2", "-o", "x.svg"]).unwrap();
        assert_eq!(c.targets, TargetSpec::Pids(vec![1, 2]));
        assert_eq!(c.format, OutputFormat::Svg);
        assert_eq!(c.frequency.get(), 99);
        let c = parse(&[
            "smolder",
            "record",
            "--format",
            "collapsed",
            "--",
            "sleep",
            "1",
        ])
        .unwrap();
        assert_eq!(
            c.targets,
            TargetSpec::Command(vec!["sleep".into(), "1".into()])
        );
        assert_eq!(c.format, OutputFormat::Collapsed);
        assert_eq!(
            parse(&["smolder", "record"]).unwrap_err(),
            CliError::NoTarget
        );
        assert_eq!(
            parse(&["smolder", "record", "-a", "--", "ls"]).unwrap_err(),
            CliError::TargetConflict
        );
    }
}
