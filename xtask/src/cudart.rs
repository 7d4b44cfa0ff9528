//! Fetches the CUDA runtime library (libcudart) from its PyPI wheel, once,
//! into `~/.cache/smolder/cudart-VERSION/`. The unwinding tests profile a
//! program that calls it: no frame pointers, no `.symtab`, only `.eh_frame`
//! and exported names, like the CUDA libraries on an inference host.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::pyroscope::cache_root;
use crate::util::run;

const PACKAGE: &str = "nvidia-cuda-runtime-cu12";
const VERSION: &str = "12.9.79";
const MEMBER: &str = "nvidia/cuda_runtime/lib/libcudart.so.12";

/// The cached library, downloaded if missing.
pub fn ensure() -> Result<PathBuf> {
    let dir = cache_root().join(format!("cudart-{VERSION}"));
    let library = dir.join("libcudart.so.12");
    if library.is_file() {
        return Ok(library);
    }
    let download = dir.join("download");
    std::fs::create_dir_all(&download)?;
    eprintln!("fetching {PACKAGE}=={VERSION} from PyPI (libcudart for the unwinding tests)");
    run(Command::new("python3")
        .args(["-m", "pip", "download", "--quiet", "--no-deps"])
        .args(["--only-binary=:all:", "--platform", "manylinux2014_x86_64"])
        .arg(format!("{PACKAGE}=={VERSION}"))
        .arg("-d")
        .arg(&download))
    .context("pip download (is python3 -m pip available?)")?;
    let wheel = std::fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip downloaded no wheel")?;
    // A wheel is a zip: take the one member we need.
    let script = "import sys, zipfile\n\
                  with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[3], 'wb') as out:\n\
                  \x20   out.write(z.read(sys.argv[2]))\n";
    let partial = dir.join("libcudart.so.12.partial");
    run(Command::new("python3")
        .args(["-c", script])
        .arg(&wheel)
        .arg(MEMBER)
        .arg(&partial))?;
    std::fs::rename(&partial, &library)?;
    let _ = std::fs::remove_dir_all(&download);
    if !library.is_file() {
        bail!("{} was not extracted", library.display());
    }
    Ok(library)
}
