//! The symbolized profile: what every encoder reads.

use std::time::{Duration, SystemTime};

use symbolizer::FunctionFrame;

use crate::collect::TraceContext;
use crate::go::LabelSet;

/// A mapped file (or a pseudo-mapping like `[kernel.kallsyms]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Address range in the process's address space.
    pub start: u64,
    pub limit: u64,
    /// File offset of `start`.
    pub offset: u64,
    pub file: String,
    /// Lower-case hex build-id.
    pub build_id: Option<String>,
}

/// One address and the functions at it, innermost (inlined) first. Never
/// empty: an address without a name has one frame named `module+0xoffset`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// Index into [`Profile::mappings`].
    pub mapping: Option<usize>,
    pub address: u64,
    pub frames: Vec<FunctionFrame>,
}

/// One distinct stack of one thread and how often it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileSample {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    pub thread_name: String,
    /// Indexes into [`Profile::locations`], leaf first.
    pub locations: Vec<usize>,
    /// Samples (on-CPU) or blocks (off-CPU).
    pub count: u64,
    /// CPU time (on-CPU) or blocked time (off-CPU).
    pub nanos: u64,
    /// The trace the thread was serving.
    pub trace: Option<TraceContext>,
    /// Off-CPU: the thread was waiting for the GIL (label `gil=wait`).
    pub gil_wait: bool,
    /// Go: the goroutine's pprof labels (the agent keeps those allowed).
    pub labels: Option<LabelSet>,
    /// Time inside a CUDA sync call, or a sample taken in one (label
    /// `gpu_wait`).
    pub gpu_wait: Option<GpuWait>,
}

/// How a thread waited for the GPU inside a sync call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GpuWait {
    /// On CPU: CUDA's default sync spins.
    Spin,
    /// Off CPU: asleep (blocking sync, or preempted).
    Blocked,
}

impl GpuWait {
    /// The value of the `gpu_wait` label.
    pub fn label(self) -> &'static str {
        match self {
            GpuWait::Spin => "spin",
            GpuWait::Blocked => "blocked",
        }
    }
}

/// What a profile measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileKind {
    /// Stacks sampled on CPU at a frequency.
    OnCpu { frequency_hz: u32 },
    /// Time threads spent blocked, by the stack they blocked in.
    OffCpu,
    /// CUDA launches, by the stack that made them (leaf `[cuda] NAME`).
    CudaLaunch,
    /// Time in CUDA sync calls (leaf `[gpu wait] API`).
    GpuWait,
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub start: SystemTime,
    pub duration: Duration,
    pub kind: ProfileKind,
    pub samples: Vec<ProfileSample>,
    pub locations: Vec<Location>,
    pub mappings: Vec<Mapping>,
}

impl Profile {
    /// CPU time one sample stands for (on-CPU); 1 ns off-CPU, where values
    /// are times already.
    pub fn period_ns(&self) -> u64 {
        match self.kind {
            ProfileKind::OnCpu { frequency_hz } => 1_000_000_000 / u64::from(frequency_hz.max(1)),
            ProfileKind::OffCpu | ProfileKind::CudaLaunch | ProfileKind::GpuWait => 1,
        }
    }

    pub fn total_samples(&self) -> u64 {
        self.samples.iter().map(|s| s.count).sum()
    }

    /// What flame graphs and summaries rank by: samples on-CPU, microseconds
    /// blocked off-CPU or waiting for the GPU, launches.
    pub fn weight(&self, sample: &ProfileSample) -> u64 {
        match self.kind {
            ProfileKind::OnCpu { .. } | ProfileKind::CudaLaunch => sample.count,
            ProfileKind::OffCpu | ProfileKind::GpuWait => sample.nanos / 1000,
        }
    }

    /// The unit of [`Profile::weight`].
    pub fn weight_unit(&self) -> &'static str {
        match self.kind {
            ProfileKind::OnCpu { .. } => "samples",
            ProfileKind::CudaLaunch => "launches",
            ProfileKind::OffCpu | ProfileKind::GpuWait => "us",
        }
    }

    /// Function names of a sample from the root to the leaf, inlined frames
    /// included.
    pub fn stack_names(&self, sample: &ProfileSample) -> Vec<&str> {
        let mut names = Vec::new();
        for &loc in sample.locations.iter().rev() {
            for frame in self.locations[loc].frames.iter().rev() {
                names.push(frame.name.as_str());
            }
        }
        names
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    use std::time::{Duration, SystemTime};

    use symbolizer::FunctionFrame;

    use super::{Location, Mapping, Profile, ProfileKind, ProfileSample};

    fn frame(name: &str, line: u32, inlined: bool) -> FunctionFrame {
        FunctionFrame {
            name: name.into(),
            system_name: name.into(),
            file: Some("x.c".into()),
            line: Some(line),
            inlined,
        }
    }

    pub(crate) fn small_profile() -> Profile {
        Profile {
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            duration: Duration::from_secs(2),
            kind: ProfileKind::OnCpu { frequency_hz: 100 },
            samples: vec![ProfileSample {
                pid: 7,
                tid: 8,
                comm: "prog".into(),
                thread_name: "worker".into(),
                locations: vec![0, 1],
                count: 3,
                nanos: 30_000_000,
                trace: None,
                gil_wait: false,
                labels: None,
                gpu_wait: None,
            }],
            locations: vec![
                Location {
                    mapping: Some(0),
                    address: 0x1010,
                    frames: vec![frame("leaf_inlined", 3, true), frame("leaf", 9, false)],
                },
                Location {
                    mapping: Some(0),
                    address: 0x1100,
                    frames: vec![frame("main", 20, false)],
                },
            ],
            mappings: vec![Mapping {
                start: 0x1000,
                limit: 0x2000,
                offset: 0,
                file: "/bin/prog".into(),
                build_id: Some("abcd".into()),
            }],
        }
    }
}
