//! Entry points for the fuzz targets (`profiler/fuzz/`, built with
//! `--cfg fuzzing` by `cargo xtask fuzz`): each runs one parser of outside
//! input on arbitrary bytes and uses what it returns. A panic, an overflow
//! or an endless loop is a bug; an error is the expected answer.

use std::fs::File;

use std::os::unix::fs::FileExt;

use crate::memory::ProcessMemory;
use crate::python::code::{read_code, Types};
use crate::python::{Layout, LineFormat, PythonProcess, PythonVersion, ThreadNameReader};

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
/// the rest the section; then lookups of addresses near the text start,
/// and each function's name and stack-pointer deltas.
pub fn gopclntab(data: &[u8]) {
    let Some((text, table)) = data.split_first_chunk::<8>() else {
        return;
    };
    let text = u64::from_le_bytes(*text);
    if let Ok(go) = crate::GoTable::parse(table.to_vec(), text, Vec::new()) {
        for delta in [0u64, 1, 16, 0x100, 0x1000, 0x10_0000] {
            let _ = go.lookup_frames(text.wrapping_add(delta));
        }
        // The unwind rows' source: every function's name and pcsp steps.
        let mut steps = Vec::new();
        for span in go.spans().take(1024) {
            let _ = go.span_name(&span);
            let _ = go.sp_deltas(&span, &mut steps);
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

/// An ELF file examined for the OpenTelemetry thread-context variable
/// (its TLS segment, symbols and dynamic relocations).
pub fn thread_context(data: &[u8]) {
    crate::thread_context::examine_bytes(data);
}

/// Type objects the fuzzed memory's objects must point at.
const TYPES: Types = Types {
    code: 0x100,
    unicode: 0x200,
    bytes: 0x300,
    dict: 0x400,
    long: 0x500,
};

/// A CPython process's memory, read from `file` (address N is offset N):
/// a code object at 0x40 with its strings and line table, and the thread
/// names `threading` keeps, from the interpreter list at 0x10. The first
/// byte picks the layout (3.9, 3.10, 3.11).
pub fn python_objects(file: &File) {
    let mut first = [0u8];
    let minor = match file.read_exact_at(&mut first, 0) {
        Ok(()) => [9, 10, 11][usize::from(first[0]) % 3],
        Err(_) => return,
    };
    let version = PythonVersion {
        major: 3,
        minor,
        patch: 0,
    };
    let Some(layout) = Layout::for_version(version) else {
        return;
    };
    let Ok(clone) = file.try_clone() else { return };
    let memory = ProcessMemory::from_file(clone);
    if let Ok(code) = read_code(&memory, &layout, &TYPES, 0x40) {
        for offset in [0, 2, 64, 4096] {
            let _ = crate::python::line_for_offset(
                layout.lines,
                &code.line_table,
                code.first_line,
                offset,
            );
        }
    }
    let process = PythonProcess {
        pid: 0,
        version,
        layout,
        module: "fuzz-input".into(),
        interpreters_head: 0x10,
        eval_code: Vec::new(),
        gil: None,
        types: TYPES,
    };
    let _ = ThreadNameReader::new().read(&process, &memory);
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
            super::elf_symbols(&file_of(&input));
        }
        for input in inputs("python_objects") {
            super::python_objects(&file_of(&input));
        }
        for input in inputs("thread_context") {
            super::thread_context(&input);
        }
    }

    fn file_of(data: &[u8]) -> std::fs::File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(data).unwrap();
        file
    }

    /// The python_objects target reaches a whole code object: an image
    /// laid out as CPython 3.11 lays one out is read back.
    #[test]
    fn python_objects_image_reads_back() {
        let version = super::PythonVersion {
            major: 3,
            minor: 11,
            patch: 0,
        };
        let layout = super::Layout::for_version(version).unwrap();
        let types = super::TYPES;
        let mut image = vec![0u8; 4096];
        let mut put = |at: u64, value: u64| {
            image[at as usize..at as usize + 8].copy_from_slice(&value.to_le_bytes())
        };
        let (code, name, file, table) = (0x40u64, 0x400u64, 0x500u64, 0x600u64);
        put(code + 8, types.code);
        put(code + layout.code.qualname.unwrap(), name);
        put(code + layout.code.filename, file);
        put(code + layout.code.linetable, table);
        for (at, text) in [(name, "f"), (file, "x.py")] {
            put(at + 8, types.unicode);
            put(at + 16, text.len() as u64);
            // compact (bit 5), ascii (bit 6), kind 1 (bits 2-4)
            put(at + 32, (1 << 5) | (1 << 6) | (1 << 2));
        }
        put(table + 8, types.bytes);
        put(table + 16, 0);
        image[(name + layout.ascii_size) as usize] = b'f';
        image[(file + layout.ascii_size) as usize..][..4].copy_from_slice(b"x.py");
        let memory = super::ProcessMemory::from_file(file_of(&image));
        let read = super::read_code(&memory, &layout, &types, code).unwrap();
        assert_eq!((&*read.name, &*read.file), ("f", "x.py"));
    }
}
