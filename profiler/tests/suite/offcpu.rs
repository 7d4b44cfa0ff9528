//! `smolder record --off-cpu` on testdata/offcpu.c: each blocking thread's
//! time in its own function, totals against the thread's own clocks, and
//! agreement with libbpf-tools' offcputime.

use std::collections::HashMap;
use std::process::{Command, Stdio};

use crate::harness::{is_root, read_pprof, smolder, workload, Stack};

const BLOCKING: [(&str, &str); 3] = [
    ("sleeper", "sleep_here"),
    ("reader", "read_here"),
    ("locker", "lock_here"),
];

/// `name tid wall_ns cpu_ns` lines the workload prints at exit.
fn thread_clocks(stdout: &str) -> HashMap<String, (u32, f64, f64)> {
    stdout
        .lines()
        .filter_map(|l| {
            let p: Vec<&str> = l.split_whitespace().collect();
            match p.as_slice() {
                [name, tid, wall, cpu] => Some((
                    name.to_string(),
                    (
                        tid.parse().ok()?,
                        wall.parse::<f64>().ok()? / 1e9,
                        cpu.parse::<f64>().ok()? / 1e9,
                    ),
                )),
                _ => None,
            }
        })
        .collect()
}

fn seconds(stacks: &[&Stack]) -> f64 {
    stacks.iter().map(|s| s.nanos as f64 / 1e9).sum()
}

#[test]
fn blocked_time_lands_in_each_threads_own_function() {
    if !is_root() {
        return;
    }
    let bin = workload("offcpu");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("off.pb.gz");
    let output = smolder(&[
        "record",
        "--off-cpu",
        "-o",
        out.to_str().unwrap(),
        "--",
        bin.to_str().unwrap(),
        "3",
    ]);
    assert!(output.status.success());
    let clocks = thread_clocks(&String::from_utf8_lossy(&output.stdout));
    let (profile, stacks) = read_pprof(&out);
    let s = |i: i64| profile.string_table[i as usize].as_str();
    assert_eq!(s(profile.sample_type[1].r#type), "offcpu");
    assert_eq!(s(profile.sample_type[1].unit), "nanoseconds");

    for (thread, function) in BLOCKING {
        let (tid, wall, cpu) = clocks[thread];
        let mine: Vec<&Stack> = stacks.iter().filter(|s| s.tid == tid).collect();
        assert!(
            mine.iter().all(|s| s.thread_name == thread),
            "{thread}: thread_name label"
        );
        let total = seconds(&mine);
        let expected = wall - cpu;
        assert!(
            (total - expected).abs() <= 0.10 * expected,
            "{thread}: {total:.3}s off-CPU, wall - CPU = {expected:.3}s"
        );
        let inside: Vec<&Stack> = mine
            .iter()
            .copied()
            .filter(|s| s.frames.iter().any(|f| f == function))
            .collect();
        let share = seconds(&inside) / total;
        assert!(
            share >= 0.90,
            "{thread}: only {:.0}% of its off-CPU time in {function}",
            share * 100.0
        );
        // Kernel frames say why: the stack goes on below the user function.
        assert!(
            inside
                .iter()
                .any(|s| s.frames.iter().any(|f| f == "schedule")),
            "{thread}: kernel frames"
        );
    }
    let (tid, wall, _) = clocks["computer"];
    let computing = seconds(&stacks.iter().filter(|s| s.tid == tid).collect::<Vec<_>>());
    assert!(
        computing < 0.05 * wall,
        "the computing thread shows {computing:.3}s off-CPU"
    );
}

/// Microseconds per function from offcputime's output: blocks of frames,
/// a `- comm (pid)` line, then the total.
fn offcputime_totals(text: &str, functions: &[&str]) -> HashMap<String, f64> {
    let mut totals: HashMap<String, f64> = HashMap::new();
    let mut frames: Vec<&str> = Vec::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            frames.clear();
        } else if let Ok(us) = trimmed.parse::<f64>() {
            for f in functions {
                if frames.contains(f) {
                    *totals.entry(f.to_string()).or_default() += us;
                }
            }
            frames.clear();
        } else {
            frames.push(trimmed);
        }
    }
    totals
}

#[test]
fn per_function_totals_agree_with_offcputime() {
    if !is_root() {
        return;
    }
    let bin = workload("offcpu");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("off.pb.gz");
    let mut target = Command::new(&bin)
        .arg("6")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = target.id().to_string();
    // Both trace the same 3 s window. offcputime reads symbols only when it
    // ends, so it must end while the process still lives.
    let peer = Command::new("/usr/sbin/offcputime")
        .args(["-p", &pid, "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("offcputime (libbpf-tools)");
    let ours = smolder(&[
        "record",
        "--off-cpu",
        "-p",
        &pid,
        "-d",
        "3s",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(ours.status.success());
    let peer = peer.wait_with_output().unwrap();
    target.wait().unwrap();
    let functions = ["sleep_here", "read_here", "lock_here"];
    let text = String::from_utf8_lossy(&peer.stdout);
    let theirs = offcputime_totals(&text, &functions);
    let (_, stacks) = read_pprof(&out);
    for f in functions {
        let ours: f64 = stacks
            .iter()
            .filter(|s| s.frames.iter().any(|x| x == f))
            .map(|s| s.nanos as f64 / 1e3)
            .sum();
        let theirs = theirs.get(f).copied().unwrap_or(0.0);
        assert!(
            theirs > 1e6,
            "offcputime saw only {theirs} us in {f}:\n{text}"
        );
        let diff = (ours - theirs).abs() / theirs;
        assert!(
            diff <= 0.15,
            "{f}: smolder {ours:.0} us, offcputime {theirs:.0} us ({:.0}% apart)",
            diff * 100.0
        );
    }
}

#[test]
fn on_and_off_cpu_together_write_two_profiles() {
    if !is_root() {
        return;
    }
    let bin = workload("offcpu");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("both.folded");
    let output = smolder(&[
        "record",
        "--on-cpu",
        "--off-cpu",
        "-o",
        out.to_str().unwrap(),
        "--",
        bin.to_str().unwrap(),
        "2",
    ]);
    assert!(output.status.success());
    let on = std::fs::read_to_string(&out).unwrap();
    let off = std::fs::read_to_string(dir.path().join("both.offcpu.folded")).unwrap();
    let weight = |text: &str, function: &str| -> u64 {
        text.lines()
            .filter(|l| {
                l.contains(&format!(";{function};")) || l.contains(&format!(";{function} "))
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
            .sum()
    };
    assert!(
        weight(&on, "compute_here") > 0,
        "on-CPU profile has the computing thread"
    );
    assert!(
        weight(&off, "sleep_here") > 1_000_000,
        "off-CPU profile has over 1 s (in us) of sleep_here"
    );
    assert_eq!(
        weight(&off, "compute_here"),
        0,
        "a thread that never blocks is not off-CPU"
    );
}
