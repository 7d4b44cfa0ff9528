//! A stripped Go service against Go's own CPU profile of the same run.

use std::collections::HashMap;

use crate::harness::{go_workload, is_root, read_pprof, smolder_with_env, Stack};

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
