//! Off-CPU time of Python threads under the Python function that waits
//! (testdata/python/waits.py): sleeping, waiting on a lock, on a socket, and
//! for the GIL, which is labelled `gil=wait`. The GIL sits at a different
//! place in each version, so its test runs on each Debian build.

use std::collections::{HashMap, HashSet};
use std::process::Command;
use std::sync::mpsc::Receiver;

use crate::harness::{is_root, machine_python, record_pid, Running, Stack};
use crate::python::testdata;
use crate::python_versions::{chroot, root};

/// Seconds recorded; the workload runs longer, so every thread is in its
/// loop throughout.
const RECORD_SECONDS: u32 = 3;
const WORKLOAD_SECONDS: &str = "7";

/// Starts waits.py in `mode`, records it off-CPU once its threads run, and
/// returns the stacks and the tid of each named thread.
fn record_waits(mut command: Command) -> (Vec<Stack>, HashMap<String, u32>, String) {
    let (running, lines): (Running, Receiver<String>) =
        Running::until_line_with_output(&mut command, "ready");
    let tids: HashMap<String, u32> = lines
        .try_iter()
        .filter_map(|l| {
            let (name, tid) = l.split_once(' ')?;
            Some((name.to_string(), tid.parse().ok()?))
        })
        .collect();
    let (stacks, stderr) = record_pid(running.pid(), RECORD_SECONDS, &["--off-cpu"]);
    drop(running);
    (stacks, tids, stderr)
}

fn seconds<'a>(stacks: impl IntoIterator<Item = &'a Stack>) -> f64 {
    stacks.into_iter().map(|s| s.nanos as f64 / 1e9).sum()
}

/// A thread's blocked time: total, and the share under `function` and
/// labelled as a GIL wait.
struct Blocked {
    total: f64,
    in_function: f64,
    gil: f64,
}

fn blocked(stacks: &[Stack], tid: u32, function: &str) -> Blocked {
    let mine: Vec<&Stack> = stacks.iter().filter(|s| s.tid == tid).collect();
    let total = seconds(mine.iter().copied());
    let share = |hit: f64| if total > 0.0 { hit / total } else { 0.0 };
    Blocked {
        total,
        in_function: share(seconds(
            mine.iter()
                .copied()
                .filter(|s| s.frames.iter().any(|f| f == function)),
        )),
        gil: share(seconds(mine.iter().copied().filter(|s| s.gil == "wait"))),
    }
}

/// Every stack of `tid` carries the name `threading` gave the thread.
fn assert_thread_named(stacks: &[Stack], tid: u32, name: &str, python: &str) {
    let names: HashSet<&str> = stacks
        .iter()
        .filter(|s| s.tid == tid)
        .map(|s| s.thread_name.as_str())
        .collect();
    assert_eq!(
        names,
        HashSet::from([name]),
        "{python}: thread names of {name}"
    );
}

fn examples(stacks: &[Stack], tid: u32) -> Vec<String> {
    let mut mine: Vec<&Stack> = stacks.iter().filter(|s| s.tid == tid).collect();
    mine.sort_by_key(|s| std::cmp::Reverse(s.nanos));
    mine.iter()
        .take(3)
        .map(|s| {
            format!(
                "{:.3}s gil={:?} {:?}",
                s.nanos as f64 / 1e9,
                s.gil,
                s.frames
            )
        })
        .collect()
}

/// Sleeping, lock and socket waits, each under the Python function that
/// waits, with kernel frames below it, and none taken for a GIL wait.
fn waits_sit_under_their_functions(command: Command, python: &str) {
    let (stacks, tids, stderr) = record_waits(command);
    // The stacks end in the scheduler, not in smolder's own BPF program.
    let machinery = stacks.iter().find(|s| {
        s.frames
            .iter()
            .any(|f| f.starts_with("bpf_trace_run") || f.starts_with("__traceiter_"))
    });
    assert!(machinery.is_none(), "{python}: {machinery:?}");
    for (thread, function) in [
        ("sleeper", "nap"),
        ("locker", "wait_for_lock"),
        ("reader", "wait_for_socket"),
    ] {
        let tid = tids[thread];
        assert_thread_named(&stacks, tid, thread, python);
        let b = blocked(&stacks, tid, function);
        eprintln!(
            "{python} {thread}: {:.2}s blocked, {:.1}% under {function}, {:.1}% GIL",
            b.total,
            b.in_function * 100.0,
            b.gil * 100.0
        );
        assert!(
            b.total >= 0.5 * f64::from(RECORD_SECONDS),
            "{python} {thread}: only {:.2}s blocked in {RECORD_SECONDS}s\n{stderr}",
            b.total
        );
        assert!(
            b.in_function >= 0.90,
            "{python} {thread}: {:.1}% of its blocked time under {function}; e.g. {:#?}\n{stderr}",
            b.in_function * 100.0,
            examples(&stacks, tid)
        );
        assert!(
            b.gil < 0.10,
            "{python} {thread}: {:.1}% of its blocked time taken for GIL waits; e.g. {:#?}",
            b.gil * 100.0,
            examples(&stacks, tid)
        );
        let below = |s: &Stack| {
            let at = |name: &str| s.frames.iter().position(|f| f == name);
            matches!((at(function), at("schedule")), (Some(f), Some(k)) if f < k)
        };
        assert!(
            stacks.iter().filter(|s| s.tid == tid).any(below),
            "{python} {thread}: no kernel frames below {function}"
        );
    }
}

/// Two CPU-bound threads: the time each waits for the GIL is labelled
/// `gil=wait` and sits under `spin`, the function that wanted it. Their
/// stacks carry the names `threading` gave them, whole (longer than an OS
/// thread name).
fn gil_waits_are_labelled(command: Command, python: &str) {
    let (stacks, tids, stderr) = record_waits(command);
    for thread in ["spinner-thread-number-1", "spinner-thread-number-2"] {
        let tid = tids[thread];
        assert_thread_named(&stacks, tid, thread, python);
        let b = blocked(&stacks, tid, "spin");
        eprintln!(
            "{python} {thread}: {:.2}s blocked, {:.1}% under spin, {:.1}% labelled gil=wait",
            b.total,
            b.in_function * 100.0,
            b.gil * 100.0
        );
        // Two threads, one GIL: each waits about half the time.
        assert!(
            b.total >= 0.25 * f64::from(RECORD_SECONDS),
            "{python} {thread}: only {:.2}s blocked in {RECORD_SECONDS}s\n{stderr}",
            b.total
        );
        assert!(
            b.gil >= 0.90 && b.in_function >= 0.90,
            "{python} {thread}: {:.1}% labelled gil=wait, {:.1}% under spin; e.g. {:#?}\n{stderr}",
            b.gil * 100.0,
            b.in_function * 100.0,
            examples(&stacks, tid)
        );
    }
}

fn machine(mode: &str) -> Command {
    let mut command = Command::new(machine_python());
    command
        .arg(testdata("waits.py"))
        .args([WORKLOAD_SECONDS, mode]);
    command
}

fn debian(suite: &str, package: &str, mode: &str) -> Command {
    chroot(
        &root(suite, package),
        package,
        "waits.py",
        &[WORKLOAD_SECONDS, mode],
    )
}

#[test]
fn python_threads_block_under_the_function_that_waits() {
    if is_root() {
        waits_sit_under_their_functions(machine("waits"), "machine python");
    }
}

#[test]
fn python3_14_threads_block_under_the_function_that_waits() {
    if is_root() {
        waits_sit_under_their_functions(debian("sid", "python3.14", "waits"), "3.14");
    }
}

#[test]
fn gil_waits_are_labelled_in_python3_9() {
    if is_root() {
        gil_waits_are_labelled(debian("bullseye", "python3.9", "gil"), "3.9");
    }
}

#[test]
fn gil_waits_are_labelled_in_python3_11() {
    if is_root() {
        gil_waits_are_labelled(debian("bookworm", "python3.11", "gil"), "3.11");
    }
}

#[test]
fn gil_waits_are_labelled_in_python3_13() {
    if is_root() {
        gil_waits_are_labelled(debian("trixie", "python3.13", "gil"), "3.13");
    }
}

#[test]
fn gil_waits_are_labelled_in_python3_14() {
    if is_root() {
        gil_waits_are_labelled(debian("sid", "python3.14", "gil"), "3.14");
    }
}

#[test]
fn gil_waits_are_labelled_in_python3_15() {
    if is_root() {
        gil_waits_are_labelled(debian("sid", "python3.15", "gil"), "3.15");
    }
}
