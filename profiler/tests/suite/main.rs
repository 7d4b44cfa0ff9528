//! End-to-end tests of `smolder record`: real BPF, real processes built from
//! `testdata/`. They need root; in CI a missing root is a failure.

mod agent;
mod cuda;
mod debuginfod;
mod deploy;
mod go;
mod ground_truth;
mod harness;
mod kernel_symbols;
mod offcpu;
mod otlp;
mod process_context;
mod pyroscope;
mod python;
mod python_offcpu;
mod python_versions;
mod pytorch;
mod record;
mod symbol_sources;
mod tls_front;
mod trace_context;
mod unwind;
