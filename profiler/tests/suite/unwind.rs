//! DWARF unwinding in BPF on code without frame pointers: a GCC-built chain
//! with a frameless leaf, glibc (qsort, memcpy, strlen), and the CUDA runtime
//! from PyPI; checked against `perf record --call-graph dwarf`.

use std::path::Path;
use std::process::Command;

use crate::ground_truth::{agreement, perf_user_stacks, start_perf};
use crate::harness::{
    is_root, libcudart, read_pprof, record_pid, share, smolder_ok, workload_without_frame_pointers,
    Running, Stack,
};

const NOFP_CHAIN: &[&str] = &[
    "main", "chain1", "chain2", "chain3", "chain4", "chain5", "chain6", "chain7", "leaf",
];

/// Starts a native workload and lets it reach its loop.
fn start(binary: &Path, args: &[&str]) -> Running {
    Running::spawn(
        Command::new(binary).args(args),
        std::time::Duration::from_millis(300),
    )
}

/// `smolder record -p PID` for `seconds`; the workload's stacks and stderr.
fn record(pid: u32, seconds: u32, extra: &[&str]) -> (Vec<Stack>, String) {
    record_pid(pid, seconds, extra)
}

fn total(stacks: &[Stack]) -> u64 {
    stacks.iter().map(|s| s.count).sum()
}

fn reaches_start(s: &Stack) -> bool {
    s.user_frames.first().map(String::as_str) == Some("_start")
}

#[test]
fn frameless_gcc_chain_is_complete_with_dwarf_and_broken_with_frame_pointers() {
    if !is_root() {
        return;
    }
    let binary = workload_without_frame_pointers("nofp_chain");
    let running = start(&binary, &["8"]);
    let (dwarf, stderr) = record(running.pid(), 3, &[]);
    assert!(total(&dwarf) >= 150, "only {} samples", total(&dwarf));
    let complete = share(&dwarf, |s| {
        s.contains(NOFP_CHAIN) && s.user_leaf.as_deref() == Some("leaf") && reaches_start(s)
    });
    assert!(
        complete >= 0.95,
        "{:.1}% of samples have _start..main;chain1..chain7;leaf\n{}",
        complete * 100.0,
        stderr
    );
    assert!(stderr.contains(" 0 unwind errors"), "{stderr}");

    // The same process with frame pointers only: the frameless leaf hides
    // its caller and the chain above it is garbage. This is what the DWARF
    // unwinder is for; if this ever passes, the workload no longer tests it.
    let (fp, _) = record(running.pid(), 2, &["--unwind", "fp"]);
    let fp_complete = share(&fp, |s| s.contains(NOFP_CHAIN));
    assert!(
        fp_complete < 0.5,
        "frame pointers alone walked {:.0}% of the chain: the workload has frame pointers?",
        fp_complete * 100.0
    );
}

#[test]
fn stacks_pass_through_glibc_back_to_main() {
    if !is_root() {
        return;
    }
    let binary = workload_without_frame_pointers("libc_work");
    let running = start(&binary, &["6"]);
    let (stacks, stderr) = record(running.pid(), 4, &[]);
    assert!(total(&stacks) >= 200, "only {} samples", total(&stacks));
    let sorting: Vec<Stack> = stacks
        .iter()
        .filter(|s| s.user_frames.iter().any(|f| f == "compare_ints"))
        .cloned()
        .collect();
    assert!(
        total(&sorting) >= 10,
        "few samples in the qsort callback\n{stderr}"
    );
    let through_qsort = share(&sorting, |s| {
        s.contains(&["main", "sort_numbers"])
            && s.user_frames.iter().any(|f| f.contains("qsort"))
            && reaches_start(s)
    });
    assert!(
        through_qsort >= 0.95,
        "{:.1}% of compare_ints samples pass qsort back to main",
        through_qsort * 100.0
    );
    // glibc's merge sort calls memcpy too: either caller is right. The
    // vDSO (clock_gettime) has no file: its table and names come from
    // smolder's own copy.
    for (leaf, callers) in [
        ("memcpy", &["copy_bytes", "sort_numbers"][..]),
        ("strlen", &["measure_strings"][..]),
        ("__vdso_clock_gettime", &["read_clocks"][..]),
    ] {
        let inside: Vec<Stack> = stacks
            .iter()
            .filter(|s| s.user_leaf.as_deref().is_some_and(|l| l.contains(leaf)))
            .cloned()
            .collect();
        assert!(total(&inside) >= 5, "few samples in {leaf}\n{stderr}");
        let reach = share(&inside, |s| {
            callers.iter().any(|c| s.contains(&["main", c])) && reaches_start(s)
        });
        assert!(
            reach >= 0.95,
            "{:.1}% of {leaf} samples reach main through {callers:?}",
            reach * 100.0
        );
    }
    let everything = share(&stacks, reaches_start);
    assert!(
        everything >= 0.95,
        "{:.1}% reach _start",
        everything * 100.0
    );
}

#[test]
fn libcudart_frames_are_named_and_reach_main() {
    if !is_root() {
        return;
    }
    let cudart = libcudart();
    let binary = workload_without_frame_pointers("cudart_loop");
    let running = start(&binary, &[cudart.to_str().unwrap(), "6"]);
    let (stacks, stderr) = record(running.pid(), 4, &[]);
    let is_cudart = |f: &String| f.starts_with("cuda") || f.starts_with("libcudart.so");
    let inside: Vec<Stack> = stacks
        .iter()
        .filter(|s| s.user_frames.iter().any(is_cudart))
        .cloned()
        .collect();
    assert!(
        total(&inside) * 2 >= total(&stacks),
        "only {} of {} samples inside libcudart\n{stderr}",
        total(&inside),
        total(&stacks)
    );
    // The outermost libcudart frame is the API function the program called,
    // named from .dynsym; below it, unexported code keeps libcudart+0xOFFSET.
    let named = share(&inside, |s| {
        s.user_frames
            .iter()
            .find(|f| is_cudart(f))
            .is_some_and(|f| f.starts_with("cuda"))
    });
    assert!(
        named >= 0.95,
        "{:.1}% enter libcudart through a named API",
        named * 100.0
    );
    let reach = share(&inside, |s| {
        s.contains(&["main", "call_cuda_runtime"]) && reaches_start(s)
    });
    assert!(
        reach >= 0.95,
        "{:.1}% of libcudart samples reach main\n{stderr}",
        reach * 100.0
    );
}

/// Off-CPU stacks are walked with the same tables at each context switch:
/// each blocked thread's time sits under its full chain, through glibc's
/// frame-pointer-less wrappers, down from `clone3`.
#[test]
fn off_cpu_stacks_without_frame_pointers_are_complete() {
    if !is_root() {
        return;
    }
    let binary = workload_without_frame_pointers("offcpu");
    let running = start(&binary, &["6"]);
    let blocked = |extra: &[&str]| {
        let mut args = vec!["--off-cpu"];
        args.extend_from_slice(extra);
        record(running.pid(), 3, &args).0
    };
    let chains: [&[&str]; 3] = [
        &["start_thread", "sleeper", "sleep_here", "call_nanosleep"],
        &["start_thread", "reader", "read_here", "call_read"],
        &["start_thread", "locker", "lock_here", "call_lock"],
    ];
    let by_time = |stacks: &[Stack], chain: &[&str]| -> f64 {
        let thread = chain[1];
        let mine: Vec<&Stack> = stacks.iter().filter(|s| s.thread_name == thread).collect();
        let all: u64 = mine.iter().map(|s| s.nanos).sum();
        let whole: u64 = mine
            .iter()
            .filter(|s| {
                s.contains(chain) && s.user_frames.first().map(String::as_str) == Some("clone3")
            })
            .map(|s| s.nanos)
            .sum();
        whole as f64 / all.max(1) as f64
    };
    let dwarf = blocked(&[]);
    for chain in chains {
        let complete = by_time(&dwarf, chain);
        assert!(
            complete >= 0.95,
            "{:.1}% of {}'s blocked time has clone3;{}",
            complete * 100.0,
            chain[1],
            chain.join(";")
        );
    }
    // Frame pointers alone lose the frame that calls into glibc.
    let fp = blocked(&["--unwind", "fp"]);
    let sleeper = by_time(&fp, chains[0]);
    assert!(
        sleeper < 0.5,
        "frame pointers alone walked {:.0}% of the sleeper's chain",
        sleeper * 100.0
    );
}

/// Tables are shared by build-id: a second copy of a binary (another file,
/// as in another container's image) adds no table, and is unwound whole.
#[test]
fn identical_copies_share_one_table() {
    if !is_root() {
        return;
    }
    let binary = workload_without_frame_pointers("nofp_chain");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("nofp_chain");
    std::fs::copy(&binary, &copy).unwrap();
    let first = start(&binary, &["6"]);
    let second = start(&copy, &["6"]);
    let tables = |stderr: &str| -> u64 {
        stderr
            .lines()
            .find_map(|l| {
                l.split(" truncated; ")
                    .nth(1)?
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            })
            .expect("unwind summary line")
    };
    let (_, one) = record(first.pid(), 1, &[]);
    let pids = format!("{},{}", first.pid(), second.pid());
    let out = dir.path().join("both.pb.gz");
    let both = smolder_ok(&[
        "record",
        "-p",
        &pids,
        "-d",
        "2s",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(tables(&both), tables(&one), "a copy added a table:\n{both}");
    let (_, stacks) = read_pprof(&out);
    let copy_stacks: Vec<Stack> = stacks
        .into_iter()
        .filter(|s| s.pid == second.pid())
        .collect();
    let whole = share(&copy_stacks, |s| s.contains(NOFP_CHAIN) && reaches_start(s));
    assert!(
        whole >= 0.95,
        "{:.1}% of the copy's samples whole",
        whole * 100.0
    );
}

/// PyTorch stacks run past 100 frames: those fit, and deeper ones end in a
/// visible `[truncated]` root, counted in the summary.
#[test]
fn deep_stacks_fit_or_are_visibly_truncated() {
    if !is_root() {
        return;
    }
    let binary = workload_without_frame_pointers("deep_stack");
    let fits = start(&binary, &["110", "5"]);
    let (stacks, stderr) = record(fits.pid(), 2, &[]);
    let complete = share(&stacks, |s| {
        reaches_start(s) && s.user_frames.iter().filter(|f| *f == "recurse").count() == 111
    });
    assert!(
        complete >= 0.95,
        "{:.1}% complete at 111 frames\n{stderr}",
        complete * 100.0
    );
    drop(fits);

    let too_deep = start(&binary, &["300", "5"]);
    let (stacks, stderr) = record(too_deep.pid(), 2, &[]);
    let marked = share(&stacks, |s| {
        s.user_frames.first().map(String::as_str) == Some("[truncated]")
            && s.user_leaf.as_deref() == Some("spin")
    });
    assert!(
        marked >= 0.95,
        "{:.1}% marked [truncated]\n{stderr}",
        marked * 100.0
    );
    let counted: u64 = stderr
        .lines()
        .find_map(|l| {
            l.split(" unwind errors, ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .expect("unwind summary line");
    assert!(
        counted >= total(&stacks) * 95 / 100,
        "{counted} truncated counted\n{stderr}"
    );
}

/// Tables follow processes smolder did not see at start: a command it
/// starts, and a library that process dlopen()s two seconds later (its first
/// stacks there leave the known mappings; the process is read again).
#[test]
fn tables_follow_new_processes_and_late_dlopen() {
    if !is_root() {
        return;
    }
    let cudart = libcudart();
    let binary = workload_without_frame_pointers("cudart_loop");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("late.pb.gz");
    let stderr = smolder_ok(&[
        "record",
        "-o",
        out.to_str().unwrap(),
        "--",
        binary.to_str().unwrap(),
        cudart.to_str().unwrap(),
        "3",
        "2",
    ]);
    let (_, stacks) = read_pprof(&out);
    let before: Vec<Stack> = stacks
        .iter()
        .filter(|s| s.user_leaf.as_deref() == Some("before_dlopen"))
        .cloned()
        .collect();
    let after: Vec<Stack> = stacks
        .iter()
        .filter(|s| s.user_frames.iter().any(|f| f == "call_cuda_runtime"))
        .cloned()
        .collect();
    assert!(
        total(&before) >= 100 && total(&after) >= 150,
        "{} samples before dlopen, {} after\n{stderr}",
        total(&before),
        total(&after)
    );
    // Tables for a new process arrive within a drain or two of its first
    // sample, and for the library within a second of its first use.
    let started = share(&before, reaches_start);
    assert!(
        started >= 0.85,
        "{:.1}% before dlopen reach _start",
        started * 100.0
    );
    let reached = share(&after, |s| {
        s.contains(&["main", "call_cuda_runtime"]) && reaches_start(s)
    });
    assert!(
        reached >= 0.90,
        "{:.1}% of samples after dlopen reach main\n{stderr}",
        reached * 100.0
    );
}

/// smolder and `perf record --call-graph dwarf` sample the same processes
/// at the same time; their caller chains (main down to the leaf) must agree
/// for at least 95% of samples, both ways.
#[test]
fn dwarf_stacks_agree_with_perf() {
    if !is_root() {
        return;
    }
    let cudart = libcudart();
    let cases: [(&str, Vec<&str>); 3] = [
        ("nofp_chain", vec!["7"]),
        ("libc_work", vec!["7"]),
        ("cudart_loop", vec![cudart.to_str().unwrap(), "7"]),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (name, args) in cases {
        let binary = workload_without_frame_pointers(name);
        let running = start(&binary, &args);
        let data = dir.path().join(format!("{name}.perf.data"));
        let mut perf = start_perf(running.pid(), 4, &data);
        let (ours, _) = record(running.pid(), 4, &[]);
        assert!(perf.wait().unwrap().success(), "perf record failed");
        let theirs = perf_user_stacks(&data);
        let agreed = agreement(&ours, &theirs);
        eprintln!("{name}: {agreed:?}");
        assert!(
            agreed.smolder_samples >= 150 && agreed.perf_samples >= 150,
            "{name}: too few samples: {agreed:?}"
        );
        assert!(
            agreed.smolder_in_perf >= 0.95 && agreed.perf_in_smolder >= 0.95,
            "{name}: caller chains disagree with perf: {agreed:?}"
        );
    }
}
