//! Installs the system packages smolder's build and tests need, and only
//! those that are missing.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

use crate::util::{have, run};

/// (how to tell it is there, Debian package).
const NEEDS: &[(Check, &str)] = &[
    (Check::Program("clang-19"), "clang-19"),
    (Check::Program("llvm-strip-19"), "llvm-19"),
    (Check::Program("clang-format-19"), "clang-format-19"),
    (Check::File("/usr/include/bpf/bpf_helpers.h"), "libbpf-dev"),
    (Check::Program("addr2line"), "binutils"),
    (Check::Program("gcc"), "gcc"),
    // libFuzzer (C++) for the fuzz targets, built by libfuzzer-sys.
    (Check::Program("g++"), "g++"),
    (Check::Program("perf"), "linux-perf"),
    (Check::Program("go"), "golang-go"),
    (Check::File("/usr/sbin/offcputime"), "libbpf-tools"),
    (Check::Program("node"), "nodejs"),
    (Check::Program("unshare"), "util-linux"),
    (Check::Program("debuginfod"), "debuginfod"),
    (Check::Program("bpftool"), "bpftool"),
    // Minimal Debian roots with other CPython versions (python_roots.rs).
    (Check::File("/usr/sbin/debootstrap"), "debootstrap"),
    // The CA and certificates of the TLS test.
    (Check::Program("openssl"), "openssl"),
    // The agent's image, built and run in a test as the DaemonSet runs it.
    (Check::Program("podman"), "podman"),
    // Debian's own CPython build (next to the machine's pyenv one), and
    // headers for the C extension the Python tests build.
    (Check::File("/usr/bin/python3.11"), "python3.11"),
    (
        Check::File("/usr/include/python3.11/Python.h"),
        "python3.11-dev",
    ),
];

enum Check {
    Program(&'static str),
    File(&'static str),
}

impl Check {
    fn present(&self) -> bool {
        match self {
            Self::Program(p) => have(p),
            Self::File(f) => Path::new(f).exists(),
        }
    }
}

pub fn setup() -> Result<()> {
    let missing: Vec<&str> = NEEDS
        .iter()
        .filter(|(c, _)| !c.present())
        .map(|(_, p)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("missing packages {missing:?}: run `cargo xtask setup` as root (or apt-get install them)");
    }
    eprintln!("installing {missing:?}");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}
