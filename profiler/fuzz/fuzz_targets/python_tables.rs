//! libFuzzer target: `symbolizer::fuzzing::python_tables` on raw bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    symbolizer::fuzzing::python_tables(data);
});
