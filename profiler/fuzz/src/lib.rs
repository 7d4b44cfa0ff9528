//! What the fuzz targets share.

use std::fs::File;
use std::io::{Seek, Write};
use std::sync::Mutex;

static FILE: Mutex<Option<File>> = Mutex::new(None);

/// Runs `target` on `data` written to a temporary file (for parsers that
/// read files or stand a file in for a process's memory). The file is made
/// once per process, unlinked at once, and rewritten for each input.
pub fn with_file(data: &[u8], target: impl FnOnce(&File)) {
    let mut slot = FILE.lock().unwrap();
    let file = slot.get_or_insert_with(|| {
        let path = std::env::temp_dir().join(format!("smolder-fuzz-{}", std::process::id()));
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
    target(file);
}
