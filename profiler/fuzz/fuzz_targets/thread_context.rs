//! libFuzzer target: `symbolizer::fuzzing::thread_context` on raw bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    symbolizer::fuzzing::thread_context(data);
});
