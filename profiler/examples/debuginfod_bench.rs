//! Cost of a debuginfod cache hit, for `cargo xtask bench`: the path every
//! symbolization of an already-fetched binary takes. Prints `cache_hit_ns=`.

use std::time::{Duration, Instant};

use smolder::debuginfod::{Debuginfod, DebuginfodConfig};
use symbolizer::{BuildId, DebugInfoSource};

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let build_id = BuildId((0u8..20).collect());
    std::fs::write(dir.path().join(format!("{build_id}.debug")), b"\x7fELF").expect("cache file");
    let mut client = Debuginfod::new(DebuginfodConfig {
        // Never contacted: every lookup is a cache hit.
        urls: vec!["http://127.0.0.1:9".into()],
        cache_dir: dir.path().to_owned(),
        max_cache_bytes: 1 << 20,
        timeout: Duration::from_secs(1),
    })
    .expect("client");
    let rounds = 20_000u32;
    let start = Instant::now();
    for _ in 0..rounds {
        assert!(client.debug_file(&build_id).is_some());
    }
    println!(
        "cache_hit_ns={:.0}",
        start.elapsed().as_nanos() as f64 / f64::from(rounds)
    );
}
