//! Rust mirrors of the unwinder's BPF structs (profiler-ebpf/include/unwind.h).
//! Both sides assert the sizes; `collect::sampler`'s object test checks the
//! maps' key and value sizes against these.

use std::mem::size_of;

/// Executable mappings with tables per process (SMOLDER_UNWIND_MAX_MAPPINGS).
pub const MAX_MAPPINGS: usize = 512;
/// Rows the BPF binary search can reach (2^SMOLDER_UNWIND_ROW_SEARCH_STEPS).
pub const MAX_ROWS_SEARCHABLE: u32 = 1 << 24;

/// How the canonical frame address is found (enum smolder_cfa_type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CfaRule {
    /// No FDE covers the address: frame pointers.
    Invalid = 0,
    /// rsp + offset.
    Rsp = 1,
    /// rbp + offset.
    Rbp = 2,
    /// The `.plt` expression.
    Plt = 3,
    /// Return address undefined: the outermost frame.
    End = 4,
    /// A rule the BPF unwinder does not follow: the walk stops with an error.
    Unsupported = 5,
}

/// Where the caller's rbp is (enum smolder_rbp_type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RbpRule {
    Unchanged = 0,
    /// Saved at CFA + offset.
    Offset = 1,
}

/// Mirror of `struct smolder_unwind_row`: the rule from `pc` (relative to the
/// table's base, an ELF virtual address) up to the next row.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub pc: u32,
    pub cfa_offset: i32,
    pub rbp_offset: i16,
    pub cfa_type: u8,
    pub rbp_type: u8,
    pub reserved: u32,
}

pub const ROW_SIZE: usize = 16;
const _: () = assert!(size_of::<Row>() == ROW_SIZE);

// SAFETY: plain old data of integers, no padding (16 bytes, asserted above).
unsafe impl aya::Pod for Row {}

/// Mirror of `struct smolder_unwind_mapping`. Addresses are in the process's
/// address space; `base` turns one into a row pc (`address - base`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MappingEntry {
    pub start: u64,
    pub end: u64,
    pub base: u64,
    pub first_row: u32,
    pub row_count: u32,
}

const _: () = assert!(size_of::<MappingEntry>() == 32);

/// Mirror of `struct smolder_unwind_process`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcessEntry {
    pub count: u32,
    pub reserved: u32,
    pub mappings: [MappingEntry; MAX_MAPPINGS],
}

pub const PROCESS_ENTRY_SIZE: usize = 8 + 32 * MAX_MAPPINGS;
const _: () = assert!(size_of::<ProcessEntry>() == PROCESS_ENTRY_SIZE);

// SAFETY: plain old data (u32s and MappingEntry), no padding (size asserted).
unsafe impl aya::Pod for ProcessEntry {}

impl ProcessEntry {
    /// An entry from mappings sorted by start; at most [`MAX_MAPPINGS`] are kept.
    pub fn new(sorted: &[MappingEntry]) -> Box<Self> {
        let mut entry = Box::new(Self {
            count: 0,
            reserved: 0,
            mappings: [MappingEntry::default(); MAX_MAPPINGS],
        });
        let n = sorted.len().min(MAX_MAPPINGS);
        entry.mappings[..n].copy_from_slice(&sorted[..n]);
        entry.count = n as u32;
        entry
    }
}
