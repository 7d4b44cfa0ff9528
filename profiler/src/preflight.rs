//! Checks that turn the kernel's terse failures into actionable messages
//! before anything is loaded.

use std::fs::File;
use std::path::{Path, PathBuf};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Oldest kernel with everything the sampler uses (BPF ring buffer: 5.8).
const MIN_KERNEL: (u32, u32) = (5, 8);
/// Oldest kernel for the DWARF unwinder (`bpf_loop`: 5.17).
const MIN_KERNEL_DWARF: (u32, u32) = (5, 17);

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "smolder needs root, or the capabilities CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN \
         (missing: {missing}). Run it with sudo, or grant them: \
         setcap cap_bpf,cap_perfmon,cap_sys_admin+ep $(which smolder)"
    )]
    Capabilities { missing: String },
    #[error(
        "this kernel has no BTF type information (/sys/kernel/btf/vmlinux is missing): \
         smolder needs a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distributions since 2020)"
    )]
    NoBtf,
    #[error("kernel {release} is too old: smolder needs Linux {}.{} or newer", MIN_KERNEL.0, MIN_KERNEL.1)]
    KernelTooOld { release: String },
    #[error(
        "kernel {release} is too old for DWARF unwinding in BPF (Linux {}.{}, for bpf_loop): \
         run with --unwind fp (agent: profiling.unwind = \"fp\") to follow frame pointers only",
        MIN_KERNEL_DWARF.0, MIN_KERNEL_DWARF.1
    )]
    KernelTooOldForDwarf { release: String },
    #[error("no process with pid {0}")]
    NoSuchPid(u32),
    #[error("cannot write the output file {path}")]
    Output {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Capabilities and kernel features (`dwarf`: the DWARF unwinder will load).
pub fn check_system(dwarf: bool) -> Result<(), PreflightError> {
    check_capabilities()?;
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(PreflightError::NoBtf);
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    if let Some(version) = parse_release(release) {
        if version < MIN_KERNEL {
            return Err(PreflightError::KernelTooOld {
                release: release.to_owned(),
            });
        }
        if dwarf && version < MIN_KERNEL_DWARF {
            return Err(PreflightError::KernelTooOldForDwarf {
                release: release.to_owned(),
            });
        }
    }
    Ok(())
}

fn check_capabilities() -> Result<(), PreflightError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let missing: Vec<&str> = [
        (CAP_BPF, "CAP_BPF"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ]
    .into_iter()
    .filter(|(bit, _)| effective & (1 << bit) == 0)
    .map(|(_, name)| name)
    .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::Capabilities {
            missing: missing.join(", "),
        })
    }
}

/// `6.18.44-fc-v595` -> (6, 18).
fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

pub fn check_pids(pids: &[u32]) -> Result<(), PreflightError> {
    for &pid in pids {
        if pid == 0 || !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(PreflightError::NoSuchPid(pid));
        }
    }
    Ok(())
}

/// Creates the output file now, so that a bad path fails before the capture.
pub fn open_output(path: &Path) -> Result<File, PreflightError> {
    File::create(path).map_err(|source| PreflightError::Output {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(parse_release("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(parse_release("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(parse_release("garbage"), None);
        assert!((5, 4) < MIN_KERNEL && (6, 1) > MIN_KERNEL);
    }

    #[test]
    fn unwritable_output_is_reported_with_its_path() {
        let err = open_output(Path::new("/nonexistent-dir/x.svg")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x.svg"));
    }
}
