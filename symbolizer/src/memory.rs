//! Reads from another process's memory (`/proc/PID/mem`, positioned reads).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// An open handle on a process's memory. It stays valid while the process
/// lives; after an exec or exit reads fail.
#[derive(Debug)]
pub struct ProcessMemory {
    file: File,
}

impl ProcessMemory {
    pub fn open(pid: u32) -> io::Result<Self> {
        Ok(Self {
            file: File::open(format!("/proc/{pid}/mem"))?,
        })
    }

    /// A file standing in for a process's memory (the fuzz targets and
    /// tests): address N is file offset N.
    #[cfg(any(fuzzing, test))]
    pub(crate) fn from_file(file: File) -> Self {
        Self { file }
    }

    /// Fills `buf` from `address`; a short read is an error.
    pub fn read(&self, address: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, address)
    }

    pub fn u64(&self, address: u64) -> io::Result<u64> {
        let mut b = [0; 8];
        self.read(address, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    pub fn i32(&self, address: u64) -> io::Result<i32> {
        let mut b = [0; 4];
        self.read(address, &mut b)?;
        Ok(i32::from_le_bytes(b))
    }

    pub fn u32(&self, address: u64) -> io::Result<u32> {
        let mut b = [0; 4];
        self.read(address, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// `len` bytes at `address`.
    pub fn bytes(&self, address: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.read(address, &mut buf)?;
        Ok(buf)
    }
}
