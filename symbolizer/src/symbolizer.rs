//! The long-lived symbolizer: one per profiler, with bounded caches.

use std::collections::HashMap;
use std::fs::File;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::lru::Lru;
use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Reason, Sym, Symbolized};

use crate::debug_info::{load_segments, virtual_address, DebugInfoSource};
use crate::extents::Extents;
use crate::frame::{FunctionFrame, Resolution, UnknownReason};
use crate::gopclntab::GoTable;
use crate::kernel::{Kallsyms, KernelFunction, KernelSymbolSource};
use crate::module::{BuildId, FileId, Module};
use crate::parsed::{ParsedFiles, Parser};
use crate::perf_map::PerfMap;
use crate::proc_maps::{parse_maps, MapEntry, MapPath};
use crate::process::{ExecRegion, ProcessMaps, RegionKind};
use crate::vdso::VdsoSymbols;
use crate::{Error, FrameAddress};

/// Limits and locations. Defaults suit a host-wide profiler.
#[derive(Debug, Clone)]
pub struct SymbolizerConfig {
    /// Symbolized addresses kept, keyed by (file, offset).
    pub cache_entries: NonZeroUsize,
    /// Mapped files kept open.
    pub max_modules: NonZeroUsize,
    /// procfs root (tests point it elsewhere).
    pub proc_root: PathBuf,
    /// Kernel symbol table.
    pub kallsyms: PathBuf,
    /// How long a build-id the debug info source did not have stays
    /// unasked (a long-running agent asks again after this).
    pub debug_miss_ttl: Duration,
    /// A parsed file (symbol index, decompressed DWARF: over 20 MiB for a
    /// library like libtorch_cpu) is dropped once no address needed it for
    /// this long. Addresses already named stay in the address cache.
    pub parsed_files_idle: Duration,
    /// Most files held parsed at once (least recently used dropped first).
    pub max_parsed_files: usize,
}

impl Default for SymbolizerConfig {
    fn default() -> Self {
        Self {
            cache_entries: NonZeroUsize::new(64 * 1024).expect("non-zero"),
            max_modules: NonZeroUsize::new(1024).expect("non-zero"),
            proc_root: PathBuf::from("/proc"),
            kallsyms: PathBuf::from("/proc/kallsyms"),
            debug_miss_ttl: Duration::from_secs(600),
            parsed_files_idle: Duration::from_secs(30),
            max_parsed_files: 16,
        }
    }
}

/// Counters, for the profiler's own metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SymbolizerStats {
    pub lookups: u64,
    pub cache_hits: u64,
    pub unknown: u64,
    /// Mapped files that could not be opened.
    pub modules_unavailable: u64,
    /// Files blazesym could not parse.
    pub bad_modules: u64,
    /// Malformed lines in `/proc/PID/maps` and perf maps.
    pub rejected_lines: u64,
    /// Perf maps ignored because they predate their process.
    pub stale_perf_maps: u64,
    /// Files held parsed now.
    pub parsed_files: u64,
    /// Parsed files dropped (idle, or least recently used).
    pub parsed_file_releases: u64,
    /// Symbolized addresses and whole-function names held in the caches.
    pub cached_addresses: u64,
}

/// A user-space address and what it resolved to.
#[derive(Debug, Clone)]
pub struct UserLocation {
    pub address: FrameAddress,
    /// The region it fell into; `None` when unmapped.
    pub region: Option<ExecRegion>,
    pub resolution: Resolution,
}

/// Largest perf map read (a JIT that never restarts can write gigabytes).
const MAX_PERF_MAP_BYTES: u64 = 256 << 20;

/// A parsed perf map and the (size, mtime) it was parsed at.
type CachedPerfMap = ((u64, std::time::SystemTime), Arc<PerfMap>);

/// Cache misses of one module, batched: (output index, file offset).
type Misses = (Arc<Module>, Vec<(usize, u64)>);

/// Resolves addresses of processes and of the kernel.
pub struct Symbolizer {
    config: SymbolizerConfig,
    parsed: ParsedFiles,
    modules: Lru<FileId, Arc<Module>>,
    cache: Lru<(FileId, u64), Resolution>,
    /// Names that hold for a whole function, by file offset range.
    extents: Extents,
    kernel: Box<dyn KernelSymbolSource>,
    /// Kernel lookup address -> function; kernel text is small and fixed.
    kernel_cache: Lru<u64, Option<KernelFunction>>,
    kernel_failed: bool,
    /// Go tables of files blazesym could not name addresses in (`None`: not Go).
    go_tables: Lru<FileId, Option<Arc<GoTable>>>,
    perf_maps: Lru<PathBuf, CachedPerfMap>,
    debug_info: Option<Box<dyn DebugInfoSource>>,
    /// Debug files by build-id (`None`: the source has none).
    /// Debug files by build-id; misses carry when they were asked.
    debug_files: Lru<BuildId, (Option<PathBuf>, Instant)>,
    stats: SymbolizerStats,
    /// Files already reported as broken, so each is reported once.
    reported: std::collections::HashSet<PathBuf>,
    /// The vDSO's functions, read from our own copy on first use.
    vdso: Option<VdsoSymbols>,
}

/// The frames Go's table gives for an address (a file offset or a virtual
/// address), innermost (inlined) first.
fn go_frames(table: &GoTable, address: u64, file_offset: bool) -> Option<Vec<FunctionFrame>> {
    let pc = if file_offset {
        table.virtual_address(address)?
    } else {
        address
    };
    let functions = table.lookup_frames(pc)?;
    let outermost = functions.len().checked_sub(1)?;
    Some(
        functions
            .into_iter()
            .enumerate()
            .map(|(depth, f)| FunctionFrame {
                system_name: f.name.clone(),
                name: f.name,
                file: f.file,
                line: f.line,
                inlined: depth < outermost,
            })
            .collect(),
    )
}

impl Symbolizer {
    pub fn new(config: SymbolizerConfig) -> Self {
        let kallsyms = config.kallsyms.clone();
        Self {
            modules: Lru::new(config.max_modules),
            cache: Lru::new(config.cache_entries),
            extents: Extents::default(),
            parsed: ParsedFiles::new(config.parsed_files_idle, config.max_parsed_files),
            config,
            kernel: Box::new(Kallsyms::new(kallsyms)),
            kernel_cache: Lru::new(NonZeroUsize::new(64 * 1024).expect("non-zero")),
            kernel_failed: false,
            go_tables: Lru::new(NonZeroUsize::new(64).expect("non-zero")),
            perf_maps: Lru::new(NonZeroUsize::new(64).expect("non-zero")),
            debug_info: None,
            debug_files: Lru::new(NonZeroUsize::new(4096).expect("non-zero")),
            stats: SymbolizerStats::default(),
            reported: Default::default(),
            vdso: None,
        }
    }

    pub fn stats(&self) -> SymbolizerStats {
        SymbolizerStats {
            parsed_files: self.parsed.len() as u64,
            parsed_file_releases: self.parsed.released(),
            cached_addresses: (self.cache.len() + self.extents.len()) as u64,
            ..self.stats
        }
    }

    /// Drops parsed files no address needed for `parsed_files_idle`.
    /// Called on every batch of user addresses; a long-running caller that
    /// may go quiet calls it too.
    pub fn release_idle_files(&mut self) {
        self.parsed.release_idle();
    }

    /// Reads the executable mappings of a live process and opens every file
    /// it maps (through `/proc/PID/map_files`, so deleted files and files in
    /// other mount namespaces work). Call it while the process lives: the
    /// result stays usable after it exits.
    pub fn snapshot_process(&mut self, pid: u32) -> Result<ProcessMaps, Error> {
        let proc_dir = self.config.proc_root.join(pid.to_string());
        let maps_path = proc_dir.join("maps");
        let text = match std::fs::read_to_string(&maps_path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoSuchProcess { pid })
            }
            Err(e) => return Err(Error::read(maps_path, e)),
        };
        let (entries, rejected) = parse_maps(&text);
        self.stats.rejected_lines += rejected as u64;
        let mut regions: Vec<ExecRegion> = entries
            .iter()
            .filter(|e| e.perms.exec)
            .map(|e| ExecRegion {
                start: e.start,
                end: e.end,
                offset: e.offset,
                kind: self.region_kind(&proc_dir, e),
            })
            .collect();
        if regions.is_empty() {
            // A zombie (exited, not yet reaped) has an empty maps file.
            return Err(Error::NoSuchProcess { pid });
        }
        regions.sort_by_key(|r| r.start);
        Ok(ProcessMaps {
            pid,
            regions,
            perf_map_paths: perf_map_paths(&proc_dir, pid),
            started: process_start(&proc_dir, &self.config.proc_root),
        })
    }

    /// The mappings of a process that exited before its maps could be
    /// read, from what was seen of it otherwise (the BPF walker's VMAs):
    /// (start, end, file offset, file). Only files already open here (the
    /// same binary or library in another process) are kept; `None` if none.
    pub fn process_from_mappings(
        &mut self,
        pid: u32,
        mappings: &[(u64, u64, u64, FileId)],
    ) -> Option<ProcessMaps> {
        // Newest first, so that of two mappings at one address the later
        // (which replaced the other) is kept, as the walker does.
        let mut regions: Vec<ExecRegion> = mappings
            .iter()
            .rev()
            .filter_map(|&(start, end, offset, id)| {
                let module = self.modules.get(&id)?;
                Some(ExecRegion {
                    start,
                    end,
                    offset,
                    kind: RegionKind::Module(Arc::clone(module)),
                })
            })
            .collect();
        if regions.is_empty() {
            return None;
        }
        regions.sort_by_key(|r| r.start);
        regions.dedup_by_key(|r| r.start);
        Some(ProcessMaps {
            pid,
            regions,
            perf_map_paths: Vec::new(),
            started: None,
        })
    }

    fn region_kind(&mut self, proc_dir: &Path, entry: &MapEntry) -> RegionKind {
        match &entry.path {
            MapPath::Anonymous => RegionKind::Anonymous,
            MapPath::Pseudo(name) => RegionKind::Pseudo(name.clone()),
            MapPath::File { path, .. } => {
                let id = FileId {
                    dev_major: entry.dev_major,
                    dev_minor: entry.dev_minor,
                    inode: entry.inode,
                };
                if let Some(module) = self.modules.get(&id) {
                    return RegionKind::Module(Arc::clone(module));
                }
                let module = Arc::new(self.open_module(proc_dir, entry, id, path));
                self.modules.put(id, Arc::clone(&module));
                RegionKind::Module(module)
            }
        }
    }

    fn open_module(
        &mut self,
        proc_dir: &Path,
        entry: &MapEntry,
        id: FileId,
        path: &Path,
    ) -> Module {
        let map_files = proc_dir
            .join("map_files")
            .join(format!("{:x}-{:x}", entry.start, entry.end));
        let in_root = proc_dir
            .join("root")
            .join(path.strip_prefix("/").unwrap_or(path));
        let file = File::open(&map_files)
            .or_else(|_| File::open(&in_root))
            .ok();
        if file.is_none() {
            self.stats.modules_unavailable += 1;
            log::debug!(
                "cannot open {} (mapped by {})",
                path.display(),
                proc_dir.display()
            );
        }
        let mut module = Module {
            id,
            path: path.to_owned(),
            build_id: None,
            file,
        };
        if let Some(open_path) = module.open_path() {
            module.build_id = blazesym::helper::read_elf_build_id(&open_path)
                .ok()
                .flatten()
                .map(|b| BuildId(b.to_vec()));
        }
        module
    }

    /// Symbolizes user-space addresses of one process. The result has one
    /// entry per input address, in order.
    pub fn symbolize_user(
        &mut self,
        process: &ProcessMaps,
        addresses: &[FrameAddress],
    ) -> Vec<UserLocation> {
        self.release_idle_files();
        let mut out: Vec<UserLocation> = Vec::with_capacity(addresses.len());
        let mut misses: HashMap<FileId, Misses> = HashMap::new();
        let mut perf_map: Option<Option<Arc<PerfMap>>> = None;

        for (idx, &address) in addresses.iter().enumerate() {
            self.stats.lookups += 1;
            let lookup = address.lookup();
            let region = process.find(lookup).cloned();
            let resolution = match &region {
                None => self.perf_map_lookup(&mut perf_map, process, lookup),
                Some(r) => match &r.kind {
                    RegionKind::Anonymous => self.perf_map_lookup(&mut perf_map, process, lookup),
                    RegionKind::Pseudo(name) if name == "[vdso]" => {
                        let vdso = self.vdso.get_or_insert_with(VdsoSymbols::own);
                        match vdso.name(lookup - r.start) {
                            Some(function) => {
                                Resolution::Symbols(vec![FunctionFrame::named(function)])
                            }
                            None => Resolution::Unknown(UnknownReason::NoSymbol),
                        }
                    }
                    RegionKind::Pseudo(_) => Resolution::Unknown(UnknownReason::NoSymbol),
                    RegionKind::Module(module) if !module.is_available() => {
                        Resolution::Unknown(UnknownReason::ModuleUnavailable)
                    }
                    RegionKind::Module(module) => {
                        let offset = r.file_offset(lookup);
                        let hit = self
                            .cache
                            .get(&(module.id, offset))
                            .or_else(|| self.extents.get(module.id, offset));
                        match hit {
                            Some(hit) => {
                                self.stats.cache_hits += 1;
                                hit.clone()
                            }
                            None => {
                                misses
                                    .entry(module.id)
                                    .or_insert_with(|| (Arc::clone(module), Vec::new()))
                                    .1
                                    .push((idx, offset));
                                Resolution::Unknown(UnknownReason::NoSymbol)
                            }
                        }
                    }
                },
            };
            out.push(UserLocation {
                address,
                region,
                resolution,
            });
        }

        for (_, (module, wanted)) in misses {
            let offsets: Vec<u64> = wanted.iter().map(|&(_, off)| off).collect();
            let named = self.symbolize_module(&module, &offsets);
            for ((idx, offset), (resolution, extent)) in wanted.into_iter().zip(named) {
                match extent {
                    Some(extent) => self.extents.insert(module.id, extent, resolution.clone()),
                    None => self.cache.put((module.id, offset), resolution.clone()),
                }
                out[idx].resolution = resolution;
            }
        }
        self.stats.unknown += out
            .iter()
            .filter(|l| matches!(l.resolution, Resolution::Unknown(_)))
            .count() as u64;
        out
    }

    fn perf_map_lookup(
        &mut self,
        loaded: &mut Option<Option<Arc<PerfMap>>>,
        process: &ProcessMaps,
        address: u64,
    ) -> Resolution {
        if loaded.is_none() {
            *loaded = Some(self.load_perf_map(process));
        }
        match loaded
            .as_ref()
            .and_then(|m| m.as_ref())
            .and_then(|m| m.lookup(address))
        {
            Some(symbol) => Resolution::Symbols(vec![FunctionFrame::named(&symbol.name)]),
            None => Resolution::Unknown(UnknownReason::Unmapped),
        }
    }

    /// The process's perf map, parsed again only when the file changed (JITs
    /// keep appending to it). A map older than the process belongs to an
    /// earlier process that had the same pid and is ignored.
    fn load_perf_map(&mut self, process: &ProcessMaps) -> Option<Arc<PerfMap>> {
        let (path, meta) = process
            .perf_map_paths
            .iter()
            .find_map(|p| std::fs::metadata(p).ok().map(|m| (p.clone(), m)))?;
        let modified = meta.modified().ok()?;
        // Start times have 10 ms resolution and clocks drift: allow some slack.
        let slack = std::time::Duration::from_secs(2);
        if process
            .started
            .is_some_and(|started| modified + slack < started)
        {
            log::debug!(
                "{} predates process {}: ignored",
                path.display(),
                process.pid
            );
            self.stats.stale_perf_maps += 1;
            return None;
        }
        let key = (meta.len(), modified);
        if let Some((cached_key, map)) = self.perf_maps.get(&path) {
            if *cached_key == key {
                return Some(Arc::clone(map));
            }
        }
        if meta.len() > MAX_PERF_MAP_BYTES {
            if self.reported.insert(path.clone()) {
                log::warn!(
                    "{} is over {MAX_PERF_MAP_BYTES} bytes: not read",
                    path.display()
                );
            }
            return None;
        }
        let text = std::fs::read(&path).ok()?;
        let map = Arc::new(PerfMap::parse(&String::from_utf8_lossy(&text)));
        self.stats.rejected_lines += map.rejected_lines as u64;
        self.perf_maps.put(path, (key, Arc::clone(&map)));
        Some(map)
    }

    /// Names file offsets of a module, each with the extent (file offsets)
    /// its name holds for, where it holds for a whole function.
    fn symbolize_module(&mut self, module: &Module, offsets: &[u64]) -> Vec<(Resolution, Extent)> {
        let Some(path) = module.open_path() else {
            return vec![
                (Resolution::Unknown(UnknownReason::ModuleUnavailable), None);
                offsets.len()
            ];
        };
        let named = self.symbolize_elf(module.id, &module.path, &path, Input::FileOffset(offsets));
        let (mut resolved, mut extents): (Vec<Resolution>, Vec<Extent>) = named.into_iter().unzip();
        let lacking = |r: &Resolution| match r {
            Resolution::Unknown(_) => true,
            Resolution::Symbols(frames) => frames.iter().all(|f| f.file.is_none()),
        };
        if self.debug_info.is_some() && resolved.iter().any(lacking) {
            if let Some(build_id) = &module.build_id {
                self.use_debug_file(build_id, &path, offsets, &mut resolved, lacking);
                // A debug file can give lines: no name holds for a whole function.
                extents.fill(None);
            }
        }
        resolved.into_iter().zip(extents).collect()
    }

    /// Uses the binary's separate debug file (from the configured source)
    /// for the addresses the binary itself could not name or place.
    fn use_debug_file(
        &mut self,
        build_id: &BuildId,
        binary: &Path,
        offsets: &[u64],
        resolved: &mut [Resolution],
        lacking: impl Fn(&Resolution) -> bool,
    ) {
        let ttl = self.config.debug_miss_ttl;
        let known = self
            .debug_files
            .get(build_id)
            .filter(|(path, asked)| path.is_some() || asked.elapsed() < ttl);
        let debug_file = match known {
            Some((path, _)) => path.clone(),
            None => {
                let found = self
                    .debug_info
                    .as_mut()
                    .and_then(|s| s.debug_file(build_id));
                self.debug_files
                    .put(build_id.clone(), (found.clone(), Instant::now()));
                found
            }
        };
        let (Some(debug_file), Some(segments)) = (debug_file, load_segments(binary)) else {
            return;
        };
        let wanted: Vec<(usize, u64)> = resolved
            .iter()
            .zip(offsets)
            .enumerate()
            .filter(|(_, (r, _))| lacking(r))
            .filter_map(|(i, (_, &off))| Some((i, virtual_address(&segments, off)?)))
            .collect();
        let addresses: Vec<u64> = wanted.iter().map(|&(_, a)| a).collect();
        let source = Source::Elf(Elf::new(&debug_file));
        let Parser::Blaze(blaze) = self.parsed.get(&debug_file) else {
            return; // a debug file without DWARF adds no lines
        };
        let Ok(found) = blaze.symbolize(&source, Input::VirtOffset(&addresses)) else {
            return;
        };
        for ((index, _), symbolized) in wanted.into_iter().zip(found) {
            if let Resolution::Symbols(frames) = convert(symbolized) {
                resolved[index] = Resolution::Symbols(frames);
            }
        }
    }

    /// Where separate debug files come from when binaries lack symbols or
    /// lines (off by default).
    pub fn set_debug_info_source(&mut self, source: Box<dyn DebugInfoSource>) {
        self.debug_info = Some(source);
        self.debug_files.clear();
    }

    /// Symbolizes virtual addresses (as in the ELF file, like `addr2line`) of
    /// one file. Results are not cached.
    pub fn symbolize_elf_file(&mut self, path: &Path, addresses: &[u64]) -> Vec<Resolution> {
        self.stats.lookups += addresses.len() as u64;
        let id = match std::fs::metadata(path) {
            Ok(meta) => {
                use std::os::unix::fs::MetadataExt;
                FileId {
                    dev_major: (meta.dev() >> 32) as u32,
                    dev_minor: meta.dev() as u32,
                    inode: meta.ino(),
                }
            }
            Err(_) => FileId {
                dev_major: u32::MAX,
                dev_minor: u32::MAX,
                inode: 0,
            },
        };
        self.symbolize_elf(id, path, path, Input::VirtOffset(addresses))
            .into_iter()
            .map(|(resolution, _)| resolution)
            .collect()
    }

    /// Go binaries are named from Go's own table first: it is compact and
    /// complete (inlined calls included), while loading the DWARF of a large
    /// Go binary costs over 100 MiB. Everything else, and what the Go table
    /// does not cover (cgo's C code), goes through blazesym.
    fn symbolize_elf(
        &mut self,
        id: FileId,
        shown: &Path,
        path: &Path,
        input: Input<&[u64]>,
    ) -> Vec<(Resolution, Extent)> {
        let (addresses, file_offsets) = match input {
            Input::FileOffset(a) => (a, true),
            Input::VirtOffset(a) | Input::AbsAddr(a) => (a, false),
        };
        let mut resolved = vec![Resolution::Unknown(UnknownReason::NoSymbol); addresses.len()];
        let mut rest: Vec<usize> = (0..addresses.len()).collect();
        if let Some(table) = self.go_table(id, path) {
            rest.clear();
            for (index, &address) in addresses.iter().enumerate() {
                match go_frames(&table, address, file_offsets) {
                    Some(frames) => resolved[index] = Resolution::Symbols(frames),
                    None => rest.push(index),
                }
            }
        }
        let mut extents: Vec<Extent> = vec![None; addresses.len()];
        if rest.is_empty() {
            return resolved.into_iter().zip(extents).collect();
        }
        let subset: Vec<u64> = rest.iter().map(|&i| addresses[i]).collect();
        let input = match input {
            Input::FileOffset(_) => Input::FileOffset(subset.as_slice()),
            Input::VirtOffset(_) => Input::VirtOffset(subset.as_slice()),
            Input::AbsAddr(_) => Input::AbsAddr(subset.as_slice()),
        };
        let source = Source::Elf(Elf::new(path));
        let blaze = match self.parsed.get(path) {
            Parser::Blaze(blaze) => blaze,
            Parser::Index(index) => {
                for &i in &rest {
                    let address = addresses[i];
                    let found = if file_offsets {
                        index
                            .virtual_address(address)
                            .and_then(|a| Some((a, index.find(a)?)))
                    } else {
                        index.find(address).map(|f| (address, f))
                    };
                    if let Some((at, symbol)) = found {
                        let start = address - (at - symbol.start);
                        extents[i] = Some(start..start + symbol.size);
                        resolved[i] = Resolution::Symbols(vec![FunctionFrame::named(&symbol.name)]);
                    }
                }
                return resolved.into_iter().zip(extents).collect();
            }
        };
        match blaze.symbolize(&source, input) {
            Ok(symbolized) => {
                for (&index, symbolized) in rest.iter().zip(symbolized) {
                    extents[index] = whole_function(&symbolized, addresses[index]);
                    resolved[index] = convert(symbolized);
                }
            }
            Err(err) => {
                self.stats.bad_modules += 1;
                if self.reported.insert(shown.to_owned()) {
                    log::warn!("cannot symbolize {}: {err:#}", shown.display());
                }
                for &index in &rest {
                    resolved[index] = Resolution::Unknown(UnknownReason::BadModule);
                }
            }
        }
        resolved.into_iter().zip(extents).collect()
    }

    /// The Go table of a file, opened once (`None` for files without one).
    fn go_table(&mut self, id: FileId, path: &Path) -> Option<Arc<GoTable>> {
        match self.go_tables.get(&id) {
            Some(table) => table.clone(),
            None => {
                let table = GoTable::open(path).ok().map(Arc::new);
                self.go_tables.put(id, table.clone());
                table
            }
        }
    }

    /// Replaces where kernel names come from (default: `/proc/kallsyms`).
    /// If the new source fails, the symbolizer says so once and falls back
    /// to `/proc/kallsyms`.
    pub fn set_kernel_source(&mut self, source: Box<dyn KernelSymbolSource>) {
        self.kernel = source;
        self.kernel_cache.clear();
    }

    /// Symbolizes kernel addresses; returns the frame and the module (for
    /// addresses in loadable modules).
    pub fn symbolize_kernel(
        &mut self,
        addresses: &[FrameAddress],
    ) -> Vec<(Resolution, Option<String>)> {
        let mut misses: Vec<u64> = addresses
            .iter()
            .map(|a| a.lookup())
            .filter(|a| !self.kernel_cache.contains(a))
            .collect();
        misses.sort_unstable();
        misses.dedup();
        if !misses.is_empty() {
            let found = self.kernel_lookup(&misses);
            for (address, function) in misses.into_iter().zip(found) {
                self.kernel_cache.put(address, function);
            }
        }
        addresses
            .iter()
            .map(|a| {
                self.stats.lookups += 1;
                match self.kernel_cache.get(&a.lookup()).cloned().flatten() {
                    Some(f) => (
                        Resolution::Symbols(vec![FunctionFrame::named(&f.name)]),
                        f.module,
                    ),
                    None => {
                        self.stats.unknown += 1;
                        (Resolution::Unknown(UnknownReason::NoSymbol), None)
                    }
                }
            })
            .collect()
    }

    /// Asks the kernel source; on its first failure says so once and falls
    /// back to `/proc/kallsyms`; if that fails too, kernel frames stay unnamed
    /// (said once).
    fn kernel_lookup(&mut self, addresses: &[u64]) -> Vec<Option<KernelFunction>> {
        loop {
            if self.kernel_failed {
                return vec![None; addresses.len()];
            }
            let why = match self.kernel.lookup(addresses) {
                Ok(found) if found.len() == addresses.len() => return found,
                Ok(found) => format!("{} answers for {} addresses", found.len(), addresses.len()),
                Err(e) => format!("{e}"),
            };
            let failed = self.kernel.describe();
            if failed == Kallsyms::DESCRIPTION {
                log::warn!("kernel frames stay unnamed: {failed}: {why}");
                self.kernel_failed = true;
            } else {
                log::warn!("kernel symbols from {failed} failed ({why}); using /proc/kallsyms");
                self.kernel = Box::new(Kallsyms::new(self.config.kallsyms.clone()));
            }
        }
    }
}

fn perf_map_paths(proc_dir: &Path, pid: u32) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    // A process in a pid namespace writes the map under its own pid.
    if let Some(ns_pid) = namespace_pid(proc_dir) {
        paths.push(proc_dir.join("root/tmp").join(format!("perf-{ns_pid}.map")));
    }
    paths.push(PathBuf::from(format!("/tmp/perf-{pid}.map")));
    paths
}

/// When a process started, from `/proc/PID/stat` (field 22, in clock ticks
/// since boot) and the boot time in `/proc/stat`.
fn process_start(proc_dir: &Path, proc_root: &Path) -> Option<std::time::SystemTime> {
    // USER_HZ: the unit of /proc times, 100 on every Linux ABI.
    const TICKS_PER_SECOND: u64 = 100;
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    // Fields after the command name, which may itself contain ") ".
    let after_comm = stat.rsplit_once(") ")?.1;
    let ticks: u64 = after_comm.split_ascii_whitespace().nth(19)?.parse().ok()?;
    let boot = std::fs::read_to_string(proc_root.join("stat")).ok()?;
    let btime: u64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let since_epoch = std::time::Duration::from_secs(btime)
        + std::time::Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND);
    Some(std::time::UNIX_EPOCH + since_epoch)
}

/// The innermost pid from `NSpid:` in `/proc/PID/status`.
fn namespace_pid(proc_dir: &Path) -> Option<u32> {
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_ascii_whitespace().last()?.parse().ok()
}

/// Where one name holds for every byte of a function, in the input's
/// address space; `None` where lines or inlined calls make it vary.
type Extent = Option<std::ops::Range<u64>>;

/// The extent of `address`'s function when its name is the symbol alone.
fn whole_function(symbolized: &Symbolized<'_>, address: u64) -> Extent {
    let Symbolized::Sym(sym) = symbolized else {
        return None;
    };
    if sym.code_info.is_some() || !sym.inlined.is_empty() {
        return None;
    }
    let start = address.checked_sub(sym.offset as u64)?;
    Some(start..start.checked_add(sym.size? as u64)?)
}

fn convert(symbolized: Symbolized<'_>) -> Resolution {
    match symbolized {
        Symbolized::Sym(sym) => Resolution::Symbols(frames_of(sym)),
        Symbolized::Unknown(reason) => Resolution::Unknown(match reason {
            Reason::Unmapped | Reason::InvalidFileOffset => UnknownReason::Unmapped,
            _ => UnknownReason::NoSymbol,
        }),
    }
}

fn code_location(
    info: Option<&blazesym::symbolize::CodeInfo<'_>>,
) -> (Option<String>, Option<u32>) {
    match info {
        Some(info) => (Some(info.to_path().display().to_string()), info.line),
        None => (None, None),
    }
}

/// blazesym reports the outer function first and its inlined callees after,
/// each with its own location; pprof wants the innermost first.
fn frames_of(sym: Sym<'_>) -> Vec<FunctionFrame> {
    let mut frames = Vec::with_capacity(sym.inlined.len() + 1);
    for inlined in sym.inlined.iter().rev() {
        let (file, line) = code_location(inlined.code_info.as_ref());
        frames.push(FunctionFrame {
            name: crate::demangle(&inlined.name),
            system_name: inlined.name.to_string(),
            file,
            line,
            inlined: true,
        });
    }
    let (file, line) = code_location(sym.code_info.as_deref());
    frames.push(FunctionFrame {
        name: crate::demangle(&sym.name),
        system_name: sym.name.to_string(),
        file,
        line,
        inlined: false,
    });
    frames
}
