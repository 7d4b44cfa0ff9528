//! libFuzzer target: `symbolizer::fuzzing::gopclntab` on raw bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    symbolizer::fuzzing::gopclntab(data);
});
