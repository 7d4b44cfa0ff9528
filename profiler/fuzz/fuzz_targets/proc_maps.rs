//! libFuzzer target: `symbolizer::fuzzing::proc_maps` on text (lossy UTF-8, as the
//! agent reads it).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    symbolizer::fuzzing::proc_maps(&String::from_utf8_lossy(data));
});
