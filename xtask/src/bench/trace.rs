//! Trace context: what publishing a context costs in each SDK (ns per set,
//! measured in-process by each language's own clock), and what reading it
//! costs the sampler per sample (BPF time per sample, `trace_requests.c`
//! with the C SDK against the same program built without it).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{median, summary_bpf_ns, summary_samples, Options};
use crate::util::{output, run, workspace_root};

pub struct Report {
    runs: usize,
    /// (what, ns per operation)
    sets: Vec<(String, f64)>,
    bpf_with: f64,
    bpf_without: f64,
}

fn bench_dir() -> Result<PathBuf> {
    let dir = workspace_root().join("target/bench/trace");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn compile(args: &[&str]) -> Result<()> {
    run(Command::new("cc").args(args))
}

/// libsmolder_trace.so as docs/trace-context.md builds it.
fn c_sdk(dir: &Path) -> Result<PathBuf> {
    let library = dir.join("libsmolder_trace.so");
    let source = workspace_root().join("profiler/sdk/c/smolder_trace.c");
    compile(&[
        "-O2",
        "-fPIC",
        "-shared",
        "-mtls-dialect=gnu2",
        "-o",
        library.to_str().context("path")?,
        source.to_str().context("path")?,
    ])?;
    Ok(library)
}

/// Builds `testdata/NAME.c` against the C SDK (or, with `extra` holding
/// -DWITHOUT_SDK, without it).
fn c_program(dir: &Path, name: &str, out: &str, extra: &[&str]) -> Result<PathBuf> {
    let root = workspace_root();
    let binary = dir.join(out);
    let source = root.join(format!("testdata/{name}.c"));
    let include = format!("-I{}", root.join("profiler/sdk/c").display());
    let link = format!("-L{}", dir.display());
    let rpath = format!("-Wl,-rpath,{}", dir.display());
    let mut args = vec!["-O1", "-g", "-fno-omit-frame-pointer", include.as_str()];
    args.extend_from_slice(extra);
    args.push(source.to_str().context("path")?);
    if extra.is_empty() {
        args.extend_from_slice(&[link.as_str(), "-lsmolder_trace", rpath.as_str()]);
    }
    args.extend_from_slice(&["-o", binary.to_str().context("path")?]);
    compile(&args)?;
    Ok(binary)
}

/// `KEY VALUE ns` lines, as the benchmark programs print them.
fn ns_lines(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let key = parts.next()?;
            let value = parts.next()?.parse().ok()?;
            (parts.next() == Some("ns")).then(|| (key.to_string(), value))
        })
        .collect()
}

fn c_sets(dir: &Path) -> Result<Vec<(String, f64)>> {
    let bench = c_program(dir, "trace_set_bench", "trace_set_bench", &[])?;
    let out = output(Command::new(bench).arg("20000000"))?;
    let lines = ns_lines(&String::from_utf8_lossy(&out.stdout));
    Ok(lines
        .into_iter()
        .map(|(k, v)| (format!("C smolder_trace_set + clear ({k})"), v))
        .collect())
}

const PYTHON_BENCH: &str = r#"
import timeit
from opentelemetry.sdk.trace import TracerProvider
import smolder_trace.otel
from smolder_trace import trace_context
T, S = 0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7
H = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
n = 300000
def per_call(f):
    return min(timeit.repeat(f, number=n, repeat=3)) / n * 1e9
def empty():
    pass
def ids():
    with trace_context(T, S):
        pass
def header():
    with trace_context(H):
        pass
base = per_call(empty)
print(f"ids {per_call(ids) - base:.1f} ns")
print(f"header {per_call(header) - base:.1f} ns")
provider = TracerProvider()
tracer = provider.get_tracer("bench")
def span():
    with tracer.start_as_current_span("request"):
        pass
n = 50000
plain = per_call(span)
print(f"span {plain:.1f} ns")
smolder_trace.otel.enable(provider)
print(f"span_processor {per_call(span) - plain:.1f} ns")
import asyncio, time
import smolder_trace.asyncio
def step_ns(install):
    async def steps(n):
        for _ in range(n):
            await asyncio.sleep(0)
    async def main():
        if install:
            smolder_trace.asyncio.install()
        start = time.perf_counter()
        await asyncio.create_task(steps(200000))
        return (time.perf_counter() - start) / 200000 * 1e9
    return min(asyncio.run(main()) for _ in range(3))
print(f"asyncio_step {step_ns(True) - step_ns(False):.1f} ns")
"#;

fn pip_install(python: &Path, target: &Path, what: &str) -> Result<()> {
    run(Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg("--target")
        .arg(target)
        .arg(what))
}

fn python_sets(dir: &Path) -> Result<Vec<(String, f64)>> {
    let python = super::python::machine_python()?;
    let sdk = dir.join("python-sdk");
    let _ = std::fs::remove_dir_all(&sdk);
    pip_install(
        &python,
        &sdk,
        workspace_root()
            .join("profiler/sdk/python")
            .to_str()
            .context("path")?,
    )?;
    let otel = crate::pyroscope::cache_root().join("python-otel-1.38.0");
    if !otel.join("opentelemetry/sdk").is_dir() {
        pip_install(&python, &otel, "opentelemetry-sdk==1.38.0")?;
    }
    let out = output(
        Command::new(&python)
            .args(["-c", PYTHON_BENCH])
            .env("PYTHONPATH", std::env::join_paths([&sdk, &otel])?),
    )?;
    Ok(ns_lines(&String::from_utf8_lossy(&out.stdout))
        .into_iter()
        .map(|(k, v)| {
            let what = match k.as_str() {
                "ids" => "Python `with trace_context(trace_id, span_id)`",
                "header" => "Python `with trace_context(traceparent)`",
                "span" => "Python OTel span alone, for scale (no processor)",
                "asyncio_step" => "Python asyncio task step with smolder_trace.asyncio (added)",
                _ => "Python OTel span processor, per span (added)",
            };
            (what.to_string(), v)
        })
        .collect())
}

fn go_sets() -> Result<Vec<(String, f64)>> {
    let out = output(
        Command::new("go")
            .args([
                "test",
                "-run",
                "^$",
                "-bench",
                ".",
                "-benchtime",
                "2000000x",
            ])
            .current_dir(workspace_root().join("profiler/sdk/go")),
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut sets = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("Benchmark")) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if let [name, _, ns, "ns/op", ..] = fields[..] {
            let what = if name.starts_with("BenchmarkDo") {
                "Go smoldertrace.Do (lock thread, set, restore)"
            } else {
                "Go Set + Clear (thread already locked)"
            };
            sets.push((what.to_string(), ns.parse()?));
        }
    }
    if sets.is_empty() {
        bail!("no Go benchmark results: {text}");
    }
    Ok(sets)
}

/// BPF ns per sample of `program` running alone, sampled at 99 Hz.
fn bpf_per_sample(program: &Path, seconds: u64) -> Result<f64> {
    let mut workload = Command::new(program)
        .arg("3600")
        .stdout(Stdio::null())
        .spawn()
        .context("workload")?;
    std::thread::sleep(Duration::from_millis(200));
    let smolder = workspace_root().join("target/release/smolder");
    let result = output(
        Command::new(smolder)
            .args(["record", "-F", "99", "--bpf-stats", "-p"])
            .arg(workload.id().to_string())
            .args(["-d", &format!("{seconds}s"), "-o"])
            .arg(bench_dir()?.join("trace.pb.gz")),
    );
    let _ = workload.kill();
    let _ = workload.wait();
    let stderr = String::from_utf8_lossy(&result?.stderr).into_owned();
    let ns = summary_bpf_ns(&stderr).context("no BPF time in smolder's summary")?;
    let samples = summary_samples(&stderr).context("no sample count")?;
    Ok(ns / samples.max(1.0))
}

pub fn measure(options: &Options) -> Result<Report> {
    let dir = bench_dir()?;
    c_sdk(&dir)?;
    let with = c_program(&dir, "trace_requests", "trace_requests", &[])?;
    let without = c_program(
        &dir,
        "trace_requests",
        "trace_requests_without_sdk",
        &["-DWITHOUT_SDK"],
    )?;
    let mut sets = c_sets(&dir)?;
    sets.extend(python_sets(&dir)?);
    sets.extend(go_sets()?);
    let seconds = options.seconds.min(10);
    let (mut a, mut b) = (vec![], vec![]);
    for run in 1..=options.runs {
        eprintln!("trace run {run}/{}: with and without the SDK", options.runs);
        a.push(bpf_per_sample(&with, seconds)?);
        b.push(bpf_per_sample(&without, seconds)?);
    }
    Ok(Report {
        runs: options.runs,
        sets,
        bpf_with: median(&mut a),
        bpf_without: median(&mut b),
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "trace context: cost of publishing, per set (in-process clocks)"
        )?;
        for (what, ns) in &self.sets {
            writeln!(f, "  {what}: {ns:.1} ns")?;
        }
        writeln!(
            f,
            "  reading it per sample (BPF, medians of {} runs): {:.0} ns per sample with the \
             C SDK, {:.0} ns without, difference {:+.0} ns",
            self.runs,
            self.bpf_with,
            self.bpf_without,
            self.bpf_with - self.bpf_without
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ns_lines() {
        let lines = ns_lines("ids 7.6 ns\nheader 90.2 ns\nnoise\nx y ns\n");
        assert_eq!(
            lines,
            vec![("ids".to_string(), 7.6), ("header".to_string(), 90.2)]
        );
    }
}
