//! CPU cost of profiling every CPU at 99 Hz on a loaded machine: smolder
//! (process CPU + its BPF program's run time) next to `perf record -g -a`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::rusage::{self, Usage};
use super::{median, summary_bpf_ns, summary_samples, Options};
use crate::util::{run, workspace_root};

pub struct Report {
    seconds: u64,
    runs: usize,
    load_processes: usize,
    smolder_process_ms: f64,
    smolder_bpf_ms: f64,
    smolder_rss_mib: f64,
    smolder_samples: f64,
    perf_ms: f64,
    perf_rss_mib: f64,
}

/// Processes that load the machine during a measurement, killed on drop.
pub(super) struct Load(pub(super) Vec<Child>);

impl Load {
    fn start(workload: &Path, count: usize, seconds: u64) -> Result<Self> {
        let children = (0..count)
            .map(|_| {
                Command::new(workload)
                    .arg((seconds + 5).to_string())
                    .spawn()
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Self(children))
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub(super) fn build_workload(dir: &Path) -> Result<PathBuf> {
    build_c(dir, "chain")
}

/// `testdata/NAME.c` built with clang and frame pointers into `dir`.
pub(super) fn build_c(dir: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let out = dir.join(name);
    run(Command::new("clang-19")
        .args(["-O1", "-g", "-fno-omit-frame-pointer"])
        .arg(workspace_root().join(format!("testdata/{name}.c")))
        .arg("-o")
        .arg(&out))?;
    Ok(out)
}

fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// One smolder capture: (usage, BPF run time, samples).
fn smolder_once(seconds: u64, out: &Path) -> Result<(Usage, Duration, f64)> {
    let smolder = workspace_root().join("target/release/smolder");
    let child = Command::new(smolder)
        .args(["record", "--all", "-F", "99", "--bpf-stats", "-d"])
        .arg(format!("{seconds}s"))
        .arg("-o")
        .arg(out)
        .stderr(Stdio::piped())
        .spawn()?;
    let (usage, text) = rusage::wait_with_stderr(child)?;
    if !usage.success {
        bail!("smolder record failed:\n{text}");
    }
    let bpf_ns = summary_bpf_ns(&text)
        .with_context(|| format!("no BPF run time in smolder's output:\n{text}"))?;
    let samples = summary_samples(&text).unwrap_or(0.0);
    Ok((usage, Duration::from_nanos(bpf_ns as u64), samples))
}

fn perf_once(seconds: u64, out: &Path) -> Result<Usage> {
    let child = Command::new("perf")
        .args(["record", "-F", "99", "-g", "-a", "-q", "-o"])
        .arg(out)
        .args(["--", "sleep", &seconds.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let usage = rusage::wait(child)?;
    if !usage.success {
        bail!("perf record failed");
    }
    Ok(usage)
}

pub fn measure(options: &Options) -> Result<Report> {
    let dir = workspace_root().join("target/bench");
    let workload = build_workload(&dir)?;
    let load_processes = cpu_count();
    let (mut s_proc, mut s_bpf, mut s_rss, mut s_samples) = (vec![], vec![], vec![], vec![]);
    let (mut p_cpu, mut p_rss) = (vec![], vec![]);
    for run in 1..=options.runs {
        eprintln!(
            "overhead run {run}/{}: smolder then perf, {} s each, {load_processes} busy processes",
            options.runs, options.seconds
        );
        {
            let _load = Load::start(&workload, load_processes, options.seconds)?;
            std::thread::sleep(Duration::from_millis(500));
            let (usage, bpf, samples) = smolder_once(options.seconds, &dir.join("smolder.pb.gz"))?;
            s_proc.push(usage.cpu.as_secs_f64() * 1e3);
            s_bpf.push(bpf.as_secs_f64() * 1e3);
            s_rss.push(usage.max_rss_kib as f64 / 1024.0);
            s_samples.push(samples);
        }
        {
            let _load = Load::start(&workload, load_processes, options.seconds)?;
            std::thread::sleep(Duration::from_millis(500));
            let usage = perf_once(options.seconds, &dir.join("perf.data"))?;
            p_cpu.push(usage.cpu.as_secs_f64() * 1e3);
            p_rss.push(usage.max_rss_kib as f64 / 1024.0);
        }
    }
    Ok(Report {
        seconds: options.seconds,
        runs: options.runs,
        load_processes,
        smolder_process_ms: median(&mut s_proc),
        smolder_bpf_ms: median(&mut s_bpf),
        smolder_rss_mib: median(&mut s_rss),
        smolder_samples: median(&mut s_samples),
        perf_ms: median(&mut p_cpu),
        perf_rss_mib: median(&mut p_rss),
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let wall_ms = self.seconds as f64 * 1e3;
        let smolder = self.smolder_process_ms + self.smolder_bpf_ms;
        writeln!(
            f,
            "== overhead: all CPUs at 99 Hz for {} s, {} busy processes, median of {} runs ==",
            self.seconds, self.load_processes, self.runs
        )?;
        writeln!(
            f,
            "  smolder  {:>8.1} ms CPU ({:.1} process + {:.1} BPF) = {:.3}% of one core, peak RSS {:.1} MiB, {:.0} samples",
            smolder,
            self.smolder_process_ms,
            self.smolder_bpf_ms,
            smolder * 100.0 / wall_ms,
            self.smolder_rss_mib,
            self.smolder_samples
        )?;
        writeln!(
            f,
            "  perf     {:>8.1} ms CPU (process; its in-kernel unwinding is not counted) = {:.3}% of one core, peak RSS {:.1} MiB",
            self.perf_ms,
            self.perf_ms * 100.0 / wall_ms,
            self.perf_rss_mib
        )?;
        let under = if smolder * 100.0 / wall_ms < 1.0 {
            "yes"
        } else {
            "NO"
        };
        writeln!(
            f,
            "  ratio smolder/perf CPU: {:.2}x with smolder's BPF time, {:.2}x process against process (target <= 0.5x)",
            smolder / self.perf_ms,
            self.smolder_process_ms / self.perf_ms,
        )?;
        writeln!(f, "  smolder under 1% of one core: {under}")
    }
}
