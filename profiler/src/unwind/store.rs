//! Where tables go: the BPF maps (`unwind_rows` and `unwind_pages`, mmapped
//! and written in place; `unwind_rules`; `unwind_processes`, one entry per
//! process), or memory for tests.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;

use aya::maps::{Array, HashMap as BpfHashMap, Map, MapData, MapError};

use super::layout::{
    ExecMappings, FileEntry, FileKey, Page, ProcessEntry, Row, Rule, PAGE_SIZE, ROW_SIZE,
};
use crate::collect::key_was_missing;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("BPF map `{name}`")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("BPF map `{0}` is missing or of the wrong type")]
    Missing(&'static str),
    #[error("cannot mmap the BPF rows array")]
    Mmap(#[source] std::io::Error),
    #[error("{what} {start}..{end} are outside the array of {capacity}")]
    OutOfRange {
        what: &'static str,
        start: u64,
        end: u64,
        capacity: u32,
    },
}

/// How many of each the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub rows: u32,
    pub pages: u32,
}

/// What the manager writes.
pub trait TableStore {
    fn capacity(&self) -> Capacity;
    /// Writes `rows` at `start..start + rows.len()`.
    fn write_rows(&mut self, start: u32, rows: &[Row]) -> Result<(), StoreError>;
    /// Writes `pages` at `start..start + pages.len()`.
    fn write_pages(&mut self, start: u32, pages: &[Page]) -> Result<(), StoreError>;
    /// Writes `rules` at `first..first + rules.len()` of the rule array.
    fn write_rules(&mut self, first: u32, rules: &[Rule]) -> Result<(), StoreError>;
    fn set_process(&mut self, pid: u32, entry: &ProcessEntry) -> Result<(), StoreError>;
    fn remove_process(&mut self, pid: u32) -> Result<(), StoreError>;
    /// Points the walker at a file's table for processes without an entry.
    fn set_file(&mut self, key: FileKey, entry: &FileEntry) -> Result<(), StoreError>;
    fn remove_file(&mut self, key: FileKey) -> Result<(), StoreError>;
    /// Takes the executable file mappings the kernel recorded for `pid`.
    fn take_recorded(&mut self, pid: u32) -> Option<ExecMappings>;
}

/// The sampler's unwind maps, as `Ebpf::take_map` hands them out.
pub struct BpfMaps {
    pub rows: Map,
    pub pages: Map,
    pub rules: Map,
    pub processes: Map,
    pub files: Map,
    pub recorded: Map,
}

/// The real store: the sampler's BPF maps.
pub struct BpfStore {
    rows_map: MapData,
    pages_map: MapData,
    rules: Array<MapData, Rule>,
    capacity: Capacity,
    processes: BpfHashMap<MapData, u32, ProcessEntry>,
    files: BpfHashMap<MapData, FileKey, FileEntry>,
    recorded: BpfHashMap<MapData, u32, ExecMappings>,
}

impl BpfStore {
    pub fn new(maps: BpfMaps, capacity: Capacity) -> Result<Self, StoreError> {
        let Map::Array(rows_map) = maps.rows else {
            return Err(StoreError::Missing("unwind_rows"));
        };
        let Map::Array(pages_map) = maps.pages else {
            return Err(StoreError::Missing("unwind_pages"));
        };
        let rules = Array::try_from(maps.rules).map_err(|source| StoreError::Map {
            name: "unwind_rules",
            source,
        })?;
        let processes = BpfHashMap::try_from(maps.processes).map_err(|source| StoreError::Map {
            name: "unwind_processes",
            source,
        })?;
        let files = BpfHashMap::try_from(maps.files).map_err(|source| StoreError::Map {
            name: "unwind_files",
            source,
        })?;
        let recorded = BpfHashMap::try_from(maps.recorded).map_err(|source| StoreError::Map {
            name: "exec_mappings",
            source,
        })?;
        Ok(Self {
            rows_map,
            pages_map,
            rules,
            capacity,
            processes,
            files,
            recorded,
        })
    }
}

const PAGE: usize = 4096;

/// A shared mapping of some pages of an mmapable array, unmapped on drop. Only
/// the pages a write touches are mapped: the kernel maps a BPF array's pages
/// when it is mmapped, and a whole-array mapping would count all of it in
/// smolder's RSS.
struct RowPages {
    ptr: *mut libc::c_void,
    len: usize,
}

impl RowPages {
    fn map(map: &MapData, byte_offset: usize, len: usize) -> Result<Self, StoreError> {
        // SAFETY: a shared mapping of a BPF array map created with
        // BPF_F_MMAPABLE; the kernel checks that offset and length lie
        // inside the array. The fd outlives the call; the mapping lives
        // until Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                byte_offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(StoreError::Mmap(std::io::Error::last_os_error()));
        }
        Ok(Self { ptr, len })
    }
}

impl Drop for RowPages {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped; nothing refers to it after.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

fn check_range(
    what: &'static str,
    start: u32,
    len: usize,
    capacity: u32,
) -> Result<(), StoreError> {
    let end = u64::from(start) + len as u64;
    if end > u64::from(capacity) {
        return Err(StoreError::OutOfRange {
            what,
            start: start.into(),
            end,
            capacity,
        });
    }
    Ok(())
}

/// Copies `items` to element `start` (of `size` bytes) of an mmapable
/// array, through a mapping of only the pages they touch.
fn write_mapped<T: Copy>(
    map: &MapData,
    start: u32,
    items: &[T],
    size: usize,
) -> Result<(), StoreError> {
    debug_assert_eq!(std::mem::size_of::<T>(), size);
    if items.is_empty() {
        return Ok(());
    }
    let first_byte = start as usize * size;
    let end_byte = first_byte + std::mem::size_of_val(items);
    let page_start = first_byte / PAGE * PAGE;
    let page_end = end_byte.div_ceil(PAGE) * PAGE;
    let pages = RowPages::map(map, page_start, page_end - page_start)?;
    // SAFETY: the mapping covers [page_start, page_end), which holds
    // [first_byte, end_byte) (the callers check the range against the
    // array's capacity); T is plain data; BPF reads these elements only once
    // a process entry that points at them is written, after this copy.
    unsafe {
        let target = pages
            .ptr
            .cast::<u8>()
            .add(first_byte - page_start)
            .cast::<T>();
        std::ptr::copy_nonoverlapping(items.as_ptr(), target, items.len());
    }
    Ok(())
}

impl TableStore for BpfStore {
    fn capacity(&self) -> Capacity {
        self.capacity
    }

    fn write_rows(&mut self, start: u32, rows: &[Row]) -> Result<(), StoreError> {
        check_range("rows", start, rows.len(), self.capacity.rows)?;
        write_mapped(&self.rows_map, start, rows, ROW_SIZE)
    }

    fn write_pages(&mut self, start: u32, pages: &[Page]) -> Result<(), StoreError> {
        check_range("pages", start, pages.len(), self.capacity.pages)?;
        write_mapped(&self.pages_map, start, pages, PAGE_SIZE)
    }

    fn write_rules(&mut self, first: u32, rules: &[Rule]) -> Result<(), StoreError> {
        for (index, rule) in (first..).zip(rules) {
            self.rules
                .set(index, *rule, 0)
                .map_err(|source| StoreError::Map {
                    name: "unwind_rules",
                    source,
                })?;
        }
        Ok(())
    }

    fn set_process(&mut self, pid: u32, entry: &ProcessEntry) -> Result<(), StoreError> {
        self.processes
            .insert(pid, entry, 0)
            .map_err(|source| StoreError::Map {
                name: "unwind_processes",
                source,
            })
    }

    fn remove_process(&mut self, pid: u32) -> Result<(), StoreError> {
        match self.processes.remove(&pid) {
            Ok(()) => Ok(()),
            Err(e) if key_was_missing(&e) => Ok(()),
            Err(source) => Err(StoreError::Map {
                name: "unwind_processes",
                source,
            }),
        }
    }

    fn set_file(&mut self, key: FileKey, entry: &FileEntry) -> Result<(), StoreError> {
        self.files
            .insert(key, entry, 0)
            .map_err(|source| StoreError::Map {
                name: "unwind_files",
                source,
            })
    }

    fn remove_file(&mut self, key: FileKey) -> Result<(), StoreError> {
        match self.files.remove(&key) {
            Ok(()) => Ok(()),
            Err(e) if key_was_missing(&e) => Ok(()),
            Err(source) => Err(StoreError::Map {
                name: "unwind_files",
                source,
            }),
        }
    }

    fn take_recorded(&mut self, pid: u32) -> Option<ExecMappings> {
        let recorded = self.recorded.get(&pid, 0).ok()?;
        let _ = self.recorded.remove(&pid);
        Some(recorded)
    }
}

/// An in-memory store for tests of the manager.
#[derive(Default)]
pub struct MemoryStore {
    pub rows: Vec<Row>,
    pub pages: Vec<Page>,
    pub rules: Vec<Rule>,
    pub processes: HashMap<u32, Box<ProcessEntry>>,
    pub files: HashMap<FileKey, FileEntry>,
    pub recorded: HashMap<u32, ExecMappings>,
}

impl MemoryStore {
    pub fn with_capacity(rows: u32, pages: u32) -> Self {
        Self {
            rows: vec![Row::default(); rows as usize],
            pages: vec![Page::default(); pages as usize],
            rules: Vec::new(),
            processes: HashMap::new(),
            files: HashMap::new(),
            recorded: HashMap::new(),
        }
    }
}

impl TableStore for MemoryStore {
    fn capacity(&self) -> Capacity {
        Capacity {
            rows: self.rows.len() as u32,
            pages: self.pages.len() as u32,
        }
    }

    fn write_rows(&mut self, start: u32, rows: &[Row]) -> Result<(), StoreError> {
        check_range("rows", start, rows.len(), self.capacity().rows)?;
        self.rows[start as usize..start as usize + rows.len()].copy_from_slice(rows);
        Ok(())
    }

    fn write_pages(&mut self, start: u32, pages: &[Page]) -> Result<(), StoreError> {
        check_range("pages", start, pages.len(), self.capacity().pages)?;
        self.pages[start as usize..start as usize + pages.len()].copy_from_slice(pages);
        Ok(())
    }

    fn write_rules(&mut self, first: u32, rules: &[Rule]) -> Result<(), StoreError> {
        self.rules.truncate(first as usize);
        self.rules.extend_from_slice(rules);
        Ok(())
    }

    fn set_process(&mut self, pid: u32, entry: &ProcessEntry) -> Result<(), StoreError> {
        self.processes.insert(pid, Box::new(*entry));
        Ok(())
    }

    fn remove_process(&mut self, pid: u32) -> Result<(), StoreError> {
        self.processes.remove(&pid);
        Ok(())
    }

    fn set_file(&mut self, key: FileKey, entry: &FileEntry) -> Result<(), StoreError> {
        self.files.insert(key, *entry);
        Ok(())
    }

    fn remove_file(&mut self, key: FileKey) -> Result<(), StoreError> {
        self.files.remove(&key);
        Ok(())
    }

    fn take_recorded(&mut self, pid: u32) -> Option<ExecMappings> {
        self.recorded.remove(&pid)
    }
}
