//! smolder: an eBPF profiler for Linux.
//!
//! The pipeline, one module per stage: [`collect`] (BPF sampler, fed by
//! [`unwind`]'s DWARF tables) -> [`aggregate`] (raw stack counts) ->
//! [`symbolize`] (names, via the `symbolizer` crate) -> [`encode`] (pprof, collapsed, SVG). [`record`] runs
//! it once for `smolder record`. See docs/architecture.md.
//!
//! Non-goals of this crate: symbol file parsing (the `symbolizer` crate does it).

pub mod agent;
pub mod aggregate;
pub mod allocator;
pub mod cli;
pub mod collect;
pub mod config;
pub mod debuginfod;
pub mod encode;
pub mod export;
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
pub mod go;
pub mod gpu_calls;
pub mod logging;
pub mod preflight;
pub mod processes;
pub mod profile;
pub mod progress;
pub mod python;
pub mod record;
pub mod report;
pub mod signals;
pub mod symbolize;
pub mod target;
pub mod trace_context;
pub mod unwind;
