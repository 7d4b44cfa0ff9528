//! `smolder agent` on the PyTorch reference workload (testdata/pytorch/
//! server.py on PyTorch from PyPI with its CUDA libraries: 4.5 GB of
//! shared libraries mapped), next to the OpenTelemetry eBPF profiler on the
//! same server in the same run, one after the other. Start-up CPU is what
//! the profiler's process used in its first 20 s (table building and the
//! first symbolization); steady CPU (process + BPF), RSS and peak RSS are
//! measured over the following window, as in the agent benchmark. Also
//! `smolder record`'s own CPU and peak RSS for a 10 s capture of the server.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::agent::{bpf_ms, ensure_tracefs, process_cpu_ms, rss_mib, stop, BpfStats};
use super::rusage;
use super::{median, Options};
use crate::pyroscope::Server;
use crate::util::workspace_root;

const FREQUENCY: u32 = 19;
const STARTUP: Duration = Duration::from_secs(20);
const RECORD_SECONDS: u64 = 10;
const METRICS_PORT: u16 = 9466;

#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    startup_cpu_ms: f64,
    cpu_ms: f64,
    bpf_ms: f64,
    rss_mib: f64,
    peak_rss_mib: f64,
    /// Unwind table bytes in use (smolder's metric; none for the peer).
    unwind_mib: f64,
}

pub struct Report {
    seconds: u64,
    runs: usize,
    smolder: Sample,
    otel: Sample,
    record_cpu_s: f64,
    record_peak_mib: f64,
}

/// The reference model server, killed on drop.
struct ModelServer(Child);

impl ModelServer {
    fn start() -> Result<Self> {
        let torch = crate::wheels::ensure_torch()?;
        let mut child = Command::new("python3")
            .arg(workspace_root().join("testdata/pytorch/server.py"))
            .args(["36000", "1"])
            .env("PYTHONPATH", &torch)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting testdata/pytorch/server.py")?;
        let stdout = child.stdout.take().context("server stdout")?;
        let server = Self(child);
        // Read on a thread for as long as the server runs: it keeps printing.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if line.trim() == "ready" {
                    let _ = ready_tx.send(());
                }
            }
        });
        if ready_rx.recv_timeout(Duration::from_secs(300)).is_err() {
            bail!("the PyTorch server did not print ready within 300 s");
        }
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `smolder_unwind_table_bytes` from the agent's metrics endpoint.
fn unwind_table_mib() -> f64 {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", METRICS_PORT)) else {
        return f64::NAN;
    };
    use std::io::{Read, Write};
    let _ = stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body.lines()
        .find_map(|l| {
            l.strip_prefix("smolder_unwind_table_bytes ")?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |b| b / (1 << 20) as f64)
}

fn measure_running(child: &mut Child, seconds: u64, smolder: bool) -> Result<Sample> {
    let pid = child.id();
    let started = Instant::now();
    std::thread::sleep(STARTUP);
    if let Some(status) = child.try_wait()? {
        bail!(
            "the profiler exited during start-up: {status} ({:?})",
            started.elapsed()
        );
    }
    let (cpu0, bpf0) = (process_cpu_ms(pid)?, bpf_ms()?);
    std::thread::sleep(Duration::from_secs(seconds));
    let (cpu1, bpf1) = (process_cpu_ms(pid)?, bpf_ms()?);
    let (rss, peak) = rss_mib(pid)?;
    let unwind_mib = if smolder {
        unwind_table_mib()
    } else {
        f64::NAN
    };
    stop(child);
    Ok(Sample {
        startup_cpu_ms: cpu0,
        cpu_ms: cpu1 - cpu0,
        bpf_ms: bpf1 - bpf0,
        rss_mib: rss,
        peak_rss_mib: peak,
        unwind_mib,
    })
}

fn smolder_once(seconds: u64) -> Result<Sample> {
    let server = Server::start()?;
    let spool = workspace_root().join("target/bench/pytorch-spool");
    let _ = std::fs::remove_dir_all(&spool);
    let mut child = Command::new(workspace_root().join("target/release/smolder"))
        .args(["agent", "--server", &server.url(), "--spool-dir"])
        .arg(&spool)
        .args(["--metrics-address", &METRICS_PORT.to_string()])
        .env("SMOLDER_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    measure_running(&mut child, seconds, true)
}

fn otel_once(binary: &Path, seconds: u64) -> Result<Sample> {
    let server = Server::start()?;
    let log = workspace_root().join("target/bench/otel-profiler-pytorch.log");
    let mut child = Command::new(binary)
        .args([
            "-collection-agent",
            &format!("127.0.0.1:{}", server.http_port),
            "-disable-tls",
            "-samples-per-second",
            &FREQUENCY.to_string(),
            "-reporter-interval",
            "15s",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    measure_running(&mut child, seconds, false)
}

/// `smolder record` of the server for 10 s: (CPU seconds, peak RSS MiB).
fn record_once(pid: u32) -> Result<(f64, f64)> {
    let out = workspace_root().join("target/bench/pytorch-record.pb.gz");
    let child = Command::new(workspace_root().join("target/release/smolder"))
        .args(["record", "-p", &pid.to_string(), "-d"])
        .arg(format!("{RECORD_SECONDS}s"))
        .arg("-o")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let (usage, stderr) = rusage::wait_with_stderr(child)?;
    if !usage.success {
        bail!("smolder record failed: {stderr}");
    }
    Ok((usage.cpu.as_secs_f64(), usage.max_rss_kib as f64 / 1024.0))
}

fn median_sample(samples: &[Sample]) -> Sample {
    let m = |f: fn(&Sample) -> f64| median(&mut samples.iter().map(f).collect::<Vec<_>>());
    Sample {
        startup_cpu_ms: m(|s| s.startup_cpu_ms),
        cpu_ms: m(|s| s.cpu_ms),
        bpf_ms: m(|s| s.bpf_ms),
        rss_mib: m(|s| s.rss_mib),
        peak_rss_mib: m(|s| s.peak_rss_mib),
        unwind_mib: m(|s| s.unwind_mib),
    }
}

pub fn measure(options: &Options) -> Result<Report> {
    ensure_tracefs()?;
    let otel = crate::otel::ensure()?;
    let server = ModelServer::start()?;
    let _stats = BpfStats::enable()?;
    let (mut smolder, mut peer, mut record) = (Vec::new(), Vec::new(), Vec::new());
    for run in 1..=options.runs {
        eprintln!(
            "pytorch run {run}/{}: smolder agent and the OpenTelemetry eBPF profiler on the model server (pid {}), {} s start-up + {} s each, then smolder record {RECORD_SECONDS} s",
            options.runs,
            server.pid(),
            STARTUP.as_secs(),
            options.seconds
        );
        // Alternate the order: the second one finds a warmer page cache.
        if run % 2 == 1 {
            smolder.push(smolder_once(options.seconds)?);
            peer.push(otel_once(&otel, options.seconds)?);
        } else {
            peer.push(otel_once(&otel, options.seconds)?);
            smolder.push(smolder_once(options.seconds)?);
        }
        record.push(record_once(server.pid())?);
        // Each run's steady cost, to see the spread behind the medians.
        let (ours, theirs) = (smolder[run - 1], peer[run - 1]);
        eprintln!(
            "  run {run}: steady CPU smolder {:.0} + {:.0} ms BPF, otel {:.0} + {:.0} ms BPF ({:.2}x)",
            ours.cpu_ms,
            ours.bpf_ms,
            theirs.cpu_ms,
            theirs.bpf_ms,
            (ours.cpu_ms + ours.bpf_ms) / (theirs.cpu_ms + theirs.bpf_ms)
        );
    }
    let mut cpu: Vec<f64> = record.iter().map(|r| r.0).collect();
    let mut peak: Vec<f64> = record.iter().map(|r| r.1).collect();
    Ok(Report {
        seconds: options.seconds,
        runs: options.runs,
        smolder: median_sample(&smolder),
        otel: median_sample(&peer),
        record_cpu_s: median(&mut cpu),
        record_peak_mib: median(&mut peak),
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wall_ms = self.seconds as f64 * 1e3;
        writeln!(
            f,
            "== pytorch: model server on PyTorch with its CUDA libraries; {} s start-up, then {} s steady, {FREQUENCY} Hz, median of {} runs ==",
            STARTUP.as_secs(),
            self.seconds,
            self.runs
        )?;
        for (name, s) in [
            ("smolder agent", &self.smolder),
            ("otel ebpf-profiler", &self.otel),
        ] {
            let unwind = if s.unwind_mib.is_nan() {
                String::new()
            } else {
                format!(", unwind tables {:.1} MiB", s.unwind_mib)
            };
            writeln!(
                f,
                "  {name:<19} start-up CPU {:.2} s; steady {:.2}% of one core ({:.0} ms process + {:.0} ms BPF); RSS {:.1} MiB (peak {:.1}){unwind}",
                s.startup_cpu_ms / 1e3,
                (s.cpu_ms + s.bpf_ms) * 100.0 / wall_ms,
                s.cpu_ms,
                s.bpf_ms,
                s.rss_mib,
                s.peak_rss_mib,
            )?;
        }
        let ratio = |a: f64, b: f64| a / b.max(1e-9);
        let (s, o) = (&self.smolder, &self.otel);
        writeln!(
            f,
            "  ratio smolder/otel: start-up CPU {:.2}x (target <= 0.5x), steady CPU {:.2}x (target <= 1x), RSS {:.2}x, peak {:.2}x",
            ratio(s.startup_cpu_ms, o.startup_cpu_ms),
            ratio(s.cpu_ms + s.bpf_ms, o.cpu_ms + o.bpf_ms),
            ratio(s.rss_mib, o.rss_mib),
            ratio(s.peak_rss_mib, o.peak_rss_mib),
        )?;
        writeln!(
            f,
            "  smolder agent targets: steady RSS <= 64 MiB: {}; peak <= 128 MiB: {}",
            if s.rss_mib <= 64.0 { "yes" } else { "NO" },
            if s.peak_rss_mib <= 128.0 { "yes" } else { "NO" },
        )?;
        writeln!(
            f,
            "  smolder record -d {RECORD_SECONDS}s of the server: {:.2} s CPU, peak RSS {:.1} MiB",
            self.record_cpu_s, self.record_peak_mib
        )
    }
}
