//! Turns addresses from sampled stacks into function names, files and lines.
//!
//! The symbolizer is built once and lives as long as the profiler. It reads
//! everything it consumes (`/proc/PID/maps`, `/proc/kallsyms`, perf maps, ELF
//! and DWARF through blazesym) as untrusted input. An address that cannot be
//! named is not an error: it comes back as [`Resolution::Unknown`], so the
//! caller keeps it as `module+0xoffset` with its build-id.
//!
//! Non-goals: unwinding stacks, talking to BPF, or any async runtime: this crate
//! depends on neither aya nor tokio.

mod address;
mod debug_info;
mod demangle;
mod error;
mod extents;
mod frame;
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
mod gopclntab;
mod kernel;
mod lru;
mod memory;
mod module;
mod parsed;
mod perf_map;
mod proc_maps;
mod process;
pub mod python;
mod symbol_index;
mod symbolizer;
pub mod thread_context;
mod vdso;

pub use address::FrameAddress;
pub use debug_info::DebugInfoSource;
pub use demangle::demangle;
pub use error::Error;
pub use frame::{FunctionFrame, Resolution, UnknownReason};
pub use gopclntab::{GoFunction, GoSpan, GoTable, GoTableError};
pub use kernel::{
    parse_symbol_offset, Kallsyms, KernelFunction, KernelSymbol, KernelSymbolSource, KernelSymbols,
};
pub use memory::ProcessMemory;
pub use module::{BuildId, FileId, Module};
pub use perf_map::{PerfMap, PerfMapSymbol};
pub use proc_maps::{parse_maps, MapEntry, MapPath, Perms};
pub use process::{ExecRegion, ProcessMaps, RegionKind};
pub use symbolizer::{Symbolizer, SymbolizerConfig, SymbolizerStats, UserLocation};
pub use vdso::VdsoSymbols;
