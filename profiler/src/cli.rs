//! Command line. Flags become typed config here and nowhere else.

use std::ffi::OsString;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::collect::{
    CudaConfig, OffCpuConfig, UnwindConfig, UnwindMode, DEFAULT_CUDA_STACKS_PER_SECOND,
    DEFAULT_UNWIND_TABLE_MIB,
};
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
    /// Profile every process continuously; push to Pyroscope or write pprof files.
    Agent(AgentArgs),
}

/// Flags of `smolder agent`. Each overrides the config file and the
/// `SMOLDER_*` environment; credentials are only read from files or the
/// environment, never from flags (argv is visible to every user).
#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  smolder agent                                   # pprof files in /var/lib/smolder/profiles\n  smolder agent --server https://pyroscope:4040 --tenant team-a\n  smolder agent --config /etc/smolder/agent.toml --check\n\nEnvironment: SMOLDER_SERVER_URL, SMOLDER_TENANT, SMOLDER_BEARER_TOKEN(_FILE),\nSMOLDER_BASIC_AUTH_USER, SMOLDER_BASIC_AUTH_PASSWORD(_FILE), SMOLDER_CA_FILE,\nSMOLDER_WINDOW, SMOLDER_FREQUENCY, SMOLDER_OFF_CPU, SMOLDER_OUTPUT_DIR,\nSMOLDER_SPOOL_DIR, SMOLDER_METRICS_ADDRESS, SMOLDER_LOG_FORMAT, SMOLDER_LOG (level).\nSee docs/agent.md."
)]
pub struct AgentArgs {
    /// TOML config file (also SMOLDER_CONFIG).
    #[arg(short, long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Pyroscope base URL; without one, profiles go to --output-dir.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Tenant (X-Scope-OrgID).
    #[arg(long)]
    pub tenant: Option<String>,
    /// Window length: one profile per service per window (default 15s).
    #[arg(long, value_name = "DURATION")]
    pub window: Option<String>,
    /// Samples per second per CPU (default 19).
    #[arg(short = 'F', long)]
    pub frequency: Option<String>,
    /// Also profile off-CPU time (pushed as `offcpu`).
    #[arg(long)]
    pub off_cpu: bool,
    /// Also probe CUDA launches and sync calls (pushed as `cuda_launch` and
    /// `gpu_wait`; see docs/gpu.md).
    #[arg(long)]
    pub cuda: bool,
    /// Local directory for pprof files when no server is set.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Where pushes wait while the server is unreachable.
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Serve Prometheus metrics here (IP:PORT, or a port on 127.0.0.1).
    #[arg(long, value_name = "ADDR")]
    pub metrics_address: Option<String>,
    /// Static label added to every profile (repeatable).
    #[arg(long = "label", value_name = "NAME=VALUE")]
    pub labels: Vec<String>,
    /// Log lines as text or JSON.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// Check the configuration, print it, and exit.
    #[arg(long)]
    pub check: bool,
}

impl AgentArgs {
    /// The flags as the last configuration layer.
    pub fn overrides(&self) -> crate::agent::Overrides {
        let mut o = crate::agent::Overrides::default();
        let path = |p: &PathBuf| p.to_string_lossy().into_owned();
        let flags: [(&'static str, &str, Option<String>); 10] = [
            ("server.url", "--server", self.server.clone()),
            ("server.tenant", "--tenant", self.tenant.clone()),
            ("profiling.window", "--window", self.window.clone()),
            ("profiling.frequency", "--frequency", self.frequency.clone()),
            (
                "profiling.off_cpu",
                "--off-cpu",
                self.off_cpu.then(|| "true".to_owned()),
            ),
            (
                "profiling.cuda",
                "--cuda",
                self.cuda.then(|| "true".to_owned()),
            ),
            (
                "output.directory",
                "--output-dir",
                self.output_dir.as_ref().map(path),
            ),
            (
                "spool.directory",
                "--spool-dir",
                self.spool_dir.as_ref().map(path),
            ),
            (
                "metrics.address",
                "--metrics-address",
                self.metrics_address.clone(),
            ),
            ("log.format", "--log-format", self.log_format.clone()),
        ];
        for (key, flag, value) in flags {
            if let Some(value) = value {
                o.set(key, value, flag);
            }
        }
        for label in &self.labels {
            o.set("labels", label.clone(), "--label");
        }
        o
    }
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
    /// Record on-CPU samples (the default unless --off-cpu or --cuda is given).
    #[arg(long)]
    pub on_cpu: bool,
    /// Record CUDA launches (to FILE, or FILE.cuda.EXT beside a CPU profile)
    /// and the time threads wait in CUDA sync calls (FILE.gpuwait.EXT), by
    /// the stacks that made them. Probes libcudart and libcuda; needs no
    /// restart and no GPU. See docs/gpu.md.
    #[arg(long)]
    pub cuda: bool,
    /// CUDA: launches and sync calls sampled with their stacks, per process
    /// and second (every call is counted whatever this is).
    #[arg(long, default_value_t = DEFAULT_CUDA_STACKS_PER_SECOND, value_name = "N")]
    pub cuda_stacks_per_second: u32,
    /// Off-CPU: ignore blocks shorter than this (1us, 1ms).
    #[arg(long, default_value = "1us", value_parser = parse_duration, value_name = "DURATION")]
    pub off_cpu_min: Duration,
    /// Off-CPU: time one in N sleeps, to keep busy hosts cheap; totals are
    /// scaled back up by N.
    #[arg(long, default_value = "1", value_name = "N")]
    pub off_cpu_sample_every: NonZeroU32,
    /// How user stacks are walked: `dwarf` (.eh_frame tables, frame pointers
    /// where there are none) or `fp` (frame pointers only).
    #[arg(long, value_enum, default_value = "dwarf", value_name = "MODE")]
    pub unwind: UnwindMode,
    /// Kernel memory for unwind tables, in MiB (4 bytes per row; libc needs
    /// about 0.1 MiB, libtorch_cpu 9 MiB). Modules that do not fit use frame pointers.
    #[arg(long, default_value_t = NonZeroU32::new(DEFAULT_UNWIND_TABLE_MIB).expect("nonzero"), value_name = "MIB")]
    pub unwind_table_mib: NonZeroU32,
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
            on_cpu: self.on_cpu || !(self.off_cpu || self.cuda),
            off_cpu: self.off_cpu.then_some(OffCpuConfig {
                min_block: self.off_cpu_min,
                sample_every: self.off_cpu_sample_every,
            }),
            unwind: UnwindConfig {
                mode: self.unwind,
                table_bytes: u64::from(self.unwind_table_mib.get()) << 20,
            },
            cuda: self.cuda.then_some(CudaConfig {
                stacks_per_second: self.cuda_stacks_per_second,
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
            Commands::Agent(_) => panic!("not a record command"),
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

    #[test]
    fn unwinding_flags() {
        let c = parse(&["smolder", "record", "-a"]).unwrap();
        assert_eq!(c.unwind.mode, UnwindMode::Dwarf);
        assert_eq!(
            c.unwind.table_bytes,
            u64::from(DEFAULT_UNWIND_TABLE_MIB) << 20
        );
        let c = parse(&[
            "smolder",
            "record",
            "-a",
            "--unwind",
            "fp",
            "--unwind-table-mib",
            "8",
        ])
        .unwrap();
        assert_eq!(c.unwind.mode, UnwindMode::FramePointers);
        assert_eq!(c.unwind.table_bytes, 8 << 20);
        assert!(Cli::try_parse_from(["smolder", "record", "-a", "--unwind", "lbr"]).is_err());
        assert!(
            Cli::try_parse_from(["smolder", "record", "-a", "--unwind-table-mib", "0"]).is_err()
        );
    }
}
