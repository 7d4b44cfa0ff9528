//! `smolder record`: collect -> aggregate -> symbolize -> encode, once.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use symbolizer::{Symbolizer, SymbolizerConfig, SymbolizerStats};

use crate::aggregate::Aggregate;
use crate::collect::{
    BpfKernelSymbols, CudaProbeStats, LoadError, Sample, Sampler, SamplerConfig, SamplerStats,
    UnwindMode, DRAIN_INTERVAL,
};
use crate::config::{OutputFormat, RecordConfig};
use crate::debuginfod::{Debuginfod, DebuginfodConfig, DebuginfodStats};
use crate::encode::{collapsed_lines, write_pprof, write_svg, EncodeError};
use crate::go::{GoTracker, GoTrackerStats};
use crate::gpu_calls::{self, GpuCalls};
use crate::preflight::{self, PreflightError};
use crate::processes::{process_alive, ProcessTracker};
use crate::profile::{Profile, ProfileKind};
use crate::progress::Progress;
use crate::python::{BpfPythonStore, PythonTracker, TrackerStats};
use crate::symbolize::{symbolize, Window};
use crate::target::{self, Launched, TargetError, TargetSpec};
use crate::trace_context::{TraceContextTracker, TraceTrackerStats};
use crate::unwind::{self, Seen, UnwindStats};
use crate::{report, signals};

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error("cannot start the BPF sampler")]
    Load(#[from] LoadError),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("cannot write {path}")]
    Write {
        path: String,
        #[source]
        source: EncodeError,
    },
}

/// CPU time this process has used so far (user + system).
fn cpu_used() -> Duration {
    // SAFETY: getrusage fills a zeroed plain-data struct for this process.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Logs the CPU each phase of a capture used (SMOLDER_LOG=debug).
struct PhaseClock(Duration);

impl PhaseClock {
    fn lap(&mut self, phase: &str) {
        let now = cpu_used();
        tracing::debug!(
            "phase {phase}: {:.1} ms CPU",
            (now - self.0).as_secs_f64() * 1e3
        );
        self.0 = now;
    }
}

/// What a capture produced, for the caller and the summary.
#[derive(Debug)]
pub struct RecordOutcome {
    pub on_cpu: Option<Profile>,
    pub off_cpu: Option<Profile>,
    pub cuda_launches: Option<Profile>,
    pub gpu_waits: Option<Profile>,
    /// The CUDA probes at the end.
    pub cuda_probes: CudaProbeStats,
    pub sampler: SamplerStats,
    /// The unwind tables at the end (None with frame pointers only).
    pub unwind: Option<UnwindStats>,
    pub symbolizer: SymbolizerStats,
    pub debuginfod: Option<Arc<DebuginfodStats>>,
    pub processes_missed: u64,
    pub python: TrackerStats,
    pub traces: TraceTrackerStats,
    pub go: GoTrackerStats,
}

/// One output file, opened before the capture so a bad path fails early.
/// If the capture fails before the profile is written, the empty file is
/// removed again.
struct Output {
    path: PathBuf,
    file: Option<File>,
    written: bool,
}

impl Output {
    fn open(path: PathBuf) -> Result<Self, RecordError> {
        let file = preflight::open_output(&path)?;
        Ok(Self {
            path,
            file: Some(file),
            written: false,
        })
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if !self.written {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

pub fn record(config: &RecordConfig) -> Result<RecordOutcome, RecordError> {
    let mut clock = PhaseClock(cpu_used());
    preflight::check_system(config.unwind.mode == UnwindMode::Dwarf)?;
    if let TargetSpec::Pids(pids) = &config.targets {
        preflight::check_pids(pids)?;
    }
    let on_cpu_output = config
        .on_cpu
        .then(|| Output::open(config.output.clone()))
        .transpose()?;
    let off_cpu_output = config
        .off_cpu
        .map(|_| Output::open(config.off_cpu_output()))
        .transpose()?;
    let cuda_outputs = config
        .cuda
        .map(|_| -> Result<_, RecordError> {
            Ok((
                Output::open(config.cuda_output())?,
                Output::open(config.gpu_wait_output())?,
            ))
        })
        .transpose()?;
    signals::install();

    let mut sampler = Sampler::load(
        SamplerConfig {
            on_cpu: config.on_cpu,
            off_cpu: config.off_cpu,
            frequency: config.frequency,
            targets: config.targets.sampler_targets(),
            self_tgid: std::process::id(),
            unwind: config.unwind,
            cuda: config.cuda,
        },
        config.bpf_stats,
    )?;
    if let TargetSpec::Pids(pids) = &config.targets {
        for &pid in pids {
            sampler.add_target(pid)?;
        }
    }
    clock.lap("load");
    let mut symbolizer = Symbolizer::new(SymbolizerConfig::default());
    match BpfKernelSymbols::load() {
        Ok(source) => symbolizer.set_kernel_source(Box::new(source)),
        Err(e) => tracing::info!("kernel symbols will come from /proc/kallsyms: {e:#}"),
    }
    let debuginfod =
        DebuginfodConfig::from_env().and_then(|config| match Debuginfod::new(config) {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::warn!("debuginfod disabled: {e}");
                None
            }
        });
    let debuginfod_stats = debuginfod.as_ref().map(Debuginfod::stats);
    if let Some(client) = debuginfod {
        symbolizer.set_debug_info_source(Box::new(client));
    }
    let mut processes = ProcessTracker::default();
    let running = match &config.targets {
        TargetSpec::All => unwind::all_pids(),
        TargetSpec::Pids(pids) => pids.clone(),
        TargetSpec::Command(_) => Vec::new(), // not started yet
    };
    let mut python = PythonTracker::new(
        sampler
            .take_python_store()
            .ok_or(LoadError::Missing("python_processes"))?,
    );
    python.preload(running.iter().copied());
    let traces = TraceContextTracker::new(
        sampler
            .take_trace_processes()
            .ok_or(LoadError::Missing("trace_processes"))?,
    )
    .map_err(|source| LoadError::Map {
        name: "trace_processes",
        source,
    })?;
    let go = GoTracker::new(
        sampler
            .take_go_processes()
            .ok_or(LoadError::Missing("go_processes"))?,
    )
    .map_err(|source| LoadError::Map {
        name: "go_processes",
        source,
    })?;
    let mut followers = Followers { python, traces, go };
    followers.go.preload(running.iter().copied());
    if let Some(tables) = sampler.unwind_tables() {
        let loaded = unwind::preload(tables, &mut symbolizer, running.iter().copied());
        // The first samples should be walked with tables: wait a little
        // for them (each is built once; a 1 GiB library takes about 1 s).
        tables.finish_pending(unwind::PRELOAD_WAIT);
        tracing::debug!("unwind tables: {loaded} processes preloaded");
    }
    if config.cuda.is_some() {
        gpu_calls::attach_running(&mut sampler, &mut symbolizer, &running);
    }
    clock.lap("unwind tables");
    let period_ns = 1_000_000_000 / u64::from(config.frequency.get());
    let mut on_cpu = Aggregate::new(period_ns);
    let mut off_cpu = Aggregate::new(0);
    let mut gpu = GpuCalls::default();
    let mut progress = Progress::new(config.quiet);

    let start = SystemTime::now();
    let started = Instant::now();
    sampler.start()?;
    let mut launched = match &config.targets {
        TargetSpec::Command(argv) => Some(target::launch(argv, &mut sampler)?),
        _ => None,
    };
    if !config.quiet {
        // Like py-spy's first line: the capture has begun (scripts wait for it).
        eprintln!("{}", started_line(config));
    }

    let mut last_liveness_check = Instant::now();
    loop {
        std::thread::sleep(DRAIN_INTERVAL);
        drain(
            &mut sampler,
            &mut processes,
            &mut symbolizer,
            &mut followers,
            &mut on_cpu,
            &mut off_cpu,
            &mut gpu,
        );
        if progress.due() {
            let lost = sampler.stats().ring_buffer_full;
            let seen = on_cpu.process_count().max(off_cpu.process_count());
            // Off-CPU totals are read at the end; meanwhile count the
            // threads seen blocking.
            let (count, what) = if config.on_cpu {
                (on_cpu.samples, "samples")
            } else {
                (off_cpu.threads.len() as u64, "threads blocked")
            };
            progress.update(count, what, seen, lost, config.duration);
        }
        if signals::stop_requested() || config.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if launched.as_mut().is_some_and(command_exited) {
            break;
        }
        if last_liveness_check.elapsed() >= Duration::from_secs(1) {
            last_liveness_check = Instant::now();
            if let Some(tables) = sampler.unwind_tables() {
                tables.reap(process_alive);
            }
            followers.python.reap(process_alive);
            followers.traces.reap(process_alive);
            followers.go.reap(process_alive);
            sampler.cuda_reap(process_alive);
            if let TargetSpec::Pids(pids) = &config.targets {
                if pids.iter().all(|&pid| !process_alive(pid)) {
                    tracing::info!("every target process has exited");
                    break;
                }
            }
        }
    }
    let duration = started.elapsed();
    if let Some(launched) = launched.as_mut() {
        launched.terminate();
    }
    drain(
        &mut sampler,
        &mut processes,
        &mut symbolizer,
        &mut followers,
        &mut on_cpu,
        &mut off_cpu,
        &mut gpu,
    );
    let mut cuda_launches = Aggregate::new(0);
    let mut gpu_waits = Aggregate::new(0);
    gpu.share_out(
        sampler.take_cuda_totals()?,
        &mut cuda_launches,
        &mut gpu_waits,
    );
    let cuda_probes = sampler.cuda_probe_stats();
    for entry in sampler.off_cpu_totals()? {
        let frames = entry
            .python
            .as_ref()
            .map(|stack| followers.python.resolve_off_cpu(stack))
            .unwrap_or_default();
        off_cpu.add_off_cpu(entry, frames);
    }
    let sampler_stats = sampler.stats();
    let unwind_stats = sampler.unwind_stats();
    tracing::debug!("sampler: {sampler_stats:?}; unwind tables: {unwind_stats:?}");
    drop(sampler); // detach before the CPU-heavy part
    progress.finish();
    clock.lap("capture");

    let window = |kind| Window {
        start,
        duration,
        kind,
    };
    let mut outcome = RecordOutcome {
        on_cpu: None,
        off_cpu: None,
        cuda_launches: None,
        gpu_waits: None,
        cuda_probes,
        sampler: sampler_stats,
        unwind: unwind_stats,
        symbolizer: SymbolizerStats::default(),
        debuginfod: None,
        processes_missed: 0,
        python: followers.python.stats(),
        traces: followers.traces.stats(),
        go: followers.go.stats(),
    };
    if let Some(output) = on_cpu_output {
        let kind = ProfileKind::OnCpu {
            frequency_hz: config.frequency.get(),
        };
        let profile = symbolize(
            &on_cpu,
            &mut processes,
            &mut symbolizer,
            followers.python.modules(),
            window(kind),
        );
        write_output(&profile, config.format, output)?;
        outcome.on_cpu = Some(profile);
    }
    if let Some(output) = off_cpu_output {
        let profile = symbolize(
            &off_cpu,
            &mut processes,
            &mut symbolizer,
            followers.python.modules(),
            window(ProfileKind::OffCpu),
        );
        write_output(&profile, config.format, output)?;
        outcome.off_cpu = Some(profile);
    }
    if let Some((launch_output, wait_output)) = cuda_outputs {
        for (aggregate, kind, output) in [
            (&cuda_launches, ProfileKind::CudaLaunch, launch_output),
            (&gpu_waits, ProfileKind::GpuWait, wait_output),
        ] {
            let profile = symbolize(
                aggregate,
                &mut processes,
                &mut symbolizer,
                followers.python.modules(),
                window(kind),
            );
            write_output(&profile, config.format, output)?;
            match kind {
                ProfileKind::CudaLaunch => outcome.cuda_launches = Some(profile),
                _ => outcome.gpu_waits = Some(profile),
            }
        }
    }
    clock.lap("symbolize and encode");
    outcome.symbolizer = symbolizer.stats();
    outcome.debuginfod = debuginfod_stats;
    tracing::debug!("symbolizer: {:?}", outcome.symbolizer);
    outcome.processes_missed = processes.missed;
    Ok(outcome)
}

/// What follows the sampled processes besides their mappings: Python
/// interpreters, trace context publishers, Go binaries.
struct Followers {
    python: PythonTracker<BpfPythonStore>,
    traces: TraceContextTracker,
    go: GoTracker,
}

/// Moves what the BPF side has buffered into the aggregates, reading the
/// mappings of every process seen for the first time while it still lives.
fn drain(
    sampler: &mut Sampler,
    processes: &mut ProcessTracker,
    symbolizer: &mut Symbolizer,
    followers: &mut Followers,
    on_cpu: &mut Aggregate,
    off_cpu: &mut Aggregate,
    gpu: &mut GpuCalls,
) {
    let mut seen: Vec<Seen> = Vec::new();
    let Followers { python, traces, go } = followers;
    gpu_calls::attach_announced(sampler, symbolizer);
    // What a sample needs besides its addresses: its process's maps read,
    // its Python frames and thread name, its goroutine's labels.
    let mut follow = |sample: &mut Sample| {
        processes.observe(sample.pid, sample.mm_id, symbolizer);
        seen.push(Seen::from(&*sample));
        let frames = python.resolve(sample);
        if let Some(name) = python.thread_name(sample.pid, sample.tid) {
            sample.thread_name = name.to_owned();
        }
        (frames, go.labels(sample))
    };
    sampler.drain(|mut sample| {
        let (frames, labels) = follow(&mut sample);
        on_cpu.add(sample, frames, labels);
    });
    sampler.drain_cuda_names(|name| gpu.learn_name(name));
    sampler.drain_cuda(|mut event| {
        let (frames, labels) = follow(&mut event.sample);
        gpu.add(event, frames, labels);
    });
    sampler.drain_python_stacks(|stack| python.learn_off_cpu(&stack));
    sampler.drain_threads(|mut thread| {
        processes.observe(thread.pid, thread.mm_id, symbolizer);
        seen.push(Seen::from(&thread));
        if let Some(name) = python.thread_name(thread.pid, thread.tid) {
            thread.thread_name = name.to_owned();
        }
        off_cpu.note_process(thread.pid);
        off_cpu.name_thread(thread.tid, thread.comm, thread.thread_name);
    });
    python.follow(&seen, processes);
    traces.follow(&seen, processes, symbolizer);
    go.follow(&seen);
    if let Some(tables) = sampler.unwind_tables() {
        unwind::follow(tables, processes, symbolizer, seen);
    }
}

fn command_exited(launched: &mut Launched) -> bool {
    match launched.exited() {
        Some(status) => {
            tracing::info!("command (pid {}) exited: {status}", launched.pid());
            true
        }
        None => false,
    }
}

fn write_output(
    profile: &Profile,
    format: OutputFormat,
    mut output: Output,
) -> Result<(), RecordError> {
    let path = output.path.display().to_string();
    let title = match profile.kind {
        ProfileKind::OnCpu { .. } => "smolder record: on-CPU",
        ProfileKind::OffCpu => "smolder record: off-CPU (microseconds blocked)",
        ProfileKind::CudaLaunch => "smolder record: CUDA launches",
        ProfileKind::GpuWait => "smolder record: GPU waits (microseconds in sync calls)",
    };
    let Some(file) = output.file.take() else {
        return Ok(());
    };
    let mut out = BufWriter::new(file);
    let result = match format {
        OutputFormat::Pprof => write_pprof(profile, &mut out),
        OutputFormat::Svg => write_svg(profile, title, &mut out),
        OutputFormat::Collapsed => collapsed_lines(profile)
            .iter()
            .try_for_each(|line| writeln!(out, "{line}"))
            .map_err(EncodeError::Io),
    }
    .and_then(|()| out.flush().map_err(EncodeError::Io));
    output.written = result.is_ok();
    result.map_err(|source| RecordError::Write { path, source })
}

/// The summary printed after a capture.
pub fn print_summary(outcome: &RecordOutcome, config: &RecordConfig) {
    if let Some(profile) = &outcome.on_cpu {
        eprintln!(
            "Wrote {} samples from {} processes over {:.1}s to {}",
            profile.total_samples(),
            process_count(profile),
            profile.duration.as_secs_f64(),
            config.output.display()
        );
    }
    if let Some(profile) = &outcome.off_cpu {
        let blocked: u64 = profile.samples.iter().map(|s| s.nanos).sum();
        eprintln!(
            "Wrote {:.3}s off-CPU in {} blocks from {} processes over {:.1}s to {}",
            blocked as f64 / 1e9,
            profile.total_samples(),
            process_count(profile),
            profile.duration.as_secs_f64(),
            config.off_cpu_output().display()
        );
    }
    if let (Some(launches), Some(waits)) = (&outcome.cuda_launches, &outcome.gpu_waits) {
        let waited: u64 = waits.samples.iter().map(|s| s.nanos).sum();
        let probes = &outcome.cuda_probes;
        eprintln!(
            "Wrote {} CUDA launches from {} processes to {}, and {} sync calls ({:.3}s waiting) to {}; \
             {} stacks sampled; probes on {} CUDA libraries ({} taken off as their processes exited)",
            launches.total_samples(),
            process_count(launches),
            config.cuda_output().display(),
            waits.total_samples(),
            waited as f64 / 1e9,
            config.gpu_wait_output().display(),
            outcome.sampler.cuda_events,
            probes.files + probes.taken_off,
            probes.taken_off,
        );
        if probes.files + probes.taken_off == 0 {
            eprintln!("note: no target process mapped libcudart or libcuda: nothing was probed");
        }
    }
    let s = &outcome.sampler;
    if s.cuda_events_full + s.cuda_counts_full > 0 {
        eprintln!(
            "warning: CUDA data lost (sampled stacks, ring buffer full: {}; calls not counted, totals map full: {})",
            s.cuda_events_full, s.cuda_counts_full
        );
    }
    if s.ring_buffer_full + s.decode_errors > 0 {
        eprintln!(
            "warning: {} samples lost (ring buffer full: {}, undecodable: {})",
            s.ring_buffer_full + s.decode_errors,
            s.ring_buffer_full,
            s.decode_errors
        );
    }
    if s.off_cpu_totals_full + s.off_cpu_events_full > 0 {
        eprintln!(
            "warning: off-CPU data lost (totals map full: {} blocks, thread events: {})",
            s.off_cpu_totals_full, s.off_cpu_events_full
        );
    }
    if s.off_cpu_python_lost > 0 {
        eprintln!(
            "warning: {} off-CPU blocks of Python threads have native frames only (Python stack map full)",
            s.off_cpu_python_lost
        );
    }
    if let Some(u) = &outcome.unwind {
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        eprintln!(
            "unwind: {} user stacks with DWARF tables, {} with frame pointers only; \
             {} unwind errors, {} truncated; {} tables, {:.1} of {:.0} MiB",
            s.unwound_with_tables,
            s.unwound_with_frame_pointers,
            s.unwind_errors,
            s.unwind_truncated,
            u.tables,
            mib(u.bytes_used()),
            mib(u.bytes_capacity()),
        );
        if u.space_full > 0 {
            eprintln!(
                "warning: {} modules did not fit in the unwind table memory and used frame \
                 pointers; raise --unwind-table-mib",
                u.space_full
            );
        }
    }
    let py = &outcome.python;
    if py.registered + py.failed > 0 {
        eprintln!(
            "python: {} interpreters walked ({} could not be); {} stacks, {} of threads without \
             Python, {} cut by a failed read, {} truncated; {} code objects read, {} unreadable frames",
            py.registered,
            py.failed,
            s.python_stacks,
            s.python_no_thread,
            s.python_errors,
            s.python_truncated,
            py.resolver.code_objects_read,
            py.resolver.unreadable,
        );
    }
    let traces = &outcome.traces;
    if traces.registered + traces.failed > 0 || s.trace_contexts > 0 {
        eprintln!(
            "trace context: {} processes publish it ({} could not be read); {} samples carry a \
             trace, {} reads failed",
            traces.registered, traces.failed, s.trace_contexts, s.trace_context_errors,
        );
    }
    let go = &outcome.go;
    if go.registered + go.unsupported > 0 {
        eprintln!(
            "go labels: {} Go processes read ({} not: version or file); {} samples carry labels, \
             {} label sets read, {} reads failed",
            go.registered,
            go.unsupported,
            s.go_labels,
            go.sets_read,
            go.read_errors + s.go_label_errors,
        );
    }
    if outcome.processes_missed > 0 {
        eprintln!(
            "note: {} processes exited before their mappings could be read; their frames stay [unknown]",
            outcome.processes_missed
        );
    }
    if let Some(d) = &outcome.debuginfod {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "debuginfod: {} fetched, {} from cache, {} not found, {} failed requests",
            load(&d.fetched),
            load(&d.cache_hits),
            load(&d.not_found),
            load(&d.failures)
        );
    }
    let sym = &outcome.symbolizer;
    if sym.unknown > 0 {
        eprintln!(
            "note: {} of {} addresses have no symbol; they are kept as module+0xoffset",
            sym.unknown, sym.lookups
        );
    }
    if let (Some(time), Some(count)) = (s.bpf_run_time, s.bpf_run_count) {
        eprintln!("BPF sampler: {count} runs, {} ns total", time.as_nanos());
    }
    if let Some(time) = s.off_cpu_bpf_run_time {
        eprintln!("BPF off-CPU: {} ns total", time.as_nanos());
    }
    for profile in [&outcome.on_cpu, &outcome.off_cpu].into_iter().flatten() {
        if profile.total_samples() > 0 {
            report::print_top(profile, 10);
        }
    }
}

fn process_count(profile: &Profile) -> usize {
    let mut pids: Vec<u32> = profile.samples.iter().map(|s| s.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    pids.len()
}

/// "Sampling pid 42 at 99 Hz for 10s; Ctrl-C to stop."
fn started_line(config: &RecordConfig) -> String {
    let targets = match &config.targets {
        TargetSpec::All => "all processes".to_owned(),
        TargetSpec::Pids(pids) => {
            let list: Vec<String> = pids.iter().map(u32::to_string).collect();
            let noun = if pids.len() == 1 { "pid" } else { "pids" };
            format!("{noun} {}", list.join(","))
        }
        TargetSpec::Command(_) => "the command and its children".to_owned(),
    };
    let mut parts = Vec::new();
    if config.on_cpu {
        parts.push(format!("on-CPU at {} Hz", config.frequency));
    }
    if config.off_cpu.is_some() {
        parts.push("off-CPU".to_owned());
    }
    if config.cuda.is_some() {
        parts.push("CUDA launches and waits".to_owned());
    }
    let what = if parts.len() == 1 && config.on_cpu {
        format!("at {} Hz", config.frequency)
    } else {
        parts.join(" and ")
    };
    let until = match config.duration {
        Some(d) => format!(" for {:.1?}", d),
        None => String::new(),
    };
    format!("Sampling {targets} {what}{until}; Ctrl-C to stop.")
}
