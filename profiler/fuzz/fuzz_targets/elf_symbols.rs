//! libFuzzer target: `symbolizer::fuzzing::elf_symbols`, the input written
//! to a temporary file (the index reads files, not memory).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    smolder_fuzz::with_file(data, symbolizer::fuzzing::elf_symbols);
});
