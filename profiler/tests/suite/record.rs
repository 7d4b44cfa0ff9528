//! `smolder record` on real workloads.

use std::collections::HashSet;
use std::process::Command;

use crate::harness::{is_root, read_pprof, reported_samples, share, smolder, smolder_ok, workload};

const CHAIN: &[&str] = &["main", "a", "b", "c", "spin"];

#[test]
fn chain_workload_has_complete_stacks_and_go_pprof_agrees() {
    if !is_root() {
        return;
    }
    let chain = workload("chain");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("chain.pb.gz");
    let stderr = smolder_ok(&[
        "record",
        "-F",
        "99",
        "-o",
        out.to_str().unwrap(),
        "--",
        chain.to_str().unwrap(),
        "3",
    ]);
    let (profile, stacks) = read_pprof(&out);

    let total: u64 = stacks.iter().map(|s| s.count).sum();
    assert!(
        total >= 100,
        "3 s of a busy process at 99 Hz gave only {total} samples"
    );
    assert_eq!(total, reported_samples(&stderr));
    let ours: Vec<_> = stacks
        .iter()
        .filter(|s| s.comm == "chain")
        .cloned()
        .collect();
    let complete = share(&ours, |s| {
        s.contains(CHAIN) && s.frames.last().map(String::as_str) == Some("spin")
    });
    assert!(
        complete >= 0.90,
        "only {:.0}% of samples have main;a;b;c;spin",
        complete * 100.0
    );

    // pprof fields the issue names.
    let s = |i: i64| profile.string_table[i as usize].as_str();
    assert_eq!(profile.period, 1_000_000_000 / 99);
    assert_eq!(s(profile.period_type.as_ref().unwrap().r#type), "cpu");
    assert!(profile.time_nanos > 0 && profile.duration_nanos > 2_000_000_000);
    let main_mapping = profile
        .mapping
        .iter()
        .find(|m| s(m.filename).ends_with("/chain"))
        .expect("chain mapping");
    assert_eq!(
        s(main_mapping.build_id).len(),
        40,
        "build-id in the mapping"
    );
    assert!(main_mapping.memory_limit > main_mapping.memory_start);

    // An independent reader: go tool pprof.
    let top = Command::new("go")
        .args(["tool", "pprof", "-sample_index=samples", "-top"])
        .arg(&out)
        .output()
        .expect("go tool pprof");
    let text = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.status.success(),
        "go tool pprof: {}",
        String::from_utf8_lossy(&top.stderr)
    );
    let go_total: u64 = text
        .lines()
        .find_map(|l| l.split(" of ").nth(1)?.strip_suffix(" total")?.parse().ok())
        .unwrap_or_else(|| panic!("no total in go tool pprof output:\n{text}"));
    assert_eq!(go_total, total);
    assert!(text.contains("spin"));
}

#[test]
fn kernel_frames_are_named_below_the_user_stack() {
    if !is_root() {
        return;
    }
    let syscalls = workload("syscalls");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sys.pb.gz");
    smolder_ok(&[
        "record",
        "-o",
        out.to_str().unwrap(),
        "--",
        syscalls.to_str().unwrap(),
        "3",
    ]);
    let (_, stacks) = read_pprof(&out);
    // Debian's glibc `read` keeps no frame pointer, so a frame-pointer walk
    // goes from libc straight to main and skips read_zeros (DWARF unwinding
    // will restore it). The kernel part is what this test is about.
    let in_read = share(&stacks, |s| {
        let user = s.frames.iter().position(|f| f == "main");
        let kernel = s.frames.iter().position(|f| f == "vfs_read");
        matches!((user, kernel), (Some(u), Some(k)) if u < k)
    });
    assert!(
        in_read >= 0.5,
        "only {:.0}% of samples show main -> ... -> vfs_read",
        in_read * 100.0
    );
    assert!(
        stacks
            .iter()
            .all(|s| !s.frames.iter().any(|f| f.starts_with("bpf_prog_"))),
        "BPF's own frames must be dropped"
    );
}

#[test]
fn command_children_are_followed() {
    if !is_root() {
        return;
    }
    let forker = workload("forker");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("fork.pb.gz");
    smolder_ok(&[
        "record",
        "-o",
        out.to_str().unwrap(),
        "--",
        forker.to_str().unwrap(),
        "2",
    ]);
    let (_, stacks) = read_pprof(&out);
    let children: HashSet<u32> = stacks
        .iter()
        .filter(|s| s.contains(&["main", "child_work"]))
        .map(|s| s.pid)
        .collect();
    assert_eq!(
        children.len(),
        3,
        "samples from {} of 3 children",
        children.len()
    );
    let in_children = share(&stacks, |s| s.contains(&["main", "child_work"]));
    assert!(
        in_children >= 0.9,
        "{:.0}% of samples in child_work",
        in_children * 100.0
    );
}

#[test]
fn svg_and_collapsed_outputs_name_the_functions() {
    if !is_root() {
        return;
    }
    let chain = workload("chain");
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("flame.svg");
    smolder_ok(&[
        "record",
        "-o",
        svg.to_str().unwrap(),
        "--",
        chain.to_str().unwrap(),
        "1",
    ]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<?xml") && text.contains("<svg"));
    for name in CHAIN {
        assert!(
            text.contains(&format!("<title>{name} (")),
            "{name} missing from the SVG"
        );
    }

    let folded = dir.path().join("stacks.txt");
    let stderr = smolder_ok(&[
        "record",
        "-o",
        folded.to_str().unwrap(),
        "--",
        chain.to_str().unwrap(),
        "1",
    ]);
    let text = std::fs::read_to_string(&folded).unwrap();
    let mut total = 0;
    for line in text.lines() {
        let (stack, count) = line.rsplit_once(' ').expect("STACK COUNT");
        total += count.parse::<u64>().expect("count");
        assert!(stack.starts_with("chain;"), "{line}");
    }
    assert_eq!(total, reported_samples(&stderr));
    assert!(text.lines().any(|l| l.contains(";main;a;b;c;spin ")));
}

#[test]
fn process_that_exits_mid_capture_keeps_its_frames() {
    if !is_root() {
        return;
    }
    let chain = workload("chain");
    // The debug build takes most of a second to start sampling: the short
    // process must outlive that by a margin.
    let mut short = Command::new(&chain).arg("2.5").spawn().unwrap();
    let mut long = Command::new(&chain).arg("5").spawn().unwrap();
    let pids = format!("{},{}", short.id(), long.id());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("exit.pb.gz");
    // Ends by itself when both processes are gone.
    smolder_ok(&[
        "record",
        "-p",
        &pids,
        "-d",
        "20s",
        "-o",
        out.to_str().unwrap(),
    ]);
    short.wait().unwrap();
    long.wait().unwrap();
    let (_, stacks) = read_pprof(&out);
    for pid in [short.id(), long.id()] {
        let mine: Vec<_> = stacks.iter().filter(|s| s.pid == pid).cloned().collect();
        assert!(!mine.is_empty(), "no samples from pid {pid}");
        let complete = share(&mine, |s| s.contains(CHAIN));
        assert!(
            complete >= 0.9,
            "pid {pid}: {:.0}% complete",
            complete * 100.0
        );
    }
}

#[test]
fn bad_targets_and_outputs_fail_clearly() {
    if !is_root() {
        return;
    }
    let err = |args: &[&str]| {
        let o = smolder(args);
        assert!(!o.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(
        err(&["record", "-p", "999999999", "-d", "1s"]).contains("no process with pid 999999999")
    );
    let e = err(&[
        "record",
        "--all",
        "-d",
        "1s",
        "-o",
        "/nonexistent-dir/out.svg",
    ]);
    assert!(e.contains("/nonexistent-dir/out.svg"), "{e}");
    assert!(err(&["record", "-d", "1s"]).contains("say what to profile"));
    let e = err(&[
        "record",
        "-o",
        "/tmp/smolder-never.pb.gz",
        "--",
        "/nonexistent/program",
    ]);
    assert!(e.contains("cannot start `/nonexistent/program`"), "{e}");
    assert!(
        !std::path::Path::new("/tmp/smolder-never.pb.gz").exists(),
        "a failed capture leaves no empty output file behind"
    );
}

#[test]
fn ctrl_c_stops_the_capture_and_still_writes_the_profile() {
    if !is_root() {
        return;
    }
    let chain = workload("chain");
    let mut load = Command::new(&chain).arg("10").spawn().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("interrupted.pb.gz");
    let child = Command::new(env!("CARGO_BIN_EXE_smolder"))
        .args(["record", "--all", "-o", out.to_str().unwrap()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    // SAFETY: signalling a child we spawned and have not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let output = child.wait_with_output().unwrap();
    let _ = load.kill();
    let _ = load.wait();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "smolder after SIGINT: {stderr}");
    let (_, stacks) = read_pprof(&out);
    let total: u64 = stacks.iter().map(|s| s.count).sum();
    assert_eq!(total, reported_samples(&stderr));
    // --all sees other tests' workloads too: judge only our own load process.
    let mine: Vec<_> = stacks
        .iter()
        .filter(|s| s.pid == load.id())
        .cloned()
        .collect();
    assert!(!mine.is_empty(), "no samples from the busy process");
    assert!(share(&mine, |s| s.contains(CHAIN)) >= 0.9);
}

#[test]
fn unprivileged_user_gets_an_actionable_error() {
    if !is_root() {
        return;
    }
    // Drop to nobody with no capabilities, as a user without sudo would be.
    let output = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(env!("CARGO_BIN_EXE_smolder"))
        .args([
            "record",
            "--all",
            "-d",
            "1s",
            "-o",
            "/tmp/smolder-unprivileged.pb.gz",
        ])
        .output()
        .expect("setpriv (util-linux)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("smolder needs root"), "{stderr}");
    assert!(
        stderr.contains("CAP_BPF") && stderr.contains("sudo"),
        "{stderr}"
    );
}
