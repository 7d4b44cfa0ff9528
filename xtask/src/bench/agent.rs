//! Steady-state cost of `smolder agent` at its defaults, pushing to a real
//! Pyroscope with about 200 processes on the host, next to the OpenTelemetry
//! eBPF profiler pushing OTLP to its own fresh Pyroscope at the same rate in
//! the same run. CPU counts the process and its BPF programs (kernel BPF
//! stats); bytes are what the server received.

use std::fmt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::overhead::{build_workload, Load};
use super::{median, Options};
use crate::pyroscope::Server;
use crate::util::{output, workspace_root};

const FREQUENCY: u32 = 19;
const WINDOW_S: u64 = 15;
/// Time before measuring: start-up (BTF, first symbolization) is not steady state.
const WARMUP: Duration = Duration::from_secs(20);
const SLEEPERS: usize = 196;
const SPINNERS: usize = 2;

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    cpu_ms: f64,
    bpf_ms: f64,
    rss_mib: f64,
    peak_rss_mib: f64,
    bytes: f64,
}

pub struct Report {
    seconds: u64,
    runs: usize,
    processes: usize,
    smolder: Sample,
    otel: Sample,
    otel_pushed: bool,
}

/// ~200 processes: mostly idle, two busy.
fn start_load(spinner: &Path, seconds: u64) -> Result<Load> {
    let mut load = Load(Vec::new());
    for _ in 0..SLEEPERS {
        load.0.push(Command::new("sleep").arg("3600").spawn()?);
    }
    for _ in 0..SPINNERS {
        load.0.push(
            Command::new(spinner)
                .arg((seconds + 60).to_string())
                .spawn()?,
        );
    }
    Ok(load)
}

fn process_count() -> usize {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                })
                .count()
        })
        .unwrap_or(0)
}

/// User + system CPU of a live process, in ms.
pub(crate) fn process_cpu_ms(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks * 1000.0 / hz)
}

/// (VmRSS, VmHWM) in MiB.
pub(crate) fn rss_mib(pid: u32) -> Result<(f64, f64)> {
    let [rss, peak] = status_mib(pid, ["VmRSS:", "VmHWM:"])?;
    Ok((rss, peak))
}

/// Fields of `/proc/PID/status` given in kB, in MiB (0 where absent).
pub(crate) fn status_mib<const N: usize>(pid: u32, names: [&str; N]) -> Result<[f64; N]> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(names.map(|name| {
        status
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)?
                    .trim()
                    .strip_suffix(" kB")?
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(0.0)
            / 1024.0
    }))
}

/// Run time of every BPF program on the machine (kernel BPF stats must be
/// on). One profiler runs at a time, and this bench starts no other BPF, so
/// the difference over the measurement is that profiler's. (bpftool's
/// per-process `pids` needs BPF iterators it was not built with here.)
pub(crate) fn bpf_ms() -> Result<f64> {
    let out = output(Command::new("bpftool").args(["prog", "show", "--json"]))?;
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let ns: u64 = progs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|prog| prog["run_time_ns"].as_u64())
        .sum();
    Ok(ns as f64 / 1e6)
}

/// Bytes Pyroscope's distributor received (compressed), over all types.
fn received_bytes(server: &Server) -> f64 {
    server
        .get("/metrics")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("pyroscope_distributor_received_compressed_bytes_sum"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub(crate) struct BpfStats;

impl BpfStats {
    pub(crate) fn enable() -> Result<Self> {
        std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")
            .context("enabling kernel BPF stats (root needed)")?;
        Ok(Self)
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    }
}

/// Measures one profiler (already started) between warm-up and the end.
fn measure_running(child: &mut Child, server: &Server, seconds: u64) -> Result<Sample> {
    let pid = child.id();
    std::thread::sleep(WARMUP);
    if let Some(status) = child.try_wait()? {
        bail!("the profiler exited during warm-up: {status}");
    }
    let (cpu0, bpf0, bytes0) = (process_cpu_ms(pid)?, bpf_ms()?, received_bytes(server));
    std::thread::sleep(Duration::from_secs(seconds));
    let (cpu1, bpf1, bytes1) = (process_cpu_ms(pid)?, bpf_ms()?, received_bytes(server));
    let (rss, peak) = rss_mib(pid)?;
    stop(child);
    Ok(Sample {
        cpu_ms: cpu1 - cpu0,
        bpf_ms: bpf1 - bpf0,
        rss_mib: rss,
        peak_rss_mib: peak,
        bytes: bytes1 - bytes0,
    })
}

pub(crate) fn stop(child: &mut Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    for _ in 0..100 {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn smolder_once(spinner: &Path, seconds: u64) -> Result<Sample> {
    let server = Server::start()?;
    let _load = start_load(spinner, seconds)?;
    let spool = workspace_root().join("target/bench/agent-spool");
    let _ = std::fs::remove_dir_all(&spool);
    let mut child = Command::new(workspace_root().join("target/release/smolder"))
        .args(["agent", "--server", &server.url(), "--spool-dir"])
        .arg(&spool)
        .env("SMOLDER_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    measure_running(&mut child, &server, seconds)
}

fn otel_once(binary: &Path, spinner: &Path, seconds: u64) -> Result<Sample> {
    let server = Server::start()?;
    let _load = start_load(spinner, seconds)?;
    let log = workspace_root().join("target/bench/otel-profiler.log");
    let mut child = Command::new(binary)
        .args([
            "-collection-agent",
            &format!("127.0.0.1:{}", server.http_port),
            "-disable-tls",
            "-samples-per-second",
            &FREQUENCY.to_string(),
            "-reporter-interval",
            &format!("{WINDOW_S}s"),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    measure_running(&mut child, &server, seconds)
}

fn median_sample(samples: &[Sample]) -> Sample {
    let m = |f: fn(&Sample) -> f64| median(&mut samples.iter().map(f).collect::<Vec<_>>());
    Sample {
        cpu_ms: m(|s| s.cpu_ms),
        bpf_ms: m(|s| s.bpf_ms),
        rss_mib: m(|s| s.rss_mib),
        peak_rss_mib: m(|s| s.peak_rss_mib),
        bytes: m(|s| s.bytes),
    }
}

/// The OpenTelemetry profiler attaches a kprobe through tracefs (smolder
/// needs none): mount it if this machine has not.
pub(super) fn ensure_tracefs() -> Result<()> {
    if Path::new("/sys/kernel/tracing/events").exists() {
        return Ok(());
    }
    crate::util::run(Command::new("mount").args(["-t", "tracefs", "nodev", "/sys/kernel/tracing"]))
        .context("mounting tracefs for the OpenTelemetry profiler")
}

pub fn measure(options: &Options) -> Result<Report> {
    ensure_tracefs()?;
    let dir = workspace_root().join("target/bench");
    let spinner = build_workload(&dir)?;
    let otel = crate::otel::ensure()?;
    let _stats = BpfStats::enable()?;
    let (mut smolder, mut peer) = (Vec::new(), Vec::new());
    let mut processes = 0;
    for run in 1..=options.runs {
        eprintln!(
            "agent run {run}/{}: smolder agent, then the OpenTelemetry eBPF profiler, {} s warm-up + {} s each, {FREQUENCY} Hz",
            options.runs,
            WARMUP.as_secs(),
            options.seconds
        );
        // Alternate the order: the second one runs on a warmer page cache.
        if run % 2 == 1 {
            smolder.push(smolder_once(&spinner, options.seconds)?);
            processes = processes.max(process_count());
            peer.push(otel_once(&otel, &spinner, options.seconds)?);
        } else {
            peer.push(otel_once(&otel, &spinner, options.seconds)?);
            smolder.push(smolder_once(&spinner, options.seconds)?);
        }
    }
    let otel = median_sample(&peer);
    Ok(Report {
        seconds: options.seconds,
        runs: options.runs,
        processes: processes.max(SLEEPERS + SPINNERS),
        smolder: median_sample(&smolder),
        otel_pushed: otel.bytes > 0.0,
        otel,
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wall_ms = self.seconds as f64 * 1e3;
        let windows = self.seconds as f64 / WINDOW_S as f64;
        writeln!(
            f,
            "== agent: steady state over {} s after {} s warm-up, {FREQUENCY} Hz, {WINDOW_S} s windows, ~{} processes ({SPINNERS} busy), median of {} runs ==",
            self.seconds,
            WARMUP.as_secs(),
            self.processes,
            self.runs
        )?;
        for (name, s) in [
            ("smolder agent", &self.smolder),
            ("otel ebpf-profiler", &self.otel),
        ] {
            let cpu = s.cpu_ms + s.bpf_ms;
            writeln!(
                f,
                "  {name:<19} {:.2}% of one core ({:.0} ms process + {:.0} ms BPF), RSS {:.1} MiB (peak {:.1}), {:.0} bytes pushed per window ({:.0} per window per process)",
                cpu * 100.0 / wall_ms,
                s.cpu_ms,
                s.bpf_ms,
                s.rss_mib,
                s.peak_rss_mib,
                s.bytes / windows,
                s.bytes / windows / self.processes as f64
            )?;
        }
        let cpu = |s: &Sample| s.cpu_ms + s.bpf_ms;
        writeln!(
            f,
            "  ratio smolder/otel: CPU {:.2}x, RSS {:.2}x (target <= 1x on both; RSS under 100 MiB: {})",
            cpu(&self.smolder) / cpu(&self.otel).max(1e-9),
            self.smolder.rss_mib / self.otel.rss_mib.max(1e-9),
            if self.smolder.peak_rss_mib < 100.0 { "yes" } else { "NO" }
        )?;
        if !self.otel_pushed {
            writeln!(
                f,
                "  note: Pyroscope counted no bytes from the OpenTelemetry profiler (see target/bench/otel-profiler.log)"
            )?;
        }
        Ok(())
    }
}
