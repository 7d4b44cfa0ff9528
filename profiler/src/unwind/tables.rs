//! The unwind tables of every profiled process, kept in a bounded store.
//!
//! A module's table is built once (keyed by its build-id, else by the file's
//! device and inode, so every process that maps libc shares one copy, even
//! from another container's identical file), on the builder's thread,
//! and kept while some process maps it. Until it is in, the process's entry
//! leaves that mapping to frame pointers; it is rewritten when the table
//! arrives. A table takes a range of rows and a range of pages, and its
//! rules go into the host-wide rule array. When either space is full, tables
//! no process uses are evicted, oldest first; if that is not enough, the
//! module is unwound with frame pointers and the miss is counted (and said
//! once).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use symbolizer::{BuildId, ExecRegion, FileId, Module, ProcessMaps, RegionKind};

use super::builder::{read_own_vdso, read_table, Builder, Built, ReadError};
use super::layout::{
    FileEntry, FileKey, MappingEntry, ProcessEntry, EXEC_TEXT, MAX_MAPPINGS, MAX_RULES, PAGE_SIZE,
    ROW_SIZE, RULE_SIZE,
};
use super::rules::RuleSet;
use super::space::{RowRange, RowSpace};
use super::store::{StoreError, TableStore};
use super::table::{ElfUnwindInfo, LoadSegment};

/// What the manager has done, for summaries and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnwindStats {
    /// Processes with tables in BPF now.
    pub processes: u64,
    /// Module tables in BPF now.
    pub tables: u64,
    pub rows_used: u64,
    pub rows_capacity: u64,
    pub pages_used: u64,
    pub pages_capacity: u64,
    /// Distinct rules in the host-wide rule array.
    pub rules: u64,
    /// Rules that did not fit in the rule array (their rows stop the walk).
    pub rules_overflow: u64,
    /// Bytes of code without CFI given rules from its machine code.
    pub code_rules_bytes: u64,
    /// Tables built (from .eh_frame / .debug_frame).
    pub tables_built: u64,
    /// Tables asked of the builder thread.
    pub tables_requested: u64,
    /// FDEs skipped because they did not parse or run (their code is left
    /// to frame pointers).
    pub bad_fdes: u64,
    /// Modules with no usable table (no CFI, not ELF, unreadable).
    pub modules_without_tables: u64,
    /// Modules left to frame pointers because the row space was full.
    pub space_full: u64,
    /// Tables evicted to make room.
    pub evicted: u64,
    /// Mappings beyond the per-process limit (left to frame pointers).
    pub mappings_dropped: u64,
    /// Time spent building tables (on the builder's thread).
    pub build_time: Duration,
    /// Tables being built now.
    pub pending: u64,
    /// Writes to the BPF maps that failed.
    pub store_errors: u64,
}

impl UnwindStats {
    /// Kernel memory the tables use now: rows, pages, and the rule array.
    pub fn bytes_used(&self) -> u64 {
        self.rows_used * ROW_SIZE as u64
            + self.pages_used * PAGE_SIZE as u64
            + (MAX_RULES * RULE_SIZE) as u64
    }

    /// Kernel memory allocated for tables.
    pub fn bytes_capacity(&self) -> u64 {
        self.rows_capacity * ROW_SIZE as u64
            + self.pages_capacity * PAGE_SIZE as u64
            + (MAX_RULES * RULE_SIZE) as u64
    }
}

enum ModuleTable {
    Loaded {
        rows: RowRange,
        pages: RowRange,
        base: u64,
        segments: Vec<LoadSegment>,
        refs: u32,
        last_used: u64,
    },
    /// Being built; these processes get their entry rewritten when it is in.
    Pending { waiting: Vec<u32> },
    /// No table (the reason was logged once); frame pointers.
    Unavailable,
    /// Did not fit; retried when space is freed.
    NoSpace,
}

/// What a table is shared by: files with the same build-id have the same
/// `.eh_frame`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TableKey {
    BuildId(BuildId),
    /// A file without a build-id.
    File(FileId),
    /// The vDSO: the same image in every process.
    Vdso,
}

impl TableKey {
    fn of(module: &Module) -> Self {
        match &module.build_id {
            Some(id) => Self::BuildId(id.clone()),
            None => Self::File(module.id),
        }
    }
}

struct ProcessTables {
    mm_id: u64,
    modules: Vec<TableKey>,
    updated: Instant,
    /// What the entry was built from, to rewrite it when a table arrives.
    maps: Option<ProcessMaps>,
}

pub struct UnwindTables<S: TableStore> {
    store: S,
    builder: Builder,
    rows: RowSpace,
    pages: RowSpace,
    rules: RuleSet,
    modules: HashMap<TableKey, ModuleTable>,
    processes: HashMap<u32, ProcessTables>,
    /// Files whose tables the walker finds without a process entry (from
    /// the mappings recorded in BPF), and the table each one uses.
    registered: HashMap<FileKey, (TableKey, FileEntry)>,
    /// The generation of the last process entry written.
    generation: u32,
    clock: u64,
    stats: UnwindStats,
    space_full_reported: bool,
}

/// A process entry is rewritten at most this often when its samples show
/// addresses outside its known mappings (a library loaded since).
const REFRESH_INTERVAL: Duration = Duration::from_secs(1);

impl<S: TableStore> UnwindTables<S> {
    pub fn new(store: S) -> Self {
        let capacity = store.capacity();
        Self {
            store,
            builder: Builder::new(),
            rows: RowSpace::new(capacity.rows),
            pages: RowSpace::new(capacity.pages),
            rules: RuleSet::new(),
            modules: HashMap::new(),
            processes: HashMap::new(),
            registered: HashMap::new(),
            generation: 0,
            clock: 0,
            stats: UnwindStats {
                rows_capacity: capacity.rows.into(),
                pages_capacity: capacity.pages.into(),
                ..Default::default()
            },
            space_full_reported: false,
        }
    }

    pub fn stats(&self) -> UnwindStats {
        let mut stats = self.stats;
        stats.processes = self.processes.len() as u64;
        stats.tables = self
            .modules
            .values()
            .filter(|m| matches!(m, ModuleTable::Loaded { .. }))
            .count() as u64;
        stats.rows_used = u64::from(self.rows.capacity()) - self.rows.free_rows();
        stats.pages_used = u64::from(self.pages.capacity()) - self.pages.free_rows();
        stats.rules = self.rules.len() as u64;
        stats.rules_overflow = self.rules.overflow;
        stats.pending = self
            .modules
            .values()
            .filter(|m| matches!(m, ModuleTable::Pending { .. }))
            .count() as u64;
        stats
    }

    /// How many tables were ever asked of the builder (grows when new
    /// modules are seen).
    pub fn requests(&self) -> u64 {
        self.stats.tables_requested
    }

    /// Installs the tables the builder finished, and rewrites the entries
    /// of the processes that waited for them. Called on every drain.
    pub fn poll(&mut self) {
        let mut waiting = Vec::new();
        while let Some(built) = self.builder.try_next() {
            waiting.extend(self.install(built));
        }
        self.rewrite(waiting);
    }

    /// Waits up to `timeout` for every table being built (a capture's
    /// start, so that its first samples are walked with tables).
    pub fn finish_pending(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.stats().pending > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(built) = self.builder.next_within(left) else {
                break;
            };
            let waiting = self.install(built);
            self.rewrite(waiting);
        }
    }

    fn rewrite(&mut self, mut pids: Vec<u32>) {
        pids.sort_unstable();
        pids.dedup();
        for pid in pids {
            let Some(process) = self.processes.get(&pid) else {
                continue; // gone meanwhile
            };
            let (mm_id, maps) = (process.mm_id, process.maps.clone());
            if let Some(maps) = maps {
                self.add_process(pid, mm_id, &maps);
            }
        }
    }

    /// Stores a finished table; returns the processes that waited for it.
    fn install(&mut self, built: Built) -> Vec<u32> {
        let key = TableKey::of(&built.module);
        let waiting = match self.modules.remove(&key) {
            Some(ModuleTable::Pending { waiting }) => waiting,
            Some(other) => {
                // Only pending tables are asked for: keep what is there.
                self.modules.insert(key, other);
                return Vec::new();
            }
            None => Vec::new(),
        };
        self.stats.build_time += built.took;
        let table = self.store_table(&built.module.path, built.result, built.took);
        self.modules.insert(key, table);
        waiting
    }

    /// Whether `pid` in address space `mm_id` has been handled already
    /// (a process preloaded before its first sample has mm_id 0: it is
    /// written again, cheaply, with its tables cached).
    pub fn knows(&self, pid: u32, mm_id: u64) -> bool {
        self.processes.get(&pid).is_some_and(|p| p.mm_id == mm_id)
    }

    /// Remembers a process whose maps could not be read (it exited), so that
    /// its remaining samples do not retry; it holds no tables.
    pub fn mark_gone(&mut self, pid: u32, mm_id: u64) {
        let previous = self.processes.insert(
            pid,
            ProcessTables {
                mm_id,
                modules: Vec::new(),
                updated: Instant::now(),
                maps: None,
            },
        );
        if let Some(previous) = previous {
            self.release(&previous.modules);
        }
    }

    /// Whether a process's entry may be rewritten now (rate limit for
    /// samples that hit unknown mappings).
    pub fn refresh_due(&self, pid: u32) -> bool {
        self.processes
            .get(&pid)
            .is_none_or(|p| p.updated.elapsed() >= REFRESH_INTERVAL)
    }

    /// Builds (or reuses) the tables of every module `maps` has and points
    /// the process's BPF entry at them. `mm_id` 0: not known yet.
    pub fn add_process(&mut self, pid: u32, mm_id: u64, maps: &ProcessMaps) {
        self.clock += 1;
        let mut entries: Vec<MappingEntry> = Vec::with_capacity(maps.regions.len());
        let mut used: Vec<TableKey> = Vec::new();
        for region in &maps.regions {
            let mut entry = MappingEntry {
                start: region.start,
                end: region.end,
                ..Default::default()
            };
            let found = match &region.kind {
                RegionKind::Module(module) => {
                    let found = self.module_rows(pid, module, region);
                    let key = TableKey::of(module);
                    if let Some(entry) = &found {
                        self.register_file(&key, module.id, region, entry);
                    }
                    found.map(|found| (found, key))
                }
                RegionKind::Pseudo(name) if name == "[vdso]" => {
                    self.vdso_rows(region).map(|found| (found, TableKey::Vdso))
                }
                _ => None,
            };
            if let Some((found, key)) = found {
                entry = found;
                used.push(key);
            }
            entries.push(entry);
        }
        if entries.len() > MAX_MAPPINGS {
            // Keep the mappings with tables first; the rest use frame pointers.
            self.stats.mappings_dropped += (entries.len() - MAX_MAPPINGS) as u64;
            entries.sort_by_key(|e| e.page_count == 0);
            entries.truncate(MAX_MAPPINGS);
            entries.sort_by_key(|e| e.start);
        }
        let previous = self.processes.insert(
            pid,
            ProcessTables {
                mm_id,
                modules: used,
                updated: Instant::now(),
                maps: Some(maps.clone()),
            },
        );
        // Never 0 (the walker caches nothing for generation 0).
        self.generation = self.generation.checked_add(1).unwrap_or(1);
        let entry = ProcessEntry::new(&entries, mm_id, self.generation);
        if let Err(e) = self.store.set_process(pid, &entry) {
            self.store_failed(&e);
        }
        if let Some(previous) = previous {
            self.release(&previous.modules);
        }
    }

    /// Lets the walker find `file`'s table through a VMA, for processes
    /// without an entry yet (short-lived ones may never get one): from the
    /// first mapping of the file seen in any process.
    fn register_file(
        &mut self,
        key: &TableKey,
        file: FileId,
        region: &ExecRegion,
        entry: &MappingEntry,
    ) {
        let file = FileKey::of(file);
        if self.registered.contains_key(&file) {
            return;
        }
        let Some(ModuleTable::Loaded { segments, .. }) = self.modules.get(key) else {
            return;
        };
        let Some(segment) = segment_for(segments, region.offset) else {
            return;
        };
        let entry = FileEntry {
            // base = start - offset + delta, whatever the VMA's start.
            delta: entry
                .base
                .wrapping_sub(region.start.wrapping_sub(region.offset)),
            seg_offset: segment.offset,
            seg_end: segment.offset.saturating_add(segment.file_size),
            first_page: entry.first_page,
            page_count: entry.page_count,
        };
        if let Err(e) = self.store.set_file(file, &entry) {
            self.store_failed(&e);
        }
        self.registered.insert(file, (key.clone(), entry));
    }

    /// Forgets the files that use `key`'s table, in BPF too, before its
    /// space is reused.
    fn unregister_files(&mut self, key: &TableKey) {
        let files: Vec<FileKey> = self
            .registered
            .iter()
            .filter(|(_, (table, _))| table == key)
            .map(|(file, _)| *file)
            .collect();
        for file in files {
            self.registered.remove(&file);
            if let Err(e) = self.store.remove_file(file) {
                self.store_failed(&e);
            }
        }
    }

    /// The executable file mappings the kernel recorded for a process
    /// (start, end, file offset, file), for naming its frames when it
    /// exited before its maps could be read. Only those of address space
    /// `mm_id`.
    pub fn take_recorded(&mut self, pid: u32, mm_id: u64) -> Vec<(u64, u64, u64, FileId)> {
        let Some(recorded) = self.store.take_recorded(pid) else {
            return Vec::new();
        };
        if recorded.mm_id != mm_id {
            return Vec::new();
        }
        recorded
            .mappings
            .iter()
            .take((recorded.count as usize).min(recorded.mappings.len()))
            .filter(|m| m.start < m.end)
            .filter_map(|m| {
                let file = FileKey {
                    dev: m.dev,
                    ino: m.ino,
                };
                let offset = if m.pgoff == EXEC_TEXT {
                    // Recorded at exec: the text segment's own offset.
                    self.registered.get(&file)?.1.seg_offset
                } else {
                    m.pgoff << 12
                };
                Some((m.start, m.end, offset, file.file_id()))
            })
            .collect()
    }

    /// Forgets a process (it exited): its tables may be evicted later.
    pub fn remove_process(&mut self, pid: u32) {
        if let Some(process) = self.processes.remove(&pid) {
            if let Err(e) = self.store.remove_process(pid) {
                self.store_failed(&e);
            }
            self.release(&process.modules);
        }
    }

    /// Removes every process `alive` says is gone.
    pub fn reap(&mut self, alive: impl Fn(u32) -> bool) {
        let dead: Vec<u32> = self
            .processes
            .keys()
            .copied()
            .filter(|&pid| !alive(pid))
            .collect();
        for pid in dead {
            self.remove_process(pid);
        }
    }

    fn release(&mut self, modules: &[TableKey]) {
        let mut freed = false;
        for key in modules {
            if let Some(ModuleTable::Loaded { refs, .. }) = self.modules.get_mut(key) {
                *refs = refs.saturating_sub(1);
                freed |= *refs == 0;
            }
        }
        if freed {
            // Tables that did not fit may fit now.
            self.modules
                .retain(|_, m| !matches!(m, ModuleTable::NoSpace));
        }
    }

    fn store_failed(&mut self, e: &StoreError) {
        self.stats.store_errors += 1;
        if self.stats.store_errors == 1 {
            tracing::warn!(
                "cannot update unwind tables in BPF ({}); affected processes may use frame pointers",
                error_chain(e)
            );
        }
    }

    /// The mapping entry for `region` of `module`; None while its table is
    /// being built (then `pid` waits for it) or when it has none.
    fn module_rows(
        &mut self,
        pid: u32,
        module: &Arc<Module>,
        region: &ExecRegion,
    ) -> Option<MappingEntry> {
        let key = TableKey::of(module);
        if !self.modules.contains_key(&key) {
            let table = if self.builder.request(Arc::clone(module)) {
                self.stats.tables_requested += 1;
                ModuleTable::Pending {
                    waiting: Vec::new(),
                }
            } else {
                // No builder thread: build here.
                self.build_here(&module.path, || read_table(module))
            };
            self.modules.insert(key.clone(), table);
        }
        if let Some(ModuleTable::Pending { waiting }) = self.modules.get_mut(&key) {
            if !waiting.contains(&pid) {
                waiting.push(pid);
            }
            return None;
        }
        self.loaded_entry(&key, region)
    }

    /// The vDSO's entry: its table is built once, here (a few hundred rows).
    fn vdso_rows(&mut self, region: &ExecRegion) -> Option<MappingEntry> {
        if !self.modules.contains_key(&TableKey::Vdso) {
            let table = self.build_here(Path::new("[vdso]"), read_own_vdso);
            self.modules.insert(TableKey::Vdso, table);
        }
        self.loaded_entry(&TableKey::Vdso, region)
    }

    /// The entry for `region` of a module whose table is loaded (a reference
    /// is taken), or None.
    fn loaded_entry(&mut self, key: &TableKey, region: &ExecRegion) -> Option<MappingEntry> {
        let clock = self.clock;
        match self.modules.get_mut(key)? {
            ModuleTable::Loaded {
                pages,
                base,
                segments,
                refs,
                last_used,
                ..
            } => {
                let segment = segment_for(segments, region.offset)?;
                *refs += 1;
                *last_used = clock;
                // vaddr(a) = a - region.start + region.offset - segment.offset + segment.vaddr
                let bias = region
                    .start
                    .wrapping_sub(region.offset)
                    .wrapping_add(segment.offset)
                    .wrapping_sub(segment.vaddr);
                Some(MappingEntry {
                    start: region.start,
                    end: region.end,
                    base: bias.wrapping_add(*base),
                    first_page: pages.start,
                    page_count: pages.len,
                })
            }
            ModuleTable::Pending { .. } | ModuleTable::Unavailable | ModuleTable::NoSpace => None,
        }
    }

    /// Builds a table on this thread and stores it.
    fn build_here(
        &mut self,
        path: &Path,
        read: impl FnOnce() -> Result<ElfUnwindInfo, ReadError>,
    ) -> ModuleTable {
        let started = Instant::now();
        let result = read();
        let took = started.elapsed();
        self.stats.build_time += took;
        self.store_table(path, result, took)
    }

    /// Puts a built table into the row space.
    fn store_table(
        &mut self,
        path: &Path,
        result: Result<ElfUnwindInfo, ReadError>,
        took: Duration,
    ) -> ModuleTable {
        let info = match result {
            Ok(info) => info,
            Err(e) => {
                self.stats.modules_without_tables += 1;
                tracing::debug!(
                    "no unwind table for {}: {}; frame pointers there",
                    path.display(),
                    error_chain(&e)
                );
                return ModuleTable::Unavailable;
            }
        };
        self.stats.tables_built += 1;
        let mut table = info.table;
        self.stats.bad_fdes += table.bad_entries as u64;
        self.stats.code_rules_bytes += table.code_rules.bytes;
        let (Ok(row_count), Ok(page_count)) = (
            u32::try_from(table.rows.len()),
            u32::try_from(table.pages.len()),
        ) else {
            return self.no_space(path, table.rows.len());
        };
        let Some((rows, pages)) = self.allocate(row_count, page_count) else {
            return self.no_space(path, table.rows.len());
        };
        // Host-wide rule numbers, and page entries that point into the
        // shared rows array.
        let numbers = self.rules.renumber(&table.rules);
        for row in &mut table.rows {
            row.rule = numbers.get(usize::from(row.rule)).copied().unwrap_or(0);
        }
        for page in &mut table.pages {
            page.first_row += rows.start;
        }
        let (first_rule, new_rules) = self.rules.unstored();
        let written = self
            .store
            .write_rules(first_rule, new_rules)
            .and_then(|()| self.store.write_rows(rows.start, &table.rows))
            .and_then(|()| self.store.write_pages(pages.start, &table.pages));
        if let Err(e) = written {
            self.store_failed(&e);
            self.rows.release(rows);
            self.pages.release(pages);
            return ModuleTable::Unavailable;
        }
        tracing::debug!(
            "unwind table for {}: {} rows in {} pages, {} bytes of code without CFI read, built in {:.1} ms",
            path.display(),
            table.rows.len(),
            table.pages.len(),
            table.code_rules.bytes,
            took.as_secs_f64() * 1e3
        );
        ModuleTable::Loaded {
            rows,
            pages,
            base: table.base,
            segments: info.segments,
            refs: 0,
            last_used: self.clock,
        }
    }

    /// Ranges of `rows` rows and `pages` pages, evicting unused tables
    /// (oldest first) until both fit.
    fn allocate(&mut self, rows: u32, pages: u32) -> Option<(RowRange, RowRange)> {
        loop {
            if let Some(row_range) = self.rows.allocate(rows) {
                if let Some(page_range) = self.pages.allocate(pages) {
                    return Some((row_range, page_range));
                }
                self.rows.release(row_range);
            }
            let victim = self
                .modules
                .iter()
                .filter_map(|(id, m)| match m {
                    ModuleTable::Loaded {
                        refs: 0, last_used, ..
                    } => Some((*last_used, id)),
                    _ => None,
                })
                .min_by_key(|(last_used, _)| *last_used)
                .map(|(_, key)| key.clone())?;
            if let Some(ModuleTable::Loaded { rows, pages, .. }) = self.modules.remove(&victim) {
                self.unregister_files(&victim);
                self.rows.release(rows);
                self.pages.release(pages);
                self.stats.evicted += 1;
            }
        }
    }

    fn no_space(&mut self, path: &Path, rows: usize) -> ModuleTable {
        self.stats.space_full += 1;
        if !self.space_full_reported {
            self.space_full_reported = true;
            tracing::warn!(
                "unwind table space is full ({} rows, {} pages): {} ({} rows) and later modules \
                 that do not fit are unwound with frame pointers; raise --unwind-table-mib",
                self.rows.capacity(),
                self.pages.capacity(),
                path.display(),
                rows
            );
        }
        ModuleTable::NoSpace
    }
}

/// The load segment that maps file offset `offset`. Mapping offsets are page
/// aligned and segment offsets need not be, so two segments can share a
/// page: the one that starts in it (the latest) is the one mapped there.
fn segment_for(segments: &[LoadSegment], offset: u64) -> Option<LoadSegment> {
    const PAGE: u64 = 4096;
    segments
        .iter()
        .filter(|s| {
            s.offset & !(PAGE - 1) <= offset && offset < s.offset.saturating_add(s.file_size)
        })
        .max_by_key(|s| s.offset)
        .copied()
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::super::store::MemoryStore;
    use super::*;
    use symbolizer::{Symbolizer, SymbolizerConfig};

    fn own_maps(symbolizer: &mut Symbolizer) -> ProcessMaps {
        symbolizer.snapshot_process(std::process::id()).unwrap()
    }

    #[test]
    fn shares_tables_and_frees_them_when_processes_leave() {
        let mut symbolizer = Symbolizer::new(SymbolizerConfig::default());
        let maps = own_maps(&mut symbolizer);
        let mut tables = UnwindTables::new(MemoryStore::with_capacity(4 << 20, 1 << 16));
        tables.add_process(1, 0, &maps);
        assert!(tables.stats().pending >= 2, "built off this thread");
        tables.finish_pending(Duration::from_secs(10));
        let one = tables.stats();
        assert!(one.tables >= 2, "this binary and libc: {one:?}");
        assert!(one.rows_used > 1000);
        // A second process mapping the same files reuses the tables.
        tables.add_process(2, 0, &maps);
        let two = tables.stats();
        assert_eq!(
            (two.tables_built, two.rows_used),
            (one.tables_built, one.rows_used)
        );
        let entry = &tables.store.processes[&1];
        assert_eq!(entry.count as usize, maps.regions.len());
        let with_rows = entry.mappings[..entry.count as usize]
            .iter()
            .filter(|m| m.page_count > 0)
            .count();
        assert!(with_rows >= 2);
        assert!(entry.mappings[..entry.count as usize]
            .windows(2)
            .all(|w| w[0].start < w[1].start));
        tables.reap(|pid| pid == 2);
        assert!(!tables.store.processes.contains_key(&1));
        assert_eq!(tables.stats().processes, 1);
    }

    #[test]
    fn a_full_space_evicts_unused_tables_then_falls_back() {
        let mut symbolizer = Symbolizer::new(SymbolizerConfig::default());
        let maps = own_maps(&mut symbolizer);
        // Room for the biggest table only.
        let mut probe = UnwindTables::new(MemoryStore::with_capacity(4 << 20, 1 << 16));
        probe.add_process(1, 0, &maps);
        probe.finish_pending(Duration::from_secs(10));
        let needed = probe.stats().rows_used as u32;
        let mut tables = UnwindTables::new(MemoryStore::with_capacity(needed - 1, 1 << 16));
        tables.add_process(1, 0, &maps);
        tables.finish_pending(Duration::from_secs(10));
        let stats = tables.stats();
        assert!(stats.space_full >= 1, "{stats:?}");
        assert!(stats.rows_used < u64::from(needed));
        // Once the process leaves, its tables can be evicted for another.
        tables.remove_process(1);
        tables.add_process(2, 0, &maps);
        tables.finish_pending(Duration::from_secs(10));
        assert!(tables.stats().tables >= 1);
    }

    #[test]
    fn the_vdso_gets_a_table_from_our_own_copy() {
        let info = read_own_vdso().unwrap();
        assert!(info.table.rows.len() >= 10, "{}", info.table.rows.len());
        let mut symbolizer = Symbolizer::new(SymbolizerConfig::default());
        let maps = own_maps(&mut symbolizer);
        let mut tables = UnwindTables::new(MemoryStore::with_capacity(4 << 20, 1 << 16));
        tables.add_process(1, 0, &maps);
        tables.finish_pending(Duration::from_secs(10));
        let vdso = maps
            .regions
            .iter()
            .find(|r| matches!(&r.kind, RegionKind::Pseudo(n) if n == "[vdso]"))
            .expect("a [vdso] mapping");
        let entry = &tables.store.processes[&1];
        let mapping = entry.mappings[..entry.count as usize]
            .iter()
            .find(|m| m.start == vdso.start)
            .unwrap();
        assert!(mapping.page_count >= 1);
        assert!(info.table.rows.len() >= 10);
    }

    #[test]
    fn segment_lookup_handles_unaligned_offsets() {
        let segments = [
            LoadSegment {
                offset: 0,
                vaddr: 0,
                file_size: 0x1234,
            },
            LoadSegment {
                offset: 0x1234,
                vaddr: 0x2234,
                file_size: 0x5000,
            },
        ];
        assert_eq!(segment_for(&segments, 0).unwrap().vaddr, 0);
        assert_eq!(segment_for(&segments, 0x1000).unwrap().vaddr, 0x2234);
        assert_eq!(segment_for(&segments, 0x2000).unwrap().vaddr, 0x2234);
        assert!(segment_for(&segments, 0x7000).is_none());
    }
}
