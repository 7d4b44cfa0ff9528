//! Go: a stripped service against Go's own CPU profile of the same run,
//! and whole stacks (frameless leaves, cgo) from binaries of each Go
//! version smolder supports, walked with the rows of their `.gopclntab`.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use crate::harness::{
    go_workload, go_workload_with, is_root, read_pprof, smolder_with_env, Recording, Running, Stack,
};

/// The Go versions tested (None: the machine's, 1.26), each fetched once
/// by the go command through the module proxy.
const TOOLCHAINS: [Option<&str>; 5] = [
    Some("go1.18.10"),
    Some("go1.20.14"),
    Some("go1.22.12"),
    Some("go1.24.11"),
    None,
];

/// testdata/gochain's chain from the goroutine's first frame: `spin` is a
/// frameless leaf (a loop over a global), so frame pointers alone lose `c`.
const CHAIN: [&str; 7] = [
    "runtime.goexit",
    "runtime.main",
    "main.main",
    "main.a",
    "main.b",
    "main.c",
    "main.spin",
];

/// testdata/gocgo's chain from Go into C.
const CGO_CHAIN: [&str; 4] = [
    "main.callC",
    "main._Cfunc_c_spin",
    "runtime.cgocall",
    "runtime.asmcgocall",
];

/// Of the samples whose user leaf `leaf` accepts: how many, and the share
/// that contain `chain` (starting at the root when `chain` starts at
/// `runtime.goexit`: no `[unwind error]` before it).
fn chain_share(stacks: &[Stack], leaf: impl Fn(&str) -> bool, chain: &[&str]) -> (u64, f64) {
    let mut total = 0;
    let mut whole = 0;
    for s in stacks {
        if s.user_leaf.as_deref().is_some_and(&leaf) {
            total += s.count;
            let rooted = chain[0] != "runtime.goexit"
                || s.user_frames.first().map(String::as_str) == Some(chain[0]);
            if s.contains(chain) && rooted {
                whole += s.count;
            }
        }
    }
    (total, whole as f64 / total.max(1) as f64)
}

/// Runs `binary ARGS` with Go's asynchronous preemption off (as the
/// runtime/pprof comparison needs), records it for 2 s once smolder
/// samples, and lets it finish.
fn record_go(binary: &std::path::Path, args: &[&str], extra: &[&str]) -> Vec<Stack> {
    let workload = Running::spawn(
        Command::new(binary)
            .args(args)
            .env("GODEBUG", "asyncpreemptoff=1"),
        Duration::ZERO,
    );
    let recording = Recording::start(workload.pid(), 2, extra);
    let (stacks, _) = recording.finish();
    let output = workload.finish();
    assert!(output.status.success(), "{}: {output:?}", binary.display());
    stacks
}

#[test]
fn go_chains_are_whole_for_every_go_version_stripped_or_not() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut report = Vec::new();
    let mut failed = false;
    for toolchain in TOOLCHAINS {
        for ldflags in ["", "-s -w"] {
            let binary = go_workload_with("gochain", toolchain, ldflags);
            let go_path = dir.path().join("go.pprof");
            let stacks = record_go(&binary, &["4", go_path.to_str().unwrap()], &[]);
            let (samples, whole) = chain_share(&stacks, |leaf| leaf == "main.spin", &CHAIN);
            // Top functions against Go's own profile of the same run.
            let (_, theirs) = read_pprof(&go_path);
            let (ours, theirs) = (flat_shares(&stacks), flat_shares(&theirs));
            let mut top: Vec<(&String, &f64)> = theirs.iter().collect();
            top.sort_by(|a, b| b.1.total_cmp(a.1));
            let worst = top
                .iter()
                .take(10)
                .map(|(f, share)| (ours.get(*f).copied().unwrap_or(0.0) - **share).abs())
                .fold(0.0f64, f64::max);
            let ok = samples >= 50 && whole >= 0.99 && worst <= 0.10;
            failed |= !ok;
            report.push(format!(
                "{:<10} {:<6} {samples:>4} samples under main.spin, {:.1}% whole; top functions within {:.1} points of runtime/pprof{}",
                toolchain.unwrap_or("local"),
                if ldflags.is_empty() { "plain" } else { "-s -w" },
                whole * 100.0,
                worst * 100.0,
                if ok { "" } else { "  <- FAILED" }
            ));
        }
    }
    let report = report.join("\n");
    eprintln!("{report}");
    assert!(!failed, "Go chains:\n{report}");
    // The same binary walked with frame pointers only loses main.c: the
    // rows are what makes the chain whole.
    let binary = go_workload_with("gochain", None, "-s -w");
    let stacks = record_go(&binary, &["4"], &["--unwind", "fp"]);
    let (samples, whole) = chain_share(&stacks, |leaf| leaf == "main.spin", &CHAIN);
    assert!(
        samples >= 50 && whole < 0.5,
        "frame pointers alone: {whole:.2} of {samples} samples whole"
    );
}

#[test]
fn cgo_calls_unwind_back_into_go_for_every_go_version() {
    if !is_root() {
        return;
    }
    let mut report = Vec::new();
    let mut failed = false;
    for toolchain in TOOLCHAINS {
        let binary = go_workload_with("gocgo", toolchain, "");
        let stacks = record_go(&binary, &["4"], &[]);
        // Go 1.18 inlines c_spin into cgo's wrapper `_cgo_HASH_Cfunc_c_spin`.
        let (samples, whole) = chain_share(&stacks, |leaf| leaf.contains("c_spin"), &CGO_CHAIN);
        let ok = samples >= 50 && whole >= 0.99;
        failed |= !ok;
        report.push(format!(
            "{:<10} {samples:>4} samples in C, {:.1}% back through runtime.asmcgocall to main.callC{}",
            toolchain.unwrap_or("local"),
            whole * 100.0,
            if ok { "" } else { "  <- FAILED" }
        ));
    }
    let report = report.join("\n");
    eprintln!("{report}");
    assert!(!failed, "cgo chains:\n{report}");
}

/// Share of samples per innermost user-space function, inlined calls
/// included (as runtime/pprof counts them).
fn flat_shares(stacks: &[Stack]) -> HashMap<String, f64> {
    let total: u64 = stacks.iter().map(|s| s.count).sum();
    let mut shares: HashMap<String, f64> = HashMap::new();
    for s in stacks {
        if let Some(leaf) = &s.user_leaf {
            *shares.entry(leaf.clone()).or_default() += s.count as f64 / total.max(1) as f64;
        }
    }
    shares
}

#[test]
fn stripped_go_top_functions_match_runtime_pprof() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = go_workload("gochain", "-s -w");
    let ours_path = dir.path().join("smolder.pb.gz");
    let go_path = dir.path().join("go.pprof");
    // Go's profiler attributes a fifth of its SIGPROF samples to
    // runtime.asyncPreempt on this VM when asynchronous preemption is on;
    // with it off, its profile shows where the code really runs.
    let output = smolder_with_env(
        &[
            "record",
            "-o",
            ours_path.to_str().unwrap(),
            "--",
            bin.to_str().unwrap(),
            "3",
            go_path.to_str().unwrap(),
        ],
        &[("GODEBUG", "asyncpreemptoff=1")],
    );
    assert!(output.status.success());
    let (_, ours) = read_pprof(&ours_path);
    let (_, theirs) = read_pprof(&go_path);
    let ours = flat_shares(&ours);
    let theirs = flat_shares(&theirs);
    let mut top: Vec<(&String, &f64)> = theirs.iter().collect();
    top.sort_by(|a, b| b.1.total_cmp(a.1));
    assert_eq!(top[0].0, "main.spin", "Go's own profile: {top:?}");
    for (function, share) in top.into_iter().take(10) {
        let mine = ours.get(function).copied().unwrap_or(0.0);
        assert!(
            (mine - share).abs() <= 0.10,
            "{function}: smolder {:.1}%, runtime/pprof {:.1}%",
            mine * 100.0,
            share * 100.0
        );
    }
}

/// testdata/golabels: (function its goroutines run, the `worker` label
/// they carry).
const LABELLED: [(&str, Option<&str>); 3] = [
    ("main.alpha", Some("alpha")),
    ("main.beta", Some("beta")),
    ("main.plain", None),
];

#[test]
fn goroutine_labels_for_every_go_version() {
    if !is_root() {
        return;
    }
    let mut report = Vec::new();
    let mut failed = false;
    for toolchain in TOOLCHAINS {
        let binary = go_workload_with("golabels", toolchain, "");
        let stacks = record_go(&binary, &["4"], &[]);
        for (function, want) in LABELLED {
            let (mut total, mut right, mut wrong) = (0, 0, 0);
            for s in stacks
                .iter()
                .filter(|s| s.frames.iter().any(|f| f == function))
            {
                total += s.count;
                let worker = s.label("worker");
                // alpha's goroutines carry a second label.
                let whole = want != Some("alpha") || s.label("tier") == Some("gold");
                if worker == want && whole {
                    right += s.count;
                } else if worker.is_some() {
                    wrong += s.count;
                }
            }
            let share = right as f64 / total.max(1) as f64;
            let ok = total >= 30 && share >= 0.95 && wrong == 0;
            failed |= !ok;
            report.push(format!(
                "{:<10} {function:<11} {total:>4} samples, {:.1}% labelled {}, {wrong} wrong{}",
                toolchain.unwrap_or("local"),
                share * 100.0,
                want.map_or("none".to_owned(), |w| format!("worker={w}")),
                if ok { "" } else { "  <- FAILED" }
            ));
        }
    }
    let report = report.join("\n");
    eprintln!("{report}");
    assert!(!failed, "goroutine labels:\n{report}");
}

/// A goroutine whose stack the runtime grew (and so moved) several times on
/// the way down is walked whole: rows depend on the stack pointer, not on
/// addresses saved in the stack.
#[test]
fn grown_goroutine_stacks_are_whole() {
    if !is_root() {
        return;
    }
    let depth = 100;
    let binary = go_workload_with("godeep", None, "");
    let stacks = record_go(&binary, &[&depth.to_string(), "4"], &[]);
    let (mut total, mut whole) = (0, 0);
    for s in stacks
        .iter()
        .filter(|s| s.user_leaf.as_deref() == Some("main.spin"))
    {
        total += s.count;
        let recursion = s
            .user_frames
            .iter()
            .filter(|f| *f == "main.recurse")
            .count();
        if recursion == depth + 1
            && s.user_frames.first().map(String::as_str) == Some("runtime.goexit")
        {
            whole += s.count;
        }
    }
    assert!(
        total >= 50 && whole as f64 >= 0.99 * total as f64,
        "{whole} of {total} samples whole through {depth} grown frames"
    );
}
