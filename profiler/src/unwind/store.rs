//! Where tables go: the BPF maps (`unwind_rows`, mmapped and written in
//! place; `unwind_processes`, one entry per process), or memory for tests.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::os::fd::AsRawFd;

use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError};

use super::layout::{ProcessEntry, Row, ROW_SIZE};
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
    #[error("rows {start}..{end} are outside the array of {capacity}")]
    OutOfRange { start: u64, end: u64, capacity: u32 },
}

/// The two things the manager writes.
pub trait TableStore {
    /// Rows the store holds at most.
    fn capacity(&self) -> u32;
    /// Writes `rows` at `start..start + rows.len()`.
    fn write_rows(&mut self, start: u32, rows: &[Row]) -> Result<(), StoreError>;
    fn set_process(&mut self, pid: u32, entry: &ProcessEntry) -> Result<(), StoreError>;
    fn remove_process(&mut self, pid: u32) -> Result<(), StoreError>;
}

/// The real store: the sampler's BPF maps.
pub struct BpfStore {
    rows_map: MapData,
    capacity: u32,
    processes: BpfHashMap<MapData, u32, ProcessEntry>,
}

impl BpfStore {
    /// Takes ownership of the two maps (from `Ebpf::take_map`).
    pub fn new(rows: Map, processes: Map, capacity: u32) -> Result<Self, StoreError> {
        let Map::Array(rows_map) = rows else {
            return Err(StoreError::Missing("unwind_rows"));
        };
        let processes = BpfHashMap::try_from(processes).map_err(|source| StoreError::Map {
            name: "unwind_processes",
            source,
        })?;
        Ok(Self {
            rows_map,
            capacity,
            processes,
        })
    }
}

const PAGE: usize = 4096;

/// A shared mapping of some pages of the rows array, unmapped on drop. Only
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

fn check_range(start: u32, len: usize, capacity: u32) -> Result<(), StoreError> {
    let end = u64::from(start) + len as u64;
    if end > u64::from(capacity) {
        return Err(StoreError::OutOfRange {
            start: start.into(),
            end,
            capacity,
        });
    }
    Ok(())
}

impl TableStore for BpfStore {
    fn capacity(&self) -> u32 {
        self.capacity
    }

    fn write_rows(&mut self, start: u32, rows: &[Row]) -> Result<(), StoreError> {
        check_range(start, rows.len(), self.capacity)?;
        if rows.is_empty() {
            return Ok(());
        }
        let first_byte = start as usize * ROW_SIZE;
        let end_byte = first_byte + rows.len() * ROW_SIZE;
        let page_start = first_byte / PAGE * PAGE;
        let page_end = end_byte.div_ceil(PAGE) * PAGE;
        let pages = RowPages::map(&self.rows_map, page_start, page_end - page_start)?;
        // SAFETY: the mapping covers [page_start, page_end), which holds
        // [first_byte, end_byte) (checked against the capacity above); Row
        // is plain data; BPF reads these rows only once a process entry that
        // points at them is written, after this copy.
        unsafe {
            let target = pages
                .ptr
                .cast::<u8>()
                .add(first_byte - page_start)
                .cast::<Row>();
            std::ptr::copy_nonoverlapping(rows.as_ptr(), target, rows.len());
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
}

/// An in-memory store for tests of the manager.
#[derive(Default)]
pub struct MemoryStore {
    pub rows: Vec<Row>,
    pub processes: HashMap<u32, Box<ProcessEntry>>,
}

impl MemoryStore {
    pub fn with_capacity(capacity: u32) -> Self {
        let empty = Row {
            pc: 0,
            cfa_offset: 0,
            rbp_offset: 0,
            cfa_type: 0,
            rbp_type: 0,
            reserved: 0,
        };
        Self {
            rows: vec![empty; capacity as usize],
            processes: HashMap::new(),
        }
    }
}

impl TableStore for MemoryStore {
    fn capacity(&self) -> u32 {
        self.rows.len() as u32
    }

    fn write_rows(&mut self, start: u32, rows: &[Row]) -> Result<(), StoreError> {
        check_range(start, rows.len(), self.capacity())?;
        self.rows[start as usize..start as usize + rows.len()].copy_from_slice(rows);
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
}
