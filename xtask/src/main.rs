//! Build, test and benchmark automation: `cargo xtask <command>`.
//!
//! Depends on no workspace crate; it drives them through cargo and the
//! `smolder` binary like a user would.

mod bench;
mod pyroscope;
mod setup;
mod util;

use anyhow::{bail, Result};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup    install what building and testing need (clang-19, clang-format, libbpf, binutils, perf, go)
  record   set up, build, and profile this machine for 10 s into smolder-flame.svg
  test     set up, then rustfmt and clang-format checks, clippy, and every test (root for BPF tests)
  pyroscope  build (once) and print the cached Grafana Pyroscope server used by agent tests
  bench    set up, then measure smolder against perf and addr2line (see docs/benchmarks.md)
           options: --seconds N (capture length, default 30), --runs N (default 3),
                    --only symbolizer|overhead|offcpu";

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(());
    };
    match command.as_str() {
        "setup" => setup::setup(),
        "record" => record(),
        "test" => test(),
        "bench" => bench::run(rest),
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

/// Our C sources (BPF programs, their header, test workloads) against
/// `.clang-format`; the generated vmlinux.h is not ours.
fn check_c_format() -> Result<()> {
    let root = util::workspace_root();
    let mut files = Vec::new();
    for dir in ["profiler-ebpf/src", "profiler-ebpf/include", "testdata"] {
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
    // The agent tests push to a real Pyroscope: build it once (cached
    // outside the clone) and tell the tests where it is.
    let pyroscope = pyroscope::ensure()?;
    std::env::set_var("SMOLDER_PYROSCOPE", &pyroscope);
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
    // cargo's last line is the doc-test run (often 0 tests): say the total.
    println!(
        "summary: {} passed, {} failed",
        totals.passed, totals.failed
    );
    if totals.failed > 0 || !totals.success {
        anyhow::bail!("tests failed");
    }
    Ok(())
}
