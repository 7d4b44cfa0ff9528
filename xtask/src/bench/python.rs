//! Python: what profiling costs a pure-Python workload at 99 Hz, per CPython
//! version. The same single-threaded `testdata/python/chain.py` runs alone,
//! under smolder (`record -p`), under `py-spy record` (which pauses the
//! process at every sample) and, on the machine's interpreter, under
//! `py-spy record --nonblocking`; each profiler attaches to the running
//! process. Interpreters: the machine's `python3`, and Debian's 3.9 to 3.15
//! in the roots the tests use (run with chroot). Reported: requests/s lost
//! against the run alone, the CPU each profiler process used, and smolder's
//! BPF time per sample.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use super::rusage;
use super::{median, summary_bpf_ns, summary_samples, Options};
use crate::python_roots;
use crate::util::workspace_root;
use crate::wheels;

const LOAD_SECONDS: u64 = 8;
/// Where chain.py is copied inside each Debian root (as the tests do).
const IN_ROOT: &str = "smolder-tests/testdata/python/chain.py";

pub struct Report {
    runs: usize,
    interpreters: Vec<InterpreterReport>,
}

struct InterpreterReport {
    name: String,
    baseline: f64,
    tools: Vec<Tool>,
}

struct Tool {
    name: &'static str,
    rate: f64,
    cpu_ms: f64,
    /// BPF time per sample of the workload (smolder only).
    bpf_ns_per_sample: Option<f64>,
}

/// How to start chain.py with one interpreter.
struct Interpreter {
    name: String,
    /// Program and arguments before the script.
    prefix: Vec<OsString>,
    script: PathBuf,
    /// Also measure `py-spy --nonblocking`.
    nonblocking: bool,
}

impl Interpreter {
    fn start(&self) -> Result<Child> {
        let child = Command::new(&self.prefix[0])
            .args(&self.prefix[1..])
            .arg(&self.script)
            .args([LOAD_SECONDS.to_string().as_str(), "0"])
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.name))?;
        // Let it reach its loop before a profiler attaches.
        std::thread::sleep(Duration::from_millis(300));
        Ok(child)
    }
}

/// The machine's python3, then Debian's builds in their roots.
fn interpreters() -> Result<Vec<Interpreter>> {
    let machine = machine_python()?;
    let version = Command::new(&machine)
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()?;
    let mut all = vec![Interpreter {
        name: format!(
            "{} (machine)",
            String::from_utf8_lossy(&version.stdout).trim()
        ),
        prefix: vec![machine.into()],
        script: workspace_root().join("testdata/python/chain.py"),
        nonblocking: true,
    }];
    let roots = python_roots::ensure()?;
    for &(suite, package, _) in python_roots::ROOTS {
        let root = roots.join(format!("debian-{suite}-{package}"));
        let script = root.join(IN_ROOT);
        std::fs::create_dir_all(script.parent().context("script dir")?)?;
        std::fs::copy(workspace_root().join("testdata/python/chain.py"), &script)?;
        all.push(Interpreter {
            name: format!("{} (Debian {suite})", &package["python".len()..]),
            prefix: vec!["chroot".into(), root.into(), package.into()],
            script: PathBuf::from("/").join(IN_ROOT),
            nonblocking: false,
        });
    }
    Ok(all)
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
fn under(
    python: &Interpreter,
    profiler: impl Fn(u32) -> Result<Child>,
) -> Result<(f64, f64, String)> {
    let workload = python.start()?;
    let tool = profiler(workload.id())?;
    let rate = finish_workload(workload)?;
    let (usage, stderr) = rusage::wait_with_stderr(tool)?;
    Ok((rate, usage.cpu.as_secs_f64() * 1e3, stderr))
}

fn measure_one(python: &Interpreter, options: &Options) -> Result<InterpreterReport> {
    let py_spy = wheels::ensure(&wheels::PY_SPY)?;
    let smolder = workspace_root().join("target/release/smolder");
    let dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let limit = (LOAD_SECONDS + 10).to_string();
    let mut baseline = vec![];
    let names: &[&'static str] = if python.nonblocking {
        &["smolder", "py-spy", "py-spy --nonblocking"]
    } else {
        &["smolder", "py-spy"]
    };
    let mut rates = vec![vec![]; names.len()];
    let mut cpu = vec![vec![]; names.len()];
    let mut bpf = vec![];
    for run in 1..=options.runs {
        eprintln!(
            "python {} run {run}/{}: alone, {}",
            python.name,
            options.runs,
            names.join(", ")
        );
        baseline.push(finish_workload(python.start()?)?);
        for (i, name) in names.iter().enumerate() {
            let (rate, ms, stderr) = under(python, |pid| {
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
                let total = summary_bpf_ns(&stderr).context("no BPF time in smolder's summary")?;
                let samples = summary_samples(&stderr).context("no sample count")?;
                bpf.push(total / samples.max(1.0));
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
            bpf_ns_per_sample: (name == "smolder").then(|| median(&mut bpf)),
        })
        .collect();
    Ok(InterpreterReport {
        name: python.name.clone(),
        baseline: median(&mut baseline),
        tools,
    })
}

pub fn measure(options: &Options) -> Result<Report> {
    let interpreters = interpreters()?
        .iter()
        .map(|python| measure_one(python, options))
        .collect::<Result<Vec<_>>>()?;
    Ok(Report {
        runs: options.runs,
        interpreters,
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Python (chain.py, one thread, {LOAD_SECONDS} s, 99 Hz, medians of {} runs)",
            self.runs
        )?;
        let mut worst: f64 = 0.0;
        for python in &self.interpreters {
            writeln!(
                f,
                "  CPython {}: alone {:.0} requests/s",
                python.name, python.baseline
            )?;
            let smolder_cpu = python.tools[0].cpu_ms;
            for t in &python.tools {
                let loss = (1.0 - t.rate / python.baseline) * 100.0;
                write!(
                    f,
                    "    {:<22} {:>7.0} requests/s ({loss:+.1}% lost), profiler CPU {:>6.0} ms ({:.2}x smolder's)",
                    t.name,
                    t.rate,
                    t.cpu_ms,
                    t.cpu_ms / smolder_cpu.max(1e-9)
                )?;
                if let Some(bpf) = t.bpf_ns_per_sample {
                    write!(f, ", BPF {:.1} µs per sample", bpf / 1e3)?;
                    worst = worst.max(loss);
                }
                writeln!(f)?;
            }
        }
        write!(
            f,
            "  target: smolder costs the workload under 1% at 99 Hz on every version: {}",
            if worst < 1.0 {
                "yes"
            } else {
                "NO (noise? see docs/benchmarks.md)"
            }
        )
    }
}
