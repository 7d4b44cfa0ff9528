//! Loads `sampler.bpf.o`, attaches it to a cpu-clock perf event on every
//! online CPU and drains its ring buffer.

use std::num::NonZeroU32;
use std::time::Duration;

use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError, PerCpuArray, RingBuf};
use aya::programs::perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent};
use aya::programs::{BtfTracePoint, PerfEvent, ProgramError, RawTracePoint, TracePoint, UProbe};
use aya::{Btf, BtfError, Ebpf, EbpfError, EbpfLoader};

use super::cuda::{CudaEvent, CudaKey, CudaName, CudaTotal};
use super::cuda_probes::{
    CudaProbeStats, CudaProbes, LAUNCH, NAME_ENTER, NAME_RETURN, WAIT_ENTER, WAIT_RETURN,
};
use super::offcpu::{
    read_totals, remove_read, OffCpuConfig, OffCpuEntry, OffCpuPython, Orphans, ThreadSeen,
};
use super::programs::{key_was_missing, program};
use super::record::Sample;
use crate::python::BpfPythonStore;
use crate::unwind::{
    BpfMaps, BpfStore, Capacity, StoreError, UnwindStats, UnwindTables, MAX_RULES, PAGE_SIZE,
    ROW_PAIR_SIZE, RULE_SIZE,
};
use symbolizer::ProcessMaps;

static SAMPLER_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sampler.bpf.o"));

/// Which processes to sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SamplerTargets {
    /// Every process but smolder itself.
    All,
    /// Only processes in the `targets` map (filled with [`Sampler::add_target`]).
    Listed { follow_children: bool },
}

/// How user stacks are walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum UnwindMode {
    /// DWARF CFI tables from `.eh_frame`, frame pointers where there are none.
    #[default]
    Dwarf,
    /// Frame pointers only (the kernel's walk).
    #[value(name = "fp")]
    FramePointers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnwindConfig {
    pub mode: UnwindMode,
    /// Memory for unwind tables (rows of 4 bytes, page entries, the rule
    /// array), allocated in the kernel when the sampler loads.
    pub table_bytes: u64,
}

/// Default memory for unwind tables.
pub const DEFAULT_UNWIND_TABLE_MIB: u32 = 64;

impl Default for UnwindConfig {
    fn default() -> Self {
        Self {
            mode: UnwindMode::Dwarf,
            table_bytes: u64::from(DEFAULT_UNWIND_TABLE_MIB) << 20,
        }
    }
}

impl UnwindConfig {
    /// How the table memory is split: a 64th for page entries (one per
    /// 64 KiB of code: 1 MiB of the default covers 8 GiB of code), the
    /// fixed rule array (512 KiB), and the rest for rows.
    pub fn capacity(&self) -> Capacity {
        let pages = (self.table_bytes / 64 / PAGE_SIZE as u64).clamp(64, u64::from(u32::MAX));
        let fixed = pages * PAGE_SIZE as u64 + (MAX_RULES * RULE_SIZE) as u64;
        let pairs = (self.table_bytes.saturating_sub(fixed) / ROW_PAIR_SIZE as u64)
            .clamp(1, u64::from(u32::MAX / 2));
        Capacity {
            rows: (pairs * 2) as u32,
            pages: pages as u32,
        }
    }
}

/// Processes with unwind tables at once (entries are allocated on use).
const UNWIND_MAX_PROCESSES: u32 = 8192;

#[derive(Debug, Clone)]
pub struct SamplerConfig {
    /// Sample stacks on CPU at `frequency`.
    pub on_cpu: bool,
    /// Time voluntary sleeps.
    pub off_cpu: Option<OffCpuConfig>,
    pub frequency: NonZeroU32,
    pub targets: SamplerTargets,
    /// Never sampled (smolder's own tgid).
    pub self_tgid: u32,
    pub unwind: UnwindConfig,
    /// Probe CUDA launches and sync calls.
    pub cuda: Option<CudaConfig>,
}

/// How the CUDA probes sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CudaConfig {
    /// Launches and waits sampled with their stacks, per process and
    /// second (every call is counted whatever this is; 0: counts only).
    pub stacks_per_second: u32,
}

impl Default for CudaConfig {
    fn default() -> Self {
        Self {
            stacks_per_second: DEFAULT_CUDA_STACKS_PER_SECOND,
        }
    }
}

/// Stacks a second per process: enough for every launch site of a decode
/// step to show within a few windows, at about 1 ms of CPU a second.
pub const DEFAULT_CUDA_STACKS_PER_SECOND: u32 = 100;

/// Counters kept by the BPF program and by the decoder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SamplerStats {
    pub samples: u64,
    /// Lost because the ring buffer was full.
    pub ring_buffer_full: u64,
    pub kernel_stack_errors: u64,
    pub user_stack_errors: u64,
    /// Children that could not be followed (target map full).
    pub targets_full: u64,
    /// Records that did not decode.
    pub decode_errors: u64,
    /// BPF run time of the sampler program, when BPF stats are enabled.
    pub bpf_run_time: Option<Duration>,
    pub bpf_run_count: Option<u64>,
    /// Off-CPU time lost because the totals map was full.
    pub off_cpu_totals_full: u64,
    pub off_cpu_stack_errors: u64,
    pub off_cpu_events_full: u64,
    /// BPF run time of the off-CPU program, when BPF stats are enabled.
    pub off_cpu_bpf_run_time: Option<Duration>,
    /// User stacks walked with unwind tables.
    pub unwound_with_tables: u64,
    /// User stacks of processes without tables (kernel frame-pointer walk).
    pub unwound_with_frame_pointers: u64,
    /// User stacks cut short by an unwind error (`[unwind error]` root).
    pub unwind_errors: u64,
    /// User stacks deeper than the BPF limit (`[truncated]` root).
    pub unwind_truncated: u64,
    /// Frames without a table row, stepped with frame pointers.
    pub unwind_frame_pointer_steps: u64,
    /// User stacks that left every mapping the unwinder knew.
    pub unwind_unmapped: u64,
    /// User stacks of processes user space had not read yet, walked with
    /// the mappings recorded at exec and mmap (counted in `unwound_with_tables`).
    pub unwound_from_recorded_mappings: u64,
    /// Samples of registered Python processes whose frames were walked.
    pub python_stacks: u64,
    /// ... of threads without a PyThreadState (native threads).
    pub python_no_thread: u64,
    /// ... whose walk stopped at a failed read.
    pub python_errors: u64,
    /// ... deeper than the BPF limit.
    pub python_truncated: u64,
    /// Samples that carry a trace context (OTEP 4947 thread context).
    pub trace_contexts: u64,
    /// Trace context reads that failed (the sample carries none).
    pub trace_context_errors: u64,
    /// Off-CPU Python stacks not stored (map full, or an id collision):
    /// those blocks have native frames only.
    pub off_cpu_python_lost: u64,
    /// Off-CPU Python stacks whose announcement was lost (ring buffer full):
    /// named at the end of the window instead, if the process still lives.
    pub off_cpu_python_events_full: u64,
    /// Sleeps of Python threads waiting for the GIL.
    pub off_cpu_gil_waits: u64,
    /// Samples of goroutines that carry pprof labels.
    pub go_labels: u64,
    /// Goroutine label reads that failed (the sample carries none).
    pub go_label_errors: u64,
    /// CUDA launches counted.
    pub cuda_launches: u64,
    /// CUDA sync calls timed.
    pub cuda_waits: u64,
    /// Launches and waits sampled with their stacks.
    pub cuda_events: u64,
    /// ... lost: ring buffer full.
    pub cuda_events_full: u64,
    /// CUDA calls not counted: the totals map was full.
    pub cuda_counts_full: u64,
    /// Total run time of the CUDA probe programs (with `bpf_stats`).
    pub cuda_bpf_run_time: Option<Duration>,
    /// ... and how many times they ran.
    pub cuda_bpf_run_count: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read kernel BTF from /sys/kernel/btf/vmlinux (kernel built without CONFIG_DEBUG_INFO_BTF?)")]
    Btf(#[source] BtfError),
    #[error("the kernel refused the BPF object")]
    Load(#[source] EbpfError),
    #[error("BPF program `{name}`: {action} failed")]
    Program {
        name: &'static str,
        action: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("BPF map `{name}`")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("BPF object has no `{0}`")]
    Missing(&'static str),
    #[error("cannot list online CPUs from {0}")]
    Cpus(&'static str, #[source] std::io::Error),
    #[error("cannot set up the unwind tables")]
    Unwind(#[source] StoreError),
}

/// Maps indexes of the `stats` array (enum smolder_stat in sampler.h).
const STAT_SAMPLES: u32 = 0;
const STAT_RINGBUF_FULL: u32 = 1;
const STAT_KSTACK_ERROR: u32 = 2;
const STAT_USTACK_ERROR: u32 = 3;
const STAT_TARGETS_FULL: u32 = 4;
const STAT_OFFCPU_TOTALS_FULL: u32 = 5;
const STAT_OFFCPU_STACK_ERROR: u32 = 6;
const STAT_OFFCPU_EVENTS_FULL: u32 = 7;
const STAT_UNWIND_TABLES: u32 = 8;
const STAT_UNWIND_NO_PROCESS: u32 = 9;
const STAT_UNWIND_ERROR: u32 = 10;
const STAT_UNWIND_TRUNCATED: u32 = 11;
const STAT_UNWIND_FP_FRAMES: u32 = 12;
const STAT_UNWIND_UNMAPPED: u32 = 13;
const STAT_OFFCPU_DWARF_COLLISION: u32 = 14;
const STAT_PYTHON_STACKS: u32 = 15;
const STAT_PYTHON_NO_THREAD: u32 = 16;
const STAT_PYTHON_ERRORS: u32 = 17;
const STAT_PYTHON_TRUNCATED: u32 = 18;
const STAT_TRACE_CONTEXT: u32 = 19;
const STAT_TRACE_ERRORS: u32 = 20;
const STAT_UNWIND_RECORDED: u32 = 21;
const STAT_OFFCPU_PYTHON_FULL: u32 = 22;
const STAT_OFFCPU_PYTHON_COLLISION: u32 = 23;
const STAT_OFFCPU_GIL_WAITS: u32 = 24;
const STAT_OFFCPU_PYTHON_EVENTS_FULL: u32 = 25;
const STAT_GO_LABELS: u32 = 26;
const STAT_GO_LABEL_ERRORS: u32 = 27;
const STAT_CUDA_LAUNCHES: u32 = 28;
const STAT_CUDA_WAITS: u32 = 29;
const STAT_CUDA_EVENTS: u32 = 30;
const STAT_CUDA_EVENTS_FULL: u32 = 31;
const STAT_CUDA_COUNTS_FULL: u32 = 32;
#[cfg(test)]
const STAT_COUNT: u32 = 33;

/// What records each process's executable file mappings: the binary at
/// exec (tp_btf), libraries at mmap(2) (the syscall's own tracepoints, which
/// need tracefs).
const EXEC_RECORDER: &str = "record_exec";
const MMAP_RECORDERS: [(&str, &str); 2] = [
    ("record_mmap_enter", "sys_enter_mmap"),
    ("record_mmap_exit", "sys_exit_mmap"),
];

fn recorder_warning(e: &LoadError) {
    tracing::warn!(
        "{}: processes that exit before smolder reads them are walked with frame pointers",
        crate::unwind::error_chain(e)
    );
}

/// Loads the mapping recorders; a kernel that refuses them gets a warning
/// and goes on without (short-lived processes then use frame pointers).
fn load_mapping_recorder(ebpf: &mut Ebpf, btf: &Btf) -> bool {
    let exec = program::<BtfTracePoint>(ebpf, EXEC_RECORDER).and_then(|p| {
        p.load("sched_process_exec", btf)
            .map_err(|source| LoadError::Program {
                name: EXEC_RECORDER,
                action: "load",
                source,
            })
    });
    let mmap = MMAP_RECORDERS.iter().try_for_each(|&(name, _)| {
        program::<TracePoint>(ebpf, name)?
            .load()
            .map_err(|source| LoadError::Program {
                name,
                action: "load",
                source,
            })
    });
    match exec.and(mmap) {
        Ok(()) => true,
        Err(e) => {
            recorder_warning(&e);
            false
        }
    }
}

/// Attaches the mapping recorders (a failure is a warning, as at load).
fn attach_mapping_recorder(ebpf: &mut Ebpf) {
    let exec = program::<BtfTracePoint>(ebpf, EXEC_RECORDER).and_then(|p| {
        p.attach().map(drop).map_err(|source| LoadError::Program {
            name: EXEC_RECORDER,
            action: "attach",
            source,
        })
    });
    let mmap = MMAP_RECORDERS.iter().try_for_each(|&(name, tracepoint)| {
        program::<TracePoint>(ebpf, name)?
            .attach("syscalls", tracepoint)
            .map(drop)
            .map_err(|source| LoadError::Program {
                name,
                action: "attach (is tracefs mounted at /sys/kernel/tracing?)",
                source,
            })
    });
    if let Err(e) = exec.and(mmap) {
        recorder_warning(&e);
    }
}

const OFFCPU_BTF: &str = "offcpu_switch_btf";
const OFFCPU_RAW: &str = "offcpu_switch_raw";

pub struct Sampler {
    ebpf: Ebpf,
    ring: RingBuf<MapData>,
    threads: RingBuf<MapData>,
    python_stacks: RingBuf<MapData>,
    /// The off-CPU program that loaded (tp_btf, or raw_tp as a fallback).
    off_cpu_program: Option<&'static str>,
    /// Whether the tracepoints that record new processes' executable
    /// mappings loaded; without them short-lived processes fall back to
    /// frame pointers.
    records_mappings: bool,
    /// The tables the BPF unwinder reads (None with frame pointers only).
    unwind: Option<UnwindTables<BpfStore>>,
    /// `python_processes`, until the caller takes it.
    python: Option<BpfPythonStore>,
    /// `trace_processes`, until the caller takes it.
    trace_processes: Option<Map>,
    /// `go_processes`, until the caller takes it.
    go_processes: Option<Map>,
    /// Off-CPU stacks unreferenced at the last sweep.
    off_cpu_orphans: Orphans,
    /// `cuda_events`, with CUDA probing on.
    cuda_events: Option<RingBuf<MapData>>,
    /// `cuda_libraries`: pids that just mapped a CUDA library.
    cuda_libraries: Option<RingBuf<MapData>>,
    /// `cuda_names`: function handles the driver handed out.
    cuda_names: Option<RingBuf<MapData>>,
    /// The library files the CUDA probes are attached to.
    cuda: CudaProbes,
    /// The CUDA totals as last read, to hand out what was added since.
    cuda_last: std::collections::HashMap<CudaKey, CudaTotal>,
    /// The last totals of processes that exited, for the next read.
    cuda_final: Vec<(CudaKey, CudaTotal)>,
    config: SamplerConfig,
    decode_errors: u64,
    decode_error_reported: bool,
    _stats_fd: Option<std::os::fd::OwnedFd>,
}

impl Sampler {
    /// Loads the programs and maps; nothing is sampled until [`Sampler::start`].
    pub fn load(config: SamplerConfig, bpf_stats: bool) -> Result<Self, LoadError> {
        raise_memlock_limit();
        let btf = Btf::from_sys_fs().map_err(LoadError::Btf)?;
        let filter: u8 = matches!(config.targets, SamplerTargets::Listed { .. }).into();
        let follow: u8 = matches!(
            config.targets,
            SamplerTargets::Listed {
                follow_children: true
            }
        )
        .into();
        let off_cpu = config.off_cpu.unwrap_or_default();
        let min_block_ns = off_cpu.min_block.as_nanos().min(u128::from(u64::MAX)) as u64;
        let sample_every = off_cpu.sample_every.get();
        let cpus = aya::util::nr_cpus().map_err(|(what, e)| LoadError::Cpus(what, e))?;
        let ring_bytes = ring_buffer_bytes(cpus, config.frequency.get());
        let dwarf = config.unwind.mode == UnwindMode::Dwarf;
        let dwarf_flag = u8::from(dwarf);
        let capacity = if dwarf {
            config.unwind.capacity()
        } else {
            Capacity { rows: 2, pages: 1 }
        };
        let cuda_rate = config.cuda.map_or(0, |c| c.stacks_per_second);
        let cuda_watch = u8::from(config.cuda.is_some());
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf))
            .map_max_entries("samples", ring_bytes)
            .map_max_entries("unwind_rows", capacity.rows / 2)
            .map_max_entries("unwind_pages", capacity.pages)
            .map_max_entries("unwind_processes", UNWIND_MAX_PROCESSES)
            .override_global("dwarf_unwind", &dwarf_flag, true)
            .override_global("self_tgid", &config.self_tgid, true)
            .override_global("filter_targets", &filter, true)
            .override_global("follow_children", &follow, true)
            .override_global("offcpu_min_ns", &min_block_ns, true)
            .override_global("offcpu_sample_every", &sample_every, true)
            .override_global("cuda_stacks_per_second", &cuda_rate, true)
            .override_global("cuda_watch", &cuda_watch, true)
            .load(SAMPLER_OBJECT)
            .map_err(LoadError::Load)?;
        let ring = take_ring(&mut ebpf, "samples")?;
        let threads = take_ring(&mut ebpf, "offcpu_threads")?;
        let python_stacks = take_ring(&mut ebpf, "offcpu_python_new")?;
        let unwind = if dwarf {
            let mut take = |name: &'static str| ebpf.take_map(name).ok_or(LoadError::Missing(name));
            let maps = BpfMaps {
                rows: take("unwind_rows")?,
                pages: take("unwind_pages")?,
                rules: take("unwind_rules")?,
                processes: take("unwind_processes")?,
                files: take("unwind_files")?,
                recorded: take("exec_mappings")?,
            };
            let store = BpfStore::new(maps, capacity).map_err(LoadError::Unwind)?;
            Some(UnwindTables::new(store))
        } else {
            None
        };
        let python = BpfPythonStore::new(
            ebpf.take_map("python_processes")
                .ok_or(LoadError::Missing("python_processes"))?,
        )
        .map_err(|source| LoadError::Map {
            name: "python_processes",
            source,
        })?;
        let trace_processes = ebpf
            .take_map("trace_processes")
            .ok_or(LoadError::Missing("trace_processes"))?;
        let go_processes = ebpf
            .take_map("go_processes")
            .ok_or(LoadError::Missing("go_processes"))?;
        if config.on_cpu {
            let perf: &mut PerfEvent = program(&mut ebpf, "sample_cpu")?;
            perf.load().map_err(|source| LoadError::Program {
                name: "sample_cpu",
                action: "load",
                source,
            })?;
        }
        // The recorder also announces CUDA libraries as they are mapped.
        let records_mappings =
            (dwarf || config.cuda.is_some()) && load_mapping_recorder(&mut ebpf, &btf);
        let off_cpu_program = match config.off_cpu {
            Some(_) => Some(load_off_cpu(&mut ebpf, &btf)?),
            None => None,
        };
        let cuda_events = match config.cuda {
            Some(_) => Some(load_cuda(&mut ebpf)?),
            None => None,
        };
        let (cuda_libraries, cuda_names) = match config.cuda {
            Some(_) => (
                Some(take_ring(&mut ebpf, "cuda_libraries")?),
                Some(take_ring(&mut ebpf, "cuda_names")?),
            ),
            None => (None, None),
        };
        if follow == 1 {
            let fork: &mut BtfTracePoint = program(&mut ebpf, "follow_fork")?;
            fork.load("sched_process_fork", &btf)
                .map_err(|source| LoadError::Program {
                    name: "follow_fork",
                    action: "load",
                    source,
                })?;
        }
        // Keeping the fd open keeps the kernel's BPF run-time accounting on.
        let stats_fd = if bpf_stats {
            aya::sys::enable_stats(aya::sys::Stats::RunTime)
                .map_err(|e| tracing::warn!("cannot enable BPF run-time stats: {e}"))
                .ok()
        } else {
            None
        };
        Ok(Self {
            ebpf,
            ring,
            threads,
            python_stacks,
            off_cpu_program,
            records_mappings,
            unwind,
            python: Some(python),
            trace_processes: Some(trace_processes),
            go_processes: Some(go_processes),
            off_cpu_orphans: Orphans::default(),
            cuda_events,
            cuda_libraries,
            cuda_names,
            cuda: CudaProbes::default(),
            cuda_last: std::collections::HashMap::new(),
            cuda_final: Vec::new(),
            config,
            decode_errors: 0,
            decode_error_reported: false,
            _stats_fd: stats_fd,
        })
    }

    fn targets(&mut self) -> Result<BpfHashMap<&mut MapData, u32, u8>, LoadError> {
        let map = self
            .ebpf
            .map_mut("targets")
            .ok_or(LoadError::Missing("targets"))?;
        BpfHashMap::try_from(map).map_err(|source| LoadError::Map {
            name: "targets",
            source,
        })
    }

    /// Adds a process to the sampled set (for [`SamplerTargets::Listed`]).
    pub fn add_target(&mut self, pid: u32) -> Result<(), LoadError> {
        self.targets()?
            .insert(pid, 1, 0)
            .map_err(|source| LoadError::Map {
                name: "targets",
                source,
            })
    }

    /// Removes a process from the sampled set.
    pub fn remove_target(&mut self, pid: u32) -> Result<(), LoadError> {
        match self.targets()?.remove(&pid) {
            Ok(()) => Ok(()),
            Err(e) if key_was_missing(&e) => Ok(()),
            Err(source) => Err(LoadError::Map {
                name: "targets",
                source,
            }),
        }
    }

    /// The unwind tables, when user stacks are walked with DWARF.
    pub fn unwind_tables(&mut self) -> Option<&mut UnwindTables<BpfStore>> {
        self.unwind.as_mut()
    }

    /// The map of Python processes the BPF walker reads (once: the caller
    /// keeps it in its [`crate::python::PythonTracker`]).
    pub fn take_python_store(&mut self) -> Option<BpfPythonStore> {
        self.python.take()
    }

    /// The `trace_processes` map (once: the caller keeps it in its
    /// [`crate::trace_context::TraceContextTracker`]).
    pub fn take_trace_processes(&mut self) -> Option<Map> {
        self.trace_processes.take()
    }

    /// The `go_processes` map (once: the caller keeps it in its
    /// [`crate::go::GoTracker`]).
    pub fn take_go_processes(&mut self) -> Option<Map> {
        self.go_processes.take()
    }

    pub fn unwind_stats(&self) -> Option<UnwindStats> {
        self.unwind.as_ref().map(UnwindTables::stats)
    }

    /// Attaches to every online CPU: sampling starts now.
    pub fn start(&mut self) -> Result<(), LoadError> {
        if matches!(
            self.config.targets,
            SamplerTargets::Listed {
                follow_children: true
            }
        ) {
            let fork: &mut BtfTracePoint = program(&mut self.ebpf, "follow_fork")?;
            fork.attach().map_err(|source| LoadError::Program {
                name: "follow_fork",
                action: "attach",
                source,
            })?;
        }
        if let Some(name) = self.off_cpu_program {
            attach_off_cpu(&mut self.ebpf, name)?;
        }
        if self.records_mappings {
            attach_mapping_recorder(&mut self.ebpf);
        }
        if !self.config.on_cpu {
            return Ok(());
        }
        let cpus = aya::util::online_cpus().map_err(|(what, e)| LoadError::Cpus(what, e))?;
        let frequency = u64::from(self.config.frequency.get());
        let perf: &mut PerfEvent = program(&mut self.ebpf, "sample_cpu")?;
        for cpu in cpus {
            perf.attach(
                PerfEventConfig::Software(SoftwareEvent::CpuClock),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Frequency(frequency),
                false,
            )
            .map_err(|source| LoadError::Program {
                name: "sample_cpu",
                action: "attach",
                source,
            })?;
        }
        Ok(())
    }

    /// Hands every thread that blocked for the first time (with a new pair of
    /// stacks) to `sink`.
    pub fn drain_threads(&mut self, sink: impl FnMut(ThreadSeen)) {
        let errors = (&mut self.decode_errors, &mut self.decode_error_reported);
        drain_ring(&mut self.threads, "thread", errors, sink);
    }

    /// Hands every Python stack the off-CPU program stored for the first
    /// time to `sink` (to be named while its process lives).
    pub fn drain_python_stacks(&mut self, sink: impl FnMut(OffCpuPython)) {
        let errors = (&mut self.decode_errors, &mut self.decode_error_reported);
        drain_ring(&mut self.python_stacks, "Python stack", errors, sink);
    }

    /// The off-CPU totals so far, with their stacks, scaled by the sampling
    /// rate. Empty when off-CPU profiling is off.
    pub fn off_cpu_totals(&self) -> Result<Vec<OffCpuEntry>, LoadError> {
        let Some(config) = self.config.off_cpu else {
            return Ok(Vec::new());
        };
        let entries = read_totals(&self.ebpf, u64::from(config.sample_every.get()))?;
        Ok(entries.into_iter().map(|(_, entry)| entry).collect())
    }

    /// Like [`Sampler::off_cpu_totals`], but removes what it read, so that the
    /// next call returns only what was blocked since (the agent's windows).
    /// Stacks no sleeping thread or remaining entry refers to are removed
    /// too, so the stack maps do not fill up over days. A block that ends
    /// between the read and the removal of its entry is lost; that window
    /// is a few microseconds per entry.
    pub fn take_off_cpu_totals(&mut self) -> Result<Vec<OffCpuEntry>, LoadError> {
        let Some(config) = self.config.off_cpu else {
            return Ok(Vec::new());
        };
        let read = read_totals(&self.ebpf, u64::from(config.sample_every.get()))?;
        remove_read(&mut self.ebpf, &read, &mut self.off_cpu_orphans)?;
        Ok(read.into_iter().map(|(_, entry)| entry).collect())
    }

    /// Attaches the CUDA probes to the CUDA libraries in `maps` (no-op with
    /// CUDA probing off). Call with every process whose maps were read.
    pub fn cuda_follow(&mut self, maps: &ProcessMaps) {
        if self.cuda_events.is_some() {
            self.cuda.follow(&mut self.ebpf, maps);
        }
    }

    /// Takes the CUDA probes off libraries no living process maps, and
    /// forgets the totals of processes that are gone.
    pub fn cuda_reap(&mut self, alive: impl Fn(u32) -> bool) {
        if self.cuda_events.is_none() {
            return;
        }
        self.cuda.reap(&mut self.ebpf, &alive);
        let dead: Vec<CudaKey> = self
            .cuda_last
            .keys()
            .filter(|k| !alive(k.pid))
            .copied()
            .collect();
        if dead.is_empty() {
            return;
        }
        if let Some(map) = self.ebpf.map_mut("cuda_counts") {
            if let Ok(mut counts) = BpfHashMap::<_, CudaKey, CudaTotal>::try_from(map) {
                for key in &dead {
                    // The process is gone: its last calls, counted since
                    // the last read, go with the next one.
                    if let Ok(total) = counts.get(key, 0) {
                        let earlier = self.cuda_last.get(key).copied().unwrap_or_default();
                        let delta = total.since(&earlier);
                        if delta.calls > 0 {
                            self.cuda_final.push((*key, delta));
                        }
                    }
                    let _ = counts.remove(key);
                }
            }
        }
        for key in dead {
            self.cuda_last.remove(&key);
        }
    }

    /// The pids of target processes that mapped a CUDA library since the
    /// last call (their maps are to be read and handed to
    /// [`Sampler::cuda_follow`]).
    pub fn take_cuda_library_pids(&mut self) -> Vec<u32> {
        let mut pids = Vec::new();
        if let Some(ring) = self.cuda_libraries.as_mut() {
            while let Some(item) = ring.next() {
                if let Ok(bytes) = <[u8; 4]>::try_from(&*item) {
                    pids.push(u32::from_ne_bytes(bytes));
                }
            }
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Takes the launch probes off (`false`) or puts them back (`true`);
    /// sync calls stay timed either way.
    pub fn cuda_launch_probes(&mut self, on: bool) {
        if self.cuda_events.is_none() {
            return;
        }
        if on {
            self.cuda.resume_launches(&mut self.ebpf);
        } else {
            self.cuda.pause_launches(&mut self.ebpf);
        }
    }

    pub fn cuda_probe_stats(&self) -> CudaProbeStats {
        self.cuda.stats()
    }

    /// Hands every function handle the driver handed out to `sink` (to name
    /// the launches of that handle).
    pub fn drain_cuda_names(&mut self, sink: impl FnMut(CudaName)) {
        if let Some(ring) = self.cuda_names.as_mut() {
            let errors = (&mut self.decode_errors, &mut self.decode_error_reported);
            drain_ring(ring, "CUDA function name", errors, sink);
        }
    }

    /// Hands every sampled CUDA launch and wait to `sink`.
    pub fn drain_cuda(&mut self, sink: impl FnMut(CudaEvent)) {
        if let Some(ring) = self.cuda_events.as_mut() {
            let errors = (&mut self.decode_errors, &mut self.decode_error_reported);
            drain_ring(ring, "CUDA event", errors, sink);
        }
    }

    /// The exact CUDA totals added since the last call, by process, API and
    /// function. Read before the events of the same period are drained, a
    /// total may count a call whose sampled event comes with the next.
    pub fn take_cuda_totals(&mut self) -> Result<Vec<(CudaKey, CudaTotal)>, LoadError> {
        if self.cuda_events.is_none() {
            return Ok(Vec::new());
        }
        let map = self
            .ebpf
            .map("cuda_counts")
            .ok_or(LoadError::Missing("cuda_counts"))?;
        let counts = BpfHashMap::<_, CudaKey, CudaTotal>::try_from(map).map_err(|source| {
            LoadError::Map {
                name: "cuda_counts",
                source,
            }
        })?;
        let mut added = std::mem::take(&mut self.cuda_final);
        for entry in counts.iter() {
            let Ok((key, total)) = entry else { continue };
            let earlier = self.cuda_last.get(&key).copied().unwrap_or_default();
            let delta = total.since(&earlier);
            self.cuda_last.insert(key, total);
            if delta.calls > 0 {
                added.push((key, delta));
            }
        }
        Ok(added)
    }

    /// Hands every buffered sample to `sink`; returns how many.
    pub fn drain(&mut self, mut sink: impl FnMut(Sample)) -> usize {
        let mut n = 0;
        let errors = (&mut self.decode_errors, &mut self.decode_error_reported);
        drain_ring(&mut self.ring, "sample", errors, |sample| {
            sink(sample);
            n += 1;
        });
        n
    }

    pub fn stats(&self) -> SamplerStats {
        let mut stats = SamplerStats {
            decode_errors: self.decode_errors,
            ..Default::default()
        };
        if let Some(map) = self.ebpf.map("stats") {
            if let Ok(array) = PerCpuArray::<_, u64>::try_from(map) {
                let sum = |index: u32| array.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0);
                stats.samples = sum(STAT_SAMPLES);
                stats.ring_buffer_full = sum(STAT_RINGBUF_FULL);
                stats.kernel_stack_errors = sum(STAT_KSTACK_ERROR);
                stats.user_stack_errors = sum(STAT_USTACK_ERROR);
                stats.targets_full = sum(STAT_TARGETS_FULL);
                stats.off_cpu_totals_full = sum(STAT_OFFCPU_TOTALS_FULL);
                // A collision falls back to a frame-pointer stack: counted
                // with the stacks that could not be stored as walked.
                stats.off_cpu_stack_errors =
                    sum(STAT_OFFCPU_STACK_ERROR) + sum(STAT_OFFCPU_DWARF_COLLISION);
                stats.off_cpu_events_full = sum(STAT_OFFCPU_EVENTS_FULL);
                stats.unwound_with_tables = sum(STAT_UNWIND_TABLES);
                stats.unwound_with_frame_pointers = sum(STAT_UNWIND_NO_PROCESS);
                stats.unwind_errors = sum(STAT_UNWIND_ERROR);
                stats.unwind_truncated = sum(STAT_UNWIND_TRUNCATED);
                stats.unwind_frame_pointer_steps = sum(STAT_UNWIND_FP_FRAMES);
                stats.unwind_unmapped = sum(STAT_UNWIND_UNMAPPED);
                stats.unwound_from_recorded_mappings = sum(STAT_UNWIND_RECORDED);
                stats.python_stacks = sum(STAT_PYTHON_STACKS);
                stats.python_no_thread = sum(STAT_PYTHON_NO_THREAD);
                stats.python_errors = sum(STAT_PYTHON_ERRORS);
                stats.python_truncated = sum(STAT_PYTHON_TRUNCATED);
                stats.trace_contexts = sum(STAT_TRACE_CONTEXT);
                stats.trace_context_errors = sum(STAT_TRACE_ERRORS);
                stats.off_cpu_python_lost =
                    sum(STAT_OFFCPU_PYTHON_FULL) + sum(STAT_OFFCPU_PYTHON_COLLISION);
                stats.off_cpu_python_events_full = sum(STAT_OFFCPU_PYTHON_EVENTS_FULL);
                stats.off_cpu_gil_waits = sum(STAT_OFFCPU_GIL_WAITS);
                stats.go_labels = sum(STAT_GO_LABELS);
                stats.go_label_errors = sum(STAT_GO_LABEL_ERRORS);
                stats.cuda_launches = sum(STAT_CUDA_LAUNCHES);
                stats.cuda_waits = sum(STAT_CUDA_WAITS);
                stats.cuda_events = sum(STAT_CUDA_EVENTS);
                stats.cuda_events_full = sum(STAT_CUDA_EVENTS_FULL);
                stats.cuda_counts_full = sum(STAT_CUDA_COUNTS_FULL);
            }
        }
        if self._stats_fd.is_some() {
            if self.config.on_cpu {
                if let Some(Ok(info)) = self.ebpf.program("sample_cpu").map(|p| p.info()) {
                    stats.bpf_run_time = Some(info.run_time());
                    stats.bpf_run_count = Some(info.run_count());
                }
            }
            if let Some(name) = self.off_cpu_program {
                if let Some(Ok(info)) = self.ebpf.program(name).map(|p| p.info()) {
                    stats.off_cpu_bpf_run_time = Some(info.run_time());
                }
            }
            if self.cuda_events.is_some() {
                let infos: Vec<_> = [LAUNCH, WAIT_ENTER, WAIT_RETURN, NAME_ENTER, NAME_RETURN]
                    .iter()
                    .filter_map(|name| self.ebpf.program(name)?.info().ok())
                    .collect();
                stats.cuda_bpf_run_time = Some(infos.iter().map(|i| i.run_time()).sum());
                stats.cuda_bpf_run_count = Some(infos.iter().map(|i| i.run_count()).sum());
            }
        }
        stats
    }
}

/// Decodes every record buffered in `ring` and hands it to `sink`. Records
/// that do not decode are counted in `errors.0`; the first is reported (once
/// per sampler, flag in `errors.1`).
fn drain_ring<T>(
    ring: &mut RingBuf<MapData>,
    what: &str,
    errors: (&mut u64, &mut bool),
    mut sink: impl FnMut(T),
) where
    T: for<'a> TryFrom<&'a [u8], Error = super::DecodeError>,
{
    let (count, reported) = errors;
    while let Some(item) = ring.next() {
        match T::try_from(&*item) {
            Ok(record) => sink(record),
            Err(e) => {
                *count += 1;
                if !*reported {
                    *reported = true;
                    tracing::warn!("dropping undecodable {what} records: {e}");
                }
            }
        }
    }
}

/// Loads the CUDA probe programs (attached later, per library file) and
/// takes their ring buffer.
fn load_cuda(ebpf: &mut Ebpf) -> Result<RingBuf<MapData>, LoadError> {
    for name in [LAUNCH, WAIT_ENTER, WAIT_RETURN, NAME_ENTER, NAME_RETURN] {
        let probe: &mut UProbe = program(ebpf, name)?;
        probe.load().map_err(|source| LoadError::Program {
            name,
            action: "load",
            source,
        })?;
    }
    take_ring(ebpf, "cuda_events")
}

fn take_ring(ebpf: &mut Ebpf, name: &'static str) -> Result<RingBuf<MapData>, LoadError> {
    let map = ebpf.take_map(name).ok_or(LoadError::Missing(name))?;
    RingBuf::try_from(map).map_err(|source| LoadError::Map { name, source })
}

/// Loads the sched_switch program: tp_btf where the kernel allows it, raw_tp
/// otherwise. Returns the name of the one that loaded.
fn load_off_cpu(ebpf: &mut Ebpf, btf: &Btf) -> Result<&'static str, LoadError> {
    let btf_prog: &mut BtfTracePoint = program(ebpf, OFFCPU_BTF)?;
    match btf_prog.load("sched_switch", btf) {
        Ok(()) => return Ok(OFFCPU_BTF),
        Err(e) => tracing::info!("tp_btf/sched_switch unavailable ({e}); using raw_tp"),
    }
    let raw: &mut RawTracePoint = program(ebpf, OFFCPU_RAW)?;
    raw.load().map_err(|source| LoadError::Program {
        name: OFFCPU_RAW,
        action: "load",
        source,
    })?;
    Ok(OFFCPU_RAW)
}

fn attach_off_cpu(ebpf: &mut Ebpf, name: &'static str) -> Result<(), LoadError> {
    let result = if name == OFFCPU_BTF {
        let prog: &mut BtfTracePoint = program(ebpf, name)?;
        prog.attach().map(drop)
    } else {
        let prog: &mut RawTracePoint = program(ebpf, name)?;
        prog.attach("sched_switch").map(drop)
    };
    result.map_err(|source| LoadError::Program {
        name,
        action: "attach",
        source,
    })
}

/// How often [`Sampler::drain`] is expected to be called.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(100);

/// Ring buffer size: four drain intervals of every CPU sampling at
/// `frequency`, as a power of two between 256 KiB and 64 MiB.
fn ring_buffer_bytes(cpus: usize, frequency: u32) -> u32 {
    let record = (super::record::RAW_SAMPLE_SIZE + 8) as u64; // + ring buffer header
    let per_drain = cpus as u64 * u64::from(frequency) * DRAIN_INTERVAL.as_millis() as u64 / 1000;
    let wanted = (per_drain * record * 4).clamp(256 << 10, 64 << 20);
    wanted.next_power_of_two().min(64 << 20) as u32
}

/// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones charge
/// the cgroup. Raising the limit may be refused (no CAP_SYS_RESOURCE): that is
/// harmless on new kernels, so a failure is only logged.
fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit reads a valid, initialised struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!(
            "cannot raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_buffer_grows_with_cpus_and_frequency() {
        assert_eq!(ring_buffer_bytes(2, 99), 512 << 10);
        // 200 CPUs at 99 Hz: ~2000 records per drain, four drains of room.
        let big = ring_buffer_bytes(200, 99);
        let record = super::super::record::RAW_SAMPLE_SIZE as u32 + 8;
        assert!(big.is_power_of_two() && big >= 4 * 1980 * record, "{big}");
        assert_eq!(ring_buffer_bytes(100_000, 10_000), 64 << 20);
    }

    /// The maps as the BPF object declares them must match what this side
    /// reads and writes (no root needed: the object is only parsed).
    #[test]
    fn object_declares_the_maps_and_programs_we_use() {
        let object = aya_obj::Object::parse(SAMPLER_OBJECT).expect("sampler.bpf.o parses");
        let map = |name: &str| {
            object
                .maps
                .get(name)
                .unwrap_or_else(|| panic!("map {name}"))
        };
        let targets = map("targets");
        assert_eq!(
            (targets.key_size(), targets.value_size()),
            (4, 1),
            "targets: u32 -> u8"
        );
        let stats = map("stats");
        assert_eq!(
            (stats.key_size(), stats.value_size()),
            (4, 8),
            "stats: u32 -> u64"
        );
        assert_eq!(stats.max_entries(), STAT_COUNT);
        let start = map("offcpu_start");
        assert_eq!(
            (start.key_size(), start.value_size()),
            (4, 64),
            "tid -> smolder_offcpu_start"
        );
        let totals = map("offcpu_totals");
        assert_eq!(
            (totals.key_size(), totals.value_size()),
            (56, 16),
            "key -> value"
        );
        let python_stacks = map("offcpu_python_stacks");
        assert_eq!(
            (
                python_stacks.key_size(),
                python_stacks.value_size() as usize
            ),
            (4, super::super::offcpu::RAW_PYTHON_STACK_SIZE),
            "id -> smolder_offcpu_python_stack"
        );
        assert_eq!(map("offcpu_stacks").value_size(), 127 * 8);
        let dwarf_stacks = map("offcpu_user_stacks");
        assert_eq!(
            (dwarf_stacks.key_size(), dwarf_stacks.value_size() as usize),
            (4, super::super::offcpu::RAW_USER_STACK_SIZE),
            "id -> smolder_offcpu_user_stack"
        );
        let rows = map("unwind_rows");
        assert_eq!(
            (rows.key_size(), rows.value_size() as usize),
            (4, crate::unwind::ROW_PAIR_SIZE),
            "u32 -> smolder_unwind_row_pair"
        );
        let pages = map("unwind_pages");
        assert_eq!(
            (pages.key_size(), pages.value_size() as usize),
            (4, crate::unwind::PAGE_SIZE),
            "u32 -> smolder_unwind_page"
        );
        let rules = map("unwind_rules");
        assert_eq!(
            (rules.key_size(), rules.value_size() as usize),
            (4, crate::unwind::RULE_SIZE),
            "u32 -> smolder_unwind_rule"
        );
        assert_eq!(rules.max_entries() as usize, crate::unwind::MAX_RULES);
        let processes = map("unwind_processes");
        assert_eq!(
            (processes.key_size(), processes.value_size() as usize),
            (4, std::mem::size_of::<crate::unwind::ProcessEntry>()),
            "tgid -> smolder_unwind_process"
        );
        let python = map("python_processes");
        assert_eq!(
            (python.key_size(), python.value_size() as usize),
            (4, std::mem::size_of::<crate::python::ProcessEntry>()),
            "tgid -> smolder_python_process"
        );
        let trace = map("trace_processes");
        assert_eq!(
            (trace.key_size(), trace.value_size() as usize),
            (4, std::mem::size_of::<crate::trace_context::SlotEntry>()),
            "tgid -> smolder_trace_process"
        );
        let go = map("go_processes");
        assert_eq!(
            (go.key_size(), go.value_size() as usize),
            (4, std::mem::size_of::<crate::go::GoProcessEntry>()),
            "tgid -> smolder_go_process"
        );
        let scratch = map("sample_scratch");
        assert_eq!(
            scratch.value_size() as usize,
            super::super::record::RAW_SAMPLE_SIZE,
            "smolder_sample"
        );
        assert!(object.maps.contains_key("samples"));
        for program in ["sample_cpu", "follow_fork", OFFCPU_BTF, OFFCPU_RAW] {
            assert!(object.programs.contains_key(program), "program {program}");
        }
    }
}
