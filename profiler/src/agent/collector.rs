//! The agent's sampling side, on a thread of its own: drains the BPF
//! sampler continuously and, at the end of every window, cuts the window
//! into one profile per service and kind, symbolized and encoded, for
//! delivery. It never waits on delivery: if the queue is full the window
//! is dropped and counted.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use symbolizer::Symbolizer;
use tokio::sync::mpsc;

use super::config::{AgentConfig, Protocol, Sink};
use super::cuda_budget::LaunchBudget;
use super::go_labels::LabelFilter;
use super::metrics::{add, set, Metrics};
use super::service_cache::ServiceCache;
use super::services::Service;
use crate::aggregate::Aggregate;
use crate::collect::{CallKind, CudaApi};
use crate::collect::{LoadError, Sample, Sampler, DRAIN_INTERVAL};
use crate::encode::{encode_pprof_labelled, SampleLabels};
use crate::go::GoTracker;
use crate::gpu_calls::{self, GpuCalls};
use crate::processes::{process_alive, ProcessTracker};
use crate::profile::{Profile, ProfileKind};
use crate::python::{BpfPythonStore, PythonTracker};
use crate::signals;
use crate::symbolize::{symbolize, Window};
use crate::trace_context::TraceContextTracker;
use crate::unwind::{self, Seen};

/// One service's profile of one kind for one window.
#[derive(Debug)]
pub struct WindowProfile {
    pub service: Arc<Service>,
    pub kind: ProfileKind,
    /// Gzipped pprof.
    pub pprof_gz: Vec<u8>,
}

/// Everything one window produced.
#[derive(Debug)]
pub struct WindowBatch {
    pub start: SystemTime,
    pub profiles: Vec<WindowProfile>,
}

pub struct Collector {
    pub sampler: Sampler,
    pub symbolizer: Symbolizer,
    pub config: Arc<AgentConfig>,
    pub metrics: Arc<Metrics>,
    processes: ProcessTracker,
    python: Option<PythonTracker<BpfPythonStore>>,
    traces: Option<TraceContextTracker>,
    go: Option<GoTracker>,
    go_labels: LabelFilter,
    services: ServiceCache,
    on_cpu: Aggregate,
    off_cpu: Aggregate,
    /// CUDA calls sampled this window, and the launch probes' budget.
    gpu: GpuCalls,
    launch_budget: Option<LaunchBudget>,
    /// When the launch probes were last put on, and taken off since.
    launches_on_since: Instant,
    launches_off_since: Option<Instant>,
    lost_before: u64,
    off_cpu_lost_before: u64,
}

impl Collector {
    pub fn new(
        mut sampler: Sampler,
        mut symbolizer: Symbolizer,
        config: Arc<AgentConfig>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let period_ns = 1_000_000_000 / u64::from(config.frequency.get());
        if let Some(tables) = sampler.unwind_tables() {
            let loaded = unwind::preload(tables, &mut symbolizer, unwind::all_pids());
            // Sampling starts after this ([`Collector::start`]): the first
            // samples of running processes are walked with their tables.
            tables.finish_pending(unwind::PRELOAD_WAIT);
            tracing::info!("unwind tables loaded for {loaded} running processes");
        }
        let mut python = sampler.take_python_store().map(PythonTracker::new);
        if let Some(python) = python.as_mut() {
            python.preload(unwind::all_pids());
        }
        let traces = sampler.take_trace_processes().and_then(|map| {
            TraceContextTracker::new(map)
                .map_err(|e| tracing::warn!("trace context is not read: {e}"))
                .ok()
        });
        let mut go = sampler.take_go_processes().and_then(|map| {
            GoTracker::new(map)
                .map_err(|e| tracing::warn!("goroutine labels are not read: {e}"))
                .ok()
        });
        if let Some(go) = go.as_mut() {
            go.preload(unwind::all_pids());
        }
        let go_labels = LabelFilter::new(&config.go_labels, config.max_go_label_sets);
        if config.cuda.is_some() {
            gpu_calls::attach_running(&mut sampler, &mut symbolizer, &unwind::all_pids());
        }
        let launch_budget = config.cuda.map(|c| LaunchBudget::new(c.max_overhead));
        Self {
            sampler,
            symbolizer,
            config,
            metrics,
            processes: ProcessTracker::default(),
            python,
            traces,
            go,
            go_labels,
            services: ServiceCache::new(),
            on_cpu: Aggregate::new(period_ns),
            off_cpu: Aggregate::new(0),
            gpu: GpuCalls::default(),
            launch_budget,
            launches_on_since: Instant::now(),
            launches_off_since: None,
            lost_before: 0,
            off_cpu_lost_before: 0,
        }
    }

    /// How samples are labelled for the sink: OTLP takes whole trace
    /// contexts (a link per sample), Pyroscope's push API only span ids.
    fn sample_labels(&self) -> SampleLabels {
        match &self.config.sink {
            Sink::Server { server, .. } if server.protocol == Protocol::Otlp => {
                SampleLabels::Strings
            }
            _ => SampleLabels::Pyroscope,
        }
    }

    /// Attaches the sampler: nothing is sampled before the tables of the
    /// processes that run already are in.
    pub fn start(&mut self) -> Result<(), LoadError> {
        self.sampler.start()
    }

    /// Runs windows until SIGINT/SIGTERM, then finishes the current window
    /// and returns (dropping `tx`, which tells delivery to flush).
    pub fn run(mut self, tx: mpsc::Sender<WindowBatch>) {
        let window = self.config.window;
        let mut start = SystemTime::now();
        let mut started = Instant::now();
        loop {
            std::thread::sleep(DRAIN_INTERVAL);
            self.drain();
            self.keep_launch_budget();
            let stopping = signals::stop_requested();
            if started.elapsed() < window && !stopping {
                continue;
            }
            let duration = started.elapsed();
            let batch = self.finish_window(start, duration);
            start = SystemTime::now();
            started = Instant::now();
            if !batch.profiles.is_empty() {
                match tx.try_send(batch) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        add(&self.metrics.windows_dropped, 1);
                        tracing::warn!("delivery is behind: a window was dropped");
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            if stopping {
                tracing::info!("stopping: last window handed to delivery");
                return;
            }
        }
    }

    /// Takes the launch probes off once the window's share of probing is
    /// used up (counted from when they were put on: the end of the last
    /// window's work included).
    fn keep_launch_budget(&mut self) {
        let Some(budget) = self.launch_budget else {
            return;
        };
        if budget.duty() < 1.0
            && self.launches_off_since.is_none()
            && self.launches_on_since.elapsed() >= budget.on_for(self.config.window)
        {
            self.launches_off_since = Some(Instant::now());
            self.sampler.cuda_launch_probes(false);
        }
    }

    /// Moves buffered samples into the window, reading the mappings and the
    /// service of every process the first time it is seen.
    fn drain(&mut self) {
        let Self {
            sampler,
            symbolizer,
            config,
            processes,
            python,
            traces,
            go,
            go_labels,
            services,
            on_cpu,
            off_cpu,
            gpu,
            ..
        } = self;
        let mut seen: Vec<Seen> = Vec::new();
        if config.cuda.is_some() {
            gpu_calls::attach_announced(sampler, symbolizer);
        }
        // A sample of a process the agent profiles: its maps read, its
        // Python frames and thread name, its goroutine's allowed labels.
        // None for processes left out.
        let mut follow = |sample: &mut Sample| {
            services.resolve(sample.pid, sample.mm_id, &sample.comm, config)?;
            processes.observe(sample.pid, sample.mm_id, symbolizer);
            seen.push(Seen::from(&*sample));
            let mut frames = Box::default();
            if let Some(python) = python.as_mut() {
                frames = python.resolve(sample);
                if let Some(name) = python.thread_name(sample.pid, sample.tid) {
                    sample.thread_name = name.to_owned();
                }
            }
            let labels = go.as_mut().and_then(|go| go.labels(sample));
            Some((frames, go_labels.apply(labels)))
        };
        sampler.drain(|mut sample| {
            if let Some((frames, labels)) = follow(&mut sample) {
                on_cpu.add(sample, frames, labels);
            }
        });
        if config.cuda.is_some() {
            sampler.drain_cuda_names(|name| gpu.learn_name(name));
            sampler.drain_cuda(|mut event| {
                if let Some((frames, labels)) = follow(&mut event.sample) {
                    gpu.add(event, frames, labels);
                }
            });
        }
        match python.as_mut() {
            Some(python) => sampler.drain_python_stacks(|stack| python.learn_off_cpu(&stack)),
            None => sampler.drain_python_stacks(|_| {}),
        }
        sampler.drain_threads(|mut thread| {
            if services
                .resolve(thread.pid, thread.mm_id, &thread.comm, config)
                .is_some()
            {
                processes.observe(thread.pid, thread.mm_id, symbolizer);
                seen.push(Seen::from(&thread));
                if let Some(name) = python
                    .as_mut()
                    .and_then(|p| p.thread_name(thread.pid, thread.tid))
                {
                    thread.thread_name = name.to_owned();
                }
                off_cpu.note_process(thread.pid);
                off_cpu.name_thread(thread.tid, thread.comm, thread.thread_name);
            }
        });
        if let Some(python) = python.as_mut() {
            python.follow(&seen, processes);
        }
        if let Some(traces) = traces.as_mut() {
            traces.follow(&seen, processes, symbolizer);
        }
        if let Some(go) = go.as_mut() {
            go.follow(&seen);
        }
        if let Some(tables) = sampler.unwind_tables() {
            unwind::follow(tables, processes, symbolizer, seen);
        }
    }

    fn finish_window(&mut self, start: SystemTime, duration: Duration) -> WindowBatch {
        match self.sampler.take_off_cpu_totals() {
            Ok(entries) => {
                for entry in entries {
                    if self.services.get(entry.pid, entry.mm_id).is_some() {
                        let frames = match (entry.python.as_ref(), self.python.as_mut()) {
                            (Some(stack), Some(python)) => python.resolve_off_cpu(stack),
                            _ => Box::default(),
                        };
                        self.off_cpu.add_off_cpu(entry, frames);
                    }
                }
            }
            Err(e) => tracing::warn!("cannot read off-CPU totals: {e}"),
        }
        let period_ns = self.on_cpu.period_ns();
        let on_cpu = std::mem::replace(&mut self.on_cpu, Aggregate::new(period_ns));
        let off_cpu = std::mem::replace(&mut self.off_cpu, Aggregate::new(0));
        let mut profiles = Vec::new();
        let mut processes = on_cpu.process_count().max(off_cpu.process_count());
        let mut kinds = vec![
            (
                on_cpu,
                ProfileKind::OnCpu {
                    frequency_hz: self.config.frequency.get(),
                },
            ),
            (off_cpu, ProfileKind::OffCpu),
        ];
        if let Some((launches, waits)) = self.finish_cuda_window(duration) {
            kinds.push((launches, ProfileKind::CudaLaunch));
            kinds.push((waits, ProfileKind::GpuWait));
        }
        let mut services = 0;
        let no_modules = std::collections::HashMap::new();
        for (aggregate, kind) in kinds {
            add(
                &self.metrics.samples,
                if matches!(kind, ProfileKind::OnCpu { .. }) {
                    aggregate.samples
                } else {
                    0
                },
            );
            let cache = &self.services;
            let parts = aggregate.split_by(|key| cache.get(key.pid, key.mm_id));
            services = services.max(parts.len());
            let mut parts: Vec<_> = parts.into_iter().collect();
            parts.sort_by(|a, b| a.0.cmp(&b.0));
            for (service, part) in parts {
                processes = processes.max(part.process_count());
                let window = Window {
                    start,
                    duration,
                    kind,
                };
                let mut profile = symbolize(
                    &part,
                    &mut self.processes,
                    &mut self.symbolizer,
                    self.python.as_ref().map_or(&no_modules, |p| p.modules()),
                    window,
                );
                cap_thread_names(&mut profile, self.config.max_thread_names);
                match encode_pprof_labelled(&profile, self.sample_labels()) {
                    Ok(pprof_gz) => profiles.push(WindowProfile {
                        service,
                        kind,
                        pprof_gz,
                    }),
                    Err(e) => tracing::warn!("cannot encode a profile: {e}"),
                }
            }
        }
        self.update_metrics(processes, services);
        if let Some(tables) = self.sampler.unwind_tables() {
            tables.reap(process_alive);
        }
        if let Some(python) = self.python.as_mut() {
            python.reap(process_alive);
            python.prune_modules(process_alive);
        }
        if let Some(traces) = self.traces.as_mut() {
            traces.reap(process_alive);
        }
        if let Some(go) = self.go.as_mut() {
            go.reap(process_alive);
            go.new_window();
        }
        if self.config.cuda.is_some() {
            self.sampler.cuda_reap(process_alive);
            self.gpu.reap(process_alive);
        }
        self.go_labels.new_window();
        for (pid, mm_id) in self.services.end_window() {
            self.processes.forget(pid, mm_id);
        }
        WindowBatch { start, profiles }
    }

    /// The window's CUDA launches and waits: the exact totals (launches
    /// scaled up when their probes were on for part of the window only),
    /// shared out among the stacks sampled; then the launch probes' share
    /// of the next window.
    fn finish_cuda_window(&mut self, window: Duration) -> Option<(Aggregate, Aggregate)> {
        let budget = self.launch_budget.as_mut()?;
        let totals = match self.sampler.take_cuda_totals() {
            Ok(totals) => totals,
            Err(e) => {
                tracing::warn!("cannot read the CUDA totals: {e}");
                Vec::new()
            }
        };
        // On from when they were put back until they were taken off.
        let probed = match self.launches_off_since.take() {
            Some(off) => off.saturating_duration_since(self.launches_on_since),
            None => self.launches_on_since.elapsed(),
        };
        let is_launch = |api: u32| {
            CudaApi::by_id(api)
                .is_some_and(|a| matches!(a.kind, CallKind::Launch | CallKind::GraphLaunch))
        };
        let mut counted = 0;
        let totals: Vec<_> = totals
            .into_iter()
            .map(|(key, mut total)| {
                if is_launch(key.api) {
                    counted += total.calls;
                    total.calls = LaunchBudget::scale(total.calls, probed, window);
                }
                (key, total)
            })
            .collect();
        add(&self.metrics.cuda_launches, counted);
        let was = budget.duty();
        let duty = budget.next_window(counted, probed);
        set(
            &self.metrics.cuda_launch_duty_percent,
            (duty * 100.0).round() as u64,
        );
        if duty < 1.0 && was >= 1.0 {
            tracing::info!(
                "CUDA: {counted} launches in {probed:.1?}: launch probes on for {:.0}% of each window to stay within the overhead budget (counts scaled up)",
                duty * 100.0
            );
        }
        // Each window starts with the launch probes on (counting from the
        // first one put back).
        self.launches_on_since = Instant::now();
        self.sampler.cuda_launch_probes(true);
        let mut launches = Aggregate::new(0);
        let mut waits = Aggregate::new(0);
        self.gpu.share_out(totals, &mut launches, &mut waits);
        Some((launches, waits))
    }

    fn update_metrics(&mut self, processes: usize, services: usize) {
        let m = &self.metrics;
        add(&m.windows, 1);
        set(&m.processes, processes as u64);
        set(&m.services, services as u64);
        let stats = self.sampler.stats();
        let lost = stats.ring_buffer_full + stats.decode_errors;
        add(&m.samples_lost, lost.saturating_sub(self.lost_before));
        self.lost_before = lost;
        let off_lost = stats.off_cpu_totals_full + stats.off_cpu_events_full;
        add(
            &m.off_cpu_lost,
            off_lost.saturating_sub(self.off_cpu_lost_before),
        );
        self.off_cpu_lost_before = off_lost;
        set(&m.off_cpu_python_lost, stats.off_cpu_python_lost);
        set(&m.off_cpu_gil_waits, stats.off_cpu_gil_waits);
        set(&m.unwind_with_tables, stats.unwound_with_tables);
        set(
            &m.unwind_recorded_mappings,
            stats.unwound_from_recorded_mappings,
        );
        set(
            &m.unwind_frame_pointers_only,
            stats.unwound_with_frame_pointers,
        );
        set(&m.unwind_errors, stats.unwind_errors);
        set(&m.unwind_truncated, stats.unwind_truncated);
        set(&m.trace_context_samples, stats.trace_contexts);
        set(&m.trace_context_read_errors, stats.trace_context_errors);
        if let Some(traces) = &self.traces {
            let t = traces.stats();
            set(&m.trace_context_processes, t.registered);
            set(&m.trace_context_failed, t.failed);
        }
        if let Some(go) = &self.go {
            let g = go.stats();
            set(&m.go_processes, g.registered);
            set(
                &m.go_label_read_errors,
                g.read_errors + stats.go_label_errors,
            );
        }
        set(&m.go_label_samples, stats.go_labels);
        set(&m.cuda_waits, stats.cuda_waits);
        set(&m.cuda_events, stats.cuda_events);
        set(
            &m.cuda_events_lost,
            stats.cuda_events_full + stats.cuda_counts_full,
        );
        let probes = self.sampler.cuda_probe_stats();
        set(&m.cuda_libraries, probes.files);
        set(&m.go_label_sets_dropped, self.go_labels.dropped());
        if let Some(u) = self.sampler.unwind_stats() {
            set(&m.unwind_tables, u.tables);
            set(&m.unwind_table_bytes, u.bytes_used());
            set(&m.unwind_table_space_full, u.space_full);
            set(&m.unwind_table_capacity_bytes, u.bytes_capacity());
            set(&m.unwind_tables_evicted, u.evicted);
            set(&m.unwind_rules, u.rules);
            set(&m.unwind_code_without_cfi_bytes, u.code_rules_bytes);
        }
        let sym = self.symbolizer.stats();
        set(&m.symbol_lookups, sym.lookups);
        set(&m.symbol_unknown, sym.unknown);
        set(&m.symbol_cached_addresses, sym.cached_addresses);
        set(&m.heap_bytes, crate::allocator::heap_in_use());
        set(&m.symbol_parsed_files, sym.parsed_files);
        set(&m.symbol_parsed_file_releases, sym.parsed_file_releases);
        set(&m.processes_missed, self.processes.missed);
        set(
            &m.processes_named_after_exit,
            self.processes.named_after_exit,
        );
    }
}

/// Keeps the `thread_name` label to the `max` heaviest names of the
/// profile; the rest become `other`. Pyroscope makes a series of each
/// distinct value, and thread pools can be large.
fn cap_thread_names(profile: &mut Profile, max: usize) {
    let mut weights: HashMap<&str, u64> = HashMap::new();
    for sample in &profile.samples {
        *weights.entry(sample.thread_name.as_str()).or_default() += sample.nanos.max(sample.count);
    }
    if weights.len() <= max {
        return;
    }
    let mut ranked: Vec<(&str, u64)> = weights.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let keep: BTreeMap<String, ()> = ranked
        .iter()
        .take(max)
        .map(|(name, _)| ((*name).to_owned(), ()))
        .collect();
    for sample in &mut profile.samples {
        if !keep.contains_key(&sample.thread_name) {
            sample.thread_name = "other".to_owned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::fixtures::small_profile;

    #[test]
    fn caps_thread_names_by_weight() {
        let mut profile = small_profile();
        let template = profile.samples[0].clone();
        profile.samples = (0..5)
            .map(|i| {
                let mut s = template.clone();
                s.thread_name = format!("pool-{i}");
                s.nanos = 100 * (i + 1);
                s
            })
            .collect();
        cap_thread_names(&mut profile, 2);
        let names: Vec<&str> = profile
            .samples
            .iter()
            .map(|s| s.thread_name.as_str())
            .collect();
        assert_eq!(names, ["other", "other", "other", "pool-3", "pool-4"]);
    }
}
