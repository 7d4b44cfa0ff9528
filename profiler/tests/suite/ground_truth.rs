//! `perf record --call-graph dwarf` as the ground truth for native stacks:
//! perf copies the user stack at each sample and unwinds it afterwards with
//! the same `.eh_frame`, so where both unwinders are right they agree.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::harness::Stack;

const KERNEL_SPACE: u64 = 0xffff_8000_0000_0000;

/// Starts `perf record --call-graph dwarf` on `pid` for `seconds`.
pub fn start_perf(pid: u32, seconds: u32, out: &Path) -> Child {
    start_perf_copying(pid, seconds, out, 8192, 99)
}

/// The same, copying `stack_bytes` of each sample's stack (perf's default
/// is 8 KiB; deep C++ stacks need more to be walked to `main`).
pub fn start_perf_copying(pid: u32, seconds: u32, out: &Path, stack_bytes: u32, hz: u32) -> Child {
    Command::new("perf")
        .args(["record", "-q", "--call-graph"])
        .arg(format!("dwarf,{stack_bytes}"))
        .arg("-F")
        .arg(hz.to_string())
        .arg("-p")
        .arg(pid.to_string())
        .arg("-o")
        .arg(out)
        .args(["--", "sleep"])
        .arg(seconds.to_string())
        .stdout(Stdio::null())
        .spawn()
        .expect("perf (run `cargo xtask setup`)")
}

/// The user stacks of a perf.data file, root first, as function names.
pub fn perf_user_stacks(data: &Path) -> Vec<Vec<String>> {
    perf_user_stacks_with(data, &[])
}

/// The same with more `perf script` options (`--no-inline`: perf finds
/// inlined frames with addr2line, minutes for a 500 MB library).
pub fn perf_user_stacks_with(data: &Path, options: &[&str]) -> Vec<Vec<String>> {
    let output = Command::new("perf")
        .arg("script")
        .args(options)
        .args(["-F", "ip,sym", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()
        .expect("perf script");
    assert!(output.status.success(), "perf script failed");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut stacks = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for line in text.lines().chain(std::iter::once("")) {
        let line = line.trim();
        if line.is_empty() {
            if !current.is_empty() {
                current.reverse();
                stacks.push(std::mem::take(&mut current));
            }
            continue;
        }
        let (ip, symbol) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let Ok(ip) = u64::from_str_radix(ip, 16) else {
            continue;
        };
        if ip < KERNEL_SPACE {
            current.push(symbol.trim().to_owned());
        }
    }
    stacks
}

/// One frame name as both tools can agree on it: no `(inlined)`, symbol
/// version or offset; frames neither can name are `[unknown]`.
fn normalize(name: &str) -> String {
    let name = name.trim_end_matches(" (inlined)");
    // perf names PLT stubs; smolder keeps them as `module+0xoffset` (a
    // naming difference, not an unwinding one).
    if name.ends_with("@plt") {
        return "[unknown]".to_owned();
    }
    let name = name.split('@').next().unwrap_or(name);
    if name.is_empty() || name.starts_with('[') || name.contains("+0x") {
        return "[unknown]".to_owned();
    }
    name.to_owned()
}

/// The caller chain from `main` down to the leaf, normalized, with runs of
/// one function (recursion, adjacent unknown frames) collapsed: sampling
/// cannot be expected to hit every recursion depth in both tools.
pub fn caller_chain(frames: &[String]) -> Vec<String> {
    let from = frames.iter().position(|f| f == "main").unwrap_or(0);
    let mut chain: Vec<String> = Vec::new();
    for frame in &frames[from..] {
        let name = normalize(frame);
        if chain.last() != Some(&name) {
            chain.push(name);
        }
    }
    chain
}

/// How well smolder's stacks and perf's agree, as the share of each tool's
/// samples whose caller chain the other tool also saw.
#[derive(Debug)]
pub struct Agreement {
    pub smolder_in_perf: f64,
    pub perf_in_smolder: f64,
    pub smolder_samples: u64,
    pub perf_samples: u64,
}

pub fn agreement(ours: &[Stack], perf: &[Vec<String>]) -> Agreement {
    let perf_chains: HashSet<Vec<String>> = perf.iter().map(|s| caller_chain(s)).collect();
    let our_chains: HashSet<Vec<String>> =
        ours.iter().map(|s| caller_chain(&s.user_frames)).collect();
    let smolder_samples: u64 = ours.iter().map(|s| s.count).sum();
    let matched: u64 = ours
        .iter()
        .filter(|s| perf_chains.contains(&caller_chain(&s.user_frames)))
        .map(|s| s.count)
        .sum();
    let perf_matched = perf
        .iter()
        .filter(|s| our_chains.contains(&caller_chain(s)))
        .count();
    Agreement {
        smolder_in_perf: matched as f64 / smolder_samples.max(1) as f64,
        perf_in_smolder: perf_matched as f64 / perf.len().max(1) as f64,
        smolder_samples,
        perf_samples: perf.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_start_at_main_and_collapse_recursion() {
        let frames: Vec<String> = [
            "_start",
            "__libc_start_main_impl (inlined)",
            "main",
            "sort_numbers",
            "qsort_r@@GLIBC_2.2.5",
            "msort_with_tmp",
            "msort_with_tmp (inlined)",
            "libcudart.so.12+0x10c20",
            "pthread_once@plt",
            "[unknown]",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            caller_chain(&frames),
            [
                "main",
                "sort_numbers",
                "qsort_r",
                "msort_with_tmp",
                "[unknown]"
            ]
        );
    }
}
