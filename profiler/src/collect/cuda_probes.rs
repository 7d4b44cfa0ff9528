//! Attaches the CUDA probes to each copy of libcudart and libcuda that a
//! sampled process maps, once per file (a uprobe on a file covers every
//! process that maps it, running or started later), and takes them off when
//! the last process that mapped the file is gone.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use aya::programs::uprobe::{
    UProbeAttachLocation, UProbeAttachPoint, UProbeLink, UProbeLinkId, UProbeScope,
};
use aya::programs::UProbe;
use aya::Ebpf;
use object::{Object, ObjectSegment, ObjectSymbol, ReadCache, ReadRef};
use symbolizer::{FileId, Module, ProcessMaps, RegionKind};

use super::cuda::{CallKind, CudaApi, CudaLibrary, CUDA_APIS};
use super::programs::program;
use super::LoadError;

pub(super) const LAUNCH: &str = "cuda_launch";
pub(super) const WAIT_ENTER: &str = "cuda_wait_enter";
pub(super) const WAIT_RETURN: &str = "cuda_wait_return";
pub(super) const NAME_ENTER: &str = "cuda_name_enter";
pub(super) const NAME_RETURN: &str = "cuda_name_return";

/// The file offsets of the probed entry points `file` exports (from its
/// dynamic symbol table; versioned names such as
/// `cudaLaunchKernel@@libcudart.so.12` count under their base name).
pub fn entry_points(
    file: &File,
    library: CudaLibrary,
) -> Result<Vec<(&'static CudaApi, u64)>, object::Error> {
    let cache = ReadCache::new(file);
    entry_points_in(&cache, library)
}

/// [`entry_points`] of an ELF image, however it is read (a file through a
/// cache, bytes in memory).
pub fn entry_points_in<'data, R: ReadRef<'data>>(
    data: R,
    library: CudaLibrary,
) -> Result<Vec<(&'static CudaApi, u64)>, object::Error> {
    let elf = object::File::parse(data)?;
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
    /// The launch entry points (attached and detached as a budget says).
    launch_points: Vec<(&'static CudaApi, u64)>,
    launch_links: Vec<UProbeLinkId>,
    /// The sync calls' and the handle hand-outs' entry and return probes
    /// (always on).
    wait_links: Vec<(&'static str, UProbeLinkId)>,
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
    /// The launch probes are off (the agent's overhead budget).
    launches_paused: bool,
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
            match self.attach_file(ebpf, module, library) {
                Ok(mut attached) if attached.entry_points > 0 => {
                    tracing::info!(
                        "CUDA: probing {} entry points of {} (pid {})",
                        attached.entry_points,
                        module.path.display(),
                        maps.pid
                    );
                    attached.pids.insert(maps.pid);
                    self.attached.insert(module.id, attached);
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
            let links = attached
                .launch_links
                .into_iter()
                .map(|link| (LAUNCH, link))
                .chain(attached.wait_links);
            detach(ebpf, links);
            self.taken_off += 1;
            tracing::info!(
                "CUDA: probes taken off {}: no process maps it any more",
                attached.module.path.display()
            );
        }
    }

    /// Takes the launch probes off every file (sync calls stay timed).
    pub(super) fn pause_launches(&mut self, ebpf: &mut Ebpf) {
        if self.launches_paused {
            return;
        }
        self.launches_paused = true;
        let links: Vec<(&'static str, UProbeLinkId)> = self
            .attached
            .values_mut()
            .flat_map(|a| std::mem::take(&mut a.launch_links))
            .map(|link| (LAUNCH, link))
            .collect();
        detach(ebpf, links);
    }

    /// Puts the launch probes back on.
    pub(super) fn resume_launches(&mut self, ebpf: &mut Ebpf) {
        if !self.launches_paused {
            return;
        }
        self.launches_paused = false;
        for attached in self.attached.values_mut() {
            let Some(path) = fd_path(&attached.module) else {
                continue;
            };
            match attach_points(ebpf, &path, &attached.launch_points, &[LAUNCH]) {
                Ok(links) => attached.launch_links = links.into_iter().map(|(_, l)| l).collect(),
                Err(e) => tracing::warn!(
                    "CUDA: cannot put the launch probes back on {}: {}",
                    attached.module.path.display(),
                    crate::unwind::error_chain(&e)
                ),
            }
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

    /// Attaches every probe `module` has an entry point for (the launch
    /// probes unless paused).
    fn attach_file(
        &self,
        ebpf: &mut Ebpf,
        module: &Arc<Module>,
        library: CudaLibrary,
    ) -> Result<Attached, AttachError> {
        let file = module.file().ok_or(AttachError::NotOpen)?;
        let points = entry_points(file, library).map_err(AttachError::Symbols)?;
        let path = fd_path(module).ok_or(AttachError::NotOpen)?;
        let entry_points = points.len();
        let (launch_points, others): (Vec<_>, Vec<_>) = points
            .into_iter()
            .partition(|(api, _)| matches!(api.kind, CallKind::Launch | CallKind::GraphLaunch));
        let (wait_points, hand_outs): (Vec<_>, Vec<_>) = others
            .into_iter()
            .partition(|(api, _)| api.kind == CallKind::Wait);
        let mut wait_links = attach_points(ebpf, &path, &wait_points, &[WAIT_ENTER, WAIT_RETURN])?;
        match attach_points(ebpf, &path, &hand_outs, &[NAME_ENTER, NAME_RETURN]) {
            Ok(links) => wait_links.extend(links),
            Err(e) => {
                detach(ebpf, wait_links);
                return Err(e);
            }
        }
        let launch_links = if self.launches_paused {
            Vec::new()
        } else {
            match attach_points(ebpf, &path, &launch_points, &[LAUNCH]) {
                Ok(links) => links.into_iter().map(|(_, link)| link).collect(),
                Err(e) => {
                    detach(ebpf, wait_links);
                    return Err(e);
                }
            }
        };
        Ok(Attached {
            module: module.clone(),
            pids: HashSet::new(),
            entry_points,
            launch_points,
            launch_links,
            wait_links,
        })
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

/// A path to the module's open file. The kernel resolves it in smolder's
/// own namespace: the open file is the same inode whatever mount namespace
/// the process that mapped it lives in.
fn fd_path(module: &Module) -> Option<String> {
    Some(format!("/proc/self/fd/{}", module.file()?.as_raw_fd()))
}

/// Attaches each of `programs` at each of `points`; on a failure the probes
/// attached so far are taken off again.
fn attach_points(
    ebpf: &mut Ebpf,
    path: &str,
    points: &[(&'static CudaApi, u64)],
    programs: &[&'static str],
) -> Result<Vec<(&'static str, UProbeLinkId)>, AttachError> {
    let mut links: Vec<(&'static str, UProbeLinkId)> = Vec::new();
    for &(api, offset) in points {
        for &name in programs {
            let point = UProbeAttachPoint {
                location: UProbeAttachLocation::AbsoluteOffset(offset),
                cookie: Some(api.cookie()),
            };
            let attached = program::<UProbe>(ebpf, name).and_then(|p| {
                p.attach(point, path, UProbeScope::AllProcesses)
                    .map_err(|source| LoadError::Program {
                        name,
                        action: "attach",
                        source,
                    })
            });
            match attached {
                Ok(link) => links.push((name, link)),
                Err(e) => {
                    detach(ebpf, links);
                    return Err(AttachError::Attach(api.name, Box::new(e)));
                }
            }
        }
    }
    Ok(links)
}

/// Takes probes off in the background. The kernel takes a uprobe's
/// breakpoint out at once, then waits for RCU grace periods before the call
/// returns (about 0.1 s each here, one after the other on one thread; 0.7 s
/// for all at once), and the caller has ring buffers to drain meanwhile.
fn detach(ebpf: &mut Ebpf, links: impl IntoIterator<Item = (&'static str, UProbeLinkId)>) {
    let mut taken: Vec<UProbeLink> = Vec::new();
    for (name, link) in links {
        let link = program::<UProbe>(ebpf, name)
            .map_err(|e| e.to_string())
            .and_then(|p| p.take_link(link).map_err(|e| e.to_string()));
        match link {
            Ok(link) => taken.push(link),
            Err(e) => tracing::debug!("CUDA: detaching {name}: {e}"),
        }
    }
    let spawned = std::thread::Builder::new()
        .name("cuda-detach".into())
        .spawn(move || {
            // Each on a thread of its own: the grace periods overlap.
            std::thread::scope(|scope| {
                for link in taken {
                    scope.spawn(move || drop(link));
                }
            });
        });
    if let Err(e) = spawned {
        tracing::warn!("CUDA: no thread to take probes off: {e}");
    }
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
