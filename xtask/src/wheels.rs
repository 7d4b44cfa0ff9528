//! Native libraries from PyPI wheels, fetched once into
//! `~/.cache/smolder/wheel-PACKAGE-VERSION/`: the CUDA runtime (libcudart)
//! for the unwinding tests, numpy's OpenBLAS for the table benchmark, and
//! py-spy for the Python tests and benchmark; and PyTorch itself, installed
//! whole into `~/.cache/smolder/torch-VERSION/` for the PyTorch tests.
//! Like the libraries on an inference host, they have `.eh_frame`, no frame
//! pointers in much of their code, and (libcudart) no `.symtab`.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::pyroscope::cache_root;
use crate::util::run;

/// One shared library inside one wheel.
pub struct WheelLibrary {
    pub package: &'static str,
    pub version: &'static str,
    /// Path inside the wheel (a zip), or its prefix when the name carries a hash.
    pub member_prefix: &'static str,
    /// Its name in the cache.
    pub file_name: &'static str,
}

pub const CUDART: WheelLibrary = WheelLibrary {
    package: "nvidia-cuda-runtime-cu12",
    version: "12.9.79",
    member_prefix: "nvidia/cuda_runtime/lib/libcudart.so.12",
    file_name: "libcudart.so.12",
};

pub const OPENBLAS: WheelLibrary = WheelLibrary {
    package: "numpy",
    version: "2.2.6",
    member_prefix: "numpy.libs/libscipy_openblas64_",
    file_name: "libscipy_openblas64.so",
};

/// py-spy, the ground truth for Python stacks (a static binary in its wheel).
pub const PY_SPY: WheelLibrary = WheelLibrary {
    package: "py-spy",
    version: "0.4.3",
    member_prefix: "py_spy-0.4.3.data/scripts/py-spy",
    file_name: "py-spy",
};

/// The cached library, downloaded if missing.
pub fn ensure(library: &WheelLibrary) -> Result<PathBuf> {
    let dir = cache_root().join(format!("wheel-{}-{}", library.package, library.version));
    let target = dir.join(library.file_name);
    if target.is_file() {
        return Ok(target);
    }
    let download = dir.join("download");
    std::fs::create_dir_all(&download)?;
    eprintln!(
        "fetching {}=={} from PyPI",
        library.package, library.version
    );
    run(Command::new("python3")
        .args(["-m", "pip", "download", "--quiet", "--no-deps"])
        .args(["--only-binary=:all:", "--platform", "manylinux2014_x86_64"])
        .args(["--python-version", "3.11"])
        .arg(format!("{}=={}", library.package, library.version))
        .arg("-d")
        .arg(&download))
    .context("pip download (is python3 -m pip available?)")?;
    let wheel = std::fs::read_dir(&download)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip downloaded no wheel")?;
    // A wheel is a zip: take the one member we need.
    let script = "import sys, zipfile\n\
                  with zipfile.ZipFile(sys.argv[1]) as z:\n\
                  \x20   name = next(n for n in z.namelist() if n.startswith(sys.argv[2]))\n\
                  \x20   open(sys.argv[3], 'wb').write(z.read(name))\n";
    let partial = dir.join("partial");
    run(Command::new("python3")
        .args(["-c", script])
        .arg(&wheel)
        .arg(library.member_prefix)
        .arg(&partial))?;
    // Executable for the tools among them (py-spy); harmless for libraries.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&partial, &target)?;
    let _ = std::fs::remove_dir_all(&download);
    Ok(target)
}

/// PyTorch as users install it: the default Linux wheel for CPython 3.11
/// with its CUDA libraries and triton (about 5 GB, a few minutes once).
pub const TORCH_VERSION: &str = "2.15.0";

/// The cached PyTorch install (a directory for PYTHONPATH), installed if
/// missing. The PyTorch tests and benchmark run their model server on it.
pub fn ensure_torch() -> Result<PathBuf> {
    let target = cache_root().join(format!("torch-{TORCH_VERSION}"));
    if target.join("torch/lib/libtorch_cpu.so").is_file() {
        return Ok(target);
    }
    let partial = cache_root().join(format!("torch-{TORCH_VERSION}.partial"));
    let _ = std::fs::remove_dir_all(&partial);
    eprintln!(
        "installing torch=={TORCH_VERSION} from PyPI into {} (about 5 GB, once)",
        target.display()
    );
    run(Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-warn-script-location",
            "--target",
        ])
        .arg(&partial)
        .arg(format!("torch=={TORCH_VERSION}")))
    .context("pip install torch (is python3 -m pip available?)")?;
    std::fs::rename(&partial, &target)?;
    Ok(target)
}
