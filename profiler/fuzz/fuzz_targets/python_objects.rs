//! libFuzzer target: `symbolizer::fuzzing::python_objects`, the input written
//! to one temporary file (standing in for a process's memory).
#![no_main]

use std::io::{Seek, Write};
use std::sync::Mutex;

static FILE: Mutex<Option<std::fs::File>> = Mutex::new(None);

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut slot = FILE.lock().unwrap();
    let file = slot.get_or_insert_with(|| {
        let path = std::env::temp_dir().join(format!("smolder-fuzz-python-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let _ = std::fs::remove_file(&path);
        file
    });
    file.set_len(0).unwrap();
    file.rewind().unwrap();
    file.write_all(data).unwrap();
    symbolizer::fuzzing::python_objects(file);
});
