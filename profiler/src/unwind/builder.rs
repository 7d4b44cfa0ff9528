//! Builds unwind tables off the sampling thread. Parsing `.eh_frame` takes
//! about a millisecond per MiB of library (a second for a 1 GiB CUDA
//! library); the thread that drains samples must not wait for it. A worker
//! parses; finished tables are installed by [`super::UnwindTables`] on its
//! next poll, and the processes waiting for them are rewritten then.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use memmap2::Mmap;
use symbolizer::Module;

use super::table::{parse_elf, parse_mapped_elf, ElfUnwindInfo, TableError};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("file not open")]
    NotOpen,
    #[error("this process has no vDSO mapping")]
    NoVdso,
    #[error("cannot read /proc/self/maps")]
    OwnMaps(#[source] std::io::Error),
    #[error("cannot map the file")]
    Map(#[source] std::io::Error),
    #[error(transparent)]
    Table(#[from] TableError),
}

/// A table the worker finished (or could not build).
pub struct Built {
    pub module: Arc<Module>,
    pub result: Result<ElfUnwindInfo, ReadError>,
    pub took: Duration,
}

/// A build this large leaves megabytes of freed memory in the worker's
/// malloc arena (about 3x the table): give it back to the system.
const TRIM_AFTER_ROWS: usize = 100_000;

#[cfg(target_env = "gnu")]
fn release_free_memory() {
    // SAFETY: malloc_trim only releases free heap memory; no preconditions.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(target_env = "gnu"))]
fn release_free_memory() {}

pub struct Builder {
    requests: Option<Sender<Arc<Module>>>,
    results: Receiver<Built>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl Builder {
    pub fn new() -> Self {
        let (requests, inbox) = channel::<Arc<Module>>();
        let (outbox, results) = channel();
        let worker = std::thread::Builder::new()
            .name("smolder-unwind".into())
            .spawn(move || {
                for module in inbox {
                    let started = Instant::now();
                    let result = read_table(&module);
                    if result
                        .as_ref()
                        .is_ok_and(|info| info.table.rows.len() >= TRIM_AFTER_ROWS)
                    {
                        release_free_memory();
                    }
                    let built = Built {
                        module,
                        result,
                        took: started.elapsed(),
                    };
                    if outbox.send(built).is_err() {
                        return; // the tables are gone
                    }
                }
            })
            .map_err(|e| tracing::warn!("cannot start the unwind table thread: {e}"))
            .ok();
        Self {
            requests: worker.as_ref().map(|_| requests),
            results,
            worker,
        }
    }

    /// Queues a module. Returns false if no worker runs (then the caller
    /// builds in place).
    pub fn request(&self, module: Arc<Module>) -> bool {
        self.requests
            .as_ref()
            .is_some_and(|tx| tx.send(module).is_ok())
    }

    /// A finished table, if one is ready.
    pub fn try_next(&self) -> Option<Built> {
        self.results.try_recv().ok()
    }

    /// A finished table, waiting up to `timeout`.
    pub fn next_within(&self, timeout: Duration) -> Option<Built> {
        self.results.recv_timeout(timeout).ok()
    }
}

impl Drop for Builder {
    fn drop(&mut self) {
        // Closing the request channel ends the worker after its current file.
        self.requests = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Reads a module's table through its open file (deleted files and other
/// mount namespaces included).
pub fn read_table(module: &Module) -> Result<ElfUnwindInfo, ReadError> {
    let file = module.file().ok_or(ReadError::NotOpen)?;
    // SAFETY: a read-only private mapping. If the file is truncated while
    // mapped, reads past the end fault (as for every mmap-based reader,
    // blazesym included); binaries are not rewritten in place.
    let map = Arc::new(unsafe { Mmap::map(file) }.map_err(ReadError::Map)?);
    Ok(parse_mapped_elf(&map)?)
}

/// The vDSO's table, from this process's own copy: the kernel maps the same
/// image into every (64-bit) process.
pub fn read_own_vdso() -> Result<ElfUnwindInfo, ReadError> {
    // SAFETY: getauxval has no preconditions.
    let base = unsafe { libc::getauxval(libc::AT_SYSINFO_EHDR) };
    if base == 0 {
        return Err(ReadError::NoVdso);
    }
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(ReadError::OwnMaps)?;
    let len = maps
        .lines()
        .filter(|l| l.ends_with("[vdso]"))
        .find_map(|l| {
            let (start, end) = l.split_once(' ')?.0.split_once('-')?;
            let start = u64::from_str_radix(start, 16).ok()?;
            let end = u64::from_str_radix(end, 16).ok()?;
            (start == base && end > start).then_some(end - start)
        })
        .ok_or(ReadError::NoVdso)?;
    // SAFETY: [base, base + len) is this process's vDSO mapping, readable
    // and never unmapped while the process lives (/proc/self/maps says so).
    let image = unsafe { std::slice::from_raw_parts(base as *const u8, len as usize) };
    Ok(parse_elf(image)?)
}
