//! libFuzzer target: `smolder::fuzzing::spool_request` on raw bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    smolder::fuzzing::spool_request(data);
});
