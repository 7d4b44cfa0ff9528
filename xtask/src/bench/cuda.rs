//! CUDA probes: what a probed call costs the thread that makes it, and what
//! the agent with `profiling.cuda = true` costs at 1k and 20k launches a
//! second. `testdata/cuda_launch_bench.c` calls NVIDIA's libcudart (the PyPI
//! wheel; with no GPU each call returns at once, so what a probe adds
//! stands out): flat out for the time per call with and without
//! `smolder record --cuda` attached; paced for the agent, whose CPU and BPF
//! time are measured against the same agent without CUDA, and with the
//! launching process's own CPU, over three windows after two (the launch
//! budget's steady state).

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::agent::{bpf_ms, process_cpu_ms, stop, BpfStats};
use super::{median, Options};
use crate::util::{run, workspace_root};
use crate::wheels;

/// Calls per flat-out run (about 30 ms unprobed, 3 s probed).
const FLAT_OUT_CALLS: u64 = 2_000_000;
const RATES: [u64; 2] = [1_000, 20_000];
/// Agent windows are 15 s: the paced runs span three, measured once the
/// launch budget has settled (its first window probes every launch: the
/// rate is not known before it).
const PACED_SECONDS: u64 = 45;
const WARMUP: Duration = Duration::from_secs(5);
const PACED_WARMUP: Duration = Duration::from_secs(35);

#[derive(Debug, Clone, Copy, Default)]
struct Paced {
    /// CPU of the launching process, agent CPU, BPF time: ms per second.
    workload: f64,
    agent: f64,
    bpf: f64,
}

pub struct Report {
    runs: usize,
    /// (call, ns per call unprobed, ns per call probed)
    calls: Vec<(&'static str, f64, f64)>,
    /// (rate, without CUDA, with CUDA)
    paced: Vec<(u64, Paced, Paced)>,
}

fn bench_binary() -> Result<PathBuf> {
    let dir = workspace_root().join("target/bench/cuda");
    std::fs::create_dir_all(&dir)?;
    let binary = dir.join("cuda_launch_bench");
    let source = workspace_root().join("testdata/cuda_launch_bench.c");
    run(Command::new("gcc")
        .args(["-O2", "-g", "-o"])
        .arg(&binary)
        .arg(&source)
        .arg("-ldl"))?;
    Ok(binary)
}

/// The benchmark program, started and waiting for its go line.
struct Bench {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
}

impl Bench {
    fn start(binary: &Path, cudart: &Path, args: &[String]) -> Result<Self> {
        let mut child = Command::new(binary)
            .arg(cudart)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().context("stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("cuda_launch_bench: {line:?}");
        }
        Ok(Self {
            child,
            stdin,
            stdout,
        })
    }

    fn go(&mut self) -> Result<()> {
        writeln!(self.stdin, "go")?;
        Ok(())
    }

    /// Its last line, once it exits.
    fn finish(mut self) -> Result<String> {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut self.stdout, &mut text)?;
        self.child.wait()?;
        Ok(text.trim().to_owned())
    }
}

/// `smolder record -p PID --cuda`, until it samples.
fn record(pid: u32) -> Result<Child> {
    let mut child = Command::new(workspace_root().join("target/release/smolder"))
        .args(["record", "-q", "--cuda", "-p", &pid.to_string(), "-o"])
        .arg(workspace_root().join("target/bench/cuda/out.pb.gz"))
        .env("SMOLDER_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stderr = BufReader::new(child.stderr.take().context("stderr")?);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut line = String::new();
    while Instant::now() < deadline {
        line.clear();
        if stderr.read_line(&mut line)? == 0 {
            bail!("smolder record exited before probing");
        }
        if line.contains("CUDA: probing") {
            // Drain the rest so the pipe never fills.
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            return Ok(child);
        }
    }
    bail!("smolder record did not probe libcudart within 60 s")
}

fn ns_per_call(binary: &Path, cudart: &Path, call: &str, probed: bool) -> Result<f64> {
    let args = [call.to_owned(), FLAT_OUT_CALLS.to_string()];
    let mut bench = Bench::start(binary, cudart, &args)?;
    let mut recorder = if probed {
        Some(record(bench.child.id())?)
    } else {
        None
    };
    bench.go()?;
    let last = bench.finish()?;
    if let Some(recorder) = recorder.as_mut() {
        let _ = recorder.wait();
    }
    last.strip_prefix("ns_per_call ")
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("cuda_launch_bench printed {last:?}"))
}

/// The agent (with or without CUDA) and a paced launcher, measured after a
/// warm-up.
fn paced_once(binary: &Path, cudart: &Path, rate: u64, cuda: bool) -> Result<Paced> {
    let dir = workspace_root().join("target/bench/cuda/agent");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let mut agent = Command::new(workspace_root().join("target/release/smolder"));
    agent
        .args(["agent", "--output-dir"])
        .arg(dir.join("out"))
        .env("SMOLDER_LOG", "warn")
        .stdout(Stdio::null());
    if cuda {
        agent.arg("--cuda");
    }
    let mut agent = agent.spawn()?;
    std::thread::sleep(WARMUP);
    let calls = rate * (PACED_SECONDS + PACED_WARMUP.as_secs() + 5);
    let args = ["launch".to_owned(), calls.to_string(), rate.to_string()];
    let mut bench = Bench::start(binary, cudart, &args)?;
    let pid = bench.child.id();
    bench.go()?;
    std::thread::sleep(PACED_WARMUP);
    let (w0, a0, b0) = (process_cpu_ms(pid)?, process_cpu_ms(agent.id())?, bpf_ms()?);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(PACED_SECONDS));
    let (w1, a1, b1) = (process_cpu_ms(pid)?, process_cpu_ms(agent.id())?, bpf_ms()?);
    let seconds = started.elapsed().as_secs_f64();
    let _ = bench.child.kill();
    let _ = bench.child.wait();
    stop(&mut agent);
    Ok(Paced {
        workload: (w1 - w0) / seconds,
        agent: (a1 - a0) / seconds,
        bpf: (b1 - b0) / seconds,
    })
}

pub fn measure(options: &Options) -> Result<Report> {
    let binary = bench_binary()?;
    let cudart = wheels::ensure(&wheels::CUDART)?;
    let runs = options.runs.max(1);
    let mut calls = Vec::new();
    for call in ["launch", "sync"] {
        let (mut plain, mut probed) = (Vec::new(), Vec::new());
        for run in 0..runs {
            eprintln!("cuda: {call}, run {}/{runs}", run + 1);
            plain.push(ns_per_call(&binary, &cudart, call, false)?);
            probed.push(ns_per_call(&binary, &cudart, call, true)?);
        }
        let name = if call == "launch" {
            "cudaLaunchKernel"
        } else {
            "cudaStreamSynchronize"
        };
        calls.push((name, median(&mut plain), median(&mut probed)));
    }
    let _stats = BpfStats::enable()?;
    let mut paced = Vec::new();
    for rate in RATES {
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for run in 0..runs {
            eprintln!("cuda: agent at {rate} launches/s, run {}/{runs}", run + 1);
            without.push(paced_once(&binary, &cudart, rate, false)?);
            with.push(paced_once(&binary, &cudart, rate, true)?);
        }
        let med = |v: &[Paced]| Paced {
            workload: median(&mut v.iter().map(|p| p.workload).collect::<Vec<_>>()),
            agent: median(&mut v.iter().map(|p| p.agent).collect::<Vec<_>>()),
            bpf: median(&mut v.iter().map(|p| p.bpf).collect::<Vec<_>>()),
        };
        paced.push((rate, med(&without), med(&with)));
    }
    Ok(Report { runs, calls, paced })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "CUDA probes (NVIDIA's libcudart, no GPU: calls return at once; medians of {} runs)",
            self.runs
        )?;
        for (call, plain, probed) in &self.calls {
            writeln!(
                f,
                "  {call:<22} {plain:7.1} ns a call unprobed, {probed:7.1} ns probed: +{:.0} ns ({:.0}x)",
                probed - plain,
                probed / plain.max(0.001)
            )?;
        }
        writeln!(
            f,
            "  agent at its defaults (19 Hz) without and with profiling.cuda (launch budget 1% of a core), CPU ms per second, steady state:"
        )?;
        for (rate, without, with) in &self.paced {
            writeln!(
                f,
                "  {rate:>6} launches/s: launching process {:.1} -> {:.1} (+{:.2}% of a core); agent {:.1} -> {:.1}; BPF {:.2} -> {:.2}",
                without.workload,
                with.workload,
                (with.workload - without.workload) / 10.0,
                without.agent,
                with.agent,
                without.bpf,
                with.bpf
            )?;
        }
        Ok(())
    }
}
