//! libFuzzer target: `symbolizer::fuzzing::python_objects`, the input
//! written to a temporary file standing in for a process's memory.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    smolder_fuzz::with_file(data, symbolizer::fuzzing::python_objects);
});
