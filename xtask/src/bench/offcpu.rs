//! Off-CPU cost on a context-switch-heavy load (a pipe ping-pong): smolder
//! `record --off-cpu --all` next to libbpf-tools `offcputime` (all
//! processes), each attached while the ping-pong runs, and the ping-pong's
//! slowdown under each.

use std::fmt;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::rusage;
use super::{median, Options};
use crate::util::{output, run, workspace_root};

/// Ping-pong run time; profilers run `LOAD_SECONDS + 3` s around it.
const LOAD_SECONDS: u64 = 5;

pub struct Report {
    runs: usize,
    switches_per_s: f64,
    baseline_trips: f64,
    smolder_trips: f64,
    smolder_process_ms: f64,
    smolder_bpf_ms: f64,
    peer_trips: f64,
    peer_process_ms: f64,
    peer_bpf_ms: f64,
    smolder_bpf_ns_per_switch: f64,
    peer_bpf_ns_per_switch: f64,
}

/// Keeps the kernel's BPF run-time accounting on while it lives, so that
/// offcputime's programs report their run time too.
fn enable_bpf_stats() -> Result<OwnedFd> {
    const BPF_ENABLE_STATS: libc::c_long = 32;
    let mut attr = [0u32; 4]; // union bpf_attr { enable_stats.type = BPF_STATS_RUN_TIME (0) }
                              // SAFETY: bpf(2) reads `size` bytes of a zeroed attribute buffer we own.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, BPF_ENABLE_STATS, attr.as_mut_ptr(), 16usize) };
    if fd < 0 {
        bail!("BPF_ENABLE_STATS: {}", std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// (program id, run time in ns) of every loaded BPF program, from bpftool.
/// This bpftool cannot say which process holds a program, so the caller
/// compares the lists from before and after the peer started.
fn bpf_programs() -> Result<Vec<(u64, u64)>> {
    let out = output(Command::new("bpftool").args(["prog", "show", "-j"]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let number_after = |object: &str, key: &str| -> Option<u64> {
        let rest = object.split(key).nth(1)?;
        rest.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    };
    Ok(text
        .split("{\"id\":")
        .skip(1)
        .filter_map(|object| {
            let id = object
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .ok()?;
            Some((id, number_after(object, "\"run_time_ns\":").unwrap_or(0)))
        })
        .collect())
}

fn context_switches() -> Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    stat.lines()
        .find_map(|l| l.strip_prefix("ctxt ")?.trim().parse().ok())
        .context("no ctxt line in /proc/stat")
}

fn pingpong(binary: &Path) -> Result<f64> {
    let out = output(Command::new(binary).arg(LOAD_SECONDS.to_string()))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("round_trips_per_second ")?.parse().ok())
        .context("pingpong printed no rate")
}

pub fn measure(options: &Options) -> Result<Report> {
    let dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let binary = dir.join("pingpong");
    run(Command::new("clang-19")
        .args(["-O1", "-g", "-fno-omit-frame-pointer", "-pthread"])
        .arg(workspace_root().join("testdata/pingpong.c"))
        .arg("-o")
        .arg(&binary))?;
    let smolder = workspace_root().join("target/release/smolder");
    let window = (LOAD_SECONDS + 3).to_string();
    let (mut base, mut ours, mut theirs) = (vec![], vec![], vec![]);
    let (mut s_proc, mut s_bpf, mut p_proc, mut p_bpf) = (vec![], vec![], vec![], vec![]);
    let mut switches = vec![];
    let (mut s_per_switch, mut p_per_switch) = (vec![], vec![]);
    for run in 1..=options.runs {
        eprintln!(
            "off-CPU run {run}/{}: baseline, smolder, offcputime",
            options.runs
        );
        let before = context_switches()?;
        base.push(pingpong(&binary)?);
        switches.push((context_switches()? - before) as f64 / LOAD_SECONDS as f64);

        let smolder_start = context_switches()?;
        let child = Command::new(&smolder)
            .args(["record", "--off-cpu", "--all", "--bpf-stats", "-d"])
            .arg(format!("{window}s"))
            .arg("-o")
            .arg(dir.join("offcpu.pb.gz"))
            .stderr(Stdio::piped())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(1500));
        ours.push(pingpong(&binary)?);
        let (usage, text) = rusage::wait_with_stderr(child)?;
        let bpf_ns: f64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("BPF off-CPU: ")?
                    .strip_suffix(" ns total")?
                    .parse()
                    .ok()
            })
            .with_context(|| format!("no off-CPU BPF time in smolder's output:\n{text}"))?;
        s_proc.push(usage.cpu.as_secs_f64() * 1e3);
        s_bpf.push(bpf_ns / 1e6);
        // Each tool runs at a different ping-pong rate (a profiler on the
        // switch path changes how fast this VM wakes threads), so compare
        // BPF time per context switch, not in total.
        s_per_switch.push(bpf_ns / (context_switches()? - smolder_start).max(1) as f64);

        let stats = enable_bpf_stats()?;
        let before: Vec<u64> = bpf_programs()?.into_iter().map(|(id, _)| id).collect();
        let peer_start = context_switches()?;
        let peer = Command::new("/usr/sbin/offcputime")
            .arg(&window)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(1500));
        theirs.push(pingpong(&binary)?);
        let peer_ns: u64 = bpf_programs()?
            .into_iter()
            .filter(|(id, _)| !before.contains(id))
            .map(|(_, ns)| ns)
            .sum();
        p_bpf.push(peer_ns as f64 / 1e6);
        p_per_switch.push(peer_ns as f64 / (context_switches()? - peer_start).max(1) as f64);
        drop(stats);
        p_proc.push(rusage::wait(peer)?.cpu.as_secs_f64() * 1e3);
    }
    Ok(Report {
        runs: options.runs,
        switches_per_s: median(&mut switches),
        baseline_trips: median(&mut base),
        smolder_trips: median(&mut ours),
        smolder_process_ms: median(&mut s_proc),
        smolder_bpf_ms: median(&mut s_bpf),
        peer_trips: median(&mut theirs),
        peer_process_ms: median(&mut p_proc),
        peer_bpf_ms: median(&mut p_bpf),
        smolder_bpf_ns_per_switch: median(&mut s_per_switch),
        peer_bpf_ns_per_switch: median(&mut p_per_switch),
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slowdown = |trips: f64| (1.0 - trips / self.baseline_trips) * 100.0;
        let ours = self.smolder_process_ms + self.smolder_bpf_ms;
        let theirs = self.peer_process_ms + self.peer_bpf_ms;
        writeln!(
            f,
            "== off-CPU: pipe ping-pong, {:.0} context switches/s, {LOAD_SECONDS} s, median of {} runs ==",
            self.switches_per_s, self.runs
        )?;
        writeln!(
            f,
            "  baseline    {:>8.0} round trips/s",
            self.baseline_trips
        )?;
        writeln!(
            f,
            "  smolder     {:>8.0} round trips/s ({:+.1}% slowdown), CPU {:.1} ms ({:.1} process + {:.1} BPF)",
            self.smolder_trips,
            slowdown(self.smolder_trips),
            ours,
            self.smolder_process_ms,
            self.smolder_bpf_ms
        )?;
        writeln!(
            f,
            "  offcputime  {:>8.0} round trips/s ({:+.1}% slowdown), CPU {:.1} ms ({:.1} process + {:.1} BPF)",
            self.peer_trips,
            slowdown(self.peer_trips),
            theirs,
            self.peer_process_ms,
            self.peer_bpf_ms
        )?;
        writeln!(
            f,
            "  BPF per context switch: smolder {:.0} ns, offcputime {:.0} ns: {:.2}x",
            self.smolder_bpf_ns_per_switch,
            self.peer_bpf_ns_per_switch,
            self.smolder_bpf_ns_per_switch / self.peer_bpf_ns_per_switch
        )?;
        writeln!(
            f,
            "  ratio smolder/offcputime CPU: {:.2}x (target <= 1x); smolder slowdown under 5%: {}",
            ours / theirs,
            if slowdown(self.smolder_trips) < 5.0 {
                "yes"
            } else {
                "NO"
            }
        )
    }
}
