//! `cargo xtask gpu-check`: smolder's CUDA profiles against ground truth on
//! a machine with an NVIDIA GPU (CI machines have none; docs/gpu.md says
//! where it last ran). The PyTorch reference model
//! (`testdata/pytorch/gpu_check.py`) serves the same requests twice: once
//! under `smolder record --cuda`, once under `torch.profiler` (CUPTI). The
//! launches smolder counted are checked against the launch calls the
//! profiler saw, and the time in smolder's `gpu_wait` against the
//! workload's own timing of its waits.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util::{cargo, die_with_parent, workspace_root};
use crate::{setup, wheels};

const REQUESTS: u64 = 200;
/// Launch counts must agree this closely (the same requests, run twice).
const LAUNCH_TOLERANCE: f64 = 0.02;

const USAGE: &str = "cargo xtask gpu-check [--requests N]

Runs the PyTorch reference model on the GPU under `smolder record --cuda`,
then under torch.profiler, and compares launch counts and wait time.
Needs an NVIDIA GPU with its driver; says so and fails when none is usable.";

struct Workload {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Workload {
    fn start(torch: &Path, requests: u64) -> Result<Self> {
        let dir = workspace_root().join("testdata/pytorch");
        let mut child = die_with_parent(
            Command::new("python3")
                .arg(dir.join("gpu_check.py"))
                .arg(requests.to_string())
                .env(
                    "PYTHONPATH",
                    format!("{}:{}", dir.display(), torch.display()),
                )
                .stdin(Stdio::piped())
                .stdout(Stdio::piped()),
        )
        .spawn()
        .context("python3")?;
        let stdin = child.stdin.take().context("stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("stdout")?);
        let mut workload = Self {
            child,
            stdin,
            stdout,
        };
        let ready = workload.line()?;
        if ready.get("ready").is_none() {
            bail!("gpu_check.py: {ready}");
        }
        eprintln!("gpu-check: model on {}", ready["device"]);
        Ok(workload)
    }

    fn line(&mut self) -> Result<serde_json::Value> {
        let mut text = String::new();
        if self.stdout.read_line(&mut text)? == 0 {
            let status = self.child.wait()?;
            if status.code() == Some(3) {
                bail!(
                    "no CUDA device is usable here: this check needs an NVIDIA GPU and its driver"
                );
            }
            bail!("gpu_check.py exited: {status}");
        }
        serde_json::from_str(&text).with_context(|| format!("gpu_check.py printed {text:?}"))
    }

    fn phase(&mut self, name: &str) -> Result<serde_json::Value> {
        writeln!(self.stdin, "{name}")?;
        self.line()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `smolder record -p PID --cuda -o DIR/cuda.folded`, once it samples.
fn start_recording(pid: u32, out: &Path) -> Result<Child> {
    let mut child = die_with_parent(
        Command::new(workspace_root().join("target/release/smolder"))
            .args(["record", "--cuda", "-p", &pid.to_string(), "-o"])
            .arg(out)
            .env("SMOLDER_LOG", "info")
            .stderr(Stdio::piped()),
    )
    .spawn()?;
    let mut stderr = BufReader::new(child.stderr.take().context("stderr")?);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut line = String::new();
    let mut probing = false;
    while Instant::now() < deadline {
        line.clear();
        if stderr.read_line(&mut line)? == 0 {
            bail!("smolder record exited before sampling");
        }
        eprint!("  smolder: {line}");
        probing |= line.contains("CUDA: probing");
        if line.starts_with("Sampling ") {
            if !probing {
                bail!("smolder found no CUDA library mapped by pid {pid}");
            }
            std::thread::spawn(move || {
                for line in stderr.lines().map_while(Result::ok) {
                    eprintln!("  smolder: {line}");
                }
            });
            return Ok(child);
        }
    }
    bail!("smolder record did not start within 120 s")
}

/// Collapsed lines: the total, and the total by leaf.
fn collapsed(path: &Path) -> Result<(u64, Vec<(String, u64)>)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut by_leaf: std::collections::BTreeMap<String, u64> = Default::default();
    let mut total = 0;
    for line in text.lines() {
        let Some((stack, count)) = line.rsplit_once(' ') else {
            continue;
        };
        let count: u64 = count.parse().unwrap_or(0);
        total += count;
        let leaf = stack.rsplit(';').next().unwrap_or("").to_owned();
        *by_leaf.entry(leaf).or_default() += count;
    }
    let mut by_leaf: Vec<(String, u64)> = by_leaf.into_iter().collect();
    by_leaf.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    Ok((total, by_leaf))
}

pub fn run(args: &[String]) -> Result<()> {
    let mut requests = REQUESTS;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--requests" => {
                requests = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .context("--requests N")?
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown option `{other}`\n\n{USAGE}"),
        }
    }
    setup::setup()?;
    cargo(&["build", "--release", "-p", "smolder"])?;
    let torch = wheels::ensure_torch()?;
    let dir = workspace_root().join("target/gpu-check");
    std::fs::create_dir_all(&dir)?;
    let out: PathBuf = dir.join("cuda.folded");
    let mut workload = Workload::start(&torch, requests)?;

    let mut recording = start_recording(workload.child.id(), &out)?;
    let ours = workload.phase("smolder")?;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(recording.id() as i32, libc::SIGINT) };
    let status = recording.wait()?;
    if !status.success() {
        bail!("smolder record: {status}");
    }
    let truth = workload.phase("profiler")?;
    drop(workload);

    let (launches, by_kernel) = collapsed(&out)?;
    let (wait_us, by_api) = collapsed(&dir.join("cuda.gpuwait.folded"))?;
    let profiler_launches = truth["launches"].as_u64().unwrap_or(0);
    let own_wait = ours["wait_seconds"].as_f64().unwrap_or(0.0);
    println!("gpu-check: {requests} requests of the PyTorch reference model");
    println!(
        "  launches: smolder {launches}, torch.profiler {profiler_launches} launch calls ({} kernels run)",
        truth["kernels"]
    );
    println!("  smolder's top kernels:");
    for (leaf, n) in by_kernel.iter().take(10) {
        println!("    {n:>8}  {leaf}");
    }
    println!("  torch.profiler's top kernels: {}", truth["top_kernels"]);
    println!(
        "  GPU waits: smolder {:.3} s in sync calls {by_api:?}; the workload timed {:.3} s waiting",
        wait_us as f64 / 1e6,
        own_wait
    );
    let ratio = launches as f64 / profiler_launches.max(1) as f64;
    if (ratio - 1.0).abs() > LAUNCH_TOLERANCE {
        bail!(
            "launch counts differ by {:.1}% (allowed {:.0}%)",
            (ratio - 1.0) * 100.0,
            LAUNCH_TOLERANCE * 100.0
        );
    }
    // smolder times the sync calls inside the workload's timed span.
    let wait_s = wait_us as f64 / 1e6;
    if wait_s > own_wait * 1.05 || wait_s < own_wait * 0.5 {
        bail!("smolder's wait time {wait_s:.3} s is not within the workload's {own_wait:.3} s");
    }
    println!("gpu-check: passed");
    Ok(())
}
