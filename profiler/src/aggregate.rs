//! Aggregate stage: counts identical raw stacks. Nothing here is symbolized.

use std::collections::{HashMap, HashSet};

use symbolizer::python::PythonFrame;

use crate::collect::{CudaApi, OffCpuEntry, Sample, TraceContext, MAX_STACK_FRAMES};
use crate::go::LabelSet;
use crate::profile::GpuWait;

/// What a stack has to do with the GPU.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GpuMark {
    /// A CUDA launch of `func` (leaf `[cuda] NAME`); `name`: the kernel's
    /// name where the driver handed out the handle (else `func` is named
    /// as a function of the process, or by its value).
    Launch {
        api: &'static CudaApi,
        func: u64,
        name: Option<std::sync::Arc<str>>,
    },
    /// Time in a sync call (leaf `[gpu wait] API`, label `gpu_wait`).
    Wait {
        api: &'static CudaApi,
        part: GpuWait,
    },
    /// A CPU or off-CPU sample taken inside a sync call (label only).
    Inside(GpuWait),
}

impl GpuMark {
    /// The `gpu_wait` label of the stack.
    pub fn wait(&self) -> Option<GpuWait> {
        match self {
            GpuMark::Launch { .. } => None,
            GpuMark::Wait { part, .. } | GpuMark::Inside(part) => Some(*part),
        }
    }
}

/// A raw stack of one thread. Addresses are in the sampled process's address
/// space (user) or the kernel's (kernel), innermost first.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StackKey {
    pub pid: u32,
    pub tid: u32,
    /// Address space identity: distinguishes a process before and after exec.
    pub mm_id: u64,
    pub kernel: Box<[u64]>,
    pub user: Box<[u64]>,
    /// The stack hit the BPF depth limit: outer frames are missing.
    pub truncated: bool,
    /// The user stack walk stopped at an error: outer frames are missing.
    pub unwind_error: bool,
    /// Python frames sampled with the stack, named while the process lived
    /// (newest first; empty for other processes).
    pub python: Box<[PythonFrame]>,
    /// The trace the thread was serving, when it published one.
    pub trace: Option<TraceContext>,
    /// Off-CPU: the thread slept waiting for the GIL.
    pub gil_wait: bool,
    /// Go: the goroutine's pprof labels.
    pub labels: Option<LabelSet>,
    /// CUDA: the launch or wait this stack made, or the wait it was in.
    pub gpu: Option<GpuMark>,
}

/// Names of a thread, as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadNames {
    pub comm: String,
    pub thread_name: String,
}

/// How much a stack weighs: how often it was seen and the time it stands for
/// (CPU time on-CPU, blocked time off-CPU).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Weight {
    pub count: u64,
    pub nanos: u64,
}

/// Weights per raw stack, plus what the encoders need to label them.
#[derive(Debug, Default)]
pub struct Aggregate {
    pub stacks: HashMap<StackKey, Weight>,
    pub threads: HashMap<u32, ThreadNames>,
    pub samples: u64,
    processes: HashSet<u32>,
    /// CPU time one on-CPU sample stands for.
    period_ns: u64,
}

impl Aggregate {
    /// An aggregate of on-CPU samples taken every `period_ns` of CPU time
    /// (0 for weighted entries such as off-CPU totals).
    pub fn new(period_ns: u64) -> Self {
        Self {
            period_ns,
            ..Self::default()
        }
    }

    /// Counts a process as seen before any of its weight arrives (off-CPU
    /// totals are read at the end).
    pub fn note_process(&mut self, pid: u32) {
        self.processes.insert(pid);
    }

    /// Records a thread's names (the latest win).
    pub fn name_thread(&mut self, tid: u32, comm: String, thread_name: String) {
        let names = self.threads.entry(tid).or_insert_with(|| ThreadNames {
            comm: String::new(),
            thread_name: String::new(),
        });
        if names.comm != comm || names.thread_name != thread_name {
            *names = ThreadNames { comm, thread_name };
        }
    }

    /// Adds `weight` to a stack.
    pub fn add_weighted(&mut self, key: StackKey, weight: Weight) {
        self.samples += weight.count;
        self.processes.insert(key.pid);
        let total = self.stacks.entry(key).or_default();
        total.count += weight.count;
        total.nanos += weight.nanos;
    }

    /// Adds one on-CPU sample with its Python frames, already named, and
    /// its goroutine's labels, already read.
    pub fn add(&mut self, sample: Sample, python: Box<[PythonFrame]>, labels: Option<LabelSet>) {
        self.name_thread(sample.tid, sample.comm, sample.thread_name);
        let key = StackKey {
            pid: sample.pid,
            tid: sample.tid,
            mm_id: sample.mm_id,
            kernel: sample.kernel.into_boxed_slice(),
            user: sample.user.into_boxed_slice(),
            truncated: sample.kernel_truncated || sample.user_truncated,
            unwind_error: sample.user_unwind_error,
            python,
            gil_wait: false,
            gpu: sample.in_gpu_wait.then_some(GpuMark::Inside(GpuWait::Spin)),
            trace: sample.trace,
            labels,
        };
        let period_ns = self.period_ns;
        self.add_weighted(
            key,
            Weight {
                count: 1,
                nanos: period_ns,
            },
        );
    }

    /// Adds the blocked time of one thread in one set of stacks, with its
    /// Python frames already named.
    pub fn add_off_cpu(&mut self, entry: OffCpuEntry, python: Box<[PythonFrame]>) {
        // The stack map holds at most MAX_STACK_FRAMES: a full stack was cut.
        let truncated = entry.user_truncated
            || entry.kernel.len() >= MAX_STACK_FRAMES
            || entry.user.len() >= MAX_STACK_FRAMES;
        let key = StackKey {
            pid: entry.pid,
            tid: entry.tid,
            mm_id: entry.mm_id,
            kernel: entry.kernel.into_boxed_slice(),
            user: entry.user.into_boxed_slice(),
            truncated,
            unwind_error: entry.user_unwind_error,
            python,
            trace: entry.trace,
            gil_wait: entry.gil_wait,
            labels: None,
            gpu: entry.gpu_wait.then_some(GpuMark::Inside(GpuWait::Blocked)),
        };
        let weight = Weight {
            count: entry.count,
            nanos: entry.nanos,
        };
        self.add_weighted(key, weight);
    }

    /// CPU time one on-CPU sample stands for (0 for weighted aggregates).
    pub fn period_ns(&self) -> u64 {
        self.period_ns
    }

    /// Distinct processes seen.
    pub fn process_count(&self) -> usize {
        self.processes.len()
    }

    /// Splits the stacks into one aggregate per group (stacks whose group
    /// is `None` are dropped); thread names follow their stacks.
    pub fn split_by<K: std::hash::Hash + Eq>(
        self,
        mut group: impl FnMut(&StackKey) -> Option<K>,
    ) -> HashMap<K, Aggregate> {
        let mut parts: HashMap<K, Aggregate> = HashMap::new();
        for (key, weight) in self.stacks {
            let Some(k) = group(&key) else { continue };
            let part = parts
                .entry(k)
                .or_insert_with(|| Aggregate::new(self.period_ns));
            if let Some(names) = self.threads.get(&key.tid) {
                part.threads.entry(key.tid).or_insert_with(|| names.clone());
            }
            part.add_weighted(key, weight);
        }
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pid: u32, tid: u32) -> StackKey {
        StackKey {
            pid,
            tid,
            mm_id: 1,
            kernel: Box::new([]),
            user: Box::new([0x10]),
            truncated: false,
            unwind_error: false,
            python: Box::default(),
            trace: None,
            gil_wait: false,
            labels: None,
            gpu: None,
        }
    }

    #[test]
    fn splits_by_group_and_keeps_thread_names() {
        let mut all = Aggregate::new(10);
        all.name_thread(11, "a".into(), "a-main".into());
        all.add_weighted(
            key(1, 11),
            Weight {
                count: 2,
                nanos: 20,
            },
        );
        all.add_weighted(
            key(2, 22),
            Weight {
                count: 1,
                nanos: 10,
            },
        );
        all.add_weighted(
            key(3, 33),
            Weight {
                count: 5,
                nanos: 50,
            },
        );
        let parts = all.split_by(|k| (k.pid != 3).then_some(k.pid % 2));
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[&1].samples, 2);
        assert_eq!(parts[&1].threads[&11].thread_name, "a-main");
        assert_eq!(parts[&0].process_count(), 1);
    }
}
