//! libFuzzer target: `smolder::fuzzing::eh_frame` on raw bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    smolder::fuzzing::eh_frame(data);
});
