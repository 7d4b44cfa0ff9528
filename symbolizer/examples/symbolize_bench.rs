//! Symbolizer timing for `cargo xtask bench`:
//! `symbolize_bench ELF ADDRESS_FILE` (one hex virtual address per line).
//! Prints `cold_first_lookup_ms=`, `warm_addresses_per_s=` and `named=`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use symbolizer::{Resolution, Symbolizer, SymbolizerConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, elf, list] = args.as_slice() else {
        eprintln!("usage: symbolize_bench ELF ADDRESS_FILE");
        std::process::exit(2);
    };
    let addresses: Vec<u64> = std::fs::read_to_string(list)
        .expect("address file")
        .lines()
        .filter_map(|l| u64::from_str_radix(l.trim().trim_start_matches("0x"), 16).ok())
        .collect();
    let elf = PathBuf::from(elf);
    let mut s = Symbolizer::new(SymbolizerConfig::default());

    let cold = Instant::now();
    let first = s.symbolize_elf_file(&elf, &addresses[..1]);
    let cold = cold.elapsed();
    assert!(
        matches!(first[0], Resolution::Symbols(_)),
        "first address not named"
    );

    let named = s
        .symbolize_elf_file(&elf, &addresses)
        .iter()
        .filter(|r| matches!(r, Resolution::Symbols(_)))
        .count();
    let mut done = 0u64;
    let warm = Instant::now();
    while warm.elapsed() < Duration::from_secs(2) {
        for chunk in addresses.chunks(256) {
            s.symbolize_elf_file(&elf, chunk);
            done += chunk.len() as u64;
        }
    }
    let rate = done as f64 / warm.elapsed().as_secs_f64();
    println!("cold_first_lookup_ms={:.3}", cold.as_secs_f64() * 1e3);
    println!("warm_addresses_per_s={rate:.0}");
    println!("named={named}");
}
