//! The agent as it is deployed: its container image run the way the
//! DaemonSet runs it, and the Kubernetes manifests checked against the API's
//! own types.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{is_root, workload, Running};
use crate::pyroscope::{now_ms, Pyroscope};

const CPU_TYPE: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The image `cargo xtask test` built (`cargo xtask image`).
fn image() -> String {
    std::env::var("SMOLDER_IMAGE").unwrap_or_else(|_| {
        format!(
            "localhost/smolder:{} (set SMOLDER_IMAGE, or run `cargo xtask image` first)",
            env!("CARGO_PKG_VERSION")
        )
    })
}

/// A container, removed (stopped first) on drop.
struct Container(String);

impl Container {
    fn logs(&self) -> String {
        let out = Command::new("podman")
            .args(["logs", &self.0])
            .output()
            .expect("podman logs");
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .args(["rm", "--force", "--time", "5", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The image runs as docs/deploy/daemonset.yaml runs it (host PID
/// namespace, read-only root, only the capabilities listed there, the
/// config mounted read-only) and pushes a host process's profiles to
/// Pyroscope.
#[test]
fn the_image_profiles_the_host_as_the_daemonset_runs_it() {
    if !is_root() {
        return;
    }
    let server = Pyroscope::start();
    let begin = now_ms() - 1000;
    let _chain = Running::spawn(
        Command::new(workload("chain")).arg("120"),
        Duration::from_millis(100),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(
        config.join("agent.toml"),
        format!(
            "[server]\nurl = \"{}\"\n\n[profiling]\nwindow = \"3s\"\n\n[[service]]\nname = \"smolder-test-image\"\ncmdline = \"chain 120\"\n\n[[processes.include]]\nservice = \"^smolder-test-\"\n",
            server.url()
        ),
    )
    .unwrap();
    let spool = dir.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let name = format!("smolder-test-{}", std::process::id());
    let mut command = Command::new("podman");
    command.args([
        "run",
        "--detach",
        "--name",
        &name,
        "--pid=host",
        // Pyroscope listens on the host's loopback.
        "--network=host",
        "--read-only",
        "--cap-drop=ALL",
        "--cap-add=BPF,PERFMON,SYS_ADMIN,SYS_PTRACE,DAC_READ_SEARCH",
        "--security-opt",
        "seccomp=unconfined",
        // Root here lacks CAP_SYS_RESOURCE: podman's default limits (above
        // the hard ones) would be refused.
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
        "--env",
        "SMOLDER_LOG=info",
        "--volume",
    ]);
    command.arg(format!("{}:/etc/smolder:ro", config.display()));
    command.arg("--volume");
    command.arg(format!("{}:/var/lib/smolder", spool.display()));
    if Path::new("/sys/kernel/tracing/events").exists() {
        command.args(["--volume", "/sys/kernel/tracing:/sys/kernel/tracing:ro"]);
    }
    command.args([&image(), "agent", "--config", "/etc/smolder/agent.toml"]);
    let started = Instant::now();
    let out = command.output().expect("podman run");
    assert!(
        out.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let container = Container(name);
    // Ready: the agent says so once its programs are attached.
    while !container.logs().contains("smolder agent started") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the agent did not start in the container:\n{}",
            container.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "container start to sampling: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let selector = r#"{service_name="smolder-test-image"}"#;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let graph = server.stacks(CPU_TYPE, selector, (begin, now_ms() + 1000));
        if graph.share_with(&["main", "a", "b", "c", "spin"]) > 0.9 && graph.total > 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no whole profile of the host's process from the container: {graph:?}\n{}",
            container.logs()
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let stop = Command::new("podman")
        .args(["stop", "--time", "20", &container.0])
        .output()
        .expect("podman stop");
    assert!(stop.status.success());
    let logs = container.logs();
    assert!(logs.contains("smolder agent stopped"), "{logs}");
}

/// docs/deploy: the DaemonSet file and the kustomize base decode strictly
/// into the Kubernetes API's types (testdata/k8scheck, offline), and a
/// misspelled field fails the check.
#[test]
fn kubernetes_manifests_match_the_api_types() {
    let check = |args: &[&Path]| {
        Command::new("go")
            .args(["run", "."])
            .args(args)
            .current_dir(repo().join("testdata/k8scheck"))
            .output()
            .expect("go run k8scheck")
    };
    let deploy = repo().join("docs/deploy");
    let out = check(&[&deploy.join("daemonset.yaml"), &deploy]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("DaemonSet smolder-agent ok"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let manifest = std::fs::read_to_string(deploy.join("daemonset.yaml")).unwrap();
    std::fs::write(&bad, manifest.replace("hostPID:", "hostPid:")).unwrap();
    let out = check(&[&bad]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("hostPid"),
        "a misspelled field passed"
    );
}
