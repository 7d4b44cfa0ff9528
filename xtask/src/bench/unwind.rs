//! DWARF unwinding cost: BPF run time per sample at 10, 30 and 100 user
//! frames with unwind tables and with frame pointers only (the baseline), on
//! the same process; and time and memory to build tables for the largest
//! libraries here.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use super::overhead::{build_c, Load};
use super::{median, summary_bpf_ns, summary_samples, Options};
use crate::util::{output, workspace_root};
use crate::wheels;

/// User frames of each measured stack: deep_stack's recursion plus spin,
/// main, __libc_start_call_main, __libc_start_main_impl and _start.
const DEPTHS: [usize; 3] = [10, 30, 100];
const FIXED_FRAMES: usize = 6;

pub struct Report {
    runs: usize,
    seconds: u64,
    /// (frames, DWARF ns per sample, frame-pointer ns per sample, samples).
    per_sample: Vec<(usize, f64, f64, f64)>,
    /// The same for a Go stack (testdata/godeep): pclntab rows against
    /// frame pointers.
    go_per_sample: Vec<(usize, f64, f64, f64)>,
    tables: Vec<TableRow>,
}

struct TableRow {
    name: String,
    file_mib: f64,
    rows: u64,
    kernel_mib: f64,
    build_ms: f64,
    peak_rss_mib: f64,
}

/// BPF ns per sample of one capture of `pid` with `--unwind mode`: the
/// program's whole run time over the samples of `pid` it wrote (runs for
/// other processes, such as the idle task, exit at once).
fn ns_per_sample(pid: u32, mode: &str, seconds: u64) -> Result<(f64, f64)> {
    let smolder = workspace_root().join("target/release/smolder");
    let out = std::env::temp_dir().join(format!("smolder-bench-unwind-{mode}.folded"));
    let result = output(
        Command::new(smolder)
            .args(["record", "-F", "999", "--bpf-stats", "--unwind", mode, "-p"])
            .arg(pid.to_string())
            .arg("-d")
            .arg(format!("{seconds}s"))
            .arg("-o")
            .arg(&out)
            .stderr(Stdio::piped()),
    )?;
    let _ = std::fs::remove_file(&out);
    let text = String::from_utf8_lossy(&result.stderr);
    let total = summary_bpf_ns(&text)
        .with_context(|| format!("no BPF stats in smolder's output:\n{text}"))?;
    let samples = summary_samples(&text)
        .with_context(|| format!("no sample count in smolder's output:\n{text}"))?;
    if samples == 0.0 {
        bail!("no samples of pid {pid}");
    }
    Ok((total / samples, samples))
}

/// testdata/godeep built with the machine's Go.
fn build_go_deep(dir: &Path) -> Result<PathBuf> {
    let binary = dir.join("godeep");
    crate::util::run(
        Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg(".")
            .current_dir(workspace_root().join("testdata/godeep")),
    )?;
    Ok(binary)
}

/// Go frames besides the recursion: spin, recurse's last call, main.main,
/// runtime.main, runtime.goexit.
const GO_FIXED_FRAMES: usize = 5;

fn measure_per_sample(
    options: &Options,
    binary: &Path,
    fixed: usize,
) -> Result<Vec<(usize, f64, f64, f64)>> {
    let seconds = options.seconds.min(10);
    let mut results = Vec::new();
    for frames in DEPTHS {
        let depth = frames - fixed;
        let (mut dwarf, mut fp, mut samples) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..options.runs {
            let workload = Load(vec![Command::new(binary)
                .arg(depth.to_string())
                .arg((2 * seconds + 5).to_string())
                .spawn()?]);
            std::thread::sleep(std::time::Duration::from_millis(300));
            let pid = workload.0[0].id();
            let (ns, n) = ns_per_sample(pid, "dwarf", seconds)?;
            dwarf.push(ns);
            samples.push(n);
            fp.push(ns_per_sample(pid, "fp", seconds)?.0);
        }
        results.push((
            frames,
            median(&mut dwarf),
            median(&mut fp),
            median(&mut samples),
        ));
    }
    Ok(results)
}

fn measure_tables(go_deep: &Path) -> Result<Vec<TableRow>> {
    let mut files: Vec<PathBuf> = [
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0",
        "/usr/lib/x86_64-linux-gnu/libLLVM.so.19.1",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|p| p.is_file())
    .collect();
    if let Ok(python) = output(Command::new("python3").args([
        "-c",
        "import sysconfig, os; print(os.path.join(sysconfig.get_config_var('LIBDIR'), sysconfig.get_config_var('INSTSONAME')))",
    ])) {
        let path = PathBuf::from(String::from_utf8_lossy(&python.stdout).trim());
        if path.is_file() && !files.contains(&path) {
            files.push(path);
        }
    }
    files.push(wheels::ensure(&wheels::CUDART)?);
    files.push(wheels::ensure(&wheels::OPENBLAS)?);
    // Go binaries: rows from .gopclntab (the Pyroscope server is 132 MiB).
    files.push(go_deep.to_owned());
    files.push(crate::pyroscope::ensure()?);
    let bench = workspace_root().join("target/release/examples/unwind_table_bench");
    let mut text = String::new();
    // One process per file: peak RSS is a high-water mark.
    for file in &files {
        let result = output(Command::new(&bench).arg(file))?;
        text.push_str(&String::from_utf8_lossy(&result.stdout));
    }
    let mut rows = Vec::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("table ")) {
        let field = |key: &str| -> Option<&str> {
            line.split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        };
        let number = |key: &str| -> Result<f64> {
            field(key)
                .with_context(|| format!("{key} missing in `{line}`"))?
                .parse()
                .with_context(|| format!("{key} in `{line}`"))
        };
        let path = field("file").context("file")?;
        rows.push(TableRow {
            name: Path::new(path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            file_mib: number("bytes")? / f64::from(1 << 20),
            rows: number("rows")? as u64,
            kernel_mib: number("kernel_bytes")? / f64::from(1 << 20),
            build_ms: number("build_ms")?,
            peak_rss_mib: number("peak_rss_delta_kib")? / 1024.0,
        });
    }
    Ok(rows)
}

pub fn measure(options: &Options) -> Result<Report> {
    let dir = workspace_root().join("target/bench");
    // Frame pointers, so that both modes walk the whole stack and the
    // difference is the cost per frame of each walk.
    let deep = build_c(&dir, "deep_stack")?;
    let go_deep = build_go_deep(&dir)?;
    Ok(Report {
        runs: options.runs,
        seconds: options.seconds.min(10),
        per_sample: measure_per_sample(options, &deep, FIXED_FRAMES)?,
        go_per_sample: measure_per_sample(options, &go_deep, GO_FIXED_FRAMES)?,
        tables: measure_tables(&go_deep)?,
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "== DWARF unwinding: BPF run time per sample (median of {} runs of {} s at 999 Hz) ==",
            self.runs, self.seconds
        )?;
        writeln!(
            f,
            "  {:>6}  {:>12}  {:>14}  {:>8}  {:>8}",
            "frames", "DWARF ns", "frame ptr ns", "ratio", "samples"
        )?;
        for (frames, dwarf, fp, samples) in &self.per_sample {
            writeln!(
                f,
                "  {frames:>6}  {dwarf:>12.0}  {fp:>14.0}  {:>7.2}x  {samples:>8.0}",
                dwarf / fp
            )?;
        }
        writeln!(
            f,
            "== Go (testdata/godeep): .gopclntab rows against frame pointers, BPF ns per sample =="
        )?;
        writeln!(
            f,
            "  {:>6}  {:>12}  {:>14}  {:>8}  {:>8}",
            "frames", "rows ns", "frame ptr ns", "ratio", "samples"
        )?;
        for (frames, rows, fp, samples) in &self.go_per_sample {
            writeln!(
                f,
                "  {frames:>6}  {rows:>12.0}  {fp:>14.0}  {:>7.2}x  {samples:>8.0}",
                rows / fp
            )?;
        }
        writeln!(f, "== Unwind tables: build time (best of 3) and memory ==")?;
        writeln!(
            f,
            "  {:<28} {:>9} {:>9} {:>11} {:>9} {:>13}",
            "library", "file MiB", "rows", "kernel MiB", "build ms", "peak RSS MiB"
        )?;
        for t in &self.tables {
            writeln!(
                f,
                "  {:<28} {:>9.1} {:>9} {:>11.2} {:>9.1} {:>13.1}",
                t.name, t.file_mib, t.rows, t.kernel_mib, t.build_ms, t.peak_rss_mib
            )?;
        }
        Ok(())
    }
}
