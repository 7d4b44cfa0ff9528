//! Rust mirrors of the unwinder's BPF structs (profiler-ebpf/include/unwind.h).
//! Both sides assert the sizes; `collect::sampler`'s object test checks the
//! maps' key and value sizes against these.

use std::mem::size_of;

/// Executable mappings with tables per process (SMOLDER_UNWIND_MAX_MAPPINGS).
pub const MAX_MAPPINGS: usize = 512;
/// A page covers `1 << PAGE_SHIFT` bytes of code (SMOLDER_UNWIND_PAGE_SHIFT).
pub const PAGE_SHIFT: u32 = 16;
/// Distinct rules the BPF side holds (SMOLDER_UNWIND_MAX_RULES).
pub const MAX_RULES: usize = 65536;

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
    /// *(rbp + offset): the CFA saved in a realigned frame.
    DerefRbp = 6,
    /// Go's `runtime.asmcgocall` on the system stack: the goroutine's stack
    /// pointer from what it saved there (`go_rows`).
    GoCgo = 7,
}

/// Where the caller's rbp is (enum smolder_rbp_type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RbpRule {
    Unchanged = 0,
    /// Saved at CFA + offset.
    Offset = 1,
    /// Saved at rbp + offset (realigned frames).
    AtRbp = 2,
}

/// Mirror of `struct smolder_unwind_rule`: how to find the caller's frame.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rule {
    pub cfa_offset: i32,
    pub rbp_offset: i16,
    pub cfa_type: u8,
    pub rbp_type: u8,
}

pub const RULE_SIZE: usize = 8;
const _: () = assert!(size_of::<Rule>() == RULE_SIZE);

// SAFETY: plain old data of integers, no padding (8 bytes, asserted above).
unsafe impl aya::Pod for Rule {}

impl Rule {
    /// Rule 0: no rule here (frame pointers).
    pub const INVALID: Rule = Rule::simple(CfaRule::Invalid);
    pub const UNSUPPORTED: Rule = Rule::simple(CfaRule::Unsupported);
    pub const END: Rule = Rule::simple(CfaRule::End);

    pub const fn simple(cfa: CfaRule) -> Self {
        Self {
            cfa_offset: 0,
            rbp_offset: 0,
            cfa_type: cfa as u8,
            rbp_type: RbpRule::Unchanged as u8,
        }
    }

    /// CFA = rsp + `offset`, rbp where it was.
    pub const fn rsp(offset: i32) -> Self {
        Self {
            cfa_offset: offset,
            rbp_offset: 0,
            cfa_type: CfaRule::Rsp as u8,
            rbp_type: RbpRule::Unchanged as u8,
        }
    }

    /// The same rule with the caller's rbp saved at CFA + `offset`.
    pub const fn rbp_saved_at(self, offset: i16) -> Self {
        Self {
            rbp_offset: offset,
            rbp_type: RbpRule::Offset as u8,
            ..self
        }
    }
}

/// Mirror of `struct smolder_unwind_row`: the rule (an index into the rules
/// array) from `pc`, the offset inside the row's 64 KiB page, to the next row.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Row {
    pub pc: u16,
    pub rule: u16,
}

pub const ROW_SIZE: usize = 4;
const _: () = assert!(size_of::<Row>() == ROW_SIZE);
/// The rows array's element holds two rows (struct smolder_unwind_row_pair).
pub const ROW_PAIR_SIZE: usize = 2 * ROW_SIZE;

/// Mirror of `struct smolder_unwind_page`: one page's rows.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Page {
    pub first_row: u32,
    pub row_count: u32,
}

pub const PAGE_SIZE: usize = 8;
const _: () = assert!(size_of::<Page>() == PAGE_SIZE);

/// Mirror of `struct smolder_unwind_mapping`. Addresses are in the process's
/// address space; `base` turns one into a table offset (`address - base`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MappingEntry {
    pub start: u64,
    pub end: u64,
    pub base: u64,
    pub first_page: u32,
    pub page_count: u32,
}

const _: () = assert!(size_of::<MappingEntry>() == 32);

/// Mirror of `struct smolder_unwind_process`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ProcessEntry {
    pub count: u32,
    /// Unique to each entry written (never 0): the walker's cached rules
    /// are tagged with it.
    pub generation: u32,
    /// The address space the mappings were read from (0: not known).
    pub mm_id: u64,
    pub mappings: [MappingEntry; MAX_MAPPINGS],
}

pub const PROCESS_ENTRY_SIZE: usize = 16 + 32 * MAX_MAPPINGS;
const _: () = assert!(size_of::<ProcessEntry>() == PROCESS_ENTRY_SIZE);

// SAFETY: plain old data (u32s and MappingEntry), no padding (size asserted).
unsafe impl aya::Pod for ProcessEntry {}

impl ProcessEntry {
    /// An entry from mappings sorted by start, read from address space
    /// `mm_id` (0: not known), written as `generation`; at most
    /// [`MAX_MAPPINGS`] are kept.
    pub fn new(sorted: &[MappingEntry], mm_id: u64, generation: u32) -> Box<Self> {
        let mut entry = Box::new(Self {
            count: 0,
            generation,
            mm_id,
            mappings: [MappingEntry::default(); MAX_MAPPINGS],
        });
        let n = sorted.len().min(MAX_MAPPINGS);
        entry.mappings[..n].copy_from_slice(&sorted[..n]);
        entry.count = n as u32;
        entry
    }
}

/// Mirror of `struct smolder_unwind_file_key`: an inode as the kernel names
/// it (device in the kernel's encoding, `major << 20 | minor`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
}

// SAFETY: two u64s, no padding.
unsafe impl aya::Pod for FileKey {}

impl FileKey {
    /// The key of a file as `/proc/PID/maps` shows it.
    pub fn of(id: symbolizer::FileId) -> Self {
        Self {
            dev: (u64::from(id.dev_major) << 20) | u64::from(id.dev_minor & 0xf_ffff),
            ino: id.inode,
        }
    }

    pub fn file_id(self) -> symbolizer::FileId {
        symbolizer::FileId {
            dev_major: (self.dev >> 20) as u32,
            dev_minor: (self.dev & 0xf_ffff) as u32,
            inode: self.ino,
        }
    }
}

/// Mirror of `struct smolder_unwind_file`: a VMA of the file mapping file
/// bytes from `pgoff * 4096` inside `[seg_offset, seg_end)` gets
/// `base = vm_start - pgoff * 4096 + delta` and the table's pages.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileEntry {
    pub delta: u64,
    pub seg_offset: u64,
    pub seg_end: u64,
    pub first_page: u32,
    pub page_count: u32,
}

const _: () = assert!(size_of::<FileEntry>() == 32);

// SAFETY: plain old data, no padding (size asserted).
unsafe impl aya::Pod for FileEntry {}

/// Mirror of `struct smolder_exec_mapping`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExecMapping {
    pub start: u64,
    pub end: u64,
    pub pgoff: u64,
    pub dev: u64,
    pub ino: u64,
}

pub const EXEC_MAPPINGS: usize = 32;

/// `ExecMapping::pgoff` of a binary's text recorded at exec: its file
/// offset is that of the file's executable segment.
pub const EXEC_TEXT: u64 = u64::MAX;

/// Mirror of `struct smolder_exec_mappings`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExecMappings {
    pub count: u32,
    pub reserved: u32,
    pub mm_id: u64,
    pub mappings: [ExecMapping; EXEC_MAPPINGS],
}

const _: () = assert!(size_of::<ExecMappings>() == 16 + 40 * EXEC_MAPPINGS);

// SAFETY: plain old data, no padding (size asserted).
unsafe impl aya::Pod for ExecMappings {}
