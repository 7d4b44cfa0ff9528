//! libFuzzer target: `symbolizer::fuzzing::perf_map` on text (lossy UTF-8, as the
//! agent reads it).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    symbolizer::fuzzing::perf_map(&String::from_utf8_lossy(data));
});
