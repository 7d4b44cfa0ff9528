//! Debian's own CPython builds of other versions, each in a minimal root
//! made with debootstrap and cached outside the clone
//! (`~/.cache/smolder/debian-SUITE-python3.X/`). The Python tests run the
//! interpreters inside them with chroot: to smolder each is a process in
//! another mount namespace, as in another distribution's container.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::pyroscope::cache_root;
use crate::util::run;

/// (suite, package, headers): every CPython the Debian archive serves here,
/// 3.10 and 3.12 excepted (no suite has them). Roots with headers (the
/// `-dev` package) are where the tests build a C extension, with the host's
/// compiler: their glibc is not older than the host's.
pub const ROOTS: &[(&str, &str, bool)] = &[
    ("bullseye", "python3.9", false),
    ("bookworm", "python3.11", false),
    ("trixie", "python3.13", true),
    ("sid", "python3.14", true),
    ("sid", "python3.15", false),
];

/// The directory holding the roots, each built if missing (about 30 s to
/// 1.5 minutes and 300 MB each, once).
pub fn ensure() -> Result<PathBuf> {
    let dir = cache_root();
    let mirror = mirror();
    for &(suite, package, headers) in ROOTS {
        let root = dir.join(format!("debian-{suite}-{package}"));
        let interpreter = root.join("usr/bin").join(package);
        let header = root.join("usr/include").join(package).join("Python.h");
        if interpreter.is_file() && (!headers || header.is_file()) {
            continue;
        }
        // A root from before it needed headers is built again.
        let _ = std::fs::remove_dir_all(&root);
        let include = if headers {
            format!("--include={package},{package}-dev")
        } else {
            format!("--include={package}")
        };
        let partial = dir.join(format!("debian-{suite}-{package}.partial"));
        let _ = std::fs::remove_dir_all(&partial);
        std::fs::create_dir_all(&dir)?;
        eprintln!(
            "building a Debian {suite} root with {package} in {} (once)",
            root.display()
        );
        run(Command::new("debootstrap")
            .args(["--variant=minbase", &include, suite])
            .arg(&partial)
            .arg(&mirror))
        .with_context(|| format!("debootstrap {suite} with {package}"))?;
        std::fs::rename(&partial, &root)?;
    }
    Ok(dir)
}

/// The archive apt uses on this machine (its deb822 sources), else Debian's.
fn mirror() -> String {
    let sources =
        std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    sources
        .lines()
        .find_map(|l| l.strip_prefix("URIs:"))
        .and_then(|uris| uris.split_whitespace().next())
        .filter(|uri| uri.starts_with("http"))
        .unwrap_or("http://deb.debian.org/debian")
        .to_owned()
}
