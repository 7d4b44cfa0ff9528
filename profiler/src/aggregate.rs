//! Aggregate stage: counts identical raw stacks. Nothing here is symbolized.

use std::collections::{HashMap, HashSet};

use crate::collect::Sample;

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
}

/// Names of a thread, as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadNames {
    pub comm: String,
    pub thread_name: String,
}

/// Sample counts per raw stack, plus what the encoders need to label them.
#[derive(Debug, Default)]
pub struct Aggregate {
    pub stacks: HashMap<StackKey, u64>,
    pub threads: HashMap<u32, ThreadNames>,
    pub samples: u64,
    processes: HashSet<u32>,
}

impl Aggregate {
    pub fn add(&mut self, sample: Sample) {
        self.samples += 1;
        self.processes.insert(sample.pid);
        let names = self
            .threads
            .entry(sample.tid)
            .or_insert_with(|| ThreadNames {
                comm: String::new(),
                thread_name: String::new(),
            });
        if names.comm != sample.comm || names.thread_name != sample.thread_name {
            *names = ThreadNames {
                comm: sample.comm,
                thread_name: sample.thread_name,
            };
        }
        let key = StackKey {
            pid: sample.pid,
            tid: sample.tid,
            mm_id: sample.mm_id,
            kernel: sample.kernel.into_boxed_slice(),
            user: sample.user.into_boxed_slice(),
            truncated: sample.kernel_truncated || sample.user_truncated,
        };
        *self.stacks.entry(key).or_insert(0) += 1;
    }

    /// Distinct processes seen.
    pub fn process_count(&self) -> usize {
        self.processes.len()
    }
}
