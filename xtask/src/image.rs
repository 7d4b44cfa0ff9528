//! `cargo xtask image`: the agent's container image, built with podman from
//! docs/deploy/Containerfile: the release binary and the three libraries it
//! links (glibc, libgcc_s, the loader) on an empty base. Nothing is fetched
//! at build or run time: no base image, no package manager.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{cargo, output, run, workspace_root};

/// The image's name; the tag is the crate's version.
pub const NAME: &str = "localhost/smolder";

pub fn run_command(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        bail!("usage: cargo xtask image (builds {NAME}:VERSION with podman)");
    }
    crate::setup::setup()?;
    let tag = build()?;
    println!("{tag} ({:.1} MB)", size(&tag)? as f64 / 1e6);
    Ok(())
}

/// Builds the image; its full name.
pub fn build() -> Result<String> {
    cargo(&["build", "--release", "-p", "smolder"])?;
    let root = workspace_root();
    let context = root.join("target/image");
    let _ = std::fs::remove_dir_all(&context);
    let rootfs = context.join("rootfs");
    let binary = root.join("target/release/smolder");
    install(&binary, &rootfs.join("usr/bin/smolder"))?;
    for library in linked_libraries(&binary)? {
        install(&library, &rootfs.join(library.strip_prefix("/")?))?;
    }
    // Mount points of the DaemonSet's volumes on a read-only root.
    for dir in ["etc/smolder", "var/lib/smolder", "tmp"] {
        std::fs::create_dir_all(rootfs.join(dir))?;
    }
    let tag = format!("{NAME}:{}", env!("CARGO_PKG_VERSION"));
    prepare_podman()?;
    run(Command::new("podman")
        .args(["build", "--quiet", "--tag", &tag, "--file"])
        .arg(root.join("docs/deploy/Containerfile"))
        .arg(&context))?;
    Ok(tag)
}

fn install(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to.parent().context("no parent")?)?;
    std::fs::copy(from, to).with_context(|| format!("copying {}", from.display()))?;
    Ok(())
}

/// The shared libraries `binary` loads, as the loader resolves them here
/// (`ldd`), the loader included.
fn linked_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let out = output(Command::new("ldd").arg(binary))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let libraries: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| {
            // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or
            // "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has no file.
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect();
    if libraries.is_empty() {
        bail!("ldd found no libraries for {}:\n{text}", binary.display());
    }
    Ok(libraries)
}

/// What podman needs on these machines. Their cgroups are hybrid (v1
/// controllers, and a v2 hierarchy holding only `hugetlb`), which crun
/// refuses to run containers in ("cgroups in hybrid mode not supported"):
/// mounting `hugetlb` as a v1 hierarchy leaves the v2 one without
/// controllers. Nothing else on the machine uses hugetlb cgroups.
pub fn prepare_podman() -> Result<()> {
    let unified = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
    let controllers = std::fs::read_to_string(unified).unwrap_or_default();
    if controllers.split_whitespace().any(|c| c == "hugetlb") {
        let dir = Path::new("/sys/fs/cgroup/hugetlb");
        std::fs::create_dir_all(dir)?;
        run(Command::new("mount")
            .args(["-t", "cgroup", "-o", "hugetlb", "cgroup"])
            .arg(dir))
        .context("mounting the hugetlb cgroup controller as v1 (for crun)")?;
    }
    Ok(())
}

/// The image's size in bytes, as podman reports it.
pub fn size(tag: &str) -> Result<u64> {
    let out =
        output(Command::new("podman").args(["image", "inspect", "--format", "{{.Size}}", tag]))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}
