//! Builds a real Grafana Pyroscope server from the Go module proxy, once, and
//! caches it outside the clone (`~/.cache/smolder/pyroscope-VERSION/`).
//! Tests of `smolder agent` start it on loopback; see docs/contributing.md
//! for the flags that keep every address on 127.0.0.1.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util::{output, run};

pub const VERSION: &str = "v1.21.1";
/// The `api` submodule the server's go.mod replaces with `./api`.
const API_VERSION: &str = "v1.5.0";

fn cache_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    base.join("smolder").join(format!("pyroscope-{VERSION}"))
}

/// `go mod download -json MODULE@VERSION`: the module's directory.
fn download(module: &str) -> Result<PathBuf> {
    let out = output(Command::new("go").args(["mod", "download", "-json", module]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let dir = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("\"Dir\": \"")?.strip_suffix("\","))
        .with_context(|| format!("no Dir for {module} in:\n{text}"))?;
    Ok(PathBuf::from(dir))
}

/// Copies a read-only module tree into a writable place.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
            let mut perms = std::fs::metadata(&target)?.permissions();
            #[allow(clippy::permissions_set_readonly_false)] // our own copy, owned by us
            perms.set_readonly(false);
            std::fs::set_permissions(&target, perms)?;
        }
    }
    Ok(())
}

/// The cached server binary, built first if missing (about 7 minutes on 2 cores).
pub fn ensure() -> Result<PathBuf> {
    let dir = cache_dir();
    let binary = dir.join("pyroscope");
    if binary.is_file() {
        return Ok(binary);
    }
    eprintln!(
        "building Grafana Pyroscope {VERSION} into {} (several minutes, once)",
        dir.display()
    );
    let server = download(&format!("github.com/grafana/pyroscope@{VERSION}"))?;
    let api = download(&format!("github.com/grafana/pyroscope/api@{API_VERSION}"))?;
    let src = dir.join("src");
    if src.exists() {
        std::fs::remove_dir_all(&src)?;
    }
    copy_tree(&server, &src)?;
    let api_dir = src.join("api");
    if api_dir.exists() {
        std::fs::remove_dir_all(&api_dir)?;
    }
    copy_tree(&api, &api_dir)?;
    let partial = dir.join("pyroscope.partial");
    run(Command::new("go")
        .args(["build", "-trimpath", "-tags", "netgo", "-o"])
        .arg(&partial)
        .arg("./cmd/pyroscope")
        .current_dir(&src)
        .env("GOWORK", "off")
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-mod=mod"))?;
    std::fs::rename(&partial, &binary)?;
    std::fs::remove_dir_all(&src)?;
    if !binary.is_file() {
        bail!("the build produced no {}", binary.display());
    }
    Ok(binary)
}
