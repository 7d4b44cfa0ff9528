//! Symbolizer tests on binaries built from `testdata/`, checked against
//! `nm` and `addr2line` (binutils) as ground truth.

mod build;
mod elf_files;
mod go;
mod processes;
