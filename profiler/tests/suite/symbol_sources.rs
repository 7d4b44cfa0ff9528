//! Symbol sources end to end: JIT code named by a real perf-map producer
//! (Node.js), and a binary that exists only inside another mount namespace.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{is_root, read_pprof, share, smolder_ok, workload};

#[test]
fn node_perf_map_names_javascript_functions() {
    if !is_root() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/busy.js");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("node.pb.gz");
    // --perf-basic-prof also writes a V8 log, by default into the working
    // directory: keep it in the temporary one.
    let logfile = format!("--logfile={}", dir.path().join("v8.log").display());
    smolder_ok(&[
        "record",
        "-o",
        out.to_str().unwrap(),
        "--",
        "node",
        "--perf-basic-prof",
        "--no-logfile-per-isolate",
        &logfile,
        script.to_str().unwrap(),
        "3",
    ]);
    let (_, stacks) = read_pprof(&out);
    let in_js = share(&stacks, |s| {
        s.frames
            .iter()
            .any(|f| f.starts_with("JS:") && f.contains("busyLoop"))
    });
    assert!(
        in_js >= 0.5,
        "only {:.0}% of samples name the JIT-compiled busyLoop",
        in_js * 100.0
    );
}

#[test]
fn binary_in_another_mount_namespace_resolves() {
    if !is_root() {
        return;
    }
    let chain = workload("chain");
    // The mount point exists on the host but stays empty there: the binary
    // lives on a tmpfs mounted only inside the new mount namespace.
    let mount_point = tempfile::tempdir().unwrap();
    let inner = mount_point.path().join("chain");
    let script = format!(
        "mount -t tmpfs none {mp} && cp {chain} {inner} && exec {inner} 4",
        mp = mount_point.path().display(),
        chain = chain.display(),
        inner = inner.display()
    );
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdout(Stdio::null())
        .spawn()
        .expect("unshare (util-linux)");
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim() != "chain")
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "the namespaced workload did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !inner.exists(),
        "the binary must not be visible from the host"
    );
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir
        .path()
        .join("ns-chain.pb.gz")
        .to_str()
        .unwrap()
        .to_owned();
    smolder_ok(&["record", "-p", &pid.to_string(), "-d", "2s", "-o", &out]);
    let _ = child.kill();
    let _ = child.wait();
    let (profile, stacks) = read_pprof(Path::new(&out));
    let complete = share(&stacks, |s| s.contains(&["main", "a", "b", "c", "spin"]));
    assert!(
        complete >= 0.9,
        "only {:.0}% complete stacks",
        complete * 100.0
    );
    let s = |i: i64| profile.string_table[i as usize].as_str();
    assert!(
        profile
            .mapping
            .iter()
            .any(|m| s(m.filename) == inner.to_str().unwrap()),
        "the mapping keeps the path the process sees"
    );
}
