//! `smolder agent` end to end: real BPF, real workloads, a real Pyroscope
//! server on loopback (started per test), queried through its own API.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{
    free_port, go_workload_with, is_root, machine_python, python_trace_sdk, workload,
    workload_without_frame_pointers, Running, TestCa,
};
use crate::pyroscope::{now_ms, Pyroscope};
use crate::tls_front::TlsFront;
use crate::trace_context::{CHECKOUT, SEARCH};

pub(crate) const CPU_TYPE: &str = "process_cpu:cpu:nanoseconds:cpu:nanoseconds";
pub(crate) const OFF_CPU_TYPE: &str = "offcpu:offcpu:nanoseconds:offcpu:nanoseconds";
/// `[profiling]` of the off-CPU tests.
const OFF_CPU_PROFILING: &str = "window = \"2s\"\noff_cpu = true";

/// A running agent, its log in a file, its metrics on a loopback port.
pub(crate) struct Agent {
    child: Child,
    metrics_port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts `smolder agent --config` with `config` (TOML) plus the
    /// metrics listener and a spool in a temporary directory, and waits
    /// until it samples.
    pub(crate) fn start(config: &str) -> Agent {
        Self::start_with_spool(config, &[])
    }

    /// As `start`, with files already in the spool (left by an earlier
    /// run, or put there by anyone).
    fn start_with_spool(config: &str, spooled: &[(&str, &[u8])]) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("spool")).unwrap();
        for (name, body) in spooled {
            std::fs::write(dir.path().join("spool").join(name), body).unwrap();
        }
        let config_path = dir.path().join("agent.toml");
        std::fs::write(&config_path, config).unwrap();
        let metrics_port = free_port();
        let log = dir.path().join("agent.log");
        let child = Command::new(env!("CARGO_BIN_EXE_smolder"))
            .arg("agent")
            .arg("--config")
            .arg(&config_path)
            .arg("--metrics-address")
            .arg(metrics_port.to_string())
            .arg("--spool-dir")
            .arg(dir.path().join("spool"))
            .env("SMOLDER_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let agent = Agent {
            child,
            metrics_port,
            log,
            _dir: dir,
        };
        agent.wait_for_log("smolder agent started", Duration::from_secs(30));
        agent
    }

    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn wait_for_log(&self, text: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.log_text().contains(text) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("agent never logged `{text}`:\n{}", self.log_text());
    }

    /// One metric's value from `/metrics`.
    pub(crate) fn metric(&self, name: &str) -> f64 {
        let text =
            reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
                .and_then(|r| r.text())
                .unwrap_or_default();
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }

    /// Waits until `cond` holds on a metric.
    pub(crate) fn wait_metric(
        &self,
        name: &str,
        limit: Duration,
        cond: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.metric(name);
            if cond(value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "metric {name} stuck at {value}; agent log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// SIGTERM, then the exit status and the whole log.
    pub(crate) fn stop(mut self) -> (ExitStatus, String) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let log = self.log_text();
                eprintln!("agent log:\n{log}");
                return (status, log);
            }
            assert!(Instant::now() < deadline, "agent did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Agent {
    /// A test that fails before `stop` must not leave its agent sampling.
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A workload process, killed when dropped.
pub(crate) struct Workload(Child);

impl Workload {
    fn spawn(path: &Path, args: &[&str]) -> Workload {
        Workload(
            Command::new(path)
                .args(args)
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Waits until the workload has used `cpu` (it is past its dynamic
    /// loader and in its own code), for at most 20 s.
    fn wait_for_cpu(&self, cpu: Duration) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.cpu() < cpu {
            assert!(Instant::now() < deadline, "the workload did not run");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// CPU time used so far (utime + stime from /proc/PID/stat).
    fn cpu(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let rest = stat.rsplit_once(')').unwrap().1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // After the comm: state is field 3, utime 14 and stime 15 (1-based).
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_secs_f64(ticks as f64 / hz as f64)
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An agent pushing one service (`rule`: its matching line, e.g.
/// `exe = "/nofp_chain$"`) in 3 s windows to `server`, returned once two
/// pushes have landed.
fn agent_for_one_service(server: &Pyroscope, name: &str, rule: &str) -> Agent {
    let config = one_service_config(
        &format!("url = \"{}\"", server.url()),
        "window = \"3s\"",
        name,
        rule,
    );
    let agent = Agent::start(&config);
    agent.wait_metric("smolder_pushes_ok_total", Duration::from_secs(40), |v| {
        v >= 2.0
    });
    agent
}

/// Config pushing one test service (`name`, matched by `rule`) and nothing
/// else; `server` and `profiling` are the lines of those sections.
pub(crate) fn one_service_config(server: &str, profiling: &str, name: &str, rule: &str) -> String {
    format!(
        r#"
[server]
{server}

[profiling]
{profiling}

[[service]]
name = "{name}"
{rule}

[[processes.include]]
service = "^smolder-test-"
"#
    )
}

/// Config for the two test services: each workload its own service by
/// rule, nothing else pushed.
fn two_services_config(url: &str, window: &str) -> String {
    format!(
        r#"
[server]
url = "{url}"

[profiling]
window = "{window}"

[labels]
env = "test"

[[service]]
name = "smolder-test-chain"
exe = "/chain$"

[[service]]
name = "smolder-test-inline"
exe = "/inline$"

[[processes.include]]
service = "^smolder-test-"
"#
    )
}

#[test]
fn two_services_reach_pyroscope_with_their_own_stacks() {
    if !is_root() {
        return;
    }
    let server = Pyroscope::start();
    let begin = now_ms() - 1000;
    let chain = Workload::spawn(&workload("chain"), &["120"]);
    let inline = Workload::spawn(&workload("inline"), &["1000000000"]);
    std::thread::sleep(Duration::from_millis(300));

    let agent = Agent::start(&two_services_config(&server.url(), "3s"));
    let cpu_before = [chain.cpu(), inline.cpu()];
    // At least two windows pushed for each service.
    agent.wait_metric("smolder_pushes_ok_total", Duration::from_secs(40), |v| {
        v >= 6.0
    });
    let (status, _) = agent.stop();
    let cpu_used = [chain.cpu() - cpu_before[0], inline.cpu() - cpu_before[1]];
    assert!(status.success(), "agent exit: {status}");
    let range = (begin, now_ms() + 1000);

    let types = server.profile_types(range);
    assert!(
        types.iter().any(|t| t == CPU_TYPE),
        "profile types: {types:?}"
    );
    let services = server.label_values("service_name", range);
    for name in ["smolder-test-chain", "smolder-test-inline"] {
        assert!(services.iter().any(|s| s == name), "services: {services:?}");
    }
    assert_eq!(
        services.len(),
        2,
        "only the included services: {services:?}"
    );
    assert!(server
        .label_values("env", range)
        .contains(&"test".to_owned()));

    let chain_graph = server.stacks(CPU_TYPE, r#"{service_name="smolder-test-chain"}"#, range);
    let inline_graph = server.stacks(CPU_TYPE, r#"{service_name="smolder-test-inline"}"#, range);
    let chain_share = chain_graph.share_with(&["main", "a", "b", "c", "spin"]);
    eprintln!("chain stacks: {:?}", chain_graph.stacks);
    eprintln!("inline stacks: {:?}", inline_graph.stacks);
    assert!(
        chain_share >= 0.9,
        "chain share {chain_share}: {chain_graph:?}"
    );
    assert!(
        !chain_graph.has_function("outer"),
        "inline's frames in chain's graph"
    );
    let inline_share = inline_graph.share_with(&["main", "outer"]);
    assert!(
        inline_share >= 0.9,
        "inline share {inline_share}: {inline_graph:?}"
    );
    assert!(
        !inline_graph.has_function("spin"),
        "chain's frames in inline's graph"
    );

    // CPU time in Pyroscope against what the kernel says each used.
    for (graph, used) in [(&chain_graph, cpu_used[0]), (&inline_graph, cpu_used[1])] {
        let ratio = graph.total as f64 / used.as_nanos() as f64;
        eprintln!(
            "Pyroscope total {} ns, process CPU {used:?}, ratio {ratio:.3}",
            graph.total
        );
        assert!(
            (0.8..=1.2).contains(&ratio),
            "Pyroscope has {} ns, the process used {used:?} (ratio {ratio:.2})",
            graph.total
        );
    }
    // Two or more windows per service.
    for service in ["smolder-test-chain", "smolder-test-inline"] {
        let selector = format!(r#"{{service_name="{service}"}}"#);
        let points = server.series_points(CPU_TYPE, &selector, range, 1.0);
        eprintln!("{service}: points {points:?}");
        assert!(points.len() >= 2, "{service}: windows {points:?}");
    }
}

#[test]
fn corrupt_spool_files_are_dropped_and_counted_not_sent() {
    if !is_root() {
        return;
    }
    let server = Pyroscope::start();
    let _chain = Workload::spawn(&workload("chain"), &["60"]);
    let agent = Agent::start_with_spool(
        &two_services_config(&server.url(), "2s"),
        &[
            ("0000000000000-0-garbage.push", b"\xff\xfe not a request"),
            ("0000000000000-1-empty.push", b""),
        ],
    );
    agent.wait_metric("smolder_pushes_ok_total", Duration::from_secs(30), |v| {
        v >= 1.0
    });
    assert_eq!(agent.metric("smolder_spool_corrupt_total"), 2.0);
    assert_eq!(agent.metric("smolder_pushes_rejected_total"), 0.0);
    assert_eq!(agent.metric("smolder_spool_files"), 0.0);
    let (status, log) = agent.stop();
    assert!(status.success(), "agent exit: {status}");
    assert_eq!(
        log.matches("dropping spooled request").count(),
        1,
        "reported once:\n{log}"
    );
}

#[test]
fn outage_windows_are_spooled_and_replayed() {
    if !is_root() {
        return;
    }
    let mut server = Pyroscope::start();
    let begin = now_ms() - 1000;
    let _chain = Workload::spawn(&workload("chain"), &["120"]);
    let agent = Agent::start(&two_services_config(&server.url(), "2s"));
    agent.wait_metric("smolder_pushes_ok_total", Duration::from_secs(30), |v| {
        v >= 1.0
    });

    server.stop();
    let down_at = now_ms();
    let windows_at_stop = agent.metric("smolder_windows_total");
    // At least three windows while the server is down.
    agent.wait_metric("smolder_windows_total", Duration::from_secs(30), |v| {
        v >= windows_at_stop + 4.0
    });
    assert!(agent.metric("smolder_pushes_failed_total") >= 1.0);
    assert!(
        agent.metric("smolder_spool_files") >= 3.0,
        "windows not spooled"
    );
    let windows_at_restart = agent.metric("smolder_windows_total");
    server.restart();
    let up_at = now_ms();
    // Replayed: the spool drains and the agent survived.
    agent.wait_metric("smolder_spool_files", Duration::from_secs(60), |v| v == 0.0);
    let (status, log) = agent.stop();
    assert!(status.success(), "agent exit: {status}");
    assert_eq!(
        log.matches("push failed").count(),
        1,
        "the outage is reported once"
    );

    // Every window that started while the server was down is queryable:
    // one point per window start in a 1 s step series.
    let points = server.series_points(
        CPU_TYPE,
        r#"{service_name="smolder-test-chain"}"#,
        (begin, now_ms() + 1000),
        1.0,
    );
    let during: Vec<_> = points
        .iter()
        .filter(|(ts, _)| *ts >= down_at - 500 && *ts <= up_at)
        .collect();
    let outage_windows = windows_at_restart - windows_at_stop;
    eprintln!("outage windows {outage_windows}, points during outage {during:?}");
    assert!(
        during.len() as f64 >= outage_windows - 1.0,
        "{} windows made during the outage, {} in Pyroscope: {points:?} (down {down_at}, up {up_at})",
        outage_windows,
        during.len()
    );
    assert!(
        during.len() >= 3,
        "at least three outage windows: {during:?}"
    );
}

#[test]
fn rate_limited_pushes_wait_and_lose_nothing() {
    if !is_root() {
        return;
    }
    // A burst allowance of a few bytes: every push is answered 429.
    let mut server = Pyroscope::start_with(&[
        "-distributor.ingestion-rate-limit-mb=0.000001",
        "-distributor.ingestion-burst-size-mb=0.000001",
    ]);
    let begin = now_ms() - 1000;
    let _chain = Workload::spawn(&workload("chain"), &["120"]);
    let agent = Agent::start(&two_services_config(&server.url(), "1s"));
    agent.wait_metric(
        "smolder_pushes_rate_limited_total",
        Duration::from_secs(30),
        |v| v >= 2.0,
    );
    assert_eq!(
        agent.metric("smolder_pushes_rejected_total"),
        0.0,
        "429 is not a rejection"
    );
    assert_eq!(agent.metric("smolder_pushes_ok_total"), 0.0);
    agent.wait_metric("smolder_spool_files", Duration::from_secs(30), |v| v >= 2.0);
    let held = agent.metric("smolder_windows_total");
    // Lift the limit: what waited is delivered.
    server.stop();
    server.extra_args.clear();
    server.restart();
    agent.wait_metric("smolder_spool_files", Duration::from_secs(90), |v| v == 0.0);
    let (status, log) = agent.stop();
    assert!(status.success());
    assert_eq!(
        log.matches("push failed").count(),
        1,
        "reported once:\n{log}"
    );
    let points = server.series_points(
        CPU_TYPE,
        r#"{service_name="smolder-test-chain"}"#,
        (begin, now_ms() + 1000),
        1.0,
    );
    assert!(
        points.len() as f64 >= held - 1.0,
        "{held} windows made while rate limited, {} in Pyroscope",
        points.len()
    );
}

#[test]
fn a_rejected_push_is_reported_once_and_not_retried() {
    if !is_root() {
        return;
    }
    let server = Pyroscope::start();
    let _chain = Workload::spawn(&workload("chain"), &["60"]);
    // Pyroscope rejects label values over 2048 bytes (400 Bad Request).
    let config = two_services_config(&server.url(), "1s")
        .replace("env = \"test\"", &format!("env = \"{}\"", "x".repeat(3000)));
    let agent = Agent::start(&config);
    agent.wait_metric(
        "smolder_pushes_rejected_total",
        Duration::from_secs(30),
        |v| v >= 3.0,
    );
    assert_eq!(
        agent.metric("smolder_pushes_failed_total"),
        0.0,
        "4xx must not be retried"
    );
    assert_eq!(
        agent.metric("smolder_spool_files"),
        0.0,
        "rejected data is not spooled"
    );
    let (status, log) = agent.stop();
    assert!(status.success());
    assert_eq!(
        log.matches("the server refused a push").count(),
        1,
        "reported once:\n{log}"
    );
    assert!(log.contains("400"), "status in the report:\n{log}");
}

#[test]
fn without_a_server_windows_become_local_pprof_files() {
    if !is_root() {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let _chain = Workload::spawn(&workload("chain"), &["60"]);
    let config = format!(
        "[profiling]\nwindow = \"1s\"\n[output]\ndirectory = \"{}\"\n[[service]]\nname = \"chain-svc\"\nexe = \"/chain$\"\n",
        out.path().display()
    );
    let agent = Agent::start(&config);
    agent.wait_metric(
        "smolder_profiles_written_total",
        Duration::from_secs(20),
        |v| v >= 3.0,
    );
    let (status, _) = agent.stop();
    assert!(status.success());
    let files: Vec<PathBuf> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with("-chain-svc.cpu.pb.gz"))
        .collect();
    assert!(files.len() >= 2, "files: {files:?}");
    let (_, stacks) = crate::harness::read_pprof(&files[0]);
    let share = crate::harness::share(&stacks, |s| s.contains(&["main", "a", "b", "c", "spin"]));
    assert!(
        share >= 0.9,
        "chain share {share} in {}",
        files[0].display()
    );
}

/// Runs `smolder agent --check` with a config and returns (success, stderr).
fn check(config: &str, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, config).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_smolder"))
        .args(["agent", "--check", "--config"])
        .arg(&path)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.success(), stderr)
}

#[test]
fn config_errors_name_the_problem() {
    let (ok, err) = check("[profiling]\nwindwo = \"15s\"\n", &[]);
    assert!(!ok);
    assert!(err.contains("windwo"), "{err}");
    let (ok, err) = check("[server]\nurl = \"not a url\"\n", &[]);
    assert!(!ok);
    assert!(
        err.contains("server.url") && err.contains("not a url"),
        "{err}"
    );
    let (ok, err) = check(
        "[server]\nurl = \"https://pyroscope.example\"\nbearer_token_file = \"/nonexistent/token\"\n",
        &[],
    );
    assert!(!ok);
    assert!(
        err.contains("bearer_token_file") && err.contains("/nonexistent/token"),
        "{err}"
    );
    let (ok, err) = check("", &[("SMOLDER_FREQUENCY", "fast")]);
    assert!(!ok);
    assert!(
        err.contains("profiling.frequency") && err.contains("SMOLDER_FREQUENCY"),
        "{err}"
    );
    let (ok, err) = check("[server]\nurl = \"http://pyroscope.example\"\n", &[]);
    assert!(!ok);
    assert!(err.contains("https"), "{err}");
    // And a good one passes, with the token never printed.
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let (ok, err) = check(
        &format!(
            "[server]\nurl = \"https://pyroscope.example\"\nbearer_token_file = \"{}\"\n",
            token.display()
        ),
        &[],
    );
    assert!(ok, "{err}");
}

#[test]
fn check_never_prints_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "[server]\nurl = \"https://pyroscope.example\"\n").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_smolder"))
        .args(["agent", "--check", "--config"])
        .arg(&config)
        .env("SMOLDER_BEARER_TOKEN", "s3cret-token")
        .output()
        .unwrap();
    assert!(output.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(all.contains("bearer token"), "{all}");
    assert!(!all.contains("s3cret"), "secret printed:\n{all}");
    let _ = BufReader::new(all.as_bytes()).lines();
}

#[test]
fn off_cpu_reaches_pyroscope_as_its_own_profile_type() {
    if !is_root() {
        return;
    }
    let server = Pyroscope::start();
    let begin = now_ms() - 1000;
    let config = one_service_config(
        &format!("url = \"{}\"", server.url()),
        OFF_CPU_PROFILING,
        "smolder-test-offcpu",
        r#"exe = "/offcpu$""#,
    );
    let agent = Agent::start(&config);
    let waiter = Workload::spawn(&workload("offcpu"), &["5"]);
    agent.wait_metric("smolder_pushes_ok_total", Duration::from_secs(30), |v| {
        v >= 3.0
    });
    let (status, _) = agent.stop();
    drop(waiter);
    assert!(status.success());
    let range = (begin, now_ms() + 1000);
    let types = server.profile_types(range);
    assert!(
        types.iter().any(|t| t == OFF_CPU_TYPE),
        "profile types: {types:?}"
    );
    assert!(
        types.iter().any(|t| t == CPU_TYPE),
        "on-CPU still pushed: {types:?}"
    );
    let graph = server.stacks(
        OFF_CPU_TYPE,
        r#"{service_name="smolder-test-offcpu"}"#,
        range,
    );
    for function in ["sleep_here", "read_here", "lock_here"] {
        let share = graph.share_with(&[function]);
        eprintln!("{function}: {share:.3} of {} ns blocked", graph.total);
        assert!(
            share >= 0.1,
            "{function} has {share:.3} of the off-CPU time: {graph:?}"
        );
    }
    // Kernel frames say why: the sleeper waits in a nanosleep syscall.
    let sleeps_in_kernel = graph.stacks.iter().any(|(stack, _)| {
        stack.iter().any(|f| f == "sleep_here") && stack.iter().any(|f| f.contains("nanosleep"))
    });
    assert!(
        sleeps_in_kernel,
        "no nanosleep kernel frame under sleep_here: {graph:?}"
    );
}

/// The agent's offcpu profile of a Python process: blocked time under the
/// Python function, GIL waits as a `gil="wait"` series of their own.
#[test]
fn python_off_cpu_reaches_pyroscope_with_gil_waits_labelled() {
    if !is_root() {
        return;
    }
    let server = Pyroscope::start();
    let begin = now_ms() - 1000;
    let config = one_service_config(
        &format!("url = \"{}\"", server.url()),
        OFF_CPU_PROFILING,
        "smolder-test-python-waits",
        r#"cmdline = "waits\\.py""#,
    );
    let agent = Agent::start(&config);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/python/waits.py");
    let spinners = Workload::spawn(&machine_python(), &[script.to_str().unwrap(), "30", "gil"]);
    let waiters = Workload::spawn(
        &machine_python(),
        &[script.to_str().unwrap(), "30", "waits"],
    );
    agent.wait_metric("smolder_pushes_ok_total", Duration::from_secs(30), |v| {
        v >= 3.0
    });
    let (status, _) = agent.stop();
    drop((spinners, waiters));
    assert!(status.success());
    let range = (begin, now_ms() + 1000);
    let service = r#"service_name="smolder-test-python-waits""#;
    let gil = server.stacks(OFF_CPU_TYPE, &format!("{{{service},gil=\"wait\"}}"), range);
    let spin = gil.share_with(&["spin"]);
    eprintln!("GIL waits: {} ns, {spin:.3} under spin", gil.total);
    assert!(spin >= 0.9, "GIL waits under spin: {spin:.3}: {gil:?}");
    let other = server.stacks(OFF_CPU_TYPE, &format!("{{{service},gil=\"\"}}"), range);
    for function in ["nap", "wait_for_lock", "wait_for_socket"] {
        let part = other.share_with(&[function]);
        eprintln!("{function}: {part:.3} of {} ns blocked", other.total);
        assert!(
            part >= 0.1,
            "{function} has {part:.3} of the other off-CPU time: {other:?}"
        );
        assert!(
            gil.share_with(&[function]) < 0.05,
            "{function} counted as GIL wait"
        );
    }
}

/// Reads one HTTP request from a loopback listener (head and body) and
/// answers 200: enough to see what the agent sends. Not a Pyroscope: the
/// tests above use the real one; this only looks at headers.
fn capture_one_request(listener: std::net::TcpListener) -> String {
    use std::io::{Read, Write};
    let (mut stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = stream.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data);
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                break;
            }
        }
    }
    let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    String::from_utf8_lossy(&data[..data.len().min(4096)]).into_owned()
}

#[test]
fn pushes_carry_tenant_and_credentials_from_a_file() {
    if !is_root() {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let request = std::thread::spawn(move || capture_one_request(listener));
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken-from-file\n").unwrap();
    let _chain = Workload::spawn(&workload("chain"), &["30"]);
    let config = format!(
        "[server]\nurl = \"http://127.0.0.1:{port}/prefix\"\ntenant = \"team-a\"\nbearer_token_file = \"{}\"\n[profiling]\nwindow = \"1s\"\n[[processes.include]]\nexe = \"/chain$\"\n",
        token.display()
    );
    let agent = Agent::start(&config);
    let head = request.join().unwrap();
    let (status, log) = agent.stop();
    assert!(status.success());
    let lower = head.to_ascii_lowercase();
    assert!(
        head.starts_with("POST /prefix/push.v1.PusherService/Push HTTP/1.1"),
        "{head}"
    );
    assert!(
        lower.contains("authorization: bearer t0ken-from-file\r\n"),
        "{head}"
    );
    assert!(lower.contains("x-scope-orgid: team-a\r\n"), "{head}");
    assert!(
        lower.contains("content-type: application/proto\r\n"),
        "{head}"
    );
    assert!(!log.contains("t0ken"), "token in the log:\n{log}");
}

/// Pyroscope behind TLS (a TLS front, as a deployment's proxy) with a CA
/// made by the test: the agent pushes with that CA in `server.ca_file`;
/// with another CA it refuses the server, says why in its log, counts
/// failed pushes and keeps the windows spooled.
#[test]
fn pushes_over_tls_with_the_configured_ca_and_refuses_another() {
    if !is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "smolder-test-ca");
    let (cert, key) = ca.server_cert("pyroscope");
    let server = Pyroscope::start();
    let front = TlsFront::start(&cert, &key, server.port());
    let begin = now_ms() - 1000;
    let _chain = Workload::spawn(&workload("chain"), &["60"]);
    let config = |ca_file: &Path| {
        one_service_config(
            &format!(
                "url = \"{}\"\nca_file = \"{}\"",
                front.url(),
                ca_file.display()
            ),
            "window = \"1s\"",
            "smolder-test-tls",
            r#"exe = "/chain$""#,
        )
    };

    let agent = Agent::start(&config(&ca.pem()));
    agent.wait_metric("smolder_pushes_ok_total", Duration::from_secs(30), |v| {
        v >= 2.0
    });
    let (status, _) = agent.stop();
    assert!(status.success());
    let graph = server.stacks(
        CPU_TYPE,
        r#"{service_name="smolder-test-tls"}"#,
        (begin, now_ms() + 1000),
    );
    assert!(graph.total > 0, "nothing stored over TLS: {graph:?}");

    let other = TestCa::new(dir.path(), "another-ca");
    let agent = Agent::start(&config(&other.pem()));
    agent.wait_metric(
        "smolder_pushes_failed_total",
        Duration::from_secs(30),
        |v| v >= 1.0,
    );
    assert_eq!(agent.metric("smolder_pushes_ok_total"), 0.0);
    let (status, log) = agent.stop();
    assert!(status.success());
    let refused = log
        .lines()
        .find(|l| l.contains("push failed"))
        .unwrap_or_else(|| panic!("no push failure logged:\n{log}"));
    assert!(
        refused.contains("certificate") && refused.contains("server.ca_file"),
        "the failure does not say the certificate was refused: {refused}"
    );
    assert!(
        log.contains("stay in"),
        "windows not kept in the spool:\n{log}"
    );
}

/// The agent walks stacks with the DWARF tables too: a GCC -O2 chain
/// without frame pointers reaches Pyroscope whole, and the unwind metrics
/// count the walks.
#[test]
fn stacks_without_frame_pointers_reach_pyroscope_whole() {
    if !is_root() {
        return;
    }
    let server = Pyroscope::start();
    let begin = now_ms() - 1000;
    let chain = Workload::spawn(&workload_without_frame_pointers("nofp_chain"), &["120"]);
    // Running its chain with its libraries mapped when the agent starts:
    // the agent has its tables before its first sample.
    chain.wait_for_cpu(Duration::from_millis(50));
    let agent = agent_for_one_service(&server, "smolder-test-nofp", r#"exe = "/nofp_chain$""#);
    // Host-wide counters: every process is sampled.
    let dwarf = agent.metric("smolder_unwind_stacks_dwarf_total");
    let tables = agent.metric("smolder_unwind_tables");
    let (status, _) = agent.stop();
    drop(chain);
    assert!(status.success(), "agent exit: {status}");
    assert!(
        dwarf >= 50.0 && tables >= 2.0,
        "dwarf {dwarf}, tables {tables}"
    );
    let range = (begin, now_ms() + 1000);
    let graph = server.stacks(CPU_TYPE, r#"{service_name="smolder-test-nofp"}"#, range);
    let whole = graph.share_with(&[
        "main", "chain1", "chain2", "chain3", "chain4", "chain5", "chain6", "chain7", "leaf",
    ]);
    assert!(
        whole >= 0.9,
        "{:.1}% whole chains: {graph:?}",
        whole * 100.0
    );
}

/// The agent's path for Python: a CPython process's stacks reach Pyroscope
/// with its Python functions in place of the interpreter's frames.
#[test]
fn python_frames_reach_pyroscope() {
    if !is_root() {
        return;
    }
    let server = Pyroscope::start();
    let begin = now_ms() - 1000;
    let python = machine_python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/python/chain.py");
    let chain = Workload::spawn(&python, &[script.to_str().unwrap(), "120", "1"]);
    std::thread::sleep(Duration::from_millis(500));
    let agent = agent_for_one_service(
        &server,
        "smolder-test-python",
        r#"cmdline = "testdata/python/chain.py""#,
    );
    let (status, _) = agent.stop();
    drop(chain);
    assert!(status.success(), "agent exit: {status}");
    let range = (begin, now_ms() + 1000);
    let graph = server.stacks(CPU_TYPE, r#"{service_name="smolder-test-python"}"#, range);
    let chain = graph.share_with(&["main", "handle_request", "model_step", "tokenize"]);
    assert!(
        chain >= 0.85,
        "{:.1}% show the Python chain: {graph:?}",
        chain * 100.0
    );
}

/// Span profiles: samples pushed with `span_id` (not as a series label;
/// `trace_id` not at all), and `SelectMergeSpanProfile` for one span
/// returns that request's functions only.
#[test]
fn span_profiles_reach_pyroscope() {
    if !is_root() {
        return;
    }
    let server = Pyroscope::start();
    let begin = now_ms() - 1000;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/python/trace_requests.py");
    let _requests = Running::spawn(
        Command::new(machine_python())
            .arg(&script)
            .args(["120", "manual"])
            .env("PYTHONPATH", python_trace_sdk())
            .stdout(Stdio::null()),
        Duration::from_millis(500),
    );
    let agent = agent_for_one_service(
        &server,
        "smolder-test-spans",
        r#"cmdline = "testdata/python/trace_requests.py""#,
    );
    agent.wait_metric(
        "smolder_trace_context_processes_total",
        Duration::from_secs(5),
        |v| v >= 1.0,
    );
    agent.wait_metric(
        "smolder_trace_context_samples_total",
        Duration::from_secs(5),
        |v| v >= 50.0,
    );
    let (status, _) = agent.stop();
    assert!(status.success(), "agent exit: {status}");
    let range = (begin, now_ms() + 1000);
    let selector = r#"{service_name="smolder-test-spans"}"#;
    let all = server.stacks(CPU_TYPE, selector, range);
    assert!(
        all.has_function("checkout") && all.has_function("search"),
        "{all:?}"
    );
    for (span, own, other) in [
        (CHECKOUT.1, "checkout", "search"),
        (SEARCH.1, "search", "checkout"),
    ] {
        let graph = server.span_stacks(CPU_TYPE, selector, &[span], range);
        let share = graph.share_with(&[own]);
        assert!(
            share >= 0.95,
            "span {span}: {:.1}% in {own}: {graph:?}",
            share * 100.0
        );
        for absent in [other, "between_requests"] {
            assert!(
                !graph.has_function(absent),
                "span {span} has {absent}: {graph:?}"
            );
        }
    }
    let names = server.label_names(range);
    for label in ["span_id", "trace_id"] {
        assert!(
            !names.iter().any(|n| n == label),
            "series label {label}: {names:?}"
        );
    }
}

/// How the churn test's Python processes work: a short busy loop under a
/// named function, then exit.
const CHURN_PY: &str = "import time\n\
def churn_work():\n    end = time.monotonic() + 0.025\n    n = 0\n    while time.monotonic() < end:\n        n += 1\n\
churn_work()\n";

/// Process churn (issue 15): a thousand processes that live for tens of
/// milliseconds, C without frame pointers and CPython, while the agent
/// runs. Most exit before the agent reads their /proc/PID/maps; their
/// stacks are still walked with tables (the executable mappings are
/// recorded in BPF at exec and mmap) and named (from those mappings).
#[test]
fn short_lived_processes_are_walked_with_tables_and_named() {
    if !is_root() {
        return;
    }
    let server = Pyroscope::start();
    let begin = now_ms() - 1000;
    let c = workload_without_frame_pointers("nofp_chain");
    // A name of its own for the interpreter, so its samples are told apart
    // (the pyenv build finds libpython through an absolute RUNPATH).
    let dir = tempfile::tempdir().unwrap();
    let python = dir.path().join("churn_python");
    std::os::unix::fs::symlink(machine_python(), &python).unwrap();
    let config = format!(
        r#"
[server]
url = "{}"

[profiling]
window = "3s"
frequency = 99

[[service]]
name = "smolder-test-churn-c"
comm = "^nofp_chain$"

[[service]]
name = "smolder-test-churn-py"
comm = "^churn_python$"

[[processes.include]]
service = "^smolder-test-"
"#,
        server.url()
    );
    let agent = Agent::start(&config);
    for round in 0..500 {
        let status = Command::new(&c).arg("0.02").status().unwrap();
        assert!(status.success(), "nofp_chain run {round}: {status}");
        let status = Command::new(&python)
            .args(["-S", "-c", CHURN_PY])
            .status()
            .unwrap();
        assert!(status.success(), "python run {round}: {status}");
    }
    // Everything sampled is pushed within two windows.
    let pushed = agent.metric("smolder_pushes_ok_total");
    agent.wait_metric("smolder_pushes_ok_total", Duration::from_secs(30), |v| {
        v >= pushed + 2.0
    });
    let recorded = agent.metric("smolder_unwind_stacks_recorded_mappings_total");
    let named_after_exit = agent.metric("smolder_processes_named_after_exit_total");
    let (status, _) = agent.stop();
    assert!(status.success(), "agent exit: {status}");
    assert!(
        recorded > 0.0 && named_after_exit > 0.0,
        "recorded-mapping stacks {recorded}, processes named after exit {named_after_exit}"
    );
    let range = (begin, now_ms() + 1000);
    // Pyroscope's stacks start with its "total" root. Walked: to the entry
    // point (or past the depth limit) without an unwind error.
    let walked = |s: &[String]| {
        s.get(1)
            .is_some_and(|f| f == "_start" || f == "[truncated]")
            && !s.iter().any(|f| f == "[unwind error]")
    };
    // Whole: walked, and every frame named.
    let whole = |s: &[String]| walked(s) && !s.iter().any(|f| f.starts_with("[unknown]"));
    let c_graph = server.stacks(CPU_TYPE, r#"{service_name="smolder-test-churn-c"}"#, range);
    // Samples in the workload's own code: `leaf` is named whatever the walk.
    let in_chain = |s: &[String]| s.iter().any(|f| f == "leaf");
    let c_share = c_graph.share_of(in_chain, |s| {
        whole(s) && s.windows(3).any(|w| w == ["main", "chain1", "chain2"])
    });
    let py_graph = server.stacks(CPU_TYPE, r#"{service_name="smolder-test-churn-py"}"#, range);
    // Samples in the interpreter proper (not in ld.so at start-up or in
    // the kernel alone): CPython's frames, named or cut short.
    let in_interpreter = |s: &[String]| {
        s.iter().any(|f| {
            f == "Py_RunMain"
                || f.starts_with("_PyEval")
                || f.starts_with("[python")
                || f == "churn_work"
        })
    };
    // The Python frames of a process that exited before its code objects
    // were read stay unnamed (they are read from its memory): the native
    // walk is what is checked.
    let py_share = py_graph.share_of(in_interpreter, walked);
    eprintln!(
        "churn: C {:.1}% of {} ms whole and named, Python {:.1}% of {} ms walked; \
         {recorded} stacks from recorded mappings, {named_after_exit} processes named after exit",
        c_share.0 * 100.0,
        c_share.1 / 1_000_000,
        py_share.0 * 100.0,
        py_share.1 / 1_000_000
    );
    // Values are CPU nanoseconds: at least a second (about 100 samples) each.
    assert!(
        c_share.1 >= 1_000_000_000 && py_share.1 >= 1_000_000_000,
        "too few samples: C {c_share:?}, Python {py_share:?}"
    );
    assert!(
        c_share.0 >= 0.9 && py_share.0 >= 0.9,
        "C {:.1}% of {} ms whole and named, Python {:.1}% of {} ms walked\nC misses: {:#?}\nPython misses: {:#?}",
        c_share.0 * 100.0,
        c_share.1 / 1_000_000,
        py_share.0 * 100.0,
        py_share.1 / 1_000_000,
        c_graph.heaviest(|s| in_chain(s) && !whole(s), 8),
        py_graph.heaviest(|s| in_interpreter(s) && !walked(s), 8),
    );
}

/// Go span profiles with no smolder SDK: Grafana's otel-profiling-go sets
/// the goroutine labels `span_id` and `span_name` for each root span; the
/// agent reads them, pushes `span_id` per sample and `span_name` as the
/// series label the config allows, and `SelectMergeSpanProfile` returns
/// each request's function for its spans.
#[test]
fn go_span_profiles_from_otel_profiling_go_reach_pyroscope() {
    if !is_root() {
        return;
    }
    let server = Pyroscope::start();
    let begin = now_ms() - 1000;
    let binary = go_workload_with("gospans", None, "");
    let (_requests, lines) = Running::until_line_with_output(
        Command::new(&binary).arg("120").stderr(Stdio::null()),
        "ready",
    );
    let name = "smolder-test-gospans";
    let config = one_service_config(
        &format!("url = \"{}\"", server.url()),
        "window = \"3s\"\ngo_labels = [\"span_name\"]",
        name,
        r#"cmdline = "gospans""#,
    );
    let agent = Agent::start(&config);
    agent.wait_metric("smolder_go_processes", Duration::from_secs(10), |v| {
        v >= 1.0
    });
    agent.wait_metric(
        "smolder_go_label_samples_total",
        Duration::from_secs(20),
        |v| v >= 100.0,
    );
    agent.wait_metric("smolder_pushes_ok_total", Duration::from_secs(20), |v| {
        v >= 2.0
    });
    let (status, _) = agent.stop();
    assert!(status.success(), "agent exit: {status}");
    let mut spans: std::collections::HashMap<String, Vec<String>> = Default::default();
    for line in lines.try_iter() {
        if let Some((kind, id)) = line.split_once(' ') {
            spans
                .entry(kind.to_owned())
                .or_default()
                .push(id.to_owned());
        }
    }
    let range = (begin, now_ms() + 1000);
    let selector = format!("{{service_name=\"{name}\"}}");
    for (own, other) in [("checkout", "search"), ("search", "checkout")] {
        let ids = &spans[own];
        let recent: Vec<&str> = ids.iter().rev().take(300).map(String::as_str).collect();
        let graph = server.span_stacks(CPU_TYPE, &selector, &recent, range);
        let function = format!("main.{own}");
        let share = graph.share_with(&[&function]);
        assert!(
            graph.total > 0 && share >= 0.95,
            "{own} spans: {:.1}% in {function}: {graph:?}",
            share * 100.0
        );
        for absent in [format!("main.{other}"), "main.betweenRequests".to_owned()] {
            assert!(
                !graph.has_function(&absent),
                "{own} spans have {absent}: {graph:?}"
            );
        }
    }
    let mut names = server.label_values("span_name", range);
    names.sort();
    assert_eq!(names, ["checkout", "search"], "span_name series");
    assert!(
        !server.label_names(range).iter().any(|n| n == "span_id"),
        "span_id must not be a series label"
    );
}

/// Service identity from the application: a process started with
/// `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` lands in Pyroscope
/// under that name with its version, environment and source-link labels,
/// and a secret in its environment goes nowhere.
#[test]
fn otel_service_names_and_resource_labels_reach_pyroscope_and_secrets_do_not() {
    if !is_root() {
        return;
    }
    const SECRET: &str = "tok-SECRET-7f3a9c";
    let server = Pyroscope::start();
    let begin = now_ms() - 1000;
    let _app = Running::spawn(
        Command::new(machine_python())
            .args(["-c", "while True: sum(range(10000))"])
            .env("OTEL_SERVICE_NAME", "smolder-test-otel-api")
            .env(
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=ignored,service.version=1.2.3,deployment.environment.name=staging,\
                 vcs.repository.url.full=https%3A%2F%2Fgithub.com%2Facme%2Fapi,\
                 vcs.ref.head.revision=abc123",
            )
            .env("API_TOKEN", SECRET)
            .stdout(Stdio::null()),
        Duration::from_millis(200),
    );
    let config = format!(
        "[server]\nurl = \"{}\"\n\n[profiling]\nwindow = \"3s\"\n\n[[processes.include]]\nservice = \"^smolder-test-\"\n",
        server.url()
    );
    let agent = Agent::start(&config);
    agent.wait_metric("smolder_pushes_ok_total", Duration::from_secs(30), |v| {
        v >= 2.0
    });
    let (status, log) = agent.stop();
    assert!(status.success(), "agent exit: {status}");
    let range = (begin, now_ms() + 1000);
    assert!(
        server
            .label_values("service_name", range)
            .iter()
            .any(|s| s == "smolder-test-otel-api"),
        "service names: {:?}",
        server.label_values("service_name", range)
    );
    for (label, value) in [
        ("service_version", "1.2.3"),
        ("deployment_environment", "staging"),
        ("service_repository", "https://github.com/acme/api"),
        ("service_git_ref", "abc123"),
    ] {
        assert_eq!(server.label_values(label, range), [value], "{label}");
    }
    for name in server.label_names(range) {
        for value in server.label_values(&name, range) {
            assert!(!value.contains(SECRET), "{name}={value} leaks the secret");
        }
    }
    let graph = server.stacks(CPU_TYPE, r#"{service_name="smolder-test-otel-api"}"#, range);
    assert!(graph.total > 0, "no profile stored");
    assert!(
        !graph.names.iter().any(|n| n.contains(SECRET)),
        "a profile's strings leak the secret"
    );
    assert!(!log.contains(SECRET), "the agent log leaks the secret");
}
