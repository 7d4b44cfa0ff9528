//! Time and memory to build unwind tables, for `cargo xtask bench`: for each
//! ELF file given, prints
//! `table file=PATH bytes=N rows=N kernel_bytes=N build_ms=F peak_rss_delta_kib=N
//! code_without_cfi_bytes=N` (the best of 3 builds; peak RSS growth of the
//! first, the file's pages the build touched included: the file is mapped,
//! as the profiler maps it), or `table file=PATH error="..."` for a file without a table.

use std::time::Instant;

use smolder::unwind::{parse_mapped_elf, PAGE_SIZE, ROW_SIZE};

fn peak_rss_kib() -> u64 {
    // SAFETY: getrusage fills a zeroed plain-data struct for this process.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    usage.ru_maxrss as u64
}

fn main() {
    for path in std::env::args().skip(1) {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: read-only private mapping of a file nobody rewrites during the bench.
        let data = std::sync::Arc::new(
            unsafe { memmap2::Mmap::map(&file) }.unwrap_or_else(|e| panic!("{path}: {e}")),
        );
        let before = peak_rss_kib();
        let mut best = f64::INFINITY;
        let mut rows = 0;
        let mut kernel_bytes = 0;
        let mut rss_delta = 0;
        let mut code_bytes = 0;
        if let Err(e) = parse_mapped_elf(&data) {
            // Files without CFI are left to frame pointers by the profiler.
            println!("table file={path} error=\"{e}\"");
            continue;
        }
        for round in 0..3 {
            let start = Instant::now();
            let Ok(info) = parse_mapped_elf(&data) else {
                continue;
            };
            best = best.min(start.elapsed().as_secs_f64() * 1e3);
            rows = info.table.rows.len();
            kernel_bytes = rows * ROW_SIZE + info.table.pages.len() * PAGE_SIZE;
            code_bytes = info.table.code_rules.bytes;
            if round == 0 {
                rss_delta = peak_rss_kib().saturating_sub(before);
            }
        }
        println!(
            "table file={path} bytes={} rows={rows} kernel_bytes={} build_ms={best:.2} peak_rss_delta_kib={rss_delta} code_without_cfi_bytes={code_bytes}",
            data.len(),
            kernel_bytes
        );
    }
}
