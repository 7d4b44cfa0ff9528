//! Compiles the BPF programs in `profiler-ebpf/` with clang into OUT_DIR.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const PROGRAMS: &[&str] = &["sampler", "ksym"];

fn main() -> Result<()> {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf = manifest
        .parent()
        .context("workspace root")?
        .join("profiler-ebpf");
    let out = PathBuf::from(env::var("OUT_DIR")?);
    for dir in ["src", "include"] {
        for entry in std::fs::read_dir(ebpf.join(dir))? {
            println!("cargo:rerun-if-changed={}", entry?.path().display());
        }
    }
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = find_clang()?;
    for program in PROGRAMS {
        compile(
            &clang,
            &ebpf,
            program,
            &out.join(format!("{program}.bpf.o")),
        )?;
    }
    Ok(())
}

fn find_clang() -> Result<String> {
    let candidates: Vec<String> = match env::var("CLANG") {
        Ok(clang) => vec![clang],
        Err(_) => vec!["clang-19".into(), "clang".into()],
    };
    for clang in &candidates {
        if Command::new(clang)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(clang.clone());
        }
    }
    bail!(
        "no clang found (tried {candidates:?}): the BPF programs are C compiled with clang. \
         Run `cargo xtask setup` (installs clang-19 and libbpf-dev) or set CLANG=/path/to/clang"
    )
}

fn compile(clang: &str, ebpf: &Path, program: &str, output: &Path) -> Result<()> {
    let status = Command::new(clang)
        .args(["-target", "bpf", "-D__TARGET_ARCH_x86", "-g", "-O2"])
        .args(["-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"])
        .arg(format!("-I{}", ebpf.join("include").display()))
        .arg(format!("-ffile-prefix-map={}=.", ebpf.display()))
        .arg("-c")
        .arg(ebpf.join("src").join(format!("{program}.bpf.c")))
        .arg("-o")
        .arg(output)
        .status()
        .with_context(|| format!("running {clang}"))?;
    if !status.success() {
        bail!("{clang} failed to compile {program}.bpf.c ({status}); is libbpf-dev installed?");
    }
    Ok(())
}
