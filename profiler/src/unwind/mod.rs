//! Unwind stage: DWARF CFI tables for the BPF unwinder.
//!
//! `table` turns a module's `.eh_frame` into sorted rows (on `builder`'s
//! thread), `space` hands out ranges of the fixed-size rows array, `tables`
//! keeps one table per module and one mapping list per process, `follow`
//! keeps them in step with the processes sampled, and `store` writes them to
//! the BPF maps (`layout` mirrors their C structs). The walk itself runs in BPF:
//! profiler-ebpf/src/unwind_user.h.

mod builder;
mod follow;
mod layout;
mod space;
mod store;
mod table;
mod tables;

pub use follow::{all_pids, follow, preload, Seen};
pub use layout::{
    CfaRule, MappingEntry, ProcessEntry, RbpRule, Row, MAX_MAPPINGS, MAX_ROWS_SEARCHABLE, ROW_SIZE,
};
pub use store::{BpfStore, MemoryStore, StoreError, TableStore};
pub use table::{parse_elf, ElfUnwindInfo, LoadSegment, TableError, UnwindTable};
pub use tables::{UnwindStats, UnwindTables};
