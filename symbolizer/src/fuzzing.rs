//! Entry points for the fuzz targets (`profiler/fuzz/`, built with
//! `--cfg fuzzing` by `cargo xtask fuzz`): each runs one parser of outside
//! input on arbitrary bytes and uses what it returns. A panic, an overflow
//! or an endless loop is a bug; an error is the expected answer.

use std::fs::File;

use crate::python::{Layout, LineFormat};

/// `/proc/PID/maps` text.
pub fn proc_maps(text: &str) {
    let _ = crate::proc_maps::parse_maps(text);
}

/// A perf map (`/tmp/perf-PID.map`), then lookups across its range.
pub fn perf_map(text: &str) {
    let map = crate::perf_map::PerfMap::parse(text);
    for address in [0, 1, 0x1000, 0x40_0000, u64::MAX / 2, u64::MAX] {
        let _ = map.lookup(address);
    }
}

/// `.gopclntab` bytes: the first 8 input bytes are the `.text` address,
/// the rest the section; then lookups of addresses near the text start.
pub fn gopclntab(data: &[u8]) {
    let Some((text, table)) = data.split_first_chunk::<8>() else {
        return;
    };
    let text = u64::from_le_bytes(*text);
    if let Ok(go) = crate::GoTable::parse(table.to_vec(), text, Vec::new()) {
        for delta in [0u64, 1, 16, 0x100, 0x1000, 0x10_0000] {
            let _ = go.lookup_frames(text.wrapping_add(delta));
        }
    }
}

/// An ELF file's symbol table, read from `file`, then lookups.
pub fn elf_symbols(file: &File) {
    if let Some(index) = crate::symbol_index::SymbolIndex::open(file) {
        for address in [0, 0x1000, 0x40_0000, 0x40_1000, u64::MAX] {
            let _ = index.find(address);
        }
        let _ = index.virtual_address(0x1000);
    }
}

/// CPython line tables (first byte: the format; then co_firstlineno and an
/// instruction offset, 4 bytes each; then the table) and `_Py_DebugOffsets`
/// tables (the same bytes as 64-bit words).
pub fn python_tables(data: &[u8]) {
    if let [format, a, b, c, d, e, f, g, h, table @ ..] = data {
        let format = match format % 3 {
            0 => LineFormat::Lnotab,
            1 => LineFormat::Pairs,
            _ => LineFormat::Locations,
        };
        let first_line = i32::from_le_bytes([*a, *b, *c, *d]);
        let offset = u32::from_le_bytes([*e, *f, *g, *h]);
        let _ = crate::python::line_for_offset(format, table, first_line, offset);
    }
    let words: Vec<u64> = data
        .chunks_exact(8)
        .map(|w| u64::from_le_bytes(w.try_into().expect("8 bytes")))
        .collect();
    let _ = Layout::from_debug_offsets(&words);
}

/// Replays every input the fuzz targets once crashed on (kept in
/// `profiler/fuzz/regressions/TARGET/`).
#[cfg(test)]
mod regressions {
    use std::io::Write;
    use std::path::Path;

    fn inputs(target: &str) -> Vec<Vec<u8>> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../profiler/fuzz/regressions")
            .join(target);
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .map(|e| std::fs::read(e.unwrap().path()).unwrap())
            .collect()
    }

    #[test]
    fn crashes_found_by_fuzzing_stay_fixed() {
        for input in inputs("proc_maps") {
            super::proc_maps(&String::from_utf8_lossy(&input));
        }
        for input in inputs("perf_map") {
            super::perf_map(&String::from_utf8_lossy(&input));
        }
        let gopclntab = inputs("gopclntab");
        assert!(!gopclntab.is_empty(), "the regression inputs are missing");
        for input in gopclntab {
            super::gopclntab(&input);
        }
        for input in inputs("python_tables") {
            super::python_tables(&input);
        }
        for input in inputs("elf_symbols") {
            let mut file = tempfile::tempfile().unwrap();
            file.write_all(&input).unwrap();
            super::elf_symbols(&file);
        }
    }
}
