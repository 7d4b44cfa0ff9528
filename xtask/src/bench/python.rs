//! Python: what profiling costs a pure-Python workload at 99 Hz. The same
//! single-threaded `testdata/python/chain.py` runs alone, under smolder
//! (`record -p`), under `py-spy record` (which pauses the process at every
//! sample) and under `py-spy record --nonblocking`; each profiler attaches
//! to the running process. Reported: requests/s lost against the run alone,
//! and the CPU each profiler process used.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use super::rusage;
use super::{median, summary_bpf_ns, Options};
use crate::util::workspace_root;
use crate::wheels;

const LOAD_SECONDS: u64 = 8;

pub struct Report {
    runs: usize,
    baseline: f64,
    tools: Vec<Tool>,
}

struct Tool {
    name: &'static str,
    rate: f64,
    cpu_ms: f64,
    /// BPF time in the workload's context (smolder only).
    bpf_ms: Option<f64>,
}

fn start_workload(python: &Path) -> Result<Child> {
    let child = Command::new(python)
        .arg(workspace_root().join("testdata/python/chain.py"))
        .args([LOAD_SECONDS.to_string().as_str(), "0"])
        .stdout(Stdio::piped())
        .spawn()
        .context("python3")?;
    // Let it reach its loop before a profiler attaches.
    std::thread::sleep(Duration::from_millis(300));
    Ok(child)
}

/// Requests per second the workload reports when it exits.
fn finish_workload(child: Child) -> Result<f64> {
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let served: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("served ")?
                .strip_suffix(" requests")?
                .parse()
                .ok()
        })
        .with_context(|| format!("chain.py printed no count: {text}"))?;
    Ok(served / LOAD_SECONDS as f64)
}

pub(super) fn machine_python() -> Result<PathBuf> {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .context("python3")?;
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Runs the workload under `profiler` (given the pid, it returns the
/// profiler's process); the rate, the profiler's CPU and its stderr.
fn under(python: &Path, profiler: impl Fn(u32) -> Result<Child>) -> Result<(f64, f64, String)> {
    let workload = start_workload(python)?;
    let tool = profiler(workload.id())?;
    let rate = finish_workload(workload)?;
    let (usage, stderr) = rusage::wait_with_stderr(tool)?;
    Ok((rate, usage.cpu.as_secs_f64() * 1e3, stderr))
}

pub fn measure(options: &Options) -> Result<Report> {
    let python = machine_python()?;
    let py_spy = wheels::ensure(&wheels::PY_SPY)?;
    let smolder = workspace_root().join("target/release/smolder");
    let dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let limit = (LOAD_SECONDS + 10).to_string();
    let mut baseline = vec![];
    let names = ["smolder", "py-spy", "py-spy --nonblocking"];
    let mut rates = vec![vec![]; 3];
    let mut cpu = vec![vec![]; 3];
    let mut bpf = vec![];
    for run in 1..=options.runs {
        eprintln!(
            "python run {run}/{}: alone, smolder, py-spy, py-spy --nonblocking",
            options.runs
        );
        let alone = start_workload(&python)?;
        baseline.push(finish_workload(alone)?);
        for (i, name) in names.iter().enumerate() {
            let (rate, ms, stderr) = under(&python, |pid| {
                let mut command = if *name == "smolder" {
                    let mut c = Command::new(&smolder);
                    c.args(["record", "-F", "99", "--bpf-stats", "-p"])
                        .arg(pid.to_string())
                        .args(["-d", &format!("{limit}s"), "-o"])
                        .arg(dir.join("python.pb.gz"));
                    c
                } else {
                    let mut c = Command::new(&py_spy);
                    c.args(["record", "-r", "99", "-f", "raw", "-d", &limit, "-o"])
                        .arg(dir.join("py-spy.txt"))
                        .args(["--pid", &pid.to_string()]);
                    if name.ends_with("--nonblocking") {
                        c.arg("--nonblocking");
                    }
                    c
                };
                Ok(command
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()?)
            })?;
            rates[i].push(rate);
            cpu[i].push(ms);
            if *name == "smolder" {
                bpf.push(
                    summary_bpf_ns(&stderr).context("no BPF time in smolder's summary")? / 1e6,
                );
            }
        }
    }
    let tools = names
        .iter()
        .enumerate()
        .map(|(i, &name)| Tool {
            name,
            rate: median(&mut rates[i]),
            cpu_ms: median(&mut cpu[i]),
            bpf_ms: (name == "smolder").then(|| median(&mut bpf)),
        })
        .collect();
    Ok(Report {
        runs: options.runs,
        baseline: median(&mut baseline),
        tools,
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Python (chain.py, one thread, {LOAD_SECONDS} s, 99 Hz, medians of {} runs): alone {:.0} requests/s",
            self.runs, self.baseline
        )?;
        let smolder_cpu = self.tools[0].cpu_ms;
        for t in &self.tools {
            let loss = (1.0 - t.rate / self.baseline) * 100.0;
            write!(
                f,
                "  {:<22} {:>7.0} requests/s ({loss:+.1}% lost), profiler CPU {:>6.0} ms ({:.2}x smolder's)",
                t.name,
                t.rate,
                t.cpu_ms,
                t.cpu_ms / smolder_cpu.max(1e-9)
            )?;
            if let Some(bpf) = t.bpf_ms {
                write!(f, ", BPF {bpf:.1} ms in the workload")?;
            }
            writeln!(f)?;
        }
        let ours = (1.0 - self.tools[0].rate / self.baseline) * 100.0;
        write!(
            f,
            "  target: smolder costs the workload under 1% at 99 Hz: {}",
            if ours < 1.0 {
                "yes"
            } else {
                "NO (noise? see docs/benchmarks.md)"
            }
        )
    }
}
