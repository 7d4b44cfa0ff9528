//! CUDA launches and waits, probed in NVIDIA's own libcudart (the PyPI
//! wheel) with no GPU: the runtime loads without a driver and its calls fail
//! at once, but the probes at their entry and return fire all the same. The
//! workloads launch known host functions a known number of times from known
//! chains (testdata/cuda_launches.c, testdata/python/cuda_launches.py).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::agent::{one_service_config, Agent};
use crate::harness::{
    is_root, libcudart, machine_python, read_pprof, workload_without_frame_pointers, Recording,
    Running, Stack,
};
use crate::pyroscope::{now_ms, Pyroscope};

const ALPHA: u64 = 3000;
const BETA: u64 = 1500;
const SYNCS: u64 = 100;

/// Launches (or calls) counted under stacks whose leaf is `leaf`.
fn count_at(stacks: &[Stack], leaf: &str) -> u64 {
    stacks
        .iter()
        .filter(|s| s.frames.last().is_some_and(|f| f == leaf))
        .map(|s| s.count)
        .sum()
}

/// The share of the count at `leaf` whose stack holds `chain` (in order,
/// contiguous).
fn whole_share(stacks: &[Stack], leaf: &str, chain: &[&str]) -> f64 {
    let at: Vec<&Stack> = stacks
        .iter()
        .filter(|s| s.frames.last().is_some_and(|f| f == leaf))
        .collect();
    let total: u64 = at.iter().map(|s| s.count).sum();
    let whole: u64 = at
        .iter()
        .filter(|s| s.contains(chain))
        .map(|s| s.count)
        .sum();
    whole as f64 / total.max(1) as f64
}

/// How many launches and waits smolder sampled with their stacks (from its
/// summary line).
fn stacks_sampled(stderr: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains(" stacks sampled"))
        .unwrap_or_else(|| panic!("no CUDA summary in:\n{stderr}"));
    let before = &line[..line.find(" stacks sampled").unwrap()];
    before
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"))
}

/// Starts `command` (it prints "ready" once libcudart is loaded, then waits
/// for a line on stdin).
fn start_workload(command: &mut Command) -> (Running, std::process::ChildStdin) {
    let mut running = Running::until_line(command.stdin(Stdio::piped()), "ready");
    let stdin = running.take_stdin();
    (running, stdin)
}

fn cuda_launches_c(cudart: &Path) -> Command {
    let mut command = Command::new(workload_without_frame_pointers("cuda_launches"));
    command
        .arg(cudart)
        .args([ALPHA.to_string(), BETA.to_string(), SYNCS.to_string()]);
    command
}

fn wait_profile(dir: &tempfile::TempDir) -> Vec<Stack> {
    read_pprof(&dir.path().join("out.gpuwait.pb.gz")).1
}

#[test]
fn c_launches_are_counted_exactly_under_whole_stacks() {
    if !is_root() {
        return;
    }
    let cudart = libcudart();
    let (workload, mut go) = start_workload(&mut cuda_launches_c(&cudart));
    let pid = workload.pid();
    let recording = Recording::start_with(&["-p", &pid.to_string()], pid, &["--cuda"]);
    writeln!(go, "go").unwrap();
    let (launches, stderr, dir) = recording.finish_keeping_outputs();
    let waits: Vec<Stack> = wait_profile(&dir)
        .into_iter()
        .filter(|s| s.pid == pid)
        .collect();

    // Every launch, counted: exact whatever was sampled.
    let alpha = "[cuda] kernel_alpha";
    let beta = "[cuda] kernel_beta";
    assert_eq!(count_at(&launches, alpha), ALPHA, "{stderr}");
    assert_eq!(count_at(&launches, beta), BETA, "{stderr}");
    let total: u64 = launches.iter().map(|s| s.count).sum();
    assert_eq!(total, ALPHA + BETA, "launches of something else?");
    let sampled = stacks_sampled(&stderr);
    assert!(sampled >= 100, "only {sampled} stacks sampled\n{stderr}");

    // The stacks sampled are whole: from main down to the launch.
    for (leaf, caller) in [(alpha, "launch_alpha"), (beta, "launch_beta")] {
        let chain = ["main", "decode_step", caller, "cudaLaunchKernel", leaf];
        let whole = whole_share(&launches, leaf, &chain);
        assert!(
            whole >= 0.95,
            "{:.1}% of {leaf} under {chain:?}\n{launches:#?}",
            whole * 100.0
        );
    }

    // Sync calls and device-to-host copies, each counted once; the
    // host-to-device copies are not waits.
    let sync = "[gpu wait] cudaStreamSynchronize";
    let copy = "[gpu wait] cudaMemcpy";
    assert_eq!(count_at(&waits, sync), SYNCS, "{waits:#?}");
    assert_eq!(count_at(&waits, copy), SYNCS, "{waits:#?}");
    let chain = ["decode_step", "wait_for_gpu", "cudaStreamSynchronize", sync];
    let whole = whole_share(&waits, sync, &chain);
    assert!(whole >= 0.95, "{:.1}% of syncs whole", whole * 100.0);
    let chain = ["decode_step", "copy_back", "cudaMemcpy", copy];
    let whole = whole_share(&waits, copy, &chain);
    assert!(whole >= 0.95, "{:.1}% of copies whole", whole * 100.0);
    assert!(
        waits
            .iter()
            .all(|s| matches!(s.label("gpu_wait"), Some("spin" | "blocked"))),
        "every wait says whether it spun or blocked: {waits:#?}"
    );
    // The probes came off with the process.
    assert!(stderr.contains("(1 taken off"), "{stderr}");
    drop(workload);
}

#[test]
fn python_launches_carry_their_python_stacks() {
    if !is_root() {
        return;
    }
    let cudart = libcudart();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/python/cuda_launches.py");
    let mut command = Command::new(machine_python());
    command.arg(&script).arg(&cudart).args([
        ALPHA.to_string(),
        BETA.to_string(),
        SYNCS.to_string(),
    ]);
    let (workload, mut go) = start_workload(&mut command);
    let pid = workload.pid();
    let recording = Recording::start_with(&["-p", &pid.to_string()], pid, &["--cuda"]);
    writeln!(go, "go").unwrap();
    let (launches, stderr, dir) = recording.finish_keeping_outputs();
    let waits = wait_profile(&dir);

    // Host functions named as frames of the process are (libc's here).
    let (alpha, beta) = ("[cuda] abs", "[cuda] labs");
    assert_eq!(count_at(&launches, alpha), ALPHA, "{launches:#?}\n{stderr}");
    assert_eq!(count_at(&launches, beta), BETA, "{launches:#?}");
    assert!(stacks_sampled(&stderr) >= 100, "{stderr}");
    for (leaf, function) in [(alpha, "launch_attention"), (beta, "launch_mlp")] {
        // Python frames, then ctypes' native call, then the runtime.
        let at: Vec<Stack> = launches
            .iter()
            .filter(|s| s.frames.last().is_some_and(|f| f == leaf))
            .cloned()
            .collect();
        let total: u64 = at.iter().map(|s| s.count).sum();
        let whole: u64 = at
            .iter()
            .filter(|s| {
                let python = s.frames.iter().position(|f| f == function);
                let runtime = s.frames.iter().position(|f| f == "cudaLaunchKernel");
                s.contains(&["main", "decode_step", function])
                    && matches!((python, runtime), (Some(p), Some(r)) if p < r)
                    && s.frames[s.frames.len() - 2] == "cudaLaunchKernel"
            })
            .map(|s| s.count)
            .sum();
        let share = whole as f64 / total.max(1) as f64;
        assert!(
            share >= 0.95,
            "{:.1}% of {leaf} under main > decode_step > {function} > ... > cudaLaunchKernel\n{at:#?}",
            share * 100.0
        );
    }
    let sync = "[gpu wait] cudaStreamSynchronize";
    assert_eq!(count_at(&waits, sync), SYNCS, "{waits:#?}");
    let whole = whole_share(&waits, sync, &["decode_step", "synchronize"]);
    assert!(whole >= 0.95, "{:.1}% of syncs whole", whole * 100.0);
    drop(workload);
}

/// With `--all`, a process that loads libcudart after smolder started gets
/// probed (the BPF mapping recorder announces the library), and the probes
/// come off when it exits.
#[test]
fn probes_follow_libraries_loaded_later_and_come_off_with_their_processes() {
    if !is_root() {
        return;
    }
    let cudart = libcudart();
    let mut recording = Recording::start_with(&["-a"], 0, &["--cuda"]);
    let (workload, mut go) = start_workload(&mut cuda_launches_c(&cudart));
    let pid = workload.pid();
    let probing = format!("(pid {pid})");
    assert!(
        recording.wait_for_line(
            |l| l.contains("CUDA: probing") && l.contains(&probing),
            Duration::from_secs(30)
        ),
        "libcudart of pid {pid} not probed:\n{}",
        recording.stderr_so_far()
    );
    writeln!(go, "go").unwrap();
    let output = workload.finish();
    assert!(output.status.success(), "workload: {}", output.status);
    assert!(
        recording.wait_for_line(
            |l| l.contains("CUDA: probes taken off") && l.contains("libcudart"),
            Duration::from_secs(30)
        ),
        "probes not taken off after pid {pid} exited:\n{}",
        recording.stderr_so_far()
    );
    recording.interrupt();
    let (stacks, stderr) = recording.finish();
    let launches: Vec<Stack> = stacks.into_iter().filter(|s| s.pid == pid).collect();
    assert_eq!(
        count_at(&launches, "[cuda] kernel_alpha"),
        ALPHA,
        "{stderr}"
    );
    assert_eq!(count_at(&launches, "[cuda] kernel_beta"), BETA);
    // Its unwind tables came in with the library: the stacks are whole.
    let chain = ["main", "decode_step", "launch_alpha", "cudaLaunchKernel"];
    let whole = whole_share(&launches, "[cuda] kernel_alpha", &chain);
    assert!(whole >= 0.95, "{:.1}% whole: {launches:#?}", whole * 100.0);
}

const LAUNCH_TYPE: &str = "cuda_launch:launches:count:launches:count";
const WAIT_TYPE: &str = "gpu_wait:gpu_wait:nanoseconds:gpu_wait:nanoseconds";

/// `smolder agent` with `cuda = true` pushes both profiles to a real
/// Pyroscope, launch counts exact, under the service of the process.
#[test]
fn the_agent_pushes_launches_and_waits_to_pyroscope() {
    if !is_root() {
        return;
    }
    let server = Pyroscope::start();
    let begin = now_ms() - 1000;
    let config = one_service_config(
        &format!("url = \"{}\"", server.url()),
        "window = \"2s\"\ncuda = true",
        "smolder-test-cuda",
        r#"exe = "/cuda_launches$""#,
    );
    let agent = Agent::start(&config);
    let cudart = libcudart();
    let (workload, mut go) = start_workload(&mut cuda_launches_c(&cudart));
    let pid = workload.pid();
    // All 14 of libcudart's (the path as the process maps it).
    let name = cudart.file_name().unwrap().to_string_lossy();
    agent.wait_for_log(&format!("{name} (pid {pid})"), Duration::from_secs(30));
    assert!(
        agent
            .log_text()
            .contains("CUDA: probing 14 entry points of "),
        "{}",
        agent.log_text()
    );
    writeln!(go, "go").unwrap();
    let output = workload.finish();
    assert!(output.status.success());
    agent.wait_metric(
        "smolder_cuda_launches_total",
        Duration::from_secs(30),
        |v| v >= (ALPHA + BETA) as f64,
    );
    // Stopping delivers every window handed over (the last launches').
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
    let range = (begin, now_ms() + 1000);
    let types = server.profile_types(range);
    for kind in [LAUNCH_TYPE, WAIT_TYPE] {
        assert!(types.iter().any(|t| t == kind), "{kind} not in {types:?}");
    }
    let selector = r#"{service_name="smolder-test-cuda"}"#;
    let launches = server.stacks(LAUNCH_TYPE, selector, range);
    assert_eq!(launches.total, (ALPHA + BETA) as i64, "{launches:?}");
    // Whole stacks, from main, in the launches' proportions (at least 95%
    // of each share under its full chain).
    let whole = |caller: &str, leaf: &str| {
        launches.share_with(&["main", "decode_step", caller, "cudaLaunchKernel", leaf])
    };
    let alpha = whole("launch_alpha", "[cuda] kernel_alpha");
    let beta = whole("launch_beta", "[cuda] kernel_beta");
    let expected = ALPHA as f64 / (ALPHA + BETA) as f64;
    assert!(
        alpha >= 0.95 * expected && alpha <= expected + 0.001,
        "alpha {alpha:.3} of {expected:.3}: {launches:?}"
    );
    assert!(
        beta >= 0.95 * (1.0 - expected) && beta <= 1.0 - expected + 0.001,
        "beta {beta:.3}: {launches:?}"
    );
    let waits = server.stacks(WAIT_TYPE, selector, range);
    for leaf in ["[gpu wait] cudaStreamSynchronize", "[gpu wait] cudaMemcpy"] {
        assert!(waits.has_function(leaf), "{leaf} missing: {waits:?}");
    }
}

/// Past its overhead budget the agent probes launches for part of each
/// window only, and scales the counts up: at 20k launches a second against
/// a budget of 0.5% of a core, most launches go unprobed and the totals in
/// Pyroscope still come out near the real number.
#[test]
fn the_agent_keeps_launch_probes_within_their_budget() {
    if !is_root() {
        return;
    }
    const RATE: u64 = 20_000;
    const CALLS: u64 = 8 * RATE;
    let server = Pyroscope::start();
    let begin = now_ms() - 1000;
    let config = one_service_config(
        &format!("url = \"{}\"", server.url()),
        "window = \"2s\"\ncuda = true\ncuda_max_overhead_percent = 0.5",
        "smolder-test-cuda-budget",
        r#"exe = "/cuda_launch_bench$""#,
    );
    let agent = Agent::start(&config);
    let cudart = libcudart();
    let mut command = Command::new(workload_without_frame_pointers("cuda_launch_bench"));
    command
        .arg(&cudart)
        .args(["launch", &CALLS.to_string(), &RATE.to_string()]);
    let (workload, mut go) = start_workload(&mut command);
    let name = cudart.file_name().unwrap().to_string_lossy();
    agent.wait_for_log(
        &format!("{name} (pid {})", workload.pid()),
        Duration::from_secs(30),
    );
    writeln!(go, "go").unwrap();
    let output = workload.finish();
    assert!(output.status.success());
    let duty = agent.metric("smolder_cuda_launch_probe_percent");
    let probed = agent.metric("smolder_cuda_launches_total");
    let (status, log) = agent.stop();
    assert!(status.success(), "{log}");
    // 20k/s at 2 us is 4% of a core: an eighth of that is 0.5%.
    assert!(
        (5.0..=30.0).contains(&duty),
        "probes on {duty}% of a window\n{log}"
    );
    assert!(
        probed < 0.6 * CALLS as f64,
        "{probed} of {CALLS} launches probed: the probes stayed on\n{log}"
    );
    let range = (begin, now_ms() + 1000);
    let launches = server.stacks(
        LAUNCH_TYPE,
        r#"{service_name="smolder-test-cuda-budget"}"#,
        range,
    );
    let estimate = launches.total as f64 / CALLS as f64;
    eprintln!(
        "probes on {duty}% of each window, {probed} of {CALLS} launches probed, {} estimated",
        launches.total
    );
    assert!(
        (0.85..=1.15).contains(&estimate),
        "{} launches estimated for {CALLS}\n{log}",
        launches.total
    );
}
