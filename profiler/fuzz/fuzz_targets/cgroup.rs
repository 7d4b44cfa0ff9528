//! libFuzzer target: `smolder::fuzzing::cgroup` on text (lossy UTF-8, as the
//! agent reads it).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    smolder::fuzzing::cgroup(&String::from_utf8_lossy(data));
});
