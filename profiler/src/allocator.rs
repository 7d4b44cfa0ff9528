//! How glibc's allocator is set up for a long-running profiler.
//!
//! By default glibc raises its mmap threshold each time a large block that
//! came from mmap is freed (up to 32 MiB), so after one unwind table build
//! or symbol index (tens of MiB, briefly) every later large block comes
//! from the heap and stays in the process when freed. It also gives each
//! thread its own arena. Both grow RSS well past what is in use: a fixed
//! threshold sends large blocks back to the system when freed, and two
//! arenas are enough for smolder's few threads.

#[cfg(target_env = "gnu")]
pub fn configure() {
    // SAFETY: mallopt only changes allocator parameters; called before
    // any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(target_env = "gnu"))]
pub fn configure() {}

/// Bytes the allocator has handed out and not yet had back (heap chunks
/// in use plus blocks from mmap): what the program holds, without the
/// free memory the allocator keeps, which RSS counts too.
#[cfg(target_env = "gnu")]
pub fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let info = unsafe { libc::mallinfo2() };
    (info.uordblks + info.hblkhd) as u64
}

#[cfg(not(target_env = "gnu"))]
pub fn heap_in_use() -> u64 {
    0
}
