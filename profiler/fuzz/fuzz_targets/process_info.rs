//! libFuzzer target: `smolder::fuzzing::process_info` on raw bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    smolder::fuzzing::process_info(data);
});
