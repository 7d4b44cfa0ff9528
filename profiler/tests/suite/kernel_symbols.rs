//! The BPF kernel-symbol lookup against /proc/kallsyms, on real addresses.

use std::collections::HashMap;

use smolder::collect::BpfKernelSymbols;
use symbolizer::{Kallsyms, KernelSymbolSource};

use crate::harness::is_root;

#[test]
fn bpf_lookup_agrees_with_kallsyms() {
    if !is_root() {
        return;
    }
    let text = std::fs::read_to_string("/proc/kallsyms").unwrap();
    // Every name at each core-kernel text address (aliases share addresses).
    let mut names: HashMap<u64, Vec<String>> = HashMap::new();
    for line in text.lines() {
        let p: Vec<&str> = line.split_whitespace().collect();
        if p.len() == 3 && matches!(p[1], "t" | "T") {
            let address = u64::from_str_radix(p[0], 16).unwrap();
            names.entry(address).or_default().push(p[2].to_owned());
        }
    }
    let mut addresses: Vec<u64> = names.keys().copied().collect();
    addresses.sort_unstable();
    let step = (addresses.len() / 500).max(1);
    let sample: Vec<u64> = addresses.iter().step_by(step).map(|a| a + 1).collect();

    let mut bpf = BpfKernelSymbols::load().expect("ksym.bpf.o loads");
    let ours = bpf.lookup(&sample).unwrap();
    let truth = Kallsyms::new("/proc/kallsyms").lookup(&sample).unwrap();
    assert_eq!(ours.len(), sample.len());
    let agree = ours
        .iter()
        .zip(&truth)
        .zip(&sample)
        .filter(|((o, t), a)| match (o, t) {
            (Some(o), Some(_)) => names[&(*a - 1)].contains(&o.name),
            _ => false,
        })
        .count();
    assert!(
        agree * 100 >= sample.len() * 99,
        "only {agree} of {} addresses agree with kallsyms",
        sample.len()
    );
}
