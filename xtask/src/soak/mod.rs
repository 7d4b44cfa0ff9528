//! `cargo xtask soak`: the release agent for a long run (30 minutes by
//! default) against a real Pyroscope on loopback, behind a proxy that
//! injects faults, while processes churn (C, Python, Go; thousands started
//! and exited) and libraries are loaded and unloaded. It reports the
//! agent's RSS over time and its slope after warm-up, its CPU (process and
//! BPF programs), the occupancy of its BPF maps, and the windows it
//! produced against those Pyroscope stored.
//!
//! Faults, at fixed fractions of the run (minutes given for 30):
//! 5 server stopped (SIGTERM) for 1 min, then started on the same data;
//! 9 responses held 4 s each for 2 min; 13 every push answered 429
//! (Retry-After 5) for 1.5 min; 17 every push answered 503 for 1.5 min;
//! 21 server stopped again for 1 min; 22 to the end: no fault.

mod bpf_maps;
mod churn;
mod proxy;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::bench::agent::{bpf_ms, process_cpu_ms, rss_mib, status_mib, stop, BpfStats};
use crate::pyroscope::Server;
use crate::util::{cargo, catch_interrupts, die_with_parent, workspace_root, INTERRUPTED};
use churn::Workloads;
use proxy::{Fault, Proxy};

const USAGE: &str = "cargo xtask soak [--minutes N]

  --minutes N   length of the run (default 30; faults keep their fractions)

Writes target/soak/report.md and target/soak/agent.log; fails if the agent
exits, loses a window, or its RSS grows after warm-up.";

/// The agent's window (its default).
const WINDOW: Duration = Duration::from_secs(15);
/// How often RSS and CPU are read.
const TICK: Duration = Duration::from_secs(10);
/// Growth after warm-up that counts as a leak, in MiB per hour.
const MAX_SLOPE_MIB_PER_HOUR: f64 = 4.0;
/// The anchor whose windows are counted in Pyroscope (its script's name).
const ANCHOR_SERVICE: &str = "soak_anchor";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    Proxy(Fault),
    ServerDown,
}

/// (start, length) in thirtieths of the run, and what happens.
const SCHEDULE: [(u32, u32, Action); 5] = [
    (5, 1, Action::ServerDown),
    (9, 2, Action::Proxy(Fault::Slow(Duration::from_secs(4)))),
    (13, 1, Action::Proxy(Fault::TooManyRequests(5))),
    (17, 1, Action::Proxy(Fault::ServerError(503))),
    (21, 1, Action::ServerDown),
];

fn describe(action: Action) -> String {
    match action {
        Action::ServerDown => "server stopped".into(),
        Action::Proxy(Fault::Slow(d)) => format!("responses held {} s", d.as_secs()),
        Action::Proxy(Fault::TooManyRequests(after)) => {
            format!("429 (Retry-After {after})")
        }
        Action::Proxy(Fault::ServerError(status)) => format!("{status}"),
        Action::Proxy(Fault::None) => "none".into(),
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let minutes: f64 = match args {
        [] => 30.0,
        [flag, n] if flag == "--minutes" => n.parse().context("--minutes")?,
        [h] if h == "--help" || h == "-h" => {
            println!("{USAGE}");
            return Ok(());
        }
        _ => bail!("{USAGE}"),
    };
    if minutes < 3.0 {
        bail!("--minutes: at least 3 (every fault needs a few windows)");
    }
    crate::setup::setup()?;
    cargo(&["build", "--release", "-p", "smolder"])?;
    let report = soak(Duration::from_secs_f64(minutes * 60.0))?;
    let path = workspace_root().join("target/soak/report.md");
    std::fs::write(&path, report.to_string())?;
    print!("{report}");
    println!("(written to {})", path.display());
    report.verdict()
}

/// The agent, stopped (SIGTERM, then SIGKILL) on drop.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        stop(&mut self.0);
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The agent's Prometheus metrics, by name (labelled series skipped).
fn scrape(port: u16) -> Result<HashMap<String, f64>> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Points with data for `service` between `start` and `end` (ms), one per
/// third of a window: each window the server stored is one point.
fn stored_windows(server: &Server, service: &str, start: u64, end: u64) -> Result<usize> {
    let body = serde_json::json!({
        "profileTypeID": "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
        "labelSelector": format!("{{service_name=\"{service}\"}}"),
        "start": start,
        "end": end,
        "step": WINDOW.as_secs_f64() / 3.0,
    });
    let text = server.post_json("/querier.v1.QuerierService/SelectSeries", &body.to_string())?;
    let reply: serde_json::Value = serde_json::from_str(&text)?;
    Ok(reply["series"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["points"].as_array().into_iter().flatten())
        .filter(|p| p["value"].as_f64().is_some_and(|v| v > 0.0))
        .count())
}

/// (RSS, of which anonymous, of which file-backed) in MiB: file pages are
/// binaries and debug files mapped while tables and symbols are built,
/// which the kernel may reclaim; anonymous memory is the agent's own.
fn memory_mib(pid: u32) -> Result<(f64, f64, f64)> {
    let [rss, anon, file] = status_mib(pid, ["VmRSS:", "RssAnon:", "RssFile:"])?;
    Ok((rss, anon, file))
}

/// RSS, CPU and maps at one moment of the run.
struct Mark {
    minute: f64,
    rss_mib: (f64, f64, f64),
    maps: Vec<bpf_maps::Occupancy>,
    metrics: HashMap<String, f64>,
}

pub struct Report {
    minutes: f64,
    rss: Vec<(f64, (f64, f64, f64))>,
    /// (minute, MiB) of heap the agent holds (its `smolder_heap_bytes`).
    heap: Vec<(f64, f64)>,
    marks: Vec<Mark>,
    peak_rss_mib: f64,
    cpu_percent: f64,
    bpf_percent: f64,
    started: u64,
    start_failures: u64,
    faults: Vec<(f64, f64, String)>,
    produced: f64,
    stored: usize,
    final_metrics: HashMap<String, f64>,
    proxy: [u64; 4],
    log_warnings: usize,
    log_errors: usize,
    agent_exited: Option<String>,
    interrupted: bool,
}

fn soak(length: Duration) -> Result<Report> {
    let dir = workspace_root().join("target/soak");
    let _ = std::fs::remove_dir_all(dir.join("spool"));
    std::fs::create_dir_all(&dir)?;
    let _stats = BpfStats::enable()?;
    let workloads = Arc::new(Workloads::build(&dir.join("bin"))?);
    let mut server = Server::start()?;
    let proxy = Proxy::start(server.http_port)?;
    let _anchors = workloads.start_anchors()?;
    let metrics_port = free_port()?;
    let log = std::fs::File::create(dir.join("agent.log"))?;
    let mut agent = Agent(
        die_with_parent(&mut Command::new(
            workspace_root().join("target/release/smolder"),
        ))
        .args(["agent", "--off-cpu", "--server"])
        .arg(format!("http://127.0.0.1:{}", proxy.port))
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .args(["--metrics-address", &format!("127.0.0.1:{metrics_port}")])
        .env("SMOLDER_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?,
    );
    let pid = agent.0.id();
    let ready = Instant::now();
    while scrape(metrics_port).is_err() {
        if let Some(status) = agent.0.try_wait()? {
            bail!("the agent exited at start: {status} (see target/soak/agent.log)");
        }
        if ready.elapsed() > Duration::from_secs(120) {
            bail!("the agent's metrics did not answer within 120 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let start_ms = now_ms();
    catch_interrupts();
    let churn = workloads.start_churn();
    let started = Instant::now();
    let (cpu0, bpf0) = (process_cpu_ms(pid)?, bpf_ms()?);
    let minute = |t: Duration| t.as_secs_f64() / 60.0;
    let total = minute(length);
    let at = |thirtieths: u32| length.mul_f64(f64::from(thirtieths) / 30.0);
    // The minutes docs/benchmarks.md reports, else a sixth and a half.
    let mark_times: Vec<Duration> = if length >= Duration::from_secs(30 * 60) {
        [5, 15, 30]
            .into_iter()
            .map(|m| Duration::from_secs(m * 60))
            .filter(|&t| t < length)
            .collect()
    } else {
        vec![length / 6, length / 2]
    };
    let mut heap = Vec::new();
    let mut marks = Vec::new();
    let mut rss = Vec::new();
    let mut faults = Vec::new();
    let mut active: Option<(usize, Instant)> = None;
    let mut next_fault = 0;
    let mut agent_exited = None;
    let mut interrupted = false;
    let mut next_progress = Duration::ZERO;
    eprintln!(
        "soak: {total:.0} min, agent pid {pid}, pyroscope on {}, proxy on {}",
        server.http_port, proxy.port
    );
    loop {
        let now = started.elapsed();
        if now >= length {
            break;
        }
        if INTERRUPTED.load(Ordering::Relaxed) {
            eprintln!(
                "soak: interrupted at {:.1} min; reporting what was measured",
                minute(now)
            );
            interrupted = true;
            break;
        }
        if let Some(status) = agent.0.try_wait()? {
            agent_exited = Some(status.to_string());
            break;
        }
        // Faults: end the active one when its time is up, start the next
        // when it is due.
        if let Some((index, since)) = active {
            let (begin, length, action) = SCHEDULE[index];
            if now >= at(begin + length) {
                match action {
                    Action::ServerDown => server.restart()?,
                    Action::Proxy(_) => proxy.set(Fault::None),
                }
                faults.push((
                    minute(since.duration_since(started)),
                    minute(since.elapsed()),
                    describe(action),
                ));
                active = None;
            }
        }
        if active.is_none() && next_fault < SCHEDULE.len() && now >= at(SCHEDULE[next_fault].0) {
            let action = SCHEDULE[next_fault].2;
            eprintln!("soak: {:.1} min: {}", minute(now), describe(action));
            match action {
                Action::ServerDown => server.stop(),
                Action::Proxy(fault) => proxy.set(fault),
            }
            active = Some((next_fault, Instant::now()));
            next_fault += 1;
        }
        let resident = memory_mib(pid)?;
        rss.push((minute(now), resident));
        if let Some(bytes) = scrape(metrics_port)
            .ok()
            .and_then(|m| m.get("smolder_heap_bytes").copied())
            .filter(|&b| b > 0.0)
        {
            heap.push((minute(now), bytes / 1048576.0));
        }
        if marks.len() < mark_times.len() && now >= mark_times[marks.len()] {
            marks.push(Mark {
                minute: minute(now),
                rss_mib: resident,
                maps: bpf_maps::occupancy()?,
                metrics: scrape(metrics_port).unwrap_or_default(),
            });
        }
        if now >= next_progress {
            let m = scrape(metrics_port).unwrap_or_default();
            let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
            eprintln!(
                "soak: {:>4.1}/{total:.0} min  RSS {:.1} MiB (anon {:.1})  windows {}  pushes ok {} failed {} 429 {}  spool {}  processes started {}",
                minute(now),
                resident.0,
                resident.1,
                get("smolder_windows_total"),
                get("smolder_pushes_ok_total"),
                get("smolder_pushes_failed_total"),
                get("smolder_pushes_rate_limited_total"),
                get("smolder_spool_files"),
                churn.counts().0,
            );
            next_progress = now + Duration::from_secs(60);
        }
        let tick = Instant::now();
        while tick.elapsed() < TICK && !INTERRUPTED.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    if let Some((index, _)) = active {
        if SCHEDULE[index].2 == Action::ServerDown {
            server.restart()?;
        }
    }
    proxy.set(Fault::None);
    let (started_count, start_failures) = churn.counts();
    drop(churn);
    let elapsed = started.elapsed();
    let (cpu1, bpf1) = (process_cpu_ms(pid).unwrap_or(cpu0), bpf_ms()?);
    let resident = memory_mib(pid).unwrap_or_default();
    let (_, peak) = rss_mib(pid).unwrap_or((0.0, 0.0));
    let final_metrics = scrape(metrics_port).unwrap_or_default();
    marks.push(Mark {
        minute: minute(elapsed),
        rss_mib: resident,
        maps: bpf_maps::occupancy()?,
        metrics: final_metrics.clone(),
    });
    // The agent pushes what it holds when told to stop.
    drop(agent);
    let end_ms = now_ms();
    let stored = stored_windows(&server, ANCHOR_SERVICE, start_ms, end_ms)?;
    let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
    let seconds = elapsed.as_secs_f64();
    Ok(Report {
        minutes: total,
        rss,
        heap,
        marks,
        peak_rss_mib: peak,
        cpu_percent: (cpu1 - cpu0) / 10.0 / seconds,
        bpf_percent: (bpf1 - bpf0) / 10.0 / seconds,
        started: started_count,
        start_failures,
        faults,
        produced: final_metrics
            .get("smolder_windows_total")
            .copied()
            .unwrap_or(0.0),
        stored,
        final_metrics,
        proxy: [
            proxy
                .counts
                .forwarded_ok
                .load(std::sync::atomic::Ordering::Relaxed),
            proxy
                .counts
                .forwarded_other
                .load(std::sync::atomic::Ordering::Relaxed),
            proxy
                .counts
                .faulted
                .load(std::sync::atomic::Ordering::Relaxed),
            proxy
                .counts
                .unreachable
                .load(std::sync::atomic::Ordering::Relaxed),
        ],
        log_warnings: log.lines().filter(|l| l.contains("WARN")).count(),
        log_errors: log.lines().filter(|l| l.contains("ERROR")).count(),
        agent_exited,
        interrupted,
    })
}

/// Least-squares slope of (minute, MiB) points, in MiB per hour.
fn slope_per_hour(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let (mx, my) = (
        points.iter().map(|p| p.0).sum::<f64>() / n,
        points.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let var: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if var == 0.0 {
        0.0
    } else {
        cov / var * 60.0
    }
}

impl Report {
    /// (minute, MiB) after warm-up (the first sixth of the run), of the
    /// part of RSS `pick` takes.
    fn settled(&self, pick: fn(&(f64, f64, f64)) -> f64) -> Vec<(f64, f64)> {
        self.rss
            .iter()
            .filter(|(m, _)| *m >= self.minutes / 6.0)
            .map(|(m, r)| (*m, pick(r)))
            .collect()
    }

    /// Heap points after warm-up.
    fn settled_heap(&self) -> Vec<(f64, f64)> {
        self.heap
            .iter()
            .filter(|(m, _)| *m >= self.minutes / 6.0)
            .copied()
            .collect()
    }

    fn metric(&self, name: &str) -> f64 {
        self.final_metrics.get(name).copied().unwrap_or(0.0)
    }

    fn lost(&self) -> f64 {
        (self.produced - self.stored as f64).max(0.0)
    }

    fn verdict(&self) -> Result<()> {
        if self.interrupted {
            bail!("the soak was interrupted");
        }
        if let Some(status) = &self.agent_exited {
            bail!("the agent exited during the soak: {status}");
        }
        let slope = slope_per_hour(&self.settled(|r| r.1));
        if slope > MAX_SLOPE_MIB_PER_HOUR {
            bail!("anonymous RSS grows after warm-up: {slope:.1} MiB/hour (at most {MAX_SLOPE_MIB_PER_HOUR})");
        }
        let dropped = self.metric("smolder_spool_dropped_total")
            + self.metric("smolder_windows_dropped_total")
            + self.metric("smolder_pushes_rejected_total");
        if self.lost() > 0.0 || dropped > 0.0 {
            bail!(
                "windows lost: {} produced, {} stored; {dropped} requests dropped or rejected",
                self.produced,
                self.stored
            );
        }
        Ok(())
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = String::new();
        let _ = writeln!(out, "## Soak: {:.0} minutes\n", self.minutes);
        let _ = writeln!(
            out,
            "Processes started by the churn: {} (C with two library loads each, Python, Go in turn; {} failed to start or exited non-zero), plus two anchors (a Python spinner; a C process loading and unloading one of 32 library copies 10 times a second).\n",
            self.started, self.start_failures
        );
        let _ = writeln!(
            out,
            "| minute | RSS MiB | anonymous | file-backed | heap in use | windows | pushes ok | spool files |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|");
        for mark in &self.marks {
            let get = |k: &str| mark.metrics.get(k).copied().unwrap_or(0.0);
            let _ = writeln!(
                out,
                "| {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} |",
                mark.minute,
                mark.rss_mib.0,
                mark.rss_mib.1,
                mark.rss_mib.2,
                get("smolder_heap_bytes") / 1048576.0,
                get("smolder_windows_total"),
                get("smolder_pushes_ok_total"),
                get("smolder_spool_files"),
            );
        }
        for (what, pick) in [
            ("RSS", (|r| r.0) as fn(&(f64, f64, f64)) -> f64),
            ("anonymous RSS", |r| r.1),
        ] {
            let settled = self.settled(pick);
            let (low, high) = settled
                .iter()
                .fold((f64::MAX, 0.0f64), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
            let _ = writeln!(
                out,
                "\n{what} after warm-up: {low:.1}–{high:.1} MiB, slope {:+.2} MiB/hour.",
                slope_per_hour(&settled)
            );
        }
        let heap = self.settled_heap();
        if let Some(high) = heap.iter().map(|p| p.1).reduce(f64::max) {
            let low = heap.iter().map(|p| p.1).fold(f64::MAX, f64::min);
            let _ = writeln!(
                out,
                "\nHeap in use after warm-up: {low:.1}–{high:.1} MiB, slope {:+.2} MiB/hour.",
                slope_per_hour(&heap)
            );
        }
        let _ = writeln!(
            out,
            "\nLimit on the anonymous slope: {MAX_SLOPE_MIB_PER_HOUR} MiB/hour; peak RSS {:.1} MiB.",
            self.peak_rss_mib
        );
        let _ = writeln!(
            out,
            "CPU: agent process {:.2}% of one core, its BPF programs {:.2}%.\n",
            self.cpu_percent, self.bpf_percent
        );
        let _ = writeln!(out, "Faults injected:\n");
        for (at, length, what) in &self.faults {
            let _ = writeln!(out, "- minute {at:.1}, {length:.1} min: {what}");
        }
        let _ = writeln!(
            out,
            "\nProxy: {} pushes forwarded and stored (200), {} forwarded and refused by the server, {} answered with a fault, {} with the server down.",
            self.proxy[0], self.proxy[1], self.proxy[2], self.proxy[3]
        );
        let _ = writeln!(
            out,
            "Agent: {} pushes ok, {} failed, {} rate-limited, {} rejected; {} spooled requests dropped; {} windows dropped; {} samples lost; log: {} warnings, {} errors.",
            self.metric("smolder_pushes_ok_total"),
            self.metric("smolder_pushes_failed_total"),
            self.metric("smolder_pushes_rate_limited_total"),
            self.metric("smolder_pushes_rejected_total"),
            self.metric("smolder_spool_dropped_total"),
            self.metric("smolder_windows_dropped_total"),
            self.metric("smolder_samples_lost_total"),
            self.log_warnings,
            self.log_errors,
        );
        let _ = writeln!(
            out,
            "Windows: {} produced, {} of `{ANCHOR_SERVICE}` stored in Pyroscope ({} lost).\n",
            self.produced,
            self.stored,
            self.lost()
        );
        let _ = writeln!(out, "BPF map entries (minute: map entries/max):\n");
        for mark in &self.marks {
            let maps: Vec<String> = mark
                .maps
                .iter()
                .map(|(name, n, max)| format!("{name} {n}/{max}"))
                .collect();
            let _ = writeln!(out, "- {:.1}: {}", mark.minute, maps.join(", "));
        }
        let _ = writeln!(
            out,
            "\nUnwind tables at the end: {:.1} of {:.1} MiB; {} tables evicted; symbol cache {} addresses, {} parsed files.",
            self.metric("smolder_unwind_table_bytes") / 1048576.0,
            self.metric("smolder_unwind_table_capacity_bytes") / 1048576.0,
            self.metric("smolder_unwind_tables_evicted_total"),
            self.metric("smolder_symbol_cached_addresses"),
            self.metric("smolder_symbol_parsed_files"),
        );
        f.write_str(&out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_in_mib_per_hour() {
        let flat = [(5.0, 40.0), (10.0, 40.0), (15.0, 40.0)];
        assert_eq!(slope_per_hour(&flat), 0.0);
        let growing = [(0.0, 40.0), (30.0, 41.0), (60.0, 42.0)];
        assert!((slope_per_hour(&growing) - 2.0).abs() < 1e-9);
    }
}
