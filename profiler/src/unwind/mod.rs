//! Unwind stage: DWARF CFI tables for the BPF unwinder.
//!
//! `table` turns a module's `.eh_frame` into paged, sorted rows (on
//! `builder`'s thread), with `code_rules` reading the machine code of
//! functions that have no CFI; `rules` keeps the host-wide rule array,
//! `space` hands out ranges of the fixed-size rows and pages arrays, `tables`
//! keeps one table per module and one mapping list per process, `follow`
//! keeps them in step with the processes sampled, and `store` writes them to
//! the BPF maps (`layout` mirrors their C structs). The walk itself runs in BPF:
//! profiler-ebpf/src/unwind_user.h.

mod builder;
mod code_rules;
mod follow;
mod go_rows;
mod layout;
mod rules;
mod space;
mod store;
mod table;
mod tables;

pub use code_rules::CodeRulesStats;
pub use follow::{all_pids, follow, preload, Seen, NEW_TABLES_WAIT, PRELOAD_WAIT};
pub use layout::{
    CfaRule, MappingEntry, Page, ProcessEntry, RbpRule, Row, Rule, MAX_MAPPINGS, MAX_RULES,
    PAGE_SHIFT, PAGE_SIZE, ROW_PAIR_SIZE, ROW_SIZE, RULE_SIZE,
};
pub use store::{BpfMaps, BpfStore, Capacity, MemoryStore, StoreError, TableStore};
pub use table::{parse_elf, parse_mapped_elf, ElfUnwindInfo, LoadSegment, TableError, UnwindTable};
pub(crate) use tables::error_chain;
pub use tables::{UnwindStats, UnwindTables};
