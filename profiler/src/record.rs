//! `smolder record`: collect -> aggregate -> symbolize -> encode, once.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use symbolizer::{Symbolizer, SymbolizerConfig};

use crate::aggregate::Aggregate;
use crate::collect::{
    BpfKernelSymbols, LoadError, Sampler, SamplerConfig, SamplerStats, DRAIN_INTERVAL,
};
use crate::config::{OutputFormat, RecordConfig};
use crate::encode::{collapsed_lines, write_pprof, write_svg, EncodeError};
use crate::preflight::{self, PreflightError};
use crate::processes::ProcessTracker;
use crate::profile::Profile;
use crate::progress::Progress;
use crate::symbolize::{symbolize, Window};
use crate::target::{self, Launched, TargetError, TargetSpec};
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

/// What a capture produced, for the caller and the summary.
#[derive(Debug)]
pub struct RecordOutcome {
    pub profile: Profile,
    pub sampler: SamplerStats,
    pub processes_missed: u64,
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
        log::debug!(
            "phase {phase}: {:.1} ms CPU",
            (now - self.0).as_secs_f64() * 1e3
        );
        self.0 = now;
    }
}

pub fn record(config: &RecordConfig) -> Result<RecordOutcome, RecordError> {
    let mut clock = PhaseClock(cpu_used());
    preflight::check_system()?;
    if let TargetSpec::Pids(pids) = &config.targets {
        preflight::check_pids(pids)?;
    }
    let output = preflight::open_output(&config.output)?;
    signals::install();

    let mut sampler = Sampler::load(
        SamplerConfig {
            frequency: config.frequency,
            targets: config.targets.sampler_targets(),
            self_tgid: std::process::id(),
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
        Err(e) => log::info!("kernel symbols will come from /proc/kallsyms: {e:#}"),
    }
    let mut processes = ProcessTracker::default();
    let mut aggregate = Aggregate::default();
    let mut progress = Progress::new(config.quiet);

    let start = SystemTime::now();
    let started = Instant::now();
    sampler.start()?;
    let mut launched = match &config.targets {
        TargetSpec::Command(argv) => Some(target::launch(argv, &mut sampler)?),
        _ => None,
    };

    let mut last_liveness_check = Instant::now();
    loop {
        std::thread::sleep(DRAIN_INTERVAL);
        sampler.drain(|sample| {
            processes.observe(&sample, &mut symbolizer);
            aggregate.add(sample);
        });
        let lost = sampler.stats().ring_buffer_full;
        progress.update(
            aggregate.samples,
            aggregate.process_count(),
            lost,
            config.duration,
        );
        if signals::stop_requested() || config.duration.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        if launched.as_mut().is_some_and(command_exited) {
            break;
        }
        if last_liveness_check.elapsed() >= Duration::from_secs(1) {
            last_liveness_check = Instant::now();
            if let TargetSpec::Pids(pids) = &config.targets {
                if pids
                    .iter()
                    .all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
                {
                    log::info!("every target process has exited");
                    break;
                }
            }
        }
    }
    let duration = started.elapsed();
    if let Some(launched) = launched.as_mut() {
        launched.terminate();
    }
    sampler.drain(|sample| {
        processes.observe(&sample, &mut symbolizer);
        aggregate.add(sample);
    });
    let sampler_stats = sampler.stats();
    drop(sampler); // detach before the CPU-heavy part
    progress.finish();
    clock.lap("capture");

    let profile = symbolize(
        &aggregate,
        &mut processes,
        &mut symbolizer,
        Window {
            start,
            duration,
            frequency_hz: config.frequency.get(),
        },
    );
    clock.lap("symbolize");
    write_output(&profile, config, output)?;
    clock.lap("encode");
    let symbolizer_stats = symbolizer.stats();
    log::debug!("symbolizer: {symbolizer_stats:?}");
    Ok(RecordOutcome {
        profile,
        sampler: sampler_stats,
        processes_missed: processes.missed,
    })
}

fn command_exited(launched: &mut Launched) -> bool {
    match launched.exited() {
        Some(status) => {
            log::info!("command (pid {}) exited: {status}", launched.pid());
            true
        }
        None => false,
    }
}

fn write_output(profile: &Profile, config: &RecordConfig, file: File) -> Result<(), RecordError> {
    let path = config.output.display().to_string();
    let mut out = BufWriter::new(file);
    let result = match config.format {
        OutputFormat::Pprof => write_pprof(profile, &mut out),
        OutputFormat::Svg => write_svg(profile, "smolder record: on-CPU", &mut out),
        OutputFormat::Collapsed => collapsed_lines(profile)
            .iter()
            .try_for_each(|line| writeln!(out, "{line}"))
            .map_err(EncodeError::Io),
    }
    .and_then(|()| out.flush().map_err(EncodeError::Io));
    result.map_err(|source| RecordError::Write { path, source })
}

/// The summary printed after a capture.
pub fn print_summary(outcome: &RecordOutcome, config: &RecordConfig) {
    let profile = &outcome.profile;
    let mut pids: Vec<u32> = profile.samples.iter().map(|s| s.pid).collect();
    pids.sort_unstable();
    pids.dedup();
    eprintln!(
        "Wrote {} samples from {} processes over {:.1}s to {}",
        profile.total_samples(),
        pids.len(),
        profile.duration.as_secs_f64(),
        config.output.display()
    );
    let s = &outcome.sampler;
    if s.ring_buffer_full + s.decode_errors > 0 {
        eprintln!(
            "warning: {} samples lost (ring buffer full: {}, undecodable: {})",
            s.ring_buffer_full + s.decode_errors,
            s.ring_buffer_full,
            s.decode_errors
        );
    }
    if let (Some(time), Some(count)) = (s.bpf_run_time, s.bpf_run_count) {
        eprintln!("BPF sampler: {count} runs, {} ns total", time.as_nanos());
    }
    if profile.total_samples() > 0 {
        report::print_top(profile, 10);
    }
}
