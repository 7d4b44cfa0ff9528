//! What a process had mapped, captured while it lived.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::Module;

/// What backs an executable region.
#[derive(Debug, Clone)]
pub enum RegionKind {
    /// A file (executable or shared library).
    Module(Arc<Module>),
    /// Anonymous executable memory: JIT code, named only by perf maps.
    Anonymous,
    /// `[vdso]`, `[vsyscall]`, ...
    Pseudo(String),
}

/// One executable mapping. Addresses are in the process's address space.
#[derive(Debug, Clone)]
pub struct ExecRegion {
    pub start: u64,
    pub end: u64,
    /// File offset of `start` (0 for anonymous memory).
    pub offset: u64,
    pub kind: RegionKind,
}

impl ExecRegion {
    /// File offset of an address inside this region.
    pub fn file_offset(&self, address: u64) -> u64 {
        address - self.start + self.offset
    }
}

/// The executable mappings of one process, sorted by address.
#[derive(Debug, Clone)]
pub struct ProcessMaps {
    pub pid: u32,
    pub regions: Vec<ExecRegion>,
    /// Where the process's perf map may be, most specific first:
    /// inside its mount namespace under its own pid, then on the host.
    pub perf_map_paths: Vec<PathBuf>,
    /// When the process started: a perf map older than this was written by
    /// an earlier process with the same pid.
    pub started: Option<SystemTime>,
}

impl ProcessMaps {
    /// The region containing `address`.
    pub fn find(&self, address: u64) -> Option<&ExecRegion> {
        let idx = self.regions.partition_point(|r| r.start <= address);
        let region = self.regions.get(idx.checked_sub(1)?)?;
        (address < region.end).then_some(region)
    }
}
