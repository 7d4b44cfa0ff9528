//! Attaches the CUDA probes to each copy of libcudart and libcuda that a
//! sampled process maps, once per file (a uprobe on a file covers every
//! process that maps it, running or started later), and takes them off when
//! the last process that mapped the file is gone.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use aya::programs::uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeLinkId, UProbeScope};
use aya::programs::UProbe;
use aya::Ebpf;
use object::{Object, ObjectSegment, ObjectSymbol, ReadCache};
use symbolizer::{FileId, Module, ProcessMaps, RegionKind};

use super::cuda::{CallKind, CudaApi, CudaLibrary, CUDA_APIS};
use super::programs::program;
use super::LoadError;

pub(super) const LAUNCH: &str = "cuda_launch";
pub(super) const WAIT_ENTER: &str = "cuda_wait_enter";
pub(super) const WAIT_RETURN: &str = "cuda_wait_return";

/// The file offsets of the probed entry points `file` exports (from its
/// dynamic symbol table; versioned names such as
/// `cudaLaunchKernel@@libcudart.so.12` count under their base name).
pub fn entry_points(
    file: &File,
    library: CudaLibrary,
) -> Result<Vec<(&'static CudaApi, u64)>, object::Error> {
    let cache = ReadCache::new(file);
    let elf = object::File::parse(&cache)?;
    let wanted: HashMap<&str, &'static CudaApi> = CUDA_APIS
        .iter()
        .filter(|api| api.library == library)
        .map(|api| (api.name, api))
        .collect();
    let segments: Vec<(u64, u64, u64)> = elf
        .segments()
        .map(|s| (s.address(), s.file_range().0, s.file_range().1))
        .collect();
    let mut found = Vec::new();
    for symbol in elf.dynamic_symbols() {
        if !symbol.is_definition() || symbol.address() == 0 {
            continue;
        }
        let Ok(name) = symbol.name() else { continue };
        let base = name.split('@').next().unwrap_or(name);
        let Some(&api) = wanted.get(base) else {
            continue;
        };
        let address = symbol.address();
        let offset = segments
            .iter()
            .find(|&&(start, _, size)| address >= start && address - start < size)
            .map(|&(start, offset, _)| address - start + offset);
        if let Some(offset) = offset {
            if !found.iter().any(|&(a, _)| a == api) {
                found.push((api, offset));
            }
        }
    }
    Ok(found)
}

struct Attached {
    /// Keeps the file open: the probes were attached through its fd.
    module: Arc<Module>,
    pids: HashSet<u32>,
    links: Vec<(&'static str, UProbeLinkId)>,
    entry_points: usize,
}

/// Counts of what the probes are attached to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CudaProbeStats {
    /// Library files with probes on them now.
    pub files: u64,
    /// Entry points probed in those files.
    pub entry_points: u64,
    /// Files whose probes could not be attached.
    pub failures: u64,
    /// Files the probes were taken off again (no process mapped them).
    pub taken_off: u64,
}

#[derive(Default)]
pub(super) struct CudaProbes {
    attached: HashMap<FileId, Attached>,
    /// Files that failed once are not tried again.
    failed: HashSet<FileId>,
    taken_off: u64,
}

impl CudaProbes {
    /// Attaches to the CUDA libraries `maps` shows, and notes that `pid`
    /// uses them.
    pub(super) fn follow(&mut self, ebpf: &mut Ebpf, maps: &ProcessMaps) {
        for region in &maps.regions {
            let RegionKind::Module(module) = &region.kind else {
                continue;
            };
            let Some(library) = CudaLibrary::of_file_name(&module.short_name()) else {
                continue;
            };
            if let Some(attached) = self.attached.get_mut(&module.id) {
                attached.pids.insert(maps.pid);
                continue;
            }
            if self.failed.contains(&module.id) {
                continue;
            }
            match attach_file(ebpf, module, library) {
                Ok(links) if !links.is_empty() => {
                    let entry_points = links.iter().filter(|(n, _)| *n != WAIT_RETURN).count();
                    tracing::info!(
                        "CUDA: probing {entry_points} entry points of {} (pid {})",
                        module.path.display(),
                        maps.pid
                    );
                    self.attached.insert(
                        module.id,
                        Attached {
                            module: module.clone(),
                            pids: HashSet::from([maps.pid]),
                            links,
                            entry_points,
                        },
                    );
                }
                Ok(_) => {
                    tracing::info!(
                        "CUDA: {} exports none of the entry points smolder probes",
                        module.path.display()
                    );
                    self.failed.insert(module.id);
                }
                Err(e) => {
                    tracing::warn!(
                        "CUDA: cannot probe {}: {}",
                        module.path.display(),
                        crate::unwind::error_chain(&e)
                    );
                    self.failed.insert(module.id);
                }
            }
        }
    }

    /// Forgets processes that are gone; takes the probes off files no
    /// living process maps.
    pub(super) fn reap(&mut self, ebpf: &mut Ebpf, alive: impl Fn(u32) -> bool) {
        let mut unused = Vec::new();
        for (id, attached) in &mut self.attached {
            attached.pids.retain(|&pid| alive(pid));
            if attached.pids.is_empty() {
                unused.push(*id);
            }
        }
        for id in unused {
            let Some(attached) = self.attached.remove(&id) else {
                continue;
            };
            for (name, link) in attached.links {
                let detached = program::<UProbe>(ebpf, name)
                    .map_err(|e| e.to_string())
                    .and_then(|p| p.detach(link).map_err(|e| e.to_string()));
                if let Err(e) = detached {
                    tracing::debug!("CUDA: detaching {name}: {e}");
                }
            }
            self.taken_off += 1;
            tracing::info!(
                "CUDA: probes taken off {}: no process maps it any more",
                attached.module.path.display()
            );
        }
    }

    pub(super) fn stats(&self) -> CudaProbeStats {
        CudaProbeStats {
            files: self.attached.len() as u64,
            entry_points: self.attached.values().map(|a| a.entry_points as u64).sum(),
            failures: self.failed.len() as u64,
            taken_off: self.taken_off,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum AttachError {
    #[error("the file is not open here")]
    NotOpen,
    #[error("cannot read its dynamic symbols")]
    Symbols(#[source] object::Error),
    #[error("attaching {0}")]
    Attach(&'static str, #[source] Box<LoadError>),
}

/// Attaches every probe `module` has an entry point for; on a failure, the
/// probes attached so far are taken off again.
fn attach_file(
    ebpf: &mut Ebpf,
    module: &Arc<Module>,
    library: CudaLibrary,
) -> Result<Vec<(&'static str, UProbeLinkId)>, AttachError> {
    let file = module.file().ok_or(AttachError::NotOpen)?;
    let points = entry_points(file, library).map_err(AttachError::Symbols)?;
    // The kernel resolves the path in smolder's own namespace: the open
    // file is the same inode whatever namespace the process lives in.
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let mut links: Vec<(&'static str, UProbeLinkId)> = Vec::new();
    for (api, offset) in points {
        let programs: &[&'static str] = match api.kind {
            CallKind::Launch | CallKind::GraphLaunch => &[LAUNCH],
            CallKind::Wait => &[WAIT_ENTER, WAIT_RETURN],
        };
        for &name in programs {
            let point = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(offset),
                cookie: Some(api.cookie()),
            };
            let attached = program::<UProbe>(ebpf, name).and_then(|p| {
                p.attach(point, &path, UProbeScope::AllProcesses)
                    .map_err(|source| LoadError::Program {
                        name,
                        action: "attach",
                        source,
                    })
            });
            match attached {
                Ok(link) => links.push((name, link)),
                Err(e) => {
                    for (name, link) in links {
                        if let Ok(p) = program::<UProbe>(ebpf, name) {
                            let _ = p.detach(link);
                        }
                    }
                    return Err(AttachError::Attach(api.name, Box::new(e)));
                }
            }
        }
    }
    Ok(links)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_elf_has_no_entry_points() {
        let file = File::open("/proc/self/status").unwrap();
        assert!(entry_points(&file, CudaLibrary::Runtime).is_err());
    }

    #[test]
    fn a_binary_without_the_entry_points_has_none() {
        let exe = File::open("/proc/self/exe").unwrap();
        assert_eq!(entry_points(&exe, CudaLibrary::Runtime).unwrap(), vec![]);
    }
}
