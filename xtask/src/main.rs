//! Build, test and benchmark automation: `cargo xtask <command>`.
//!
//! Depends on no workspace crate; it drives them through cargo and the
//! `smolder` binary like a user would.

mod bench;
mod fuzz;
mod gpu_check;
mod image;
mod otel;
mod pyroscope;
mod python_roots;
mod setup;
mod soak;
mod util;
mod wheels;

use anyhow::{bail, Result};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup    install what building and testing need (clang-19, clang-format, libbpf, binutils, perf, go)
  agent    set up, build, and run `smolder agent` on its embedded default (pprof files per
           service every 15 s in target/smolder-profiles) for 60 s; --seconds N, 0 = until Ctrl-C
  record   set up, build, and profile this machine for 10 s into smolder-flame.svg
  test     set up, then rustfmt and clang-format checks, clippy, every test (root for BPF tests),
           and each fuzz target for 10 s
  pyroscope  build (once) and print the cached Grafana Pyroscope server used by agent tests
  bench    set up, then measure smolder against perf, py-spy and the OpenTelemetry profiler
           (see docs/benchmarks.md); options: --seconds N (capture length, default 30),
           --runs N (default 3), --only symbolizer|overhead|offcpu|agent|unwind|...
  fuzz     the parsers of outside input under libFuzzer (`cargo xtask fuzz --help`)
  image    the agent's container image with podman (docs/deploy/Containerfile)
  gpu-check  on a machine with an NVIDIA GPU: smolder's CUDA profiles of the PyTorch reference
           model against torch.profiler's launch counts and the model's own wait timing
  soak     the release agent for 30 min against Pyroscope behind injected faults while
           processes churn; RSS, CPU, map occupancy, windows lost (`cargo xtask soak --help`)";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(());
    };
    match command.as_str() {
        "setup" => setup::setup(),
        "record" => record(),
        "agent" => agent(rest),
        "test" => test(),
        "bench" => bench::run(rest),
        "fuzz" => fuzz::run_command(rest),
        "soak" => soak::run(rest),
        "gpu-check" => gpu_check::run(rest),
        "image" => image::run_command(rest),
        "pyroscope" => {
            println!("{}", pyroscope::ensure()?.display());
            Ok(())
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}

/// The README's first command: a real profile of this machine, as a flame graph.
fn record() -> Result<()> {
    setup::setup()?;
    util::cargo(&["build", "--release", "-p", "smolder"])?;
    let smolder = util::workspace_root().join("target/release/smolder");
    let out = util::workspace_root().join("smolder-flame.svg");
    util::run(
        std::process::Command::new(&smolder)
            .args(["record", "--all", "--duration", "10s", "-o"])
            .arg(&out),
    )?;
    println!("flame graph written to {}", out.display());
    Ok(())
}

/// The README's first command: the agent's main job on its embedded default
/// (no server: one pprof file per service and window in a local directory).
fn agent(args: &[String]) -> Result<()> {
    let seconds: u64 = match args {
        [] => 60,
        [flag, n] if flag == "--seconds" => n.parse()?,
        _ => bail!("usage: cargo xtask agent [--seconds N]"),
    };
    setup::setup()?;
    util::cargo(&["build", "--release", "-p", "smolder"])?;
    let root = util::workspace_root();
    let smolder = root.join("target/release/smolder");
    let out = root.join("target/smolder-profiles");
    eprintln!(
        "smolder agent: every 15 s, one pprof per service into {}{}",
        out.display(),
        if seconds > 0 {
            format!("; stopping after {seconds} s")
        } else {
            "; Ctrl-C to stop".to_owned()
        }
    );
    let mut child = std::process::Command::new(&smolder)
        .args(["agent", "--output-dir"])
        .arg(&out)
        .spawn()?;
    if seconds > 0 {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
        while std::time::Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        // SAFETY: signalling our own child; SIGTERM makes it flush and exit.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("smolder agent: {status}");
    }
    let mut files: Vec<_> = std::fs::read_dir(&out)?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    files.sort();
    println!("{} profiles in {}, newest:", files.len(), out.display());
    for name in files.iter().rev().take(10) {
        println!("  {name}");
    }
    println!(
        "open one with: go tool pprof -http=: {}/<file>",
        out.display()
    );
    Ok(())
}

/// Our C sources (BPF programs, their header, test workloads) against
/// `.clang-format`; the generated vmlinux.h is not ours.
fn check_c_format() -> Result<()> {
    let root = util::workspace_root();
    let mut files = Vec::new();
    for dir in [
        "profiler-ebpf/src",
        "profiler-ebpf/include",
        "testdata",
        "profiler/sdk/c",
        "profiler/sdk/go",
        "profiler/sdk/python/src/smolder_trace",
    ] {
        for entry in std::fs::read_dir(root.join(dir))? {
            let path = entry?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if (name.ends_with(".c") || name.ends_with(".h")) && name != "vmlinux.h" {
                files.push(path);
            }
        }
    }
    util::run(
        std::process::Command::new("clang-format-19")
            .args(["--dry-run", "--Werror"])
            .args(&files),
    )
}

/// The README's second command, and what CI runs.
fn test() -> Result<()> {
    setup::setup()?;
    util::cargo(&["fmt", "--all", "--", "--check"])?;
    check_c_format()?;
    util::cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The Go trace SDK's own tests (header parsing, nesting) run with go.
    util::run(
        std::process::Command::new("go")
            .args(["test", "-count=1", "./..."])
            .current_dir(util::workspace_root().join("profiler/sdk/go")),
    )?;
    // The agent tests push to a real Pyroscope: build it once (cached
    // outside the clone) and tell the tests where it is.
    let pyroscope = pyroscope::ensure()?;
    std::env::set_var("SMOLDER_PYROSCOPE", &pyroscope);
    // The unwinding tests profile calls into the CUDA runtime from PyPI.
    std::env::set_var("SMOLDER_CUDART", wheels::ensure(&wheels::CUDART)?);
    // The Python tests compare with py-spy from PyPI.
    std::env::set_var("SMOLDER_PY_SPY", wheels::ensure(&wheels::PY_SPY)?);
    // The PyTorch tests profile a model server on real PyTorch from PyPI.
    std::env::set_var("SMOLDER_TORCH", wheels::ensure_torch()?);
    // The Python version tests run Debian's interpreters in minimal roots.
    std::env::set_var("SMOLDER_PYTHON_ROOTS", python_roots::ensure()?);
    // The deployment test runs the agent's image as the DaemonSet does.
    std::env::set_var("SMOLDER_IMAGE", image::build()?);
    // One test at a time: the BPF tests compare CPU and off-CPU times with
    // the workloads' own clocks, and tests competing for two cores would
    // blur those numbers.
    let totals = util::cargo_test(&[
        "test",
        "--workspace",
        "--no-fail-fast",
        "--",
        "--test-threads=1",
    ])?;
    println!("slowest tests:");
    for (name, took) in totals.slowest(10) {
        println!("  {:>6.1} s  {name}", took.as_secs_f64());
    }
    // Every fuzz target for a short, bounded time (`cargo xtask fuzz` for
    // longer runs): a parser that crashes on what the corpus reaches fails
    // the suite.
    let fuzzed = fuzz::fuzz(
        &fuzz::TARGETS.map(String::from),
        std::time::Duration::from_secs(10),
    );
    match &fuzzed {
        Ok(report) => print!("{report}"),
        Err(e) => println!("{e:#}"),
    }
    // cargo's last line is the doc-test run (often 0 tests): say the total.
    println!(
        "summary: {} passed, {} failed",
        totals.passed, totals.failed
    );
    if totals.failed > 0 || !totals.success {
        anyhow::bail!("tests failed");
    }
    fuzzed.map(|_| ())
}
